"""What the command lines share: the runtime flags every script takes, and the printing runner
that quickstart.py and experiments/ use to drive the scripts.

    p = argparse.ArgumentParser(...)
    add_runtime_flags(p)                          # --data_dir --no_download --device --seed --quiet
    run_step(["train_vae.py", "--checkpoint_dir", name, *runtime_argv(args)], skip_if=".../final.json")
"""
import os
import shlex
import subprocess
import sys
import time

from checkpoint_dataset import DatasetError
from cifar10 import DEFAULT_DATA_DIR, DataError
from model_io import CheckpointError

ROOT = os.path.dirname(os.path.abspath(__file__))


def run_main(main, parse_args):
    """main(parse_args()), where a known problem (missing data, a wrong or corrupted file) ends
    the script with one line that says what to do, not a traceback."""
    try:
        main(parse_args())
    except (DataError, DatasetError, CheckpointError) as e:
        sys.exit(f"error: {e}")


def add_runtime_flags(parser, data=True, seed=True, quiet=True, seed_help="default 0"):
    """Flags that say where and how a script runs, not what it computes. data: the CIFAR-10
    flags (scripts that never read images leave them out)."""
    if data:
        parser.add_argument("--data_dir", default=DEFAULT_DATA_DIR,
                            help="folder with cifar-10-batches-py (downloaded there if missing and allowed)")
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


def add_test_images_flag(parser, where=""):
    """--test_images N: evaluations on the first N CIFAR-10 test images. `where` says which
    evaluations when a script makes others too."""
    parser.add_argument("--test_images", type=int, default=0,
                        help=f"{where}evaluate on the first N test images (default 0: all 10,000; fewer only for "
                             f"quick looks and tests, never for figures you report)")


def runtime_argv(args, data=True):
    """The runtime flags of `args` as command-line arguments, to pass on to a script."""
    argv = ["--device", args.device]
    if data:
        argv += ["--data_dir", args.data_dir] + (["--no_download"] if args.no_download else [])
    return argv


def run_step(cmd, skip_if=None):
    """Print and run one pipeline script (skipped when `skip_if` exists); exit if it fails.
    Returns the seconds it took (0 when skipped)."""
    shown = "python " + " ".join(shlex.quote(str(c)) for c in cmd)
    if skip_if and os.path.exists(skip_if):
        print(f"\n# skipped (done: {os.path.relpath(skip_if, ROOT)}): {shown}", flush=True)
        return 0.0
    print(f"\n$ {shown}", flush=True)
    t0 = time.time()
    if subprocess.run([sys.executable, *map(str, cmd)], cwd=ROOT).returncode != 0:
        sys.exit(f"error: step failed: {shown}")
    seconds = time.time() - t0
    print(f"# {seconds:.0f}s", flush=True)
    return seconds
