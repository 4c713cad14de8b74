"""Test accuracy of generated TinyNNs, side by side with the training checkpoints.

    python evaluate_generated.py --model_path checkpoints/Toy_CNN/diffusion_latent/samples_ddim_50_seed0 \
                                 --checkpoint_dir Toy_CNN

--model_path is a folder written by sample.py (or its generated.pt). Every generated network
and --train_models random training checkpoints are evaluated on the full CIFAR-10 test set.
Writes report.json and report.md beside the generated models, and accuracy_hist.png.
(Baselines and novelty measures of DESIGN.md section 4 are still to come.)
"""
import argparse
import json
import os
import sys

import numpy as np
import torch

import checkpoint_dataset as cd
from cifar10 import DEFAULT_DATA_DIR, DataError, load_cifar10
from model_io import CheckpointError, load_checkpoint
from tinynn import FlatLayout
from tinynn_training import evaluate_flat, pick_device

def load_generated(path):
    """(weights [n, n_params], layout, tinynn config, source info) from sample.py's output."""
    if os.path.isdir(path):
        path = os.path.join(path, "generated.pt")
    g = load_checkpoint(path, "generated-tinynns")
    return g["weights"], FlatLayout.from_json(g["layout"]), g["tinynn"], g.get("source", {})


def stats(accs, min_acc=None):
    a = np.asarray(accs, dtype=np.float64)
    s = dict(n=len(a), mean=a.mean(), median=float(np.median(a)), std=a.std(), min=a.min(), max=a.max())
    if min_acc is not None:
        s["above_min_acc"] = float((a >= min_acc).mean())
    return {k: float(v) if k != "n" else int(v) for k, v in s.items()}


def training_sample(folder, n, seed):
    """n random training checkpoints (flat weights) and their manifest records."""
    manifest = cd.load_manifest(folder)
    weights = cd.load_weights(folder, manifest)
    pick = torch.randperm(len(weights), generator=torch.Generator().manual_seed(seed))[:n]
    return weights[pick], manifest


def markdown(rows, min_acc):
    head = "| models | n | mean | median | std | min | max | >= min_acc |\n|---|---|---|---|---|---|---|---|\n"
    body = "".join(f"| {name} | {s['n']} | {s['mean']:.4f} | {s['median']:.4f} | {s['std']:.4f} | {s['min']:.4f} "
                   f"| {s['max']:.4f} | {s.get('above_min_acc', float('nan')):.2f} |\n" for name, s in rows.items())
    return f"Test accuracy on the full CIFAR-10 test set (min_acc = {min_acc}).\n\n" + head + body


def plot(accs, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4))
    bins = np.linspace(0, 1, 101)
    for name, a in accs.items():
        ax.hist(a, bins=bins, alpha=0.6, label=name)
    ax.set(xlabel="test accuracy", ylabel="models", title="generated vs training TinyNNs")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(args):
    device = pick_device(args.device)
    weights, layout, config, source = load_generated(args.model_path)
    folder = cd.dataset_folder(args.checkpoint_dir)
    train_w, manifest = training_sample(folder, args.train_models, args.seed)
    if FlatLayout.from_json(manifest["layout"]) != layout:
        raise CheckpointError(f"the generated models and {folder} have different TinyNN layouts")
    data = load_cifar10(args.data_dir, device, download=not args.no_download)
    test = (data.test_images, data.test_labels)
    accs = {"generated": evaluate_flat(weights, layout, config, *test, device=device),
            "training checkpoints": evaluate_flat(train_w, layout, config, *test, device=device)}
    min_acc = manifest["selection"]["min_acc"]
    rows = {k: stats(v, min_acc) for k, v in accs.items()}
    out = args.model_path if os.path.isdir(args.model_path) else os.path.dirname(args.model_path)
    report = dict(rows=rows, accuracies=accs, source=source, checkpoint_dir=os.path.abspath(folder))
    cd.write_json(os.path.join(out, "report.json"), report)
    text = markdown(rows, min_acc)
    with open(os.path.join(out, "report.md"), "w") as f:
        f.write(text)
    plot(accs, os.path.join(out, "accuracy_hist.png"))
    print(text)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_path", required=True, help="sample.py output folder, or its generated.pt")
    p.add_argument("--checkpoint_dir", required=True, help="the training dataset (name under checkpoints/)")
    p.add_argument("--train_models", type=int, default=100, help="training checkpoints to evaluate (default 100)")
    p.add_argument("--data_dir", default=DEFAULT_DATA_DIR, help="folder with cifar-10-batches-py")
    p.add_argument("--no_download", action="store_true", help="never try to download CIFAR-10")
    p.add_argument("--device", default="auto", help="cpu, cuda, ... (default: cuda if available)")
    p.add_argument("--seed", type=int, default=0, help="which training checkpoints are drawn (default 0)")
    return p.parse_args(argv)


if __name__ == "__main__":
    try:
        main(parse_args())
    except (DataError, cd.DatasetError, CheckpointError) as e:
        sys.exit(f"error: {e}")
