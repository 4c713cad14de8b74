"""From CIFAR-10 to generated TinyNNs, judged, in one command: two routes side by side.

Runs the pipeline's scripts in order, printing each command so that you can rerun or change any
step by hand: the checkpoint dataset, a small set of runs from fresh seeds (the bar for "new"
networks), then
- latent diffusion: the VAE, the diffusion model over its latents, sampling, the evaluation;
- blends trained on: blends of three runs trained --blend_steps SGD steps (sample_blends.py),
  beside the fresh runs' checkpoints trained the same way (their fair bar), the evaluation.
It ends with one table of both routes beside the training checkpoints and the fresh seeds, and
a three-line verdict: accurate? new by the bar? an ensemble better than the runs?

    python quickstart.py                      # the small default (--preset small)
    python quickstart.py --preset seed        # the seed's scale: 10 runs x 250 checkpoints, every script's defaults
    python quickstart.py --name Mine --runs 4 --ckpts_per_run 60

Each step continues where it stopped if the command is run again (the dataset keeps its
finished runs; a step whose output exists is skipped). At the end it prints the seconds of every
step and writes them, with the table, to checkpoints/NAME/quickstart.json and quickstart.md.
"""
import argparse
import importlib
import json
import os
import time

from weightgen.cli import (ROOT, add_more_flags, add_runtime_flags, add_test_images_flag, count, resume_if_started,
                           run_step, runtime_argv, whole)
from weightgen.model_io import write_json

# The sizes of a run. small: what fits 15 minutes of this project's slowest 2-core CPU, so it
# trims the seed's recipe: a 2-epoch schedule whose networks are kept from validation accuracy
# 0.65 on (the seed's 18 epochs reach 0.75 after ~8), 20 checkpoints a run, few networks
# evaluated (one takes ~1.7 s on the 10k test images there) and few blends trained (each ~30 s
# there). Its 54 training vectors make 2 VAE steps an epoch: at the seed's rate, decayed every 30
# epochs, the VAE stops short of its checkpoints, so the rate is doubled and kept.
SMALL = dict(runs=3, ckpts_per_run=20, tinynn_epochs=2, min_acc=0.65, fresh_runs=2, fresh_ckpts_per_run=10,
             vae_epochs=80, vae_lr=2e-3, vae_lr_step=1000, vae_eval_every=80, vae_final_models=4, diffusion_epochs=200,
             num_models=20, train_models=12, baseline_models=2, blends=3, blend_steps=200)


def script_defaults(script, *required):
    """The defaults of a pipeline script's flags (its parse_args with only the required ones)."""
    return vars(importlib.import_module(script).parse_args(list(required)))


def seed_preset():
    """Every script's defaults, read from the scripts so that each is said once; the fresh set
    (5 x 20), the VAE's final report (20 networks) and the blends (20) are the quickstart's own sizes."""
    gen = script_defaults("Gen_Diffusion_Dataset", "--checkpoint_dir", "-")
    vae = script_defaults("train_vae", "--checkpoint_dir", "-")
    ev = script_defaults("evaluate_generated", "--model_path", "-")
    blends = script_defaults("sample_blends", "--checkpoint_dir", "-")
    return dict(runs=gen["runs"], ckpts_per_run=gen["ckpts_per_run"], tinynn_epochs=gen["epochs"],
                min_acc=gen["min_acc"], fresh_runs=5, fresh_ckpts_per_run=20, vae_epochs=vae["epochs"],
                vae_lr=vae["lr"], vae_lr_step=vae["lr_step"],
                vae_eval_every=vae["eval_every"], vae_final_models=20,
                diffusion_epochs=script_defaults("train_diffusion", "--checkpoint_dir", "-")["epochs"],
                num_models=script_defaults("sample", "--model_path", "-")["num_models"],
                train_models=ev["train_models"], baseline_models=ev["baseline_models"], blends=20,
                blend_steps=blends["steps"])


def pipeline_steps(args, folder, fresh):
    """{step name: (command, the file whose existence means it is done)} in the order they run."""
    common, device = runtime_argv(args), runtime_argv(args, data=False)
    dataset_flags = ["--epochs", args.tinynn_epochs, "--min_acc", args.min_acc, *args.dataset_flags, *common]
    judge = ["--fresh_dir", fresh, "--train_models", args.train_models, "--test_images", args.test_images, *common]
    latent, blends = route_folders(folder)
    trained_fresh = blends + "_fresh_trained"
    return {
        "dataset": (["Gen_Diffusion_Dataset.py", "--checkpoint_dir", args.name, "--runs", args.runs,
                     "--ckpts_per_run", args.ckpts_per_run, *dataset_flags], None),
        "fresh seeds": (["Gen_Diffusion_Dataset.py", "--checkpoint_dir", fresh, "--runs", args.fresh_runs,
                         "--ckpts_per_run", args.fresh_ckpts_per_run, "--seed", args.fresh_seed, *dataset_flags],
                        None),
        "vae": (["train_vae.py", "--checkpoint_dir", args.name, "--epochs", args.vae_epochs, "--lr", args.vae_lr,
                 "--lr_step", args.vae_lr_step, "--eval_every", args.vae_eval_every,
                 "--final_models", args.vae_final_models, "--test_images", args.test_images,
                 *resume_if_started(folder, "vae", "vae_last.pt"), *args.vae_flags, *common],
                os.path.join(folder, "vae", "final.json")),
        "diffusion": (["train_diffusion.py", "--checkpoint_dir", args.name, "--epochs", args.diffusion_epochs,
                       *resume_if_started(folder, "diffusion_latent", "diffusion.pt"), *args.diffusion_flags,
                       *device],
                      os.path.join(folder, "diffusion_latent", "loss.png")),
        "sampling": (["sample.py", "--model_path", os.path.join(folder, "diffusion_latent", "diffusion.pt"),
                      "--num_models", args.num_models, "--out", latent, *device],
                     os.path.join(latent, "generated.pt")),
        "evaluation (latent)": (["evaluate_generated.py", "--model_path", latent, "--baseline_models",
                                 args.baseline_models, *judge], os.path.join(latent, "report.json")),
        "blends": (["sample_blends.py", "--checkpoint_dir", args.name, "--num_models", args.blends, "--steps",
                    args.blend_steps, "--oversample", 1, "--fresh_dir", fresh, "--out", blends, *common],
                   os.path.join(trained_fresh, "generated.pt")),
        "evaluation (fresh, trained)": (["evaluate_generated.py", "--model_path", trained_fresh, "--baseline_models",
                                         0, *judge], os.path.join(trained_fresh, "report.json")),
        "evaluation (blends)": (["evaluate_generated.py", "--model_path", blends, "--baseline_models", 0,
                                 "--bar_from", trained_fresh, *judge], os.path.join(blends, "report.json")),
    }


def route_folders(folder):
    """(the latent route's networks, the blends route's networks) of the quickstart's dataset."""
    return (os.path.join(folder, "diffusion_latent", "quickstart_samples"),
            os.path.join(folder, "blends", "quickstart"))


def read_report(out):
    with open(os.path.join(out, "report.json")) as f:
        return json.load(f)


def route_table(folder, seconds):
    """(rows, markdown) of both routes beside the training checkpoints and the fresh seeds."""
    latent, blends = map(read_report, route_folders(folder))
    runs = next(e for name, e in latent["ensembles"].items() if name.startswith("training checkpoints"))

    def row(name, summary, report, secs, trained):
        a = summary["accuracy"]
        first = next((e for k, e in report["ensembles"].items() if k.startswith("generated (first")), None)
        return dict(route=name, n=a["n"], mean=a["mean"], min=a["min"], above_min_acc=a["above_min_acc"],
                    new=summary.get("new"), new_trained_bar=report.get("bar_from", {}).get("new") if trained else None,
                    ensemble=first["accuracy"] if first else None, ensemble_runs=runs["accuracy"], seconds=secs)

    rows = [row("latent diffusion (VAE + DDIM-50)", latent["summary"]["generated"], latent,
                sum(seconds.get(k, 0) for k in ("vae", "diffusion", "sampling")), False),
            row("blends of 3 runs, trained on", blends["summary"]["generated"], blends, seconds.get("blends", 0), True),
            row("training checkpoints", latent["summary"]["training checkpoints"], dict(ensembles={}), None, False),
            row("fresh seeds", latent["summary"]["fresh seeds"], dict(ensembles={}), None, False)]
    fmt = lambda v, spec: "-" if v is None else format(v, spec)
    lines = ["| route | n | mean | min | >= min_acc | new (fresh bar) | new (trained fresh bar) | "
             "ensemble of K / K runs | seconds |", "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['route']} | {r['n']} | {r['mean']:.4f} | {r['min']:.4f} | {r['above_min_acc']:.0%} | "
              f"{fmt(r['new'], '.0%')} | {fmt(r['new_trained_bar'], '.0%')} | "
              f"{fmt(r['ensemble'], '.4f')} / {r['ensemble_runs']:.4f} | {fmt(r['seconds'], '.0f')} |" for r in rows]
    return rows, "\n".join(lines)


def verdict(rows, min_acc):
    """Three lines: accurate? new by the bar? an ensemble better than the runs? (each route)."""
    gen, train = rows[:2], rows[2]

    def each(text):
        return "; ".join(text(r) for r in gen)
    new = lambda r: r["new_trained_bar"] if r["new_trained_bar"] is not None else r["new"]
    return "\n".join([
        "accurate?  " + each(lambda r: f"{r['route'].split(' (')[0]}: {'yes' if r['mean'] >= train['mean'] else 'no'}"
                                        f" ({r['mean']:.4f} against the checkpoints' {train['mean']:.4f}, "
                                        f"{r['above_min_acc']:.0%} >= {min_acc:g})"),
        "new?       " + each(lambda r: f"{r['route'].split(' (')[0]}: {new(r):.0%} by the "
                                        f"{'trained fresh' if r['new_trained_bar'] is not None else 'fresh'} bar"),
        "ensemble?  " + each(lambda r: f"{r['route'].split(' (')[0]}: {r['ensemble'] - r['ensemble_runs']:+.4f} "
                                        f"against the runs")])


def main(args):
    t0 = time.time()
    folder = os.path.join(ROOT, "checkpoints", args.name)
    fresh = f"{args.name}_fresh"  # runs the generator never sees: the same recipe from another seed
    seconds = {name: round(run_step(cmd, skip_if=done), 1)
               for name, (cmd, done) in pipeline_steps(args, folder, fresh).items()}
    seconds["total"] = round(time.time() - t0, 1)
    rows, table = route_table(folder, seconds)
    min_acc = read_report(route_folders(folder)[0])["min_acc"]
    text = f"{table}\n\n{verdict(rows, min_acc)}\n"
    with open(os.path.join(folder, "quickstart.md"), "w") as f:
        f.write(text)
    write_json(os.path.join(folder, "quickstart.json"), dict(preset=args.preset, seconds=seconds, routes=rows))
    print("\n" + ", ".join(f"{name} {s:.0f}s" for name, s in seconds.items()))
    print(f"\n{text}\nquickstart done in {seconds['total'] / 60:.1f} min; reports: "
          f"{', '.join(os.path.join(r, 'report.md') for r in route_folders(folder))}")


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
            ("vae_lr", float, "VAE peak learning rate (train_vae.py --lr)"),
            ("vae_lr_step", int, "VAE epochs between learning-rate decays (train_vae.py --lr_step)"),
            ("vae_eval_every", int, "VAE epochs between accuracy evaluations"),
            ("vae_final_models", int, "held-out reconstructions and prior samples in the VAE's final report"),
            ("diffusion_epochs", int, "diffusion epochs"),
            ("num_models", int, "networks sampled by latent diffusion and evaluated"),
            ("train_models", int, "training checkpoints evaluated beside them"),
            ("baseline_models", int, "networks per baseline"),
            ("blends", int, "blends of three runs trained on and evaluated (and fresh checkpoints trained so)"),
            ("blend_steps", int, "SGD steps each blend (and each fresh checkpoint of its bar) is trained")]:
        p.add_argument(f"--{key}", type=(whole if key == "baseline_models" else count) if type_ is int else type_,
                       default=None,
                       help=f"{help} (small {s[key]:g}, seed {d[key]:g})")
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
