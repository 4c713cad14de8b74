"""Generate new TinyNNs with a trained diffusion model.

    python sample.py --model_path checkpoints/Toy_CNN/diffusion_latent/diffusion.pt --num_models 100
    python sample.py --model_path ... --sampler ddpm                 # all timesteps, ancestral
    python sample.py --model_path ... --vae_path other/vae.pt        # must be the VAE it was trained on

The diffusion checkpoint records everything needed, including which VAE it was trained on.
Output folder (--out, default next to the model: samples_SAMPLER_STEPS_seedSEED/):
model_000.pt, model_001.pt, ...  ordinary TinyNN state_dicts: TinyNN(**cfg).load_state_dict(...)
generated.pt                     {"weights": [n, n_params], "tinynn": cfg, "layout": ..., ...}
BatchNorm: the running statistics are generated with the weights (they are part of the flat
vector), so each network is usable as it is; no re-estimation on data.
"""
import argparse
import os
import time

import torch
from tqdm import tqdm

from cli import add_runtime_flags, run_main
from diffusion_model import build_diffusion
from model_io import DIFFUSION_KIND, load_checkpoint, pick_device, save_generated
from tinynn import FlatLayout, clamp_running_var, prune_to
from vae_diffusion import DiffusionSpace

BN_HANDLING = ("generated: BatchNorm running statistics are part of the generated vector "
               "(negative running variances clamped at 0)")


def load_generator(ckpt, device, vae_path=None):
    """(DiffusionSpace, diffusion model) from a diffusion checkpoint dict, on `device`."""
    space = DiffusionSpace.from_state_dict(ckpt["space"], vae_path)
    if space.vae is not None:
        space.vae.to(device)
    return space, build_diffusion(ckpt).to(device)


def generate(space, diffusion, num_models, sampler, steps, eta, seed, device, quiet=False):
    """Flat TinyNN weights [num_models, n_params]: diffusion samples decoded into weights."""
    gen = torch.Generator(device=device).manual_seed(seed)
    progress = None if quiet else (lambda it, total: tqdm(it, total=total, desc=sampler, unit="step"))
    samples = diffusion.sample(num_models, sampler=sampler, steps=steps, eta=eta, generator=gen, progress=progress)
    return space.to_weights(samples)


def main(args):
    device = pick_device(args.device)
    ckpt = load_checkpoint(args.model_path, DIFFUSION_KIND)
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(args.model_path)),
                                   f"samples_{args.sampler}_{args.steps if args.sampler == 'ddim' else 'all'}"
                                   f"_seed{args.seed}")
    space, diffusion = load_generator(ckpt, device, args.vae_path)
    t0 = time.time()  # sampling and decoding only, not loading
    weights = generate(space, diffusion, args.num_models, args.sampler, args.steps, args.eta, args.seed, device,
                       args.quiet)
    seconds = time.time() - t0
    layout = FlatLayout.from_json(ckpt["space"]["standardizer"]["layout"])
    clamped = clamp_running_var(weights, layout)
    if args.prune_to:
        prune_to(weights, layout, args.prune_to)
    finite = torch.isfinite(weights).all(1)
    if not finite.all():
        print(f"warning: {int((~finite).sum())} of {len(weights)} generated vectors hold NaN/inf")
    source = dict(model_path=os.path.abspath(args.model_path), space=ckpt["space"]["space"], sampler=args.sampler,
                  steps=args.steps if args.sampler == "ddim" else ckpt["diffusion_args"]["timesteps"], eta=args.eta,
                  seed=args.seed, prune_to=args.prune_to, seconds=round(seconds, 2), device=str(device),
                  vae=ckpt["space"]["vae"],
                  negative_running_var_clamped=clamped)
    save_generated(weights, layout, ckpt["tinynn"], out, source, ckpt["dataset"], BN_HANDLING)
    print(f"{args.num_models} TinyNNs sampled in {seconds:.1f}s ({ckpt['space']['space']} space, {args.sampler}"
          f"{'-' + str(args.steps) if args.sampler == 'ddim' else ''}, {device}); written to {out}\n"
          f"BatchNorm: {BN_HANDLING}; {clamped} variances clamped")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_path", required=True, help="diffusion checkpoint written by train_diffusion.py")
    p.add_argument("--vae_path", default=None,
                   help="the VAE, if it moved since training (it must be the same file; default: the recorded path)")
    p.add_argument("--num_models", type=int, default=100, help="networks to generate (default 100)")
    p.add_argument("--sampler", choices=["ddpm", "ddim"], default="ddim", help="default ddim")
    p.add_argument("--steps", type=int, default=50, help="DDIM steps (default 50; DDPM always uses all)")
    p.add_argument("--eta", type=float, default=0.0, help="DDIM noise: 0 is deterministic (default 0)")
    p.add_argument("--prune_to", type=float, default=0.0,
                   help="zero this share of the smallest weights of every conv and linear layer of each generated "
                        "network (magnitude pruning; default 0: as generated)")
    p.add_argument("--out", default=None, help="output folder (default next to the model)")
    add_runtime_flags(p, data=False, seed_help="seed of the initial noise (and DDPM/DDIM eta noise; default 0)")
    return p.parse_args(argv)


if __name__ == "__main__":
    run_main(main, parse_args)
