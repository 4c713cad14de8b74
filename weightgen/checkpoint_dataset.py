"""The checkpoint dataset on disk: settings, one shard file per run, and a manifest.

    checkpoints/<name>/settings.json   how the dataset is made (TinyNN config, flat layout,
                                       training recipe, augmentation, data split, selection)
    checkpoints/<name>/run_0003.pt     {"weights": float32 [n_checkpoints, n_params],
                                        "run": run record with one record per checkpoint,
                                        "recipe": the settings' RECIPE fields it was made with}
    checkpoints/<name>/manifest.json   settings + every run record + a flat checkpoint index,
                                       assembled from whichever run files are present

Every file is written under a temporary name and renamed, so a run that is cut off leaves
no half-written file; a run file exists only once the run is complete. Workers on several
machines write disjoint run files, and the manifest is assembled from them afterwards; a run
file made with another recipe than the folder's settings is refused by name (run files written
before they recorded their recipe are accepted, with a note).
"""
import glob
import json
import os
import re

import torch

from weightgen import ROOT
from weightgen.model_io import atomic_write, tensor_bytes, why_unloadable, write_json
from weightgen.tinynn_training import TrainConfig

CHECKPOINT_ROOT = os.path.join(ROOT, "checkpoints")
SETTINGS = "settings.json"
MANIFEST = "manifest.json"
FORMAT = "tinynn-checkpoint-dataset/1"
_RUN_FILE = re.compile(r"^run_(\d{4,})\.pt$")


class DatasetError(Exception):
    """A checkpoint folder that cannot be used as it is; the message says why and what to do."""


def dataset_folder(name):
    """checkpoints/NAME, or NAME itself when it is an absolute path."""
    return os.path.join(CHECKPOINT_ROOT, name)


def run_filename(run_id):
    return f"run_{run_id:04d}.pt"


def read_json(path, what):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise DatasetError(f"{what} not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"{what} is corrupted: {path} ({e})") from None


def init_settings(folder, settings):
    """Record how the dataset is made; a restart or another shard must use the same settings."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, SETTINGS)
    if not os.path.exists(path):
        write_json(path, dict(settings, format=FORMAT))
        return
    existing = _with_recipe_defaults(read_json(path, "dataset settings"))
    existing.pop("format", None)
    wanted = _flat_items(json.loads(json.dumps(settings)))  # tuples -> lists, as stored
    differ = [k for k in sorted(set(existing) | set(wanted)) if existing.get(k) != wanted.get(k)]
    # The layout follows from tinynn's widths and is too long to print: named, not shown.
    diff = [f"{k}: {_short(existing.get(k))} here, {_short(wanted.get(k))} asked" if k != "layout" else "layout"
            for k in differ]
    if diff:
        raise DatasetError(f"{folder} holds a dataset made with other settings ({'; '.join(diff)}). "
                           f"Use the same flags to continue it, or another --checkpoint_dir.")


def _short(value, n=80):
    """A setting's value for a message: long ones (lists of widths are short, a layout is not) cut
    at n characters, so that every setting that differs is named."""
    text = str(value)
    return text if len(text) <= n else text[:n] + "..."


# What makes the networks of two datasets comparable: the network, the training recipe, the data
# and the selection bar. The base seed (and the validation split drawn from it) and the number of
# runs and checkpoints may differ.
RECIPE = ("tinynn", "n_params", "layout", "train_config", "augment", "data.dataset", "data.val_size",
          "data.train_size", "selection.min_acc")


def recipe_differences(a, b):
    """The recipe settings (RECIPE) on which two datasets' settings differ, as "key: a vs b"."""
    fa, fb = recipe_of(a), recipe_of(b)
    return [f"{k}: {fa.get(k)} vs {fb.get(k)}" for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)]


def recipe_of(settings):
    """The RECIPE fields of a dataset's settings (nested as settings.json holds them, or flat as a
    run file records them), flat and as JSON stores them, the fields added later at their defaults."""
    flat = _with_recipe_defaults(json.loads(json.dumps(settings)))
    return {k: v for k, v in flat.items() if any(k == r or k.startswith(r + ".") for r in RECIPE)}


def _with_recipe_defaults(settings):
    """Flat settings where the recipe fields added after a dataset was made hold their defaults
    (the recipe that dataset was made with)."""
    flat = _flat_items(settings)
    for k, v in TrainConfig().to_json().items():
        flat.setdefault(f"train_config.{k}", v)
    return flat


def _flat_items(d, prefix=""):
    """{"a": {"b": 1}} -> {"a.b": 1}, so that a mismatch names the setting itself."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat_items(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def save_run(folder, record, weights, settings):
    """Write one run's file; it records the recipe (`settings`: the dataset's) it was made with."""
    path = os.path.join(folder, run_filename(record["run"]))
    blob = {"weights": weights.contiguous(), "run": record, "recipe": recipe_of(settings)}
    atomic_write(path, lambda tmp: torch.save(blob, tmp), size=tensor_bytes(blob))


def _run_file(folder, run_id, mmap=False):
    """The dict a run file holds; mmap: its tensors left on disk until read (to look at its records)."""
    path = os.path.join(folder, run_filename(run_id))
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        blob["run"], blob["weights"]
        return blob
    except FileNotFoundError:
        raise DatasetError(f"run file missing: {path}") from None
    except Exception as e:  # torch raises many types for a truncated or foreign file
        raise DatasetError(f"run file is corrupted or not a run file: {path} ({why_unloadable(e)}). Delete it "
                           f"(or copy it again, if it came from another machine): the same "
                           f"Gen_Diffusion_Dataset.py command then trains run {run_id} again") from None


def load_run(folder, run_id):
    """(run record, weights [n, n_params]) of one run file."""
    blob = _run_file(folder, run_id)
    return blob["run"], blob["weights"]


def check_recipes(folder, blobs=None):
    """Refuse (one DatasetError naming the files) run files made with another recipe than the
    folder's settings.json, e.g. after a hand edit of it; a note names those that predate the
    recipe record (accepted: nothing can tell their recipe). blobs: {run id: run file dict},
    when read already; else every run file's records are read (not its weights)."""
    wanted = recipe_of(read_json(os.path.join(folder, SETTINGS), "dataset settings"))
    if blobs is None:
        blobs = {r: _run_file(folder, r, mmap=True) for r in completed_runs(folder)}
    unrecorded, other = [], {}
    for run_id, blob in blobs.items():
        if "recipe" not in blob:
            unrecorded.append(run_filename(run_id))
            continue
        made = recipe_of(blob["recipe"])
        diff = [k for k in sorted(set(made) | set(wanted)) if made.get(k) != wanted.get(k)]
        if diff:
            other[run_filename(run_id)] = made, diff
    if other:
        name, (made, diff) = next(iter(other.items()))
        shown = "; ".join(k if k == "layout" else f"{k}: {_short(made.get(k))} there, {_short(wanted.get(k))} in "
                          f"settings.json" for k in diff)
        names = ", ".join(list(other)[:10]) + (f" and {len(other) - 10} more" if len(other) > 10 else "")
        raise DatasetError(f"{len(other)} run file(s) of {folder} were made with another recipe than its settings.json "
                           f"({names}; {name}: {shown}): one dataset holds one recipe. Move them to a dataset of "
                           f"their own, or delete them to train those runs again with this recipe")
    if unrecorded:
        print(f"note: {len(unrecorded)} run file(s) of {folder} predate the record of their recipe "
              f"({', '.join(unrecorded[:10])}{' ...' if len(unrecorded) > 10 else ''}): taken to be made with its "
              f"settings.json, unchecked")


def completed_runs(folder):
    """Run ids that have a run file, i.e. runs that finished."""
    ids = []
    for p in glob.glob(os.path.join(folder, "run_*.pt")):
        m = _RUN_FILE.match(os.path.basename(p))
        if m:
            ids.append(int(m.group(1)))
    return sorted(ids)


def assemble_manifest(folder):
    """Build manifest.json from settings.json and every run file present."""
    settings = read_json(os.path.join(folder, SETTINGS), "dataset settings")
    blobs = {run_id: _run_file(folder, run_id, mmap=True) for run_id in completed_runs(folder)}  # records only
    check_recipes(folder, blobs)
    runs, checkpoints = [], []
    for run_id, blob in blobs.items():
        record, weights = blob["run"], blob["weights"]
        if len(record["checkpoints"]) != weights.shape[0]:
            raise DatasetError(f"{run_filename(run_id)}: {weights.shape[0]} weight rows for "
                               f"{len(record['checkpoints'])} checkpoint records")
        runs.append({k: v for k, v in record.items() if k != "checkpoints"})
        for row, ck in enumerate(record["checkpoints"]):
            checkpoints.append(dict(ck, run=run_id, shard=run_filename(run_id), row=row))
    manifest = dict(settings, runs=runs, checkpoints=checkpoints)
    write_json(os.path.join(folder, MANIFEST), manifest)
    return manifest


def load_manifest(folder):
    if not os.path.isdir(folder):
        raise DatasetError(f"checkpoint dataset not found: {folder} (make it with Gen_Diffusion_Dataset.py "
                           f"--checkpoint_dir NAME, or pass --checkpoint_dir pointing at it)")
    manifest = read_json(os.path.join(folder, MANIFEST), "dataset manifest")
    if manifest.get("format") != FORMAT:
        raise DatasetError(f"{folder}/{MANIFEST} is not a {FORMAT} manifest (format={manifest.get('format')!r})")
    return manifest


def replayed_seeds(seeds, *folders):
    """The seeds among `seeds` that a run of one of these datasets was trained with."""
    return set(seeds) & {r["seed"] for folder in folders for r in load_manifest(folder)["runs"]}


def last_checkpoints(folder):
    """[runs, n_params]: the last checkpoint of every run of a dataset, as saved."""
    return torch.stack([load_run(folder, run["run"])[1][-1] for run in load_manifest(folder)["runs"]])


def load_weights(folder, manifest):
    """All checkpoints' flat weights, [n_checkpoints, n_params], in manifest order."""
    rows = []
    for run in manifest["runs"]:
        _, weights = load_run(folder, run["run"])
        if weights.shape[1] != manifest["n_params"]:
            raise DatasetError(f"{run_filename(run['run'])} holds vectors of {weights.shape[1]} numbers, "
                               f"the manifest's layout has {manifest['n_params']}")
        rows.append(weights)
    return torch.cat(rows) if rows else torch.empty(0, manifest["n_params"])
