"""Non-finite losses stop every trainer with one line; torchrun splits the dataset's runs."""
import json
import os
import subprocess
import sys

import pytest

from weightgen import checkpoint_dataset as cd
from conftest import DATA_DIR, ROOT, TINY, gen, private_copy, run_script
from weightgen.training_utils import run_epochs

VAE = ["--hidden", "32", "--latent_dim", "4", "--batch_size", "2", "--eval_every", "1000", "--eval_models", "1",
       "--eval_images", "200", "--final_models", "1", "--val_fraction", "0.25", "--data_dir", DATA_DIR,
       "--no_download", "--quiet"]
DIFFUSION = ["--space", "weights", "--hidden", "32", "--depth", "1", "--time_dim", "16", "--timesteps", "50",
             "--batch_size", "4", "--quiet"]


@pytest.fixture(scope="module")
def dataset(tiny_dataset, tmp_path_factory):
    return private_copy(tiny_dataset, tmp_path_factory, "nonfinite")


def test_run_epochs_stops_at_a_non_finite_loss_and_saves_nothing_after_it():
    losses, history, saved = [1.0, 0.5, float("nan"), 0.3], [], []
    with pytest.raises(SystemExit) as stop:
        run_epochs(history, 4, lambda epoch: dict(epoch=epoch + 1, loss=losses[epoch]),
                   lambda: saved.append(len(history)), save_every=1, desc="test", quiet=True)
    assert "in epoch 3" in stop.value.code and "the checkpoint of epoch 2 is kept" in stop.value.code
    assert saved == [1, 2] and [h["epoch"] for h in history] == [1, 2]


def test_a_diverging_vae_stops_with_one_line(dataset):
    out = run_script("train_vae.py", "--checkpoint_dir", dataset, "--run_name", "nan_vae", "--epochs", "50",
                     "--lr", "1e30", *VAE, check=False)
    assert out.returncode == 1 and "the training loss turned" in out.stderr and "Traceback" not in out.stderr
    assert not (dataset / "nan_vae" / "vae.pt").exists()  # nothing non-finite was saved


def test_a_diverging_diffusion_stops_with_one_line(dataset):
    out = run_script("train_diffusion.py", "--checkpoint_dir", dataset, "--run_name", "nan_diffusion",
                     "--epochs", "50", "--lr", "1e30", *DIFFUSION, check=False)
    assert out.returncode == 1 and "the training loss turned" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("population", ["1", "2"])
def test_a_diverging_tinynn_run_keeps_no_checkpoints(tmp_path, population):
    out = gen(tmp_path / "diverged", "--runs", population, "--population", population, "--lr", "1e30",
              "--max_epochs", "3", check=False)
    text = out.stdout + out.stderr
    assert text.count("diverged and keeps no checkpoints") == int(population) and "Traceback" not in out.stderr
    assert out.returncode != 0  # every run diverged: nothing to make a dataset of
    runs = cd.load_manifest(str(tmp_path / "diverged"))["runs"]
    assert all(r["diverged_at_step"] is not None and not r["complete"] for r in runs)


def test_torchrun_shards_the_runs_into_the_same_manifest(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    single = tmp_path / "single"
    subprocess.run([sys.executable, "Gen_Diffusion_Dataset.py", "--checkpoint_dir", single, "--runs", "2", *TINY],
                   cwd=ROOT, env=env, check=True, capture_output=True)
    ranks = tmp_path / "ranks"
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    out = subprocess.run([torchrun, "--nproc_per_node", "2", "Gen_Diffusion_Dataset.py", "--checkpoint_dir", ranks,
                          "--runs", "2", *TINY], cwd=ROOT, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    a, b = cd.load_manifest(str(single)), cd.load_manifest(str(ranks))
    assert [r["seed"] for r in a["runs"]] == [r["seed"] for r in b["runs"]]
    assert a["checkpoints"] == b["checkpoints"]  # same steps, same accuracies
    assert {r["device"] for r in b["runs"]} == {"cpu"} and json.load(open(ranks / "summary.json"))["checkpoints"] == 8
