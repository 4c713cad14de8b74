"""VAEs over whole flat TinyNN weight vectors (tens of thousands of numbers).

WeightVAE (--autoencoder mlp): encoder and decoder are MLPs; the wide layers next to the
weight vector hold nearly all the parameters (2 x n_params x hidden). ChannelTokenVAE
(--autoencoder channels) reads the network one output channel at a time. LayerCodeVAE
(--autoencoder layercodes) codes each channel linearly, with one map per layer. Noise augmentation
follows p-diff: a little Gaussian noise on the input weights and more on the latent code while
training, which makes the decoder robust to the imprecise latents a diffusion model will hand it.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

from weightgen.model_io import VAE_KIND, CheckpointError, load_checkpoint, registered
from weightgen.standardizer import Standardizer
from weightgen.tinynn import FlatLayout, TensorSlot

# One place for the VAE's defaults: train_vae.py's flags and the constructor read them.
VAE_DEFAULTS = dict(hidden=256, latent_dim=64, input_noise=0.001, latent_noise=0.1)


def mlp(sizes, last_activation=False):
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2 or last_activation:
            layers += [nn.LayerNorm(b), nn.SiLU()]
    return nn.Sequential(*layers)


class _NoisyVAE(nn.Module):
    """What every autoencoder here shares: noise augmentation, reparameterisation, the loss and
    prior sampling. A subclass sets self.args and self.latent_dim and defines encode and decode."""

    has_width = True  # its constructor takes hidden=

    def __init__(self, input_noise, latent_noise):
        super().__init__()
        self.input_noise, self.latent_noise = input_noise, latent_noise

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

    def initialise_from(self, x):
        """Set a starting point from the standardised training vectors x before training (train_vae.py
        calls it once, not on --resume). The default starts where the constructor left the weights."""

    @torch.no_grad()
    def reconstruct(self, x):
        return self.decode(self.encode(x)[0])

    @torch.no_grad()
    def sample(self, n, generator=None):
        """Decode n draws from the N(0, I) prior."""
        p = next(self.parameters())
        z = torch.randn(n, self.latent_dim, generator=generator, device=generator.device if generator else "cpu")
        return self.decode(z.to(p.device, p.dtype))


class WeightVAE(_NoisyVAE):
    def __init__(self, in_dim, hidden=VAE_DEFAULTS["hidden"], latent_dim=VAE_DEFAULTS["latent_dim"],
                 input_noise=VAE_DEFAULTS["input_noise"], latent_noise=VAE_DEFAULTS["latent_noise"]):
        super().__init__(input_noise, latent_noise)
        self.args = dict(in_dim=in_dim, hidden=hidden, latent_dim=latent_dim,
                         input_noise=input_noise, latent_noise=latent_noise)
        self.encoder = mlp([in_dim, hidden, hidden, 2 * latent_dim])
        self.decoder = mlp([latent_dim, hidden, hidden, in_dim])
        self.latent_dim = latent_dim

    @classmethod
    def for_layout(cls, layout, **kwargs):
        return cls(layout.numel, **kwargs)

    def encode(self, x):
        """Posterior mean and log-variance, each [B, latent_dim]."""
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return mu, logvar.clamp(-20, 10)

    def decode(self, z):
        return self.decoder(z)


def channel_layers(shapes):
    """The layers of a flat weight vector as (tokens, [numbers per token of each tensor]): consecutive
    tensors sharing their first dimension (a conv kernel and its BatchNorm's four vectors, a linear
    weight and its bias) are one layer, and one index of that dimension (an output channel) is one token."""
    layers = []
    for shape in shapes:
        lead, per_token = shape[0], math.prod(shape[1:])
        if layers and layers[-1][0] == lead and len(shape) == 1:
            layers[-1][1].append(per_token)
        else:
            layers.append((lead, [per_token]))
    return layers


def split_channels(x, layers):
    """[B, n_params] -> per layer of channel_layers, its tokens [B, channels, numbers per token]."""
    out, offset = [], 0
    for n, widths in layers:
        parts = []
        for w in widths:
            parts.append(x[:, offset:offset + n * w].reshape(len(x), n, w))
            offset += n * w
        out.append(torch.cat(parts, dim=2))
    return out


def join_channels(tokens, layers):
    """The inverse of split_channels: per-layer tokens -> [B, n_params] in layout order."""
    return torch.cat([part.reshape(len(t), -1) for t, (_, widths) in zip(tokens, layers)
                      for part in t.split(widths, dim=2)], dim=1)


class ChannelMaps(nn.Module):
    """One affine map per output channel between a layer's channel tokens and a width: [B, n, a] ->
    [B, n, b]. Not shared across channels: the channels of a layer are nearly full-rank (on R60x1 a
    64-dimensional map shared by all channels of a 3x3 conv layer keeps only 48-58% of their
    variance), so a shared map would limit what can be reconstructed of the training runs. For runs
    it has not seen, the shared map reaches further (LayerCodeVAE)."""

    def __init__(self, n, a, b):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n, a, b) / a ** 0.5)
        self.bias = nn.Parameter(torch.zeros(n, b))

    def forward(self, x):
        return torch.einsum("bna,nac->bnc", x, self.weight) + self.bias


class ChannelTokenVAE(_NoisyVAE):
    """A VAE that reads a network one output channel at a time (tokens per channel, as SANE
    tokenises layers): each channel (its incoming kernel and BatchNorm numbers, or a row of the
    head) is a token, mapped to the token width by its own affine map, mixed with the other
    channels by a small transformer and given its own few latent numbers; the decoder mirrors it.
    Unlike the MLP, no layer is dense over the whole weight vector (7.4 M parameters at TinyNN's
    size and width 64, against 28.8 M), and a channel's latent depends on the others only through
    attention.

    latent_dim is spread over the tokens, at least one number each (TinyNN: 210 tokens, so the
    default 64 gives 210 latent numbers); hidden is the token width."""

    def __init__(self, shapes, hidden=64, latent_dim=VAE_DEFAULTS["latent_dim"],
                 input_noise=VAE_DEFAULTS["input_noise"], latent_noise=VAE_DEFAULTS["latent_noise"], depth=2, heads=4):
        super().__init__(input_noise, latent_noise)
        shapes = [list(s) for s in shapes]
        self.args = dict(shapes=shapes, hidden=hidden, latent_dim=latent_dim, input_noise=input_noise,
                         latent_noise=latent_noise, depth=depth, heads=heads)
        self.layers = channel_layers(shapes)
        self.n_tokens = sum(n for n, _ in self.layers)
        self.per_token = max(1, round(latent_dim / self.n_tokens))
        self.latent_dim = self.n_tokens * self.per_token
        self.embed = nn.ModuleList(ChannelMaps(n, sum(w), hidden) for n, w in self.layers)
        self.unembed = nn.ModuleList(ChannelMaps(n, hidden, sum(w)) for n, w in self.layers)
        self.encoder = self._mixer(hidden, depth, heads)
        self.decoder = self._mixer(hidden, depth, heads)
        self.to_latent = nn.Linear(hidden, 2 * self.per_token)
        self.from_latent = ChannelMaps(self.n_tokens, self.per_token, hidden)  # its bias: each token's position

    @classmethod
    def for_layout(cls, layout, **kwargs):
        return cls([s.shape for s in layout.slots], **kwargs)

    @staticmethod
    def _mixer(width, depth, heads):
        layer = nn.TransformerEncoderLayer(width, heads, 2 * width, dropout=0.0, batch_first=True, norm_first=True)
        return nn.Sequential(nn.TransformerEncoder(layer, depth, enable_nested_tensor=False), nn.LayerNorm(width))

    def encode(self, x):
        """Posterior mean and log-variance, each [B, latent_dim] (token-major)."""
        tokens = [embed(t) for embed, t in zip(self.embed, split_channels(x, self.layers))]
        mu, logvar = self.to_latent(self.encoder(torch.cat(tokens, dim=1))).chunk(2, dim=2)
        return mu.flatten(1), logvar.flatten(1).clamp(-20, 10)

    def decode(self, z):
        h = self.decoder(self.from_latent(z.reshape(len(z), self.n_tokens, self.per_token)))
        h = h.split([n for n, _ in self.layers], dim=1)
        return join_channels([unembed(t) for unembed, t in zip(self.unembed, h)], self.layers)


def code_sizes(layers, share):
    """Latent numbers per channel of each layer of channel_layers for a code that keeps `share` of a
    channel's numbers (at least one)."""
    return [max(1, round(share * sum(widths))) for _, widths in layers]


def principal_directions(tokens, k):
    """(mean token [width], first k principal directions [k, width], variance along each [k]) of
    tokens [..., width] pooled over the leading dimensions (a layer's channels of every network). The
    SVD runs in float64: the smallest kept directions matter."""
    tokens = tokens.reshape(-1, tokens.shape[-1])
    mean = tokens.mean(0)
    _, s, v = torch.linalg.svd((tokens - mean).double(), full_matrices=False)
    return mean, v[:k].to(tokens.dtype), (s[:k] ** 2 / max(1, len(tokens) - 1)).to(tokens.dtype)


class LayerCodeVAE(_NoisyVAE):
    """A linear VAE that codes each output channel (channel_layers' tokens) with a map that all channels
    of its layer share: a channel's latent is (token - its layer's mean token) @ encoder of its layer,
    and the decoder maps it back the same way. Why shared: every channel of every training checkpoint is
    an example for the map, so the code reaches networks outside the span of the training runs (an
    unseen run lies 99.9% outside it) where a map over whole networks cannot; baselines.channel_codes
    is this code's least-squares optimum, which initialise_from starts it at (whitened, so that the
    N(0, I) prior fits). On R20x3 a quarter of the numbers keeps 53% of an unseen run's variance:
    decoded networks are far below their originals until trained (README, target 4).

    latent_dim is spread over the layers in proportion to their numbers per token (at least one a
    channel); None: a quarter of the network's numbers."""

    has_width = False

    def __init__(self, shapes, latent_dim=None, input_noise=VAE_DEFAULTS["input_noise"],
                 latent_noise=VAE_DEFAULTS["latent_noise"]):
        super().__init__(input_noise, latent_noise)
        shapes = [list(s) for s in shapes]
        self.args = dict(shapes=shapes, latent_dim=latent_dim, input_noise=input_noise, latent_noise=latent_noise)
        self.layers = channel_layers(shapes)
        numel = sum(math.prod(s) for s in shapes)
        share = 0.25 if latent_dim is None else latent_dim / numel
        self.codes = code_sizes(self.layers, share)
        self.latent_dim = sum(n * k for (n, _), k in zip(self.layers, self.codes))
        self.means = nn.ParameterList(nn.Parameter(torch.zeros(sum(w))) for _, w in self.layers)
        self.encoders = nn.ParameterList(nn.Parameter(torch.randn(sum(w), k) / sum(w) ** 0.5)
                                         for (_, w), k in zip(self.layers, self.codes))
        self.decoders = nn.ParameterList(nn.Parameter(torch.randn(k, sum(w)) / k ** 0.5)
                                         for (_, w), k in zip(self.layers, self.codes))
        self.logvars = nn.ParameterList(nn.Parameter(torch.full((k,), -4.0)) for k in self.codes)

    @classmethod
    def for_layout(cls, layout, **kwargs):
        return cls([s.shape for s in layout.slots], **kwargs)

    @torch.no_grad()
    def initialise_from(self, x):
        """Each layer's mean token and, as encoder and decoder, the principal directions of its
        centred training tokens, whitened by their spread (baselines.channel_codes' code). A mean per
        channel would fit the training runs better and unseen ones worse (R20x3: 24% of an unseen
        run's variance kept, against 27%)."""
        for i, tokens in enumerate(split_channels(x, self.layers)):
            mean, directions, variance = principal_directions(tokens, self.codes[i])
            sd = variance.clamp(min=1e-8).sqrt()
            self.means[i].copy_(mean)
            self.encoders[i].copy_(directions.T / sd)
            self.decoders[i].copy_(directions * sd[:, None])

    def encode(self, x):
        """Posterior mean [B, latent_dim] (layer-major, then channel-major) and a log-variance that is
        learned per layer and latent number (a linear Gaussian code's posterior spread is the same for every input)."""
        mu = [((t - m) @ e).flatten(1) for t, m, e in zip(split_channels(x, self.layers), self.means, self.encoders)]
        logvar = [lv.repeat(n) for lv, (n, _) in zip(self.logvars, self.layers)]
        mu = torch.cat(mu, dim=1)
        return mu, torch.cat(logvar).clamp(-20, 10).expand_as(mu)

    def decode(self, z):
        parts = z.split([n * k for (n, _), k in zip(self.layers, self.codes)], dim=1)
        return join_channels([p.reshape(len(z), n, k) @ d + m for p, (n, _), k, d, m in
                              zip(parts, self.layers, self.codes, self.decoders, self.means)], self.layers)


def is_part(name, slot_names, part):
    """Whether the tensor `name` belongs to `part` (train_vae.py --part). p-diff generates the
    parameters of a trained network's last BatchNorm layers and keeps the rest; head_bn is that
    setting on TinyNN: its linear head and every BatchNorm weight and bias (running statistics
    stay the fixed checkpoint's; sample.py --bn_images recomputes them)."""
    if part == "head_bn":
        batchnorm = name.rsplit(".", 1)[0] + ".running_mean" in slot_names
        return name.startswith("head.") or (batchnorm and name.endswith((".weight", ".bias")))
    raise ValueError(f"part must be 'head_bn', not {part!r}")


def part_slots(layout, part):
    """(the part's slots laid end to end: a FlatLayout of its own, their indices in the whole vector)."""
    names = {s.name for s in layout.slots}
    slots, index, offset = [], [], 0
    for s in layout.slots:
        if is_part(s.name, names, part):
            slots.append(TensorSlot(s.name, s.shape, offset))
            index.append(torch.arange(s.offset, s.offset + s.numel))
            offset += s.numel
    return FlatLayout(slots), torch.cat(index)


class PartVAE(nn.Module):
    """An autoencoder over part of every network (p-diff's own setting); the rest of each decoded
    vector is one fixed training checkpoint's (`base`, standardised). Encoding reads the part of a
    whole vector, decoding writes it into the base: to everything else it is a VAE of whole networks."""

    def __init__(self, inner, index, n_params):
        super().__init__()
        self.inner = inner
        self.register_buffer("index", index, persistent=False)
        self.register_buffer("base", torch.zeros(n_params))

    @property
    def args(self):
        return self.inner.args

    @property
    def latent_dim(self):
        return self.inner.latent_dim

    def fill(self, part):
        whole = self.base.expand(len(part), -1).clone()
        whole[:, self.index] = part
        return whole

    def loss(self, x, kl_weight):
        return self.inner.loss(x[:, self.index], kl_weight)

    def initialise_from(self, x):
        self.inner.initialise_from(x[:, self.index])

    def encode(self, x):
        return self.inner.encode(x[:, self.index])

    def decode(self, z):
        return self.fill(self.inner.decode(z))

    @torch.no_grad()
    def reconstruct(self, x):
        return self.fill(self.inner.reconstruct(x[:, self.index]))

    @torch.no_grad()
    def sample(self, n, generator=None):
        return self.fill(self.inner.sample(n, generator))


def autoencoder_for(name, layout, part="all", **kwargs):
    """The autoencoder `name` for networks of `layout`, over all of each network or only `part`
    (then its base is still to be set: PartVAE.base)."""
    if part == "all":
        return AUTOENCODERS[name].for_layout(layout, **kwargs)
    sub, index = part_slots(layout, part)
    return PartVAE(AUTOENCODERS[name].for_layout(sub, **kwargs), index, layout.numel)


# Autoencoders by name (train_vae.py --autoencoder; the name is recorded in the checkpoint). A new
# one subclasses _NoisyVAE, is built by for_layout(layout, hidden=, latent_dim=, input_noise=,
# latent_noise=) from a TinyNN FlatLayout (hidden= only where it has a width, has_width), keeps its constructor's arguments in self.args (it is rebuilt from them) and defines
# encode(x) -> (mu, logvar) and decode(z); initialise_from(x) if it starts from the data.
AUTOENCODERS = {"mlp": WeightVAE, "channels": ChannelTokenVAE, "layercodes": LayerCodeVAE}


def build_vae(ckpt):
    """The VAE stored in a checkpoint dict (EMA weights), with its standardiser, in eval mode."""
    # Checkpoints from before the registry hold the MLP.
    model = registered(AUTOENCODERS, ckpt.get("autoencoder", "mlp"), "autoencoder")(**ckpt["model_args"])
    std = Standardizer.from_state_dict(ckpt["standardizer"])
    part = ckpt.get("part") or dict(name="all")
    if part["name"] != "all":
        model = PartVAE(model, part_slots(std.layout, part["name"])[1], std.layout.numel)
    model.load_state_dict(ckpt["ema"])
    return model.eval(), std


def load_vae(path, expect_layout=None):
    """(VAE, standardiser, checkpoint dict) from a train_vae.py checkpoint, checked against
    `expect_layout` (a FlatLayout) when given."""
    ckpt = load_checkpoint(path, VAE_KIND)
    model, std = build_vae(ckpt)
    if expect_layout is not None and std.layout != expect_layout:
        raise CheckpointError(f"{path} was trained on another TinyNN layout "
                              f"({std.layout.numel} numbers, not {expect_layout.numel})")
    return model, std, ckpt
