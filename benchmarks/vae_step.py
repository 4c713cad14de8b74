"""One weight-VAE training step at seed scale (train_vae.py's defaults: the MLP VAE over a whole
TinyNN, batch 32, fused Adam, EMA), timed part by part, first with the C library's allocator
as it starts and then after training_utils.reuse_freed_memory() (what the trainers call), in one
run, against this machine's floors (benchmarks/timing.py): the forward and backward pass against
its FLOP over the rate of the step's widest matmul, the optimizer and EMA updates against the
copy bandwidth.

    python -m benchmarks.vae_step
    python -m benchmarks.vae_step --device cuda

Steps per epoch are len(training checkpoints) / 32: 71 at seed scale (2,250 training
checkpoints), so 100 epochs are ~7,100 steps, and the step time x 7,100 is the floor of
`train_vae.py`'s training time (evaluations and saves come on top).
"""
import argparse

import torch

from benchmarks.timing import UPDATE_ARRAYS, floors, timed_ms
from weightgen.model_io import pick_device
from weightgen.tinynn import count_flat_numbers
from weightgen.training_utils import EMA, descend, reuse_freed_memory
from vae_model import VAE_DEFAULTS, WeightVAE

STEPS_SEED_SCALE = 100 * 2250 // 32


def part_times(args, device):
    """Milliseconds of the whole step and of its parts, on one fresh model."""
    torch.manual_seed(0)
    model = WeightVAE(count_flat_numbers()).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    ema = EMA(model, 0.999)
    batch = torch.randn(args.batch_size, model.args["in_dim"], device=device)

    def forward_backward():
        opt.zero_grad(set_to_none=True)
        model.loss(batch, 0.1)[0].backward()

    parts = dict(step=lambda: descend(model.loss(batch, 0.1)[0], model, opt, ema),
                 forward_backward=forward_backward, optimizer=opt.step, ema=lambda: ema.update(model))
    return {name: timed_ms(fn, device, args.steps) for name, fn in parts.items()}, model


def main(args):
    device = pick_device(args.device)
    before, model = part_times(args, device)
    reused = reuse_freed_memory()
    after, _ = part_times(args, device)
    n_params, in_dim = sum(p.numel() for p in model.parameters()), model.args["in_dim"]
    _, compute, gbps, gflops = floors(n_params, args.batch_size, device, (in_dim, VAE_DEFAULTS["hidden"]),
                                           calls=args.steps)
    print(f"device {device}, {torch.get_num_threads()} threads; VAE {n_params:,} parameters over {in_dim:,} "
          f"numbers, batch {args.batch_size}")
    print(f"{'':<18}{'as started':>12}{'reuse freed':>13}{'ratio':>7}   (reuse_freed_memory applied: {reused})")
    for name in before:
        print(f"  {name:<16}{before[name]:9.1f} ms{after[name]:10.1f} ms{before[name] / after[name]:7.2f}")
    print(f"compute floor {compute:.1f} ms ({6 * n_params * args.batch_size / 1e9:.1f} GFLOP at {gflops:.1f} GFLOP/s, "
          f"the widest matmul's rate)")
    print(f"forward + backward / compute floor: {before['forward_backward'] / compute:.2f} as started, "
          f"{after['forward_backward'] / compute:.2f} reusing freed memory")
    update_ms, update_mb = after["optimizer"] + after["ema"], 4 * n_params * UPDATE_ARRAYS / 1e6
    print(f"optimizer + EMA move {update_mb:.0f} MB in {update_ms:.1f} ms: {update_mb / update_ms:.1f} GB/s "
          f"(a copy: {gbps:.1f} GB/s)")
    print(f"100 epochs at seed scale ({STEPS_SEED_SCALE:,} steps), the steps alone: "
          f"{before['step'] * STEPS_SEED_SCALE / 6e4:.1f} min as started, "
          f"{after['step'] * STEPS_SEED_SCALE / 6e4:.1f} min reusing freed memory")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch_size", type=int, default=32, help="default 32 (train_vae.py's)")
    p.add_argument("--steps", type=int, default=30, help="timed steps per measurement (default 30)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    main(p.parse_args())
