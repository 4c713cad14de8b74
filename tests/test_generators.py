"""The published generators' pieces at a tiny size: DeepWeightFlow's PCA space, p-diff's partial
VAE, and a folder of state_dicts made elsewhere, judged by evaluate_generated.py."""
import json

import pytest
import torch

from conftest import DATA_DIR, TEST_IMAGES, private_copy, run_script
from vae_diffusion import DiffusionSpace, from_coordinates, principal_basis
from vae_model import load_vae, part_slots
from weightgen import checkpoint_dataset as cd
from weightgen.tinynn import TinyNN, model_from_flat
from weightgen.tinynn_training import evaluate_flat
from weightgen.weight_dataset import WeightDataset

TINY_VAE = ["--hidden", "32", "--latent_dim", "4", "--batch_size", "2", "--epochs", "3", "--eval_every", "3",
            "--eval_models", "1", "--eval_images", "200", "--final_models", "1", "--val_fraction", "0.25",
            "--data_dir", DATA_DIR, "--no_download", "--quiet"]
TINY_DIFF = ["--hidden", "32", "--depth", "1", "--time_dim", "16", "--timesteps", "50", "--epochs", "3",
             "--batch_size", "4", "--quiet"]


@pytest.fixture(scope="module")
def dataset(tiny_dataset, tmp_path_factory):
    return private_copy(tiny_dataset, tmp_path_factory, "generators")


def test_pca_space_round_trips_training_runs_and_its_span(dataset):
    ds = WeightDataset(str(dataset), seed=0)
    runs = len({r["run"] for r in ds.train_records})
    space, _ = DiffusionSpace.for_training("pca", ds)
    assert space.pca["directions"].shape == (runs, ds.layout.numel)  # one direction per training run
    # With a direction for every training checkpoint, each one of every run comes back exactly,
    # through the checkpoint's record of the space too.
    space, coords = DiffusionSpace.for_training("pca", ds, components=len(ds.train))
    space = DiffusionSpace.from_state_dict(space.state_dict())
    weights = ds.standardizer.destandardize(ds.train)
    back = space.to_weights(coords)
    assert (back - weights).abs().max() <= 1e-4 * weights.abs().max()
    # A vector in the span maps to itself: coordinates of it give it back.
    mean, directions = principal_basis(ds.train, runs)
    c = torch.randn(5, len(directions), generator=torch.Generator().manual_seed(0)) * 3
    inside = from_coordinates(c, mean, directions)
    assert torch.allclose((inside - mean) @ directions.T, c, atol=1e-3)
    assert torch.allclose(from_coordinates((inside - mean) @ directions.T, mean, directions), inside, atol=1e-4)
    assert torch.allclose(directions @ directions.T, torch.eye(len(directions)), atol=1e-5)


def test_the_partial_generator_changes_only_its_own_tensors(dataset, tmp_path):
    """p-diff's setting: a VAE over the head and the BatchNorm weights and biases; every sampled
    network is the first training run's last checkpoint outside that part."""
    run_script("train_vae.py", "--checkpoint_dir", dataset, "--part", "head_bn", "--run_name", "vae_part", *TINY_VAE)
    run_script("train_diffusion.py", "--checkpoint_dir", dataset, "--vae_path", dataset / "vae_part" / "vae.pt",
               "--run_name", "diffusion_part", *TINY_DIFF)
    out = tmp_path / "part"
    run_script("sample.py", "--model_path", dataset / "diffusion_part" / "diffusion.pt", "--num_models", "3",
               "--steps", "5", "--out", out, "--quiet", "--device", "cpu")
    _, std, ckpt = load_vae(str(dataset / "vae_part" / "vae.pt"))
    ds = WeightDataset.from_description(ckpt["dataset"], str(dataset), DATA_DIR)
    base = ds.standardizer.destandardize(ds.run_ends()[:1])[0]
    assert ckpt["part"]["base"]["run"] == min(r["run"] for r in ds.train_records)
    sub, index = part_slots(ds.layout, "head_bn")
    names = {s.name for s in sub.slots}
    assert "head.weight" in names and "features.0.2.weight" in names and "features.0.0.weight" not in names
    assert not any(n.endswith(("running_mean", "running_var")) for n in names)
    base_state = ds.layout.unflatten(base)
    for i in range(3):
        state = torch.load(out / f"model_{i:03d}.pt", weights_only=True)
        for slot in ds.layout.slots:
            if slot.name in names:
                assert not torch.equal(state[slot.name], base_state[slot.name]), slot.name
            else:
                assert torch.allclose(state[slot.name], base_state[slot.name], atol=1e-5), slot.name


def write_state_dicts(folder, vectors, layout, config):
    folder.mkdir()
    for i, v in enumerate(vectors):
        torch.save(model_from_flat(v, layout, config).state_dict(), folder / f"net_{i}.pth")


def test_an_outside_folder_is_judged_and_a_wrong_one_refused(dataset, cifar, tmp_path):
    """State_dicts written by plain PyTorch, with their own channel order (the runs' last
    checkpoints as trained, not aligned): judged like generated networks, aligned first."""
    manifest = cd.load_manifest(str(dataset))
    ends = cd.last_checkpoints(str(dataset))
    ds = WeightDataset(str(dataset))
    folder = tmp_path / "outside"
    write_state_dicts(folder, ends, ds.layout, manifest["tinynn"])
    run_script("evaluate_generated.py", "--model_path", folder, "--checkpoint_dir", dataset, "--train_models", "100",
               "--baseline_models", "0", "--test_images", TEST_IMAGES, "--data_dir", DATA_DIR, "--no_download",
               "--device", "cpu", "--quiet")
    report = json.load(open(folder / "report.json"))
    direct = evaluate_flat(ends, ds.layout, manifest["tinynn"], cifar.test_images[:TEST_IMAGES],
                           cifar.test_labels[:TEST_IMAGES])
    assert report["per_model"]["generated"]["accuracy"] == pytest.approx(direct, abs=1e-6)
    assert report["source"]["generator"] == "outside folder" and len(report["source"]["files"]) == len(ends)
    # Aligned, each run's end is at zero distance from itself among the checkpoints.
    assert report["per_model"]["generated"]["nearest_distance"] == pytest.approx([0] * len(ends), abs=1e-4)

    narrow = tmp_path / "narrow"
    narrow.mkdir()
    torch.save(TinyNN(widths=(8, 16, 20)).state_dict(), narrow / "net.pt")
    for extra in (["--checkpoint_dir", dataset], []):
        out = run_script("evaluate_generated.py", "--model_path", narrow, *extra, "--test_images", TEST_IMAGES,
                         "--data_dir", DATA_DIR, "--no_download", check=False)
        assert out.returncode == 1 and "Traceback" not in out.stderr
        assert len(out.stderr.strip().splitlines()) == 1
        assert ("has shape (8, 3, 3, 3)" if extra else "--checkpoint_dir") in out.stderr


def test_the_experiment_makes_its_table_and_scatter_and_goes_on_where_it_stopped(dataset, cifar, tmp_path):
    """experiments.generators at a tiny size, on two rows and an outside folder: one table row
    each beside the references, the scatter, and nothing trained again when it is run again."""
    from conftest import gen
    fresh = tmp_path / "fresh"
    gen(fresh, "--runs", "2", "--seed", "1")
    outside = tmp_path / "outside"
    ds = WeightDataset(str(dataset))
    write_state_dicts(outside, cd.last_checkpoints(str(fresh)), ds.layout, ds.tinynn_config)
    argv = ["-m", "experiments.generators", "--dataset", dataset, "--fresh", fresh, "--rows", "pdiff_part",
            "flow_pca", "--outside", f"fresh_runs={outside}", "--seeds", "2", "--num_models", "2",
            "--train_models", "4", "--baseline_models", "1", "--vae_epochs", "2", "--diffusion_epochs", "2",
            "--bn_images", "100", "--test_images", TEST_IMAGES, "--data_dir", DATA_DIR, "--no_download",
            "--device", "cpu",
            "--vae_flags", f"--hidden 32 --latent_dim 4 --batch_size 2 --eval_every 2 --eval_models 1 "
                           f"--eval_images 200 --final_models 1 --test_images {TEST_IMAGES}",
            "--diffusion_flags", "--hidden 32 --depth 1 --time_dim 16 --timesteps 50 --batch_size 4"]
    run_script(*argv)
    where = dataset / "generators"
    table = json.load(open(where / "generators.json"))
    labels = [r["generator"] for r in table["rows"]]
    assert labels[:2] == ["reference: training checkpoints", "reference: fresh seeds"]
    assert any(label.startswith("reference: train + noise") for label in labels)
    assert any(label.startswith("p-diff") for label in labels) and any("DeepWeightFlow" in label for label in labels)
    pca = next(r for r in table["rows"] if "DeepWeightFlow" in r["generator"])
    assert pca["seeds"] == 2 and pca["n"] == 4 and pca["numbers"] != "-" and pca["seconds (train + sample)"] != "-"
    fresh_row = next(r for r in table["rows"] if r["generator"] == "reference: fresh seeds")
    outside_row = next(r for r in table["rows"] if r["generator"] == "outside: fresh_runs")
    assert outside_row["n"] == 2 and outside_row["accuracy mean (min)"] != "-"
    assert (where / "generators.png").stat().st_size > 10_000 and (where / "generators.md").exists()
    assert fresh_row["n"] >= 1
    again = run_script(*argv)
    assert "$ python train_vae.py" not in again.stdout and "$ python train_diffusion.py" not in again.stdout
    assert "$ python sample.py" not in again.stdout
