"""What both trainers share: Ctrl-C saves a checkpoint that --resume continues without repeating
an epoch; freed memory kept for reuse where the C library allows it. And the diffusion trainer's
--compile, which must train what the plain step trains."""
import json
import platform
import resource
import signal
import subprocess
import sys
import time

import pytest
import torch
import torch._inductor.config

from conftest import DATA_DIR, ROOT, private_copy, run_script
from weightgen.model_io import DIFFUSION_KIND, VAE_KIND, load_checkpoint

VAE = ["train_vae.py", "--hidden", "32", "--latent_dim", "4", "--batch_size", "2", "--eval_every", "1000",
       "--eval_models", "1", "--eval_images", "200", "--final_models", "1", "--val_fraction", "0.25",
       "--data_dir", DATA_DIR, "--no_download", "--quiet"]
DIFFUSION = ["train_diffusion.py", "--space", "weights", "--hidden", "32", "--depth", "1", "--time_dim", "16",
             "--timesteps", "50", "--batch_size", "4", "--save_every", "1", "--quiet"]
TRAINERS = {"vae": (VAE, "vae_last.pt", VAE_KIND), "diffusion": (DIFFUSION, "diffusion.pt", DIFFUSION_KIND)}


@pytest.fixture(scope="module")
def dataset(tiny_dataset, tmp_path_factory):
    return private_copy(tiny_dataset, tmp_path_factory, "trainers")


def interrupt_after_first_save(cmd, saved, timeout=300):
    """Start a trainer, send it SIGINT (Ctrl-C) once its first checkpoint is on disk."""
    # A shell without job control starts background commands with SIGINT ignored, and Python then
    # installs no KeyboardInterrupt handler: give the trainer the default disposition so the test
    # means the same wherever pytest was started.
    proc = subprocess.Popen([sys.executable, *map(str, cmd)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.time() + timeout
        while not saved.exists():
            assert proc.poll() is None, proc.communicate()[1]
            assert time.time() < deadline, "no checkpoint was saved in time"
            time.sleep(0.2)
        time.sleep(1.0)  # a little way into the next epochs
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
        return proc.returncode, out, err
    finally:
        proc.kill()  # a no-op once it has exited; never leave a trainer running beside the suite


@pytest.mark.parametrize("trainer", sorted(TRAINERS))
def test_ctrl_c_saves_a_checkpoint_that_resumes(dataset, trainer):
    cmd, filename, kind = TRAINERS[trainer]
    cmd = [cmd[0], "--checkpoint_dir", dataset, "--run_name", f"ctrlc_{trainer}", *cmd[1:]]
    path = dataset / f"ctrlc_{trainer}" / filename
    code, out, err = interrupt_after_first_save([*cmd, "--epochs", "100000"], path)
    assert code == 130 and "interrupted; saved after epoch" in out and "Traceback" not in err
    stopped = load_checkpoint(str(path), kind)
    epochs = stopped["epoch"]
    assert 1 <= epochs < 100000 and [h["epoch"] for h in stopped["history"]] == list(range(1, epochs + 1))
    run_script(*cmd, "--epochs", epochs + 2, "--resume")
    resumed = load_checkpoint(str(path), kind)
    assert [h["epoch"] for h in resumed["history"]] == list(range(1, epochs + 3))
    log = (path.parent / "log.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in log] == list(range(1, epochs + 3))


FAULTS_PER_ALLOCATION = """
import resource, sys, torch
from weightgen.training_utils import reuse_freed_memory
if sys.argv[1] == "reuse":
    assert reuse_freed_memory()
faults = []
for _ in range(20):  # 64 MB: above glibc's largest mmap threshold, like the VAE's widest gradients
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    x = torch.ones(16 * 2 ** 20)
    del x
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(sum(faults[-5:]))  # once the heap has grown (glibc takes a few rounds)
"""


def minor_faults(mode):
    out = subprocess.run([sys.executable, "-c", FAULTS_PER_ALLOCATION, mode], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    return int(out)


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                    reason="mallopt is glibc's")
def test_freed_memory_is_reused_without_page_faults_on_glibc():
    pages = 64 * 2 ** 20 // resource.getpagesize()  # of one allocation
    assert minor_faults("plain") > 4 * pages  # every allocation faulted in again: the trainers' steps before
    assert minor_faults("reuse") < pages


def test_compiled_diffusion_training_is_the_plain_training(dataset):
    """--compile (torch.compile of the loss and its backward; CUDA graphs on a GPU) changes the
    speed of a step, not what it computes: with inductor drawing its random numbers as eager
    PyTorch does, the losses of every epoch and the weights kept agree to float rounding."""
    trained = {}
    with torch._inductor.config.patch(fallback_random=True):
        for flags in ([], ["--compile"]):
            name = "compiled" if flags else "plain"
            run_script(DIFFUSION[0], "--checkpoint_dir", dataset, "--run_name", name, *DIFFUSION[1:], "--epochs", 3,
                       *flags)
            trained[name] = load_checkpoint(str(dataset / name / "diffusion.pt"), DIFFUSION_KIND)
    plain, compiled = trained["plain"], trained["compiled"]
    assert compiled["config"]["compile"] and not plain["config"]["compile"]
    losses = [[h["loss"] for h in t["history"]] for t in (plain, compiled)]
    assert len(losses[0]) == 3 and losses[0] == pytest.approx(losses[1], rel=1e-4)
    for key, weights in plain["ema"].items():
        torch.testing.assert_close(compiled["ema"][key], weights, rtol=1e-4, atol=1e-5)
