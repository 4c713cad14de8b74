"""TinyNN, the CIFAR-10 classifier whose full weights this project generates, and its flat layout.

Every number that defines a trained TinyNN (parameters and BatchNorm running statistics)
sits in one flat float32 vector; `FlatLayout` records name, shape and offset of each tensor
so that flatten/unflatten round-trip exactly.
"""
from dataclasses import dataclass, asdict

import torch
from torch import nn

# Defaults shared by every script that builds a TinyNN: the constructor arguments.
TINYNN_DEFAULTS = dict(widths=(16, 32, 40), num_classes=10)


def conv_bn(c_in, c_out, pool=False):
    """3x3 conv (no bias: BN follows), optional 2x2 max-pool, BatchNorm, ReLU.
    Pooling before BN makes BN and ReLU run on a quarter of the pixels."""
    layers = [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)]
    if pool:
        layers.append(nn.MaxPool2d(2))
    layers += [nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class TinyNN(nn.Module):
    """Six 3x3 convolutions with BatchNorm and ReLU, pooling 32 -> 16 -> 8 -> 4 pixels, global
    max-pool and a linear head.

    The stem pools straight away, so most of the compute runs at 16x16 and below: this is
    what makes a full training run fit in minutes on a 2-core CPU.
    """

    def __init__(self, widths=TINYNN_DEFAULTS["widths"], num_classes=TINYNN_DEFAULTS["num_classes"]):
        super().__init__()
        w0, w1, w2 = widths
        self.widths, self.num_classes = tuple(widths), num_classes
        self.features = nn.Sequential(
            conv_bn(3, w0, pool=True),        # 16x16
            conv_bn(w0, w1), conv_bn(w1, w1, pool=True),  # 8x8
            conv_bn(w1, w2), conv_bn(w2, w2, pool=True),  # 4x4
            conv_bn(w2, w2),
        )
        self.head = nn.Linear(w2, num_classes)

    def forward(self, x):
        x = self.features(x)
        return self.head(torch.amax(x, dim=(2, 3)))

    def config(self):
        return dict(widths=list(self.widths), num_classes=self.num_classes)


@dataclass(frozen=True)
class TensorSlot:
    name: str
    shape: tuple
    offset: int

    @property
    def numel(self):
        n = 1
        for s in self.shape:
            n *= s
        return n


class FlatLayout:
    """Where each tensor of a TinyNN state_dict lives in the flat weight vector.

    BatchNorm's integer `num_batches_tracked` counters are left out: they carry no
    information a classifier uses (momentum is fixed), and are restored as zeros.
    """

    def __init__(self, slots):
        self.slots = list(slots)
        self.numel = sum(s.numel for s in self.slots)

    @classmethod
    def of(cls, model):
        slots, offset = [], 0
        for name, t in model.state_dict().items():
            if not t.is_floating_point():
                continue
            slots.append(TensorSlot(name, tuple(t.shape), offset))
            offset += t.numel()
        return cls(slots)

    @classmethod
    def from_json(cls, records):
        return cls(TensorSlot(r["name"], tuple(r["shape"]), r["offset"]) for r in records)

    def to_json(self):
        return [dict(asdict(s), shape=list(s.shape)) for s in self.slots]

    def __eq__(self, other):
        return isinstance(other, FlatLayout) and self.slots == other.slots

    def flatten(self, state_dict):
        """state_dict -> float32 vector [numel] on the state's device."""
        return torch.cat([state_dict[s.name].detach().reshape(-1).float() for s in self.slots])

    def unflatten(self, vector):
        """float vector [numel] -> state_dict (views into `vector`), with BN counters as zeros."""
        if vector.shape != (self.numel,):
            raise ValueError(f"flat vector has shape {tuple(vector.shape)}, layout expects ({self.numel},)")
        state = {}
        for s in self.slots:
            state[s.name] = vector[s.offset:s.offset + s.numel].view(s.shape)
            if s.name.endswith("running_var"):
                state[s.name[:-len("running_var")] + "num_batches_tracked"] = torch.zeros(
                    (), dtype=torch.long, device=vector.device)
        return state


def model_from_flat(vector, layout, config):
    """A ready-to-run TinyNN (eval mode) holding the weights in `vector`."""
    model = TinyNN(**config)
    model.load_state_dict(layout.unflatten(vector.float().cpu()))
    return model.eval()


def count_flat_numbers(config=None):
    return FlatLayout.of(TinyNN(**(config or {}))).numel


def clamp_running_var(vectors, layout):
    """Generated BatchNorm running variances can come out negative, which makes BN's
    sqrt(var + eps) NaN; clamp them at 0 in place. Returns how many were clamped."""
    clamped = 0
    for s in layout.slots:
        if s.name.endswith("running_var"):
            block = vectors[:, s.offset:s.offset + s.numel]
            clamped += int((block < 0).sum())
            block.clamp_(min=0)
    return clamped


def layer_slots(layout):
    """The slots grouped by layer, in order: each conv block with its BatchNorm ("features.0",
    ...), then the head."""
    layers = {}
    for s in layout.slots:
        layers.setdefault(s.name.rsplit(".", 2)[0], []).append(s)
    return list(layers.values())


def weight_slots(layout):
    """The slots of conv and linear weights (not BatchNorm, biases or running statistics)."""
    return [s for s in layout.slots if s.name.endswith("weight") and len(s.shape) > 1]


def sparsity(vectors, layout, small=1e-3):
    """Of the conv and linear weights of each vector [n, numel]: the share of exact zeros, the share
    with |w| < small, and the L2 norm (each a tensor [n])."""
    w = torch.cat([vectors[:, s.offset:s.offset + s.numel] for s in weight_slots(layout)], dim=1)
    return dict(zeros=(w == 0).float().mean(1), small=(w.abs() < small).float().mean(1), norm=w.norm(dim=1))


def prune_to(vectors, layout, share):
    """Zero, in place, the smallest-magnitude `share` of every conv and linear weight tensor of
    each vector [n, numel] (magnitude pruning of generated networks)."""
    for s in weight_slots(layout):
        block = vectors[:, s.offset:s.offset + s.numel]
        n_zero = int(round(share * s.numel))
        if n_zero:
            block.scatter_(1, block.abs().argsort(dim=1)[:, :n_zero], 0.0)
