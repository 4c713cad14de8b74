"""Networks between training runs: checkpoints of different runs drawn together, their channels
matched to the first's, blended, and BatchNorm statistics recomputed on training images.

What experiments/midpoints.py measures and sample_blends.py generates from:

    pairs = checkpoint_pairs(ds, n, seed, k=3)                   # rows of ds.train, k runs each
    w = match_pairs(pair_weights(ds, pairs), ds, "activations", images)
    blends = reestimate_bn(interpolate(w, blend_coefficients(3, 0.5)), ds, images_uint8)
"""
import torch

from weightgen import checkpoint_dataset as cd
from weightgen.alignment import flat_index, match, permutation_spec
from weightgen.cifar10 import standardize
from weightgen.tinynn import model_from_flat


def checkpoint_pairs(ds, n, seed, k=2):
    """[n, k] rows of ds.train: n pairs (k-tuples) of checkpoints, each from k different runs."""
    runs = torch.tensor([r["run"] for r in ds.train_records])
    if len(runs.unique()) < k:
        raise cd.DatasetError(f"blends of {k} runs need {k} training runs; the generator split has "
                              f"{len(runs.unique())}")
    gen = torch.Generator().manual_seed(seed)
    pairs = []
    while len(pairs) < n:
        rows = torch.randint(len(runs), (k,), generator=gen)
        if len(runs[rows].unique()) == k:
            pairs.append(rows)
    return torch.stack(pairs)


def pair_weights(ds, pairs):
    """[pairs, k, numel]: each pair's (k-tuple's) checkpoints in weight units (only their rows of ds.train)."""
    return ds.standardizer.destandardize(ds.train[pairs.flatten()]).view(*pairs.shape, -1)


def match_pairs(w, ds, how, images):
    """w [pairs, k, numel] with the channels of each pair's later members matched to its first's
    ("weights" or "activations" on `images`, standardised), in place."""
    spec = permutation_spec(ds.tinynn_config)
    for pair in w:
        for i in range(1, len(pair)):
            pair[i] = pair[i][flat_index(match(pair[0], pair[i], ds.layout, ds.tinynn_config, spec, how, images),
                                         ds.layout, spec)]
    return w


def blend_coefficients(k, alpha):
    """How much of each member a blend takes: (1 - alpha, alpha) for a pair, equal shares above."""
    return torch.tensor([1 - alpha, alpha]) if k == 2 else torch.full((k,), 1 / k)


def interpolate(w, coef):
    """Flat weights sum_i coef_i w_i of each pair of w [pairs, k, numel] ((1 - alpha) a + alpha b)."""
    return torch.einsum("k,pkn->pn", coef.to(w.dtype), w)


@torch.no_grad()
def reestimate_bn(weights, ds, images_uint8, batch_size=500):
    """The same networks with BatchNorm running statistics recomputed on `images_uint8`
    (an average over all of them, not a momentum average)."""
    out = weights.clone()
    for i, w in enumerate(weights):
        model = model_from_flat(w, ds.layout, ds.tinynn_config)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.reset_running_stats()
                m.momentum = None
        model.train()
        for j in range(0, len(images_uint8), batch_size):
            model(standardize(images_uint8[j:j + batch_size]))
        out[i] = ds.layout.flatten(model.state_dict())
    return out
