"""Experiment: a generator that also sees data. Generated (or blended) networks trained on for a
few SGD steps: do they become accurate, and are they then still new by the fresh-seed bar? Against
the same steps from a fresh init and from a training checkpoint.

Starts: each --start NAME=PATH (a generated.pt of this dataset, or the folder holding it: sample.py's
networks, a group of experiments/midpoints.py, untrained blends of sample_blends.py --steps 0
--oversample 1, ...; its first --num_models networks), and always
- fresh init: a TinyNN from a new seed, the control for what the steps alone give;
- training checkpoints: the last checkpoint of --num_models training runs (cycling through the
  runs when there are fewer), the control for what the steps do to a network the bar calls a copy;
- fresh checkpoints: the last checkpoint of the runs of --fresh_dir (cycling the same way), the
  control for what the steps do to a network the bar calls new. Training on changes a network's
  mistakes (it anneals them), so a trained network is also held against the bar of the fresh
  networks trained the same way: "new_same_steps" counts the networks as accurate as --min_acc
  asks and within the 95th percentile of the max error overlap of those trained fresh networks.
With --noise S, also the training checkpoints plus Gaussian noise of S times each tensor's spread
across the dataset (its aligned, standardised space, as evaluate_generated.py's "train + noise"
baselines; one noise draw for every S, so the scales differ only in size). Zeng et al. (2025) found
generators no better than training weights plus noise; this asks the same of a blend trained on:
does a random perturbation of a copy, trained the same steps, become as new and stay as accurate?
Every start is trained for each S of --steps with the dataset's recipe compressed to S steps
(warm-up and linear decay in proportion; tinynn_training.budget_config) at each peak rate of
--lr (fresh init: the recipe's own), on the dataset's training images (never its validation
images or the test set). Network i of every group draws its data order and augmentation from the
same seed, derived from (--seed, i) and shared with no run of the dataset or the fresh set. Each
group is written as a generated.pt and judged by evaluate_generated.py with --fresh_dir. Writes, in
checkpoints/NAME/finetune/ (finetune_seedS/ for --seed S > 0): a folder per group, finetune.md/.json
(the table; "run_share" is S against the median SGD steps of the dataset's runs) and finetune.png
(accuracy against max error overlap). A group already made with the same settings is not made again.
With --pool, each group is also pooled with the same group of other data orders (--seed) and
judged by one bar from all their trained fresh checkpoints: finetune_pooled.md/.json beside this
order's finetune.md (in its own folder, so that pooling other orders never overwrites it).

    python -m experiments.midpoints --checkpoint_dir Toy_CNN --fresh_dir Toy_CNN_fresh --match activations
    python -m experiments.finetune --checkpoint_dir Toy_CNN --fresh_dir Toy_CNN_fresh --steps 40 100 \\
        --lr 0.05 0.2 --start midpoints=checkpoints/Toy_CNN/midpoints_activations/aligned_BN_reestimated \\
        --start generated=checkpoints/Toy_CNN/diffusion_latent/samples_ddim_50_seed0
"""
import argparse
import os
import statistics

import torch
from tqdm import tqdm

from weightgen import checkpoint_dataset as cd
from weightgen.baselines import is_new, new_network_bar
from weightgen.cifar10 import load_cifar10
from weightgen.cli import count, positive, run_main
from experiments.common import (REPORT_COLUMNS, common_flags, judge, plot_overlap_scatter, report_rows,
                                save_group, write_table)
from weightgen.model_io import CheckpointError, load_generated, made_with, pick_device
from weightgen.generate import finish
from weightgen.tinynn import FlatLayout
from weightgen.tinynn_training import budget_config, dataset_recipe, train_flat, train_on_seeds
from weightgen.weight_dataset import WeightDataset

FRESH_INIT, TRAINING, FRESH_RUNS = "fresh init", "training checkpoints", "fresh checkpoints"


def parse_start(text):
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"--start takes NAME=PATH, not {text!r}")
    return name, path


def start_weights(args, folder):
    """({start name: flat weights [num_models, n_params]}, the generator split's description) of
    every --start and of the training- and fresh-checkpoint controls."""
    starts, description = {}, None
    for name, path in args.start:
        weights, _, _, split = load_generated(path)
        if os.path.abspath(split["folder"]) != os.path.abspath(folder):
            raise CheckpointError(f"--start {name}: {path} was generated from {split['folder']}, not {folder}")
        if len(weights) < args.num_models:
            raise CheckpointError(f"--start {name}: {path} holds {len(weights)} networks, --num_models asks for "
                                  f"{args.num_models}")
        starts[name], description = weights[:args.num_models], description or split
    ds = WeightDataset.from_description(description) if description else WeightDataset(folder)
    z_ends = ds.run_ends()
    z_ends = z_ends[torch.arange(args.num_models) % len(z_ends)]
    starts[TRAINING] = ds.standardizer.destandardize(z_ends)
    noise = torch.randn(z_ends.shape, generator=torch.Generator().manual_seed(args.seed))
    for scale in args.noise:
        starts[noisy_name(scale)] = ds.standardizer.destandardize(z_ends + scale * noise)
    fresh_ends = cd.last_checkpoints(cd.dataset_folder(args.fresh_dir))
    starts[FRESH_RUNS] = fresh_ends[torch.arange(args.num_models) % len(fresh_ends)]
    return starts, ds.description


def noisy_name(scale):
    return f"{TRAINING} + noise {scale:g}"


def network_seeds(args):
    """The data-order seed of network i, the same in every group; none is a seed of a run of the
    dataset or the fresh set."""
    seeds = train_on_seeds(args.seed, args.num_models)
    if cd.replayed_seeds(seeds, *map(cd.dataset_folder, (args.checkpoint_dir, args.fresh_dir))):
        raise cd.DatasetError(f"--seed {args.seed} gives a seed of a run of {args.checkpoint_dir} or {args.fresh_dir}: "
                              f"pick another")
    return seeds


def group_plan(starts, args):
    """[(group name, start name, steps, peak lr or None for the recipe's)] in the order they are made."""
    plan = [(f"{FRESH_INIT}, {s} steps", FRESH_INIT, s, None) for s in args.steps]
    for name in starts:
        plan += [(f"{name}, {s} steps, lr {lr:g}", name, s, lr) for s in args.steps for lr in args.lr]
    return plan


def main(args):
    folder = cd.dataset_folder(args.checkpoint_dir)
    manifest = cd.load_manifest(folder)
    layout, tinynn_config = FlatLayout.from_json(manifest["layout"]), manifest["tinynn"]
    root = seed_root(folder, args.seed)
    starts, description = start_weights(args, folder)
    seeds, device = network_seeds(args), pick_device(args.device)
    recipe, x, y, run_steps = dataset_recipe(manifest, load_cifar10(args.data_dir, download=not args.no_download))
    x, y = x.to(device), y.to(device)  # once, not once a network
    reports = []
    for group, start, steps, lr in group_plan(starts, args):
        out = os.path.join(root, group_folder(group))
        path = args.fresh_dir if start == FRESH_RUNS else dict(args.start).get(start)
        source = dict(experiment="finetune", start=start, start_path=path, steps=steps, lr=lr, seed=args.seed)
        if not made_with(out, source, args.num_models):
            cfg = budget_config(recipe, steps, len(y) // recipe.batch_size, lr)
            with tqdm(total=args.num_models, desc=group, leave=False) as bar:
                w = train_flat(None if start == FRESH_INIT else starts[start], seeds, layout, tinynn_config, x, y,
                               cfg, steps, device, progress=bar.update)
            finish(w, layout)
            save_group(w, layout, tinynn_config, out, source, description, batchnorm="trained")
        reports.append((group, judge(out, args, args.fresh_dir)))
    write_results(os.path.join(root, "finetune"), reports, run_steps, args)
    if args.pool:
        write_pooled(folder, root, reports, args)


def seed_root(folder, seed):
    return os.path.join(folder, "finetune" if seed == 0 else f"finetune_seed{seed}")


def group_folder(group):
    return group.replace(", ", "_").replace(" ", "_")


def write_results(out, reports, run_steps, args):
    rows = report_rows(args.checkpoint_dir, reports)
    bars = same_steps_bars(reports)
    for row in rows[:2]:
        row.update(run_share=1.0, new_same_steps="-", bar_same_steps="-")
    for row, (group, report) in zip(rows[2:], reports):
        bar = bars.get((report["source"]["steps"], report["source"]["lr"]))
        row.update(run_share=report["source"]["steps"] / run_steps, bar_same_steps="-" if bar is None else bar,
                   new_same_steps="-" if bar is None else new_share(report, bar))
    columns = ["models", "run_share"] + REPORT_COLUMNS[2:]
    columns[columns.index("new") + 1:columns.index("new") + 1] = ["new_same_steps", "bar_same_steps"]
    write_table(out, f"Networks trained on for a few steps: {args.num_models} per group, {args.checkpoint_dir}, "
                f"runs of {run_steps:g} steps; bar {reports[0][1]['new_bar']:.3f} (fresh set {args.fresh_dir}); "
                f"bar_same_steps: the fresh checkpoints trained with the same steps and rate", columns, rows)
    plot_overlap_scatter({args.checkpoint_dir: reports}, out + ".png")


def same_steps_bars(reports):
    """{(steps, lr): the 95th percentile of the max error overlap of the fresh checkpoints trained so}."""
    return {(r["source"]["steps"], r["source"]["lr"]): new_network_bar(r["per_model"]["generated"]["max_error_overlap"])
            for _, r in reports if r["source"]["start"] == FRESH_RUNS}


def write_pooled(folder, root, reports, args):
    """finetune_pooled.md/.json in this order's folder `root`: each group of this run pooled with the same
    group (start, steps, rate) of every --pool seed that has made it, and judged by one bar from
    all of their trained fresh checkpoints together (the 95th percentile of 10 networks moves with
    the data order; of 50 or 100 it holds still)."""
    seeds = sorted(set(args.pool) | {args.seed})
    merged = [(group, merged_report(pooled_reports(folder, seeds, group, report))) for group, report in reports]
    bars = same_steps_bars(merged)
    rows = [pooled_row(group, report, bars.get((report["source"]["steps"], report["source"]["lr"])))
            for group, report in merged]
    write_table(os.path.join(root, "finetune_pooled"),
                f"Networks trained on for a few steps, pooled over the data orders (--seed) {' '.join(map(str, seeds))}"
                f" of {args.checkpoint_dir}; bar {reports[0][1]['new_bar']:.3f} (fresh set {args.fresh_dir}); "
                f"bar_same_steps: all the fresh checkpoints trained with the same steps and rate", list(rows[0]), rows)


def merged_report(found):
    """The reports of one group in several data orders as one: their networks' figures end to end."""
    per = [r["per_model"]["generated"] for r in found]
    joined = {k: [x for p in per for x in p[k]] for k in ("accuracy", "max_error_overlap")}
    return dict(source=found[0]["source"], min_acc=found[0]["min_acc"], new_bar=found[0]["new_bar"],
                seeds=[r["source"]["seed"] for r in found], per_model=dict(generated=joined))


def pooled_row(group, report, bar):
    acc = report["per_model"]["generated"]["accuracy"]
    return dict(models=group, seeds=" ".join(map(str, report["seeds"])), n=len(acc), acc_mean=statistics.mean(acc),
                acc_min=min(acc), above_min_acc=sum(a >= report["min_acc"] for a in acc) / len(acc),
                new=new_share(report, report["new_bar"]), new_same_steps="-" if bar is None else new_share(report, bar),
                bar_same_steps="-" if bar is None else bar,
                max_overlap=statistics.median(report["per_model"]["generated"]["max_error_overlap"]))


def pooled_reports(folder, seeds, group, report):
    """The report of `group` in each of `seeds` that has made it (this run's own included); each
    judged as this run's is, or the pool would mix bars."""
    found = []
    for seed in seeds:
        if seed == report["source"]["seed"]:
            found.append(report)
            continue
        path = os.path.join(seed_root(folder, seed), group_folder(group), "report.json")
        if not os.path.exists(path):
            continue
        other = cd.read_json(path, "finetune report")
        if other["judged_with"] != report["judged_with"]:
            raise cd.DatasetError(f"{path} was judged with {other['judged_with']}, not {report['judged_with']}: "
                                  f"rerun --seed {seed} with this run's --fresh_dir and --train_models first")
        if without_seed(other["source"]) != without_seed(report["source"]):
            raise cd.DatasetError(f"{path} was made from {other['source']['start_path']}, this run's {group!r} from "
                                  f"{report['source']['start_path']}: name the starts apart")
        found.append(other)
    return found


def without_seed(source):
    return {k: v for k, v in source.items() if k != "seed"}


def new_share(report, bar):
    """The share of a group's networks new by `bar` (and as accurate as the dataset's min_acc)."""
    g = report["per_model"]["generated"]
    new = [is_new(a, o, report["min_acc"], bar) for a, o in zip(g["accuracy"], g["max_error_overlap"])]
    return sum(new) / len(new)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fresh_dir", required=True, help="fresh-seed checkpoint dataset (evaluate_generated.py)")
    p.add_argument("--start", type=parse_start, action="append", default=[],
                   help="NAME=PATH: networks to train on, a generated.pt of this dataset or its folder (repeatable; "
                        "fresh init, training and fresh checkpoints are always there)")
    p.add_argument("--steps", type=count, nargs="+", default=[40, 100], help="SGD steps per network (default 40 100)")
    p.add_argument("--lr", type=positive, nargs="+", default=[0.05, 0.2],
                   help="peak learning rates of the compressed schedule for every start but fresh init, which takes "
                        "the recipe's (default 0.05 0.2)")
    p.add_argument("--noise", type=positive, nargs="+", default=[],
                   help="also train the training checkpoints plus Gaussian noise of each of these scales (times each "
                        "tensor's spread across the dataset, e.g. 0.25 0.5 1): the 'training weights + noise' control "
                        "of Zeng et al. (2025); default none")
    p.add_argument("--seed", type=int, default=0,
                   help="base seed of the data order of network i and of the --noise draw (default 0)")
    p.add_argument("--pool", type=int, nargs="+", default=[],
                   help="also pool each group with the same group made with these --seed values (those made so "
                        "far) and judge them by one bar from all their trained fresh checkpoints: "
                        "finetune_pooled.md/.json beside this order's finetune.md (default: no pooling)")
    common_flags(p, num_models=10, train_models=20)
    return p.parse_args(argv)


if __name__ == "__main__":
    run_main(main, parse_args)
