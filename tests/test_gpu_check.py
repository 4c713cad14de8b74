"""benchmarks/gpu_check.py at a tiny size on the CPU: every stage leaves its figures in the JSON,
the checks pass, and a data folder holding one training batch is re-split as the device's is.
--compile is left out (--skip compile): compiling twice on a 2-core CPU (the check, then the timed
run) costs about half the test's budget, and tests/test_trainers.py makes the same comparison."""
import json
import os
import time

from conftest import DATA_DIR, TINY_VAE_FLAGS, run_script
from weightgen.cifar10 import _batches_dir

# A zoo of 2 runs x 3 checkpoints, 6 steps of batch 64 each (4 an epoch, a checkpoint a step from
# the first look on); diffusion at batch 1, 5 steps an epoch, so that 20 epochs span the log's 0.1 s.
TINY = ["--device", "cpu", "--runs", "2", "--ckpts_per_run", "3", "--populations", "2", "--lone_runs", "1",
        "--speed_steps", "1", "--tinynn_epochs", "0.05", "--min_acc", "0", "--train_size", "256", "--val_size",
        "500", "--dataset_flags", "--batch_size 64 --save_every 1", "--vae_epochs", "2", "--diffusion_epochs", "20",
        "--num_models", "2", "--test_images", "200", "--accuracy_models", "2", "--vae_flags", TINY_VAE_FLAGS,
        "--diffusion_flags", "--batch_size 1", "--evaluate_flags", "--train_models 4 --baseline_models 2",
        "--skip", "compile"]


def one_batch(folder):
    """A CIFAR-10 folder with data_batch_1 and the test batch only, as carried to a device."""
    batches = folder / "cifar-10-batches-py"
    batches.mkdir(parents=True)
    for name in ("data_batch_1", "test_batch", "batches.meta"):
        (batches / name).symlink_to(os.path.join(_batches_dir(DATA_DIR), name))
    return folder


def positive_numbers(*values):
    return all(isinstance(v, (int, float)) and v > 0 for v in values)


def test_gpu_check_at_a_tiny_size(tmp_path):
    out = tmp_path / "gpu_check.json"
    run_script("-m", "benchmarks.gpu_check", *TINY, "--data_dir", one_batch(tmp_path / "data"),
               "--work", tmp_path / "work", "--out", out)
    r = json.loads(out.read_text())
    assert r["failed"] == [] and r["errors"] == {}
    assert r["data"]["resplit"] and r["data"]["train_images"] == 10000
    checks = r["checks"]
    population = checks["population"]
    assert population["passed"] and checks["compile"] == {"skipped": "--skip compile"}
    for variant in ("default", "l1_prune"):
        errors = population[variant]["relative_update_errors"]
        assert len(errors) == 2 and max(errors) < population["tolerance"]
    datasets = population["datasets"]
    assert datasets["same_checkpoints"] and datasets["checkpoints"] == [[run, step] for run in range(3)
                                                                         for step in (3, 5)]
    acc = checks["sampled_accuracy"]
    assert acc["passed"] and acc["max_abs_difference"] == 0 and acc["device_accuracy"] == acc["cpu_accuracy"]
    speed = r["zoo_speed"]
    assert positive_numbers(*(speed[k]["run_steps_per_s"] for k in ("one_at_a_time", "population_2")))
    assert speed["best_population"] in (1, 2)
    zoo = r["zoo"]["figures"]
    assert zoo["runs_finished"] == 2 and zoo["checkpoints"] == 6 and positive_numbers(zoo["runs_per_min"])
    p = r["pipeline"]
    d = p["diffusion_plain"]
    assert d["epochs"] == 20 and "diffusion_compiled" not in p
    assert positive_numbers(p["vae"]["wall_seconds"], d["wall_seconds"], d["seconds_per_epoch"],
                            d["extrapolated_seconds"], p["sample_seconds"], p["evaluate_seconds"])


def test_a_folder_it_did_not_make_is_refused(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "keep.txt").write_text("a user's file")
    out = run_script("-m", "benchmarks.gpu_check", "--work", tmp_path / "mine", "--out", tmp_path / "x.json",
                     check=False)
    assert out.returncode == 1 and "--work" in out.stderr and (tmp_path / "mine" / "keep.txt").exists()


def test_the_zoo_is_stopped_as_ctrl_c_stops_it():
    """What the zoo stage relies on: a KeyboardInterrupt after the budget, the timer gone after."""
    from benchmarks.gpu_check import within

    def interrupted():
        try:
            time.sleep(5)
        except KeyboardInterrupt:
            return "kept the finished runs"  # what Gen_Diffusion_Dataset.py does, then exits 130
    t0 = time.time()
    assert within(0.2, interrupted) == ("kept the finished runs", True) and time.time() - t0 < 2
    assert within(0.2, lambda: time.sleep(5)) == (None, True)
    assert within(5, lambda: 1) == (1, False)
    time.sleep(0.3)  # no alarm left behind
