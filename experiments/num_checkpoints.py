"""Experiment: how the number of training checkpoints affects the generated networks.

For each size N in --sizes, trains a VAE on N random training checkpoints (train_vae.py
--max_train N; the held-out split stays the same) and a latent diffusion model on their
latents, then samples --num_models networks (DDIM-50) and evaluates them. Every size gets the
same number of optimizer updates (--vae_steps, --diffusion_steps), so fewer checkpoints means
more epochs over them, not less training. Writes, in checkpoints/NAME/exp_checkpoints/:
num_checkpoints.md/.json (the table) and num_checkpoints.png.

    python -m experiments.num_checkpoints --checkpoint_dir Toy_CNN --sizes 50 200 800 2250
"""
import argparse
import json
import math
import os

from weightgen.cli import ROOT, count, run_main, run_step, runtime_argv
from experiments.common import accuracy_row, common_flags, plot_generated_accuracy, sample_and_evaluate, write_table

VAE_BATCH, DIFFUSION_BATCH = 32, 8  # train_vae.py's and train_diffusion.py's defaults


def epochs_for(steps, n, batch):
    return max(1, math.ceil(steps / math.ceil(n / batch)))


def train_pair(n, args, base):
    """VAE and latent diffusion on n training checkpoints; returns (diffusion path, vae final.json)."""
    vae_run, diff_run = f"exp_checkpoints/n{n}/vae", f"exp_checkpoints/n{n}/diffusion"
    vae_epochs = epochs_for(args.vae_steps, n, VAE_BATCH)
    # StepLR halves the rate every 30 of 100 epochs by default: keep that shape at any length.
    run_step(["train_vae.py", "--checkpoint_dir", args.checkpoint_dir, "--run_name", vae_run, "--max_train", n,
              "--epochs", vae_epochs, "--lr_step", max(1, round(0.3 * vae_epochs)), "--eval_every", vae_epochs,
              "--save_every", max(1, vae_epochs // 20), "--final_models", 20, "--test_images", args.test_images,
              "--quiet", *args.vae_flags, *runtime_argv(args)],
             skip_if=os.path.join(base, vae_run, "final.json"))
    run_step(["train_diffusion.py", "--checkpoint_dir", args.checkpoint_dir, "--run_name", diff_run,
              "--vae_path", os.path.join(base, vae_run, "vae.pt"),
              "--epochs", epochs_for(args.diffusion_steps, n, DIFFUSION_BATCH), "--quiet",
              *runtime_argv(args, data=False)], skip_if=os.path.join(base, diff_run, "loss.png"))
    with open(os.path.join(base, vae_run, "final.json")) as f:
        return os.path.join(base, diff_run, "diffusion.pt"), json.load(f)


def plot(rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    n = [r["n_train"] for r in rows]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    plot_generated_accuracy(ax, n, rows)
    ax.plot(n, [r["vae_recon"] for r in rows], "^:", label="VAE reconstructions of held-out checkpoints")
    ax.set(xlabel="training checkpoints", title="number of training checkpoints")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(args):
    base = os.path.join(ROOT, "checkpoints", args.checkpoint_dir)
    rows = []
    for n in sorted(args.sizes):
        diffusion, vae_final = train_pair(n, args, base)
        summary = sample_and_evaluate(diffusion, os.path.join(os.path.dirname(diffusion), "samples"), args)
        rows.append(dict(n_train=vae_final["dataset"]["n_train"], vae_recon=vae_final["reconstructed"]["mean"],
                         vae_prior=vae_final["prior"]["mean"], **accuracy_row(summary)))
    out = os.path.join(base, "exp_checkpoints", "num_checkpoints")
    write_table(out, f"Number of training checkpoints ({args.checkpoint_dir}; {args.vae_steps} VAE and "
                f"{args.diffusion_steps} diffusion updates each; {args.num_models} DDIM-50 models)",
                ["n_train", "vae_recon", "vae_prior", "mean", "std", "median", "min", "max", "above_min_acc",
                 "training_mean", "nearest_distance"], rows)
    plot(rows, out + ".png")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common_flags(p, vae=True)
    p.add_argument("--sizes", type=count, nargs="+", default=[50, 200, 800, 2250],
                   help="training checkpoints per setting (default 50 200 800 2250; capped at all)")
    p.add_argument("--vae_steps", type=count, default=2000, help="VAE updates per setting (default 2000)")
    p.add_argument("--diffusion_steps", type=count, default=30000,
                   help="diffusion updates per setting (default 30000)")
    return p.parse_args(argv)


if __name__ == "__main__":
    run_main(main, parse_args)
