"""A tiny Gen_Diffusion_Dataset: manifest and shards, restart after a kill, shards, errors."""
import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from weightgen import checkpoint_dataset as cd
from weightgen.cifar10 import split_validation
from conftest import ROOT, TINY, gen
from weightgen.tinynn import FlatLayout, TinyNN, model_from_flat
from weightgen.tinynn_training import evaluate

def digest(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_manifest_and_shards_are_valid(tiny_dataset):
    manifest = cd.load_manifest(str(tiny_dataset))
    layout = FlatLayout.from_json(manifest["layout"])
    assert layout == FlatLayout.of(TinyNN(**manifest["tinynn"]))
    assert manifest["n_params"] == layout.numel
    assert [r["run"] for r in manifest["runs"]] == [0, 1]
    assert len({r["seed"] for r in manifest["runs"]}) == 2
    assert all(r["complete"] for r in manifest["runs"])
    assert len(manifest["checkpoints"]) == 8
    for ck in manifest["checkpoints"]:
        assert ck["val_acc"] >= 0.2 and ck["shard"] == cd.run_filename(ck["run"])
    steps = [c["step"] for c in manifest["checkpoints"] if c["run"] == 0]
    assert steps == sorted(steps) and len(set(steps)) == len(steps)
    weights = cd.load_weights(str(tiny_dataset), manifest)
    assert weights.shape == (8, layout.numel) and weights.dtype == torch.float32
    assert torch.isfinite(weights).all()
    for name in ["summary.json", "summary.txt", "accuracy_vs_step.png", "settings.json"]:
        assert os.path.getsize(tiny_dataset / name) > 0
    assert json.load(open(tiny_dataset / "summary.json"))["checkpoints"] == 8


def test_recorded_accuracy_is_what_the_weights_give(tiny_dataset, cifar):
    """A stored checkpoint, rebuilt from its flat vector, scores its recorded val_acc."""
    manifest = cd.load_manifest(str(tiny_dataset))
    layout = FlatLayout.from_json(manifest["layout"])
    weights = cd.load_weights(str(tiny_dataset), manifest)
    data = cifar
    _, val = split_validation(50000, manifest["data"]["val_size"], manifest["data"]["val_seed"])
    for i in [0, 5]:
        model = model_from_flat(weights[i], layout, manifest["tinynn"])
        acc = evaluate(model, data.train_images[val], data.train_labels[val])
        assert acc == pytest.approx(manifest["checkpoints"][i]["val_acc"], abs=1e-6)


def test_killed_run_restarts_without_losing_or_duplicating(tmp_path):
    folder = tmp_path / "killed"
    cmd = [sys.executable, "Gen_Diffusion_Dataset.py", "--checkpoint_dir", str(folder), "--runs", "3", *TINY]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 300
    while not (folder / cd.run_filename(0)).exists():
        assert proc.poll() is None and time.time() < deadline, "no run finished before the deadline"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # hard kill, somewhere inside run 1
    proc.wait()
    survived = cd.completed_runs(str(folder))
    assert 0 in survived and len(survived) < 3, survived
    before = {r: digest(folder / cd.run_filename(r)) for r in survived}

    gen(folder, "--runs", "3")
    manifest = cd.load_manifest(str(folder))
    assert [r["run"] for r in manifest["runs"]] == [0, 1, 2]
    assert len(manifest["checkpoints"]) == 12
    keys = [(c["run"], c["step"]) for c in manifest["checkpoints"]]
    assert len(set(keys)) == len(keys)
    assert all(digest(folder / cd.run_filename(r)) == h for r, h in before.items())  # not retrained
    assert not [p for p in os.listdir(folder) if ".tmp" in p]


def test_shards_assemble_into_one_manifest(tmp_path, tiny_dataset):
    folder = tmp_path / "sharded"
    gen(folder, "--runs", "2", "--shard", "1", "--num_shards", "2")
    assert cd.completed_runs(str(folder)) == [1]
    gen(folder, "--runs", "2", "--shard", "0", "--num_shards", "2")
    gen(folder, "--assemble")
    manifest = cd.load_manifest(str(folder))
    assert [r["run"] for r in manifest["runs"]] == [0, 1]
    # Same settings and seeds as the unsharded dataset: the same checkpoints.
    unsharded = cd.load_manifest(str(tiny_dataset))
    assert [r["seed"] for r in manifest["runs"]] == [r["seed"] for r in unsharded["runs"]]


def test_other_settings_in_the_same_folder_are_refused(tiny_dataset):
    out = gen(tiny_dataset, "--runs", "2", "--min_acc", "0.3", check=False)
    assert out.returncode != 0
    assert "other settings" in out.stderr and "min_acc" in out.stderr and "Traceback" not in out.stderr


def test_corrupted_run_file_is_one_clear_error(tmp_path, tiny_dataset):
    folder = tmp_path / "corrupt"
    folder.mkdir()
    for name in ["settings.json", cd.run_filename(0)]:
        (folder / name).write_bytes((tiny_dataset / name).read_bytes())
    (folder / cd.run_filename(1)).write_bytes(b"not a checkpoint")
    out = gen(folder, "--assemble", check=False)
    assert out.returncode != 0 and "corrupted" in out.stderr and cd.run_filename(1) in out.stderr
    assert "Traceback" not in out.stderr
    assert f"{folder / cd.run_filename(1)} (" in out.stderr and "Delete it" in out.stderr  # what to do, and with which


def test_run_files_record_their_recipe(tiny_dataset):
    """Every run file records the recipe (the settings' RECIPE fields) it was made with."""
    settings = json.load(open(tiny_dataset / cd.SETTINGS))
    for run_id in cd.completed_runs(str(tiny_dataset)):
        blob = torch.load(tiny_dataset / cd.run_filename(run_id), weights_only=True)
        assert cd.recipe_of(blob["recipe"]) == cd.recipe_of(settings)
        assert blob["recipe"]["train_config.lr"] == settings["train_config"]["lr"]


def test_widths_flag_builds_and_describes_a_narrower_tinynn(tmp_path, cifar):
    """--widths reaches the runs, the manifest and the layout; a stored checkpoint rebuilt from
    the manifest's own description scores its recorded accuracy."""
    folder = tmp_path / "narrow"
    gen(folder, "--runs", "1", "--widths", "8", "16", "12")
    manifest = cd.load_manifest(str(folder))
    assert manifest["tinynn"]["widths"] == [8, 16, 12]
    layout = FlatLayout.from_json(manifest["layout"])
    assert layout == FlatLayout.of(TinyNN(widths=(8, 16, 12)))
    assert layout.numel < FlatLayout.of(TinyNN()).numel
    weights = cd.load_weights(str(folder), manifest)
    _, val = split_validation(50000, manifest["data"]["val_size"], manifest["data"]["val_seed"])
    model = model_from_flat(weights[-1], layout, manifest["tinynn"])
    acc = evaluate(model, cifar.train_images[val], cifar.train_labels[val])
    assert acc == pytest.approx(manifest["checkpoints"][-1]["val_acc"], abs=1e-6)


def test_other_widths_in_the_same_folder_are_refused(tiny_dataset):
    out = gen(tiny_dataset, "--runs", "2", "--widths", "8", "16", "12", check=False)
    assert out.returncode != 0
    assert "other settings" in out.stderr and "tinynn" in out.stderr and "Traceback" not in out.stderr
