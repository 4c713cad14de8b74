import glob
import os
import subprocess
import sys

import pytest
import torch

from weightgen.cifar10 import Augment, DataError, load_cifar10, split_validation, standardize
from conftest import ROOT


def test_shapes_labels_and_classes(cifar):
    assert cifar.train_images.shape == (50000, 3, 32, 32) and cifar.train_images.dtype == torch.uint8
    assert cifar.test_images.shape == (10000, 3, 32, 32) and cifar.test_images.dtype == torch.uint8
    assert cifar.train_labels.shape == (50000,) and cifar.test_labels.shape == (10000,)
    assert cifar.classes == ["airplane", "automobile", "bird", "cat", "deer",
                             "dog", "frog", "horse", "ship", "truck"]
    # CIFAR-10 is balanced: 5000 training and 1000 test images per class.
    assert torch.bincount(cifar.train_labels).tolist() == [5000] * 10
    assert torch.bincount(cifar.test_labels).tolist() == [1000] * 10


def test_first_test_is_the_first_n_test_images_and_zero_means_all(cifar):
    images, labels = cifar.first_test(300)
    assert torch.equal(images, cifar.test_images[:300]) and torch.equal(labels, cifar.test_labels[:300])
    images, labels = cifar.first_test(0)
    assert len(images) == len(labels) == 10000


def test_standardize_gives_roughly_unit_statistics(cifar):
    x = standardize(cifar.train_images[:5000])
    assert x.is_contiguous(memory_format=torch.channels_last)
    assert x.mean((0, 2, 3)).abs().max() < 0.1
    assert (x.std((0, 2, 3)) - 1).abs().max() < 0.1


def test_validation_split_is_disjoint_and_fixed():
    train, val = split_validation(50000, 1000, seed=3)
    assert len(val) == 1000 and len(train) == 49000
    assert sorted(torch.cat([train, val]).tolist()) == list(range(50000))
    assert torch.equal(split_validation(50000, 1000, seed=3)[1], val)
    assert not torch.equal(split_validation(50000, 1000, seed=4)[1], val)


def test_augment_streams_are_reproducible_and_distinct(cifar):
    x = cifar.train_images[:256]
    aug = Augment()
    a = aug(x, torch.Generator().manual_seed(1))
    b = aug(x, torch.Generator().manual_seed(1))
    c = aug(x, torch.Generator().manual_seed(2))
    assert a.shape == (256, 3, 32, 32) and a.dtype == torch.float32
    assert 0 <= a.min() and a.max() <= 1
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_flip_only_flips_and_crop_only_shifts(cifar):
    x = cifar.train_images[:64]
    unit = x.float() / 255
    flipped = Augment(pad=0, brightness=0, contrast=0, saturation=0)(x, torch.Generator().manual_seed(0))
    same = (flipped == unit).flatten(1).all(1)
    mirrored = (flipped == unit.flip(3)).flatten(1).all(1)
    assert (same | mirrored).all() and same.any() and mirrored.any()

    cropped = Augment(flip=False, brightness=0, contrast=0, saturation=0)(x, torch.Generator().manual_seed(0))
    padded = torch.nn.functional.pad(unit, (4, 4, 4, 4))
    for i in range(8):
        windows = [padded[i, :, dy:dy + 32, dx:dx + 32] for dy in range(9) for dx in range(9)]
        assert any(torch.equal(cropped[i], w) for w in windows)


def test_missing_data_dir_is_one_clear_error(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match="nowhere.*--data_dir"):
        load_cifar10(str(missing), download=False)


def test_script_reports_missing_data_dir_without_traceback(tmp_path):
    out = subprocess.run([sys.executable, "Gen_Diffusion_Dataset.py", "--checkpoint_dir", str(tmp_path / "ds"),
                          "--data_dir", str(tmp_path / "nowhere"), "--no_download"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    assert "error: CIFAR-10 not found" in out.stderr and "--data_dir" in out.stderr
    assert "Traceback" not in out.stderr


def test_without_data_a_script_and_the_suite_say_what_to_set(tmp_path):
    env = dict(os.environ, CIFAR10_DIR=str(tmp_path / "nowhere"))
    out = subprocess.run([sys.executable, "Gen_Diffusion_Dataset.py", "--checkpoint_dir", str(tmp_path / "ds"),
                          "--no_download"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert "CIFAR10_DIR" in out.stderr and str(tmp_path / "nowhere") in out.stderr
    suite = subprocess.run([sys.executable, "-m", "pytest", "-q", "tests/test_tinynn.py"], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=120)
    assert suite.returncode == 2 and "Set CIFAR10_DIR" in suite.stdout + suite.stderr


def test_every_named_dataset_config_parses():
    """configs/NAME.args: the flags that build each dataset RESULTS.md names."""
    import Gen_Diffusion_Dataset
    configs = sorted(glob.glob(os.path.join(ROOT, "configs", "*.args")))
    assert configs
    for path in configs:
        args = Gen_Diffusion_Dataset.parse_args(["@" + path])
        assert args.checkpoint_dir == os.path.basename(path)[:-len(".args")]
