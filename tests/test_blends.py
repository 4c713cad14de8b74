"""sample_blends.py end to end on the tiny three-run dataset: trained blends of different runs, an
interrupted run that goes on where it stopped, the novelty check of --oversample, and one-line
errors."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from weightgen.baselines import new_network_bar
from weightgen.cifar10 import held_out_split
from weightgen.generate import novelty_check
from conftest import DATA_DIR, ROOT, TEST_IMAGES, TINY, run_script
from weightgen.model_io import GENERATED_KIND, load_checkpoint
from weightgen.tinynn import TinyNN
from weightgen.tinynn_training import evaluate_flat
from weightgen.weight_dataset import WeightDataset

SMALL = ["--num_models", "5", "--oversample", "1", "--bn_images", "500", "--match_images", "200", "--data_dir", DATA_DIR,
         "--no_download", "--device", "cpu", "--quiet"]


def blends(dataset, out, *extra, check=True):
    return run_script("sample_blends.py", "--checkpoint_dir", dataset, "--out", out, *SMALL, *extra, check=check)


def validation_accuracy(weights, ds, cifar):
    split = ds.manifest["data"]
    _, (x, y) = held_out_split(cifar, split["val_size"], split["val_seed"], split["train_size"])
    return torch.tensor(evaluate_flat(weights, ds.layout, ds.tinynn_config, x, y))


@pytest.fixture(scope="module")
def trained(three_runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("blends") / "trained"
    blends(three_runs, out, "--steps", "40")
    return out


def test_blends_are_made_of_different_runs_and_learn_from_their_steps(three_runs, trained, tmp_path, cifar):
    g = load_checkpoint(trained / "generated.pt", GENERATED_KIND)
    ds = WeightDataset(str(three_runs), align="none")
    assert g["weights"].shape == (5, ds.layout.numel) and g["batchnorm"] == "trained"
    assert g["source"]["runs_per_blend"] == 3 and g["source"]["steps"] == 40 and g["dataset"] == ds.description
    seen = {(r["run"], r["row"]) for r in ds.train_records}
    for members in g["source"]["members"]:  # three checkpoints of the generator split, of three runs
        assert len({run for run, _ in members}) == 3 and all(tuple(m) in seen for m in members)
    for i in range(5):
        TinyNN(**g["tinynn"]).load_state_dict(torch.load(trained / f"model_{i:03d}.pt", weights_only=True))
    assert sorted(os.listdir(trained / "candidates")) == [f"net_{i:05d}.pt" for i in range(5)]

    untrained = tmp_path / "untrained"
    blends(three_runs, untrained, "--steps", "0")
    u = load_checkpoint(untrained / "generated.pt", GENERATED_KIND)
    assert u["source"]["members"] == g["source"]["members"] and u["batchnorm"].startswith("re-estimated")
    before, after = validation_accuracy(u["weights"], ds, cifar), validation_accuracy(g["weights"], ds, cifar)
    assert after.mean() > before.mean() + 0.02, (before, after)
    assert not any(torch.equal(a, b) for a, b in zip(u["weights"], g["weights"]))
    assert len({tuple(w[:50].tolist()) for w in g["weights"]}) == 5  # five networks, not one five times


def test_an_interrupted_run_goes_on_where_it_stopped(three_runs, trained, tmp_path):
    out = tmp_path / "again"
    argv = ["sample_blends.py", "--checkpoint_dir", three_runs, "--out", out, *SMALL, "--steps", "40"]
    # A shell that starts the tests in the background leaves SIGINT ignored, and a child inherits
    # that: restore the default so that Python turns the signal into KeyboardInterrupt, as at a terminal.
    proc = subprocess.Popen([sys.executable, *map(str, argv)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    first = out / "candidates" / "net_00000.pt"
    while not first.exists() and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "run the same command to continue" in stdout
    saved = sorted(os.listdir(out / "candidates"))
    assert 1 <= len(saved) < 5 and not (out / "generated.pt").exists()

    again = run_script(*argv)
    assert "already holds" not in again.stdout
    done = load_checkpoint(out / "generated.pt", GENERATED_KIND)
    reference = load_checkpoint(trained / "generated.pt", GENERATED_KIND)
    assert done["source"] == reference["source"]
    torch.testing.assert_close(done["weights"], reference["weights"], rtol=0, atol=1e-6)
    assert "already holds these 5 networks" in run_script(*argv).stdout


def test_a_saved_network_of_other_settings_or_damaged_is_made_again(three_runs, tmp_path):
    out = tmp_path / "other"
    os.makedirs(out / "candidates")
    torch.save(dict(made_with=dict(steps=999), weights=torch.zeros(1, 3)), out / "candidates" / "net_00000.pt")
    (out / "candidates" / "net_00001.pt").write_bytes(b"cut short")
    blends(three_runs, out, "--steps", "0", "--num_models", "2")
    weights = load_checkpoint(out / "generated.pt", GENERATED_KIND)["weights"]
    assert weights.shape[0] == 2 and (weights.abs().sum(1) > 0).all()


def test_oversample_keeps_the_candidates_least_like_a_training_checkpoint(three_runs, trained):
    # the same settings and folder as `trained`: its 5 candidates are taken as they are, one more is trained
    before = {i: os.path.getmtime(trained / "candidates" / f"net_{i:05d}.pt") for i in range(5)}
    done = blends(three_runs, trained, "--steps", "40", "--num_models", "2", "--oversample", "3",
                  "--check_images", "2000")
    assert "kept 2 of 6 candidates" in done.stdout
    assert before == {i: os.path.getmtime(trained / "candidates" / f"net_{i:05d}.pt") for i in range(5)}
    g = load_checkpoint(trained / "newest_of3" / "generated.pt", GENERATED_KIND)
    source, kept = g["source"], g["source"]["kept"]
    assert source["candidates"] == 6 and source["oversample"] == 3 and len(kept) == 2
    accurate = [a >= WeightDataset(str(three_runs), align="none").manifest["selection"]["min_acc"]
                for a in source["check_accuracy"]]
    rank = [(not accurate[i], source["check_overlaps"][i]) for i in range(6)]
    assert max(rank[i] for i in kept) <= min(rank[i] for i in range(6) if i not in kept)
    for j, i in enumerate(kept):  # the kept networks are those candidates, as trained
        saved = torch.load(trained / "candidates" / f"net_{i:05d}.pt", weights_only=True)
        assert torch.equal(g["weights"][j], saved["weights"][0])
        assert saved["made_with"]["start"]["members"] == source["members"][j]
    all5 = load_checkpoint(trained / "generated.pt", GENERATED_KIND)["weights"]
    assert all(torch.equal(g["weights"][j], all5[i]) for j, i in enumerate(kept) if i < 5)


def test_the_check_calls_a_training_checkpoint_a_copy(three_runs, trained, cifar):
    ds = WeightDataset(str(three_runs), align="none")
    copies = ds.standardizer.destandardize(ds.train[:2])
    blended = load_checkpoint(trained / "generated.pt", GENERATED_KIND)["weights"]
    accuracy, overlaps = novelty_check(torch.cat([copies, blended]), ds, cifar, 2000, "cpu", quiet=True)
    assert overlaps[:2].tolist() == [1.0, 1.0]  # its own mistakes, exactly
    assert (overlaps[2:] < 0.95).all() and ((accuracy > 0.1) & (accuracy < 1)).all(), (accuracy, overlaps)


def test_evaluate_generated_judges_the_blends(trained, three_runs):
    run_script("evaluate_generated.py", "--model_path", trained, "--train_models", "3", "--baseline_models", "0",
               "--test_images", TEST_IMAGES, "--data_dir", DATA_DIR, "--no_download", "--device", "cpu")
    report = json.load(open(trained / "report.json"))
    assert len(report["per_model"]["generated"]["accuracy"]) == 5


def test_evaluate_generated_judges_by_a_second_bar(trained, tmp_path):
    def judge(*extra, check=True):
        return run_script("evaluate_generated.py", "--model_path", trained, "--train_models", "3", "--baseline_models",
                          "0", "--data_dir", DATA_DIR, "--no_download", "--device", "cpu", *extra, check=check)
    judge("--test_images", TEST_IMAGES)
    os.makedirs(tmp_path / "bar")
    shutil.copy(trained / "report.json", tmp_path / "bar" / "report.json")  # the same networks set the bar
    done = judge("--test_images", TEST_IMAGES, "--bar_from", tmp_path / "bar")
    report = json.load(open(trained / "report.json"))
    g = report["per_model"]["generated"]
    bar = new_network_bar(g["max_error_overlap"])
    new = [a >= report["min_acc"] and o <= bar for a, o in zip(g["accuracy"], g["max_error_overlap"])]
    assert report["bar_from"]["bar"] == bar and report["bar_from"]["n"] == 5 and g["new_by_bar_from"] == new
    assert report["bar_from"]["new"] == sum(new) / 5 and "By the bar of 5 networks judged before" in done.stdout
    other = judge("--test_images", "500", "--bar_from", tmp_path / "bar", check=False)
    assert other.returncode == 1 and "judged against other training checkpoints or test images" in other.stderr
    missing = judge("--test_images", TEST_IMAGES, "--bar_from", tmp_path / "nowhere", check=False)
    assert missing.returncode == 1 and "--bar_from: no report" in missing.stderr


def test_clear_errors(three_runs, tmp_path):
    more = blends(three_runs, tmp_path / "x", "--runs_per_blend", "4", check=False)
    assert more.returncode == 1 and "blends of 4 runs need 4 training runs" in more.stderr
    assert "Traceback" not in more.stderr
    missing = blends(tmp_path / "nowhere", tmp_path / "y", check=False)
    assert missing.returncode == 1 and "checkpoint dataset not found" in missing.stderr
    bad = blends(three_runs, tmp_path / "z", "--runs_per_blend", "1", check=False)
    assert bad.returncode == 2 and "--runs_per_blend" in bad.stderr
    bad = blends(three_runs, tmp_path / "z", "--oversample", "0", check=False)
    assert bad.returncode == 2 and "--oversample" in bad.stderr
    bad = blends(three_runs, tmp_path / "z", "--steps", "0", "--oversample", "3", check=False)
    assert bad.returncode == 2 and "--steps 0 needs --oversample 1" in bad.stderr


def test_fresh_checkpoints_trained_the_same_way_set_the_fair_bar(three_runs, tmp_path):
    """--fresh_dir: the fresh runs' last checkpoints, trained with the blends' steps, rate and data
    orders, are a group judged against the same training checkpoints: evaluate_generated.py's
    --bar_from reads them."""
    fresh = tmp_path / "fresh"
    run_script("Gen_Diffusion_Dataset.py", "--checkpoint_dir", fresh, "--runs", "1", "--seed", "5", *TINY)
    out = tmp_path / "b"
    blends(three_runs, out, "--steps", "10", "--num_models", "2", "--fresh_dir", fresh)
    bar = tmp_path / "b_fresh_trained"
    g = load_checkpoint(bar / "generated.pt", GENERATED_KIND)
    assert len(g["weights"]) == 2 and g["batchnorm"] == "trained" and g["source"]["train_on"]["steps"] == 10
    assert sorted(os.listdir(bar)) == ["generated.pt", "model_000.pt", "model_001.pt"]
    judge = ["--train_models", "3", "--baseline_models", "0", "--test_images", TEST_IMAGES, "--data_dir", DATA_DIR,
             "--no_download", "--device", "cpu"]
    run_script("evaluate_generated.py", "--model_path", bar, *judge)
    done = run_script("evaluate_generated.py", "--model_path", out, "--bar_from", bar, *judge)
    assert "By the bar of 2 networks judged before" in done.stdout
    assert json.load(open(out / "report.json"))["bar_from"]["n"] == 2


def test_a_used_output_folder_is_refused_or_replaced_whole(three_runs, trained, tmp_path):
    out = tmp_path / "used"
    shutil.copytree(trained, out)
    before, candidates = sorted(os.listdir(out)), sorted(os.listdir(trained / "candidates"))
    refused = blends(three_runs, out, "--steps", "40", "--num_models", "2", check=False)
    assert refused.returncode == 1 and "already holds generated networks" in refused.stderr
    assert "--overwrite" in refused.stderr and "Traceback" not in refused.stderr and sorted(os.listdir(out)) == before
    blends(three_runs, out, "--steps", "40", "--num_models", "2", "--overwrite")
    assert sorted(f for f in os.listdir(out) if f.startswith("model_")) == ["model_000.pt", "model_001.pt"]
    assert len(load_checkpoint(out / "generated.pt", GENERATED_KIND)["weights"]) == 2
    assert sorted(os.listdir(out / "candidates")) == candidates  # what the folder held besides networks stays
