import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
DATA_DIR = os.path.join(ROOT, "..", "shared", "data", "cifar10")

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def cifar():
    from cifar10 import load_cifar10
    return load_cifar10(DATA_DIR, download=False)
