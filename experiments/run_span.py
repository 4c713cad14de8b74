"""Experiment: how much of an unseen training run lies within the runs a generator learns from?

A generator trained on N runs can copy them, blend them or add noise to them; a run from a fresh
seed is new only in the directions it has outside their span. This holds out --val_runs whole
runs, aligns and standardises the rest as train_vae.py does (z-space), and measures, for the
first N training runs (N doubling up to all of them), how much of each held-out run's deviation
from those runs' mean lies in the span of their deviations (in_span), and how much of its squared
norm subtracting that mean removes (mean_explains; negative when the mean of a few runs lies
further from it than the per-tensor means z-space is centred on). If runs were random directions,
the share in span would be (checkpoints - 1) / n_params (random_directions). Writes
run_span.md/.json and run_span.png (both shares against N) in --out.

    python -m experiments.run_span --checkpoint_dir R120x1 --val_runs 12
"""
import argparse
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

import checkpoint_dataset as cd
from baselines import span_shares
from cli import DEFAULT_DATA_DIR, add_align_flag, run_main
from experiments.common import write_table
from model_io import write_json
from weight_dataset import WeightDataset

COLUMNS = ["runs", "checkpoints", "mean_explains", "in_span", "random_directions"]


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


def main(args):
    folder = cd.dataset_folder(args.checkpoint_dir)
    ds = WeightDataset(folder, align=args.align, holdout="runs", val_runs=args.val_runs, seed=args.seed,
                       data_dir=args.data_dir)
    n_runs = len({r["run"] for r in ds.train_records})
    rows = []
    for n in run_counts(n_runs):
        train = ds.train[first_runs(ds, n)]
        shares = span_shares(train, ds.val, [len(train)])
        rows.append(dict(runs=n, checkpoints=len(train), mean_explains=shares["mean"], in_span=shares[len(train)],
                         random_directions=min(1.0, (len(train) - 1) / ds.layout.numel)))
    held_out = len({r["run"] for r in ds.val_records})
    os.makedirs(args.out, exist_ok=True)
    out = os.path.join(args.out, "run_span")
    title = (f"{folder}: {held_out} held-out runs ({len(ds.val)} checkpoints) against the first N of {n_runs} "
             f"training runs, align={args.align}, z-space of {ds.layout.numel} numbers")
    write_table(out, title, COLUMNS, rows)
    write_json(out + ".json", dict(title=title, rows=rows))
    plot(rows, out + ".png")
    print(f"written to {out}.md/.json/.png")


def plot(rows, path):
    n = [r["runs"] for r in rows]
    fig, (span, mean) = plt.subplots(1, 2, figsize=(10, 4))
    span.plot(n, [r["in_span"] for r in rows], "o-", label="held-out runs (deviation from the training mean)")
    span.plot(n, [r["random_directions"] for r in rows], ":", color="gray", label="random directions")
    span.set(xscale="log", yscale="log", xlabel="training runs N", ylabel="share in the training runs' span",
             title="How much of an unseen run N runs span")
    mean.plot(n, [r["mean_explains"] for r in rows], "s--")
    mean.axhline(0, color="gray", lw=0.8)
    mean.set(xscale="log", xlabel="training runs N", ylabel="share of the squared norm removed",
             title="What the N runs' mean explains")
    span.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint_dir", required=True, help="checkpoint dataset under checkpoints/ (or a path)")
    p.add_argument("--val_runs", type=int, default=1, help="whole runs held out (default 1)")
    add_align_flag(p)
    p.add_argument("--seed", type=int, default=0, help="which runs are held out (default 0)")
    p.add_argument("--data_dir", default=DEFAULT_DATA_DIR,
                   help="folder with cifar-10-batches-py, read by --align activations")
    p.add_argument("--out", default=None, help="where the table and plot go (default: the dataset folder)")
    args = p.parse_args(argv)
    args.out = args.out or cd.dataset_folder(args.checkpoint_dir)
    return args


if __name__ == "__main__":
    run_main(main, parse_args)
