"""Evaluate generated TinyNNs honestly: next to the training checkpoints, simple baselines, and
measures of how new they are.

    python evaluate_generated.py --model_path checkpoints/Toy_CNN/diffusion_latent/samples_ddim_50_seed0

--model_path is a folder written by sample.py (or its generated.pt), which records the dataset
and the very split its generator was trained on (so with train_vae.py --max_train N, "training
checkpoints" are those N). On the full CIFAR-10 test
set it evaluates every generated network, --train_models random training checkpoints, and
--baseline_models of each baseline: training weights plus Gaussian noise at three scales, the
average of --average_k aligned checkpoints, and a per-coordinate Gaussian fit of the weights.
Novelty, for every group: distance to the nearest training checkpoint (aligned, standardised
weights; RMS per coordinate) and the largest overlap (Jaccard) of its wrong test predictions with
any sampled training model's; for training checkpoints themselves, the nearest *other* one.
Diversity, for every group: each model's distance to the nearest other model of its own group,
and how many distinct models the group holds (closer than the median training checkpoint is to
its nearest neighbour counts as the same). report.json keeps every model's figures, with the
run of its nearest checkpoint (experiments/novelty.py reads them).
Writes report.json, report.md, accuracy_hist.png and novelty.png beside the generated models.
"""
import argparse
import os

import numpy as np
import torch

import checkpoint_dataset as cd
from baselines import all_baselines, distinct, max_error_overlap, nearest, nearest_within
from cifar10 import load_cifar10
from cli import add_runtime_flags, run_main
from model_io import GENERATED_KIND, CheckpointError, load_checkpoint, pick_device, write_json
from tinynn import FlatLayout, clamp_running_var
from tinynn_training import predict_flat
from weight_dataset import WeightDataset


def load_generated(path):
    """(weights [n, n_params], layout, source info, description of the generator's training
    split) from sample.py's output."""
    if os.path.isdir(path):
        path = os.path.join(path, "generated.pt")
    g = load_checkpoint(path, GENERATED_KIND)
    if "dataset" not in g:
        raise CheckpointError(f"{path} does not record the split its generator was trained on (it predates "
                              f"that record): sample it again with sample.py")
    return g["weights"], FlatLayout.from_json(g["layout"]), g.get("source", {}), g["dataset"]


def stats(values, min_acc=None):
    a = np.asarray(values, dtype=np.float64)
    s = dict(mean=a.mean(), median=np.median(a), std=a.std(), min=a.min(), max=a.max())
    if min_acc is not None:
        s["above_min_acc"] = (a >= min_acc).mean()
    return dict(n=len(a), **{k: float(v) for k, v in s.items()})


def model_groups(generated, ds, args):
    """{group: z-space weights}; training checkpoints are a random sample (their rows returned)."""
    z_train = ds.train
    rows = torch.randperm(len(z_train), generator=torch.Generator().manual_seed(args.seed))[:args.train_models]
    groups = {"generated": ds.standardizer.standardize(generated), "training checkpoints": z_train[rows]}
    if args.baseline_models:
        groups.update(all_baselines(z_train, args.baseline_models, args.average_k, args.seed))
    return groups, rows


def evaluate_groups(groups, train_rows, ds, test, device):
    """Accuracies and novelty of every group; novelty is measured against all checkpoints of
    the dataset (aligned), `train_rows` saying which of them the training sample is."""
    labels = test[1].cpu()
    reference = torch.cat([ds.train, ds.val])
    preds = {}
    for name, z in groups.items():
        w = ds.standardizer.destandardize(z)
        clamp_running_var(w, ds.layout)  # baselines too: a usable network needs var >= 0
        preds[name] = predict_flat(w, ds.layout, ds.tinynn_config, test[0], device)
    wrong_train = preds["training checkpoints"] != labels
    run_of = [r["run"] for r in ds.train_records + ds.val_records]
    results = {}
    for name, z in groups.items():
        is_train = name == "training checkpoints"
        dist, row = nearest(z, reference, train_rows if is_train else None)
        results[name] = dict(
            accuracy=preds[name].eq(labels).float().mean(1).tolist(),
            nearest_distance=dist.tolist(), nearest_run=[run_of[i] for i in row.tolist()],
            nearest_in_group=nearest_within(z).tolist(),
            max_error_overlap=max_error_overlap(preds[name] != labels, wrong_train,
                                                torch.arange(len(z)) if is_train else None).tolist())
    return results


def distinct_counts(groups, results):
    """{group: distinct networks}, two counting as one when closer than the median training
    checkpoint is to its nearest other checkpoint (about one save interval of SGD)."""
    threshold = float(np.median(results["training checkpoints"]["nearest_distance"]))
    return {name: distinct(z, threshold) for name, z in groups.items()}, threshold


def markdown(results, counts, threshold, min_acc):
    lines = [f"Test accuracy on the full CIFAR-10 test set; novelty against the training checkpoints "
             f"(min_acc = {min_acc}); distinct: networks further than {threshold:.4f} from each other.", "",
             "| models | n | mean | median | std | min | max | >= min_acc | nearest dist (median) "
             "| max error overlap (median) | nearest in group (median) | distinct |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        a, d, o = stats(r["accuracy"], min_acc), stats(r["nearest_distance"]), stats(r["max_error_overlap"])
        w = stats(r["nearest_in_group"])
        lines.append(f"| {name} | {a['n']} | {a['mean']:.4f} | {a['median']:.4f} | {a['std']:.4f} | {a['min']:.4f} "
                     f"| {a['max']:.4f} | {a['above_min_acc']:.2f} | {d['median']:.4f} | {o['median']:.3f} "
                     f"| {w['median']:.4f} | {counts[name]} |")
    return "\n".join(lines) + "\n"


def plots(results, out):
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
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, r in results.items():
        ax.scatter(r["nearest_distance"], r["accuracy"], s=8, alpha=0.6, label=name)
    ax.set_xscale("symlog", linthresh=1e-3)  # training checkpoints sit ~0 from a neighbour
    ax.set(xlabel="distance to nearest training checkpoint (RMS, standardised)", ylabel="test accuracy",
           title="accuracy against novelty")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "novelty.png"), dpi=110)
    plt.close(fig)


def main(args):
    device = pick_device(args.device)
    generated, layout, source, split = load_generated(args.model_path)
    folder = cd.dataset_folder(args.checkpoint_dir) if args.checkpoint_dir else split["folder"]
    ds = WeightDataset.from_description(split, folder)
    if ds.layout != layout:
        raise CheckpointError(f"the generated models and {folder} have different TinyNN layouts")
    data = load_cifar10(args.data_dir, device, download=not args.no_download)
    groups, rows = model_groups(generated, ds, args)
    results = evaluate_groups(groups, rows, ds, (data.test_images, data.test_labels), device)
    min_acc = ds.manifest["selection"]["min_acc"]
    out = args.model_path if os.path.isdir(args.model_path) else os.path.dirname(args.model_path)
    counts, threshold = distinct_counts(groups, results)
    summary = {name: dict(accuracy=stats(r["accuracy"], min_acc), nearest_distance=stats(r["nearest_distance"]),
                          max_error_overlap=stats(r["max_error_overlap"]), nearest_in_group=stats(r["nearest_in_group"]),
                          distinct=counts[name]) for name, r in results.items()}
    drawn = [dict(run=ds.train_records[i]["run"], step=ds.train_records[i]["step"]) for i in rows.tolist()]
    write_json(os.path.join(out, "report.json"), dict(summary=summary, per_model=results, source=source,
                                                      checkpoint_dir=os.path.abspath(folder), split=ds.description,
                                                      training_checkpoints=drawn, distinct_threshold=threshold))
    text = markdown(results, counts, threshold, min_acc)
    with open(os.path.join(out, "report.md"), "w") as f:
        f.write(text)
    plots(results, out)
    print(text)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_path", required=True, help="sample.py output folder, or its generated.pt")
    p.add_argument("--checkpoint_dir", default=None,
                   help="the training dataset (name under checkpoints/), if it moved since the generator was "
                        "trained (default: the recorded folder; its recorded split is used either way)")
    p.add_argument("--train_models", type=int, default=100, help="training checkpoints evaluated (default 100)")
    p.add_argument("--baseline_models", type=int, default=100, help="networks per baseline (default 100; 0: none)")
    p.add_argument("--average_k", type=int, default=5, help="checkpoints per averaged baseline (default 5)")
    add_runtime_flags(p, quiet=False, seed_help="which training checkpoints and baselines are drawn (default 0)")
    return p.parse_args(argv)


if __name__ == "__main__":
    run_main(main, parse_args)
