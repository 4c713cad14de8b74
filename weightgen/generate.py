"""What every generator does after drawing its networks, written once: finish, optionally train
on, optionally select, save. sample.py (diffusion) and sample_blends.py (blends of runs) draw in
their own way and end here; experiments save their groups through `save`.

    weights = draw(...)                                    # [n * oversample, n_params]
    clamped = finish(weights, layout)                      # BatchNorm variances >= 0, optional pruning
    weights = train_on(weights, keys, ds, data, TrainOn(steps, lr, seed), keep_dir, device)
    kept, record = select(weights, ds, data, n, check_images, device)   # with oversample > 1
    save(weights[kept], layout, tinynn_config, out, source, ds.description, batchnorm)

Output folders are written whole or not at all: into a temporary sibling, renamed at the end; a
folder that already holds networks is replaced only with overwrite=True.
"""
import hashlib
import os
import shutil
import statistics
from dataclasses import asdict, dataclass

import torch
from tqdm import tqdm

from weightgen import checkpoint_dataset as cd
from weightgen.baselines import max_error_overlap
from weightgen.cifar10 import held_out_split
from weightgen.model_io import GENERATED_KIND, CheckpointError, keep_result, kept_result, save_checkpoint
from weightgen.tinynn import FlatLayout, TinyNN, clamp_running_var, prune_to
from weightgen.tinynn_training import (TRAIN_ON_DEFAULTS, budget_config, dataset_recipe, evaluate_flat,
                                       probabilities_flat, train_flat, train_on_seeds)


def finish(weights, layout, prune_share=0.0):
    """The networks as they are saved, in place: negative BatchNorm running variances (which make
    sqrt(var + eps) NaN) clamped at 0, and optionally the smallest `prune_share` of every conv and
    linear weight tensor zeroed. Returns how many variances were clamped."""
    clamped = clamp_running_var(weights, layout)
    if prune_share:
        prune_to(weights, layout, prune_share)
    return clamped


def validation_split(manifest, data):
    """(images, labels) a checkpoint dataset held out of TinyNN training, rebuilt from the split its
    manifest records; for checks of generated networks, never the test set."""
    split = manifest["data"]
    _, (images, labels) = held_out_split(data, split["val_size"], split["val_seed"], split["train_size"])
    return images, labels


def validation_summary(weights, layout, manifest, data):
    """One line: the networks' accuracy on the images the dataset held out of TinyNN training."""
    x, y = validation_split(manifest, data)
    acc = evaluate_flat(weights, layout, manifest["tinynn"], x, y)
    min_acc = manifest["selection"]["min_acc"]
    return (f"validation accuracy ({len(y)} images held out of TinyNN training): mean {statistics.mean(acc):.4f}, "
            f"min {min(acc):.4f}, {sum(a >= min_acc for a in acc) / len(acc):.0%} >= min_acc {min_acc:g}")


@dataclass
class TrainOn:
    """How generated networks are trained on: `steps` SGD steps of the dataset's own recipe
    compressed to them (warm-up and decay in proportion) at peak rate `lr`, network i in a data
    order of its own drawn from (seed, i), shared with no run of the dataset."""
    steps: int = TRAIN_ON_DEFAULTS["steps"]
    lr: float = TRAIN_ON_DEFAULTS["lr"]
    seed: int = 0


def fingerprint(weights):
    """A short hash of one network's weights: what a kept trained network was started from."""
    return hashlib.sha256(weights.detach().float().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]


def train_on(start, keys, manifest, data, how, keep_dir, device, quiet=False, desc="train on"):
    """[len(keys), n_params]: network i = start(i) (flat weights [1, n_params]) trained as `how`
    says on the dataset's training images (never its validation or test images). Each is kept in
    keep_dir/net_NNNNN.pt with what made it (keys[i] and `how`) as soon as it is done, and taken
    from there by a later call with the same keys: an interrupted run goes on, and more networks
    or another selection train only what is missing. keys[i] may be None: then network i is known
    by the hash of its start."""
    seeds = train_on_seeds(how.seed, len(keys))
    recipe, x, y, _ = dataset_recipe(manifest, data)
    cfg = budget_config(recipe, how.steps, len(y) // recipe.batch_size, how.lr)
    x, y = x.to(device), y.to(device)  # once, not once a network
    layout = FlatLayout.from_json(manifest["layout"])
    os.makedirs(keep_dir, exist_ok=True)
    out = []
    for i in tqdm(range(len(keys)), desc=desc, unit="net", disable=quiet):
        path = os.path.join(keep_dir, f"net_{i:05d}.pt")
        w = start(i) if keys[i] is None else None
        made_with = dict(asdict(how), start=keys[i] if keys[i] is not None else fingerprint(w))
        saved = kept_result(path, made_with)
        if saved:
            out.append(saved["weights"])
            continue
        w = start(i) if w is None else w
        w = train_flat(w, seeds[i:i + 1], layout, manifest["tinynn"], x, y, cfg, how.steps, device).cpu()
        keep_result(path, made_with, weights=w)
        out.append(w)
    return torch.cat(out)


def refuse_replayed_seeds(how, n, *folders):
    """One clear error when a data order of the networks trained on is that of a run they may be
    judged against."""
    if cd.replayed_seeds(train_on_seeds(how.seed, n), *folders):
        raise cd.DatasetError(f"--seed {how.seed} gives a seed of a run of {', '.join(map(str, folders))}: "
                              f"pick another")


def novelty_check(weights, ds, data, n_images, device, quiet=False):
    """(accuracy, max error overlap) of each network on the first n_images training images: the
    overlap is the largest Jaccard overlap between the images it gets wrong and those one
    checkpoint of the generator split gets wrong (the test set's novelty measure, on images a
    generator may read; the validation images are too few to rank by)."""
    _, x, y, _ = dataset_recipe(ds.manifest, data)
    x, y = x[:n_images], y[:n_images]

    def wrong(w, desc):
        with tqdm(total=len(w), desc=desc, unit="net", leave=False, disable=quiet) as bar:
            probs = probabilities_flat(w, ds.layout, ds.tinynn_config, x, device, progress=bar.update)
        return probs.argmax(-1) != y

    reference = wrong(ds.standardizer.destandardize(ds.train), "check: training checkpoints")
    candidates = wrong(weights, "check: candidates")
    return 1 - candidates.float().mean(1), max_error_overlap(candidates, reference)


def keep_newest(overlaps, accurate, n):
    """The indices (ascending) of the n candidates of lowest check overlap, accurate ones first (a
    broken network makes other mistakes than every checkpoint: low overlap, nothing new)."""
    order = sorted(range(len(overlaps)), key=lambda i: (not accurate[i], overlaps[i].item()))
    return sorted(order[:n])


def select(weights, ds, data, n, check_images, device, quiet=False):
    """(indices of the n kept candidates, a record of the check) for oversampling: the n whose
    mistakes on check_images training images overlap least with a training checkpoint's, among
    those at least as accurate there as the dataset's min_acc."""
    accuracy, overlaps = novelty_check(weights, ds, data, check_images, device, quiet)
    min_acc = ds.manifest["selection"]["min_acc"]
    kept = keep_newest(overlaps, accuracy >= min_acc, n)
    rejected = len(overlaps) - len(kept)
    print(f"novelty check ({check_images} training images): kept {len(kept)} of {len(overlaps)} candidates "
          f"(rejected {rejected}, {rejected / len(overlaps):.0%}; {int((accuracy < min_acc).sum())} below min_acc "
          f"{min_acc:g}): max error overlap with a training checkpoint {overlaps[kept].median().item():.4f} median, "
          f"{overlaps[kept].max().item():.4f} at most (all candidates: median {overlaps.median().item():.4f})")
    record = dict(check_images=check_images, check_accuracy=_rounded(accuracy), check_overlaps=_rounded(overlaps))
    return kept, record


def _rounded(values):
    return [round(v, 6) for v in values.tolist()]


def trained_fresh(ds, fresh_dir, n, data, how, keep_dir, out, device, quiet=False):
    """The fair bar for networks trained on: the last checkpoints of the runs of `fresh_dir`
    (cycled to n networks) trained exactly as `how` trains the generated ones, in the same data
    orders, saved in `out` as a group judged against ds's training checkpoints
    (evaluate_generated.py --bar_from OUT)."""
    ends = cd.last_checkpoints(cd.dataset_folder(fresh_dir))
    refuse_replayed_seeds(how, n, ds.folder, cd.dataset_folder(fresh_dir))
    keys = [dict(fresh_dir=os.path.abspath(cd.dataset_folder(fresh_dir)), run=i % len(ends)) for i in range(n)]
    w = train_on(lambda i: ends[i % len(ends)][None].float(), keys, ds.manifest, data, how, keep_dir, device, quiet,
                 desc="fresh checkpoints, trained so")
    finish(w, ds.layout)
    source = dict(generator="fresh checkpoints trained on", fresh_dir=keys[0]["fresh_dir"], train_on=asdict(how))
    save(w, ds.layout, ds.tinynn_config, out, source, ds.description, batchnorm="trained", overwrite=True)


def refuse_used(out, overwrite):
    """One clear error when `out` holds generated networks already and `overwrite` is not set (call
    it before the work, too, so that no work is lost to it)."""
    if os.path.isdir(out) and any(f == "generated.pt" or f.startswith("model_") for f in os.listdir(out)) \
            and not overwrite:
        raise CheckpointError(f"{out} already holds generated networks: pass --overwrite to replace them, "
                              f"or --out another folder")


def save(weights, layout, tinynn_config, out, source, dataset, batchnorm, overwrite=False):
    """The one writer of generated networks: in `out`, one TinyNN state_dict per network
    (model_000.pt, ...) and one stacked generated.pt. `dataset` is the description of the split
    the generator learned from (WeightDataset.from_description rebuilds it); `batchnorm` says where
    the running statistics came from. The folder is written whole into a temporary sibling and
    renamed: an interrupted write leaves `out` as it was. A folder that holds networks already is
    refused unless `overwrite` (then replaced whole, with whatever report judged the old ones)."""
    if not len(weights):
        raise CheckpointError(f"no networks to write to {out}")
    refuse_used(out, overwrite)
    out = os.path.abspath(out)
    tmp, old = f"{out}.partial{os.getpid()}", f"{out}.old{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        width = max(3, len(str(len(weights) - 1)))
        for i, w in enumerate(weights):
            state = layout.unflatten(w.clone())
            TinyNN(**tinynn_config).load_state_dict(state)  # proves it loads before it is written
            save_checkpoint(state, os.path.join(tmp, f"model_{i:0{width}d}.pt"))
        save_checkpoint(dict(kind=GENERATED_KIND, weights=weights, tinynn=tinynn_config, layout=layout.to_json(),
                             batchnorm=batchnorm, source=source, dataset=dataset), os.path.join(tmp, "generated.pt"))
        _keep_other_files(out, tmp)
        if os.path.exists(out):
            os.replace(out, old)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def _keep_other_files(out, tmp):
    """Move what `out` holds besides networks and their report (e.g. a generator's candidates/)
    into the new folder, so that replacing the networks loses nothing else."""
    if not os.path.isdir(out):
        return
    ours = ("generated.pt", "report.json", "report.md", "accuracy_hist.png", "novelty.png", "new_networks.png")
    for name in os.listdir(out):
        if not (name in ours or name.startswith("model_")):
            os.replace(os.path.join(out, name), os.path.join(tmp, name))
