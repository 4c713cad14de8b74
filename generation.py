"""What sample.py and train_guide.py share: a trained generator loaded from its checkpoint, its
vectors finished into saveable TinyNN weights, and the validation check of generated networks."""
import torch

import checkpoint_dataset as cd
from cifar10 import held_out_split, load_cifar10
from diffusion_model import build_diffusion
from model_io import DIFFUSION_KIND, load_checkpoint
from tinynn import FlatLayout, clamp_running_var, prune_to
from tinynn_training import evaluate_flat
from vae_diffusion import DiffusionSpace


def load_generator(path, device, vae_path=None):
    """(checkpoint dict, DiffusionSpace, diffusion model, FlatLayout of the networks) of the
    train_diffusion.py checkpoint at `path`, on `device`."""
    ckpt = load_checkpoint(path, DIFFUSION_KIND)
    space = DiffusionSpace.from_state_dict(ckpt["space"], vae_path)
    if space.vae is not None:
        space.vae.to(device)
    return ckpt, space, build_diffusion(ckpt).to(device), FlatLayout.from_json(ckpt["space"]["standardizer"]["layout"])


def finish(weights, layout, prune_share):
    """The networks as they are saved: negative running variances clamped, optionally pruned.
    Returns how many variances were clamped."""
    clamped = clamp_running_var(weights, layout)
    if prune_share:
        prune_to(weights, layout, prune_share)
    return clamped


def validation_check(ckpt, layout, args, device):
    """(f(weights) -> validation accuracy of each network, the number of images), on the images
    the checkpoint dataset held out of TinyNN training (its settings record the split); never the
    test set."""
    data_settings = cd.load_manifest(ckpt["dataset"]["folder"])["data"]
    data = load_cifar10(args.data_dir, device, download=not args.no_download)
    _, (images, labels) = held_out_split(data, data_settings["val_size"], data_settings["val_seed"],
                                         data_settings["train_size"])
    return lambda w: torch.tensor(evaluate_flat(w, layout, ckpt["tinynn"], images, labels, device)), len(labels)
