"""Generate new TinyNNs with a trained diffusion model.

    python sample.py --model_path checkpoints/Toy_CNN/diffusion_latent/diffusion.pt --num_models 100
    python sample.py --model_path ... --sampler ddpm                 # all timesteps, ancestral
    python sample.py --model_path ... --vae_path other/vae.pt        # must be the VAE it was trained on
    python sample.py --model_path ... --train_steps 200 --fresh_dir Toy_CNN_fresh   # then trained on
    python sample.py --model_path ... --oversample 3                 # keep the third least like a run
    python sample.py --model_path .../diffusion_pca_flow/diffusion.pt --bn_images 5000   # flow: --sampler heun
    python sample.py --model_path .../diffusion_run/diffusion.pt --mix_runs 2  # (train_diffusion.py --condition run)

The diffusion checkpoint records everything needed, including which VAE it was trained on.
After drawing, every network goes the way of every generator here (weightgen/generate.py):
BatchNorm running variances clamped at 0 (the running statistics are generated with the weights,
so each network is usable as it is; --bn_images N recomputes them on N training images instead),
optionally --prune_to; optionally trained --train_steps SGD
steps with the dataset's recipe (each kept in OUT_candidates/ as it is done, so an interrupted
run goes on); with --oversample K, K candidates a network and the --num_models least like a
training checkpoint kept (mistakes on --check_images training images, accurate ones first).
Networks trained on are judged fairly against fresh runs trained the same way: --fresh_dir F
trains F's last checkpoints so, into OUT_fresh_trained/ (evaluate_generated.py --bar_from).

Output folder (--out, default next to the model: samples_SAMPLER_STEPS_seedSEED[_trainS_lrLR][_ofK]/),
written whole or not at all; a folder that holds networks is replaced only with --overwrite:
model_000.pt, model_001.pt, ...  ordinary TinyNN state_dicts: TinyNN(**cfg).load_state_dict(...)
generated.pt                     {"weights": [n, n_params], "tinynn": cfg, "layout": ..., ...}
The networks expect images normalised with CIFAR-10's mean and std (weightgen.cifar10.MEAN, STD).
"""
import argparse
import os
import sys
import time

import torch
from tqdm import tqdm

from diffusion_model import build_diffusion, mixed_conditions
from vae_diffusion import DiffusionSpace
from weightgen import generate
from weightgen.blending import reestimate_bn
from weightgen.cifar10 import load_cifar10
from weightgen.cli import add_generate_flags, add_generator_flags, add_runtime_flags, count, run_main, share, whole
from weightgen.model_io import DIFFUSION_KIND, CheckpointError, load_checkpoint, pick_device
from weightgen.tinynn import FlatLayout
from weightgen.weight_dataset import WeightDataset, training_images

BN_HANDLING = ("generated: BatchNorm running statistics are part of the generated vector "
               "(negative running variances clamped at 0)")


def load_generator(path, device, vae_path=None):
    """(checkpoint dict, DiffusionSpace, diffusion model, FlatLayout of the networks) of the
    train_diffusion.py checkpoint at `path`, on `device`."""
    ckpt = load_checkpoint(path, DIFFUSION_KIND)
    space = DiffusionSpace.from_state_dict(ckpt["space"], vae_path)
    if space.vae is not None:
        space.vae.to(device)
    return ckpt, space, build_diffusion(ckpt).to(device), FlatLayout.from_json(ckpt["space"]["standardizer"]["layout"])


def draw(space, diffusion, n, args, device):
    """Flat TinyNN weights [n, n_params]: diffusion samples (--sampler, --steps, --eta,
    --temperature, --mix_runs, --cfg_scale) decoded into weights; the noise from --seed."""
    gens = (torch.Generator(device=device).manual_seed(args.seed), torch.Generator().manual_seed(args.seed))
    progress = None if args.quiet else (lambda it, total: tqdm(it, total=total, desc=args.sampler, unit="step"))
    cond = None
    if diffusion.denoiser.args.get("num_conditions"):
        cond = mixed_conditions(n, diffusion.denoiser.args["num_conditions"], args.mix_runs, gens[1])
        cond = cond.to(device)
    samples = diffusion.sample(n, sampler=args.sampler, steps=args.steps, eta=args.eta, generator=gens[0],
                               progress=progress, temperature=args.temperature, cond=cond,
                               cfg_scale=args.cfg_scale)
    return space.to_weights(samples)


def check_sampler(diffusion, args):
    """The sampler, defaulting to the objective's own; one line for a sampler of another objective."""
    args.sampler = args.sampler or diffusion.samplers[0]
    if args.sampler not in diffusion.samplers:
        raise CheckpointError(f"{args.model_path} was trained with --objective {diffusion.objective}: --sampler must be "
                              f"one of {', '.join(diffusion.samplers)}, not {args.sampler}")
    if args.eta and args.sampler != "ddim":
        raise CheckpointError("--eta is DDIM's noise: it needs --sampler ddim")


def check_condition_flags(ckpt, args):
    """--mix_runs and --cfg_scale ask for a model trained with --condition run: one line otherwise."""
    runs = len(ckpt.get("condition", {}).get("classes", []))
    if not runs and (args.mix_runs or args.cfg_scale != 1):
        raise CheckpointError(f"{args.model_path} was trained without --condition run; --mix_runs and "
                                       f"--cfg_scale need a run-conditioned model")
    if args.mix_runs > runs:
        raise CheckpointError(f"--mix_runs {args.mix_runs}, but the model knows {runs} runs")


def default_out(args):
    name = f"samples_{args.sampler}_{args.steps if args.sampler != 'ddpm' else 'all'}_seed{args.seed}"
    if args.bn_images:
        name += f"_bn{args.bn_images}"
    if args.train_steps:
        name += f"_train{args.train_steps}_lr{args.train_lr:g}"
    if args.oversample > 1:
        name += f"_of{args.oversample}"
    return os.path.join(os.path.dirname(os.path.abspath(args.model_path)), name)


def train_and_select(weights, ds, data, out, args, device):
    """(weights, kept indices, check record): the samples trained on (--train_steps, each kept in
    OUT_candidates/), the fair bar made beside them (--fresh_dir), the --oversample selection."""
    if args.train_steps:
        how = generate.TrainOn(args.train_steps, args.train_lr, args.seed)
        generate.refuse_replayed_seeds(how, len(weights), ds.folder)
        start = weights
        weights = generate.train_on(lambda i: start[i:i + 1], [None] * len(start), ds.manifest, data, how,
                                    out + "_candidates", device, args.quiet)
        generate.finish(weights, ds.layout)
        if args.fresh_dir:
            generate.trained_fresh(ds, args.fresh_dir, args.num_models, data, how, out + "_fresh_candidates",
                                   out + "_fresh_trained", device, args.quiet)
    if args.oversample == 1:
        return weights, list(range(len(weights))), {}
    kept, check = generate.select(weights, ds, data, args.num_models, args.check_images, device, args.quiet)
    return weights, kept, check


def main(args):
    device = pick_device(args.device)
    ckpt, space, diffusion, layout = load_generator(args.model_path, device, args.vae_path)
    check_sampler(diffusion, args)
    check_condition_flags(ckpt, args)
    out = os.path.abspath(args.out or default_out(args))
    generate.refuse_used(out, args.overwrite)  # before the work, not after it
    n = args.num_models * args.oversample
    t0 = time.time()  # sampling and decoding only, not loading
    weights = draw(space, diffusion, n, args, device)
    seconds = time.time() - t0
    finite = torch.isfinite(weights).all(1)
    if not finite.all():
        print(f"warning: {int((~finite).sum())} of {len(weights)} generated vectors hold NaN/inf")
    clamped = generate.finish(weights, layout, args.prune_to)
    kept, check, batchnorm = list(range(args.num_models)), {}, BN_HANDLING
    if args.bn_images or args.train_steps or args.oversample > 1:
        data = load_cifar10(args.data_dir, download=not args.no_download)
        ds = WeightDataset.from_description(ckpt["dataset"], data_dir=args.data_dir)
    if args.bn_images:
        weights = reestimate_bn(weights, ds, training_images(ds.manifest, data, args.bn_images))
        batchnorm = f"recomputed on {args.bn_images} training images"
    if args.train_steps or args.oversample > 1:
        try:
            weights, kept, check = train_and_select(weights, ds, data, out, args, device)
        except KeyboardInterrupt:
            print(f"\ninterrupted: the networks trained so far are kept in {out}_candidates; run the same command "
                  f"to continue")
            sys.exit(130)
        batchnorm = "trained" if args.train_steps else batchnorm
    source = dict(generator="sample.py", model_path=os.path.abspath(args.model_path), space=ckpt["space"]["space"],
                  objective=diffusion.objective, sampler=args.sampler,
                  steps=args.steps if args.sampler != "ddpm" else ckpt["diffusion_args"]["timesteps"], eta=args.eta,
                  bn_images=args.bn_images,
                  temperature=args.temperature, condition=ckpt.get("condition", {}).get("kind", "none"),
                  mix_runs=args.mix_runs, cfg_scale=args.cfg_scale, seed=args.seed, prune_to=args.prune_to,
                  train_steps=args.train_steps, train_lr=args.train_lr if args.train_steps else None,
                  oversample=args.oversample, candidates=n, kept=kept, **check,
                  seconds=round(seconds, 2), device=str(device), vae=ckpt["space"]["vae"],
                  negative_running_var_clamped=clamped)
    generate.save(weights[kept], layout, ckpt["tinynn"], out, source, ckpt["dataset"], batchnorm, args.overwrite)
    print(f"{len(kept)} TinyNNs sampled in {seconds:.1f}s ({ckpt['space']['space']} space, {args.sampler}"
          f"{'-' + str(args.steps) if args.sampler != 'ddpm' else ''}, {device}); written to {out}\n"
          f"BatchNorm: {batchnorm}; {clamped} variances clamped")
    if args.fresh_dir and args.train_steps:
        print(f"the fair bar for them: {out}_fresh_trained (evaluate_generated.py --bar_from)")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_generator_flags(p)
    p.add_argument("--num_models", type=count, default=100, help="networks to generate (default 100)")
    p.add_argument("--sampler", choices=["ddim", "ddpm", "heun", "euler"], default=None,
                   help="ddim or ddpm for a DDPM (default ddim); heun or euler, the ODE steps, for a model trained "
                        "with --objective flow (default heun)")
    p.add_argument("--steps", type=count, default=50,
                   help="DDIM steps, or ODE steps of heun/euler (heun evaluates the denoiser twice a step; "
                        "default 50; DDPM always uses all its timesteps)")
    p.add_argument("--eta", type=float, default=0.0, help="DDIM noise: 0 is deterministic (default 0)")
    p.add_argument("--temperature", type=float, default=1.0,
                   help="scale of the sampler's noise, the initial draw included: above 1 samples spread wider "
                        "than the training data, below 1 they gather at its modes (default 1)")
    p.add_argument("--mix_runs", type=int, default=0,
                   help="a model trained with --condition run: condition each network on a mixture of this many "
                        "training runs chosen at random, with flat-Dirichlet weights (1: one run; default 0: no "
                        "condition, the unconditional model)")
    p.add_argument("--cfg_scale", type=float, default=1.0,
                   help="classifier-free guidance towards the --mix_runs condition: prediction = unconditional + "
                        "S x (conditional - unconditional); 1 is the conditional model (default 1)")
    p.add_argument("--prune_to", type=share, default=0.0,
                   help="zero this share of the smallest weights of every conv and linear layer of each generated "
                        "network (magnitude pruning, for generators of pruned checkpoints; default 0: as generated)")
    p.add_argument("--bn_images", type=whole, default=0,
                   help="recompute every network's BatchNorm running statistics on this many training images, "
                        "as DeepWeightFlow does (default 0: keep the generated ones)")
    add_generate_flags(p, "--train_steps", 0, "--train_lr")
    p.add_argument("--out", default=None, help="output folder (default next to the model, named by the settings)")
    add_runtime_flags(p, seed_help="seed of the initial noise, the sampler's noise and the data orders of "
                                   "--train_steps (default 0)")
    args = p.parse_args(argv)
    if args.fresh_dir and not args.train_steps:
        p.error("--fresh_dir trains fresh checkpoints as the samples are trained: it needs --train_steps")
    return args


if __name__ == "__main__":
    run_main(main, parse_args)
