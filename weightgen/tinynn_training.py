"""Fast TinyNN training: data on the device, batched augmentation, one generator per run.

`RunTrainer` owns one training run (model, optimizer, learning-rate schedule, its own
random streams). Gen_Diffusion_Dataset.py drives it step by step so it can take
checkpoints along the way; `train_tinynn` is the plain "train with the defaults" path.
"""
import statistics
import time
from dataclasses import asdict, dataclass, field, fields, replace

import numpy as np
import torch
import torch.nn.functional as F

from weightgen.cifar10 import AUGMENTATIONS, held_out_split, standardize
from weightgen.tinynn import TinyNN, TINYNN_DEFAULTS


def _recipe(default, help):
    return field(default=default, metadata=dict(help=help))


@dataclass
class TrainConfig:
    """The default recipe: SGD with Nesterov momentum, a short warm-up then linear decay.
    Every field is a flag of Gen_Diffusion_Dataset.py (recorded in the dataset's settings), so a
    variant of the recipe is one field here and its use in RunTrainer."""
    epochs: float = _recipe(18.0, "length of the learning-rate schedule in epochs; training at its final rate "
                                  "continues past it until the run has its checkpoints")
    batch_size: int = _recipe(256, "SGD batch size")
    lr: float = _recipe(0.2, "peak learning rate")
    momentum: float = _recipe(0.9, "Nesterov momentum")
    weight_decay: float = _recipe(5e-4, "weight decay of conv and linear weights (not BatchNorm or biases)")
    label_smoothing: float = _recipe(0.1, "label smoothing of the cross-entropy")
    warmup_epochs: float = _recipe(1.0, "linear warm-up of the learning rate, in epochs")
    final_lr_frac: float = _recipe(0.02, "the learning rate the schedule ends on (and stays at afterwards), "
                                         "as a share of --lr")
    augment: str = _recipe("full", "augmentation: full (crop, flip, ColorJitter: the seed's), flip_crop or none")
    l1: float = _recipe(0.0, "L1 penalty on conv and linear weights (sum of |w|), for sparse networks")
    prune: float = _recipe(0.0, "magnitude pruning: this share of every conv and linear weight tensor is set to "
                                "exactly zero at --prune_at of the schedule and kept zero (a mask) from then on")
    prune_at: float = _recipe(1 / 3, "when --prune prunes, as a share of the learning-rate schedule")

    def to_json(self):
        return asdict(self)

    def __post_init__(self):
        if self.augment not in AUGMENTATIONS:
            raise ValueError(f"augment must be one of {', '.join(AUGMENTATIONS)}, not {self.augment!r}")
        if not 0 <= self.prune < 1:
            raise ValueError(f"prune is a share of weights in [0, 1), not {self.prune}")

    @staticmethod
    def add_flags(parser):
        from weightgen.cli import count, positive, share  # here: cli imports this module (through checkpoint_dataset)
        from weightgen.cli import nonnegative
        # argparse types that refuse what can only be a mistake (a batch of 0, a negative decay), in one line
        types = dict(epochs=positive, batch_size=count, lr=positive, momentum=share, label_smoothing=share,
                     prune=share, prune_at=share)
        for f in fields(TrainConfig):
            default = f"{f.default:.4g}" if f.type is float else f.default
            kind = types.get(f.name, nonnegative if f.type is float else f.type)
            parser.add_argument(f"--{f.name}", type=kind, default=f.default,
                                help=f"{f.metadata['help']} (default {default})",
                                **(dict(choices=list(AUGMENTATIONS)) if f.name == "augment" else {}))

    @classmethod
    def from_args(cls, args):
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls)})


def run_seed(base_seed, run_id):
    """Independent runs get unrelated seeds; run ids keep them stable across shards and restarts."""
    return int(np.random.SeedSequence([base_seed, run_id]).generate_state(1)[0])


# Networks trained on from given weights take run ids from here on, far above any dataset's, so
# that none replays the data order of a dataset's run.
TRAIN_ON_OFFSET = 1_000_000


def train_on_seeds(base_seed, n):
    """The data-order and augmentation seeds of n networks trained on from given weights: network
    i's comes from (base_seed, TRAIN_ON_OFFSET + i), the same whatever the network starts from."""
    return [run_seed(base_seed, TRAIN_ON_OFFSET + i) for i in range(n)]


def evaluate(model, images_uint8, labels, batch_size=500):
    """Top-1 accuracy of `model` (put in eval mode) on uint8 images."""
    return predict(model, images_uint8, batch_size).eq(labels).float().mean().item()


@torch.no_grad()
def predict(model, images_uint8, batch_size=500):
    model.eval()
    out = [model(standardize(images_uint8[i:i + batch_size])).argmax(1)
           for i in range(0, len(images_uint8), batch_size)]
    return torch.cat(out)


def magnitude_masks(weights, share):
    """One 0/1 mask per tensor in `weights`, zero on the smallest-magnitude `share` of its entries."""
    masks = []
    for w in weights:
        mask = torch.ones_like(w).flatten()
        mask[w.abs().flatten().argsort()[:int(round(share * w.numel()))]] = 0
        masks.append(mask.view_as(w))
    return masks


class RunTrainer:
    """One TinyNN training run. All of its randomness (init, shuffling, augmentation) is
    drawn from `seed`, so two runs differ only through their seeds."""

    def __init__(self, images, labels, seed, model_config=None, train_config=None, device="cpu"):
        self.device = torch.device(device)
        self.images, self.labels = images.to(self.device), labels.to(self.device)
        self.cfg = train_config or TrainConfig()
        self.augment = AUGMENTATIONS[self.cfg.augment]
        torch.manual_seed(seed)
        self.model = TinyNN(**(model_config or TINYNN_DEFAULTS)).to(self.device, memory_format=torch.channels_last)
        self.gen = torch.Generator(device=self.device).manual_seed(seed)
        decay, no_decay = self._param_groups()
        self.weights = decay  # conv and linear weights: what L1 and pruning act on
        self.masks = None     # pruning masks, once pruned
        self.opt = torch.optim.SGD([dict(params=decay, weight_decay=self.cfg.weight_decay),
                                    dict(params=no_decay, weight_decay=0.0)],
                                   lr=self.cfg.lr, momentum=self.cfg.momentum, nesterov=True)
        self.steps_per_epoch = len(self.labels) // self.cfg.batch_size
        self.total_steps = max(1, round(self.cfg.epochs * self.steps_per_epoch))
        self.step = 0
        self._order, self._pos = None, 0
        self.prune_step = round(self.cfg.prune_at * self.total_steps) if self.cfg.prune else None

    @property
    def prune_due(self):
        """True at the step where a run that prunes has reached --prune_at and not pruned yet."""
        return self.prune_step is not None and self.masks is None and self.step >= self.prune_step

    @property
    def sparse_ready(self):
        """False while a run that prunes has not pruned yet (its checkpoints would be dense)."""
        return self.prune_step is None or self.masks is not None

    @torch.no_grad()
    def _prune(self):
        """Zero the smallest-magnitude share cfg.prune of each conv/linear weight tensor, for good."""
        self.masks = magnitude_masks(self.weights, self.cfg.prune)
        torch._foreach_mul_(self.weights, self.masks)

    def _param_groups(self):
        """Weight decay on conv/linear weights only, not on BN affine parameters or biases."""
        decay = [p for p in self.model.parameters() if p.ndim > 1]
        no_decay = [p for p in self.model.parameters() if p.ndim <= 1]
        return decay, no_decay

    def lr_at(self, step):
        warm = max(1, round(self.cfg.warmup_epochs * self.steps_per_epoch))
        if step < warm:
            return self.cfg.lr * (step + 1) / warm
        frac = min(1.0, (step - warm) / max(1, self.total_steps - warm))
        return self.cfg.lr * (1 - frac * (1 - self.cfg.final_lr_frac))

    @property
    def epoch(self):
        return self.step / self.steps_per_epoch

    def next_batch(self):
        if self._order is None or self._pos + self.cfg.batch_size > len(self._order):
            self._order = torch.randperm(len(self.labels), generator=self.gen, device=self.device)
            self._pos = 0
        idx = self._order[self._pos:self._pos + self.cfg.batch_size]
        self._pos += self.cfg.batch_size
        return standardize(self.augment(self.images[idx], self.gen)), self.labels[idx]

    def train(self, n_steps):
        """Take `n_steps` SGD steps; returns the mean training loss over them."""
        self.model.train()
        total = torch.zeros((), device=self.device)
        for _ in range(n_steps):
            for g in self.opt.param_groups:
                g["lr"] = self.lr_at(self.step)
            if self.prune_due:
                self._prune()
            x, y = self.next_batch()
            loss = F.cross_entropy(self.model(x), y, label_smoothing=self.cfg.label_smoothing)
            if self.cfg.l1:
                loss = loss + self.cfg.l1 * sum(w.abs().sum() for w in self.weights)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            if self.masks is not None:
                with torch.no_grad():
                    torch._foreach_mul_(self.weights, self.masks)
            total += loss.detach()
            self.step += 1
        return (total / max(1, n_steps)).item()

    def flat_weights(self, layout):
        return layout.flatten(self.model.state_dict()).cpu()


def train_tinynn(data, seed, model_config=None, train_config=None, device="cpu", progress=None):
    """Train one TinyNN with the default recipe on all training images; returns
    (model, test accuracy, seconds)."""
    t0 = time.time()
    run = RunTrainer(data.train_images, data.train_labels, seed, model_config, train_config, device=device)
    for epoch in range(int(round(run.total_steps / run.steps_per_epoch))):
        loss = run.train(run.steps_per_epoch)
        if progress:
            progress(epoch, loss)
    seconds = time.time() - t0
    return run.model, evaluate(run.model, data.test_images, data.test_labels), seconds


def probabilities_flat(vectors, layout, model_config, images_uint8, device="cpu", batch_size=500, progress=None):
    """Softmax outputs [n, images, classes] of each flat weight vector in `vectors` [n, n_params],
    rebuilt as a TinyNN with the BatchNorm statistics the vector carries (progress(): called after
    each)."""
    model = TinyNN(**model_config).to(device, memory_format=torch.channels_last).eval()
    out = torch.empty(len(vectors), len(images_uint8), model_config["num_classes"])
    with torch.no_grad():
        for j, v in enumerate(vectors):
            model.load_state_dict(layout.unflatten(v.float().to(device)))
            for i in range(0, len(images_uint8), batch_size):
                out[j, i:i + batch_size] = model(standardize(images_uint8[i:i + batch_size])).softmax(1).cpu()
            if progress:
                progress()
    return out


def evaluate_flat(vectors, layout, model_config, images_uint8, labels, device="cpu"):
    """Test accuracy (a list) of each flat weight vector in `vectors`."""
    preds = probabilities_flat(vectors, layout, model_config, images_uint8, device).argmax(2)
    return preds.eq(labels.cpu()).float().mean(1).tolist()


def dataset_recipe(manifest, data):
    """(a checkpoint dataset's TrainConfig, the training images and labels its runs learned from
    (its validation images left out), the median SGD steps of its runs), from its manifest."""
    split = manifest["data"]
    (x, y), _ = held_out_split(data, split["val_size"], split["val_seed"], split["train_size"])
    return TrainConfig(**manifest["train_config"]), x, y, statistics.median(r["steps"] for r in manifest["runs"])


# How sample_blends.py trains each network it makes, and experiments.run_span the networks it
# decodes: about half a run of the short recipe (R20x3: 386 steps) at twice its peak rate.
TRAIN_ON_DEFAULTS = dict(steps=200, lr=0.4)


def budget_config(train_config, steps, steps_per_epoch, lr=None):
    """`train_config`'s schedule compressed to `steps` SGD steps (warm-up and decay in proportion),
    with peak rate `lr` when given: the best-known use of a fixed budget (Li et al. 2020), for a
    fresh run and for a network trained on from where it is alike."""
    scale = steps / (train_config.epochs * steps_per_epoch)
    return replace(train_config, epochs=steps / steps_per_epoch, warmup_epochs=train_config.warmup_epochs * scale,
                   lr=train_config.lr if lr is None else lr)


def train_flat(vectors, seeds, layout, model_config, images, labels, train_config, steps, device="cpu",
               progress=None):
    """Flat weights [len(seeds), n_params] of TinyNNs trained `steps` SGD steps with `train_config`,
    network i from vectors[i] (None: a fresh init) with its data order and augmentation from seeds[i]."""
    out = []
    for i, seed in enumerate(seeds):
        run = RunTrainer(images, labels, seed, model_config, train_config, device=device)
        if vectors is not None:
            run.model.load_state_dict(layout.unflatten(vectors[i].float().to(run.device)))
        run.train(steps)
        out.append(run.flat_weights(layout))
        if progress:
            progress()
    return torch.stack(out)
