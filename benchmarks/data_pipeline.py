"""Images per second of the training input pipeline: our on-device tensor pipeline against
torchvision's CIFAR10 + DataLoader with the equivalent PIL transforms, measured in one run.

Both produce shuffled, augmented (crop with padding 4, horizontal flip, ColorJitter 0.2/0.2/0.2),
standardised float batches of --batch_size; nothing else (no model) is timed.

    python -m benchmarks.data_pipeline
"""
import argparse
import os
import time

import torch
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from weightgen.cifar10 import DEFAULT_DATA_DIR, MEAN, STD, Augment, load_cifar10, standardize


class LocalCIFAR10(datasets.CIFAR10):
    """torchvision's CIFAR10, unchanged except that it accepts our copy, whose pixels (and so
    MD5 sums) differ from the official release (see ../shared/data/README.md)."""

    def _check_integrity(self):
        return True


def tensor_pipeline(data, n_images, batch_size, seed=0):
    gen = torch.Generator().manual_seed(seed)
    aug = Augment()
    images = data.train_images
    order = torch.randperm(len(images), generator=gen)[:n_images]
    for i in range(0, n_images - batch_size + 1, batch_size):
        yield standardize(aug(images[order[i:i + batch_size]], gen))


def torchvision_pipeline(data_dir, n_images, batch_size, workers):
    tf = transforms.Compose([
        transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
        transforms.ColorJitter(0.2, 0.2, 0.2), transforms.ToTensor(), transforms.Normalize(MEAN, STD)])
    ds = torch.utils.data.Subset(LocalCIFAR10(data_dir, train=True, transform=tf), range(n_images))
    loader = DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers, drop_last=True,
                        persistent_workers=False)
    for x, _ in loader:
        yield x


def images_per_second(batches):
    t0, n = time.perf_counter(), 0
    for x in batches:
        n += x.shape[0]
    return n / (time.perf_counter() - t0)


def main(args):
    torch.set_num_threads(os.cpu_count())
    data = load_cifar10(args.data_dir, download=False)
    ours = images_per_second(tensor_pipeline(data, args.images, args.batch_size))
    print(f"tensor pipeline (ours):               {ours:10.0f} images/s")
    best = 0.0
    for workers in args.workers:
        ips = images_per_second(torchvision_pipeline(args.data_dir, args.images, args.batch_size, workers))
        best = max(best, ips)
        print(f"torchvision DataLoader, {workers} workers:   {ips:10.0f} images/s")
    print(f"ratio ours / best DataLoader: {ours / best:.1f}x  ({os.cpu_count()} CPU cores, batch {args.batch_size}, "
          f"{args.images} images)")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=20000, help="images drawn from each pipeline (default 20000)")
    p.add_argument("--batch_size", type=int, default=256, help="default 256")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="DataLoader worker counts to try")
    p.add_argument("--data_dir", default=DEFAULT_DATA_DIR, help="folder with cifar-10-batches-py")
    main(p.parse_args())
