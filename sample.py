"""Generate new TinyNNs with a trained diffusion model.

    python sample.py --model_path checkpoints/Toy_CNN/diffusion_latent/diffusion.pt --num_models 100
    python sample.py --model_path ... --sampler ddpm                 # all timesteps, ancestral
    python sample.py --model_path ... --vae_path other/vae.pt        # must be the VAE it was trained on
    python sample.py --model_path ... --temperature 1.5 --guide .../guide.pt    # wider, towards accuracy
    python sample.py --model_path .../diffusion_run/diffusion.pt --mix_runs 2  # (train_diffusion.py --condition run)

The diffusion checkpoint records everything needed, including which VAE it was trained on.
Output folder (--out, default next to the model: samples_SAMPLER_STEPS_seedSEED/):
model_000.pt, model_001.pt, ...  ordinary TinyNN state_dicts: TinyNN(**cfg).load_state_dict(...)
generated.pt                     {"weights": [n, n_params], "tinynn": cfg, "layout": ..., ...}
BatchNorm: the running statistics are generated with the weights (they are part of the flat
vector), so each network is usable as it is; no re-estimation on data.
"""
import argparse
import os
import sys
import time

import torch
from tqdm import tqdm

from accuracy_guide import accuracy_guide, load_guide
from cli import add_generator_flags, add_runtime_flags, run_main
from diffusion_model import mixed_conditions
from generation import finish, load_generator, validation_check
from model_io import pick_device, save_generated

BN_HANDLING = ("generated: BatchNorm running statistics are part of the generated vector "
               "(negative running variances clamped at 0)")


def generate(space, diffusion, num_models, args, gens, guide=None):
    """Flat TinyNN weights [num_models, n_params]: diffusion samples (--sampler, --steps, --eta,
    --temperature, --mix_runs, --cfg_scale of `args`; guided by `guide` if given) decoded into
    weights; the noise comes from the torch.Generator gens[0], the mixtures of runs from gens[1]."""
    progress = None if args.quiet else (lambda it, total: tqdm(it, total=total, desc=args.sampler, unit="step"))
    cond = None
    if diffusion.denoiser.args.get("num_conditions"):
        cond = mixed_conditions(num_models, diffusion.denoiser.args["num_conditions"], args.mix_runs, gens[1])
        cond = cond.to(gens[0].device)
    samples = diffusion.sample(num_models, sampler=args.sampler, steps=args.steps, eta=args.eta, generator=gens[0],
                               progress=progress, temperature=args.temperature, guide=guide, cond=cond,
                               cfg_scale=args.cfg_scale)
    return space.to_weights(samples)


def draw(space, diffusion, layout, args, device, check=None, guide=None):
    """(weights, clamped variances, rejection record or None). Without a check: num_models
    networks. With one: draws of num_models from the same noise stream until num_models pass
    --reject_below (the first draw is the networks sampled without rejection) or max_draws are spent."""
    gens = (torch.Generator(device=device).manual_seed(args.seed), torch.Generator().manual_seed(args.seed))
    if check is None:
        weights = generate(space, diffusion, args.num_models, args, gens, guide)
        return weights, finish(weights, layout, args.prune_to), None
    max_draws = args.max_draws or 10 * args.num_models
    kept, clamped, drawn, check_seconds = [], 0, 0, 0.0
    while sum(map(len, kept)) < args.num_models and drawn < max_draws:
        n = min(args.num_models, max_draws - drawn)
        weights = generate(space, diffusion, n, args, gens, guide)
        clamped += finish(weights, layout, args.prune_to)
        t0 = time.time()
        acc = check(weights)
        check_seconds += time.time() - t0
        kept.append(weights[acc >= args.reject_below])
        drawn += n
    weights = torch.cat(kept)[:args.num_models]
    if not len(weights):
        sys.exit(f"error: none of {drawn} networks reached {args.reject_below} on the validation images; "
                 f"lower --reject_below or raise --max_draws")
    passed = sum(map(len, kept))
    record = dict(reject_below=args.reject_below, drawn=drawn, passed=passed, accepted=len(weights),
                  rejected_share=1 - passed / drawn, check_seconds=round(check_seconds, 2))
    print(f"drew {drawn} networks, {record['rejected_share']:.1%} below {args.reject_below} on validation images "
          f"({check_seconds:.1f}s of checks)")
    if len(weights) < args.num_models:
        print(f"warning: only {len(weights)} of {args.num_models} networks passed in {drawn} draws (--max_draws)")
    return weights, clamped, record


def check_condition_flags(ckpt, args):
    """--mix_runs and --cfg_scale ask for a model trained with --condition run: one line otherwise."""
    runs = len(ckpt.get("condition", {}).get("classes", []))
    if not runs and (args.mix_runs or args.cfg_scale != 1):
        sys.exit(f"error: {args.model_path} was trained without --condition run; --mix_runs and --cfg_scale "
                 f"need a run-conditioned model")
    if args.mix_runs > runs:
        sys.exit(f"error: --mix_runs {args.mix_runs}, but the model knows {runs} runs")


def main(args):
    device = pick_device(args.device)
    ckpt, space, diffusion, layout = load_generator(args.model_path, device, args.vae_path)
    check_condition_flags(ckpt, args)
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(args.model_path)),
                                   f"samples_{args.sampler}_{args.steps if args.sampler == 'ddim' else 'all'}"
                                   f"_seed{args.seed}")
    check = None
    if args.reject_below:
        check, n_images = validation_check(ckpt, layout, args, device)
        print(f"rejecting networks below {args.reject_below} on {n_images} validation images")
    guide = None
    if args.guide:
        predictor, _ = load_guide(args.guide, args.model_path, device)
        guide = accuracy_guide(predictor, args.guide_scale)
    t0 = time.time()  # sampling, decoding and checking only, not loading
    weights, clamped, rejection = draw(space, diffusion, layout, args, device, check, guide)
    seconds = time.time() - t0
    finite = torch.isfinite(weights).all(1)
    if not finite.all():
        print(f"warning: {int((~finite).sum())} of {len(weights)} generated vectors hold NaN/inf")
    source = dict(model_path=os.path.abspath(args.model_path), space=ckpt["space"]["space"], sampler=args.sampler,
                  steps=args.steps if args.sampler == "ddim" else ckpt["diffusion_args"]["timesteps"], eta=args.eta,
                  temperature=args.temperature, guide=args.guide and os.path.abspath(args.guide),
                  guide_scale=args.guide_scale if args.guide else None,
                  condition=ckpt.get("condition", {}).get("kind", "none"), mix_runs=args.mix_runs,
                  cfg_scale=args.cfg_scale, seed=args.seed, prune_to=args.prune_to,
                  seconds=round(seconds, 2), device=str(device),
                  vae=ckpt["space"]["vae"],
                  negative_running_var_clamped=clamped, rejection=rejection)
    save_generated(weights, layout, ckpt["tinynn"], out, source, ckpt["dataset"], BN_HANDLING)
    print(f"{len(weights)} TinyNNs sampled in {seconds:.1f}s ({ckpt['space']['space']} space, {args.sampler}"
          f"{'-' + str(args.steps) if args.sampler == 'ddim' else ''}, {device}); written to {out}\n"
          f"BatchNorm: {BN_HANDLING}; {clamped} variances clamped")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_generator_flags(p)
    p.add_argument("--num_models", type=int, default=100, help="networks to generate (default 100)")
    p.add_argument("--sampler", choices=["ddpm", "ddim"], default="ddim", help="default ddim")
    p.add_argument("--steps", type=int, default=50, help="DDIM steps (default 50; DDPM always uses all)")
    p.add_argument("--eta", type=float, default=0.0, help="DDIM noise: 0 is deterministic (default 0)")
    p.add_argument("--temperature", type=float, default=1.0,
                   help="scale of the sampler's noise, the initial draw included: above 1 samples spread wider "
                        "than the training data, below 1 they gather at its modes (default 1)")
    p.add_argument("--guide", default=None,
                   help="guide.pt from train_guide.py for this diffusion model: every sampling step moves the "
                        "predicted vector up the gradient of its predicted validation accuracy (default: none)")
    p.add_argument("--guide_scale", type=float, default=1.0,
                   help="with --guide: the size of that step, in the diffusion space's units per unit of accuracy "
                        "(default 1)")
    p.add_argument("--mix_runs", type=int, default=0,
                   help="a model trained with --condition run: condition each network on a mixture of this many "
                        "training runs chosen at random, with flat-Dirichlet weights (1: one run; default 0: no "
                        "condition, the unconditional model)")
    p.add_argument("--cfg_scale", type=float, default=1.0,
                   help="classifier-free guidance towards the --mix_runs condition: prediction = unconditional + "
                        "S x (conditional - unconditional); 1 is the conditional model (default 1)")
    p.add_argument("--prune_to", type=float, default=0.0,
                   help="zero this share of the smallest weights of every conv and linear layer of each generated "
                        "network (magnitude pruning; default 0: as generated)")
    p.add_argument("--reject_below", type=float, default=0.0,
                   help="keep only networks with at least this accuracy on the checkpoint dataset's validation "
                        "images (held out of TinyNN training; never the test set), drawing more until "
                        "--num_models pass (default 0: keep all)")
    p.add_argument("--max_draws", type=int, default=0,
                   help="with --reject_below: networks drawn at most (default 0: 10 x --num_models)")
    p.add_argument("--out", default=None, help="output folder (default next to the model)")
    add_runtime_flags(p, seed_help="seed of the initial noise (and DDPM/DDIM eta noise; default 0)")
    return p.parse_args(argv)


if __name__ == "__main__":
    run_main(main, parse_args)
