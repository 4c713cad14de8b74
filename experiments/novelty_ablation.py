"""Experiment: which generator settings make new networks? The ablation of issue "Generators
that make new networks", judged by the fresh-seed bar of evaluate_generated.py.

For every dataset in --datasets (all made with one recipe, so one --fresh_dir judges them) and
every variant in --variants (and --add), trains the VAE and the diffusion model with the
variant's flags (a variant without VAE flags shares the dataset's VAE; a --space weights variant
needs none), samples --num_models networks with DDIM-50 and evaluates them against the fresh
set. Every step is skipped when its output exists, so an interrupted ablation continues when
rerun. Writes, in --out: novelty_ablation.md/.json (per dataset and variant: accuracy mean and
min, share >= min_acc, the "new" share, median max error overlap, pairwise disagreement,
functionally distinct networks, the ensemble of K generated networks against K training runs,
and of all of them) and novelty_ablation.png (accuracy against max error overlap, one panel per
dataset, the fresh seeds' bar as a line).

    python Gen_Diffusion_Dataset.py --checkpoint_dir Fresh --runs 5 --ckpts_per_run 20 --seed 1
    python -m experiments.novelty_ablation --datasets Toy_CNN --fresh_dir Fresh
    python -m experiments.novelty_ablation --datasets Runs3x40 Runs12x10 --fresh_dir Fresh \\
        --variants default vae_no_noise --add kl3 "--kl_weight 1e-3" "" ""

Variants (train_vae.py | train_diffusion.py | sample.py flags): """
import argparse
import json
import os
import shlex

from weightgen import checkpoint_dataset as cd
from weightgen.cli import count, run_main, run_step, runtime_argv, whole
from experiments.common import REPORT_COLUMNS, common_flags, judge, plot_overlap_scatter, report_rows, write_table

VARIANTS = {
    "default": ("", "", ""),
    "vae_no_noise": ("--input_noise 0 --latent_noise 0 --kl_weight 1e-4", "", ""),
    "vae_kl1e-2_noise0.03": ("--latent_noise 0.03 --kl_weight 0.01", "", ""),
    "vae_latent128": ("--latent_dim 128", "", ""),
    "layercodes": ("--autoencoder layercodes", "", ""),
    "align_activations": ("--align activations", "", ""),
    "direct": (None, "--space weights --batch_size 32", ""),
    "ddim_eta1": ("", "", "--eta 1"),
    "temperature0.5": ("", "", "--temperature 0.5"),
    "temperature1.5": ("", "", "--temperature 1.5"),
    "run_mix1": ("", "--condition run", "--mix_runs 1"),
    "run_mix2": ("", "--condition run", "--mix_runs 2"),
    "run_mix2_cfg2": ("", "--condition run", "--mix_runs 2 --cfg_scale 2"),
}
__doc__ += "; ".join(f"{k}: {v[0] if v[0] is not None else '(no VAE)'} | {v[1]} | {v[2]}"
                     for k, v in VARIANTS.items()) + "."


def build(dataset, name, flags, args):
    """VAE, diffusion, samples and report of one variant on one dataset; returns the report path."""
    vae_flags, diffusion_flags, sample_flags = flags
    folder = cd.dataset_folder(dataset)
    # Variants that differ in sample.py's flags alone share one diffusion model (named after the
    # first of them), so that they compare samplers of the same model rather than two trainings.
    first = args.first_with[(vae_flags, diffusion_flags)]
    diffusion_run = f"diffusion_{first}" if vae_flags or diffusion_flags else "diffusion"
    diffusion = ["train_diffusion.py", "--checkpoint_dir", dataset, "--run_name", diffusion_run,
                 "--epochs", args.diffusion_epochs, "--quiet", *shlex.split(diffusion_flags)]
    if vae_flags is not None:
        vae_run = f"vae_{args.first_with[vae_flags]}" if vae_flags else "vae"  # none: the dataset's own VAE
        run_step(["train_vae.py", "--checkpoint_dir", dataset, "--run_name", vae_run, "--epochs", args.vae_epochs,
                  "--final_models", 20, "--test_images", args.test_images, "--quiet", *args.vae_flags,
                  *shlex.split(vae_flags), *runtime_argv(args)],
                 skip_if=os.path.join(folder, vae_run, "final.json"))
        diffusion += ["--vae_path", os.path.join(folder, vae_run, "vae.pt")]
    model = os.path.join(folder, diffusion_run, "diffusion.pt")
    run_step(diffusion + runtime_argv(args, data=False), skip_if=os.path.join(os.path.dirname(model), "loss.png"))
    # The seed is in the name: another --sample_seed must draw new networks, not find the old ones.
    out = os.path.join(os.path.dirname(model), f"samples_{name}_seed{args.sample_seed}")
    run_step(["sample.py", "--model_path", model, "--num_models", args.num_models, "--sampler", "ddim", "--steps", 50,
              "--seed", args.sample_seed, "--out", out, "--quiet", *shlex.split(sample_flags),
              *runtime_argv(args)],  # the data, for a variant that rejects on the validation images
             skip_if=os.path.join(out, "generated.pt"))
    baselines = args.baseline_models if name == args.variant_names[0] else 0
    judge(out, args, args.fresh_dir, baselines)
    return os.path.join(out, "report.json")


def main(args):
    variants = {name: VARIANTS[name] for name in args.variants}
    variants.update({name: (None if vae == "none" else vae, diffusion, sample) for name, vae, diffusion, sample
                     in args.add or []})
    args.variant_names = list(variants)
    args.first_with = {}  # VAE flags, and (VAE, diffusion) flags -> the first variant with them
    for name, (vae, diffusion, _) in variants.items():
        args.first_with.setdefault(vae, name)
        args.first_with.setdefault((vae, diffusion), name)
    per_dataset = {}
    for dataset in args.datasets:
        per_dataset[dataset] = []
        for name, flags in variants.items():
            with open(build(dataset, name, flags, args)) as f:
                per_dataset[dataset].append((name, json.load(f)))
    rows = [row for dataset, reports in per_dataset.items() for row in report_rows(dataset, reports)]
    os.makedirs(args.out, exist_ok=True)
    out = os.path.join(args.out, "novelty_ablation")
    bars = ", ".join(f"{d}: {r[0][1]['new_bar']:.3f}" for d, r in per_dataset.items())
    write_table(out, f"Novelty ablation ({args.num_models} DDIM-50 networks per variant, sample seed "
                f"{args.sample_seed}; fresh set {args.fresh_dir}; bar = fresh 95th percentile of max error overlap: "
                f"{bars})", REPORT_COLUMNS, rows)
    plot_overlap_scatter(per_dataset, out + ".png")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", required=True,
                   help="checkpoint datasets under checkpoints/, all of the --fresh_dir recipe")
    p.add_argument("--fresh_dir", required=True, help="fresh-seed checkpoint dataset: the bar (evaluate_generated.py)")
    p.add_argument("--variants", nargs="*", choices=list(VARIANTS), default=["default", "vae_no_noise"],
                   help="named variants to run (default: default vae_no_noise)")
    p.add_argument("--add", nargs=4, action="append", metavar=("NAME", "VAE_FLAGS", "DIFFUSION_FLAGS", "SAMPLE_FLAGS"),
                   help='another variant: its name and the flags of train_vae.py ("none": no VAE, for --space '
                        'weights), train_diffusion.py and sample.py, each one quoted string ("" for none)')
    p.add_argument("--vae_epochs", type=count, default=100, help="default 100")
    p.add_argument("--diffusion_epochs", type=count, default=200, help="default 200")
    p.add_argument("--sample_seed", type=int, default=0, help="seed of sample.py (default 0)")
    p.add_argument("--baseline_models", type=whole, default=10,
                   help="networks per noise baseline, evaluated with the first variant of each dataset (default 10)")
    p.add_argument("--out", default=os.path.join(cd.dataset_folder("novelty_ablation")),
                   help="where the table and plot go (default checkpoints/novelty_ablation)")
    common_flags(p, dataset=False, vae=True)
    p.set_defaults(num_models=100)
    return p.parse_args(argv)


if __name__ == "__main__":
    run_main(main, parse_args)
