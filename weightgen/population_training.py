"""Population training: many TinyNN runs stepped together in one process with torch.func.vmap.

Each run is a RunTrainer (its own seed for initialisation, shuffling and augmentation, its own
step count, learning rate and pruning masks); the population stacks the runs' parameters,
BatchNorm buffers and momentum along a leading run dimension and takes one vmapped
forward/backward and one SGD update for all of them. A run therefore follows the path it would
follow alone (same batches, same schedule, BatchNorm per run), up to floating-point order. Runs
join and leave at any step, so the device stays full while runs of different lengths finish.

One run at a time is faster on a CPU (vmapped convolutions become grouped ones there):
benchmarks/zoo_speed.py measures both.
"""
import copy

import torch
import torch.nn.functional as F
from torch.func import functional_call, vmap

from weightgen.cifar10 import standardize
from weightgen.tinynn_training import RunTrainer, TrainConfig, magnitude_masks


class PopulationTrainer:
    """Runs stacked along dim 0 of every tensor; `runs[i]` is the RunTrainer of row i."""

    def __init__(self, images, labels, model_config=None, train_config=None, device="cpu"):
        self.device = torch.device(device)
        self.images, self.labels = images.to(self.device), labels.to(self.device)
        self.model_config, self.cfg = model_config, train_config or TrainConfig()
        self.runs, self.params, self.buffers, self.momentum, self.masks = [], {}, {}, {}, {}
        self._loss_sum, self._loss_steps = torch.zeros(0, device=self.device), []  # on the device: no sync a step
        self._template = None  # a parameter-free TinyNN whose forward functional_call borrows

    def add(self, seed):
        """A new run (initialised exactly as RunTrainer(seed)) joins at its step 0; returns it."""
        run = RunTrainer(self.images, self.labels, seed, self.model_config, self.cfg, self.device)
        if self._template is None:
            self._template = copy.deepcopy(run.model).to("meta")
            self.weight_names = [k for k, p in run.model.named_parameters() if p.ndim > 1]
        params = {k: v.detach() for k, v in run.model.named_parameters()}
        self.params = self._append(self.params, params, grad=True)
        self.buffers = self._append(self.buffers, dict(run.model.named_buffers()))
        self.momentum = self._append(self.momentum, {k: torch.zeros_like(v) for k, v in params.items()})
        if self.cfg.prune:
            self.masks = self._append(self.masks, {k: torch.ones_like(params[k]) for k in self.weight_names})
        run.opt = run.model = None  # the population holds its state from now on
        self.runs.append(run)
        self._loss_sum = torch.cat([self._loss_sum, torch.zeros(1, device=self.device)])
        self._loss_steps.append(0)
        return run

    def _append(self, stacked, one, grad=False):
        out = {k: torch.cat([stacked[k].detach(), v[None]]) if stacked else v[None].clone() for k, v in one.items()}
        return {k: v.requires_grad_() for k, v in out.items()} if grad else out

    def remove(self, rows):
        """Drop the runs in `rows` (indices into self.runs)."""
        keep = [i for i in range(len(self.runs)) if i not in set(rows)]
        index = torch.tensor(keep, dtype=torch.long, device=self.device)
        self.params = {k: v.detach()[index].requires_grad_() for k, v in self.params.items()}
        for name in ("buffers", "momentum", "masks"):
            setattr(self, name, {k: v[index] for k, v in getattr(self, name).items()})
        self.runs = [self.runs[i] for i in keep]
        self._loss_sum = self._loss_sum[index]
        self._loss_steps = [self._loss_steps[i] for i in keep]

    def _loss(self, params, buffers, x, y):
        loss = F.cross_entropy(functional_call(self._template, (params, buffers), (x,)), y,
                               label_smoothing=self.cfg.label_smoothing)
        if self.cfg.l1:
            loss = loss + self.cfg.l1 * sum(params[k].abs().sum() for k in self.weight_names)
        return loss

    @torch.no_grad()
    def _prune(self, row):
        run = self.runs[row]
        run.masks = magnitude_masks([self.params[k][row] for k in self.weight_names], self.cfg.prune)
        for k, mask in zip(self.weight_names, run.masks):
            self.masks[k][row] = mask
            self.params[k][row] *= mask

    def _rates(self):
        """Each run's learning rate at its own step, shaped to broadcast over a stacked tensor."""
        return torch.tensor([r.lr_at(r.step) for r in self.runs], device=self.device)

    def train(self, n_steps):
        """n_steps SGD steps (Nesterov momentum, weight decay on conv/linear weights: RunTrainer's
        torch.optim.SGD, written out so that every run has its own learning rate)."""
        self._template.train()
        for _ in range(n_steps):
            for i, run in enumerate(self.runs):
                if run.prune_due:
                    self._prune(i)
            xs, ys = zip(*(run.next_batch() for run in self.runs))
            losses = vmap(self._loss)(self.params, self.buffers, torch.stack(xs), torch.stack(ys))
            grads = torch.autograd.grad(losses.sum(), list(self.params.values()))
            self._sgd_step(dict(zip(self.params, grads)))
            self._loss_sum += losses.detach()
            for i, run in enumerate(self.runs):
                self._loss_steps[i] += 1
                run.step += 1

    @torch.no_grad()
    def _sgd_step(self, grads):
        lr, m, wd = self._rates(), self.cfg.momentum, self.cfg.weight_decay
        for k, p in self.params.items():
            g = grads[k] + wd * p if k in self.weight_names else grads[k]
            buf = self.momentum[k].mul_(m).add_(g)
            p.sub_(lr.view(-1, *[1] * (p.ndim - 1)) * g.add(buf, alpha=m))
            if k in self.masks:
                p.mul_(self.masks[k])

    def take_loss(self, row):
        """Mean training loss of run `row` since the last call for it."""
        loss = self._loss_sum[row].item() / max(1, self._loss_steps[row])
        self._loss_sum[row], self._loss_steps[row] = 0.0, 0
        return loss

    @torch.no_grad()
    def accuracy(self, rows, images_uint8, labels, batch_size=500):
        """Top-1 accuracy (a list) of the runs in `rows`, BatchNorm in eval mode."""
        if not rows:
            return []
        index = torch.tensor(rows, dtype=torch.long, device=self.device)
        params = {k: v.detach()[index] for k, v in self.params.items()}
        buffers = {k: v[index] for k, v in self.buffers.items()}
        self._template.eval()
        correct = torch.zeros(len(rows), device=self.device)
        for i in range(0, len(images_uint8), batch_size):
            x = standardize(images_uint8[i:i + batch_size].to(self.device))
            out = vmap(lambda p, b: functional_call(self._template, (p, b), (x,)))(params, buffers)
            correct += out.argmax(2).eq(labels[i:i + batch_size].to(self.device)).sum(1)
        return (correct / len(labels)).tolist()

    def flat_weights(self, row, layout):
        state = {k: v[row].detach() for k, v in {**self.params, **self.buffers}.items()}
        return layout.flatten(state).cpu()
