"""Files and devices: atomic writes, self-describing checkpoints, and the device a script runs on.

Every checkpoint is a dict with a "kind" (one of KINDS below), the model's constructor
arguments, the config it was trained with, whatever statistics it needs, step, optimizer and
EMA weights (the nanoGPT habit). Loading uses weights_only=True, so a file from someone else
cannot run code. Every file this project writes goes through `atomic_write`: a run that is cut
off never leaves a half-written file under the real name.
"""
import json
import os

import torch

from weightgen.tinynn import FlatLayout

# The "kind" of every checkpoint a script writes, in one place.
VAE_KIND = "weight-vae"                 # train_vae.py: vae.pt, vae_last.pt
DIFFUSION_KIND = "weight-diffusion"     # train_diffusion.py: diffusion.pt
GENERATED_KIND = "generated-tinynns"    # generate.save: generated.pt
GUIDE_KIND = "accuracy-guide"           # train_guide.py: guide.pt
KINDS = (VAE_KIND, DIFFUSION_KIND, GENERATED_KIND, GUIDE_KIND)


class CheckpointError(Exception):
    """A model checkpoint that cannot be used; the message says which file and why."""


def pick_device(name="auto"):
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def atomic_write(path, write):
    """Call write(tmp_path), then rename over `path`: readers never see a partial file."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json(path, obj):
    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=1)
    atomic_write(path, write)


def save_checkpoint(obj, path):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def keep_result(path, made_with, **values):
    """Save `values` (tensors, lists) to `path` with the settings that made them, atomically: a
    long run keeps each finished piece of work this way and takes it back with kept_result."""
    atomic_write(path, lambda tmp: torch.save(dict(values, made_with=made_with), tmp))


def kept_result(path, made_with):
    """What keep_result saved at `path`, if it was made with `made_with`; else None (also when the
    file is missing or damaged, e.g. cut short by a full disk: the work is then done again)."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return None
    return saved if isinstance(saved, dict) and saved.get("made_with") == made_with else None


def registered(registry, name, what):
    """registry[name] for a network named in a checkpoint, or one clear error naming the known ones."""
    if name not in registry:
        raise CheckpointError(f"the checkpoint holds a {what} {name!r} this code does not know "
                              f"(known: {', '.join(registry)})")
    return registry[name]


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


def made_with(out, source, n):
    """Whether `out` holds n generated networks made with these settings (`source`, as saved)."""
    path = os.path.join(out, "generated.pt")
    if not os.path.exists(path):
        return False
    generated = load_checkpoint(path, GENERATED_KIND)
    return generated["source"] == source and len(generated["weights"]) == n


def load_generated(path):
    """(weights [n, n_params], layout, source info, description of the generator's training
    split) from sample.py's output."""
    if os.path.isdir(path):
        path = os.path.join(path, "generated.pt")
    g = load_checkpoint(path, GENERATED_KIND)
    if "dataset" not in g:
        raise CheckpointError(f"{path} does not record the split its generator was trained on (it predates "
                              f"that record): sample it again with sample.py")
    return g["weights"], FlatLayout.from_json(g["layout"]), g.get("source", {}), g["dataset"]
