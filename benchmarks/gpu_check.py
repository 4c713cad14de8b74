"""The GPU paths, run once on a device in one call: correctness first, then speed, each figure
printed as it comes and written at once into one JSON (--out), so that a timeout keeps the
figures so far. A check records both numbers and its tolerance, and a failed check or a broken
stage is recorded and the next stage runs; the exit status is 1 when anything failed.

1. checks: a population of runs trains what its runs train one at a time: tests/test_population.py's
   comparison on the device, to its tolerance (seeds 3 and 5 joining at steps 0 and 2; plain and
   L1 + pruning); and Gen_Diffusion_Dataset.py --population 2 against --population 1, the same
   checkpoints, with their update errors recorded. train_diffusion.py --compile trains what the
   plain step trains, as tests/test_trainers.py compares them (inductor's random numbers drawn as
   eager PyTorch draws them; losses and EMA weights to float rounding).
2. zoo_speed: benchmarks.zoo_speed's measurement: one run at a time against populations of
   --populations runs, and which is fastest (the GPU default of --population should be that).
3. zoo: a dataset of --runs runs x --ckpts_per_run checkpoints of the default recipe at that
   population, or the runs that finish in --zoo_seconds; runs per minute.
4. pipeline: on that zoo, train_vae.py, train_diffusion.py without and with --compile (seconds per
   epoch, extrapolated to its default epochs), sample.py, evaluate_generated.py: seconds of each,
   then the last check: the sampled networks' accuracies from evaluate_generated.py on the device
   against the same networks evaluated on the CPU.

    python -m benchmarks.gpu_check --device cuda                 # all of CIFAR-10
    python -m benchmarks.gpu_check --device cuda --data_dir .gpu_data --min_acc 0.6   # data_batch_1 only
    python -m benchmarks.gpu_check --device cpu --runs 2 --ckpts_per_run 3 --populations 2 \\
        --tinynn_epochs 0.05 --min_acc 0 --train_size 2000 --vae_epochs 2 --diffusion_epochs 2 \\
        --num_models 2 --test_images 200 --skip compile        # the same script at a tiny size

The scripts run in this process (weightgen.cli), on datasets and models under --work only. A
--data_dir that holds only some of CIFAR-10's five training batches (a device that can carry two
files: data_batch_1 and test_batch) is re-split into five files under --work, as the loader
reads them: fewer training images, every one real, and the JSON says how many. On data_batch_1
alone (8,000 training images beside the 2,000 held out) the recipe's runs end their schedule near
0.68 validation accuracy (one run on a CPU), short of the default --min_acc 0.75: pass a lower bar.
"""
import argparse
import importlib
import json
import os
import pickle
import shlex
import shutil
import signal
import sys
import time

import numpy as np
import torch

from benchmarks.zoo_speed import lone_steps_per_second, population_steps_per_second
from weightgen import ROOT
from weightgen import checkpoint_dataset as cd
from weightgen.cifar10 import BATCHES_DIR, TEST_FILE, TRAIN_FILES, _batches_dir, _read_batch, load_cifar10
from weightgen.cli import add_more_flags, add_runtime_flags, count, positive, run_main, run_script, run_step, \
    runtime_argv, whole
from weightgen.model_io import DIFFUSION_KIND, GENERATED_KIND, load_checkpoint, pick_device, write_json
from weightgen.population_training import PopulationTrainer
from weightgen.tinynn import FlatLayout, TinyNN
from weightgen.tinynn_training import RunTrainer, TrainConfig, probabilities_flat

# tests/test_population.py's two recipes, and its bound on |population update - lone update| /
# |lone update| of runs of seeds 3 and 5 joining at steps 0 and 2 (lr 0.05: at the recipe's 0.2 the
# first steps are chaotic, and a rounding difference grows to percents).
POPULATION_CONFIGS = {"default": dict(batch_size=64, epochs=1, lr=0.05),
                      "l1_prune": dict(batch_size=64, epochs=1, lr=0.05, weight_decay=5e-3, l1=1e-4, prune=0.5,
                                       prune_at=0.05)}
POPULATION_TOLERANCE = 1e-2
# Gen_Diffusion_Dataset.py with that recipe, --population 2 against 1: checkpoints after 3 and 5 steps
# (192 training images: 3 steps an epoch; min_acc 0 keeps the first look), three runs so that one
# joins when the first two leave. Their update errors are recorded, not bounded: the test's bound
# holds for its seeds joining at different steps; two runs that start together round apart from
# step 0, and on a 2-core CPU reach 1-2% after 5 steps (as one run on 1 and on 2 threads: 0.7%).
POPULATION_DATASET = ["--runs", 3, "--ckpts_per_run", 2, "--min_acc", 0, "--train_size", 192, "--val_size", 100,
                      "--batch_size", 64, "--epochs", 10.34, "--warmup_epochs", 10.34, "--lr", 0.05, "--save_every", 2]
# tests/test_trainers.py's diffusion training and its tolerances.
COMPILE_RECIPE = ["--space", "weights", "--hidden", 32, "--depth", 1, "--time_dim", 16, "--timesteps", 50,
                  "--batch_size", 4, "--save_every", 1, "--epochs", 3]
COMPILE_TOLERANCE = dict(loss_rel=1e-4, ema_rtol=1e-4, ema_atol=1e-5)
SCRATCH_MARK = ".gpu_check_scratch"  # --work is emptied at the start only when it holds this
STAGES = ("population", "compile", "zoo_speed", "pipeline")


class Report:
    """The JSON, rewritten whole after every figure, and one printed line per figure."""

    def __init__(self, path, **head):
        self.path, self.data = path, dict(head, errors={})
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        write_json(self.path, self.data)

    def put(self, key, value):
        """Set the figure at dotted `key` (section.name...) and save."""
        *sections, name = key.split(".")
        node = self.data
        for s in sections:
            node = node.setdefault(s, {})
        node[name] = value
        write_json(self.path, self.data)
        text = json.dumps(value) if isinstance(value, (dict, list)) else value
        print(f"= {key}: {text}", flush=True)

    def get(self, key, default=None):
        node = self.data
        for s in key.split("."):
            if not isinstance(node, dict) or s not in node:
                return default
            node = node[s]
        return node


def attempt(report, name, fn, *args):
    """fn(*args), or None with the failure recorded under errors.NAME (a script's failure exits
    with its one line: that is recorded too); the seconds it took under timings.NAME."""
    t0 = time.time()
    try:
        return fn(*args)
    except (Exception, SystemExit) as e:
        if isinstance(e, SystemExit) and e.code == 130:  # Ctrl-C in a script: stop here too
            raise
        report.put(f"errors.{name}", f"{type(e).__name__}: {e}")
        return None
    finally:
        report.put(f"timings.{name}_seconds", round(time.time() - t0, 2))


def relative(a, b):
    """Largest |a - b| / |b| over two lists of numbers."""
    return max(abs(x - y) / abs(y) for x, y in zip(a, b)) if a else 0.0


# --- the scratch folder and the data ------------------------------------------------------


def scratch(work):
    """Empty --work for this run; refuse a folder that this script did not make."""
    if os.path.exists(work):
        if not os.path.exists(os.path.join(work, SCRATCH_MARK)):
            sys.exit(f"error: --work {work} exists and was not made by benchmarks/gpu_check.py: pick another")
        shutil.rmtree(work)
    os.makedirs(work)
    open(os.path.join(work, SCRATCH_MARK), "w").close()


def prepare_data(args):
    """(the --data_dir the scripts read, what it holds). All five training batches: --data_dir
    itself. Some of them: a copy under --work of the images they hold, re-split into five files
    because weightgen's loader reads five, with the test batch beside them."""
    src = _batches_dir(args.data_dir)
    present = [f for f in TRAIN_FILES if os.path.isfile(os.path.join(src, f))]
    if len(present) in (0, len(TRAIN_FILES)):  # all of them, or none: the loader says what is missing
        return args.data_dir, dict(train_files=present, resplit=False)
    images, labels = zip(*(_read_batch(os.path.join(src, f)) for f in present))
    images, labels = np.concatenate(images), np.concatenate(labels)
    data_dir = os.path.join(args.work, "cifar10")
    dst = os.path.join(data_dir, BATCHES_DIR)
    os.makedirs(dst)
    for name, rows in zip(TRAIN_FILES, np.array_split(np.arange(len(labels)), len(TRAIN_FILES))):
        with open(os.path.join(dst, name), "wb") as f:
            pickle.dump(dict(data=images[rows].reshape(len(rows), -1), labels=labels[rows].tolist()), f)
    for name in (TEST_FILE, "batches.meta"):
        if os.path.isfile(os.path.join(src, name)):
            shutil.copyfile(os.path.join(src, name), os.path.join(dst, name))
    return data_dir, dict(train_files=present, resplit=True)


# --- 1. correctness on the device ---------------------------------------------------------


def dataset(folder, flags, runtime):
    run_step(["Gen_Diffusion_Dataset.py", "--checkpoint_dir", folder, *flags, "--quiet", *runtime])
    manifest = cd.load_manifest(folder)
    return manifest, cd.load_weights(folder, manifest)


def initial_weights(seed, layout):
    """A run's weights before its first step (RunTrainer's initialisation of `seed`)."""
    run = RunTrainer(torch.zeros(1, 3, 32, 32, dtype=torch.uint8), torch.zeros(1, dtype=torch.long), seed)
    return run.flat_weights(layout)


def trainer_errors(images, labels, cfg, device):
    """tests/test_population.py's test_each_run_follows_its_lone_path on `device`: runs of seeds 3 and
    5 join a population at steps 0 and 2; each one's relative update error against itself alone."""
    layout = FlatLayout.of(TinyNN())
    starts = [RunTrainer(images, labels, seed, train_config=cfg, device=device).flat_weights(layout) for seed in (3, 5)]
    pop = PopulationTrainer(images, labels, train_config=cfg, device=device)
    pop.add(3)
    pop.train(2)
    pop.add(5)
    pop.train(3)
    errors = []
    for row, (seed, steps) in enumerate(((3, 5), (5, 3))):
        alone = RunTrainer(images, labels, seed, train_config=cfg, device=device)
        alone.train(steps)
        update = alone.flat_weights(layout) - starts[row]
        errors.append(((pop.flat_weights(row, layout) - starts[row] - update).norm() / update.norm()).item())
    return errors


def dataset_comparison(args, runtime):
    """Gen_Diffusion_Dataset.py --population 2 against --population 1: the same checkpoints (run,
    step), and each one's relative update error."""
    base = os.path.join(args.work, "population_check")
    pop, pop_w = dataset(os.path.join(base, "population"), [*POPULATION_DATASET, "--population", 2], runtime)
    lone, lone_w = dataset(os.path.join(base, "lone"), [*POPULATION_DATASET, "--population", 1], runtime)
    steps = lambda m: [[c["run"], c["step"]] for c in m["checkpoints"]]
    layout = FlatLayout.of(TinyNN())
    starts = {r["run"]: initial_weights(r["seed"], layout) for r in lone["runs"]}
    errors = [((p - q).norm() / (q - starts[c["run"]]).norm()).item()
              for p, q, c in zip(pop_w, lone_w, lone["checkpoints"])]
    return dict(checkpoints=steps(lone), population_checkpoints=steps(pop), relative_update_errors=errors,
                same_checkpoints=steps(pop) == steps(lone) and len(pop_w) == len(lone_w) > 0)


def population_check(report, args, runtime, data, device):
    images, labels = data.train_images[:2000], data.train_labels[:2000]  # the test's images
    passed = []
    for name, config in POPULATION_CONFIGS.items():
        errors = trainer_errors(images, labels, TrainConfig(**config), device)
        passed.append(max(errors) < POPULATION_TOLERANCE)
        report.put(f"checks.population.{name}", dict(relative_update_errors=errors, passed=passed[-1]))
    report.put("checks.population.tolerance", POPULATION_TOLERANCE)
    if device.type == "cuda":  # a diagnosis, not a check: the same with cuDNN's TF32 convolutions off
        tf32, torch.backends.cudnn.allow_tf32 = torch.backends.cudnn.allow_tf32, False
        try:
            errors = trainer_errors(images, labels, TrainConfig(**POPULATION_CONFIGS["default"]), device)
            report.put("checks.population.default_without_tf32", dict(relative_update_errors=errors))
        finally:
            torch.backends.cudnn.allow_tf32 = tf32
    datasets = attempt(report, "population_datasets", dataset_comparison, args, runtime)
    report.put("checks.population.datasets", datasets)
    report.put("checks.population.passed", all(passed) and bool(datasets and datasets["same_checkpoints"]))


def diffusion_run(folder, name, flags, runtime):
    """(wall seconds, history of the log, checkpoint) of one train_diffusion.py run named `name`."""
    seconds = run_step(["train_diffusion.py", "--checkpoint_dir", folder, "--run_name", name, *flags, "--quiet",
                        *runtime])
    with open(os.path.join(folder, name, "log.jsonl")) as f:
        history = [json.loads(line) for line in f]
    return seconds, history, os.path.join(folder, name, "diffusion.pt")


def compile_check(report, args, runtime):
    """test_trainers.py's comparison of --compile with the plain step, on the device."""
    import torch._inductor.config
    folder = os.path.join(args.work, "population_check", "lone")
    if not os.path.exists(os.path.join(folder, cd.MANIFEST)):  # --skip population
        dataset(folder, [*POPULATION_DATASET, "--population", 1], runtime)
    with torch._inductor.config.patch(fallback_random=True):
        runs = {name: diffusion_run(folder, f"compile_check_{name}", [*COMPILE_RECIPE, *flags], runtime)
                for name, flags in (("plain", []), ("compiled", ["--compile"]))}
    losses = {name: [h["loss"] for h in run[1]] for name, run in runs.items()}
    ema = {name: load_checkpoint(run[2], DIFFUSION_KIND)["ema"] for name, run in runs.items()}
    loss_rel = relative(losses["compiled"], losses["plain"])
    ema_ok = all(torch.allclose(ema["compiled"][k], w, rtol=COMPILE_TOLERANCE["ema_rtol"],
                                atol=COMPILE_TOLERANCE["ema_atol"]) for k, w in ema["plain"].items())
    ema_diff = max((ema["compiled"][k] - w).abs().max().item() for k, w in ema["plain"].items())
    report.put("checks.compile", dict(
        losses_plain=losses["plain"], losses_compiled=losses["compiled"], max_relative_loss_difference=loss_rel,
        max_ema_difference=ema_diff, tolerance=COMPILE_TOLERANCE,
        passed=bool(len(losses["plain"]) == len(losses["compiled"]) > 0
                    and loss_rel <= COMPILE_TOLERANCE["loss_rel"] and ema_ok)))


# --- 2. populations against one run at a time ---------------------------------------------


def zoo_speed(report, args, data, device):
    """benchmarks.zoo_speed's rows; returns the fastest population (1: one run at a time)."""
    images, labels = data.train_images, data.train_labels
    base = lone_steps_per_second(images, labels, args.lone_runs, args.speed_steps, device)
    rates = {1: base}

    def put(size, rate):
        name = "one_at_a_time" if size == 1 else f"population_{size}"
        report.put(f"zoo_speed.{name}", dict(run_steps_per_s=round(rate, 2), ratio=round(rate / base, 3),
                                             runs_per_min=round(60 * rate / args.run_steps, 3)))
    put(1, base)
    for size in args.populations:
        rates[size] = population_steps_per_second(images, labels, size, args.speed_steps, device)
        put(size, rates[size])
        if device.type == "cuda":
            torch.cuda.empty_cache()  # the population's stacks, before a larger one
    best = max(rates, key=rates.get)
    report.put("zoo_speed.best_population", best)
    report.put("zoo_speed.gpu_default_now", importlib.import_module("Gen_Diffusion_Dataset").GPU_POPULATION)
    return best


# --- 3. a zoo of the default recipe -------------------------------------------------------


def within(seconds, fn):
    """(fn(), False), or (None, True) when `seconds` passed first: then fn was sent what Ctrl-C
    sends, a KeyboardInterrupt, which Gen_Diffusion_Dataset.py answers by keeping its finished runs."""
    fired = []

    def stop(signum, frame):
        fired.append(signum)
        raise KeyboardInterrupt
    previous = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        return fn(), bool(fired)
    except KeyboardInterrupt:
        if not fired:
            raise
        return None, True
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def zoo(report, args, runtime, population):
    """Gen_Diffusion_Dataset.py of the recipe at `population`, stopped after --zoo_seconds; returns
    the dataset folder."""
    folder = os.path.join(args.work, "zoo")
    cmd = ["Gen_Diffusion_Dataset.py", "--checkpoint_dir", folder, "--runs", args.runs, "--ckpts_per_run",
           args.ckpts_per_run, "--population", population, "--epochs", args.tinynn_epochs, "--min_acc", args.min_acc,
           "--train_size", args.train_size, "--val_size", args.val_size, "--quiet", *args.dataset_flags, *runtime]
    print("\n$ python " + " ".join(shlex.quote(str(c)) for c in cmd), flush=True)
    t0 = time.time()
    status, stopped = within(args.zoo_seconds, lambda: run_script(cmd[0], cmd[1:]))
    seconds = time.time() - t0
    if stopped or status == 130:
        run_script(cmd[0], ["--checkpoint_dir", folder, "--assemble"])
    manifest = cd.load_manifest(folder)
    runs = manifest["runs"]
    steps = [r["steps"] for r in runs]
    report.put("zoo.figures", dict(
        population=population, runs_asked=args.runs, runs_finished=len(runs),
        complete_runs=sum(r["complete"] for r in runs), checkpoints=len(manifest["checkpoints"]),
        stopped_at_zoo_seconds=bool(stopped), seconds=round(seconds, 1),
        runs_per_min=round(60 * len(runs) / seconds, 3), run_steps_per_s=round(sum(steps) / seconds, 2),
        median_run_steps=float(np.median(steps)) if runs else None, status=status))
    if not manifest["checkpoints"]:
        raise RuntimeError(f"the zoo has no checkpoints (Gen_Diffusion_Dataset.py status {status})")
    return folder


# --- 4. the pipeline on the zoo -----------------------------------------------------------


def epoch_figures(wall, history, default_epochs):
    """Seconds of a train_diffusion.py run from its log (seconds since training began, at 0.1 s):
    the first epoch (a compile included), each later one, and the run extrapolated to the
    script's default epochs (setup: loading, latents, the last save and plot)."""
    first, last, n = history[0]["seconds"], history[-1]["seconds"], len(history)
    per_epoch = (last - first) / (n - 1) if n > 1 else first
    setup = wall - last
    return dict(epochs=n, wall_seconds=round(wall, 2), setup_seconds=round(setup, 2), first_epoch_seconds=first,
                seconds_per_epoch=round(per_epoch, 4), log_resolution_seconds=0.1,
                default_epochs=default_epochs,
                extrapolated_seconds=round(setup + first + (default_epochs - 1) * per_epoch, 1),
                losses=[h["loss"] for h in history])


def pipeline(report, args, runtime, folder, device):
    vae = attempt(report, "vae", run_step, ["train_vae.py", "--checkpoint_dir", folder, "--epochs", args.vae_epochs,
                                            "--test_images", args.test_images, "--quiet", *args.vae_flags, *runtime])
    if vae is not None:
        with open(os.path.join(folder, "vae", "final.json")) as f:
            final = json.load(f)
        report.put("pipeline.vae", dict(wall_seconds=round(vae, 1), epochs=args.vae_epochs,
                                        train_seconds=final["train_seconds"],
                                        seconds_per_epoch=round(final["train_seconds"] / args.vae_epochs, 3),
                                        prior_accuracy=final["prior"]["mean"]))
    default_epochs = script_default("train_diffusion", "epochs", "--checkpoint_dir", "-")
    names = ["plain"] + ([] if "compile" in args.skip else ["compiled"])
    for name in names:
        flags = ["--epochs", args.diffusion_epochs, *(["--compile"] if name == "compiled" else []),
                 *args.diffusion_flags]
        run = attempt(report, f"diffusion_{name}", diffusion_run, folder, f"diffusion_{name}", flags, runtime)
        if run:
            report.put(f"pipeline.diffusion_{name}", epoch_figures(run[0], run[1], default_epochs))
    plain, compiled = report.get("pipeline.diffusion_plain"), report.get("pipeline.diffusion_compiled")
    if plain and compiled:
        speedup = plain["seconds_per_epoch"] / max(compiled["seconds_per_epoch"], 1e-9)
        report.put("pipeline.compile_speedup_per_epoch", round(speedup, 3))
        difference = relative(compiled["losses"], plain["losses"])
        report.put("pipeline.compiled_losses", dict(max_relative_difference=difference, note="inductor's own "
                                                    "random draws: not a check (checks.compile is)"))
    samples = os.path.join(args.work, "samples")
    seconds = attempt(report, "sample", run_step, ["sample.py", "--model_path", os.path.join(
        folder, "diffusion_plain", "diffusion.pt"), "--num_models", args.num_models, "--out", samples, "--quiet",
        *args.sample_flags, *runtime])
    if seconds is not None:
        report.put("pipeline.sample_seconds", round(seconds, 2))
    seconds = attempt(report, "evaluate", run_step, ["evaluate_generated.py", "--model_path", samples,
                                                     "--test_images", args.test_images, *args.evaluate_flags,
                                                     *runtime])
    if seconds is not None:
        report.put("pipeline.evaluate_seconds", round(seconds, 2))
    attempt(report, "sampled_accuracy", sampled_accuracy_check, report, args, samples, device)


def sampled_accuracy_check(report, args, samples, device):
    """The first --accuracy_models networks: their accuracies in evaluate_generated.py's report
    (on the device) against the same networks evaluated on the CPU."""
    generated = load_checkpoint(os.path.join(samples, "generated.pt"), GENERATED_KIND)
    layout, config = FlatLayout.from_json(generated["layout"]), generated["tinynn"]
    with open(os.path.join(samples, "report.json")) as f:
        on_device = json.load(f)["per_model"]["generated"]["accuracy"][:args.accuracy_models]
    weights = generated["weights"][:len(on_device)]
    images, labels = load_cifar10(args.data_dir, "cpu", download=False).first_test(args.test_images)
    preds = {d: probabilities_flat(weights, layout, config, images.to(d), d).argmax(2).cpu() for d in ("cpu", device)}
    on_cpu = preds["cpu"].eq(labels).float().mean(1).tolist()
    worst = max(abs(a - b) for a, b in zip(on_device, on_cpu))
    report.put("checks.sampled_accuracy", dict(
        device_accuracy=on_device, cpu_accuracy=on_cpu, max_abs_difference=worst, tolerance=args.accuracy_tolerance,
        predictions_differing=preds["cpu"].ne(preds[device]).sum(1).tolist(), test_images=len(labels),
        passed=bool(len(on_device) > 0 and worst <= args.accuracy_tolerance)))


# --- the whole run ------------------------------------------------------------------------


def environment(device):
    env = dict(device=str(device), torch=torch.__version__, cpu_threads=torch.get_num_threads())
    if device.type == "cuda":
        env.update(gpu=torch.cuda.get_device_name(device), cudnn_tf32=torch.backends.cudnn.allow_tf32,
                   matmul_tf32=torch.backends.cuda.matmul.allow_tf32)
    return env


def failures(report, skip):
    """What failed: the checks that did not pass or never ran, and the stages that broke."""
    checks = report.get("checks", {})
    expected = ["population", "compile"] + ([] if "pipeline" in skip else ["sampled_accuracy"])
    missing = [c for c in expected if c not in checks]
    failed = [c for c, r in checks.items() if not (r.get("passed") or r.get("skipped"))]
    return failed + [f"{c} (not run)" for c in missing] + [f"error in {e}" for e in report.get("errors", {})]


def main(args):
    t0 = time.time()
    device = pick_device(args.device)
    args.device = str(device)
    scratch(args.work)
    args.data_dir, held = prepare_data(args)
    report = Report(args.out, environment=environment(device), args=vars(args))
    report.put("data", dict(held, data_dir=args.data_dir))
    data = load_cifar10(args.data_dir, device, download=not args.no_download)
    report.put("data.train_images", len(data.train_labels))
    runtime = runtime_argv(args)
    stages = dict(population=(population_check, data, device), compile=(compile_check,))
    for stage, (fn, *more) in stages.items():
        if stage in args.skip:
            report.put(f"checks.{stage}", dict(skipped=f"--skip {stage}"))
        else:
            attempt(report, stage, fn, report, args, runtime, *more)
    population = args.zoo_population
    if "zoo_speed" not in args.skip:
        population = population or attempt(report, "zoo_speed", zoo_speed, report, args, data, device)
    population = population or (importlib.import_module("Gen_Diffusion_Dataset").GPU_POPULATION
                                if device.type == "cuda" else 1)
    del data
    if "pipeline" not in args.skip:
        folder = attempt(report, "zoo", zoo, report, args, runtime, population)
        if folder:
            pipeline(report, args, runtime, folder, device)
    failed = failures(report, args.skip)
    report.put("failed", failed)
    report.put("total_seconds", round(time.time() - t0, 1))
    if failed:
        sys.exit(f"error: {len(failed)} failed: {'; '.join(failed)} (figures in {args.out})")
    print(f"all checks passed; figures in {args.out}")


def script_default(script, key, *required):
    return vars(importlib.import_module(script).parse_args(list(required)))[key]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    gen = lambda key: script_default("Gen_Diffusion_Dataset", key, "--checkpoint_dir", "-")
    vae_epochs = script_default("train_vae", "epochs", "--checkpoint_dir", "-")
    num_models = script_default("sample", "num_models", "--model_path", "-")
    p.add_argument("--out", default=os.path.join(ROOT, "results", "gpu_check.json"),
                   help="the JSON of every figure, rewritten after each (default results/gpu_check.json)")
    p.add_argument("--work", default=os.path.join(ROOT, "checkpoints", "gpu_check"),
                   help="scratch folder for every dataset and model this writes, emptied at the start; a folder "
                        "this script did not make is refused (default checkpoints/gpu_check)")
    p.add_argument("--skip", nargs="+", choices=STAGES, default=[],
                   help="stages left out: population (check), compile (the check and the compiled timing), "
                        "zoo_speed, pipeline (the zoo and all after it) (default none)")
    p.add_argument("--populations", type=count, nargs="+", default=[8, 32, 100],
                   help="population sizes timed against one run at a time (default 8 32 100)")
    p.add_argument("--lone_runs", type=count, default=2, help="runs timed one at a time (default 2)")
    p.add_argument("--speed_steps", type=count, default=50, help="timed SGD steps of each run (default 50)")
    p.add_argument("--run_steps", type=count, default=3700,
                   help="steps of one run at the seed's scale, for zoo_speed's runs/min (default 3700)")
    p.add_argument("--runs", type=count, default=100, help="runs of the zoo (default 100)")
    p.add_argument("--ckpts_per_run", type=count, default=25, help="checkpoints of every zoo run (default 25)")
    p.add_argument("--zoo_seconds", type=positive, default=180,
                   help="the zoo keeps the runs finished after this many seconds (default 180)")
    p.add_argument("--zoo_population", type=whole, default=0,
                   help="runs trained together in the zoo (default 0: the fastest of zoo_speed; without it "
                        "Gen_Diffusion_Dataset.py's GPU default, 1 on the CPU)")
    p.add_argument("--tinynn_epochs", type=positive, default=gen("epochs"),
                   help=f"zoo: length of a run's learning-rate schedule (Gen_Diffusion_Dataset.py --epochs; "
                        f"default {gen('epochs'):g})")
    p.add_argument("--min_acc", type=float, default=gen("min_acc"),
                   help=f"zoo: validation accuracy a checkpoint needs (default {gen('min_acc'):g})")
    p.add_argument("--train_size", type=whole, default=0,
                   help="zoo: training images of every run (default 0: all but the validation split)")
    p.add_argument("--val_size", type=count, default=gen("val_size"),
                   help=f"zoo: training images held out to choose checkpoints (default {gen('val_size')})")
    p.add_argument("--vae_epochs", type=count, default=vae_epochs, help=f"train_vae.py --epochs (default {vae_epochs})")
    p.add_argument("--diffusion_epochs", type=count, default=20,
                   help="train_diffusion.py --epochs of each timed run, plain and compiled (default 20)")
    p.add_argument("--num_models", type=count, default=num_models,
                   help=f"networks sample.py draws (default {num_models})")
    p.add_argument("--test_images", type=whole, default=0,
                   help="test images of train_vae.py's report, evaluate_generated.py and the CPU check (default 0: "
                        "all 10,000)")
    p.add_argument("--accuracy_models", type=count, default=10,
                   help="sampled networks evaluated again on the CPU (default 10)")
    p.add_argument("--accuracy_tolerance", type=float, default=0.002,
                   help="largest accepted difference of a network's accuracy, device against CPU (default 0.002: "
                        "20 of 10,000 test images)")
    add_runtime_flags(p, seed=False, quiet=False)
    for step, script, example, where in (
            ("dataset", "Gen_Diffusion_Dataset.py", "--save_every 6", "the zoo's"),
            ("vae", "train_vae.py", "--hidden 32", "the pipeline's"),
            ("diffusion", "train_diffusion.py", "--batch_size 4", "the pipeline's, plain and compiled"),
            ("sample", "sample.py", "--steps 20", "the pipeline's"),
            ("evaluate", "evaluate_generated.py", "--baseline_models 10", "the pipeline's")):
        add_more_flags(p, step, script, example, where=f" ({where}; default none)")
    return p.parse_args(argv)


if __name__ == "__main__":
    run_main(main, parse_args)
