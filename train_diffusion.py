"""Train a DDPM on the VAE's latents of a checkpoint dataset (or directly on its weights).

    python train_diffusion.py --checkpoint_dir Toy_CNN --batch_size 8 --epochs 1000
    python train_diffusion.py --checkpoint_dir Toy_CNN --space weights          # direct weight diffusion
    python train_diffusion.py --checkpoint_dir Toy_CNN --space pca --objective flow   # DeepWeightFlow's recipe
    python train_diffusion.py --checkpoint_dir Toy_CNN --resume --epochs 2000    # go on (also --lr)
    python train_diffusion.py --checkpoint_dir Toy_CNN --overwrite               # start RUN_NAME again
    python train_diffusion.py --checkpoint_dir Toy_CNN --condition run           # p(x | run) and p(x)
    python train_diffusion.py --checkpoint_dir Toy_CNN --device cuda --compile   # CUDA graphs on a GPU

--space latent (the default) encodes the dataset with the VAE (--vae_path, default
checkpoints/NAME/vae/vae.pt), using the same alignment and split the VAE was trained with;
latents are cached and standardised per dimension. --space weights diffuses the standardised
flat weights themselves. --space pca diffuses the coordinates of the aligned, standardised training
weights along their --components principal directions (default one per training run).
--objective flow trains flow matching on straight paths instead of the DDPM (sample.py then
integrates its ODE with --sampler heun or euler). --condition run tells the denoiser which training run each vector
comes from (dropped with probability --cond_drop, so the same model is also unconditional);
sample.py --mix_runs then conditions on mixtures of runs. Outputs, in checkpoints/NAME/RUN_NAME/:
diffusion.pt (EMA weights, optimizer, the VAE it depends on, everything sample.py needs), log.jsonl, loss.png.
A RUN_NAME that holds a run already is left alone unless --resume continues it or --overwrite
replaces it.
"""
import argparse
import os
import time

import torch

from weightgen import checkpoint_dataset as cd
from weightgen.cli import add_align_flag, add_runtime_flags, count, positive, run_main, share, whole
from diffusion_model import DENOISERS, DIFFUSION_DEFAULTS, SPACE_DEFAULTS, GaussianDiffusion, FlowMatching, one_hot_conditions
from weightgen.model_io import DIFFUSION_KIND, CheckpointError, pick_device, save_checkpoint
from weightgen.training_utils import (EMA, batches_per_epoch, clear_run, compiled, descend, existing_run, restore,
                                      resumable, reuse_freed_memory, run_epochs, steps_summary, training_state,
                                      write_log)
from vae_diffusion import DiffusionSpace, file_fingerprint
from vae_model import load_vae
from weightgen.weight_dataset import WeightDataset

# What a run keeps to its end: --resume refuses other values of these by name (the learning rate,
# the epochs, batch size, EMA decay and --cond_drop may change). The VAE is checked by its file.
FIXED = ("space", "components", "objective", "denoiser", "hidden", "depth", "time_dim", "timesteps", "schedule",
         "prediction", "condition", "align", "seed")
OUTPUTS = ("diffusion.pt", "log.jsonl", "loss.png")


def same_vae(ckpt, path, vae_path):
    """Refuse, in one line, to resume a latent diffusion model on another VAE than its own: its
    latents would mean something else."""
    recorded = (ckpt.get("space") or {}).get("vae")
    if not recorded or not os.path.isfile(vae_path) or file_fingerprint(vae_path) == recorded["fingerprint"]:
        return  # a missing VAE file is load_vae's one-line error
    moved = os.path.abspath(vae_path) != recorded["path"]
    raise CheckpointError(f"--resume: {path} was trained on the VAE {recorded['path']} (sha256 "
                          f"{recorded['fingerprint'][:12]}...), and "
                          + (f"{vae_path} is another file: pass --vae_path {recorded['path']}" if moved else
                             "that file has changed since (trained again?): the latents would not be the ones it "
                             "learned; start again with --overwrite, or train beside it with another --run_name"))


def training_space(args, folder):
    """(weight dataset, DiffusionSpace, training vectors). The latent space uses the split its
    VAE was trained with."""
    if args.space in ("weights", "pca"):
        ds = WeightDataset(folder, align=args.align, seed=args.seed, data_dir=args.data_dir)
        return (ds, *DiffusionSpace.for_training(args.space, ds, components=args.components))
    vae = load_vae(args.vae_path)
    ds = WeightDataset.from_description(vae[2]["dataset"], folder, args.data_dir)
    return (ds, *DiffusionSpace.for_training("latent", ds, args.vae_path, vae, cache_dir=os.path.join(
        folder, args.run_name)))


def run_labels(ds, device):
    """(label of each training vector: the index of its run, the run ids in label order)."""
    runs = [r["run"] for r in ds.train_records]
    classes = sorted(set(runs))
    return torch.tensor([classes.index(r) for r in runs], device=device), classes


def plot_loss(history, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([h["epoch"] for h in history], [h["loss"] for h in history])
    ax.set(xlabel="epoch", ylabel="MSE of the prediction (x_0, noise or velocity)", yscale="log", title="diffusion training loss")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(args):
    device = pick_device(args.device)
    reuse_freed_memory()  # the wide layers' gradients: no page faults every step on the CPU
    folder = cd.dataset_folder(args.checkpoint_dir)
    args.vae_path = args.vae_path or os.path.join(folder, "vae", "vae.pt")
    args.run_name = args.run_name or f"diffusion_{args.space}"
    for key, value in {**DIFFUSION_DEFAULTS, **SPACE_DEFAULTS[args.space]}.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    out = os.path.join(folder, args.run_name)
    found = existing_run(out, OUTPUTS, "diffusion run", args)
    path = os.path.join(out, "diffusion.pt")
    ckpt = resumable(path, DIFFUSION_KIND, args, FIXED) if args.resume else None
    if ckpt and args.space == "latent":
        same_vae(ckpt, path, args.vae_path)
    ds, space, data = training_space(args, folder)
    data = data.to(device)
    labels, classes = run_labels(ds, device) if args.condition == "run" else (None, [])
    print(f"{folder}: {len(data)} training vectors of {data.shape[1]} numbers ({args.space} space); "
          f"{steps_summary(len(data), args.batch_size, args.epochs)}; device {device}"
          + (f"; conditioned on {len(classes)} runs" if classes else ""))

    torch.manual_seed(args.seed)  # after the data, whose caches (alignment, latents) may or may not be there
    denoiser = DENOISERS[args.denoiser](data.shape[1], args.hidden, args.depth, args.time_dim,
                                        num_conditions=len(classes))
    if args.objective == "flow":
        diffusion = FlowMatching(denoiser).to(device)
    else:  # sampling keeps predicted x_0 inside the training data's range (see GaussianDiffusion)
        diffusion = GaussianDiffusion(denoiser, args.timesteps, args.schedule, clip_x0=data.abs().max().item(),
                                      prediction=args.prediction).to(device)
    opt = torch.optim.AdamW(denoiser.parameters(), lr=args.lr, weight_decay=0.0, fused=True)  # ~2x faster steps on CPU
    loss_fn = compiled(diffusion.loss, device) if args.compile else diffusion.loss
    ema = EMA(denoiser, args.ema)
    history, resumes = [], []
    if ckpt:
        expected = {"denoiser arguments": (ckpt["denoiser_args"], denoiser.args),
                    "diffusion arguments": (ckpt["diffusion_args"], diffusion.constructor_args())}
        resumes = ckpt.get("resumes", []) + [restore(ckpt, path, denoiser, ema, opt, args, expected=expected)]
        history = ckpt["history"]
    elif args.overwrite:
        clear_run(out, found)

    t0 = time.time()
    gen = torch.Generator(device=device).manual_seed(args.seed + len(history))

    def train_epoch(epoch):
        order = torch.randperm(len(data), generator=gen, device=device)
        total = torch.zeros((), device=device)
        for i in range(0, len(order), args.batch_size):
            batch = order[i:i + args.batch_size]
            cond = one_hot_conditions(labels[batch], len(classes), args.cond_drop, gen) if classes else None
            loss = loss_fn(data[batch], cond)
            descend(loss, denoiser, opt, ema)
            total += loss.detach()
        return dict(epoch=epoch + 1, loss=total.item() / batches_per_epoch(len(order), args.batch_size),
                    lr=opt.param_groups[0]["lr"], seconds=round(time.time() - t0, 1))

    def save():
        save_checkpoint(dict(kind=DIFFUSION_KIND, denoiser=args.denoiser, denoiser_args=denoiser.args,
                             objective=args.objective, diffusion_args=diffusion.constructor_args(),
                             space=space.state_dict(),
                             condition=dict(kind=args.condition, classes=classes, drop=args.cond_drop),
                             tinynn=ds.tinynn_config, dataset=ds.description, config=vars(args),
                             **training_state(denoiser, ema, opt, history, resumes=resumes)), path)
        write_log(history, os.path.join(out, "log.jsonl"))

    start = len(history)
    run_epochs(history, args.epochs, train_epoch, save, args.save_every, "diffusion", args.quiet)
    plot_loss(history, os.path.join(out, "loss.png"))
    print(f"trained {args.epochs - start} epochs in {time.time() - t0:.0f}s; final loss {history[-1]['loss']:.4f}; "
          f"written to {path}")


def parse_args(argv=None):
    d = DIFFUSION_DEFAULTS
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint_dir", required=True, help="dataset name under checkpoints/ (or an absolute path)")
    p.add_argument("--space", choices=["latent", "weights", "pca"], default="latent",
                   help="diffuse VAE latents (default), the standardised flat weights, or their coordinates along "
                        "the training weights' principal directions")
    p.add_argument("--components", type=whole, default=0,
                   help="--space pca: principal directions kept (default 0: one per training run)")
    p.add_argument("--objective", choices=["ddpm", "flow"], default="ddpm",
                   help="ddpm: the denoising diffusion (default); flow: flow matching on straight paths, a "
                        "velocity target (--timesteps, --schedule and --prediction are the DDPM's and unused)")
    p.add_argument("--vae_path", default=None, help="VAE checkpoint (default checkpoints/NAME/vae/vae.pt)")
    p.add_argument("--run_name", default=None, help="output folder in the dataset folder (default diffusion_SPACE)")
    p.add_argument("--batch_size", type=count, default=8, help="default 8")
    p.add_argument("--epochs", type=count, default=1000,
                   help="epochs in all (with --resume: where the run ends; default 1000)")
    p.add_argument("--lr", type=positive, default=1e-4,
                   help="AdamW learning rate (with --resume: from here on; default 1e-4)")
    p.add_argument("--timesteps", type=count, default=d["timesteps"],
                   help=f"diffusion steps (default {d['timesteps']})")
    p.add_argument("--schedule", choices=["linear", "cosine"], default=d["schedule"],
                   help=f"noise schedule (default {d['schedule']})")
    p.add_argument("--denoiser", choices=sorted(DENOISERS), default="mlp",
                   help="denoiser network (diffusion_model.DENOISERS; default mlp)")
    w = SPACE_DEFAULTS["weights"]
    p.add_argument("--hidden", type=count, default=None,
                   help=f"denoiser width (default {d['hidden']}; --space weights: {w['hidden']})")
    p.add_argument("--depth", type=whole, default=d["depth"], help=f"denoiser residual blocks (default {d['depth']})")
    p.add_argument("--time_dim", type=count, default=d["time_dim"],
                   help=f"timestep embedding size (default {d['time_dim']})")
    p.add_argument("--prediction", choices=["eps", "x0"], default=d["prediction"],
                   help=f"what the denoiser predicts: the clean vector or the noise (default {d['prediction']})")
    p.add_argument("--condition", choices=["none", "run"], default="none",
                   help="run: tell the denoiser each vector's training run, so that sampling can ask for a run "
                        "or a mixture of runs (sample.py --mix_runs; default none)")
    p.add_argument("--cond_drop", type=share, default=0.1,
                   help="with --condition run: share of training vectors shown without their run, so the same "
                        "model also learns the unconditional distribution (default 0.1)")
    p.add_argument("--ema", type=share, default=0.999, help="EMA decay of the kept weights (default 0.999)")
    add_align_flag(p, where="--space weights: ")
    p.add_argument("--save_every", type=count, default=10, help="epochs between checkpoint saves (default 10)")
    p.add_argument("--compile", action="store_true",
                   help="the loss and its backward through torch.compile, with CUDA graphs on a GPU, where the "
                        "default small steps are bound by kernel launches (benchmarks/diffusion_step.py); the same "
                        "training up to float rounding and random draws, after a compile of up to a minute")
    again = p.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true",
                       help="continue RUN_NAME from its diffusion.pt, with this command's --epochs and --lr; the "
                            "denoiser, schedule, data and VAE must be the ones it was trained with")
    again.add_argument("--overwrite", action="store_true",
                       help="replace the run RUN_NAME holds (default: refuse)")
    add_runtime_flags(p, seed_help="seed of initialisation, shuffling and noise (default 0)")
    return p.parse_args(argv)


if __name__ == "__main__":
    run_main(main, parse_args)
