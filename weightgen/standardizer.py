"""Per-tensor standardisation of flat TinyNN weights; every VAE and diffusion checkpoint carries
the one it was trained with, so that decoding needs nothing else."""
import torch

from weightgen.tinynn import FlatLayout


class Standardizer:
    """Per-tensor standardisation: each tensor of the layout (a conv kernel, a BN bias, ...) is
    shifted and scaled by its own mean and std over the training checkpoints."""

    def __init__(self, layout, means, stds):
        self.layout, self.means, self.stds = layout, list(means), list(stds)
        sizes = [s.numel for s in layout.slots]
        self._mean = torch.repeat_interleave(torch.tensor(self.means, dtype=torch.float32), torch.tensor(sizes))
        self._std = torch.repeat_interleave(torch.tensor(self.stds, dtype=torch.float32), torch.tensor(sizes))

    @classmethod
    def fit(cls, weights, layout):
        means, stds = [], []
        for s in layout.slots:
            t = weights[:, s.offset:s.offset + s.numel].double()
            means.append(t.mean().item())
            stds.append(max(t.std().item(), 1e-8))  # a constant tensor still divides safely
        return cls(layout, means, stds)

    def standardize(self, weights):
        return (weights - self._mean.to(weights.device)) / self._std.to(weights.device)

    def destandardize(self, z):
        return z * self._std.to(z.device) + self._mean.to(z.device)

    def state_dict(self):
        return dict(means=self.means, stds=self.stds, layout=self.layout.to_json())

    @classmethod
    def from_state_dict(cls, d):
        return cls(FlatLayout.from_json(d["layout"]), d["means"], d["stds"])
