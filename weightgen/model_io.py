"""Files and devices: atomic writes, self-describing checkpoints, and the device a script runs on.

Every checkpoint is a dict with a "kind" (one of KINDS below), the model's constructor
arguments, the config it was trained with, whatever statistics it needs, step, optimizer and
EMA weights (the nanoGPT habit). Loading uses weights_only=True, so a file from someone else
cannot run code. Every file this project writes goes through `atomic_write`: a run that is cut
off never leaves a half-written file under the real name.
"""
import errno
import json
import os
import pickle
import re
import shutil

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


def atomic_write(path, write, size=None):
    """Call write(tmp_path), then rename over `path`: readers never see a partial file. A disk
    that fills up is one CheckpointError naming `path` and what it needs (`size`: the bytes it
    needs, when the caller knows; else what was written before the disk ran out)."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        write(tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:
        if not _disk_full(e):
            raise
        raise CheckpointError(_no_space(path, tmp, size)) from None
    finally:
        if os.path.lexists(tmp):
            os.remove(tmp)


def _disk_full(e):
    """Whether a failed write ran out of space: the OSError of a Python file, or the RuntimeError
    that torch.save's zip writer raises in its place (it carries no errno)."""
    if isinstance(e, OSError):
        return e.errno in (errno.ENOSPC, errno.EDQUOT)
    return "file write failed" in str(e) or "unexpected pos" in str(e)


def _no_space(path, tmp, size):
    folder = os.path.dirname(os.path.abspath(path))
    free = shutil.disk_usage(folder).free
    need = (f"it needs about {size:,} bytes" if size else
            f"{os.path.getsize(tmp):,} bytes were written before it stopped" if os.path.isfile(tmp) else
            "its size is unknown")
    return (f"could not write {path}: no space left on its disk ({need}; {free:,} bytes are free there): "
            f"make room and run the same command again")


def write_json(path, obj):
    text = json.dumps(obj, indent=1)

    def write(tmp):
        with open(tmp, "w") as f:
            f.write(text)
    atomic_write(path, write, size=len(text.encode()))


def tensor_bytes(obj):
    """The bytes of the tensors in `obj` (dicts, lists, tuples of them): about what torch.save writes."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v) for v in obj)
    return 0


def save_checkpoint(obj, path):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write(path, lambda tmp: torch.save(obj, tmp), size=tensor_bytes(obj))


def keep_result(path, made_with, **values):
    """Save `values` (tensors, lists) to `path` with the settings that made them, atomically: a
    long run keeps each finished piece of work this way and takes it back with kept_result."""
    atomic_write(path, lambda tmp: torch.save(dict(values, made_with=made_with), tmp), size=tensor_bytes(values))


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


def why_unloadable(e):
    """One line on why torch.load(weights_only=True) refused a file, with the reason whole. For a
    file holding pickled Python objects, torch's message opens with how to load it anyway
    (weights_only=False, which would run the file's code) and names the object only at its end:
    the object is the reason, and this project never turns weights_only off."""
    text = " ".join(re.sub(r"\x1b\[[0-9;]*m", "", str(e)).split())  # one line, without terminal colours
    if isinstance(e, pickle.UnpicklingError) and "WeightsUnpickler error:" in text:
        found = text.split("WeightsUnpickler error:", 1)[1].split(". ")[0].strip().rstrip(".")
        return f"it holds pickled Python objects, which could run code when loaded, so it is not read ({found})"
    return f"{type(e).__name__}: {text}"


def load_checkpoint(path, kind):
    """The checkpoint dict at `path`, which must be of `kind`."""
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, not a torch file, or holding pickled code
        raise CheckpointError(f"checkpoint is corrupted or not a checkpoint of this project: {path} "
                              f"({why_unloadable(e)})") from None
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


def load_state_dicts(folder, layout):
    """Flat weights [n, n_params] of every TinyNN state_dict (*.pt, *.pth) in `folder`, in name
    order: networks made elsewhere, to be judged like generated ones. One clear error for a file
    that is not a state_dict of this layout (naming the first tensor that differs)."""
    files = sorted(f for f in os.listdir(folder) if f.endswith((".pt", ".pth")))
    if not files:
        raise CheckpointError(f"{folder} holds neither a generated.pt nor TinyNN state_dicts (*.pt, *.pth)")
    vectors = []
    for name in files:
        path = os.path.join(folder, name)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise CheckpointError(f"{path} is not a readable state_dict ({why_unloadable(e)})") from None
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise CheckpointError(f"{path} is not a state_dict (a dict of tensors): it holds a {type(state).__name__}")
        vectors.append(layout.flatten(_checked_state(state, layout, path)))
    return torch.stack(vectors)


def _checked_state(state, layout, path):
    """`state`, when it holds every tensor of `layout` at its shape and nothing else but BatchNorm
    counters; one line on the first difference otherwise."""
    for slot in layout.slots:
        if slot.name not in state:
            raise CheckpointError(f"{path} has no tensor {slot.name}: not a TinyNN of this dataset's layout")
        if tuple(state[slot.name].shape) != slot.shape:
            raise CheckpointError(f"{path}: {slot.name} has shape {tuple(state[slot.name].shape)}, this dataset's "
                                  f"TinyNN has {slot.shape} (another width?)")
    extra = sorted(set(state) - {s.name for s in layout.slots} - {k for k in state if k.endswith("num_batches_tracked")})
    if extra:
        raise CheckpointError(f"{path} holds tensors a TinyNN of this layout has not: {', '.join(extra[:3])}")
    return state


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
