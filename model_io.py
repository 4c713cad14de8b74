"""Self-describing model checkpoints: saved atomically, loaded safely, with clear errors.

Every checkpoint is a dict with a "kind" (e.g. "weight-vae"), the model's constructor
arguments, the config it was trained with, whatever statistics it needs, step, optimizer and
EMA weights (the nanoGPT habit). Loading uses weights_only=True, so a file from someone else
cannot run code.
"""
import os

import torch

from checkpoint_dataset import atomic_write


class CheckpointError(Exception):
    """A model checkpoint that cannot be used; the message says which file and why."""


def save_checkpoint(obj, path):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def load_checkpoint(path, kind):
    """The checkpoint dict at `path`, which must be of `kind`."""
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, not a torch file, or holding pickled code
        raise CheckpointError(f"checkpoint is corrupted or not a checkpoint of this project: {path} "
                              f"({type(e).__name__}: {str(e)[:200]})") from None
    if not isinstance(ckpt, dict) or ckpt.get("kind") != kind:
        found = ckpt.get("kind") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"{path} is a {found!r} checkpoint, expected {kind!r}")
    return ckpt
