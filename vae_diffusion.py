"""Latent diffusion on a trained weight VAE, and direct diffusion on standardised weights.

`DiffusionSpace` is the bridge between a diffusion model's vectors and TinyNN weights:
- space "latent": the VAE encodes the (aligned, standardised) weight dataset once (latents
  cached beside the diffusion run), latents are standardised per dimension with statistics
  recorded in the checkpoint, and sampled latents go back through the VAE decoder;
- space "weights": the diffusion works on the standardised flat weights themselves;
- space "pca": on the coordinates of the standardised, aligned training weights along their
  principal directions (as many as the training runs by default: DeepWeightFlow's space), each
  standardised; a sample goes back as mean + coordinates x directions.
Both end in `to_weights(samples)`: flat TinyNN weight vectors, BatchNorm statistics included.
"""
import hashlib
import os

import torch

from weightgen.alignment import align_method
from weightgen.model_io import CheckpointError, atomic_write
from weightgen.standardizer import Standardizer
from vae_model import load_vae


def file_fingerprint(path):
    """sha256 of a file: ties a diffusion model to the exact VAE it was trained on."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@torch.no_grad()
def encode(vae, z_weights, batch_size=256):
    """Posterior means of standardised weight vectors."""
    p = next(vae.parameters())
    return torch.cat([vae.encode(z_weights[i:i + batch_size].to(p.device))[0].cpu()
                      for i in range(0, len(z_weights), batch_size)])


def principal_basis(vectors, k):
    """(mean [d], directions [k', d] with orthonormal rows) of vectors [n, d]: the top k principal
    directions, less those with no variance (k' <= min(k, n - 1)), so that every vector in the
    span of the centred data, each of `vectors` among them when k >= n - 1, maps back to itself."""
    mean = vectors.double().mean(0)
    _, s, vh = torch.linalg.svd(vectors.double() - mean, full_matrices=False)
    keep = s[:k] > s[0] * 1e-6
    return mean.float(), vh[:k][keep].float()


def to_coordinates(vectors, mean, directions):
    return (vectors - mean) @ directions.T


def from_coordinates(coords, mean, directions):
    return mean + coords @ directions


class DiffusionSpace:
    """What the diffusion model sees, and the way back to TinyNN weights."""

    def __init__(self, space, standardizer, vae=None, vae_info=None, latent_mean=None, latent_std=None, pca=None):
        self.space, self.standardizer, self.vae, self.vae_info = space, standardizer, vae, vae_info
        self.latent_mean, self.latent_std = latent_mean, latent_std
        self.pca = pca  # space "pca": dict(mean [n_params], directions [k, n_params]), z-space

    @classmethod
    def for_training(cls, space, ds, vae_path=None, loaded_vae=None, cache_dir=None, components=0):
        """The space and the training vectors for dataset `ds` (a WeightDataset); the VAE is
        read from `vae_path` unless `loaded_vae` (load_vae's result for that path) is given;
        space "pca" keeps `components` directions (0: one per training run)."""
        if space == "weights":
            return cls(space, ds.standardizer), ds.train
        if space == "pca":
            k = components or len({r["run"] for r in ds.train_records})
            mean, directions = principal_basis(ds.train, k)
            coords = to_coordinates(ds.train, mean, directions)
            c_mean, c_std = coords.mean(0), coords.std(0).clamp(min=1e-6)
            return (cls(space, ds.standardizer, latent_mean=c_mean, latent_std=c_std,
                        pca=dict(mean=mean, directions=directions)), (coords - c_mean) / c_std)
        vae, std, ckpt = loaded_vae or load_vae(vae_path)
        if std.layout != ds.layout:
            raise CheckpointError(f"{vae_path} was trained on another TinyNN layout than {ds.folder}")
        if align_method(ckpt["dataset"]["align"]) != ds.description["align"]:
            raise CheckpointError(f"{vae_path} was trained with align={ckpt['dataset']['align']}, "
                                  f"the diffusion data has align={ds.description['align']}")
        info = dict(path=os.path.abspath(vae_path), fingerprint=file_fingerprint(vae_path),
                    model_args=ckpt["model_args"])
        # The VAE's own standardiser (fitted on its training split) defines its input space.
        weights = ds.standardizer.destandardize(ds.train)
        latents = cls._cached_latents(vae, std.standardize(weights), info, cache_dir)
        mean, sd = latents.mean(0), latents.std(0).clamp(min=1e-6)
        return cls(space, std, vae, info, mean, sd), (latents - mean) / sd

    @staticmethod
    def _cached_latents(vae, z_weights, info, cache_dir):
        path = os.path.join(cache_dir, "latents.pt") if cache_dir else None
        if path and os.path.exists(path):
            cached = torch.load(path, map_location="cpu", weights_only=True)
            if cached["fingerprint"] == info["fingerprint"] and cached["latents"].shape[0] == len(z_weights):
                return cached["latents"]
        latents = encode(vae, z_weights)
        if path:
            os.makedirs(cache_dir, exist_ok=True)
            atomic_write(path, lambda tmp: torch.save(dict(fingerprint=info["fingerprint"], latents=latents), tmp))
        return latents

    def state_dict(self):
        """What a diffusion checkpoint records so that sampling needs nothing else."""
        d = dict(space=self.space, standardizer=self.standardizer.state_dict(), vae=self.vae_info)
        if self.space in ("latent", "pca"):
            d.update(latent_mean=self.latent_mean.tolist(), latent_std=self.latent_std.tolist())
        if self.space == "pca":
            d.update(pca_mean=self.pca["mean"], pca_directions=self.pca["directions"])
        return d

    @classmethod
    def from_state_dict(cls, d, vae_path=None):
        """Rebuild from a checkpoint; the VAE is loaded from its recorded path or `vae_path`,
        which must be the very file the diffusion model was trained on."""
        std = Standardizer.from_state_dict(d["standardizer"])
        if d["space"] == "weights":
            return cls("weights", std)
        if d["space"] == "pca":
            return cls("pca", std, latent_mean=torch.tensor(d["latent_mean"]), latent_std=torch.tensor(d["latent_std"]),
                       pca=dict(mean=d["pca_mean"], directions=d["pca_directions"]))
        path = vae_path or d["vae"]["path"]
        if not os.path.isfile(path):
            raise CheckpointError(f"the VAE this diffusion model was trained on is not at {path}; "
                                  f"pass --vae_path")
        if file_fingerprint(path) != d["vae"]["fingerprint"]:
            raise CheckpointError(f"{path} is not the VAE this diffusion model was trained on "
                                  f"(trained on {d['vae']['path']}, sha256 {d['vae']['fingerprint'][:12]}...)")
        vae, _, _ = load_vae(path, expect_layout=std.layout)
        return cls("latent", std, vae, d["vae"], torch.tensor(d["latent_mean"]), torch.tensor(d["latent_std"]))

    @torch.no_grad()
    def to_weights(self, samples):
        """Diffusion samples -> flat TinyNN weights (de-standardised, on the CPU)."""
        samples = samples.cpu()
        if self.space == "pca":
            samples = from_coordinates(samples * self.latent_std + self.latent_mean, self.pca["mean"],
                                       self.pca["directions"])
        if self.space == "latent":
            z = samples * self.latent_std + self.latent_mean
            p = next(self.vae.parameters())
            samples = self.vae.decode(z.to(p.device, p.dtype)).cpu()
        return self.standardizer.destandardize(samples)
