"""Experiment: how much of an unseen training run lies within the runs a generator learns from?

A generator trained on N runs can copy them, blend them or add noise to them; a run from a fresh
seed is new only in the directions it has outside their span. This holds out --val_runs whole
runs, aligns and standardises the rest as train_vae.py does (z-space), and measures, for the
first N training runs (N doubling up to all of them), how much of each held-out run's deviation
from those runs' mean lies in the span of their deviations (in_span), and how much of its squared
norm subtracting that mean removes (mean_explains; negative when the mean of a few runs lies
further from it than the per-tensor means z-space is centred on). If runs were random directions,
the share in span would be (checkpoints - 1) / n_params (random_directions).

It also asks how far any autoencoder could compress a network and still decode an unseen run
(issue 13's target 4): for each share in --codes, the held-out runs are decoded from the best
linear code whose map all the channels of a layer share (baselines.channel_codes: each channel
token keeps that share of its numbers, as principal directions of the training runs' tokens) and
evaluated on the test set, with the BatchNorm statistics they carry and with statistics
re-estimated on --bn_images training images. A per-layer map is what lets a code reach beyond
the training runs' span: every channel of every training checkpoint is an example for it.

With --steps S, every decoded network is then trained S SGD steps on the training images (the
dataset's recipe compressed to S steps at peak rate --lr, as sample_blends.py trains its
networks), and so are the held-out checkpoints themselves and the last checkpoint of every
training run, all in one data order (--seed), so that they differ only in where they start.
A decoded network is its own run's when it disagrees with its held-out checkpoint trained so
less than with the nearest training run trained so (own_run_share); fresh inits trained the same
steps (each in a data order of its own) show what the steps give without a code.

Writes run_span.md/.json and run_span.png (both shares against N; the codes' accuracy against
their share), run_span_codes.md and, with --steps, run_span_trained.md in --out; each trained
group's test predictions are kept in run_span_trained/, so an interrupted run loses at most the
group it was training.

    python -m experiments.run_span --checkpoint_dir R20x3 --val_runs 4 --min_acc 0.65 --steps 200
"""
import argparse
import hashlib
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from tqdm import tqdm

from weightgen import checkpoint_dataset as cd
from weightgen.baselines import channel_codes, span_shares
from weightgen.blending import reestimate_bn
from weightgen.cifar10 import load_cifar10
from weightgen.cli import (add_align_flag, add_runtime_flags, add_test_images_flag, count, positive, run_main,
                           whole)
from weightgen.cli import share as a_share
from experiments.common import write_table
from weightgen.model_io import keep_result, kept_result, pick_device, write_json
from weightgen.tinynn_training import TRAIN_ON_DEFAULTS, budget_config, dataset_recipe, probabilities_flat, train_flat, train_on_seeds
from vae_model import channel_layers, code_sizes
from weightgen.weight_dataset import WeightDataset, training_images

COLUMNS = ["runs", "checkpoints", "mean_explains", "in_span", "random_directions"]
TRAINED_COLUMNS = ["group", "n", "acc", "acc_min", "disagreement_own_run", "nearest_training_run", "own_run_share"]
CODE_COLUMNS = ["share", "latent_numbers", "variance_kept", "acc", "acc_min", "disagreement", "acc_bn_reestimated",
                "disagreement_bn_reestimated"]


def first_runs(ds, n):
    """Rows of ds.train that belong to its first n training runs."""
    runs = set(sorted({r["run"] for r in ds.train_records})[:n])
    return [i for i, r in enumerate(ds.train_records) if r["run"] in runs]


def run_counts(total):
    counts, n = [], 2
    while n < total:
        counts.append(n)
        n *= 2
    return counts + [total]


def span_rows(ds):
    n_runs = len({r["run"] for r in ds.train_records})
    rows = []
    for n in run_counts(n_runs):
        train = ds.train[first_runs(ds, n)]
        shares = span_shares(train, ds.val, [len(train)])
        rows.append(dict(runs=n, checkpoints=len(train), mean_explains=shares["mean"], in_span=shares[len(train)],
                         random_directions=min(1.0, (len(train) - 1) / ds.layout.numel)))
    return rows


def code_rows(ds, args):
    """One row per share of --codes, and a first row for the held-out checkpoints themselves (share 1):
    test accuracy and disagreement with those checkpoints, as decoded and with BatchNorm re-estimated.
    With --steps, also the rows of trained_rows. Returns (code rows, trained rows, test images)."""
    data = load_cifar10(args.data_dir, download=not args.no_download)
    images, labels = data.first_test(args.test_images)
    labels = labels.cpu()
    bn_images = training_images(ds.manifest, data, args.bn_images)
    device = pick_device(args.device)

    def predict(weights):
        return probabilities_flat(weights, ds.layout, ds.tinynn_config, images, device).argmax(2)

    def evaluate(weights, originals):
        plain, bn = predict(weights), predict(reestimate_bn(weights, ds, bn_images))
        acc = plain.eq(labels).float().mean(1)
        return dict(acc=acc.mean().item(), acc_min=acc.min().item(),
                    disagreement=plain.ne(originals).float().mean().item(),
                    acc_bn_reestimated=bn.eq(labels).float().mean().item(),
                    disagreement_bn_reestimated=bn.ne(originals).float().mean().item())

    layers = channel_layers([s.shape for s in ds.layout.slots])
    held_out = ds.standardizer.destandardize(ds.val)
    originals = predict(held_out)
    rows = [dict(share=1.0, latent_numbers=ds.layout.numel, variance_kept=1.0, **evaluate(held_out, originals))]
    decoded = {}
    for share in tqdm(args.codes, desc="channel codes", disable=args.quiet):
        z, kept = channel_codes(ds.train, ds.val, layers, share)
        decoded[share] = ds.standardizer.destandardize(z)
        latent = sum(n * k for (n, _), k in zip(layers, code_sizes(layers, share)))
        rows.append(dict(share=share, latent_numbers=latent, variance_kept=sum(kept.values()) / len(kept),
                         **evaluate(decoded[share], originals)))
    trained = trained_rows(ds, held_out, decoded, data, predict, labels, args, device) if args.steps else []
    return rows, trained, len(labels)


def trained_rows(ds, held_out, decoded, data, predict, labels, args, device):
    """Rows of TRAINED_COLUMNS: the held-out checkpoints, each code's networks and fresh inits,
    trained --steps steps (fresh inits in data orders of their own, the rest all in one), judged
    against the held-out checkpoints and the training runs' last checkpoints trained the same way."""
    recipe, x, y, _ = dataset_recipe(ds.manifest, data)
    cfg = budget_config(recipe, args.steps, len(y) // recipe.batch_size, args.lr)
    x, y = x.to(device), y.to(device)
    run_ends = ds.standardizer.destandardize(ds.run_ends())
    bar = tqdm(total=len(held_out) * (len(decoded) + 2) + len(run_ends), desc="trained", unit="net",
               disable=args.quiet)

    os.makedirs(os.path.join(args.out, "run_span_trained"), exist_ok=True)

    def trained(name, weights, seeds=None):
        """Test-set predictions of the group trained, kept in run_span_trained/ so that an interrupted
        run goes on from the last group done."""
        seeds = seeds or train_on_seeds(args.seed, 1) * len(weights)  # one data order for all
        made_with = dict(dataset=ds.description, steps=args.steps, lr=args.lr, seeds=seeds, test_images=len(labels),
                         start=None if weights is None else hashlib.sha256(weights.numpy().tobytes()).hexdigest())
        path = os.path.join(args.out, "run_span_trained", name.replace(" ", "_") + ".pt")
        saved = kept_result(path, made_with)
        if saved:
            bar.update(len(seeds))
            return saved["predictions"]
        w = train_flat(weights, seeds, ds.layout, ds.tinynn_config, x, y, cfg, args.steps, device, bar.update)
        predictions = predict(w)
        keep_result(path, made_with, predictions=predictions)
        return predictions

    own = trained("held-out checkpoints", held_out)
    runs = trained("training runs", run_ends)
    groups = {"held-out checkpoints": own, **{f"code {c:g}": trained(f"code {c:g}", w) for c, w in decoded.items()},
              "fresh inits": trained("fresh inits", None, train_on_seeds(args.seed + 1, len(held_out)))}
    bar.close()
    rows = []
    for name, p in groups.items():
        acc = p.eq(labels).float().mean(1)
        to_own = p.ne(own).float().mean(1)
        to_runs = torch.stack([p.ne(r).float().mean(1) for r in runs], 1).min(1).values
        rows.append(dict(group=f"{name}, trained", n=len(p), acc=acc.mean().item(), acc_min=acc.min().item(),
                         disagreement_own_run=to_own.mean().item(), nearest_training_run=to_runs.mean().item(),
                         own_run_share=to_own.lt(to_runs).float().mean().item()))
    acc = runs.eq(labels).float().mean(1)
    rows.append(dict(group="training runs' last checkpoints, trained", n=len(runs), acc=acc.mean().item(),
                     acc_min=acc.min().item(), disagreement_own_run=None, nearest_training_run=None,
                     own_run_share=None))
    return rows


def main(args):
    folder = cd.dataset_folder(args.checkpoint_dir)
    ds = WeightDataset(folder, align=args.align, min_acc=args.min_acc, holdout="runs", val_runs=args.val_runs,
                       data_dir=args.data_dir)
    rows = span_rows(ds)
    codes, trained, n_test = code_rows(ds, args) if args.codes else ([], [], 0)
    held_out = len({r["run"] for r in ds.val_records})
    os.makedirs(args.out, exist_ok=True)
    out = os.path.join(args.out, "run_span")
    title = (f"{folder}: {held_out} held-out runs ({len(ds.val)} checkpoints) against the first N of "
             f"{rows[-1]['runs']} training runs, align={args.align}, z-space of {ds.layout.numel} numbers")
    write_table(out, title, COLUMNS, rows)
    if codes:
        code_title = (f"The held-out checkpoints decoded from per-layer channel codes (share 1: themselves), "
                      f"{n_test} test images, BatchNorm re-estimated on {args.bn_images} training images")
        write_table(out + "_codes", code_title, CODE_COLUMNS, codes)
    if trained:
        trained_title = (f"Trained {args.steps} SGD steps at peak lr {args.lr:g} (data order seed {args.seed}), "
                         f"{n_test} test images: each network against its held-out checkpoint and the nearest "
                         f"training run, trained the same way")
        write_table(out + "_trained", trained_title, TRAINED_COLUMNS, trained)
    write_json(out + ".json", dict(title=title, rows=rows, codes=codes, trained=trained, bn_images=args.bn_images,
                                   test_images=n_test, steps=args.steps, lr=args.lr, seed=args.seed))
    plot(rows, codes, trained, args.steps, out + ".png")
    extra = [f"{out}_{name}.md" for name, rows in (("codes", codes), ("trained", trained)) if rows]
    print(f"written to {out}.md/.json/.png" + "".join(f", {e}" for e in extra))


def plot(rows, codes, trained, steps, path):
    n = [r["runs"] for r in rows]
    fig, axes = plt.subplots(1, 3 if codes else 2, figsize=(15 if codes else 10, 4))
    span, mean = axes[:2]
    span.plot(n, [r["in_span"] for r in rows], "o-", label="held-out runs (deviation from the training mean)")
    span.plot(n, [r["random_directions"] for r in rows], ":", color="gray", label="random directions")
    span.set(xscale="log", yscale="log", xlabel="training runs N", ylabel="share in the training runs' span",
             title="How much of an unseen run N runs span")
    mean.plot(n, [r["mean_explains"] for r in rows], "s--")
    mean.axhline(0, color="gray", lw=0.8)
    mean.set(xscale="log", xlabel="training runs N", ylabel="share of the squared norm removed",
             title="What the N runs' mean explains")
    span.legend(fontsize=8)
    if codes:
        plot_codes(axes[2], codes, trained, steps)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_codes(ax, codes, trained, steps):
    shares = [r["share"] for r in codes[1:]]
    ax.plot(shares, [r["acc"] for r in codes[1:]], "o-", label="decoded, BatchNorm statistics as decoded")
    ax.plot(shares, [r["acc_bn_reestimated"] for r in codes[1:]], "s--", label="BatchNorm re-estimated")
    if trained:  # the code rows of trained_rows follow the held-out checkpoints' row, in --codes order
        ax.plot(shares, [r["acc"] for r in trained[1:1 + len(shares)]], "^-", label=f"decoded, trained {steps} steps")
        ax.axhline(trained[0]["acc"], color="green", lw=0.8, label=f"held-out checkpoints trained {steps} steps")
    ax.axhline(codes[0]["acc"], color="gray", lw=0.8, label="held-out checkpoints")
    ax.axhline(codes[0]["acc"] - 0.02, color="red", ls=":", lw=0.8, label="2 points below (target 4)")
    ax.set(xlabel="share of each channel's numbers kept", ylabel="test accuracy",
           title="Held-out runs from per-layer channel codes")
    ax.legend(fontsize=8)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint_dir", required=True, help="checkpoint dataset under checkpoints/ (or a path)")
    p.add_argument("--val_runs", type=count, default=1, help="whole runs held out: the last ones (default 1)")
    add_align_flag(p)
    p.add_argument("--min_acc", type=a_share, default=None,
                   help="leave out checkpoints whose validation accuracy is below this (default: keep all)")
    p.add_argument("--codes", type=float, nargs="*", default=[0.25, 0.5, 0.75, 0.9],
                   help="shares of each channel's numbers a per-layer code keeps (default 0.25 0.5 0.75 0.9; "
                        "none: the span alone, no CIFAR-10 needed unless --align activations)")
    p.add_argument("--bn_images", type=count, default=5000,
                   help="training images the decoded networks' BatchNorm statistics are re-estimated on (default 5000)")
    p.add_argument("--steps", type=whole, default=0,
                   help=f"SGD steps every decoded network is then trained, with the controls described above "
                        f"(default 0: none; sample_blends.py trains {TRAIN_ON_DEFAULTS['steps']})")
    p.add_argument("--lr", type=positive, default=TRAIN_ON_DEFAULTS["lr"],
                   help=f"peak learning rate of those steps (default {TRAIN_ON_DEFAULTS['lr']:g}, as sample_blends.py)")
    add_test_images_flag(p)
    add_runtime_flags(p, seed_help="the data order of the --steps (default 0)")
    p.add_argument("--out", default=None, help="where the table and plot go (default: the dataset folder)")
    args = p.parse_args(argv)
    if any(not 0 < c < 1 for c in args.codes) or len(set(args.codes)) < len(args.codes):
        p.error("--codes: each share must lie strictly between 0 and 1, and be given once")
    if args.steps and not args.codes:
        p.error("--steps trains the networks decoded from --codes: give at least one share")
    args.out = args.out or cd.dataset_folder(args.checkpoint_dir)
    return args


if __name__ == "__main__":
    run_main(main, parse_args)
