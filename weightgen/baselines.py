"""What a weight generator has to beat, and how new its networks are.

Zeng et al. 2025 found that weight generators mostly copy or average their training
checkpoints, and do no better than adding noise to them. Every baseline here works on the
aligned, standardised training weights of a WeightDataset (z-space, where each tensor has unit
spread), so "noise 0.1" means a tenth of each tensor's spread across the dataset.
"""
from functools import partial

import torch

from vae_model import code_sizes, join_channels, principal_directions, split_channels

NOISE_SCALES = (0.01, 0.05, 0.1)


def noisy_copies(z_train, n, gen, scale):
    """Random training checkpoints plus Gaussian noise of std `scale` (z-space)."""
    pick = torch.randint(0, len(z_train), (n,), generator=gen)
    return z_train[pick] + scale * torch.randn(n, z_train.shape[1], generator=gen)


def averages(z_train, n, gen, k):
    """The mean of k random (aligned) training checkpoints."""
    picks = torch.stack([torch.randperm(len(z_train), generator=gen)[:k] for _ in range(n)])
    return z_train[picks].mean(1)


def run_averages(z_train, n, gen, runs):
    """The mean of all of one training run's checkpoints (`runs`: the run of each row), the runs
    taken in turn from a random order: weight averaging along a trajectory (SWA, Izmailov et al.
    2018), the cheapest way to one smoothed network per run, which is what the generators make."""
    runs = torch.as_tensor(runs)
    ids = runs.unique()
    means = torch.stack([z_train[runs == r].mean(0) for r in ids.tolist()])
    order = torch.randperm(len(ids), generator=gen)
    return means[order[torch.arange(n) % len(ids)]]


def gaussian_fit(z_train, n, gen):
    """Independent Gaussians per coordinate, with the training checkpoints' mean and std."""
    mean, std = z_train.mean(0), z_train.std(0)
    return mean + std * torch.randn(n, z_train.shape[1], generator=gen)


def baselines(average_k, runs):
    """{name: draw(z_train, n, gen) -> z-space vectors [n, n_params]}, in report order (`runs`:
    the training run of each row of z_train). A new baseline is one function above and one entry here."""
    out = {f"train + noise {s}": partial(noisy_copies, scale=s) for s in NOISE_SCALES}
    out[f"average of {average_k}"] = partial(averages, k=average_k)
    out["run average"] = partial(run_averages, runs=runs)
    out["per-coordinate Gaussian"] = gaussian_fit
    return out


def all_baselines(z_train, runs, n, k, seed):
    """{name: z-space vectors [n, n_params]} for every baseline, drawn in turn from one generator."""
    gen = torch.Generator().manual_seed(seed)
    return {name: draw(z_train, n, gen) for name, draw in baselines(k, runs).items()}


def rms_distances(a, b):
    """[len(a), len(b)] RMS distance per coordinate between the vectors of a and of b."""
    return torch.cdist(a.double(), b.double()) / a.shape[1] ** 0.5


def nearest(z_query, z_train, self_index=None):
    """(RMS distance per coordinate, row) of each query's nearest training vector (z-space).
    self_index[i]: the row of z_train that query i is, skipped (for training vs training)."""
    d = rms_distances(z_query, z_train)
    if self_index is not None:
        d[torch.arange(len(d)), self_index] = float("inf")
    dist, row = d.min(1)
    return dist.float(), row


def nearest_within(z):
    """RMS distance from each vector to the nearest *other* vector of the same set: how diverse
    a set of networks is (a generator that repeats itself has near-zero distances here)."""
    return nearest(z, z, torch.arange(len(z)))[0]


def greedy_count(d, threshold):
    """Greedily, each item further than `threshold` (in the square distance matrix d) from every
    item counted before counts as new; returns the count."""
    kept = []
    for i in range(len(d)):
        if not kept or d[i, kept].min() > threshold:
            kept.append(i)
    return len(kept)


def distinct(z, threshold):
    """How many distinct vectors a set holds (RMS distance above `threshold`)."""
    return greedy_count(rms_distances(z, z), threshold)


def max_error_overlap(wrong_query, wrong_train, self_index=None):
    """For each query model, the largest Jaccard overlap between the test images it gets wrong
    and those one training model gets wrong. wrong_*: bool [models, test images]."""
    a, b = wrong_query.float(), wrong_train.float()
    inter = a @ b.T
    union = a.sum(1, keepdim=True) + b.sum(1)[None] - inter
    jac = inter / union.clamp(min=1)
    if self_index is not None:
        jac[torch.arange(len(jac)), self_index] = -1.0
    return jac.max(1).values


def disagreement(preds_a, preds_b):
    """[len(a), len(b)] share of test images on which two networks predict different classes.
    preds_*: long [models, test images]."""
    return torch.stack([(a[None] != preds_b).float().mean(1) for a in preds_a]) if len(preds_a) else \
        torch.empty(0, len(preds_b))


def reconstruction_identity(original_preds, recon_preds, run_preds):
    """Whether reconstructions are their originals' networks or a training run's: the mean
    disagreement of each reconstruction with its own original, with the nearest of the training
    runs (`run_preds`: one network per run), and, for scale, of each original with the nearest
    training run. An autoencoder that maps an unseen run onto a run it knows reconstructs it
    accurately but nearer that run than its original."""
    near = lambda p: disagreement(p, run_preds).min(1).values.mean().item()
    own = (original_preds != recon_preds).float().mean(1).mean().item()
    return dict(with_original=own, with_nearest_run=near(recon_preds), original_with_nearest_run=near(original_preds))


def cross_run_disagreement(preds, runs):
    """Disagreement of every pair of networks from different training runs (a flat tensor)."""
    d = disagreement(preds, preds)
    runs = torch.as_tensor(runs)
    return d[runs[:, None] != runs[None]]


def functionally_distinct(preds, threshold):
    """How many functionally different networks a set holds: a network counts when it disagrees
    with every one counted before on more than `threshold` of the test images."""
    return greedy_count(disagreement(preds, preds), threshold)


def ensemble_accuracy(probs, labels):
    """Accuracy of the averaged softmax of a set of networks. probs: [models, images, classes]."""
    return probs.mean(0).argmax(1).eq(labels).float().mean().item()


def one_per_run(runs, k):
    """Indices of the first network of each distinct run, at most k of them."""
    seen, out = set(), []
    for i, r in enumerate(runs):
        if r not in seen and len(out) < k:
            seen.add(r)
            out.append(i)
    return out


def new_network_bar(fresh_overlaps):
    """The max error overlap that a network from a fresh seed stays under, 95 times in 100."""
    return float(torch.quantile(torch.as_tensor(fresh_overlaps, dtype=torch.float64), 0.95))


def is_new(accuracy, overlap, min_acc, bar):
    """A new network: as accurate as the training bar asks, and no closer in its mistakes to any
    training network than a network from a fresh seed is."""
    return accuracy >= min_acc and overlap <= bar


def span_shares(train, query, ks):
    """How much of each query vector a generator that stays near its training vectors could
    reproduce, in z-space: ("mean", the share of a query's squared norm that the training mean
    removes) and, for each k in ks, the mean share of a query's squared deviation from the
    training mean that lies in the span of the first k principal directions of the training
    vectors' deviations (k above their rank: all of it). Returns {"mean": s, k: s, ...}."""
    # The rank tolerance of numpy's matrix_rank, at the inputs' precision: float32 rounding alone
    # gives every direction a tiny singular value, and those directions would count as spanned.
    tol = torch.finfo(train.dtype).eps * max(train.shape)
    train, query = train.double(), query.double()
    mu = train.mean(0)
    _, sizes, directions = torch.linalg.svd(train - mu, full_matrices=False)
    directions = directions[sizes > tol * sizes.max()]
    dev = query - mu
    norm = (dev ** 2).sum(1)
    out = {"mean": 1 - (norm / (query ** 2).sum(1)).mean().item()}
    for k in ks:
        out[k] = ((dev @ directions[:k].T) ** 2).sum(1).div(norm).mean().item()
    return out


def channel_codes(train, query, layers, share):
    """The query vectors (z-space) as the best linear code whose map is shared by all channels of
    a layer could give them: each layer's channel tokens (vae_model.channel_layers) projected on
    the first round(share x numbers per token) principal directions of the training vectors' tokens
    of that layer (at least one), the least-squares optimum of such a code. Returns (the decoded
    queries, {layer index: the share of the query tokens' variance about the training mean kept}).
    Latent numbers per network: sum over layers of channels x directions kept."""
    decoded, kept = [], {}
    pairs = zip(split_channels(train.double(), layers), split_channels(query.double(), layers), code_sizes(layers, share))
    for i, (t, q, k) in enumerate(pairs):
        mu, d, _ = principal_directions(t, k)
        decoded.append((q - mu) @ d.T @ d + mu)
        kept[i] = 1 - ((q - decoded[-1]) ** 2).sum().item() / ((q - mu) ** 2).sum().item()
    return join_channels(decoded, layers).to(query.dtype), kept
