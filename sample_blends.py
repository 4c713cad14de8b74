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
mistakes sit on the bar of fresh runs trained the same way: 30 of 100 pass it. --oversample 3
trains three candidates a network and keeps the third whose mistakes on 10,000 training images
overlap least with a training checkpoint's: 58 of 100 then pass, as accurate (README, section 5).
The steps alone take a training checkpoint as far in accuracy, and at twice TinyNN's width or the
seed's 18-epoch recipe almost no trained blend is new.

    python sample_blends.py --checkpoint_dir R20x3 --num_models 100
    python evaluate_generated.py --model_path checkpoints/R20x3/blends/runs3_steps200_lr0.4_seed0/newest_of3 \\
        --fresh_dir R20Fresh --train_models 20 --baseline_models 0 --bar_from FOLDER_OF_TRAINED_FRESH_CHECKPOINTS

(the fair bar for networks trained on: fresh checkpoints trained the same way, made by
experiments.finetune; README, section 5).

With --oversample K, K x --num_models candidates are trained and judged on --check_images
training images (never the validation images or the test set): each one's largest Jaccard
overlap between the images it gets wrong and those one checkpoint of the generator split gets
wrong, the test set's novelty measure; the --num_models of lowest overlap among those at least
as accurate there as the dataset's min_acc are kept. Training images, because there the overlap
follows the test set's (correlation 0.6-0.7 over 150 trained blends of R20x3) and the 2,000
validation images are too few (0.3-0.6); the untrained blend's overlap says nothing of the
trained one's (0.14), so the check comes after the steps, and costs K times the training.

Output (--out, default checkpoints/NAME/blends/runsK_stepsS_lrLR_seedSEED/, and its subfolder
newest_ofK/ for --oversample K > 1): model_000.pt, ... and generated.pt, as sample.py writes them;
its source records the settings, for every network the checkpoints (run, row) it was blended
from and its index among the candidates, and the check's figures of every candidate. --steps 0
--oversample 1 writes the blends untrained (e.g. as a --start of experiments.finetune, which
judges them against fresh runs trained the same way). Each candidate is saved in candidates/ (220 KB each) as soon
as it is trained: an interrupted run goes on from there with the same command, and a later run
of the same settings (another --oversample, more networks) trains only what is missing.
"""
import argparse
import glob
import os
import statistics
import sys

import torch
from tqdm import tqdm

import checkpoint_dataset as cd
from blending import blend_coefficients, checkpoint_pairs, interpolate, match_pairs, pair_weights, reestimate_bn
from cifar10 import held_out_split, load_cifar10, standardize
from cli import add_runtime_flags, run_main
from baselines import max_error_overlap
from model_io import GENERATED_KIND, keep_result, kept_result, load_checkpoint, pick_device, save_generated
from tinynn import clamp_running_var
from tinynn_training import TRAIN_ON_DEFAULTS, budget_config, dataset_recipe, evaluate_flat, probabilities_flat, train_flat, train_on_seeds
from weight_dataset import WeightDataset, training_images


def settings_of(args):
    """What every network depends on, apart from its index and members."""
    return dict(generator="sample_blends.py", runs_per_blend=args.runs_per_blend, match=args.match,
                match_images=args.match_images, bn_images=args.bn_images, steps=args.steps, lr=args.lr, seed=args.seed)


def blends_folder(args, folder):
    """The folder of these settings: candidates/ (every trained blend) and the --oversample 1
    result; the result of --oversample K > 1 in its subfolder newest_ofK/."""
    return args.out or os.path.join(folder, "blends", f"runs{args.runs_per_blend}_steps{args.steps}_lr{args.lr:g}_"
                                                      f"seed{args.seed}")


def result_folder(args, folder):
    base = blends_folder(args, folder)
    return base if args.oversample == 1 else os.path.join(base, f"newest_of{args.oversample}")


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


def train_blends(ds, pairs, data, args, device):
    """[candidates, n_params]: every blend trained --steps steps on the training images of `data`,
    each saved in candidates/ when done (and taken from there when a run is continued, or by a
    later run of the same settings with another --oversample or more networks)."""
    images = training_images(ds.manifest, data, args.bn_images)
    match_images = standardize(images[:args.match_images])  # once, not once a blend
    recipe, x, y, _ = dataset_recipe(ds.manifest, data)
    cfg = budget_config(recipe, args.steps, len(y) // recipe.batch_size, args.lr)
    x, y = x.to(device), y.to(device)  # once, not once a network
    seeds, members, settings = train_on_seeds(args.seed, len(pairs)), members_of(ds, pairs), settings_of(args)
    os.makedirs(args.candidates, exist_ok=True)
    out = []
    for i in tqdm(range(len(pairs)), desc="blends", unit="net", disable=args.quiet):
        path, expected = os.path.join(args.candidates, f"net_{i:05d}.pt"), dict(settings, members=members[i])
        saved = kept_result(path, expected)
        if saved:
            w = saved["weights"]
        else:
            w = blend(ds, pairs[i], args, images, match_images)
            if args.steps:
                w = train_flat(w, seeds[i:i + 1], ds.layout, ds.tinynn_config, x, y, cfg, args.steps, device)
            keep_result(path, expected, weights=w.cpu())
        out.append(w.cpu())
    return torch.cat(out)


def check_overlaps(weights, ds, data, n_images, device, quiet=False):
    """(accuracy, max error overlap) of each network on the first n_images training images: the
    overlap is the largest Jaccard overlap between the images it gets wrong and those one
    checkpoint of the generator split gets wrong (the test set's novelty measure, on images the
    generator may read)."""
    _, x, y, _ = dataset_recipe(ds.manifest, data)
    x, y = x[:n_images], y[:n_images]

    def wrong(w, desc):
        with tqdm(total=len(w), desc=desc, unit="net", leave=False, disable=quiet) as bar:
            probs = probabilities_flat(w, ds.layout, ds.tinynn_config, x, device, progress=bar.update)
        return probs.argmax(-1) != y

    reference = wrong(ds.standardizer.destandardize(ds.train), "check: training checkpoints")
    candidates = wrong(weights, "check: candidates")
    return 1 - candidates.float().mean(1), max_error_overlap(candidates, reference)


def keep_newest(overlaps, accurate, n):
    """The indices (ascending) of the n candidates of lowest check overlap, accurate ones first (a
    broken network makes other mistakes than every checkpoint: low overlap, nothing new)."""
    order = sorted(range(len(overlaps)), key=lambda i: (not accurate[i], overlaps[i].item()))
    return sorted(order[:n])


def validation_summary(weights, ds, data):
    """One line: the networks' accuracy on the images the dataset held out of TinyNN training."""
    split = ds.manifest["data"]
    _, (x, y) = held_out_split(data, split["val_size"], split["val_seed"], split["train_size"])
    acc = evaluate_flat(weights, ds.layout, ds.tinynn_config, x, y)
    min_acc = ds.manifest["selection"]["min_acc"]
    return (f"validation accuracy ({len(y)} images held out of TinyNN training): mean {statistics.mean(acc):.4f}, "
            f"min {min(acc):.4f}, {sum(a >= min_acc for a in acc) / len(acc):.0%} >= min_acc {min_acc:g}")


def result_settings(args, n):
    """What the result depends on besides the members (which the dataset, the seed and the number
    of candidates n fix)."""
    return dict(settings_of(args), oversample=args.oversample,
                check_images=args.check_images if args.oversample > 1 else 0, candidates=n)


def finished(out, settings, members, n):
    """Whether `out` holds n networks made with these settings from these candidates' members."""
    path = os.path.join(out, "generated.pt")
    if not os.path.exists(path):
        return False
    source = load_checkpoint(path, GENERATED_KIND)["source"]
    return ({k: source.get(k) for k in settings} == settings and len(source.get("kept", ())) == n
            and source["members"] == [members[i] for i in source["kept"]])


def rounded(values):
    return [round(v, 6) for v in values.tolist()]


def check_summary(accuracy, overlaps, kept, min_acc, n_images):
    rejected = len(overlaps) - len(kept)
    return (f"novelty check ({n_images} training images): kept {len(kept)} of {len(overlaps)} candidates "
            f"(rejected {rejected}, {rejected / len(overlaps):.0%}; {int((accuracy < min_acc).sum())} below min_acc "
            f"{min_acc:g}): max error overlap with a training checkpoint {overlaps[kept].median().item():.4f} median, "
            f"{overlaps[kept].max().item():.4f} at most (all candidates: median {overlaps.median().item():.4f})")


def main(args):
    folder = cd.dataset_folder(args.checkpoint_dir)
    ds = WeightDataset(folder, align="none", data_dir=args.data_dir)  # each blend is matched to its first member
    n = args.num_models * args.oversample
    if cd.replayed_seeds(train_on_seeds(args.seed, n), folder):
        raise cd.DatasetError(f"--seed {args.seed} gives a seed of a run of {args.checkpoint_dir}: pick another")
    pairs = checkpoint_pairs(ds, n, args.seed, args.runs_per_blend)
    members, out = members_of(ds, pairs), result_folder(args, folder)
    args.candidates = os.path.join(blends_folder(args, folder), "candidates")
    if finished(out, result_settings(args, n), members, args.num_models):
        print(f"{out} already holds these {args.num_models} networks")
        return
    device, data = pick_device(args.device), load_cifar10(args.data_dir, download=not args.no_download)
    training = f"trained {args.steps} steps at lr {args.lr:g}" if args.steps else "untrained"
    print(f"{n} blends of {args.runs_per_blend} runs of {folder} (matched by {args.match}), {training}, on {device}")
    try:
        weights = train_blends(ds, pairs, data, args, device)
    except KeyboardInterrupt:
        done = len(glob.glob(os.path.join(args.candidates, "net_*.pt")))
        print(f"\ninterrupted: {done} networks are saved in {args.candidates}; run the same command to continue")
        sys.exit(130)
    kept, check = list(range(n)), {}
    if args.oversample > 1:
        accuracy, overlaps = check_overlaps(weights, ds, data, args.check_images, device, args.quiet)
        min_acc = ds.manifest["selection"]["min_acc"]
        kept = keep_newest(overlaps, accuracy >= min_acc, args.num_models)
        check = dict(check_accuracy=rounded(accuracy), check_overlaps=rounded(overlaps))
        print(check_summary(accuracy, overlaps, kept, min_acc, args.check_images))
    source = dict(result_settings(args, n), members=[members[i] for i in kept], kept=kept, **check)
    save_generated(weights[kept], ds.layout, ds.tinynn_config, out, source, ds.description,
                   batchnorm="trained" if args.steps else "re-estimated on training images")
    print(validation_summary(weights[kept], ds, data))
    print(f"wrote {args.num_models} networks to {out} (every candidate stays in {args.candidates})")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint_dir", required=True, help="checkpoint dataset (name under checkpoints/, or a path)")
    p.add_argument("--num_models", type=int, default=100, help="networks to generate (default 100)")
    p.add_argument("--runs_per_blend", type=int, default=3,
                   help="checkpoints of this many different runs averaged in each network (default 3: on R20x3 "
                        "newer than two for half a point of accuracy; five lose more and are no newer)")
    p.add_argument("--steps", type=int, default=TRAIN_ON_DEFAULTS["steps"],
                   help=f"SGD steps each blend is trained (default {TRAIN_ON_DEFAULTS['steps']}: about half a run of the short recipe of the "
                        "quickstart and R20x3, 386 steps; 0: untrained blends)")
    p.add_argument("--lr", type=float, default=TRAIN_ON_DEFAULTS["lr"],
                   help=f"peak learning rate of the compressed schedule (default {TRAIN_ON_DEFAULTS['lr']:g}, twice the recipe's: at 0.2 "
                        "the blends fall back towards their runs)")
    p.add_argument("--match", choices=["activations", "weights"], default="activations",
                   help="how each member's channels are matched to the first member's: activations (correlation "
                        "of channel outputs; default: its blends lose half as much) or weights (weight matching)")
    p.add_argument("--match_images", type=int, default=1000,
                   help="training images whose activations are matched (default 1000)")
    p.add_argument("--bn_images", type=int, default=5000,
                   help="training images that BatchNorm statistics are recomputed on (default 5000)")
    p.add_argument("--oversample", type=int, default=3,
                   help="train K candidates for every network asked for and keep the --num_models whose mistakes "
                        "on --check_images training images overlap least with those of any training checkpoint, "
                        "among those as accurate there as the dataset's min_acc (default 3: on R20x3 58-76%% of "
                        "the kept networks pass the bar of fresh runs trained the same way, against 30-32%% of all "
                        "candidates, as accurate; 1: keep all, no check, a third of the time)")
    p.add_argument("--check_images", type=int, default=10000,
                   help="training images of the novelty check (default 10000)")
    p.add_argument("--out", default=None,
                   help="output folder (default checkpoints/NAME/blends/runsK_stepsS_lrLR_seedSEED/): it holds "
                        "candidates/ (every trained candidate) and, for --oversample K > 1, the result in "
                        "newest_ofK/")
    add_runtime_flags(p, seed_help="draws the blends' members and every network's data order (default 0)")
    args = p.parse_args(argv)
    if args.num_models < 1 or args.runs_per_blend < 2 or args.steps < 0 or args.lr <= 0:
        p.error("--num_models must be >= 1, --runs_per_blend >= 2, --steps >= 0 and --lr > 0")
    if args.oversample < 1 or args.check_images < 1:
        p.error("--oversample and --check_images must be >= 1")
    if args.steps == 0 and args.oversample > 1:  # untrained blends: for experiments.finetune, which trains them
        p.error("--steps 0 needs --oversample 1: the check reads trained networks (an untrained blend's overlap "
                "says nothing of its overlap once trained)")
    return args


if __name__ == "__main__":
    run_main(main, parse_args)
