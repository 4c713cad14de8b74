"""Dataset -> VAE -> diffusion -> sample at a tiny size: generated TinyNNs load and run; a
diffusion model used with the wrong VAE gives one clear error."""

import json

import pytest
import torch

from weightgen.cifar10 import standardize
from conftest import DATA_DIR, TEST_IMAGES, private_copy, run_script
from weightgen.model_io import DIFFUSION_KIND, load_checkpoint
from weightgen.tinynn import FlatLayout, TinyNN

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
    run_script("train_diffusion.py", "--checkpoint_dir", folder, "--space", "pca", "--objective", "flow",
               "--run_name", "diffusion_pca", *DIFF)
    return folder


@pytest.mark.parametrize("space,sampler", [("latent", "ddim"), ("latent", "ddpm"), ("weights", "ddim"),
                                           ("pca", "heun"), ("pca", "euler")])
def test_generated_networks_load_and_run(pipeline, cifar, space, sampler):
    out = pipeline / f"gen_{space}_{sampler}"
    bn = ["--bn_images", "100", "--data_dir", DATA_DIR] if space == "pca" else []  # DeepWeightFlow's recipe
    run_script("sample.py", "--model_path", pipeline / f"diffusion_{space}" / "diffusion.pt", "--num_models", "3",
               "--sampler", sampler, "--steps", "5", "--out", out, "--quiet", "--device", "cpu", *bn)
    stacked = load_checkpoint(str(out / "generated.pt"), "generated-tinynns")
    assert stacked["weights"].shape[0] == 3 and torch.isfinite(stacked["weights"]).all()
    assert ("recomputed on 100" if space == "pca" else "generated") in stacked["batchnorm"]
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


def test_a_sampler_of_the_other_objective_is_one_line(pipeline, tmp_path):
    for model, sampler in [("diffusion_pca", "ddim"), ("diffusion_latent", "heun")]:
        out = run_script("sample.py", "--model_path", pipeline / model / "diffusion.pt", "--sampler", sampler,
                         "--num_models", "2", "--out", tmp_path / model, "--quiet", check=False)
        assert out.returncode == 1 and "--sampler must be one of" in out.stderr and "Traceback" not in out.stderr


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


def test_samples_trained_on_and_oversampled_go_the_generate_path(pipeline, tmp_path):
    """--train_steps trains every candidate (each kept as it is done), --oversample keeps the
    --num_models least like a training checkpoint, and a rerun trains nothing again."""
    model = pipeline / "diffusion_latent" / "diffusion.pt"
    common = ["--model_path", model, "--num_models", "2", "--steps", "5", "--quiet", "--device", "cpu",
              "--data_dir", DATA_DIR, "--no_download"]
    run_script("sample.py", *common, "--num_models", "4", "--out", tmp_path / "plain")
    out = tmp_path / "trained"
    run_script("sample.py", *common, "--train_steps", "3", "--oversample", "2", "--check_images", "500", "--out", out)
    g = load_checkpoint(str(out / "generated.pt"), "generated-tinynns")
    plain = load_checkpoint(str(tmp_path / "plain" / "generated.pt"), "generated-tinynns")["weights"]
    source, kept = g["source"], g["source"]["kept"]
    assert g["batchnorm"] == "trained" and source["train_steps"] == 3 and source["candidates"] == 4
    assert len(kept) == 2 and len(source["check_overlaps"]) == 4 and len(g["weights"]) == 2
    candidates = tmp_path / "trained_candidates"
    saved = [torch.load(candidates / f"net_{i:05d}.pt", weights_only=True)["weights"][0] for i in range(4)]
    for j, i in enumerate(kept):  # the kept networks are those candidates, as trained from the samples
        assert torch.equal(g["weights"][j], saved[i]) and not torch.equal(saved[i], plain[i])
    overlaps = torch.tensor(source["check_overlaps"])
    accurate = torch.tensor(source["check_accuracy"]) >= json.load(open(pipeline / "manifest.json"))["selection"]["min_acc"]
    if accurate.all():
        assert overlaps[kept].max() <= min(o for i, o in enumerate(overlaps.tolist()) if i not in kept)
    before = {p.name: p.stat().st_mtime for p in candidates.iterdir()}
    run_script("sample.py", *common, "--train_steps", "3", "--oversample", "2", "--check_images", "500", "--out", out,
               "--overwrite")
    assert before == {p.name: p.stat().st_mtime for p in candidates.iterdir()}  # nothing trained again


def test_sampling_into_a_used_folder_is_refused_or_replaces_it_whole(pipeline, tmp_path):
    model = pipeline / "diffusion_latent" / "diffusion.pt"
    out = tmp_path / "g"
    common = ["--model_path", model, "--steps", "5", "--quiet", "--device", "cpu", "--out", out]
    run_script("sample.py", *common, "--num_models", "12")
    refused = run_script("sample.py", *common, "--num_models", "4", "--seed", "1", check=False)
    assert refused.returncode == 1 and "already holds generated networks" in refused.stderr
    assert "Traceback" not in refused.stderr and len(list(out.glob("model_*.pt"))) == 12
    run_script("sample.py", *common, "--num_models", "4", "--seed", "1", "--overwrite")
    assert sorted(p.name for p in out.glob("model_*.pt")) == [f"model_{i:03d}.pt" for i in range(4)]
    g = load_checkpoint(str(out / "generated.pt"), "generated-tinynns")
    assert len(g["weights"]) == 4 and g["source"]["seed"] == 1
    layout = FlatLayout.from_json(g["layout"])
    for i in range(4):  # the files a plain-PyTorch user loads are the networks of generated.pt
        state = torch.load(out / f"model_{i:03d}.pt", weights_only=True)
        assert torch.equal(layout.flatten(state), g["weights"][i])
    bad = run_script("sample.py", *common, "--num_models", "0", check=False)
    assert bad.returncode == 2 and "--num_models" in bad.stderr and "Traceback" not in bad.stderr


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
