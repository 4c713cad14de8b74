"""Generate new TinyNNs without a learned model: blends of aligned training runs, trained on.

Network i is the plain mean of checkpoints of --runs_per_blend different training runs, drawn
at random from the dataset's generator split (the checkpoints a VAE would learn from), each
member's channels matched to the first member's (--match: by the correlation of their outputs on
--match_images training images, or by weights), with BatchNorm running statistics recomputed on
--bn_images training images. It then goes the way of every generator here (weightgen/generate.py):
trained --steps SGD steps with the dataset's own recipe compressed to those steps at peak rate
--lr, in a data order of its own that no run of the dataset used; with --oversample K, K
candidates a network are trained and the --num_models least like a training checkpoint kept
(their mistakes on --check_images training images; accurate ones first). Only training images are
read: never the validation images or the test set.

Why: a blend of runs is a network no run made, but it loses accuracy; the steps give it back and
leave its mistakes further from every run than a training checkpoint trained the same way
(RESULTS.md, "Blends of runs"). The fair bar for networks trained on is fresh runs trained the
same way: --fresh_dir F trains F's last checkpoints so, into OUT_fresh_trained/.

    python sample_blends.py --checkpoint_dir R20x3 --num_models 100 --fresh_dir R20Fresh
    python evaluate_generated.py --model_path checkpoints/R20x3/blends/runs3_steps200_lr0.4_seed0/newest_of3 \\
        --fresh_dir R20Fresh --bar_from checkpoints/R20x3/blends/runs3_steps200_lr0.4_seed0/newest_of3_fresh_trained

Output (--out, default checkpoints/NAME/blends/runsK_stepsS_lrLR_seedSEED/, and its subfolder
newest_ofK/ for --oversample K > 1): model_000.pt, ... and generated.pt, as sample.py writes them;
its source records the settings, for every network the checkpoints (run, row) it was blended
from and its index among the candidates, and the check's figures of every candidate. --steps 0
--oversample 1 writes the blends untrained (e.g. as a --start of experiments.finetune). Each
candidate is saved in candidates/ as soon as it is trained: an interrupted run goes on from there
with the same command, and a later run of the same settings (another --oversample, more networks)
trains only what is missing.
"""
import argparse
import glob
import os
import sys

import torch

from weightgen import checkpoint_dataset as cd
from weightgen import generate
from weightgen.blending import blend_coefficients, checkpoint_pairs, interpolate, match_pairs, pair_weights, reestimate_bn
from weightgen.cifar10 import load_cifar10, standardize
from weightgen.cli import add_generate_flags, add_runtime_flags, count, run_main
from weightgen.model_io import GENERATED_KIND, load_checkpoint, pick_device
from weightgen.tinynn_training import TRAIN_ON_DEFAULTS
from weightgen.weight_dataset import WeightDataset, training_images


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
    generate.finish(mean, ds.layout)
    return reestimate_bn(mean, ds, images)


def make_blends(ds, pairs, members, data, args, device):
    """[candidates, n_params]: every blend, trained on as --steps, --lr and --seed say (each kept
    in candidates/ by generate.train_on, known by its members and the blending settings)."""
    images = training_images(ds.manifest, data, args.bn_images)
    match_images = standardize(images[:args.match_images])  # once, not once a blend
    start = lambda i: blend(ds, pairs[i], args, images, match_images)
    if not args.steps:
        return torch.cat([start(i) for i in range(len(pairs))])
    blending = {k: v for k, v in settings_of(args).items() if k not in ("steps", "lr", "seed")}
    keys = [dict(blending, members=m) for m in members]
    return generate.train_on(start, keys, ds.manifest, data, train_how(args), args.candidates, device, args.quiet,
                             desc="blends")


def train_how(args):
    return generate.TrainOn(args.steps, args.lr, args.seed)


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


def main(args):
    folder = cd.dataset_folder(args.checkpoint_dir)
    ds = WeightDataset(folder, align="none", data_dir=args.data_dir)  # each blend is matched to its first member
    n = args.num_models * args.oversample
    generate.refuse_replayed_seeds(train_how(args), n, folder)
    pairs = checkpoint_pairs(ds, n, args.seed, args.runs_per_blend)
    members, out = members_of(ds, pairs), result_folder(args, folder)
    args.candidates = os.path.join(blends_folder(args, folder), "candidates")
    done = finished(out, result_settings(args, n), members, args.num_models)
    if done and not args.fresh_dir:
        print(f"{out} already holds these {args.num_models} networks")
        return
    overwrite = args.overwrite or args.out is None  # the default folder is these settings' own
    if not done:
        generate.refuse_used(out, overwrite)
    device, data = pick_device(args.device), load_cifar10(args.data_dir, download=not args.no_download)
    try:
        if args.fresh_dir:
            generate.trained_fresh(ds, args.fresh_dir, args.num_models, data, train_how(args),
                                   os.path.join(blends_folder(args, folder), "fresh_candidates"),
                                   out + "_fresh_trained", device, args.quiet)
            print(f"the fair bar for them: {out}_fresh_trained (evaluate_generated.py --bar_from)")
        if not done:
            make_and_save(ds, pairs, members, out, n, data, overwrite, args, device)
    except KeyboardInterrupt:
        saved = len(glob.glob(os.path.join(args.candidates, "net_*.pt")))
        print(f"\ninterrupted: {saved} networks are saved in {args.candidates}; run the same command to continue")
        sys.exit(130)


def make_and_save(ds, pairs, members, out, n, data, overwrite, args, device):
    """Every candidate made (and trained), the --num_models kept (--oversample), written to `out`."""
    training = f"trained {args.steps} steps at lr {args.lr:g}" if args.steps else "untrained"
    print(f"{n} blends of {args.runs_per_blend} runs of {ds.folder} (matched by {args.match}), {training}, "
          f"on {device}")
    weights = make_blends(ds, pairs, members, data, args, device)
    kept, check = list(range(n)), {}
    if args.oversample > 1:
        kept, check = generate.select(weights, ds, data, args.num_models, args.check_images, device, args.quiet)
        check.pop("check_images")  # result_settings has it
    source = dict(result_settings(args, n), members=[members[i] for i in kept], kept=kept, **check)
    generate.save(weights[kept], ds.layout, ds.tinynn_config, out, source, ds.description,
                  batchnorm="trained" if args.steps else "re-estimated on training images", overwrite=overwrite)
    print(generate.validation_summary(weights[kept], ds.layout, ds.manifest, data))
    print(f"wrote {args.num_models} networks to {out} (every candidate stays in {args.candidates})")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint_dir", required=True, help="checkpoint dataset (name under checkpoints/, or a path)")
    p.add_argument("--num_models", type=count, default=100, help="networks to generate (default 100)")
    p.add_argument("--runs_per_blend", type=count, default=3,
                   help="checkpoints of this many different runs averaged in each network (default 3)")
    p.add_argument("--match", choices=["activations", "weights"], default="activations",
                   help="how each member's channels are matched to the first member's: activations (correlation "
                        "of channel outputs; default) or weights (weight matching)")
    p.add_argument("--match_images", type=count, default=1000,
                   help="training images whose activations are matched (default 1000)")
    p.add_argument("--bn_images", type=count, default=5000,
                   help="training images that BatchNorm statistics are recomputed on (default 5000)")
    add_generate_flags(p, "--steps", TRAIN_ON_DEFAULTS["steps"], "--lr", default_oversample=3)
    p.add_argument("--out", default=None,
                   help="output folder (default checkpoints/NAME/blends/runsK_stepsS_lrLR_seedSEED/): it holds "
                        "candidates/ (every trained candidate) and, for --oversample K > 1, the result in "
                        "newest_ofK/")
    add_runtime_flags(p, seed_help="draws the blends' members and every network's data order (default 0)")
    args = p.parse_args(argv)
    if args.runs_per_blend < 2:
        p.error("--runs_per_blend must be at least 2: a blend is of several runs")
    if args.steps == 0 and args.oversample > 1:  # untrained blends: for experiments.finetune, which trains them
        p.error("--steps 0 needs --oversample 1: the check reads trained networks (an untrained blend's overlap "
                "says nothing of its overlap once trained)")
    if args.steps == 0 and args.fresh_dir:
        p.error("--fresh_dir trains fresh checkpoints as the blends are trained: it needs --steps")
    return args


if __name__ == "__main__":
    run_main(main, parse_args)
