"""What both trainers (train_vae.py, train_diffusion.py) share: EMA weights, the epoch loop with
its saves and Ctrl-C handling, resuming, and the log file."""
import ctypes
import json
import math
import sys

import torch
from tqdm import tqdm

from weightgen.model_io import CheckpointError, atomic_write, load_checkpoint

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's mallopt parameters (malloc.h)


def reuse_freed_memory():
    """Ask glibc to keep freed memory for the next allocation instead of handing it back to the
    system; True where that was done (glibc), False elsewhere (nothing changes there).

    Why: a gradient of the weight VAE's widest layers (256 x 55,786 floats, 57 MB) is above
    glibc's largest mmap threshold (32 MB), so every step unmapped it and the next step faulted
    in fresh zeroed pages: the backward pass ran ~1.5x slower on the CPU (benchmarks/vae_step.py).
    The price is that the process keeps its peak memory until it exits."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 2 ** 31 - 1))


def compiled(fn, device):
    """`fn` through torch.compile. On a GPU with CUDA graphs (mode reduce-overhead): a small
    model's step is dozens of short kernels, and replaying them as one graph removes the launch
    cost that bounds it. On the CPU, inductor's kernels, which were no faster there
    (benchmarks/diffusion_step.py). The first calls compile (seconds to a minute)."""
    return torch.compile(fn, mode="reduce-overhead" if device.type == "cuda" else "default")


class EMA:
    """Exponential moving average of a model's parameters and buffers."""

    def __init__(self, model, decay):
        self.decay, self.updates = decay, 0
        self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model):
        # Warm-up: early on the average follows the model closely, or a short run would
        # keep (nearly) its random initialisation.
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        current = model.state_dict()
        floats = [k for k, v in current.items() if v.is_floating_point()]
        torch._foreach_lerp_([self.state[k] for k in floats], [current[k] for k in floats], 1 - decay)
        for k, v in current.items():
            if not v.is_floating_point():
                self.state[k].copy_(v)


def batches_per_epoch(n_vectors, batch_size):
    """Optimizer steps an epoch: the last batch may be short."""
    return -(-n_vectors // batch_size)


def steps_summary(n_vectors, batch_size, epochs):
    """'N optimizer steps (k an epoch)': what a trainer's header says, because epochs alone hide how
    little a small dataset trains (54 vectors at batch 32 are 2 steps an epoch)."""
    per_epoch = batches_per_epoch(n_vectors, batch_size)
    return f"{epochs * per_epoch:,} optimizer steps ({per_epoch} an epoch)"


def descend(loss, model, opt, ema):
    """One optimizer step on `loss`, then the EMA update: the inner step of every trainer."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    ema.update(model)


def training_state(model, ema, opt, history, sched=None):
    """The part of a trainer's checkpoint that --resume restores; the epoch is len(history)."""
    state = dict(model=model.state_dict(), ema=ema.state, ema_updates=ema.updates, optimizer=opt.state_dict(),
                 epoch=len(history), history=history)
    if sched is not None:
        state["scheduler"] = sched.state_dict()
    return state


def for_sampling(state):
    """A training_state() without what only training needs (raw weights, optimizer, scheduler):
    the small file that sampling reads."""
    return {k: v for k, v in state.items() if k not in ("model", "optimizer", "scheduler")}


def resume(path, kind, expected, model, ema, opt, sched=None):
    """Restore a training_state() saved in the checkpoint at `path`; `expected` maps checkpoint
    keys to the values this run was built with (model arguments, ...). Returns the checkpoint dict."""
    ckpt = load_checkpoint(path, kind)
    for key, value in expected.items():
        if ckpt.get(key) != value:
            raise CheckpointError(f"{path} holds a model with other {key} ({ckpt.get(key)}, this run: {value}): "
                                  f"pass the flags it was trained with")
    model.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["optimizer"])
    if sched is not None:
        sched.load_state_dict(ckpt["scheduler"])
    device = next(model.parameters()).device
    ema.state, ema.updates = {k: v.to(device) for k, v in ckpt["ema"].items()}, ckpt["ema_updates"]
    print(f"resumed from {path} at epoch {ckpt['epoch']}")
    return ckpt


def run_epochs(history, epochs, train_epoch, save, save_every, desc, quiet=False, loss_key="loss"):
    """Call train_epoch(epoch) -> log record for every epoch after those in `history`, appending
    its record; save() every `save_every` epochs and after the last. Ctrl-C saves (the partial
    epoch's updates included) and exits with status 130, so the run can go on with --resume. A
    record whose `loss_key` is NaN or infinite stops the run with one line; nothing is saved
    after it, so the last checkpoint on disk is the last good one."""
    start = saved = len(history)
    try:
        for epoch in tqdm(range(start, epochs), desc=desc, unit="epoch", initial=start, total=epochs,
                          disable=quiet):
            record = train_epoch(epoch)
            if not math.isfinite(record[loss_key]):
                kept = f"the checkpoint of epoch {saved} is kept" if saved else "no checkpoint was saved yet"
                sys.exit(f"error: the training loss turned {record[loss_key]} in epoch {epoch + 1}; stopped "
                         f"({kept}). Lower --lr and start again, or --resume from that checkpoint.")
            history.append(record)
            if (epoch + 1) % save_every == 0 or epoch + 1 == epochs:
                save()
                saved = epoch + 1
    except KeyboardInterrupt:
        save()
        print(f"\ninterrupted; saved after epoch {len(history)}: continue with the same command and --resume")
        sys.exit(130)


def write_log(history, path):
    """The whole log, rewritten from the checkpointed history: a resumed run never repeats lines."""
    def write(tmp):
        with open(tmp, "w") as f:
            f.writelines(json.dumps(h) + "\n" for h in history)
    atomic_write(path, write)
