"""Experiment: networks between training runs. Are the points between two aligned runs accurate,
and are they new networks by the fresh-seed bar?

A generator that leaves its training modes has to put networks between runs; this measures
what is there, with no learned model. From the generator's training split, --num_models pairs
of checkpoints of two different runs are drawn, and each pair gives the network (1 - alpha) a +
alpha b (alpha from --alpha, default 0.5: the midpoint); with --runs_per_blend K > 2, K
checkpoints of K different runs give their plain mean, each aligned to the first (further from
every run than a midpoint). --match says how b's channels are aligned to a's: dataset
(default): as the VAE sees them, every run matched to one reference run by weight matching;
weights: b matched to a directly by weight matching; activations: by the correlation of the
channels' outputs on --match_images training images (alignment.py). Groups, each written as a
generated.pt and judged by evaluate_generated.py with --fresh_dir:
- aligned, BN interpolated: the BatchNorm running statistics interpolated with the weights;
- aligned, BN re-estimated: running statistics recomputed on --bn_images training images (the
  validation split and the test set are not used);
- unaligned, BN re-estimated: the same without weight matching (the control: why align);
- endpoints, BN re-estimated: the first checkpoint of each pair alone, statistics recomputed (so
  the effect of re-estimation is not read as one of interpolation);
- crossed layers, BN re-estimated: no mixing of numbers but of layers: the first round((1 -
  alpha) * 7) of TinyNN's seven layers (six conv blocks, the head) from a, the rest from b,
  aligned, statistics recomputed; what a generator that composes networks layer by layer would
  make from two runs;
- VAE latents, BN decoded (with --vae_path, a train_vae.py checkpoint of this dataset): the VAE
  decodes (1 - alpha) mu_a + alpha mu_b, its posterior means of the pair; BatchNorm statistics as
  decoded. Interpolation in latent space is what a sampler that mixes runs would do.
The groups unaligned, endpoints and VAE latents do not depend on --match and are made with the
default only. Writes, in checkpoints/NAME/midpoints/ (midpoints_weights/, midpoints_activations/
for the other --match): one folder per group (generated.pt, report), and midpoints.md/.json/.png
(table and accuracy/overlap scatter).

    python -m experiments.midpoints --checkpoint_dir Toy_CNN --fresh_dir Toy_CNN_fresh
    python -m experiments.midpoints --checkpoint_dir Toy_CNN --fresh_dir Toy_CNN_fresh --alpha 0.35 \
        --vae_path checkpoints/Toy_CNN/vae/vae.pt
    python -m experiments.midpoints --checkpoint_dir Toy_CNN --fresh_dir Toy_CNN_fresh --match activations
"""
import argparse
import os

import torch

from weightgen import checkpoint_dataset as cd
from weightgen.alignment import align_method
from weightgen.blending import blend_coefficients, checkpoint_pairs, interpolate, match_pairs, pair_weights, reestimate_bn
from weightgen.cifar10 import load_cifar10, standardize
from weightgen.cli import count, run_main
from experiments.common import (REPORT_COLUMNS, common_flags, judge, plot_overlap_scatter, report_rows,
                                save_group, write_table)
from weightgen.model_io import CheckpointError, made_with
from weightgen.generate import finish
from weightgen.tinynn import layer_slots
from vae_diffusion import encode
from vae_model import load_vae
from weightgen.weight_dataset import WeightDataset, training_images

GROUPS = ("aligned, BN interpolated", "aligned, BN re-estimated", "unaligned, BN re-estimated",
          "endpoints, BN re-estimated", "crossed layers, BN re-estimated")
MATCHED = ("aligned, BN interpolated", "aligned, BN re-estimated", "crossed layers, BN re-estimated")  # use --match
LATENT = "VAE latents, BN decoded"


def cross_layers(w, layout, coef):
    """Flat weights of each pair (w [pairs, k, numel]) whose L layers (layer_slots) come from its
    members in turn, member i's block ending at layer round(L * (coef_0 + ... + coef_i)); for a
    pair, the first round((1 - alpha) * L) layers from a and the others from b."""
    out = w[:, -1].clone()
    layers = layer_slots(layout)
    ends = [round(float(c) * len(layers)) for c in coef.cumsum(0)]
    for j, slots in enumerate(layers):
        member = next(i for i, end in enumerate(ends) if j < end)
        for s in slots:
            out[:, s.offset:s.offset + s.numel] = w[:, member, s.offset:s.offset + s.numel]
    return out


@torch.no_grad()
def latent_interpolate(vae, vae_std, ds, pairs, coef):
    """Flat weights the VAE decodes from sum_i coef_i mu_i, mu being its posterior means of each
    pair's checkpoints (in its own standardisation)."""
    mu = encode(vae, vae_std.standardize(pair_weights(ds, pairs).flatten(0, 1))).view(*pairs.shape, -1)
    p = next(vae.parameters())
    return vae_std.destandardize(vae.decode(interpolate(mu, coef).to(p.device, p.dtype)).cpu())


def load_aligned_vae(path, ds):
    """(VAE, its standardiser) from a train_vae.py checkpoint of aligned weights of ds's layout."""
    vae, vae_std, ckpt = load_vae(path, expect_layout=ds.layout)
    if align_method(ckpt["dataset"]["align"]) != ds.description["align"]:
        raise CheckpointError(f"{path} was trained with --align {align_method(ckpt['dataset']['align'])}; the "
                              f"pairs here are aligned by {ds.description['align']}")
    return vae, vae_std


def group_weights(folder, args):
    aligned, unaligned = WeightDataset(folder, align="weights"), WeightDataset(folder, align="none")
    pairs = checkpoint_pairs(aligned, args.num_models, args.seed, args.runs_per_blend)  # same rows in both: same split
    coef = blend_coefficients(args.runs_per_blend, args.alpha)
    data = load_cifar10(args.data_dir, download=not args.no_download)
    images = training_images(aligned.manifest, data, args.bn_images)
    if args.match == "dataset":
        w = pair_weights(aligned, pairs)
    else:
        w = match_pairs(pair_weights(unaligned, pairs), unaligned, args.match,
                        standardize(images[:args.match_images]))
    mid = interpolate(w, coef)
    finish(mid, aligned.layout)
    weights = dict(zip(MATCHED, [mid, reestimate_bn(mid, aligned, images),
                                 reestimate_bn(cross_layers(w, aligned.layout, coef), aligned, images)]))
    if args.match != "dataset":
        return aligned, weights
    weights["unaligned, BN re-estimated"] = reestimate_bn(interpolate(pair_weights(unaligned, pairs), coef),
                                                          unaligned, images)
    weights["endpoints, BN re-estimated"] = reestimate_bn(w[:, 0], aligned, images)
    if args.vae_path:
        decoded = latent_interpolate(*load_aligned_vae(args.vae_path, aligned), aligned, pairs, coef)
        finish(decoded, aligned.layout)
        weights[LATENT] = decoded
    return aligned, weights


def main(args):
    folder = cd.dataset_folder(args.checkpoint_dir)
    root = os.path.join(folder, "midpoints" + ("" if args.match == "dataset" else f"_{args.match}")
                        + ("" if args.runs_per_blend == 2 else f"_{args.runs_per_blend}runs"))
    groups = MATCHED if args.match != "dataset" else GROUPS + ((LATENT,) if args.vae_path else ())
    outs = {g: os.path.join(root, g.replace(", ", "_").replace(" ", "_").replace("-", "")) for g in groups}
    sources = {g: dict(experiment="midpoints", group=g, alpha=args.alpha, runs_per_blend=args.runs_per_blend,
                       pairs_seed=args.seed, bn_images=args.bn_images, vae_path=args.vae_path, match=args.match,
                       match_images=args.match_images if args.match == "activations" else None) for g in groups}
    stale = [g for g in groups if not made_with(outs[g], sources[g], args.num_models)]
    if stale:
        ds, weights = group_weights(folder, args)
        for group in stale:  # made with another --alpha, seed, ...: evaluated again
            save_group(weights[group], ds.layout, ds.tinynn_config, outs[group], sources[group], ds.description,
                       batchnorm=group.split(", ")[1])
    reports = []
    for group, out in outs.items():
        reports.append((group, judge(out, args, args.fresh_dir)))
    out = os.path.join(root, "midpoints")
    write_table(out, f"Networks between runs: alpha {args.alpha}, {args.num_models} blends of checkpoints of "
                f"{args.runs_per_blend} runs, matched by {args.match}; bar {reports[0][1]['new_bar']:.3f} "
                f"(fresh set {args.fresh_dir})",
                REPORT_COLUMNS, report_rows(args.checkpoint_dir, reports))
    plot_overlap_scatter({args.checkpoint_dir: reports}, out + ".png")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fresh_dir", required=True, help="fresh-seed checkpoint dataset (evaluate_generated.py)")
    p.add_argument("--alpha", type=float, default=0.5, help="where between the two runs (default 0.5, the midpoint; "
                                                             "crossed layers: the share of layers from the second)")
    p.add_argument("--runs_per_blend", type=count, default=2,
                   help="checkpoints of this many different runs in each network (default 2: pairs); above 2 a "
                        "blend is their plain mean (--alpha 0.5 only), crossed layers take a block of layers from "
                        "each in turn, and the groups go to midpoints*_Kruns/")
    p.add_argument("--bn_images", type=count, default=5000, help="training images for BatchNorm statistics "
                                                                "(default 5000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the pair draw (default 0)")
    p.add_argument("--match", choices=["dataset", "weights", "activations"], default="dataset",
                   help="how each pair's second run is aligned to its first: dataset (the VAE's alignment, every run "
                        "to one reference by weight matching; default), weights (pair by pair) or activations "
                        "(correlation of channel outputs)")
    p.add_argument("--match_images", type=count, default=1000,
                   help="training images whose activations are matched (--match activations; default 1000)")
    p.add_argument("--vae_path", default=None,
                   help="a train_vae.py checkpoint (vae.pt) of this dataset: adds the group of its decoded latent "
                        "interpolations (default: none)")
    common_flags(p)
    args = p.parse_args(argv)
    if args.runs_per_blend < 2 or (args.runs_per_blend > 2 and args.alpha != 0.5):
        p.error("--runs_per_blend must be 2 or more, and above 2 the blend is the plain mean: leave --alpha at 0.5")
    if args.vae_path and args.match != "dataset":
        p.error("--vae_path interpolates in the VAE's latent space, which has the dataset's alignment: use "
                "--match dataset")
    return args


if __name__ == "__main__":
    run_main(main, parse_args)
