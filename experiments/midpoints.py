"""Experiment: networks between training runs. Are the points between two aligned runs accurate,
and are they new networks by the fresh-seed bar?

A generator that leaves its training modes has to put networks between runs; this measures
what is there, with no learned model. From the generator's training split (WeightDataset: runs
aligned by weight matching, as the VAE sees them), --num_models pairs of checkpoints of two
different runs are drawn, and each pair gives the network (1 - alpha) a + alpha b (alpha from
--alpha, default 0.5: the midpoint). Groups, each written as a generated.pt and judged by
evaluate_generated.py with --fresh_dir:
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
Writes, in checkpoints/NAME/midpoints/: one folder per group (generated.pt, report), and
midpoints.md/.json/.png (table and accuracy/overlap scatter).

    python -m experiments.midpoints --checkpoint_dir Toy_CNN --fresh_dir Toy_CNN_fresh
    python -m experiments.midpoints --checkpoint_dir Toy_CNN --fresh_dir Toy_CNN_fresh --alpha 0.35 \
        --vae_path checkpoints/Toy_CNN/vae/vae.pt
"""
import argparse
import json
import os

import torch

import checkpoint_dataset as cd
from cifar10 import load_cifar10, split_validation, standardize
from cli import run_main, run_step, runtime_argv
from experiments.common import REPORT_COLUMNS, common_flags, plot_overlap_scatter, report_rows, write_table
from model_io import GENERATED_KIND, CheckpointError, load_checkpoint, save_generated
from tinynn import clamp_running_var, layer_slots, model_from_flat
from vae_diffusion import encode
from vae_model import load_vae
from weight_dataset import WeightDataset

GROUPS = ("aligned, BN interpolated", "aligned, BN re-estimated", "unaligned, BN re-estimated",
          "endpoints, BN re-estimated", "crossed layers, BN re-estimated")
LATENT = "VAE latents, BN decoded"


def checkpoint_pairs(ds, n, seed):
    """n (row a, row b) pairs of ds.train checkpoints from two different runs."""
    runs = torch.tensor([r["run"] for r in ds.train_records])
    gen = torch.Generator().manual_seed(seed)
    pairs = []
    while len(pairs) < n:
        a, b = torch.randint(len(runs), (2,), generator=gen).tolist()
        if runs[a] != runs[b]:
            pairs.append((a, b))
    return torch.tensor(pairs)


def pair_weights(ds, pairs):
    """[pairs, 2, numel]: each pair's two checkpoints in weight units (only their rows of ds.train)."""
    return ds.standardizer.destandardize(ds.train[pairs.flatten()]).view(len(pairs), 2, -1)


def interpolate(ds, pairs, alpha):
    """Flat weights (1 - alpha) a + alpha b of each pair, in weight units."""
    w = pair_weights(ds, pairs)
    return (1 - alpha) * w[:, 0] + alpha * w[:, 1]


def cross_layers(ds, pairs, alpha):
    """Flat weights of each pair's first round((1 - alpha) * L) layers from a and the others from
    b (L layers: layer_slots), in weight units."""
    w = pair_weights(ds, pairs)
    out = w[:, 1].clone()
    layers = layer_slots(ds.layout)
    for slots in layers[:round((1 - alpha) * len(layers))]:
        for s in slots:
            out[:, s.offset:s.offset + s.numel] = w[:, 0, s.offset:s.offset + s.numel]
    return out


@torch.no_grad()
def latent_interpolate(vae, vae_std, ds, pairs, alpha):
    """Flat weights the VAE decodes from (1 - alpha) mu_a + alpha mu_b, mu being its posterior
    means of each pair's checkpoints (in its own standardisation)."""
    mu = encode(vae, vae_std.standardize(pair_weights(ds, pairs).flatten(0, 1))).view(len(pairs), 2, -1)
    p = next(vae.parameters())
    z = (1 - alpha) * mu[:, 0] + alpha * mu[:, 1]
    return vae_std.destandardize(vae.decode(z.to(p.device, p.dtype)).cpu())


def load_aligned_vae(path, ds):
    """(VAE, its standardiser) from a train_vae.py checkpoint of aligned weights of ds's layout."""
    vae, vae_std, ckpt = load_vae(path, expect_layout=ds.layout)
    if not ckpt["dataset"]["align"]:
        raise CheckpointError(f"{path} was trained on unaligned weights (--no_align); the pairs here are aligned")
    return vae, vae_std


@torch.no_grad()
def reestimate_bn(weights, ds, images_uint8, batch_size=500):
    """The same networks with BatchNorm running statistics recomputed on `images_uint8`
    (an average over all of them, not a momentum average)."""
    out = weights.clone()
    for i, w in enumerate(weights):
        model = model_from_flat(w, ds.layout, ds.tinynn_config)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.reset_running_stats()
                m.momentum = None
        model.train()
        for j in range(0, len(images_uint8), batch_size):
            model(standardize(images_uint8[j:j + batch_size]))
        out[i] = ds.layout.flatten(model.state_dict())
    return out


def bn_images(manifest, data, n):
    """n training images outside the dataset's validation split (same split as its runs)."""
    train, _ = split_validation(len(data.train_labels), manifest["data"]["val_size"], manifest["data"]["val_seed"])
    return data.train_images[train[:n]]


def group_weights(folder, args):
    aligned, unaligned = WeightDataset(folder, align=True), WeightDataset(folder, align=False)
    pairs = checkpoint_pairs(aligned, args.num_models, args.seed)  # same rows in both: same split seed
    images = bn_images(aligned.manifest, load_cifar10(args.data_dir, download=not args.no_download), args.bn_images)
    mid = interpolate(aligned, pairs, args.alpha)
    clamp_running_var(mid, aligned.layout)
    endpoints = pair_weights(aligned, pairs)[:, 0]
    weights = dict(zip(GROUPS, [mid, reestimate_bn(mid, aligned, images),
                                reestimate_bn(interpolate(unaligned, pairs, args.alpha), unaligned, images),
                                reestimate_bn(endpoints, aligned, images),
                                reestimate_bn(cross_layers(aligned, pairs, args.alpha), aligned, images)]))
    if args.vae_path:
        decoded = latent_interpolate(*load_aligned_vae(args.vae_path, aligned), aligned, pairs, args.alpha)
        clamp_running_var(decoded, aligned.layout)
        weights[LATENT] = decoded
    return aligned, weights


def made_with(out, source, n):
    """Whether out holds n networks made with these settings (a group made otherwise is made again)."""
    path = os.path.join(out, "generated.pt")
    if not os.path.exists(path):
        return False
    generated = load_checkpoint(path, GENERATED_KIND)
    return generated["source"] == source and len(generated["weights"]) == n


def main(args):
    folder = cd.dataset_folder(args.checkpoint_dir)
    root = os.path.join(folder, "midpoints")
    groups = GROUPS + ((LATENT,) if args.vae_path else ())
    outs = {g: os.path.join(root, g.replace(", ", "_").replace(" ", "_").replace("-", "")) for g in groups}
    sources = {g: dict(experiment="midpoints", group=g, alpha=args.alpha, pairs_seed=args.seed,
                       bn_images=args.bn_images, vae_path=args.vae_path) for g in groups}
    stale = [g for g in groups if not made_with(outs[g], sources[g], args.num_models)]
    if stale:
        ds, weights = group_weights(folder, args)
        for group in stale:
            report = os.path.join(outs[group], "report.json")
            if os.path.exists(report):  # of other networks (another --alpha, seed, ...): evaluated again
                os.remove(report)
            save_generated(weights[group], ds.layout, ds.tinynn_config, outs[group], sources[group], ds.description,
                           batchnorm=group.split(", ")[1])
    reports = []
    for group, out in outs.items():
        run_step(["evaluate_generated.py", "--model_path", out, "--fresh_dir", args.fresh_dir, "--train_models",
                  args.train_models, "--baseline_models", 0, "--test_images", args.test_images, *runtime_argv(args)],
                 skip_if=os.path.join(out, "report.json"))
        with open(os.path.join(out, "report.json")) as f:
            reports.append((group, json.load(f)))
    out = os.path.join(root, "midpoints")
    write_table(out, f"Networks between runs: alpha {args.alpha}, {args.num_models} pairs of checkpoints of two "
                f"runs; bar {reports[0][1]['new_bar']:.3f} (fresh set {args.fresh_dir})", REPORT_COLUMNS,
                report_rows(args.checkpoint_dir, reports))
    plot_overlap_scatter({args.checkpoint_dir: reports}, out + ".png")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fresh_dir", required=True, help="fresh-seed checkpoint dataset (evaluate_generated.py)")
    p.add_argument("--alpha", type=float, default=0.5, help="where between the two runs (default 0.5, the midpoint; "
                                                             "crossed layers: the share of layers from the second)")
    p.add_argument("--bn_images", type=int, default=5000, help="training images for BatchNorm statistics "
                                                                "(default 5000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the pair draw (default 0)")
    p.add_argument("--vae_path", default=None,
                   help="a train_vae.py checkpoint (vae.pt) of this dataset: adds the group of its decoded latent "
                        "interpolations (default: none)")
    common_flags(p)
    return p.parse_args(argv)


if __name__ == "__main__":
    run_main(main, parse_args)
