"""The VAE measurement: alignment (weight matching, activation matching, none) x hold out
checkpoints/whole runs, one table.

Runs train_vae.py once per variant (in parallel processes with --parallel, e.g. on a GPU),
then reads each variant's final.json: the test-accuracy gap between held-out checkpoints and
their reconstructions, whether a reconstruction is its original's network or a training run's,
prior-sample accuracy, and training time. With whole runs held out, pass `--extra --keep last`:
the lowest validation loss there is an early model that decodes to chance.

    python -m benchmarks.vae_ablation --checkpoint_dir Toy_CNN                   # CPU, one after another
    python -m benchmarks.vae_ablation --checkpoint_dir Toy_CNN --parallel --device cuda
    python -m benchmarks.vae_ablation --checkpoint_dir Toy_CNN --extra --kl_weight 1e-4   # flags for train_vae
    python -m benchmarks.vae_ablation --checkpoint_dir R20x3 --variants align_runs actalign_runs \
        --extra --val_runs 4 --keep last
"""
import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VARIANTS = {
    "align_ckpts": [],
    "noalign_ckpts": ["--align", "none"],
    "align_runs": ["--holdout", "runs"],
    "noalign_runs": ["--align", "none", "--holdout", "runs"],
    "actalign_ckpts": ["--align", "activations"],
    "actalign_runs": ["--align", "activations", "--holdout", "runs"],
}


def command(args, name, flags):
    return [sys.executable, os.path.join(ROOT, "train_vae.py"), "--checkpoint_dir", args.checkpoint_dir,
            "--run_name", f"{args.prefix}{name}", "--device", args.device, "--quiet", *flags, *args.extra]


def main(args):
    names = args.variants or list(VARIANTS)
    cmds = {n: command(args, n, VARIANTS[n]) for n in names}
    for n, c in cmds.items():
        print(" ".join(c), flush=True)
    if args.parallel:
        procs = {n: subprocess.Popen(c, cwd=ROOT) for n, c in cmds.items()}
        failed = [n for n, p in procs.items() if p.wait() != 0]
    else:
        failed = [n for n, c in cmds.items() if subprocess.run(c, cwd=ROOT).returncode != 0]
    if failed:
        sys.exit(f"error: variants failed: {', '.join(failed)}")
    folder = os.path.join(ROOT, "checkpoints", args.checkpoint_dir)
    table = {n: json.load(open(os.path.join(folder, f"{args.prefix}{n}", "final.json"))) for n in names}
    print(f"\n{'variant':16s} {'held-out acc':>12s} {'recon acc':>10s} {'gap (pts)':>10s} {'gap max':>8s} "
          f"{'prior mean':>10s} {'prior min':>9s} {'prior max':>9s} {'train s':>8s} {'dis own':>8s} {'dis run':>8s}")
    for n, f in table.items():
        print(f"{n:16s} {f['original']['mean']:12.4f} {f['reconstructed']['mean']:10.4f} "
              f"{f['gap']['mean'] * 100:10.2f} {f['gap']['max'] * 100:8.2f} {f['prior']['mean']:10.4f} "
              f"{f['prior']['min']:9.4f} {f['prior']['max']:9.4f} {f['train_seconds']:8.0f} "
              f"{f['identity']['with_original']:8.3f} {f['identity']['with_nearest_run']:8.3f}")
    print("dis own / dis run: a reconstruction's test-set disagreement with its original / with the nearest "
          "training run (a reconstruction nearer a training run than its original is that run's network)")
    with open(os.path.join(folder, f"{args.prefix}ablation.json"), "w") as fh:
        json.dump(table, fh, indent=1)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint_dir", required=True, help="dataset name under checkpoints/")
    p.add_argument("--device", default="auto", help="passed to train_vae.py")
    p.add_argument("--parallel", action="store_true", help="run the variants at once")
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS), help="a subset (default all six)")
    p.add_argument("--prefix", default="ablation_", help="output folders are PREFIX<variant>")
    p.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="further train_vae.py flags")
    main(p.parse_args())
