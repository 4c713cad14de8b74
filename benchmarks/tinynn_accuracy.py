"""TinyNN with its default recipe: flat-vector size, test accuracy over seeds, seconds per run.

    python -m benchmarks.tinynn_accuracy --seeds 3            # the issue's measurement (CPU)
    python -m benchmarks.tinynn_accuracy --seeds 3 --device cuda
"""
import argparse
import statistics

from weightgen.cifar10 import DEFAULT_DATA_DIR, load_cifar10
from weightgen.tinynn import count_flat_numbers
from weightgen.model_io import pick_device
from weightgen.tinynn_training import TrainConfig, train_tinynn


def main(args):
    device = pick_device(args.device)
    data = load_cifar10(args.data_dir, device, download=False)
    cfg = TrainConfig(epochs=args.epochs)
    print(f"TinyNN: {count_flat_numbers()} numbers in the flat vector; recipe {cfg.to_json()}; device {device}")
    accs, secs = [], []
    for seed in range(args.seeds):
        _, acc, sec = train_tinynn(data, seed, train_config=cfg, device=device)
        accs.append(acc)
        secs.append(sec)
        print(f"seed {seed}: test accuracy {acc:.4f}, {sec:.1f} s", flush=True)
    spread = statistics.stdev(accs) if len(accs) > 1 else 0.0
    print(f"test accuracy {statistics.mean(accs):.4f} ± {spread:.4f} (mean ± std over {len(accs)} seeds), "
          f"min {min(accs):.4f}, max {max(accs):.4f}; {statistics.mean(secs):.1f} s per run")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=3, help="independent runs (default 3)")
    p.add_argument("--epochs", type=float, default=TrainConfig.epochs, help="schedule length (default: the recipe's)")
    p.add_argument("--data_dir", default=DEFAULT_DATA_DIR, help="folder with cifar-10-batches-py")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    main(p.parse_args())
