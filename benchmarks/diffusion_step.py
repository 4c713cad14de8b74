"""One diffusion training step (the defaults: latent MLP denoiser, batch 8, fused AdamW, EMA),
timed part by part and set against this machine's floors, in one run:
- memory floor: the bytes a step must move (weights read forward and backward, gradients
  written, AdamW reading weights, gradients and both moments and writing three of them, the EMA
  reading two copies and writing one) over the copy bandwidth measured here;
- compute floor: 6 FLOP per parameter per vector (forward + backward) over the matmul rate
  measured here at the step's shapes;
- with --compile, the same step with the loss and its backward through torch.compile, as
  train_diffusion.py --compile runs it (CUDA graphs on a GPU: mode reduce-overhead).

    python -m benchmarks.diffusion_step
    python -m benchmarks.diffusion_step --device cuda --compile
"""
import argparse
import time

import torch

from benchmarks.timing import ARRAYS_MOVED, floors, timed_ms
from diffusion_model import DENOISERS, GaussianDiffusion
from weightgen.model_io import pick_device
from weightgen.training_utils import EMA, compiled, descend, reuse_freed_memory


def trainer(args, device):
    torch.manual_seed(0)
    denoiser = DENOISERS["mlp"](args.dim).to(device)  # the constructor's defaults are train_diffusion.py's
    diffusion = GaussianDiffusion(denoiser, clip_x0=4.0).to(device)
    opt = torch.optim.AdamW(denoiser.parameters(), lr=1e-4, weight_decay=0.0, fused=True)
    return denoiser, diffusion, opt, EMA(denoiser, 0.999)


def main(args):
    device = pick_device(args.device)
    reuse_freed_memory()  # as train_diffusion.py does
    denoiser, diffusion, opt, ema = trainer(args, device)
    batch = torch.randn(args.batch_size, args.dim, device=device)
    n_params = sum(p.numel() for p in denoiser.parameters())

    def forward_backward():
        opt.zero_grad(set_to_none=True)
        diffusion.loss(batch).backward()

    parts = dict(step=lambda: descend(diffusion.loss(batch), denoiser, opt, ema), forward_backward=forward_backward,
                 optimizer=opt.step, ema=lambda: ema.update(denoiser))
    times = {name: timed_ms(fn, device, args.steps) for name, fn in parts.items()}
    memory, compute, gbps, gflops = floors(n_params, args.batch_size, device)
    print(f"device {device}, {torch.get_num_threads()} threads; denoiser {n_params:,} parameters, batch "
          f"{args.batch_size}")
    for name, ms in times.items():
        print(f"  {name:<18}{ms:8.3f} ms")
    print(f"floors: memory {memory:.3f} ms ({4 * n_params * ARRAYS_MOVED / 1e6:.0f} MB a step at {gbps:.1f} GB/s), "
          f"compute {compute:.3f} ms ({6 * n_params * args.batch_size / 1e6:.0f} MFLOP at {gflops:.1f} GFLOP/s)")
    print(f"step / (memory + compute floor): {times['step'] / (memory + compute):.2f}")
    if args.compile:
        denoiser, diffusion, opt, ema = trainer(args, device)
        loss = compiled(diffusion.loss, device)
        t0 = time.perf_counter()
        descend(loss(batch), denoiser, opt, ema)
        print(f"torch.compile: first step {time.perf_counter() - t0:.1f} s")
        compiled_ms = timed_ms(lambda: descend(loss(batch), denoiser, opt, ema), device, args.steps)
        eager_ms = timed_ms(parts["step"], device, args.steps)  # again, beside it: this CPU's speed drifts
        print(f"  compiled step      {compiled_ms:8.3f} ms  (eager step again {eager_ms:.3f} ms; "
              f"eager / compiled: {eager_ms / compiled_ms:.2f})")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dim", type=int, default=64, help="vector size: the VAE's latent (default 64)")
    p.add_argument("--batch_size", type=int, default=8, help="default 8 (train_diffusion.py's)")
    p.add_argument("--steps", type=int, default=300, help="timed steps per measurement (default 300)")
    p.add_argument("--compile", action="store_true", help="also time the step through torch.compile")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    main(p.parse_args())
