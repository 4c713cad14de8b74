"""Experiment: how the kind of checkpoints the generator learns from changes what it generates
(the seed's "sparse, regularization, etc").

For each variant in --variants, builds a checkpoint dataset with that training recipe (same
number of runs and checkpoints for all), and a small fresh-seed set with the same recipe; trains
the VAE and latent diffusion with the same flags on each; samples --num_models networks (DDIM-50)
and evaluates them against their own fresh set. For pruned variants it also samples with
sample.py --prune_to at the variant's sparsity. Every step is skipped when its output exists, so
an interrupted experiment continues when rerun. Writes, in checkpoints/PREFIX_variants/:
dataset_variants.md/.json (the table) and dataset_variants.png.

    python -m experiments.dataset_variants --variants default wd0 l1 prune50
    python -m experiments.dataset_variants --variants default prune50 --runs 10 --ckpts_per_run 250   # seed scale

Variants (the flags of Gen_Diffusion_Dataset.py they add): """
import argparse
import json
import os

import torch

from weightgen import checkpoint_dataset as cd
from weightgen.cli import add_more_flags, count, run_main, run_step, runtime_argv
from experiments.common import common_flags, judge, write_table
from weightgen.model_io import GENERATED_KIND, load_checkpoint
from weightgen.tinynn import FlatLayout, sparsity

VARIANTS = {
    "default": [],
    "wd0": ["--weight_decay", "0"],
    "wd5e-3": ["--weight_decay", "5e-3"],
    "l1": ["--l1", "5e-5"],
    "prune50": ["--prune", "0.5"],
    "prune80": ["--prune", "0.8"],
    "no_augment": ["--augment", "none"],
    "flip_crop": ["--augment", "flip_crop"],
    "no_smoothing": ["--label_smoothing", "0"],
}
__doc__ += "; ".join(f"{k}: {' '.join(v) or '(the default recipe)'}" for k, v in VARIANTS.items()) + "."


def prune_share(flags):
    return float(flags[flags.index("--prune") + 1]) if "--prune" in flags else 0.0


def build(variant, args):
    """Dataset, fresh set, VAE, diffusion and samples of one variant; returns the sample folders."""
    flags = VARIANTS[variant] + args.dataset_flags
    name = f"{args.prefix}_{variant}"
    folder = cd.dataset_folder(name)
    run_step(["Gen_Diffusion_Dataset.py", "--checkpoint_dir", name, "--runs", args.runs, "--ckpts_per_run",
              args.ckpts_per_run, "--quiet", *flags, *runtime_argv(args)],
             skip_if=os.path.join(folder, "manifest.json"))
    fresh = f"{name}_fresh"
    run_step(["Gen_Diffusion_Dataset.py", "--checkpoint_dir", fresh, "--runs", args.fresh_runs, "--ckpts_per_run",
              args.fresh_ckpts_per_run, "--seed", args.fresh_seed, "--quiet", *flags, *runtime_argv(args)],
             skip_if=os.path.join(cd.dataset_folder(fresh), "manifest.json"))
    run_step(["train_vae.py", "--checkpoint_dir", name, "--epochs", args.vae_epochs, "--final_models", 20,
              "--test_images", args.test_images, "--quiet", *args.vae_flags, *runtime_argv(args)],
             skip_if=os.path.join(folder, "vae", "final.json"))
    diffusion = os.path.join(folder, "diffusion_latent", "diffusion.pt")
    run_step(["train_diffusion.py", "--checkpoint_dir", name, "--epochs", args.diffusion_epochs, "--quiet",
              *runtime_argv(args, data=False)], skip_if=os.path.join(folder, "diffusion_latent", "loss.png"))
    outs = {variant: os.path.join(folder, "diffusion_latent", "variant_samples")}
    share = prune_share(flags)
    if share:
        outs[f"{variant} + prune_to {share:g}"] = os.path.join(folder, "diffusion_latent", "variant_samples_pruned")
    for label, out in outs.items():
        extra = ["--prune_to", share] if out.endswith("_pruned") else []
        run_step(["sample.py", "--model_path", diffusion, "--num_models", args.num_models, "--out", out, "--quiet",
                  *extra, *runtime_argv(args, data=False)], skip_if=os.path.join(out, "generated.pt"))
        judge(out, args, fresh)
    return folder, outs


def weight_figures(folder, samples, n_train):
    """Sparsity and norm of the generated networks and of n_train training checkpoints."""
    manifest = cd.load_manifest(folder)
    layout = FlatLayout.from_json(manifest["layout"])
    train = cd.load_weights(folder, manifest)
    train = train[torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:n_train]]
    generated = load_checkpoint(os.path.join(samples, "generated.pt"), GENERATED_KIND)["weights"]
    t, g = sparsity(train, layout), sparsity(generated, layout)
    return dict(train_zeros=t["zeros"].mean().item(), gen_zeros=g["zeros"].mean().item(),
                train_small=t["small"].mean().item(), gen_small=g["small"].mean().item(),
                train_norm=t["norm"].mean().item(), gen_norm=g["norm"].mean().item())


def row(label, folder, samples, n_train):
    with open(os.path.join(samples, "report.json")) as f:
        report = json.load(f)
    s = report["summary"]
    g, t = s["generated"], s["training checkpoints"]
    ens = report["ensembles"]
    ens_gen = next(v for k, v in ens.items() if k.startswith("generated (first"))
    ens_train = next(v for k, v in ens.items() if k.startswith("training checkpoints"))
    return dict(variant=label, train_acc=t["accuracy"]["mean"], gen_acc=g["accuracy"]["mean"],
                gen_min=g["accuracy"]["min"], gen_above_min_acc=g["accuracy"]["above_min_acc"],
                **weight_figures(folder, samples, n_train),
                new=g.get("new", "-"), max_overlap=g["max_error_overlap"]["median"], distinct=g["distinct"],
                functionally_distinct=g["functionally_distinct"], ens_gen=ens_gen["accuracy"],
                ens_train=ens_train["accuracy"])


def plot(rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    panels = [("train_acc", "gen_acc", "gen_min", "test accuracy", "accuracy per dataset variant", "mean", "min"),
              ("train_zeros", "gen_zeros", "gen_small", "share of conv/linear weights", "sparsity", "exact zeros",
               "|w| < 1e-3")]
    for ax, (train, gen, extra, ylabel, title, what, extra_label) in zip(axes, panels):
        x = range(len(rows))
        ax.bar([i - 0.2 for i in x], [r[train] for r in rows], 0.4, label=f"training checkpoints: {what}")
        ax.bar([i + 0.2 for i in x], [r[gen] for r in rows], 0.4, label=f"generated: {what}")
        ax.scatter([i + 0.2 for i in x], [r[extra] for r in rows], color="k", zorder=3,
                   label=f"generated: {extra_label}")
        ax.set(xticks=list(x), ylabel=ylabel, ylim=(0, 1), title=title)
        ax.set_xticklabels([r["variant"] for r in rows], rotation=30, ha="right", fontsize=8)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(args):
    rows = []
    for variant in args.variants:
        folder, outs = build(variant, args)
        rows += [row(label, folder, out, args.train_models) for label, out in outs.items()]
    out_dir = cd.dataset_folder(f"{args.prefix}_variants")
    os.makedirs(out_dir, exist_ok=True)
    out = os.path.join(out_dir, "dataset_variants")
    write_table(out, f"Dataset variants ({args.runs} runs x {args.ckpts_per_run} checkpoints each; fresh sets "
                f"{args.fresh_runs} x {args.fresh_ckpts_per_run}; {args.num_models} DDIM-50 networks each)",
                ["variant", "train_acc", "gen_acc", "gen_min", "gen_above_min_acc", "train_zeros", "gen_zeros",
                 "train_small", "gen_small", "train_norm", "gen_norm", "new", "max_overlap", "distinct",
                 "functionally_distinct", "ens_gen", "ens_train"], rows)
    plot(rows, out + ".png")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=["default", "wd0", "l1", "prune50"],
                   help="dataset variants to build and compare (default: default wd0 l1 prune50)")
    p.add_argument("--prefix", default="Variants", help="datasets are checkpoints/PREFIX_VARIANT (default Variants)")
    p.add_argument("--runs", type=count, default=3, help="training runs per variant (default 3)")
    p.add_argument("--ckpts_per_run", type=count, default=40, help="checkpoints per run (default 40)")
    p.add_argument("--fresh_runs", type=count, default=2, help="fresh-seed runs per variant (default 2)")
    p.add_argument("--fresh_ckpts_per_run", type=count, default=10, help="checkpoints per fresh run (default 10)")
    p.add_argument("--fresh_seed", type=int, default=1, help="base seed of the fresh runs (default 1)")
    p.add_argument("--vae_epochs", type=count, default=100, help="default 100")
    p.add_argument("--diffusion_epochs", type=count, default=200, help="default 200")
    add_more_flags(p, "dataset", "Gen_Diffusion_Dataset.py", "--train_size 2000", where=" for every variant")
    common_flags(p, dataset=False, vae=True)
    return p.parse_args(argv)


if __name__ == "__main__":
    run_main(main, parse_args)
