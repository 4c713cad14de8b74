"""What both trainers (train_vae.py, train_diffusion.py) share: EMA weights, the epoch loop with
its saves and Ctrl-C handling, refusing to replace a run unasked, resuming (with this command's
learning rate and epochs), and the log file."""
import ctypes
import json
import math
import os
import sys

import torch
from tqdm import tqdm

from weightgen.model_io import CheckpointError, atomic_write, load_checkpoint

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's mallopt parameters (malloc.h)

# Flags that say where and how a command runs: a resumed run does not record them as changed.
RUNTIME_FLAGS = ("resume", "overwrite", "quiet", "device", "data_dir", "no_download")


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


def training_state(model, ema, opt, history, sched=None, resumes=()):
    """The part of a trainer's checkpoint that --resume restores; the epoch is len(history).
    resumes: what each --resume changed (restore's records), oldest first."""
    state = dict(model=model.state_dict(), ema=ema.state, ema_updates=ema.updates, optimizer=opt.state_dict(),
                 epoch=len(history), history=history, resumes=list(resumes))
    if sched is not None:
        state["scheduler"] = sched.state_dict()
    return state


def for_sampling(state):
    """A training_state() without what only training needs (raw weights, optimizer, scheduler):
    the small file that sampling reads."""
    return {k: v for k, v in state.items() if k not in ("model", "optimizer", "scheduler")}


def existing_run(out, outputs, what, args, note=""):
    """The files of `outputs` that folder `out` holds already. When it holds some and neither
    --resume nor --overwrite says what to do with them, one line and exit 2, nothing touched:
    rerunning a trainer must not replace a model (that others were trained on) without a word."""
    found = [name for name in outputs if os.path.exists(os.path.join(out, name))]
    if found and not (args.resume or args.overwrite):
        print(f"error: {out} holds a {what} already ({', '.join(found)}{_logged_epochs(out)}): --resume "
              f"continues it, --overwrite replaces it{note}, another --run_name trains beside it",
              file=sys.stderr, flush=True)
        sys.exit(2)
    return found


def _logged_epochs(out):
    try:
        with open(os.path.join(out, "log.jsonl")) as f:
            return f"; its log ends at epoch {json.loads(f.readlines()[-1])['epoch']}"
    except (OSError, ValueError, IndexError, KeyError, TypeError):
        return ""


def clear_run(out, found):
    """--overwrite: remove the earlier run's files (`found`), once this run is ready to train, so
    that none of them (a finished report, an old log) is taken for the new run's."""
    for name in found:
        os.remove(os.path.join(out, name))
    if found:
        print(f"--overwrite: removed the earlier run's {', '.join(found)} from {out}")


def resumable(path, kind, args, fixed):
    """The checkpoint at `path` that --resume continues. Refused in one line (CheckpointError)
    when a flag named in `fixed` (what a run keeps to its end: model sizes, data, split, seed)
    differs from the one it was trained with, or when --epochs ends before the epochs done."""
    if not os.path.isfile(path):
        raise CheckpointError(f"nothing to resume: {path} not found (leave out --resume to start a run)")
    ckpt = load_checkpoint(path, kind)
    trained = ckpt.get("config", {})
    differ = [f for f in fixed if f in trained and trained[f] != getattr(args, f)]
    if differ:
        raise CheckpointError(f"--resume: {path} was trained with {_flags(trained, differ)}, this command has "
                              f"{_flags(vars(args), differ)}; a run keeps these to its end: pass the values it "
                              f"was trained with, or start again with --overwrite")
    if args.epochs < ckpt["epoch"]:
        raise CheckpointError(f"--resume: {path} has trained {ckpt['epoch']} epochs already, past --epochs "
                              f"{args.epochs}: pass --epochs {ckpt['epoch']} or more")
    return ckpt


def _flags(values, names):
    return " ".join(f"--{n} {'(its default)' if values.get(n) is None else values[n]}" for n in names)


def restore(ckpt, path, model, ema, opt, args, sched=None, expected=None):
    """Load a resumable() checkpoint into model, EMA, optimizer (and scheduler), then train at
    this command's --lr: the optimizer's saved state would bring the old rate back while the
    checkpoint records the new one. expected: {what: (as recorded, as this run built it)} for what
    follows from the data rather than from a flag (the model's arguments, the split). Returns the
    record of what this command changed ({epoch, changed: {flag: [trained with, now]}}), for the
    checkpoint's "resumes"."""
    for what, (recorded, built) in (expected or {}).items():
        if recorded != built:
            raise CheckpointError(f"--resume: {path} holds a model of other {what} than this run builds ({recorded} "
                                  f"there, {built} here): has the dataset changed since? Start again with "
                                  f"--overwrite, or train beside it with another --run_name")
    model.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["optimizer"])
    if sched is not None:  # this command's schedule (--lr_step, --lr_gamma), at the epoch the run has reached
        reached = {k: ckpt["scheduler"][k] for k in ("last_epoch", "_step_count")}
        sched.load_state_dict({**sched.state_dict(), **reached})
    device = next(model.parameters()).device
    ema.state, ema.updates = {k: v.to(device) for k, v in ckpt["ema"].items()}, ckpt["ema_updates"]
    set_lr(opt, args.lr, sched)
    trained = ckpt.get("config", {})
    changed = {k: [trained[k], v] for k, v in vars(args).items()
               if k in trained and k not in RUNTIME_FLAGS and trained[k] != v}
    applied = "; applied " + ", ".join(f"--{k} {a} -> {b}" for k, (a, b) in changed.items()) if changed else ""
    print(f"resumed from {path} at epoch {ckpt['epoch']}{applied}")
    return dict(epoch=ckpt["epoch"], changed=changed)


def set_lr(opt, lr, sched=None):
    """Train at `lr` from now on, whatever the optimizer's state says. With a StepLR schedule, `lr`
    is its starting rate, decayed as far as the schedule has come (as a run started at `lr` would
    be at this epoch)."""
    now = lr
    if sched is not None:
        sched.base_lrs = [lr] * len(opt.param_groups)
        now = lr * sched.gamma ** (sched.last_epoch // sched.step_size)
        sched._last_lr = [now] * len(opt.param_groups)  # what get_last_lr() reports until its next step
    for g in opt.param_groups:
        g["lr"] = now
        if "initial_lr" in g:
            g["initial_lr"] = lr


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
                what = (f"the checkpoint of epoch {saved} is kept. Continue from it with --resume and a lower "
                        f"--lr, or start again with --overwrite and a lower --lr" if saved else
                        "no checkpoint was saved yet. Start again with a lower --lr")
                sys.exit(f"error: the training loss turned {record[loss_key]} in epoch {epoch + 1}; stopped ({what}).")
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
