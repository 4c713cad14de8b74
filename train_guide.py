"""Fit the accuracy predictor that guides sampling towards accurate networks (sample.py --guide).

    python train_guide.py --model_path checkpoints/R20x3/diffusion_latent/diffusion.pt
    python sample.py --model_path checkpoints/R20x3/diffusion_latent/diffusion.pt \\
        --guide checkpoints/R20x3/diffusion_latent/guide.pt --guide_scale 1 --temperature 1.5

Labels come from the model itself: --num_latents vectors are sampled (DDIM, --steps) at every
--temperatures value, so that the set reaches past the training modes to where networks break;
each is decoded and scored on the checkpoint dataset's validation images (held out of TinyNN
training; never the test set). A small MLP learns accuracy from the vector, full-batch, on all
but --holdout of them; its error and correlation on those held out are printed and kept in the
checkpoint. Writes guide.pt (next to the model unless --out) and guide.json.
"""
import argparse
import os
import time

import torch
from tqdm import tqdm

from accuracy_guide import AccuracyPredictor
from cli import add_generator_flags, add_runtime_flags, run_main
from generation import finish, load_generator, validation_check
from model_io import GUIDE_KIND, pick_device, save_checkpoint, write_json
from vae_diffusion import file_fingerprint


def labelled_vectors(space, diffusion, layout, check, args, device):
    """(vectors [N, dim], validation accuracies [N], temperature of each [N]) on the CPU."""
    gen = torch.Generator(device=device).manual_seed(args.seed)
    vectors, accs, temps = [], [], []
    for temperature in tqdm(args.temperatures, desc="labelling", unit="temperature", disable=args.quiet):
        x = diffusion.sample(args.num_latents, sampler="ddim", steps=args.steps, generator=gen,
                             temperature=temperature)
        weights = space.to_weights(x)
        finish(weights, layout, 0.0)
        vectors.append(x.cpu())
        accs.append(check(weights))
        temps.append(torch.full((len(x),), temperature))
    return torch.cat(vectors), torch.cat(accs).float(), torch.cat(temps)


def fit(x, y, args):
    """An AccuracyPredictor fitted to (x, y) by full-batch Adam."""
    torch.manual_seed(args.seed)
    model = AccuracyPredictor(x.shape[1], hidden=args.hidden, depth=args.depth)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    for _ in tqdm(range(args.epochs), desc="fitting", unit="epoch", disable=args.quiet):
        loss = torch.nn.functional.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@torch.no_grad()
def held_out_fit(model, x, y):
    """Mean absolute error and Pearson correlation of the predictions on (x, y)."""
    pred = model(x)
    corr = torch.corrcoef(torch.stack([pred, y]))[0, 1].item() if len(y) > 1 else float("nan")
    return dict(n=len(y), mae=(pred - y).abs().mean().item(), corr=corr)


def main(args):
    device = pick_device(args.device)
    ckpt, space, diffusion, layout = load_generator(args.model_path, device, args.vae_path)
    check, n_images = validation_check(ckpt, layout, args, device)
    t0 = time.time()
    x, y, temps = labelled_vectors(space, diffusion, layout, check, args, device)
    label_seconds = time.time() - t0
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(args.seed))
    n_held = int(round(args.holdout * len(y)))
    held, train = order[:n_held], order[n_held:]
    model = fit(x[train], y[train], args)
    fit_report = held_out_fit(model, x[held], y[held])
    per_temperature = {str(t): dict(mean=y[temps == t].mean().item(), min=y[temps == t].min().item())
                       for t in args.temperatures}
    report = dict(diffusion=args.model_path, validation_images=n_images, labels=len(y),
                  label_seconds=round(label_seconds, 1), accuracy_by_temperature=per_temperature,
                  held_out=fit_report)
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(args.model_path)), "guide.pt")
    save_checkpoint(dict(kind=GUIDE_KIND, model_args=model.args, model=model.state_dict(), report=report,
                         diffusion=dict(path=os.path.abspath(args.model_path),
                                        fingerprint=file_fingerprint(args.model_path)),
                         config=vars(args)), out)
    write_json(os.path.splitext(out)[0] + ".json", report)
    print(f"{len(y)} vectors labelled on {n_images} validation images in {label_seconds:.0f}s; accuracy by "
          f"temperature: " + ", ".join(f"{t}: {v['mean']:.3f} (min {v['min']:.3f})" for t, v in per_temperature.items())
          + f"\npredictor on the {n_held} held out: mean abs error {fit_report['mae']:.4f}, correlation "
          f"{fit_report['corr']:.3f}; written to {out}")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_generator_flags(p)
    p.add_argument("--num_latents", type=int, default=150, help="vectors sampled at each temperature (default 150)")
    p.add_argument("--temperatures", type=float, nargs="+", default=[1.0, 1.5, 2.0],
                   help="sampling temperatures of the labelled vectors (default 1 1.5 2)")
    p.add_argument("--steps", type=int, default=50, help="DDIM steps of the labelled samples (default 50)")
    p.add_argument("--hidden", type=int, default=128, help="predictor width (default 128)")
    p.add_argument("--depth", type=int, default=2, help="predictor hidden layers (default 2)")
    p.add_argument("--epochs", type=int, default=2000, help="full-batch Adam steps (default 2000)")
    p.add_argument("--lr", type=float, default=1e-3, help="default 1e-3")
    p.add_argument("--weight_decay", type=float, default=1e-4, help="Adam weight decay (default 1e-4)")
    p.add_argument("--holdout", type=float, default=0.2,
                   help="share of the labelled vectors kept out of fitting to measure the predictor (default 0.2)")
    p.add_argument("--out", default=None, help="where guide.pt goes (default next to the model)")
    add_runtime_flags(p, seed_help="seed of the sampled vectors, the split and the predictor (default 0)")
    return p.parse_args(argv)


if __name__ == "__main__":
    run_main(main, parse_args)
