import contextlib
import io
import os
import shutil
import subprocess
import sys
import traceback

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from weightgen import cli  # noqa: E402  (from ROOT, just added to the path)
from weightgen.cifar10 import DEFAULT_DATA_DIR, WHAT_TO_SET, _batches_dir  # noqa: E402

# The suite reads CIFAR-10 where the scripts do ($CIFAR10_DIR, else data/cifar10) and never downloads.
DATA_DIR = DEFAULT_DATA_DIR

torch.set_num_threads(2)


def pytest_configure(config):
    if not os.path.isfile(os.path.join(_batches_dir(DATA_DIR), "test_batch")):
        pytest.exit(f"CIFAR-10 not found at {os.path.abspath(DATA_DIR)}. {WHAT_TO_SET}.", returncode=2)


@pytest.fixture(scope="session")
def cifar():
    from weightgen.cifar10 import load_cifar10
    return load_cifar10(DATA_DIR, download=False)


# A tiny checkpoint dataset: 2000 training images, 2 epochs, a low bar, 4 checkpoints a run.
TINY = ["--ckpts_per_run", "4", "--min_acc", "0.2", "--train_size", "2000", "--val_size", "500",
        "--epochs", "2", "--save_every", "3", "--batch_size", "64", "--data_dir", DATA_DIR,
        "--no_download", "--quiet"]


# A tiny VAE for the drivers' --vae_flags (quickstart.py, experiments/): a 32-wide MLP, and the
# few evaluations its reports make on few test images.
TINY_VAE_FLAGS = "--hidden 32 --latent_dim 4 --batch_size 2 --eval_images 200 --final_models 2"


# Reports in tests look at the first 1,000 test images: evaluating a TinyNN on all 10,000 takes
# ~1.6 s on a 2-core CPU, and the mechanics under test do not depend on the count.
TEST_IMAGES = 1000


def run_script(script, *args, check=True):
    """`python script *args` run in this process by cli.run_script (the scripts' own main and
    argument parsing; torch is imported once for the whole suite instead of once a script), with
    what subprocess.run would return: returncode, stdout, stderr. An exception a script does not
    turn into a clear error is a traceback in stderr and returncode 1, as in a shell.
    run_script("-m", "experiments.NAME", ...) runs a module, as python -m does."""
    if script == "-m":
        script, args = args[0], args[1:]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.run_script(script, args)
        except Exception:
            traceback.print_exc()
            code = 1
    result = subprocess.CompletedProcess([script, *args], code, out.getvalue(), err.getvalue())
    if check:
        assert code == 0, result.stderr
    return result


def run_process(script, *args):
    """`python script *args` in a process of its own, as a user runs it from the shell."""
    out = subprocess.run([sys.executable, script, *map(str, args)], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out


def gen(folder, *extra, check=True):
    return run_script("Gen_Diffusion_Dataset.py", "--checkpoint_dir", folder, *TINY, *extra, check=check)


def private_copy(tiny_dataset, tmp_path_factory, tag):
    """A copy of the tiny dataset a test module may write into (WeightDataset caches its
    alignment inside the dataset folder)."""
    folder = tmp_path_factory.mktemp(tag) / "ds"
    shutil.copytree(tiny_dataset, folder)
    return folder


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """Two runs of four checkpoints; tests must not write into it (copy it instead)."""
    folder = tmp_path_factory.mktemp("data") / "tiny"
    gen(folder, "--runs", "2")
    return folder


@pytest.fixture(scope="session")
def three_runs(tiny_dataset, tmp_path_factory):
    """The tiny dataset and one more run, for blends of three runs; tests must not write into it."""
    folder = tmp_path_factory.mktemp("data") / "three"
    shutil.copytree(tiny_dataset, folder)
    gen(folder, "--runs", "3")
    return folder
