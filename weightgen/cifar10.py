"""CIFAR-10 as uint8 tensors on one device, with batched augmentation.

The whole dataset (150 MB as uint8) lives on the training device; crop, flip and
colour jitter run as tensor operations on a whole batch, so there are no PIL
transforms and no DataLoader workers on the hot path (10x the images per second of
torchvision's DataLoader with the same transforms: benchmarks/data_pipeline.py).
"""
import os
import pickle
from dataclasses import dataclass

import numpy as np
import torch

from weightgen import ROOT

# Where CIFAR-10 is read from unless --data_dir says otherwise: $CIFAR10_DIR, else data/cifar10 in
# the clone (git-ignored), where torchvision's download puts it when it is missing.
DATA_DIR_VARIABLE = "CIFAR10_DIR"
DEFAULT_DATA_DIR = os.environ.get(DATA_DIR_VARIABLE) or os.path.join(ROOT, "data", "cifar10")
WHAT_TO_SET = (f"Set {DATA_DIR_VARIABLE} (or pass --data_dir) to the folder that holds cifar-10-batches-py, "
               f"or run once with network access to download it there")
BATCHES_DIR = "cifar-10-batches-py"
TRAIN_FILES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_FILE = "test_batch"
# Per-channel statistics of the CIFAR-10 training images, in [0, 1] units.
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)


class DataError(Exception):
    """A data path that cannot be used; the message says which path and which flag."""


@dataclass
class Cifar10:
    train_images: torch.Tensor  # uint8 [N, 3, 32, 32]
    train_labels: torch.Tensor  # int64 [N]
    test_images: torch.Tensor
    test_labels: torch.Tensor
    classes: list

    def first_test(self, n=0):
        """The first n test images and their labels (0: all 10,000)."""
        return self.test_images[:n or None], self.test_labels[:n or None]


def _batches_dir(data_dir):
    """Accept either the folder holding cifar-10-batches-py or that folder itself."""
    if os.path.basename(os.path.normpath(data_dir)) == BATCHES_DIR:
        return data_dir
    return os.path.join(data_dir, BATCHES_DIR)


def _read_batch(path):
    with open(path, "rb") as f:
        d = pickle.load(f, encoding="latin1")
    images = np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
    return images, np.asarray(d["labels"], dtype=np.int64)


def _download(data_dir):
    """torchvision's download, for users with internet; any failure becomes one DataError."""
    try:
        from torchvision.datasets import CIFAR10
        CIFAR10(root=data_dir, train=True, download=True)
    except Exception as e:  # no network, no permission, bad archive: all mean "no data here"
        raise DataError(
            f"CIFAR-10 not found at {os.path.abspath(_batches_dir(data_dir))} and the download failed "
            f"({type(e).__name__}: {e}). {WHAT_TO_SET}."
        ) from None


def load_cifar10(data_dir=DEFAULT_DATA_DIR, device="cpu", download=True):
    """Read the python-pickle layout into uint8 tensors on `device`."""
    folder = _batches_dir(data_dir)
    needed = TRAIN_FILES + [TEST_FILE, "batches.meta"]
    missing = [f for f in needed if not os.path.isfile(os.path.join(folder, f))]
    if missing and download:
        _download(data_dir)
        missing = [f for f in needed if not os.path.isfile(os.path.join(folder, f))]
    if missing:
        raise DataError(f"CIFAR-10 not found at {os.path.abspath(folder)} (missing {', '.join(missing)}). "
                        f"{WHAT_TO_SET}.")
    try:
        train = [_read_batch(os.path.join(folder, f)) for f in TRAIN_FILES]
        test_images, test_labels = _read_batch(os.path.join(folder, TEST_FILE))
        with open(os.path.join(folder, "batches.meta"), "rb") as f:
            classes = pickle.load(f, encoding="latin1")["label_names"]
    except (pickle.UnpicklingError, EOFError, KeyError, ValueError) as e:
        raise DataError(f"CIFAR-10 files in {os.path.abspath(folder)} are unreadable ({e}); "
                        f"re-download them or point --data_dir elsewhere.") from None

    def to(x):
        return torch.from_numpy(x).to(device)
    return Cifar10(to(np.concatenate([t[0] for t in train])), to(np.concatenate([t[1] for t in train])),
                   to(test_images), to(test_labels), list(classes))


def split_validation(n, val_size, seed):
    """(train indices, validation indices): a fixed random `val_size` of n training images is
    held out for checkpoint selection, so the test set is never used to choose anything."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[val_size:], perm[:val_size]


def held_out_split(data, val_size, seed, train_size=0):
    """((train images, labels), (validation images, labels)) of a Cifar10: the split a checkpoint
    dataset records in its settings ("data": val_size, val_seed, train_size). Validation images
    choose checkpoints (and generated networks), never the test set."""
    train, val = split_validation(len(data.train_labels), val_size, seed)
    if train_size:
        train = train[:train_size]
    return (data.train_images[train], data.train_labels[train]), (data.train_images[val], data.train_labels[val])


def standardize(x):
    """Images in [0, 1] (float) or uint8 -> per-channel standardised float32, channels_last
    because that is the fast layout for convolutions on both CPU and GPU."""
    if x.dtype == torch.uint8:
        x = x.float().div_(255.0)
    mean = torch.tensor(MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=x.device).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous(memory_format=torch.channels_last)


@dataclass
class Augment:
    """The seed's augmentation: random crop with padding, horizontal flip, ColorJitter."""
    pad: int = 4
    flip: bool = True
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2

    def __call__(self, images_uint8, generator):
        """Augment a uint8 batch; returns float in [0, 1]. All randomness comes from `generator`
        (nothing is drawn for a transform that is switched off)."""
        x = images_uint8.float().div_(255.0)
        x = self.crop(x, generator)
        if self.flip:
            x = self.hflip(x, generator)
        return self.jitter(x, generator)

    def crop(self, x, g):
        """Random crop of the zero-padded image, as torchvision's RandomCrop(32, padding=4)."""
        if self.pad == 0:
            return x
        b, c, h, w = x.shape
        p = self.pad
        padded = torch.nn.functional.pad(x, (p, p, p, p))
        dy = torch.randint(0, 2 * p + 1, (b,), generator=g, device=g.device).to(x.device)
        dx = torch.randint(0, 2 * p + 1, (b,), generator=g, device=g.device).to(x.device)
        rows = (dy[:, None] + torch.arange(h, device=x.device)[None])  # [B, H]
        cols = (dx[:, None] + torch.arange(w, device=x.device)[None])  # [B, W]
        idx = (rows[:, :, None] * (w + 2 * p) + cols[:, None, :]).view(b, 1, h * w).expand(b, c, h * w)
        return padded.flatten(2).gather(2, idx).view(b, c, h, w)

    def hflip(self, x, g):
        mask = torch.rand(x.shape[0], generator=g, device=g.device).to(x.device) < 0.5
        return torch.where(mask[:, None, None, None], x.flip(3), x)

    def jitter(self, x, g):
        """Brightness, contrast, saturation factors drawn per image (fixed order, unlike torchvision)."""
        b = x.shape[0]

        def factor(strength):
            return (1 + (torch.rand(b, generator=g, device=g.device) * 2 - 1) * strength).to(x.device).view(b, 1, 1, 1)
        gray_w = torch.tensor([0.299, 0.587, 0.114], device=x.device).view(1, 3, 1, 1)
        if self.brightness:
            x = (x * factor(self.brightness)).clamp_(0, 1)
        if self.contrast:
            mean_gray = (x * gray_w).sum(1, keepdim=True).mean((2, 3), keepdim=True)
            x = (mean_gray + factor(self.contrast) * (x - mean_gray)).clamp_(0, 1)
        if self.saturation:
            gray = (x * gray_w).sum(1, keepdim=True)
            x = (gray + factor(self.saturation) * (x - gray)).clamp_(0, 1)
        return x


# The choices of Gen_Diffusion_Dataset.py --augment: the seed's three transforms, or fewer.
AUGMENTATIONS = {"full": Augment(),
                 "flip_crop": Augment(brightness=0.0, contrast=0.0, saturation=0.0),
                 "none": Augment(pad=0, flip=False, brightness=0.0, contrast=0.0, saturation=0.0)}
