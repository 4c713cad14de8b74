"""Generate new TinyNNs without a learned model: blends of aligned training runs, trained on.

Network i is the plain mean of checkpoints of --runs_per_blend different training runs, drawn
at random from the dataset's generator split (the checkpoints a VAE would learn from), each
member's channels matched to the first member's (--match: by the correlation of their outputs on
--match_images training images, or by weights), with BatchNorm running statistics recomputed on
--bn_images training images. It is then trained --steps SGD steps with the dataset's own recipe
compressed to those steps (warm-up and decay in proportion) at peak rate --lr, in a data order of
its own that no run of the dataset used. Only training images are read: never the validation
images or the test set.

Why: a blend of runs is a network no run made, but it loses accuracy (a midpoint of two runs 10.6
points at the default width); the steps give the accuracy back and leave its mistakes further
from every run than a training checkpoint trained the same way. On R20x3 (20 runs x 3 checkpoints
of the short recipe, runs of 386 steps), 100 three-run blends trained 200 steps at lr 0.4 score
0.700 against the checkpoints' 0.680 and ensemble to 0.740 against the 20 runs' 0.722; their
mistakes sit on the bar of fresh runs trained the same way: 30 of 100 pass it (45-64% on an
earlier build of the same dataset). The steps alone take a training checkpoint as far in
accuracy, and at twice TinyNN's width or the seed's 18-epoch recipe almost no trained blend is
new (README, section 5).

    python sample_blends.py --checkpoint_dir R20x3 --num_models 100
    python evaluate_generated.py --model_path checkpoints/R20x3/blends/runs3_steps200_lr0.4_seed0 --fresh_dir R20Fresh

Output (--out, default checkpoints/NAME/blends/runsK_stepsS_lrLR_seedSEED/): model_000.pt, ...
and generated.pt, as sample.py writes them; its source records the settings and, for every
network, the checkpoints (run, row) it was blended from. --steps 0 writes the blends untrained
(e.g. as a --start of experiments.finetune, which judges them against fresh runs trained the same
way). Each network is saved in partial/ as soon as it is trained: an interrupted run goes on from
there with the same command.
"""
import argparse
import glob
import os
import shutil
import statistics
import sys

import torch
from tqdm import tqdm

import checkpoint_dataset as cd
from blending import blend_coefficients, checkpoint_pairs, interpolate, match_pairs, pair_weights, reestimate_bn
from cifar10 import held_out_split, load_cifar10, standardize
from cli import add_runtime_flags, run_main
from model_io import atomic_write, made_with, pick_device, save_generated
from tinynn import clamp_running_var
from tinynn_training import budget_config, dataset_recipe, evaluate_flat, train_flat, train_on_seeds
from weight_dataset import WeightDataset, training_images


def settings_of(args):
    """What every network depends on, apart from its index and members."""
    return dict(generator="sample_blends.py", runs_per_blend=args.runs_per_blend, match=args.match,
                match_images=args.match_images, bn_images=args.bn_images, steps=args.steps, lr=args.lr, seed=args.seed)


def out_folder(args, folder):
    return args.out or os.path.join(folder, "blends", f"runs{args.runs_per_blend}_steps{args.steps}_lr{args.lr:g}_"
                                                      f"seed{args.seed}")


def members_of(ds, pairs):
    """[[run, row], ...] of each blend: which checkpoint of which run it was made from."""
    return [[[ds.train_records[r]["run"], ds.train_records[r]["row"]] for r in rows.tolist()] for rows in pairs]


def blend(ds, rows, args, images, match_images):
    """The flat weights [1, n_params] of one blend: the checkpoints `rows` of ds.train matched to the
    first on `match_images` (standardised), averaged, BatchNorm statistics recomputed on `images`
    (uint8 training images)."""
    w = match_pairs(pair_weights(ds, rows[None]), ds, args.match, match_images)
    mean = interpolate(w, blend_coefficients(args.runs_per_blend, 0.5))
    clamp_running_var(mean, ds.layout)
    return reestimate_bn(mean, ds, images)


def saved_network(path, expected):
    """The weights in partial/net_I.pt if they were made with `expected` (settings and members)."""
    if not os.path.exists(path):
        return None
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # damaged (a full disk, a copy cut short): trained again, not fatal
        return None
    return saved["weights"] if isinstance(saved, dict) and saved.get("made_with") == expected else None


def train_blends(ds, pairs, data, args, device):
    """[num_models, n_params]: every blend trained --steps steps on the training images of `data`,
    each saved in partial/ when done (and taken from there when a run is continued)."""
    images = training_images(ds.manifest, data, args.bn_images)
    match_images = standardize(images[:args.match_images])  # once, not once a blend
    recipe, x, y, _ = dataset_recipe(ds.manifest, data)
    cfg = budget_config(recipe, args.steps, len(y) // recipe.batch_size, args.lr)
    x, y = x.to(device), y.to(device)  # once, not once a network
    seeds, members, settings = train_on_seeds(args.seed, len(pairs)), members_of(ds, pairs), settings_of(args)
    partial = os.path.join(args.out, "partial")
    os.makedirs(partial, exist_ok=True)
    out = []
    for i in tqdm(range(len(pairs)), desc="blends", unit="net", disable=args.quiet):
        path, expected = os.path.join(partial, f"net_{i:05d}.pt"), dict(settings, members=members[i])
        w = saved_network(path, expected)
        if w is None:
            w = blend(ds, pairs[i], args, images, match_images)
            if args.steps:
                w = train_flat(w, seeds[i:i + 1], ds.layout, ds.tinynn_config, x, y, cfg, args.steps, device)
            atomic_write(path, lambda tmp: torch.save(dict(made_with=expected, weights=w.cpu()), tmp))
        out.append(w.cpu())
    return torch.cat(out)


def validation_summary(weights, ds, data):
    """One line: the networks' accuracy on the images the dataset held out of TinyNN training."""
    split = ds.manifest["data"]
    _, (x, y) = held_out_split(data, split["val_size"], split["val_seed"], split["train_size"])
    acc = evaluate_flat(weights, ds.layout, ds.tinynn_config, x, y)
    min_acc = ds.manifest["selection"]["min_acc"]
    return (f"validation accuracy ({len(y)} images held out of TinyNN training): mean {statistics.mean(acc):.4f}, "
            f"min {min(acc):.4f}, {sum(a >= min_acc for a in acc) / len(acc):.0%} >= min_acc {min_acc:g}")


def main(args):
    folder = cd.dataset_folder(args.checkpoint_dir)
    ds = WeightDataset(folder, align="none", data_dir=args.data_dir)  # each blend is matched to its first member
    if cd.replayed_seeds(train_on_seeds(args.seed, args.num_models), folder):
        raise cd.DatasetError(f"--seed {args.seed} gives a seed of a run of {args.checkpoint_dir}: pick another")
    pairs = checkpoint_pairs(ds, args.num_models, args.seed, args.runs_per_blend)
    args.out = out_folder(args, folder)
    source = dict(settings_of(args), members=members_of(ds, pairs))
    if made_with(args.out, source, args.num_models):
        print(f"{args.out} already holds these {args.num_models} networks")
        return
    device, data = pick_device(args.device), load_cifar10(args.data_dir, download=not args.no_download)
    training = f"trained {args.steps} steps at lr {args.lr:g}" if args.steps else "untrained"
    print(f"{args.num_models} blends of {args.runs_per_blend} runs of {folder} (matched by {args.match}), {training}, "
          f"on {device}")
    try:
        weights = train_blends(ds, pairs, data, args, device)
    except KeyboardInterrupt:
        done = len(glob.glob(os.path.join(args.out, "partial", "net_*.pt")))
        print(f"\ninterrupted: {done} networks are saved in {args.out}/partial; run the same command to continue")
        sys.exit(130)
    save_generated(weights, ds.layout, ds.tinynn_config, args.out, source, ds.description,
                   batchnorm="trained" if args.steps else "re-estimated on training images")
    shutil.rmtree(os.path.join(args.out, "partial"))  # every network is in generated.pt now
    print(validation_summary(weights, ds, data))
    print(f"wrote {args.num_models} networks to {args.out}")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint_dir", required=True, help="checkpoint dataset (name under checkpoints/, or a path)")
    p.add_argument("--num_models", type=int, default=100, help="networks to generate (default 100)")
    p.add_argument("--runs_per_blend", type=int, default=3,
                   help="checkpoints of this many different runs averaged in each network (default 3: on R20x3 "
                        "newer than two for half a point of accuracy; five lose more and are no newer)")
    p.add_argument("--steps", type=int, default=200,
                   help="SGD steps each blend is trained (default 200: about half a run of the short recipe of the "
                        "quickstart and R20x3, 386 steps; 0: untrained blends)")
    p.add_argument("--lr", type=float, default=0.4,
                   help="peak learning rate of the compressed schedule (default 0.4, twice the recipe's: at 0.2 "
                        "the blends fall back towards their runs)")
    p.add_argument("--match", choices=["activations", "weights"], default="activations",
                   help="how each member's channels are matched to the first member's: activations (correlation "
                        "of channel outputs; default: its blends lose half as much) or weights (weight matching)")
    p.add_argument("--match_images", type=int, default=1000,
                   help="training images whose activations are matched (default 1000)")
    p.add_argument("--bn_images", type=int, default=5000,
                   help="training images that BatchNorm statistics are recomputed on (default 5000)")
    p.add_argument("--out", default=None,
                   help="output folder (default checkpoints/NAME/blends/runsK_stepsS_lrLR_seedSEED/)")
    add_runtime_flags(p, seed_help="draws the blends' members and every network's data order (default 0)")
    args = p.parse_args(argv)
    if args.num_models < 1 or args.runs_per_blend < 2 or args.steps < 0 or args.lr <= 0:
        p.error("--num_models must be >= 1, --runs_per_blend >= 2, --steps >= 0 and --lr > 0")
    return args


if __name__ == "__main__":
    run_main(main, parse_args)
