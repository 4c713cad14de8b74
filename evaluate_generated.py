"""Evaluate generated TinyNNs honestly: next to the training checkpoints, networks from fresh
seeds, simple baselines, and measures of how new they are.

    python evaluate_generated.py --model_path checkpoints/Toy_CNN/diffusion_latent/samples_ddim_50_seed0 \\
                                 --fresh_dir Toy_CNN_fresh

--model_path is a folder written by sample.py (or its generated.pt), which records the dataset
and the very split its generator was trained on (so with train_vae.py --max_train N, "training
checkpoints" are those N). It may also be a folder of TinyNN state_dicts made elsewhere (*.pt,
*.pth, e.g. by another project's generator): then --checkpoint_dir names the dataset to judge them
against (its default split), and each network is aligned to its reference run before distances. On the CIFAR-10 test set (all 10,000 images unless --test_images
says fewer) it evaluates every generated network,
--train_models random training checkpoints (one of every run before a second of any),
--fresh_models checkpoints of --fresh_dir (a dataset made by Gen_Diffusion_Dataset.py with the
same recipe and another --seed: runs the generator never saw), and --baseline_models of each
baseline (training weights plus Gaussian noise at three scales, the average of --average_k
aligned checkpoints, the average of all of one run's checkpoints, a per-coordinate Gaussian fit).

For every group:
- accuracy, and distance to the nearest training checkpoint (aligned, standardised weights; RMS
  per coordinate; for training checkpoints, the nearest *other* one);
- max error overlap: the largest Jaccard overlap of its wrong test images with those of one of
  the evaluated training checkpoints;
- new: the share of networks with accuracy >= the dataset's min_acc and max error overlap no
  higher than the fresh networks' 95th percentile (needs --fresh_dir; ~95% of fresh networks by
  construction); with --bar_from, also by the 95th percentile of networks judged before (e.g.
  fresh checkpoints trained the same steps as generated networks that were trained on: training on
  changes a network's mistakes, so the fair bar for them);
- diversity: distance to the nearest other network of its own group and distinct networks by
  weights; median pairwise test-prediction disagreement and functionally distinct networks
  (greedy; a network counts when it disagrees with every one counted before on more than the
  5th percentile of the disagreement between training checkpoints of different runs);
- ensembles: the accuracy of the averaged softmax of K networks, K = the training runs (generated:
  the first K; training and fresh: one network per run), and of all generated networks.
For a latent generator whose VAE held out whole runs (train_vae.py --holdout runs), the VAE's
reconstructions of --heldout_models checkpoints of those runs are evaluated next to the originals.
Writes report.json (every model's figures), report.md, accuracy_hist.png, novelty.png and
new_networks.png (accuracy against max error overlap) beside the generated models.
"""
import argparse
import collections
import hashlib
import json
import os
import time

import numpy as np
import torch
from tqdm import tqdm

from weightgen import checkpoint_dataset as cd
from weightgen.baselines import (all_baselines, cross_run_disagreement, disagreement, distinct, ensemble_accuracy,
                       greedy_count, is_new, max_error_overlap, nearest, nearest_within, new_network_bar,
                       one_per_run, reconstruction_identity)
from weightgen.cifar10 import load_cifar10
from weightgen.cli import add_runtime_flags, add_test_images_flag, count, run_main, whole
from weightgen.model_io import (CheckpointError, atomic_write, load_generated, load_state_dicts, pick_device,
                                write_json)
from weightgen.generate import finish
from weightgen.tinynn_training import probabilities_flat
from vae_model import load_vae
from weightgen.weight_dataset import WeightDataset

TRAIN, FRESH = "training checkpoints", "fresh seeds"
PREDICTIONS = "predictions"  # the cache of reference networks' test outputs, in the dataset folder


def stats(values, min_acc=None):
    """Summary of the finite values (n counts them); None for each figure when there is none (a
    group of one network has no nearest other network and no pairs), so report.json stays JSON."""
    a = np.asarray([v for v in values if v is not None], dtype=np.float64)
    a = a[np.isfinite(a)]
    if not len(a):
        return dict(n=0, **{k: None for k in ["mean", "median", "std", "min", "max"]})
    s = dict(mean=a.mean(), median=np.median(a), std=a.std(), min=a.min(), max=a.max())
    if min_acc is not None:
        s["above_min_acc"] = (a >= min_acc).mean()
    return dict(n=len(a), **{k: float(v) for k, v in s.items()})


def finite_or_none(values):
    """A list for report.json: inf (no other network to be near) becomes None (null)."""
    return [v if np.isfinite(v) else None for v in values]


def _fmt(value, spec):
    return "-" if value is None else format(value, spec)


def training_sample(runs, n, gen):
    """Rows of n random training checkpoints (runs: the run of each), spread over the runs: one of
    every run before a second of any. A generated copy of a run left out of the sample would
    count as new, so a sample of at least as many checkpoints as runs holds every run."""
    order = torch.randperm(len(runs), generator=gen).tolist()
    taken, rank = collections.Counter(), {}  # rank: its run's checkpoints before it in the random order
    for i in order:
        rank[i] = taken[runs[i]]
        taken[runs[i]] += 1
    return torch.tensor(sorted(order, key=rank.get)[:n], dtype=torch.long)  # stable: random within a rank


def model_groups(generated, ds, args):
    """({group: z-space weights}, {group: run of each network} for training and fresh networks,
    rows of the training sample in ds.train)."""
    gen = torch.Generator().manual_seed(args.seed)
    train_runs = [r["run"] for r in ds.train_records]
    rows = training_sample(train_runs, args.train_models, gen)
    groups = {"generated": ds.standardizer.standardize(generated), TRAIN: ds.train[rows]}
    runs = {TRAIN: [train_runs[i] for i in rows.tolist()]}
    if args.fresh_dir:
        z, records = ds.other_dataset(cd.dataset_folder(args.fresh_dir))
        pick = torch.randperm(len(z), generator=gen)[:args.fresh_models]
        groups[FRESH], runs[FRESH] = z[pick], [records[i]["run"] for i in pick.tolist()]
    if args.baseline_models:
        groups.update(all_baselines(ds.train, train_runs, args.baseline_models, args.average_k, args.seed))
    return groups, runs, rows


def softmax_outputs(groups, ds, images, labels, device, quiet=False):
    """{group: softmax outputs [models, images, classes]} of every group's networks; those of the
    reference groups (training, fresh, baselines) are cached in the dataset folder. A progress bar
    over the networks (quiet: none) and a line per group as it is done: at the defaults this is
    600 networks on 10,000 images, minutes on a CPU."""
    images_key = _digest(images, str(torch.device(device).type))
    out = {}
    bar = tqdm(total=sum(len(z) for z in groups.values()), desc="networks evaluated", unit="net", disable=quiet)
    for name, z in groups.items():
        w = ds.standardizer.destandardize(z)
        finish(w, ds.layout)  # baselines too: a usable network needs var >= 0
        done, t0 = [0], time.time()  # counted here: a disabled (--quiet) bar counts nothing

        def progress():
            done[0] += 1
            bar.update(1)
        compute = lambda: probabilities_flat(w, ds.layout, ds.tinynn_config, images, device, progress=progress)
        out[name] = compute() if name == "generated" else cached(compute, _digest(w, images_key), ds.folder)
        was_cached = done[0] == 0 and len(z) > 0
        bar.update(len(z) - done[0])
        accuracy = out[name].argmax(2).eq(labels).float().mean().item() if len(z) else float("nan")
        tqdm.write(f"{name}: {len(z)} networks, mean test accuracy {accuracy:.4f} "
                   f"({'from the cache' if was_cached else f'{time.time() - t0:.0f}s'})")
    bar.close()
    return out


def _digest(tensor, salt):
    return hashlib.sha256(salt.encode() + tensor.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


def cached(compute, key, folder):
    """compute()'s softmax outputs, kept in FOLDER/predictions/ under `key` (a hash of the
    networks, the test images and the device type): every group of an experiment is judged
    against the same training and fresh networks, which took ~2/3 of each evaluation. A broken
    entry is computed again."""
    path = os.path.join(folder, PREDICTIONS, key[:32] + ".pt")
    if os.path.exists(path):
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # a half-copied or foreign file: recompute, not fatal
            pass
    probs = compute()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    atomic_write(path, lambda tmp: torch.save(probs.cpu(), tmp))
    return probs


def novelty(groups, preds, train_rows, ds, labels):
    """Every model's accuracy, nearest training checkpoint (distance and run), nearest other
    model of its group, and max error overlap with the evaluated training checkpoints."""
    reference = torch.cat([ds.train, ds.val])
    wrong_train = preds[TRAIN] != labels
    run_of = [r["run"] for r in ds.train_records + ds.val_records]
    results = {}
    for name, z in groups.items():
        is_train = name == TRAIN
        dist, row = nearest(z, reference, train_rows if is_train else None)
        results[name] = dict(
            accuracy=preds[name].eq(labels).float().mean(1).tolist(),
            nearest_distance=dist.tolist(), nearest_run=[run_of[i] for i in row.tolist()],
            nearest_in_group=finite_or_none(nearest_within(z).tolist()),
            max_error_overlap=max_error_overlap(preds[name] != labels, wrong_train,
                                                torch.arange(len(z)) if is_train else None).tolist())
    return results


def verdicts(r, min_acc, bar):
    """New or not, for every model of one group's results, by `bar`."""
    return [is_new(a, o, min_acc, bar) for a, o in zip(r["accuracy"], r["max_error_overlap"])]


def mark_new(results, min_acc):
    """Every model's verdict, new or not, against the bar the fresh group sets (None without one)."""
    if FRESH not in results:
        return None
    bar = new_network_bar(results[FRESH]["max_error_overlap"])
    for r in results.values():
        r["new"] = verdicts(r, min_acc, bar)
    return bar


def bar_from(paths, training_checkpoints, n_test):
    """(the 95th percentile, n) of the max error overlap of the generated networks of every folder
    in `paths`, each judged by this script before against the same training checkpoints on the
    same test images."""
    overlaps = []
    for path in paths:
        path = path if path.endswith(".json") else os.path.join(path, "report.json")
        if not os.path.exists(path):
            raise CheckpointError(f"--bar_from: no report at {path}: judge those networks with this script first")
        try:
            with open(path) as f:
                other = json.load(f)
            judged = other["training_checkpoints"], other["test_images"]
            overlaps += other["per_model"]["generated"]["max_error_overlap"]
        except (ValueError, KeyError, TypeError):
            raise CheckpointError(f"--bar_from: {path} is not a report of evaluate_generated.py (damaged?)")
        if judged != (training_checkpoints, n_test):
            raise CheckpointError(f"--bar_from: {path} was judged against other training checkpoints or test images "
                                  f"(use the same dataset, --train_models, --seed and --test_images)")
    return new_network_bar(overlaps), len(overlaps)


def mark_new_by(results, min_acc, bar):
    """The share of generated networks new by `bar` (each verdict in results, as "new_by_bar_from")."""
    r = results["generated"]
    r["new_by_bar_from"] = verdicts(r, min_acc, bar)
    return float(np.mean(r["new_by_bar_from"]))


def functional_diversity(preds, train_runs):
    """(cross-run threshold, {group: stats of its pairwise disagreements}, {group: functionally
    distinct networks}). The threshold is the 5th percentile of disagreement between training
    checkpoints of different runs; None (and no counts) when the sample holds one run."""
    cross = cross_run_disagreement(preds[TRAIN], train_runs)
    threshold = float(torch.quantile(cross, 0.05)) if len(cross) else None
    pairwise, counts = {}, {}
    for name, p in preds.items():
        d = disagreement(p, p)  # once per group: the median and the greedy count both read it
        pairwise[name] = stats(d[~torch.eye(len(p), dtype=torch.bool)].tolist())
        counts[name] = greedy_count(d, threshold) if threshold is not None else None
    return threshold, pairwise, counts


def ensembles(probs, runs, labels, k):
    """Accuracy of averaged softmax outputs: K generated (the first K), one training checkpoint
    per run, one fresh network per run (up to K), and all generated networks (fewer than K: all)."""
    first = probs["generated"][:k]
    out = {f"generated (first {len(first)})": (first, len(first))}
    for name in (TRAIN, FRESH):
        if name in probs:
            pick = one_per_run(runs[name], k)
            out[f"{name} (one per run)"] = (probs[name][pick], len(pick))
    out[f"generated (all {len(probs['generated'])})"] = (probs["generated"], len(probs["generated"]))
    return {name: dict(n=n, accuracy=ensemble_accuracy(p, labels)) for name, (p, n) in out.items()}


def heldout_reconstruction(source, ds, test, device, n):
    """Checkpoints of the run(s) held out of a VAE trained with --holdout runs, through the VAE
    and back, next to their originals (test accuracy): can the autoencoder represent a run it
    never saw? None for other generators (train_vae.py's final.json has held-out checkpoints)."""
    vae_info = source.get("vae")
    if not vae_info or not n or ds.description["holdout"] != "runs":
        return None
    vae, std, _ = load_vae(vae_info["path"], expect_layout=ds.layout)
    originals = ds.standardizer.destandardize(ds.val[torch.randperm(len(ds.val),
                                                                    generator=torch.Generator().manual_seed(0))[:n]])
    with torch.no_grad():
        recon = std.destandardize(vae.reconstruct(std.standardize(originals)))
    finish(recon, ds.layout)
    preds = [probabilities_flat(w, ds.layout, ds.tinynn_config, test[0], device).argmax(2)
             for w in (originals, recon, ds.standardizer.destandardize(ds.run_ends()))]
    acc = [p.eq(test[1].cpu()).float().mean(1).tolist() for p in preds[:2]]
    return dict(n=len(originals), original=stats(acc[0]), reconstructed=stats(acc[1]),
                identity=reconstruction_identity(*preds))


def summarize(results, counts, pairwise, functional_counts, min_acc):
    summary = {}
    for name, r in results.items():
        summary[name] = dict(accuracy=stats(r["accuracy"], min_acc), nearest_distance=stats(r["nearest_distance"]),
                             max_error_overlap=stats(r["max_error_overlap"]),
                             nearest_in_group=stats(r["nearest_in_group"]), distinct=counts[name],
                             pairwise_disagreement=pairwise[name], functionally_distinct=functional_counts[name])
        if "new" in r:
            summary[name]["new"] = float(np.mean(r["new"]))
    return summary


def markdown(summary, report):
    bar, func = report["new_bar"], report["functional_threshold"]
    n_test = report["test_images"]
    test_set = "the full CIFAR-10 test set" if n_test == 10000 else f"the first {n_test} CIFAR-10 test images"
    lines = [f"Test accuracy on {test_set} (min_acc = {report['min_acc']}); novelty against "
             f"the {summary[TRAIN]['accuracy']['n']} training checkpoints evaluated (from "
             f"{report['training_runs']['sampled']} of the {report['training_runs']['all']} training runs). "
             f"New: accuracy >= min_acc and "
             + (f"max error overlap <= {bar:.3f} (fresh seeds' 95th percentile)" if bar is not None else
                "max error overlap <= the fresh seeds' 95th percentile (pass --fresh_dir)")
             + f"; distinct: further apart than {report['distinct_threshold']:.4f} in weights; functionally "
             f"distinct: disagreeing on more than "
             + (f"{func:.3f}" if func is not None else "(one run only: n/a)")
             + " of test images (5th percentile between training runs).", "",
             "| models | n | mean | median | std | min | max | >= min_acc | new | nearest dist (median) "
             "| max error overlap (median) | nearest in group (median) | distinct | disagreement (median) "
             "| functionally distinct |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, s in summary.items():
        a, new = s["accuracy"], s.get("new")
        lines.append(f"| {name} | {a['n']} | {a['mean']:.4f} | {a['median']:.4f} | {a['std']:.4f} | {a['min']:.4f} "
                     f"| {a['max']:.4f} | {a['above_min_acc']:.2f} | {_fmt(new, '.2f')} "
                     f"| {s['nearest_distance']['median']:.4f} | {s['max_error_overlap']['median']:.3f} "
                     f"| {_fmt(s['nearest_in_group']['median'], '.4f')} | {s['distinct']} "
                     f"| {_fmt(s['pairwise_disagreement']['median'], '.3f')} | {s['functionally_distinct']} |")
    lines += ["", "Ensembles (accuracy of the averaged softmax):", "", "| networks | n | accuracy |", "|---|---|---|"]
    lines += [f"| {name} | {e['n']} | {e['accuracy']:.4f} |" for name, e in report["ensembles"].items()]
    b = report.get("bar_from")
    if b:
        lines += ["", f"By the bar of {b['n']} networks judged before ({', '.join(b['paths'])}; 95th percentile of "
                      f"their max error overlap {b['bar']:.3f}): {b['new']:.0%} of the generated networks are new."]
    c = report["source"]
    if c.get("oversample", 1) > 1:
        lines += ["", f"Generated networks were kept by a novelty check ({c.get('generator', 'sample_blends.py')} "
                      f"--oversample {c['oversample']}, {c['check_images']} training images): {len(c['kept'])} of {c['candidates']} "
                      f"candidates, {1 - len(c['kept']) / c['candidates']:.0%} rejected."]
    h = report["heldout"]
    if h:
        lines += ["", f"VAE reconstructions of the held-out run ({h['n']} checkpoints): originals "
                      f"{h['original']['mean']:.4f}, reconstructed {h['reconstructed']['mean']:.4f} "
                      f"(min {h['reconstructed']['min']:.4f}). A reconstruction disagrees with its original on "
                      f"{h['identity']['with_original']:.3f} of the test images and with the nearest training run "
                      f"on {h['identity']['with_nearest_run']:.3f} (originals with it: "
                      f"{h['identity']['original_with_nearest_run']:.3f}): nearer a training run than its original "
                      f"means the VAE maps the unseen run onto one it knows."]
    return "\n".join(lines) + "\n"


def plots(results, bar, min_acc, out, second_bar=None):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 4.5))
    bins = np.linspace(0, 1, 101)
    for name, r in results.items():
        ax.hist(r["accuracy"], bins=bins, alpha=0.5, label=name)
    ax.set(xlabel="test accuracy", ylabel="models", title="generated vs training vs baselines")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "accuracy_hist.png"), dpi=110)
    plt.close(fig)
    for key, xlabel, name, title in [
            ("nearest_distance", "distance to nearest training checkpoint (RMS, standardised)", "novelty.png",
             "accuracy against distance"),
            ("max_error_overlap", "max error overlap with a training checkpoint (Jaccard)", "new_networks.png",
             "new networks: right of nothing, left of the line, above min_acc")]:
        fig, ax = plt.subplots(figsize=(7.5, 4.8))
        for group, r in results.items():
            ax.scatter(r[key], r["accuracy"], s=10, alpha=0.6, label=group)
        if key == "nearest_distance":
            ax.set_xscale("symlog", linthresh=1e-3)  # training checkpoints sit ~0 from a neighbour
        else:
            if bar is not None:
                ax.axvline(bar, color="k", ls="--", lw=1, label=f"fresh seeds' 95th percentile ({bar:.3f})")
            if second_bar is not None:
                ax.axvline(second_bar, color="tab:red", ls="--", lw=1, label=f"--bar_from's 95th percentile "
                                                                              f"({second_bar:.3f})")
            ax.axhline(min_acc, color="gray", ls=":", lw=1, label=f"min_acc ({min_acc})")
        ax.set(xlabel=xlabel, ylabel="test accuracy", title=title)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(os.path.join(out, name), dpi=110)
        plt.close(fig)


def is_outside_folder(path):
    """A folder of networks made elsewhere: state_dicts, no generated.pt."""
    return os.path.isdir(path) and not os.path.exists(os.path.join(path, "generated.pt"))


def outside_networks(args):
    """(weights, the dataset, source record) for a folder of TinyNN state_dicts from elsewhere, judged
    against --checkpoint_dir's default split, each network aligned to its reference run."""
    if not args.checkpoint_dir:
        raise CheckpointError(f"{args.model_path} holds no generated.pt: to judge a folder of TinyNN state_dicts, "
                              f"name the dataset to judge them against with --checkpoint_dir")
    ds = WeightDataset(cd.dataset_folder(args.checkpoint_dir), data_dir=args.data_dir)
    files = sorted(f for f in os.listdir(args.model_path) if f.endswith((".pt", ".pth")))
    weights = ds.aligned(load_state_dicts(args.model_path, ds.layout))
    return weights, ds, dict(generator="outside folder", folder=os.path.abspath(args.model_path), files=files)


def generated_networks(args):
    """(weights, the dataset they are judged against, source record) of --model_path."""
    if is_outside_folder(args.model_path):
        return outside_networks(args)
    generated, layout, source, split = load_generated(args.model_path)
    folder = cd.dataset_folder(args.checkpoint_dir) if args.checkpoint_dir else split["folder"]
    ds = WeightDataset.from_description(split, folder, args.data_dir)
    if ds.layout != layout:
        raise CheckpointError(f"the generated models and {folder} have different TinyNN layouts")
    return generated, ds, source


def main(args):
    device = pick_device(args.device)
    data = load_cifar10(args.data_dir, device, download=not args.no_download)  # first: an activation alignment reads it
    generated, ds, source = generated_networks(args)
    folder = ds.folder
    test_images, test_labels = data.first_test(args.test_images)
    n_test = len(test_labels)
    labels = test_labels.cpu()
    groups, runs, rows = model_groups(generated, ds, args)
    judged_against = [dict(run=ds.train_records[i]["run"], step=ds.train_records[i]["step"]) for i in rows.tolist()]
    bar2, n2 = bar_from(args.bar_from, judged_against, n_test) if args.bar_from else (None, 0)
    probs = softmax_outputs(groups, ds, test_images, labels, device, args.quiet)
    preds = {name: p.argmax(2) for name, p in probs.items()}
    results = novelty(groups, preds, rows, ds, labels)
    min_acc = ds.manifest["selection"]["min_acc"]
    bar = mark_new(results, min_acc)
    func_threshold, pairwise, func_counts = functional_diversity(preds, runs[TRAIN])
    weight_threshold = float(np.median(results[TRAIN]["nearest_distance"]))  # about one save interval of SGD
    counts = {name: distinct(z, weight_threshold) for name, z in groups.items()}
    k = len({r["run"] for r in ds.train_records})
    summary = summarize(results, counts, pairwise, func_counts, min_acc)
    report = dict(summary=summary, test_images=n_test, min_acc=min_acc, new_bar=bar, functional_threshold=func_threshold,
                  distinct_threshold=weight_threshold, ensembles=ensembles(probs, runs, labels, k),
                  heldout=heldout_reconstruction(source, ds, (test_images, test_labels), device,
                                                 args.heldout_models),
                  judged_with=dict(fresh_dir=args.fresh_dir, train_models=args.train_models,
                                   baseline_models=args.baseline_models, test_images=args.test_images),
                  source=source, checkpoint_dir=os.path.abspath(folder), split=ds.description,
                  fresh_dir=os.path.abspath(cd.dataset_folder(args.fresh_dir)) if args.fresh_dir else None,
                  training_runs=dict(sampled=len(set(runs[TRAIN])), all=k),
                  training_checkpoints=judged_against)
    if args.bar_from:
        report["bar_from"] = dict(paths=args.bar_from, bar=bar2, n=n2, new=mark_new_by(results, min_acc, bar2))
    out = args.model_path if os.path.isdir(args.model_path) else os.path.dirname(args.model_path)
    write_json(os.path.join(out, "report.json"), dict(report, per_model=results))
    text = markdown(summary, report)
    with open(os.path.join(out, "report.md"), "w") as f:
        f.write(text)
    plots(results, bar, min_acc, out, bar2)
    print(text)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_path", required=True,
                   help="sample.py output folder, or its generated.pt, or a folder of TinyNN state_dicts made elsewhere")
    p.add_argument("--checkpoint_dir", default=None,
                   help="the training dataset (name under checkpoints/), if it moved since the generator was "
                        "trained (default: the recorded folder; its recorded split is used either way); for a "
                        "folder of state_dicts, the dataset to judge them against")
    p.add_argument("--fresh_dir", default=None,
                   help="a dataset of runs the generator never saw: Gen_Diffusion_Dataset.py with the training "
                        "set's recipe and another --seed (name under checkpoints/); it sets the bar for new networks")
    p.add_argument("--bar_from", nargs="+", default=[],
                   help="folders of networks judged by this script before (their report.json), against the same "
                        "training checkpoints and test images, whose max error overlaps set a second bar, pooled: "
                        "e.g. experiments.finetune's fresh checkpoints trained as many steps as the generated "
                        "networks were (default none)")
    p.add_argument("--train_models", type=count, default=100,
                   help="training checkpoints evaluated, spread over the runs; error overlaps are measured against "
                        "them, so to judge novelty take at least as many as there are runs (default 100)")
    p.add_argument("--fresh_models", type=count, default=100, help="fresh networks evaluated, at most (default 100)")
    p.add_argument("--baseline_models", type=whole, default=100, help="networks per baseline (default 100; 0: none)")
    add_test_images_flag(p)
    p.add_argument("--average_k", type=count, default=5, help="checkpoints per averaged baseline (default 5)")
    p.add_argument("--heldout_models", type=whole, default=20,
                   help="checkpoints of the held-out run reconstructed by the VAE, when it held out whole runs "
                        "(default 20; 0: none)")
    add_runtime_flags(p, seed_help="which training checkpoints, fresh networks and baselines are drawn (default 0)")
    args = p.parse_args(argv)
    return args


if __name__ == "__main__":
    run_main(main, parse_args)
