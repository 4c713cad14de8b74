"""DDPM over vectors: the diffusion process owns the noise schedule, the loss and the samplers;
the network is only the denoiser (the lucidrains/denoising-diffusion-pytorch split).

    diffusion = GaussianDiffusion(VectorDenoiser(dim), timesteps=1000, schedule="cosine")
    loss = diffusion.loss(x0)                  # MSE of the predicted x_0 (prediction="eps": of the noise)
    x = diffusion.sample(100, sampler="ddim", steps=50)          # or sampler="ddpm" (all T steps)
    flow = FlowMatching(VectorDenoiser(dim))   # the same denoiser, told a velocity target instead
    x = flow.sample(100, sampler="heun", steps=25)               # or sampler="euler"

A denoiser built with num_conditions=R is told a condition: a row of R weights over R classes
(one-hot for a training run's vectors, a mixture of runs when sampling, all zeros for none), so
one model learns both p(x | run) and p(x) (classifier-free guidance, Ho & Salimans 2022).
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

from weightgen.model_io import registered

# One place for the defaults that train_diffusion.py's flags and the constructors share.
DIFFUSION_DEFAULTS = dict(timesteps=1000, schedule="linear", hidden=512, depth=4, time_dim=128, prediction="x0")
# Why x0: the training vectors are a few tight clusters (one per TinyNN run, in latent and in
# weight space). An eps-predicting denoiser fitted to them leaves many samples between the
# clusters, where decoded networks fail (quickstart dataset, 3 runs: 77-85% of generated nets
# above min_acc with eps, 100% with x0). Direct diffusion on 55,786 weights also needs a
# narrower denoiser: 512 wide is 57M parameters (hours per 100 epochs on a CPU), 128 is 15M;
# a 128-wide output cannot hold the noise of every coordinate, but it can hold a point near the
# training weights, which is what x0 prediction asks of it.
SPACE_DEFAULTS = dict(latent={}, weights=dict(hidden=128), pca={})


def linear_betas(timesteps):
    """Ho et al. 2020: betas from 1e-4 to 0.02 over 1000 steps, rescaled for other lengths."""
    scale = 1000 / timesteps
    return torch.linspace(scale * 1e-4, scale * 0.02, timesteps, dtype=torch.float64)


def cosine_betas(timesteps, s=0.008):
    """Nichol & Dhariwal 2021: alpha_bar follows a squared cosine; betas capped at 0.999."""
    t = torch.linspace(0, timesteps, timesteps + 1, dtype=torch.float64) / timesteps
    alpha_bar = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    return (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=0.999)


def timestep_embedding(t, dim):
    """Sinusoidal embedding of integer timesteps, [B] -> [B, dim]."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([args.sin(), args.cos()], dim=1)


class ResidualBlock(nn.Module):
    def __init__(self, hidden, time_dim):
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.time = nn.Linear(time_dim, hidden)
        self.fc1, self.fc2 = nn.Linear(hidden, hidden), nn.Linear(hidden, hidden)

    def forward(self, h, temb):
        x = F.silu(self.fc1(self.norm(h)) + self.time(temb))
        return h + self.fc2(x)


class VectorDenoiser(nn.Module):
    """From a noisy vector and its timestep (and, with num_conditions, its condition) to the clean
    vector x_0 (or the noise, with prediction="eps"): an MLP of residual blocks, each told the
    timestep plus the condition's embedding."""

    def __init__(self, dim, hidden=DIFFUSION_DEFAULTS["hidden"], depth=DIFFUSION_DEFAULTS["depth"],
                 time_dim=DIFFUSION_DEFAULTS["time_dim"], num_conditions=0):
        super().__init__()
        self.args = dict(dim=dim, hidden=hidden, depth=depth, time_dim=time_dim, num_conditions=num_conditions)
        self.time_mlp = nn.Sequential(nn.Linear(time_dim, time_dim), nn.SiLU(), nn.Linear(time_dim, time_dim))
        # Linear in the condition weights, no bias: a mixture of runs embeds as the mixture of their
        # embeddings, and "no condition" (all zeros) as zero, the unconditional model.
        self.condition = nn.Linear(num_conditions, time_dim, bias=False) if num_conditions else None
        self.inp = nn.Linear(dim, hidden)
        self.blocks = nn.ModuleList(ResidualBlock(hidden, time_dim) for _ in range(depth))
        self.out = nn.Sequential(nn.LayerNorm(hidden), nn.SiLU(), nn.Linear(hidden, dim))
        nn.init.zeros_(self.out[-1].weight)  # start by predicting zeros (the data mean, or no noise): a calm first step
        nn.init.zeros_(self.out[-1].bias)
        self.time_dim = time_dim

    def forward(self, x, t, cond=None):
        temb = self.time_mlp(timestep_embedding(t, self.time_dim))
        if cond is not None:
            temb = temb + self.condition(cond)
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, temb)
        return self.out(h)


class GaussianDiffusion(nn.Module):
    objective, samplers = "ddpm", ("ddim", "ddpm")

    def __init__(self, denoiser, timesteps=DIFFUSION_DEFAULTS["timesteps"], schedule=DIFFUSION_DEFAULTS["schedule"],
                 clip_x0=None, prediction=DIFFUSION_DEFAULTS["prediction"]):
        """prediction: what the denoiser outputs, "eps" (the noise) or "x0" (the clean vector);
        the loss is the MSE of that output. clip_x0: bound on |predicted x_0| while sampling (the training data's range). Early,
        x_0 = (x_t - sqrt(1 - alpha_bar) eps) / sqrt(alpha_bar) divides by ~0.006, so a small
        error in eps on a rare, large x_T sends a deterministic DDIM path far off the data;
        clipping x_0 (as image diffusion clips to [-1, 1]) keeps it in range."""
        super().__init__()
        if prediction not in ("eps", "x0"):
            raise ValueError(f"prediction must be 'eps' or 'x0', not {prediction!r}")
        self.denoiser, self.timesteps, self.schedule, self.clip_x0 = denoiser, timesteps, schedule, clip_x0
        self.prediction = prediction
        betas = {"linear": linear_betas, "cosine": cosine_betas}[schedule](timesteps)
        alpha_bar = torch.cumprod(1 - betas, dim=0)
        alpha_bar_prev = torch.cat([torch.ones(1, dtype=torch.float64), alpha_bar[:-1]])
        for name, value in dict(
                betas=betas, alpha_bar=alpha_bar, alpha_bar_prev=alpha_bar_prev,
                sqrt_alpha_bar=alpha_bar.sqrt(), sqrt_one_minus_alpha_bar=(1 - alpha_bar).sqrt(),
                posterior_var=betas * (1 - alpha_bar_prev) / (1 - alpha_bar)).items():
            self.register_buffer(name, value.float(), persistent=False)

    def constructor_args(self):
        """The constructor's arguments after the denoiser, as a checkpoint records them."""
        return dict(timesteps=self.timesteps, schedule=self.schedule, clip_x0=self.clip_x0,
                    prediction=self.prediction)

    def q_sample(self, x0, t, noise):
        """x_t given x_0: sqrt(alpha_bar) x_0 + sqrt(1 - alpha_bar) noise."""
        return self.sqrt_alpha_bar[t, None] * x0 + self.sqrt_one_minus_alpha_bar[t, None] * noise

    def loss(self, x0, cond=None):
        """MSE of the predicted noise (or x_0) at uniformly drawn timesteps; `cond` [B, R]: the
        vectors' conditions, for a conditioned denoiser."""
        t = torch.randint(0, self.timesteps, (x0.shape[0],), device=x0.device)
        noise = torch.randn_like(x0)
        target = noise if self.prediction == "eps" else x0
        return F.mse_loss(self.denoiser(self.q_sample(x0, t, noise), t, cond), target)

    @torch.no_grad()
    def sample(self, n, sampler="ddim", steps=50, eta=0.0, generator=None, progress=None, temperature=1.0,
               cond=None, cfg_scale=1.0):
        """n vectors from the model. sampler="ddpm": ancestral sampling over all timesteps;
        "ddim": `steps` evenly spaced timesteps, deterministic for eta=0. `temperature` scales the
        initial noise and every noise draw of the sampler: above 1 the samples spread wider than
        the training data, below 1 they gather at its modes.
        `cond` [n, R]: each sample's condition (a conditioned denoiser); cfg_scale w mixes the
        conditional and unconditional predictions as uncond + w (cond - uncond): 1 is the
        conditional model, above 1 pushes further towards the condition."""
        device = self.betas.device
        dim = self.denoiser.args["dim"]
        noise = lambda shape: temperature * torch.randn(shape, generator=generator, device=device)
        x = noise((n, dim))
        denoise = conditioned(self.denoiser, cond, cfg_scale)
        if sampler == "ddpm":
            return self._ddpm(x, noise, progress, denoise)
        if sampler == "ddim":
            return self._ddim(x, steps, eta, noise, progress, denoise)
        raise ValueError(f"sampler must be 'ddpm' or 'ddim', not {sampler!r}")

    def _predict(self, x, t, denoise):
        """(x_0, eps) predicted by `denoise` at timestep t, x_0 clipped to the data range when one
        is set; eps is the noise that this x_0 implies."""
        tt = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
        out = denoise(x, tt)
        x0 = out if self.prediction == "x0" else (x - self.sqrt_one_minus_alpha_bar[t] * out) / self.sqrt_alpha_bar[t]
        if self.clip_x0 is not None:
            x0 = x0.clamp(-self.clip_x0, self.clip_x0)
        return x0, (x - self.sqrt_alpha_bar[t] * x0) / self.sqrt_one_minus_alpha_bar[t]

    def _ddpm(self, x, noise, progress, denoise):
        for t in _iterate(reversed(range(self.timesteps)), self.timesteps, progress):
            x0, _ = self._predict(x, t, denoise)
            # Posterior mean of q(x_{t-1} | x_t, x_0), written with x_0.
            ab, ab_prev, beta = self.alpha_bar[t], self.alpha_bar_prev[t], self.betas[t]
            mean = (ab_prev.sqrt() * beta * x0 + (1 - beta).sqrt() * (1 - ab_prev) * x) / (1 - ab)
            x = mean + self.posterior_var[t].sqrt() * noise(x.shape) if t > 0 else mean
        return x

    def _ddim(self, x, steps, eta, noise, progress, denoise):
        ts = torch.linspace(self.timesteps - 1, 0, steps).round().long().unique_consecutive().tolist()
        for i, t in enumerate(_iterate(ts, len(ts), progress)):
            prev = ts[i + 1] if i + 1 < len(ts) else -1
            ab = self.alpha_bar[t]
            ab_prev = self.alpha_bar[prev] if prev >= 0 else torch.ones((), device=x.device)
            x0, eps = self._predict(x, t, denoise)
            sigma = eta * ((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)).sqrt()
            x = ab_prev.sqrt() * x0 + (1 - ab_prev - sigma ** 2).clamp(min=0).sqrt() * eps
            if eta > 0 and prev >= 0:
                x = x + sigma * noise(x.shape)
        return x


class FlowMatching(nn.Module):
    """Flow matching on straight paths (Lipman et al. 2023; rectified flow, Liu et al. 2023), the
    objective DeepWeightFlow trains: x_t = (1 - t) x_0 + t noise with t ~ U(0, 1), the denoiser
    predicts the velocity noise - x_0, and sampling integrates dx/dt = v from t = 1 (noise) to
    t = 0 in `steps` Euler or Heun steps (Heun: two evaluations a step, second-order accurate)."""
    objective, samplers = "flow", ("heun", "euler")
    # The denoiser's sinusoidal embedding is built for integer timesteps up to ~1000: t in [0, 1]
    # is shown to it on that scale.
    TIME_SCALE = 1000

    def __init__(self, denoiser):
        super().__init__()
        self.denoiser = denoiser

    def constructor_args(self):
        return {}

    def loss(self, x0, cond=None):
        """MSE of the predicted velocity at uniformly drawn times; `cond` as GaussianDiffusion.loss."""
        t = torch.rand(x0.shape[0], device=x0.device)
        noise = torch.randn_like(x0)
        x_t = torch.lerp(x0, noise, t[:, None])
        return F.mse_loss(self.denoiser(x_t, t * self.TIME_SCALE, cond), noise - x0)

    @torch.no_grad()
    def sample(self, n, sampler="heun", steps=25, eta=0.0, generator=None, progress=None, temperature=1.0,
               cond=None, cfg_scale=1.0):
        """n vectors: the ODE from noise (scaled by `temperature`) at t = 1 to t = 0. The path is
        deterministic given its start; `eta` is DDIM's and must be 0 here."""
        if sampler not in self.samplers:
            raise ValueError(f"sampler must be one of {self.samplers} for flow matching, not {sampler!r}")
        if eta:
            raise ValueError("flow matching samples by an ODE: eta (DDIM's noise) must be 0")
        device = next(self.denoiser.parameters()).device
        x = temperature * torch.randn((n, self.denoiser.args["dim"]), generator=generator, device=device)
        denoise = conditioned(self.denoiser, cond, cfg_scale)
        velocity = lambda x, t: denoise(x, torch.full((n,), t * self.TIME_SCALE, device=device))
        times = torch.linspace(1, 0, steps + 1).tolist()
        for t, s in _iterate(list(zip(times[:-1], times[1:])), steps, progress):
            v = velocity(x, t)
            x_next = x + (s - t) * v
            if sampler == "heun":  # the trapezoid of the velocities at both ends
                x_next = x + (s - t) * 0.5 * (v + velocity(x_next, s))
            x = x_next
        return x


def conditioned(denoiser, cond, cfg_scale):
    """denoise(x, t): `denoiser` told `cond`, with classifier-free guidance of scale cfg_scale."""
    if cond is None:
        return denoiser
    if cfg_scale == 1:
        return lambda x, t: denoiser(x, t, cond)
    return lambda x, t: torch.lerp(denoiser(x, t, torch.zeros_like(cond)), denoiser(x, t, cond), cfg_scale)


def one_hot_conditions(labels, num_conditions, drop=0.0, generator=None):
    """Training conditions [B, R] of integer labels [B]: one-hot rows, each set to "no condition"
    (all zeros) with probability `drop`, so that the model also learns the unconditional p(x)."""
    cond = F.one_hot(labels, num_conditions).float()
    if drop:
        keep = torch.rand(len(labels), generator=generator, device=labels.device) >= drop
        cond = cond * keep[:, None]
    return cond


def mixed_conditions(n, num_conditions, k, generator=None):
    """n sampling conditions [n, R], each a mixture of k distinct conditions drawn at random with
    weights from a flat Dirichlet (k=1: one condition; k=0: none, all zeros)."""
    cond = torch.zeros(n, num_conditions)
    if k == 0:
        return cond
    if not 1 <= k <= num_conditions:
        raise ValueError(f"cannot mix {k} of {num_conditions} conditions")
    chosen = torch.stack([torch.randperm(num_conditions, generator=generator)[:k] for _ in range(n)])
    weights = -torch.log(torch.rand(n, k, generator=generator).clamp(min=1e-12))  # Exp(1) draws, normalised:
    return cond.scatter_(1, chosen, weights / weights.sum(1, keepdim=True))       # a flat Dirichlet


# Denoisers by name (train_diffusion.py --denoiser; the name is recorded in the checkpoint). A
# new one takes dim (the vector size), num_conditions and its own keyword arguments, keeps them all
# in self.args, and maps (x [B, dim], t [B], cond [B, num_conditions] or None) to [B, dim].
DENOISERS = {"mlp": VectorDenoiser}


# Training objectives by name (train_diffusion.py --objective; recorded in the checkpoint). Each
# owns its loss and samplers around a denoiser and lists its samplers, the default first.
OBJECTIVES = {"ddpm": GaussianDiffusion, "flow": FlowMatching}


def build_diffusion(ckpt):
    """The diffusion model stored in a train_diffusion.py checkpoint dict (EMA weights), in eval mode."""
    denoiser = registered(DENOISERS, ckpt.get("denoiser", "mlp"), "denoiser")  # older checkpoints: the MLP
    objective = registered(OBJECTIVES, ckpt.get("objective", "ddpm"), "objective")  # older: all DDPM
    model = objective(denoiser(**ckpt["denoiser_args"]), **ckpt["diffusion_args"])
    model.denoiser.load_state_dict(ckpt["ema"])
    return model.eval()


def _iterate(items, total, progress):
    """Wrap an iterable in a progress bar when `progress` is a tqdm-like factory."""
    return progress(items, total=total) if progress else items
