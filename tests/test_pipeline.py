"""Dataset -> VAE -> diffusion -> sample at a tiny size: generated TinyNNs load and run; a
diffusion model used with the wrong VAE gives one clear error."""

import json

import pytest
import torch

from cifar10 import standardize
from conftest import DATA_DIR, TEST_IMAGES, private_copy, run_script
from model_io import DIFFUSION_KIND, load_checkpoint
from tinynn import TinyNN

VAE = ["--hidden", "32", "--latent_dim", "4", "--batch_size", "2", "--epochs", "3", "--eval_every", "3",
       "--eval_models", "1", "--eval_images", "200", "--final_models", "1", "--val_fraction", "0.25",
       "--data_dir", DATA_DIR, "--no_download", "--quiet"]
DIFF = ["--hidden", "32", "--depth", "1", "--time_dim", "16", "--timesteps", "50", "--epochs", "3",
        "--batch_size", "4", "--quiet"]


@pytest.fixture(scope="module")
def pipeline(tiny_dataset, tmp_path_factory):
    folder = private_copy(tiny_dataset, tmp_path_factory, "pipe")
    run_script("train_vae.py", "--checkpoint_dir", folder, *VAE)
    run_script("train_vae.py", "--checkpoint_dir", folder, "--run_name", "vae_other", "--seed", "1", *VAE)
    run_script("train_diffusion.py", "--checkpoint_dir", folder, *DIFF)
    run_script("train_diffusion.py", "--checkpoint_dir", folder, "--space", "weights", *DIFF)
    return folder


@pytest.mark.parametrize("space,sampler", [("latent", "ddim"), ("latent", "ddpm"), ("weights", "ddim")])
def test_generated_networks_load_and_run(pipeline, cifar, space, sampler):
    out = pipeline / f"gen_{space}_{sampler}"
    run_script("sample.py", "--model_path", pipeline / f"diffusion_{space}" / "diffusion.pt", "--num_models", "3",
               "--sampler", sampler, "--steps", "5", "--out", out, "--quiet", "--device", "cpu")
    stacked = load_checkpoint(str(out / "generated.pt"), "generated-tinynns")
    assert stacked["weights"].shape[0] == 3 and torch.isfinite(stacked["weights"]).all()
    assert "BatchNorm" in stacked["batchnorm"] or "generated" in stacked["batchnorm"]
    x = standardize(cifar.test_images[:32])
    for i in range(3):
        model = TinyNN(**stacked["tinynn"])
        model.load_state_dict(torch.load(out / f"model_{i:03d}.pt", weights_only=True))
        with torch.no_grad():
            logits = model.eval()(x)
        assert logits.shape == (32, 10) and torch.isfinite(logits).all()


def test_diffusion_checkpoint_records_its_vae(pipeline):
    ckpt = load_checkpoint(str(pipeline / "diffusion_latent" / "diffusion.pt"), "weight-diffusion")
    assert ckpt["space"]["vae"]["path"] == str(pipeline / "vae" / "vae.pt")
    assert len(ckpt["space"]["latent_mean"]) == 4 and ckpt["epoch"] == 3


def test_wrong_vae_is_one_clear_error(pipeline, tmp_path):
    out = run_script("sample.py", "--model_path", pipeline / "diffusion_latent" / "diffusion.pt",
                     "--vae_path", pipeline / "vae_other" / "vae.pt", "--num_models", "2", "--out", tmp_path / "g",
                     "--quiet", check=False)
    assert out.returncode != 0 and "not the VAE this diffusion model was trained on" in out.stderr
    assert "Traceback" not in out.stderr


def test_a_vae_checkpoint_is_not_a_diffusion_checkpoint(pipeline, tmp_path):
    out = run_script("sample.py", "--model_path", pipeline / "vae" / "vae.pt", "--out", tmp_path / "g",
                     "--quiet", check=False)
    assert out.returncode != 0 and "expected 'weight-diffusion'" in out.stderr and "Traceback" not in out.stderr



def test_report_of_a_vae_that_held_out_a_run_shows_that_run_reconstructed(pipeline, tmp_path):
    run_script("train_vae.py", "--checkpoint_dir", pipeline, "--run_name", "vae_runs", "--holdout", "runs", *VAE)
    trained = run_script("train_diffusion.py", "--checkpoint_dir", pipeline, "--run_name", "diffusion_runs",
                         "--vae_path", pipeline / "vae_runs" / "vae.pt", *DIFF)
    # Run 0's 4 latents at batch 4 for 3 epochs: the header says how little that trains.
    assert "4 training vectors" in trained.stdout and "3 optimizer steps (1 an epoch)" in trained.stdout
    out = tmp_path / "g"
    run_script("sample.py", "--model_path", pipeline / "diffusion_runs" / "diffusion.pt", "--num_models", "2",
               "--steps", "5", "--out", out, "--quiet", "--device", "cpu")
    run_script("evaluate_generated.py", "--model_path", out, "--train_models", "2", "--baseline_models", "0",
               "--test_images", TEST_IMAGES,
               "--heldout_models", "3", "--data_dir", DATA_DIR, "--no_download", "--device", "cpu")
    report = json.load(open(out / "report.json"))
    assert report["split"]["holdout"] == "runs" and report["split"]["n_val"] == 4  # run 1, whole
    held = report["heldout"]
    assert held["n"] == 3 and 0 <= held["reconstructed"]["mean"] <= 1 and 0 <= held["original"]["mean"] <= 1
    assert all(0 <= v <= 1 for v in held["identity"].values()) and len(held["identity"]) == 3
    assert "reconstructions of the held-out run" in (out / "report.md").read_text()


def test_rejection_keeps_the_first_draws_networks_that_pass_on_validation_images(pipeline, cifar, tmp_path):
    """--reject_below: the first draw is the plain sample of the same seed; kept are its networks
    that reach the bar on the dataset's validation images (in order), then later draws' ones."""
    from cifar10 import held_out_split
    from tinynn import FlatLayout
    from tinynn_training import evaluate_flat
    # The fixture's 3-epoch denoisers make near-constant predictors that can all score the same;
    # a bar between two accuracies of one draw needs networks that differ, so train this one longer.
    run_script("train_diffusion.py", "--checkpoint_dir", pipeline, "--space", "weights", "--run_name",
               "diffusion_rejection", *DIFF, "--epochs", "30")  # the last --epochs counts
    model = pipeline / "diffusion_rejection" / "diffusion.pt"
    settings = json.load(open(pipeline / "manifest.json"))["data"]
    _, (images, labels) = held_out_split(cifar, settings["val_size"], settings["val_seed"], settings["train_size"])

    def val_acc(generated):
        layout = FlatLayout.from_json(generated["layout"])
        return torch.tensor(evaluate_flat(generated["weights"], layout, generated["tinynn"], images, labels))

    for seed in range(5):  # a sample seed whose first draw holds two different accuracies
        common = ["--model_path", model, "--num_models", "6", "--steps", "5", "--seed", seed, "--quiet", "--device",
                  "cpu", "--data_dir", DATA_DIR, "--no_download"]
        run_script("sample.py", *common, "--out", tmp_path / "plain")
        plain = load_checkpoint(str(tmp_path / "plain" / "generated.pt"), "generated-tinynns")
        acc = val_acc(plain)
        if acc.min() < acc.max():
            break
    assert acc.min() < acc.max(), f"every draw of 6 networks scored alike: {acc}"
    bar = float(acc.max())
    run_script("sample.py", *common, "--reject_below", bar, "--max_draws", "18", "--out", tmp_path / "kept")
    kept = load_checkpoint(str(tmp_path / "kept" / "generated.pt"), "generated-tinynns")
    passing = plain["weights"][acc >= bar]
    assert 0 < len(passing) < 6 and torch.equal(kept["weights"][:len(passing)], passing)
    assert (val_acc(kept) >= bar).all()
    record = kept["source"]["rejection"]
    assert record["accepted"] == len(kept["weights"]) and 6 <= record["drawn"] <= 18
    assert record["drawn"] - record["passed"] >= int((acc < bar).sum()) and record["passed"] >= record["accepted"]
    assert record["rejected_share"] == 1 - record["passed"] / record["drawn"]
    run_script("evaluate_generated.py", "--model_path", tmp_path / "kept", "--train_models", "2",
               "--test_images", TEST_IMAGES,
               "--baseline_models", "0", "--data_dir", DATA_DIR, "--no_download", "--device", "cpu")
    assert "rejected" in (tmp_path / "kept" / "report.md").read_text()
    # A bar no network reaches: one clear line, nothing written.
    out = run_script("sample.py", *common, "--reject_below", "1.01", "--max_draws", "6", "--out", tmp_path / "none",
                     check=False)
    assert out.returncode != 0 and "none of 6 networks reached 1.01" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "none" / "generated.pt").exists()


def test_guide_belongs_to_its_diffusion_model_and_steers_sampling(pipeline, tmp_path):
    model = pipeline / "diffusion_latent" / "diffusion.pt"
    guide = tmp_path / "guide.pt"
    run_script("train_guide.py", "--model_path", model, "--num_latents", "8", "--temperatures", "1", "2",
               "--steps", "5", "--epochs", "50", "--out", guide, "--quiet", "--device", "cpu", "--data_dir", DATA_DIR,
               "--no_download")
    report = json.load(open(tmp_path / "guide.json"))
    assert report["labels"] == 16 and list(report["accuracy_by_temperature"]) == ["1.0", "2.0"]
    assert report["held_out"]["n"] == 3 and report["held_out"]["mae"] >= 0
    common = ["--model_path", model, "--num_models", "3", "--steps", "5", "--quiet", "--device", "cpu"]
    run_script("sample.py", *common, "--out", tmp_path / "plain")
    run_script("sample.py", *common, "--guide", guide, "--guide_scale", "5", "--out", tmp_path / "guided")
    plain, guided = (load_checkpoint(str(tmp_path / g / "generated.pt"), "generated-tinynns")
                     for g in ("plain", "guided"))
    assert guided["source"]["guide"] == str(guide) and guided["source"]["guide_scale"] == 5
    assert plain["source"]["guide"] is None and not torch.equal(plain["weights"], guided["weights"])
    out = run_script("sample.py", *common, "--model_path", pipeline / "diffusion_weights" / "diffusion.pt",
                     "--guide", guide, "--out", tmp_path / "wrong", check=False)
    assert out.returncode != 0 and "fitted to another diffusion model" in out.stderr and "Traceback" not in out.stderr


def test_run_conditioned_model_samples_mixtures_and_an_unconditioned_one_refuses(pipeline, tmp_path):
    run_script("train_diffusion.py", "--checkpoint_dir", pipeline, "--run_name", "diffusion_cond", "--condition", "run",
               *DIFF)
    model = pipeline / "diffusion_cond" / "diffusion.pt"
    condition = load_checkpoint(str(model), DIFFUSION_KIND)["condition"]
    runs = condition["classes"]  # the runs of the training split, in label order
    assert condition["kind"] == "run" and condition["drop"] == 0.1 and len(runs) >= 2
    assert set(runs) <= {r["run"] for r in json.load(open(pipeline / "manifest.json"))["runs"]}
    common = ["--num_models", "3", "--steps", "5", "--quiet", "--device", "cpu"]
    run_script("sample.py", "--model_path", model, *common, "--mix_runs", "2", "--cfg_scale", "2",
               "--out", tmp_path / "mixed")
    run_script("sample.py", "--model_path", model, *common, "--out", tmp_path / "unconditional")
    mixed, plain = (load_checkpoint(str(tmp_path / g / "generated.pt"), "generated-tinynns")
                    for g in ("mixed", "unconditional"))
    assert mixed["source"]["condition"] == "run" and mixed["source"]["mix_runs"] == 2
    assert mixed["source"]["cfg_scale"] == 2 and plain["source"]["mix_runs"] == 0
    assert not torch.equal(mixed["weights"], plain["weights"]) and torch.isfinite(mixed["weights"]).all()
    for flags, message in ((["--model_path", pipeline / "diffusion_latent" / "diffusion.pt", "--mix_runs", "1"],
                            "trained without --condition run"),
                           (["--model_path", model, "--mix_runs", str(len(runs) + 1)], f"knows {len(runs)} runs")):
        out = run_script("sample.py", *flags, *common, "--out", tmp_path / "wrong", check=False)
        assert out.returncode != 0 and message in out.stderr and "Traceback" not in out.stderr
