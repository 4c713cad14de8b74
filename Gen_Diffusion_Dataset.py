"""Train TinyNN many times on CIFAR-10 and keep checkpoints: the training data of the generators.

Each run trains a fresh TinyNN (its own seed for init, shuffling and augmentation) with the
default recipe until its validation accuracy passes --min_acc, then keeps training and saves a
checkpoint every --save_every steps whose validation accuracy is at least --min_acc, until it
has --ckpts_per_run of them. Accuracies are measured on --val_size training images held out of
training, so the test set stays clean for evaluation.

    python Gen_Diffusion_Dataset.py --checkpoint_dir Toy_CNN
    python Gen_Diffusion_Dataset.py --checkpoint_dir Toy_CNN --shard 0 --num_shards 4   # machine 0 of 4
    python Gen_Diffusion_Dataset.py --checkpoint_dir Toy_CNN --assemble                  # manifest from copied shards
    python Gen_Diffusion_Dataset.py --checkpoint_dir Toy_CNN --runs 100 --population 50  # one GPU, 50 runs at once
    torchrun --nproc_per_node 4 Gen_Diffusion_Dataset.py --checkpoint_dir Toy_CNN        # 4 GPUs, a shard each

Interrupting loses at most the runs in progress; the same command continues where it stopped.
"""
import argparse
import json
import math
import multiprocessing as mp
import os
import sys
import time
from dataclasses import asdict

import numpy as np
import torch
from tqdm import tqdm

from weightgen import checkpoint_dataset as cd
from weightgen.cifar10 import AUGMENTATIONS, held_out_split, load_cifar10
from weightgen.cli import add_runtime_flags, count, positive, run_main, share, whole
from weightgen.tinynn import TINYNN_DEFAULTS, FlatLayout, TinyNN
from weightgen.model_io import pick_device, write_json
from weightgen.population_training import PopulationTrainer
from weightgen.tinynn_training import RunTrainer, TrainConfig, evaluate, run_seed

# Runs trained together on a GPU by default: a guess, not yet measured on a GPU (one TinyNN at
# batch 256 leaves an H100 mostly idle; benchmarks/zoo_speed.py measures the sizes).
GPU_POPULATION = 32


def model_config(args):
    """TinyNN's constructor arguments for this dataset (--widths)."""
    return dict(TINYNN_DEFAULTS, widths=list(args.widths))


def dataset_settings(args):
    """Everything that decides what a run produces; a restart must match it."""
    config = model_config(args)
    layout = FlatLayout.of(TinyNN(**config))
    return dict(
        tinynn=config, n_params=layout.numel, layout=layout.to_json(),
        train_config=TrainConfig.from_args(args).to_json(), augment=asdict(AUGMENTATIONS[args.augment]),
        data=dict(dataset="CIFAR-10", val_size=args.val_size, val_seed=args.seed, train_size=args.train_size,
                  accuracy="val_acc: top-1 accuracy on val_size training images held out of training "
                           "(fixed split from val_seed); the test set is not used here"),
        selection=dict(ckpts_per_run=args.ckpts_per_run, min_acc=args.min_acc, max_epochs=args.max_epochs,
                       save_every=args.save_every),
        seed=args.seed,
    )


def load_split(args, device):
    """Training images (minus the held-out validation split) and the validation split."""
    data = load_cifar10(args.data_dir, device, download=not args.no_download)
    return held_out_split(data, args.val_size, args.seed, args.train_size)


class Selection:
    """Checkpoint selection of one run: when to look at it next, which checkpoints it keeps, and
    its record. Shared by one-run-at-a-time training and population training."""

    def __init__(self, run_id, seed, args, steps_per_epoch):
        self.run_id, self.seed, self.args = run_id, seed, args
        self.steps_per_epoch = steps_per_epoch
        self.max_steps = int(args.max_epochs * steps_per_epoch)
        self.curve, self.checkpoints, self.weights = [], [], []
        self.reached_step = self.diverged_step = None
        self.t0 = time.time()

    def steps_to_look(self, step):
        """Before min_acc is reached, look once an epoch; after it, at every save point."""
        n = self.args.save_every if self.reached_step is not None else self.steps_per_epoch
        return min(n, self.max_steps - step)

    def done(self, step):
        return (len(self.checkpoints) >= self.args.ckpts_per_run or step >= self.max_steps
                or self.diverged_step is not None)

    def look(self, step, loss, accuracy, sparse_ready, flat_weights):
        """Record the run at `step` (mean training loss since the last look, `accuracy()` on the
        validation split); keeps a checkpoint (`flat_weights()`) when it qualifies. Returns whether
        it kept one."""
        epoch = round(step / self.steps_per_epoch, 3)
        if not math.isfinite(loss):
            tqdm.write(f"run {self.run_id}: the training loss turned {loss} at step {step} (epoch {epoch:.1f}); "
                       f"the run diverged and keeps no checkpoints. Lower --lr.")
            self.diverged_step, self.checkpoints, self.weights = step, [], []
            return False
        acc = accuracy()
        self.curve.append(dict(step=step, epoch=epoch, val_acc=acc, loss=loss))
        if self.reached_step is None and acc >= self.args.min_acc and sparse_ready:
            self.reached_step = step
        if self.reached_step is None or acc < self.args.min_acc:
            return False
        self.checkpoints.append(dict(step=step, epoch=epoch, val_acc=acc))
        self.weights.append(flat_weights())
        return True

    def result(self, step, device, n_params, **extra):
        """(run record, stacked flat weights of its checkpoints)."""
        if self.reached_step is None and self.diverged_step is None:
            tqdm.write(f"run {self.run_id}: did not reach --min_acc {self.args.min_acc} in --max_epochs "
                       f"{self.args.max_epochs:g} (best validation accuracy "
                       f"{max(c['val_acc'] for c in self.curve):.3f}); no checkpoints kept. "
                       f"Lower --min_acc or change the recipe.")
        record = dict(run=self.run_id, seed=self.seed, device=str(device), steps=step,
                      epochs=round(step / self.steps_per_epoch, 3),
                      reached_min_acc_step=self.reached_step if self.diverged_step is None else None,
                      diverged_at_step=self.diverged_step, complete=len(self.checkpoints) == self.args.ckpts_per_run,
                      seconds=round(time.time() - self.t0, 1), **extra, curve=self.curve,
                      checkpoints=self.checkpoints)
        return record, torch.stack(self.weights) if self.weights else torch.empty(0, n_params)


def generate_run(run_id, args, split, device, position=0):
    """Train one run on its own and return (run record, stacked flat weights of its checkpoints)."""
    (x, y), (val_x, val_y) = split
    seed = run_seed(args.seed, run_id)
    run = RunTrainer(x, y, seed, model_config(args), TrainConfig.from_args(args), device=device)
    selection = Selection(run_id, seed, args, run.steps_per_epoch)
    layout = FlatLayout.of(run.model)
    bar = tqdm(total=args.ckpts_per_run, desc=f"run {run_id}", position=position, leave=False,
               unit="ckpt", disable=args.quiet)
    while not selection.done(run.step):
        loss = run.train(selection.steps_to_look(run.step))
        kept = selection.look(run.step, loss, lambda: evaluate(run.model, val_x, val_y), run.sparse_ready,
                              lambda: run.flat_weights(layout))
        bar.update(kept)
        if selection.curve:
            bar.set_postfix(epoch=f"{run.epoch:.1f}", val_acc=f"{selection.curve[-1]['val_acc']:.3f}")
    bar.close()
    return selection.result(run.step, device, layout.numel)


def generate_population(run_ids, args, split, device):
    """Train the runs --population at a time in one process (PopulationTrainer), a new run taking
    the place of each one that finishes; yields (run record, weights) as each run finishes."""
    (x, y), (val_x, val_y) = split
    pop = PopulationTrainer(x, y, model_config(args), TrainConfig.from_args(args), device=device)
    layout = FlatLayout.of(TinyNN(**model_config(args)))
    pending, selections, looks = list(run_ids), [], []  # selections[i], looks[i]: of pop.runs[i]
    bar = tqdm(total=len(run_ids) * args.ckpts_per_run, desc=f"population of {args.population}", position=1,
               leave=False, unit="ckpt", disable=args.quiet)
    while pending or selections:
        while pending and len(selections) < args.population:
            run_id = pending.pop(0)
            seed = run_seed(args.seed, run_id)
            selection = Selection(run_id, seed, args, pop.add(seed).steps_per_epoch)
            selections.append(selection)
            looks.append(selection.steps_to_look(0))
        pop.train(min(look - run.step for look, run in zip(looks, pop.runs)))
        due = [i for i, run in enumerate(pop.runs) if run.step == looks[i]]
        accuracies = pop.accuracy(due, val_x, val_y)
        for i, acc in zip(due, accuracies):
            run = pop.runs[i]
            bar.update(selections[i].look(run.step, pop.take_loss(i), lambda: acc, run.sparse_ready,
                                          lambda: pop.flat_weights(i, layout)))
            looks[i] = run.step + selections[i].steps_to_look(run.step)
        finished = [i for i, run in enumerate(pop.runs) if selections[i].done(run.step)]
        for i in finished:
            yield selections[i].result(pop.runs[i].step, device, layout.numel, population=args.population)
        if finished:
            pop.remove(finished)
        selections = [s for i, s in enumerate(selections) if i not in finished]
        looks = [look for i, look in enumerate(looks) if i not in finished]
    bar.close()


# --- parallel workers: each process loads the data once and trains whole runs ---------------
_worker = {}


def _init_worker(args, device, threads, slots):
    torch.set_num_threads(threads)
    _worker.update(args=args, device=device, split=load_split(args, device), position=slots.get())


def _work(run_id):
    w = _worker
    record, weights = generate_run(run_id, w["args"], w["split"], w["device"], w["position"])
    cd.save_run(w["args"].folder, record, weights, w["args"].settings)
    return record


def pending_runs(args):
    """This shard's run ids that have no run file yet."""
    done = set(cd.completed_runs(args.folder))
    mine = [r for r in range(args.runs) if r % args.num_shards == args.shard]
    return [r for r in mine if r not in done]


def run_all(args, todo, device):
    """Train the pending runs, in this process or in --workers processes; yields records."""
    if args.workers == 1:
        split = load_split(args, device)
        if args.population > 1:
            finished = generate_population(todo, args, split, device)
        else:
            finished = (generate_run(run_id, args, split, device, position=1) for run_id in todo)
        for record, weights in finished:
            cd.save_run(args.folder, record, weights, args.settings)
            yield record
        return
    ctx = mp.get_context("spawn")
    threads = max(1, torch.get_num_threads() // args.workers) if device.type == "cpu" else 1
    with ctx.Manager() as manager:
        slots = manager.Queue()  # progress-bar rows, one per worker
        for i in range(args.workers):
            slots.put(i + 1)
        with ctx.Pool(args.workers, _init_worker, (args, device, threads, slots)) as pool:
            yield from pool.imap_unordered(_work, todo)


def summarize(folder, manifest, wall_seconds):
    """summary.json + summary.txt beside the manifest, and the accuracy-vs-step plot."""
    accs = np.array([c["val_acc"] for c in manifest["checkpoints"]]) if manifest["checkpoints"] else np.zeros(0)
    runs = manifest["runs"]
    summary = dict(
        runs=len(runs), complete_runs=sum(r["complete"] for r in runs), checkpoints=len(accs),
        val_acc=dict(mean=float(accs.mean()), std=float(accs.std()), min=float(accs.min()),
                     max=float(accs.max())) if len(accs) else None,
        n_params=manifest["n_params"], run_seconds_total=round(sum(r["seconds"] for r in runs), 1),
        wall_seconds_this_command=round(wall_seconds, 1),
    )
    write_json(os.path.join(folder, "summary.json"), summary)
    lines = [f"{k}: {json.dumps(v)}" for k, v in summary.items()]
    text = "\n".join(lines)
    with open(os.path.join(folder, "summary.txt"), "w") as f:
        f.write(text + "\n")
    plot_curves(runs, manifest["selection"]["min_acc"], os.path.join(folder, "accuracy_vs_step.png"))
    return text


def plot_curves(runs, min_acc, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 5))
    for r in runs:
        ax.plot([p["step"] for p in r["curve"]], [p["val_acc"] for p in r["curve"]], lw=1, label=f"run {r['run']}")
    ax.axhline(min_acc, color="k", ls="--", lw=0.8, label="--min_acc")
    ax.set(xlabel="training step", ylabel="validation accuracy", title="TinyNN runs: accuracy against step")
    if len(runs) <= 12:
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(args):
    args.folder = cd.dataset_folder(args.checkpoint_dir)
    if args.assemble:
        manifest = cd.assemble_manifest(args.folder)
        print(summarize(args.folder, manifest, 0.0))
        return
    device = pick_device(args.device)
    args.population = args.population or (GPU_POPULATION if device.type == "cuda" else 1)
    args.settings = dataset_settings(args)
    cd.init_settings(args.folder, args.settings)
    cd.check_recipes(args.folder)  # the runs done so far: one recipe, this one
    todo = pending_runs(args)
    print(f"{args.folder}: {len(todo)} runs to train on {device} "
          f"(shard {args.shard}/{args.num_shards}, {args.runs} runs in all; population {args.population})")
    t0 = time.time()
    bar = tqdm(total=len(todo), desc="runs", unit="run", position=0, disable=args.quiet)
    try:
        for record in run_all(args, todo, device):
            bar.update(1)
            tqdm.write(f"run {record['run']}: {len(record['checkpoints'])} checkpoints, "
                       f"min_acc reached at step {record['reached_min_acc_step']}, {record['seconds']}s")
    except KeyboardInterrupt:
        bar.close()
        print(f"\ninterrupted: {len(cd.completed_runs(args.folder))} runs are saved in {args.folder}; "
              f"run the same command to continue.")
        sys.exit(130)
    bar.close()
    missing = set(range(args.runs)) - set(cd.completed_runs(args.folder))
    if missing:  # other shards are still at work: the last one to finish assembles the manifest
        print(f"shard {args.shard}/{args.num_shards} done; {len(missing)} runs of other shards are not in "
              f"{args.folder} yet: the last shard to finish writes the manifest (or run --assemble)")
        return
    manifest = cd.assemble_manifest(args.folder)
    print(summarize(args.folder, manifest, time.time() - t0))
    failed = [r["run"] for r in manifest["runs"] if r["reached_min_acc_step"] is None]
    if failed:
        message = (f"{len(failed)} of {len(manifest['runs'])} runs never reached --min_acc {args.min_acc} in "
                   f"--max_epochs {args.max_epochs:g}, or diverged (runs {failed[:10]}); their files record it, "
                   f"without checkpoints")
        if len(failed) == len(manifest["runs"]):
            sys.exit(f"error: {message}")
        print(f"note: {message}")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                fromfile_prefix_chars="@")  # @configs/NAME.args: a named dataset's flags
    p.add_argument("--checkpoint_dir", required=True,
                   help="dataset name: written to checkpoints/NAME/ (an absolute path is used as it is)")
    p.add_argument("--runs", type=count, default=10, help="independent training runs (default 10)")
    p.add_argument("--ckpts_per_run", type=count, default=250, help="checkpoints kept per run (default 250)")
    p.add_argument("--min_acc", type=share, default=0.75,
                   help="validation accuracy a checkpoint needs to be kept (default 0.75)")
    p.add_argument("--max_epochs", type=positive, default=60,
                   help="upper bound on a run's epochs; a run that hits it keeps what it has, and one that never "
                        "reached --min_acc says so (default 60)")
    p.add_argument("--save_every", type=count, default=6,
                   help="SGD steps between checkpoints, so that they differ (default 6)")
    p.add_argument("--widths", type=count, nargs=3, default=TINYNN_DEFAULTS["widths"], metavar=("W0", "W1", "W2"),
                   help="TinyNN's channels in its three stages (default %s)" % " ".join(map(str, TINYNN_DEFAULTS["widths"])))
    TrainConfig.add_flags(p)  # the training recipe: --epochs, --batch_size, --lr, --weight_decay, ...
    p.add_argument("--val_size", type=count, default=2000,
                   help="training images held out to measure checkpoint accuracy (default 2000)")
    p.add_argument("--train_size", type=whole, default=0,
                   help="train on only this many images (0: all but the validation split); for quick tests")
    add_runtime_flags(p, seed_help="base seed; run i uses a seed derived from (seed, i) (default 0)")
    p.add_argument("--workers", type=count, default=1,
                   help="runs trained in parallel processes, one run at a time each (default 1)")
    p.add_argument("--population", type=whole, default=0,
                   help="runs trained together in this process, stacked and vmapped (population_training.py); "
                        f"0: {GPU_POPULATION} on a GPU, 1 (one run at a time) on the CPU (default 0)")
    p.add_argument("--shard", type=whole, default=0, help="this worker's index when runs are split (default 0)")
    p.add_argument("--num_shards", type=count, default=1,
                   help="number of machines/processes splitting the runs: shard i takes runs i, i+n, ... "
                        "(under torchrun: RANK and WORLD_SIZE, with no flag)")
    p.add_argument("--assemble", action="store_true",
                   help="only rebuild manifest.json and the summary from the run files present")
    args = p.parse_args(argv)
    if int(os.environ.get("WORLD_SIZE", 1)) > 1 and args.num_shards == 1:  # under torchrun: one shard a rank
        args.shard, args.num_shards = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        if args.device == "auto" and torch.cuda.is_available():  # and one GPU a rank on each machine
            args.device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0)) % torch.cuda.device_count()}"
    if not 0 <= args.shard < args.num_shards:
        p.error(f"--shard must be in [0, {args.num_shards})")
    if args.population > 1 and args.workers > 1:
        p.error("--population P > 1 trains P runs in this process: use it with --workers 1")
    return args


if __name__ == "__main__":
    run_main(main, parse_args)
