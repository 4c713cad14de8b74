"""Zoo speed: TinyNN training steps per second with one run at a time (RunTrainer, today's
default on the CPU) against populations of runs stacked and vmapped in one process
(PopulationTrainer, `Gen_Diffusion_Dataset.py --population P`), measured in one run on the same
data. Checkpoint selection (validation passes, saving) is left out: both paths share it.

    python -m benchmarks.zoo_speed                                     # CPU: populations 2 and 4
    python -m benchmarks.zoo_speed --device cuda --populations 8 32 100 --steps 50

Prints run-steps per second of each path, its ratio to one run at a time, and runs per minute
at --run_steps steps a run (a run of the default recipe at seed scale: ~12 epochs to reach
--min_acc, then 250 checkpoints 6 steps apart: ~3,700 steps).
"""
import argparse
import time

import torch

from weightgen.cifar10 import DEFAULT_DATA_DIR, load_cifar10
from weightgen.model_io import pick_device
from weightgen.population_training import PopulationTrainer
from weightgen.tinynn_training import RunTrainer, TrainConfig


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def lone_steps_per_second(images, labels, n_runs, steps, device):
    """n_runs runs trained one after another, `steps` steps each (after one warm-up step each)."""
    runs = [RunTrainer(images, labels, seed, device=device) for seed in range(n_runs)]
    for run in runs:
        run.train(1)
    synchronize(device)
    t0 = time.perf_counter()
    for run in runs:
        run.train(steps)
    synchronize(device)
    return n_runs * steps / (time.perf_counter() - t0)


def population_steps_per_second(images, labels, size, steps, device):
    pop = PopulationTrainer(images, labels, device=device)
    for seed in range(size):
        pop.add(seed)
    pop.train(1)
    synchronize(device)
    t0 = time.perf_counter()
    pop.train(steps)
    synchronize(device)
    return size * steps / (time.perf_counter() - t0)


def main(args):
    device = pick_device(args.device)
    data = load_cifar10(args.data_dir, device, download=False)
    images, labels = data.train_images, data.train_labels
    cfg = TrainConfig()
    print(f"device {device}; {torch.get_num_threads()} CPU threads; batch {cfg.batch_size}; {args.steps} steps a run")
    base = lone_steps_per_second(images, labels, args.lone_runs, args.steps, device)
    rows = [("one run at a time", base)]
    for size in args.populations:
        rows.append((f"population of {size}", population_steps_per_second(images, labels, size, args.steps, device)))
    print(f"{'path':<22}{'run-steps/s':>12}{'ratio':>8}{'runs/min':>10}")
    for name, rate in rows:
        print(f"{name:<22}{rate:12.1f}{rate / base:8.2f}{60 * rate / args.run_steps:10.2f}")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--populations", type=int, nargs="+", default=[2, 4], help="population sizes (default 2 4)")
    p.add_argument("--lone_runs", type=int, default=2, help="runs timed one at a time (default 2)")
    p.add_argument("--steps", type=int, default=10, help="timed SGD steps of each run (default 10)")
    p.add_argument("--run_steps", type=int, default=3700, help="steps of one whole run, for runs/min (default 3700)")
    p.add_argument("--data_dir", default=DEFAULT_DATA_DIR, help="folder with cifar-10-batches-py")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    main(p.parse_args())
