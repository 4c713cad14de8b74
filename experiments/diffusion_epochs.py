"""Experiment: how the diffusion model's training epochs affect the generated networks.

Trains one latent diffusion model on the dataset's VAE and stops at each of --epochs (resuming
in between, so the 1000-epoch model is the 300-epoch one trained 700 epochs more); at each
stop it keeps a copy of the checkpoint, samples --num_models networks (DDIM-50) and evaluates
them next to --train_models training checkpoints. Writes, in checkpoints/NAME/RUN_NAME/:
diffusion_epochs.md/.json (the table) and diffusion_epochs.png (accuracy and loss vs epochs).

    python -m experiments.diffusion_epochs --checkpoint_dir Toy_CNN --epochs 10 30 100 300
"""
import argparse
import json
import os
import shutil

from weightgen.cli import ROOT, count, run_main, run_step, runtime_argv
from experiments.common import accuracy_row, common_flags, plot_generated_accuracy, sample_and_evaluate, write_table


def train_until(epochs, run, args, folder):
    """Diffusion trained to `epochs` (resuming the shared run), copied to epoch_E/diffusion.pt."""
    snapshot = os.path.join(folder, run, f"epoch_{epochs}", "diffusion.pt")
    if not os.path.exists(snapshot):
        live = os.path.join(folder, run, "diffusion.pt")
        if os.path.exists(live) and last_epoch(folder, run) > epochs:
            raise SystemExit(f"error: {run} is already trained past {epochs} epochs; "
                             f"give earlier stops another --run_name")
        run_step(["train_diffusion.py", "--checkpoint_dir", args.checkpoint_dir, "--run_name", run,
                  "--epochs", epochs, "--batch_size", args.batch_size, "--quiet", *runtime_argv(args, data=False),
                  *(["--vae_path", args.vae_path] if args.vae_path else []),
                  *(["--resume"] if os.path.exists(live) else [])])
        os.makedirs(os.path.dirname(snapshot), exist_ok=True)
        shutil.copyfile(live, snapshot + ".tmp")
        os.replace(snapshot + ".tmp", snapshot)
    return snapshot


def read_log(folder, run):
    with open(os.path.join(folder, run, "log.jsonl")) as f:
        return [json.loads(line) for line in f]


def last_epoch(folder, run):
    return read_log(folder, run)[-1]["epoch"]


def final_loss(folder, run, epochs):
    return next(h["loss"] for h in read_log(folder, run) if h["epoch"] == epochs)


def plot(rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    e = [r["epochs"] for r in rows]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    plot_generated_accuracy(a1, e, rows)
    a1.set(xlabel="diffusion epochs", title="generated networks")
    a1.legend(fontsize=8)
    a2.plot(e, [r["loss"] for r in rows], "o-")
    a2.set(xscale="log", yscale="log", xlabel="diffusion epochs", ylabel="training loss (last epoch)",
           title="diffusion loss")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(args):
    folder = os.path.join(ROOT, "checkpoints", args.checkpoint_dir)
    run = args.run_name
    rows = []
    for epochs in sorted(args.epochs):
        snapshot = train_until(epochs, run, args, folder)
        summary = sample_and_evaluate(snapshot, os.path.join(os.path.dirname(snapshot), "samples"), args)
        rows.append(dict(epochs=epochs, loss=final_loss(folder, run, epochs), **accuracy_row(summary)))
    out = os.path.join(folder, run, "diffusion_epochs")
    write_table(out, f"Diffusion training epochs ({args.checkpoint_dir}, batch {args.batch_size}, "
                f"{args.num_models} DDIM-50 models each)",
                ["epochs", "loss", "mean", "std", "median", "min", "max", "above_min_acc", "training_mean",
                 "nearest_distance"], rows)
    plot(rows, out + ".png")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common_flags(p)
    p.add_argument("--epochs", type=count, nargs="+", default=[10, 30, 100, 300, 1000],
                   help="stops at which the model is sampled (default 10 30 100 300 1000)")
    p.add_argument("--batch_size", type=count, default=8, help="diffusion batch size (default 8)")
    p.add_argument("--run_name", default="exp_epochs", help="folder of the diffusion run (default exp_epochs)")
    p.add_argument("--vae_path", default=None, help="VAE (default checkpoints/NAME/vae/vae.pt)")
    return p.parse_args(argv)


if __name__ == "__main__":
    run_main(main, parse_args)
