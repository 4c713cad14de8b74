"""A VAE over whole flat TinyNN weight vectors (tens of thousands of numbers).

Encoder and decoder are MLPs; the wide layers next to the weight vector hold nearly all the
parameters (2 x n_params x hidden). Noise augmentation follows p-diff: a little Gaussian
noise on the input weights and more on the latent code while training, which makes the
decoder robust to the imprecise latents a diffusion model will hand it.
"""
import torch
import torch.nn.functional as F
from torch import nn

from model_io import VAE_KIND, CheckpointError, load_checkpoint, registered
from standardizer import Standardizer

# One place for the VAE's defaults: train_vae.py's flags and the constructor read them.
VAE_DEFAULTS = dict(hidden=256, latent_dim=64, input_noise=0.001, latent_noise=0.1)


def mlp(sizes, last_activation=False):
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2 or last_activation:
            layers += [nn.LayerNorm(b), nn.SiLU()]
    return nn.Sequential(*layers)


class WeightVAE(nn.Module):
    def __init__(self, in_dim, hidden=VAE_DEFAULTS["hidden"], latent_dim=VAE_DEFAULTS["latent_dim"],
                 input_noise=VAE_DEFAULTS["input_noise"], latent_noise=VAE_DEFAULTS["latent_noise"]):
        super().__init__()
        self.args = dict(in_dim=in_dim, hidden=hidden, latent_dim=latent_dim,
                         input_noise=input_noise, latent_noise=latent_noise)
        self.encoder = mlp([in_dim, hidden, hidden, 2 * latent_dim])
        self.decoder = mlp([latent_dim, hidden, hidden, in_dim])
        self.latent_dim, self.input_noise, self.latent_noise = latent_dim, input_noise, latent_noise

    def encode(self, x):
        """Posterior mean and log-variance, each [B, latent_dim]."""
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return mu, logvar.clamp(-20, 10)

    def decode(self, z):
        return self.decoder(z)

    def forward(self, x):
        """Reconstruction, mu, logvar. Noise augmentation and reparameterisation only in training."""
        if self.training and self.input_noise:
            x = x + self.input_noise * torch.randn_like(x)
        mu, logvar = self.encode(x)
        z = mu
        if self.training:
            z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
            if self.latent_noise:
                z = z + self.latent_noise * torch.randn_like(z)
        return self.decode(z), mu, logvar

    def loss(self, x, kl_weight):
        """(total, reconstruction MSE, KL per latent dimension), all batch means."""
        recon, mu, logvar = self(x)
        mse = F.mse_loss(recon, x)
        kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).mean()
        return mse + kl_weight * kl, mse, kl

    @torch.no_grad()
    def reconstruct(self, x):
        return self.decode(self.encode(x)[0])

    @torch.no_grad()
    def sample(self, n, generator=None):
        """Decode n draws from the N(0, I) prior."""
        p = next(self.parameters())
        z = torch.randn(n, self.latent_dim, generator=generator, device=generator.device if generator else "cpu")
        return self.decode(z.to(p.device, p.dtype))


# Autoencoders by name (train_vae.py --autoencoder; the name is recorded in the checkpoint). A new
# one takes in_dim and its own keyword arguments, keeps them in self.args, and offers loss(x,
# kl_weight), encode(x) -> (mu, logvar), decode(z), reconstruct(x), sample(n, generator) and
# latent_dim, as WeightVAE does.
AUTOENCODERS = {"mlp": WeightVAE}


def build_vae(ckpt):
    """The VAE stored in a checkpoint dict (EMA weights), with its standardiser, in eval mode."""
    # Checkpoints from before the registry hold the MLP.
    model = registered(AUTOENCODERS, ckpt.get("autoencoder", "mlp"), "autoencoder")(**ckpt["model_args"])
    model.load_state_dict(ckpt["ema"])
    return model.eval(), Standardizer.from_state_dict(ckpt["standardizer"])


def load_vae(path, expect_layout=None):
    """(VAE, standardiser, checkpoint dict) from a train_vae.py checkpoint, checked against
    `expect_layout` (a FlatLayout) when given."""
    ckpt = load_checkpoint(path, VAE_KIND)
    model, std = build_vae(ckpt)
    if expect_layout is not None and std.layout != expect_layout:
        raise CheckpointError(f"{path} was trained on another TinyNN layout "
                              f"({std.layout.numel} numbers, not {expect_layout.numel})")
    return model, std, ckpt
