"""The library behind the pipeline's scripts: TinyNN and its flat layout, CIFAR-10 on the device,
the checkpoint dataset, alignment of runs, training loops, checkpoint I/O, the generate path that
every generator ends in, novelty measures and baselines."""
import os

# The project's root (the folder of the scripts): outputs go under ROOT/checkpoints.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
