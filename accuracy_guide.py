"""Guidance towards accurate networks: a small predictor of a generated network's validation
accuracy from the diffusion model's vector, and the guide that follows its gradient.

    predictor = AccuracyPredictor(dim)                       # fitted by train_guide.py
    guide = accuracy_guide(predictor, scale=1.0)             # x0 -> x0 + scale * d(accuracy)/d(x0)
    diffusion.sample(100, guide=guide, temperature=1.5)      # wider than the modes, pulled to accuracy

The predictor reads the vectors the diffusion model samples (standardised latents, or weights),
so a guide belongs to one diffusion model: its checkpoint records that file's sha256 and
`load_guide` refuses another.
"""
import torch
from torch import nn

from model_io import GUIDE_KIND, CheckpointError, load_checkpoint
from vae_diffusion import file_fingerprint


class AccuracyPredictor(nn.Module):
    """MLP: a diffusion vector [B, dim] -> predicted validation accuracy [B]."""

    def __init__(self, dim, hidden=128, depth=2):
        super().__init__()
        self.args = dict(dim=dim, hidden=hidden, depth=depth)
        layers, width = [], dim
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.SiLU()]
            width = hidden
        self.net = nn.Sequential(*layers, nn.Linear(width, 1))

    def forward(self, x):
        return self.net(x).squeeze(1)


def accuracy_guide(predictor, scale):
    """guide(x0) for GaussianDiffusion.sample: one gradient-ascent step of size `scale` on the
    predicted accuracy. The samplers run without gradients, so the step turns them on for itself."""
    def guide(x0):
        with torch.enable_grad():
            x = x0.detach().requires_grad_(True)
            grad, = torch.autograd.grad(predictor(x).sum(), x)
        return x0 + scale * grad
    return guide


def load_guide(path, diffusion_path, device):
    """(predictor in eval mode on `device`, checkpoint dict) of a train_guide.py file, which must
    have been fitted to the diffusion model at `diffusion_path`."""
    ckpt = load_checkpoint(path, GUIDE_KIND)
    if ckpt["diffusion"]["fingerprint"] != file_fingerprint(diffusion_path):
        raise CheckpointError(f"{path} was fitted to another diffusion model ({ckpt['diffusion']['path']}), "
                              f"not {diffusion_path}")
    predictor = AccuracyPredictor(**ckpt["model_args"])
    predictor.load_state_dict(ckpt["model"])
    return predictor.to(device).eval(), ckpt
