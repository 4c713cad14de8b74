"""From CIFAR-10 to a report on generated TinyNNs in one command, at a small size.

Runs the five scripts in order, printing each command so that you can rerun or change any
step by hand:

    python quickstart.py                      # small default (13.5 minutes measured on a 2-core CPU)
    python quickstart.py --name Mine --runs 4 --ckpts_per_run 60

Each step continues where it stopped if the command is run again (the dataset keeps its
finished runs; the VAE and diffusion steps are skipped when their checkpoint exists).
"""
import argparse
import os
import shlex
import time

from cli import ROOT, add_runtime_flags, run_step, runtime_argv


def main(args):
    t0 = time.time()
    folder = os.path.join(ROOT, "checkpoints", args.name)
    common = runtime_argv(args)
    run_step(["Gen_Diffusion_Dataset.py", "--checkpoint_dir", args.name, "--runs", args.runs,
              "--ckpts_per_run", args.ckpts_per_run, "--min_acc", args.min_acc, *args.dataset_flags, *common])
    run_step(["train_vae.py", "--checkpoint_dir", args.name, "--epochs", args.vae_epochs, "--final_models", 20,
              *args.vae_flags, *common], skip_if=os.path.join(folder, "vae", "final.json"))
    diffusion = os.path.join(folder, "diffusion_latent", "diffusion.pt")
    run_step(["train_diffusion.py", "--checkpoint_dir", args.name, "--epochs", args.diffusion_epochs,
              *runtime_argv(args, data=False)], skip_if=os.path.join(folder, "diffusion_latent", "loss.png"))
    samples = os.path.join(folder, "diffusion_latent", "quickstart_samples")
    run_step(["sample.py", "--model_path", diffusion, "--num_models", args.num_models, "--sampler", "ddim",
              "--steps", 50, "--out", samples, *runtime_argv(args, data=False)])
    run_step(["evaluate_generated.py", "--model_path", samples, "--train_models", args.train_models,
              "--baseline_models", args.baseline_models, *common])
    print(f"\nquickstart done in {(time.time() - t0) / 60:.1f} min; report: {os.path.join(samples, 'report.md')}")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", default="Quickstart", help="dataset name under checkpoints/ (default Quickstart)")
    p.add_argument("--runs", type=int, default=3, help="TinyNN training runs (default 3)")
    p.add_argument("--ckpts_per_run", type=int, default=40, help="checkpoints per run (default 40)")
    p.add_argument("--min_acc", type=float, default=0.75, help="validation accuracy a checkpoint needs (default 0.75)")
    p.add_argument("--vae_epochs", type=int, default=100, help="default 100")
    p.add_argument("--diffusion_epochs", type=int, default=1000, help="default 1000")
    p.add_argument("--num_models", type=int, default=100, help="networks generated and evaluated (default 100)")
    # Evaluating a network on the 10k test images takes ~0.5 s on 2 cores: fewer comparison
    # networks than evaluate_generated.py's 100 + 5 x 100 keep the quickstart within 15 minutes.
    p.add_argument("--train_models", type=int, default=50, help="training checkpoints evaluated beside them (default 50)")
    p.add_argument("--baseline_models", type=int, default=30, help="networks per baseline (default 30)")
    add_runtime_flags(p, seed=False, quiet=False)
    p.add_argument("--dataset_flags", type=shlex.split, default=[],
                   help='more Gen_Diffusion_Dataset.py flags in one string, e.g. "--train_size 2000 --epochs 2"')
    p.add_argument("--vae_flags", type=shlex.split, default=[], help='more train_vae.py flags, e.g. "--hidden 64"')
    main(p.parse_args())
