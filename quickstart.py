"""From CIFAR-10 to a report on generated TinyNNs in one command.

Runs the pipeline's scripts in order, printing each command so that you can rerun or change
any step by hand: the checkpoint dataset, a small set of runs from fresh seeds (the bar for
"new" networks), the VAE, latent diffusion, sampling and the evaluation.

    python quickstart.py                      # the small default (--preset small)
    python quickstart.py --preset seed        # the seed's scale: 10 runs x 250 checkpoints, every script's defaults
    python quickstart.py --name Mine --runs 4 --ckpts_per_run 60

Each step continues where it stopped if the command is run again (the dataset keeps its
finished runs; the VAE and diffusion steps are skipped when their checkpoint exists). At the end
it prints the seconds of every step and writes them to checkpoints/NAME/quickstart_times.json.
"""
import argparse
import importlib
import os
import time

from cli import ROOT, add_more_flags, add_runtime_flags, add_test_images_flag, run_step, runtime_argv
from model_io import write_json

# The sizes of a run. small: what fits 15 minutes of this project's slowest 2-core CPU (AVX2;
# a TinyNN epoch takes ~25 s there; 12.4 min measured), so it trims the seed's recipe: a 2-epoch
# schedule whose networks are kept from validation accuracy 0.65 on (the seed's 18 epochs reach
# 0.75 after ~8 and cost ~5 minutes a run there), 20 checkpoints a run, a VAE of 40 epochs
# (short of converged at this size: README) and fewer networks evaluated (one takes ~1.7 s on
# the 10k test images). 200 diffusion epochs of the 54 latents are 1,400 updates; x_0
# prediction is done after 2,800 at seed scale (README, "diffusion epochs").
SMALL = dict(runs=3, ckpts_per_run=20, tinynn_epochs=2, min_acc=0.65, fresh_runs=2, fresh_ckpts_per_run=10,
             vae_epochs=40, vae_eval_every=20, vae_final_models=10, diffusion_epochs=200, num_models=30,
             train_models=20, baseline_models=4)


def script_defaults(script, *required):
    """The defaults of a pipeline script's flags (its parse_args with only the required ones)."""
    return vars(importlib.import_module(script).parse_args(list(required)))


def seed_preset():
    """Every script's defaults, read from the scripts so that each is said once; the fresh set
    (5 x 20) and the VAE's final report (20 networks) are the quickstart's own sizes."""
    gen = script_defaults("Gen_Diffusion_Dataset", "--checkpoint_dir", "-")
    vae = script_defaults("train_vae", "--checkpoint_dir", "-")
    ev = script_defaults("evaluate_generated", "--model_path", "-")
    return dict(runs=gen["runs"], ckpts_per_run=gen["ckpts_per_run"], tinynn_epochs=gen["epochs"],
                min_acc=gen["min_acc"], fresh_runs=5, fresh_ckpts_per_run=20, vae_epochs=vae["epochs"],
                vae_eval_every=vae["eval_every"], vae_final_models=20,
                diffusion_epochs=script_defaults("train_diffusion", "--checkpoint_dir", "-")["epochs"],
                num_models=script_defaults("sample", "--model_path", "-")["num_models"],
                train_models=ev["train_models"], baseline_models=ev["baseline_models"])


def main(args):
    t0 = time.time()
    folder = os.path.join(ROOT, "checkpoints", args.name)
    common, device = runtime_argv(args), runtime_argv(args, data=False)
    fresh = f"{args.name}_fresh"  # runs the generator never sees: the same recipe from another seed
    diffusion = os.path.join(folder, "diffusion_latent", "diffusion.pt")
    samples = os.path.join(folder, "diffusion_latent", "quickstart_samples")
    steps = {
        "dataset": (["Gen_Diffusion_Dataset.py", "--checkpoint_dir", args.name, "--runs", args.runs,
                     "--ckpts_per_run", args.ckpts_per_run, "--epochs", args.tinynn_epochs, "--min_acc", args.min_acc,
                     *args.dataset_flags, *common],
                    None),
        "fresh seeds": (["Gen_Diffusion_Dataset.py", "--checkpoint_dir", fresh, "--runs", args.fresh_runs,
                         "--ckpts_per_run", args.fresh_ckpts_per_run, "--epochs", args.tinynn_epochs,
                         "--min_acc", args.min_acc, "--seed", args.fresh_seed, *args.dataset_flags, *common], None),
        "vae": (["train_vae.py", "--checkpoint_dir", args.name, "--epochs", args.vae_epochs,
                 "--eval_every", args.vae_eval_every, "--final_models", args.vae_final_models,
                 "--test_images", args.test_images, *args.vae_flags, *common],
                os.path.join(folder, "vae", "final.json")),
        "diffusion": (["train_diffusion.py", "--checkpoint_dir", args.name, "--epochs", args.diffusion_epochs,
                       *args.diffusion_flags, *device],
                      os.path.join(folder, "diffusion_latent", "loss.png")),
        "sampling": (["sample.py", "--model_path", diffusion, "--num_models", args.num_models, "--sampler", "ddim",
                      "--steps", 50, "--out", samples, *device], None),
        "evaluation": (["evaluate_generated.py", "--model_path", samples, "--fresh_dir", fresh, "--train_models",
                        args.train_models, "--baseline_models", args.baseline_models, "--test_images",
                        args.test_images, *common], None),
    }
    seconds = {name: round(run_step(cmd, skip_if=done), 1) for name, (cmd, done) in steps.items()}
    seconds["total"] = round(time.time() - t0, 1)
    write_json(os.path.join(folder, "quickstart_times.json"), dict(preset=args.preset, seconds=seconds))
    print("\n" + ", ".join(f"{name} {s:.0f}s" for name, s in seconds.items()))
    print(f"quickstart done in {seconds['total'] / 60:.1f} min; report: {os.path.join(samples, 'report.md')}")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    presets = dict(small=SMALL, seed=seed_preset())
    p.add_argument("--preset", choices=sorted(presets), default="small",
                   help="the sizes below, unless a flag sets them (default small)")
    p.add_argument("--name", default=None, help="dataset name under checkpoints/ (default Quickstart, or Seed for "
                                                "--preset seed); the fresh set is NAME_fresh")
    s, d = presets["small"], presets["seed"]
    for key, type_, help in [
            ("runs", int, "TinyNN training runs"), ("ckpts_per_run", int, "checkpoints per run"),
            ("tinynn_epochs", float, "length of a TinyNN run's learning-rate schedule (Gen_Diffusion_Dataset.py "
                                     "--epochs)"),
            ("min_acc", float, "validation accuracy a checkpoint needs to be kept; also the report's bar for 'new'"),
            ("fresh_runs", int, "runs from fresh seeds, the bar for new networks"),
            ("fresh_ckpts_per_run", int, "checkpoints per fresh run"), ("vae_epochs", int, "VAE epochs"),
            ("vae_eval_every", int, "VAE epochs between accuracy evaluations"),
            ("vae_final_models", int, "held-out reconstructions and prior samples in the VAE's final report"),
            ("diffusion_epochs", int, "diffusion epochs"), ("num_models", int, "networks generated and evaluated"),
            ("train_models", int, "training checkpoints evaluated beside them"),
            ("baseline_models", int, "networks per baseline")]:
        p.add_argument(f"--{key}", type=type_, default=None, help=f"{help} (small {s[key]:g}, seed {d[key]:g})")
    p.add_argument("--fresh_seed", type=int, default=1,
                   help="base seed of the fresh runs (default 1; the dataset's is 0)")
    add_test_images_flag(p)
    add_runtime_flags(p, seed=False, quiet=False)
    add_more_flags(p, "dataset", "Gen_Diffusion_Dataset.py", "--train_size 2000 --workers 2")
    add_more_flags(p, "vae", "train_vae.py", "--hidden 64")
    add_more_flags(p, "diffusion", "train_diffusion.py", "--compile")
    args = p.parse_args(argv)
    for key, value in presets[args.preset].items():  # a size flag overrides its preset
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.name = args.name or {"small": "Quickstart", "seed": "Seed"}[args.preset]
    return args


if __name__ == "__main__":
    main(parse_args())
