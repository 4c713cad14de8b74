"""What the command lines share: the runtime flags every script takes, and the printing runner
that quickstart.py and experiments/ use to drive the scripts (each step runs in the driver's
process: a new Python process per step would pay torch's import, seconds on a small CPU, again).

    p = argparse.ArgumentParser(...)
    add_runtime_flags(p)                          # --data_dir --no_download --device --seed --quiet
    run_step(["train_vae.py", "--checkpoint_dir", name, *runtime_argv(args)], skip_if=".../final.json")
"""
import argparse
import importlib
import os
import shlex
import sys
import time

from weightgen import ROOT
from weightgen.checkpoint_dataset import DatasetError
from weightgen.cifar10 import DEFAULT_DATA_DIR, DataError
from weightgen.model_io import CheckpointError



def run_main(main, parse_args, argv=None):
    """main(parse_args(argv)), where a known problem (missing data, a wrong or corrupted file) ends
    the script with one line that says what to do, not a traceback."""
    try:
        main(parse_args(argv))
    except (DataError, DatasetError, CheckpointError) as e:
        sys.exit(f"error: {e}")


def count(text):
    """argparse type: a whole number >= 1 (a count or a size); anything else is one line, exit 2."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {text}")
    return value


def whole(text):
    """argparse type: a whole number >= 0."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {text}")
    return value


def nonnegative(text):
    """argparse type: a number >= 0 (a weight, a noise scale, a penalty: 0 turns it off)."""
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {text}")
    return value


def positive(text):
    """argparse type: a number > 0 (a rate, a scale)."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, not {text}")
    return value


def share(text):
    """argparse type: a share in [0, 1)."""
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), not {text}")
    return value


def add_generate_flags(parser, steps_flag, default_steps, lr_flag, default_oversample=1):
    """The flags of the generate path every generator ends in (weightgen/generate.py): training on,
    the fair bar for it, oversampling with the novelty check, and replacing an output folder."""
    from weightgen.tinynn_training import TRAIN_ON_DEFAULTS
    parser.add_argument(steps_flag, type=whole, default=default_steps,
                        help=f"train every network this many SGD steps with the dataset's recipe compressed to them, "
                             f"each in a data order of its own, on training images only (default {default_steps}"
                             f"{'' if default_steps else ': as generated'})")
    parser.add_argument(lr_flag, type=positive, default=TRAIN_ON_DEFAULTS["lr"],
                        help=f"peak learning rate of those steps (default {TRAIN_ON_DEFAULTS['lr']:g}, twice the "
                             f"recipe's: at the recipe's rate trained networks fall back towards their runs)")
    parser.add_argument("--fresh_dir", default=None,
                        help=f"with {steps_flag}: also train the last checkpoints of this fresh-seed dataset the "
                             f"same way, into OUT_fresh_trained/, the fair bar for trained networks "
                             f"(evaluate_generated.py --bar_from; default: none)")
    parser.add_argument("--oversample", type=count, default=default_oversample,
                        help=f"make K candidates for every network asked for and keep the --num_models whose "
                             f"mistakes on --check_images training images overlap least with those of any training "
                             f"checkpoint, among those as accurate there as the dataset's min_acc (default "
                             f"{default_oversample}; 1: keep all, no check)")
    parser.add_argument("--check_images", type=count, default=10000,
                        help="training images of that check (default 10000)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the networks of an output folder that holds some (default: refuse)")


def add_runtime_flags(parser, data=True, seed=True, quiet=True, seed_help="default 0"):
    """Flags that say where and how a script runs, not what it computes. data: the CIFAR-10
    flags (scripts that never read images leave them out)."""
    if data:
        parser.add_argument("--data_dir", default=DEFAULT_DATA_DIR,
                            help="folder with cifar-10-batches-py, downloaded there if missing and allowed (default "
                                 "$CIFAR10_DIR, else data/cifar10 in this clone)")
        parser.add_argument("--no_download", action="store_true", help="never try to download CIFAR-10")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    if seed:
        parser.add_argument("--seed", type=int, default=0, help=seed_help)
    if quiet:
        parser.add_argument("--quiet", action="store_true", help="no progress bars")


def add_more_flags(parser, step, script, example, where=""):
    """--STEP_flags "...": more flags for `script`, in one string, passed on to every run of it
    after the driver's fixed flags, so that they override those (argparse keeps the last)."""
    parser.add_argument(f"--{step}_flags", type=shlex.split, default=[],
                        help=f'more {script} flags in one string{where}, e.g. "{example}"')


def add_generator_flags(parser):
    """--model_path and --vae_path: the trained diffusion model a script samples from."""
    parser.add_argument("--model_path", required=True, help="diffusion checkpoint written by train_diffusion.py")
    parser.add_argument("--vae_path", default=None, help="the VAE, if it moved since training (it must be the same "
                                                         "file; default: the recorded path)")


def add_align_flag(parser, where=""):
    """--align: how the runs of a checkpoint dataset are aligned before a generator learns them."""
    from weightgen.alignment import ALIGN_METHODS
    parser.add_argument("--align", choices=ALIGN_METHODS, default="weights",
                        help=f"{where}how every run's channels are matched to the first run's: weights (weight "
                             f"matching; default), activations (correlation of channel outputs on 1,000 training "
                             f"images from --data_dir) or none (the ablation); cached in the dataset folder")


def add_test_images_flag(parser, where=""):
    """--test_images N: evaluations on the first N CIFAR-10 test images. `where` says which
    evaluations when a script makes others too."""
    parser.add_argument("--test_images", type=whole, default=0,
                        help=f"{where}evaluate on the first N test images (default 0: all 10,000; fewer only for "
                             f"quick looks and tests, never for figures you report)")


def runtime_argv(args, data=True):
    """The runtime flags of `args` as command-line arguments, to pass on to a script."""
    argv = ["--device", args.device]
    if data:
        argv += ["--data_dir", args.data_dir] + (["--no_download"] if args.no_download else [])
    return argv


def run_script(script, argv):
    """Run `python script *argv` (`script`: a file such as train_vae.py, or a module such as
    experiments.novelty for `python -m`) in this process and return its exit status (a script's
    one-line error goes to stderr, as Python prints it when the script exits with it)."""
    module = importlib.import_module(script[:-len(".py")] if script.endswith(".py") else script)
    saved, sys.argv = sys.argv, [script, *map(str, argv)]  # argparse names the script in its messages
    try:
        run_main(module.main, module.parse_args, sys.argv[1:])
    except SystemExit as e:
        if isinstance(e.code, str):
            print(e.code, file=sys.stderr, flush=True)
            return 1
        return e.code or 0
    finally:
        sys.argv = saved
    return 0


def resume_if_started(folder, run_name, checkpoint):
    """["--resume"] for a trainer step that was interrupted (its checkpoint is there, its final
    output is not; a finished step is skipped before this matters): it goes on where it stopped."""
    return ["--resume"] if os.path.exists(os.path.join(folder, run_name, checkpoint)) else []


def run_step(cmd, skip_if=None):
    """Print and run one pipeline script, `cmd` = [script.py, *flags], as `python cmd` would but in
    this process (skipped when `skip_if` exists); exit if it fails. Returns the seconds it took
    (0 when skipped)."""
    shown = "python " + " ".join(shlex.quote(str(c)) for c in cmd)
    if skip_if and os.path.exists(skip_if):
        print(f"\n# skipped (done: {os.path.relpath(skip_if, ROOT)}): {shown}", flush=True)
        return 0.0
    print(f"\n$ {shown}", flush=True)
    t0 = time.time()
    status = run_script(str(cmd[0]), cmd[1:])
    if status == 130:  # Ctrl-C: the step saved what it had and said how to continue; stop as it did
        sys.exit(130)
    if status:
        sys.exit(f"error: step failed: {shown}")
    seconds = time.time() - t0
    print(f"# {seconds:.0f}s", flush=True)
    return seconds
