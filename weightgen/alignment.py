"""Align independent TinyNN runs by permuting hidden units (weight matching, Git Re-Basin; or
activation matching).

Runs from different seeds sit in basins that are permutations of each other. Weight matching
(Ainsworth et al. 2023) finds, for each run, the permutation of every conv layer's output
channels that makes its weights most similar to a reference run's, one layer at a time with
`scipy.optimize.linear_sum_assignment`, sweeping until no layer changes. A permutation of a
layer's channels, applied to its conv rows, its BatchNorm tensors and the next layer's input
columns, leaves the network's function unchanged.

Activation matching (Li et al. 2016; Ainsworth et al. 2023, section 3.1) pairs channels whose
outputs on the same images correlate best instead; it needs images and a forward pass, and on
TinyNN pairs its midpoints lose half as much accuracy (README, networks between runs).

Everything here works on flat weight vectors: a run's permutations become one index vector
over the flat layout, so aligning 250 checkpoints of a run is one gather.
"""
import torch

from weightgen.tinynn import TinyNN, model_from_flat


def permutation_spec(model_config):
    """For each permutable layer, the tensor names it owns and the tensors that read its output.

    Returns a list of dicts: {"conv": name, "bn": [names], "next": name or None (the head)}.
    """
    model = TinyNN(**model_config)
    layers = []
    for i, block in enumerate(model.features):
        conv = f"features.{i}.0.weight"
        bn_idx = next(j for j, m in enumerate(block) if isinstance(m, torch.nn.BatchNorm2d))
        bn = [f"features.{i}.{bn_idx}.{t}" for t in ("weight", "bias", "running_mean", "running_var")]
        layers.append(dict(conv=conv, bn=bn))
    for i, layer in enumerate(layers):
        layer["next"] = layers[i + 1]["conv"] if i + 1 < len(layers) else "head.weight"
    return layers


def _tensors(vector, layout):
    return {s.name: vector[s.offset:s.offset + s.numel].view(s.shape) for s in layout.slots}


def flat_index(perms, layout, spec):
    """One index vector over the flat layout: aligned = vector[..., index]."""
    index = _tensors(torch.arange(layout.numel), layout)
    index = {k: v.clone() for k, v in index.items()}
    for perm, layer in zip(perms, spec):
        index[layer["conv"]] = index[layer["conv"]][perm]
        for name in layer["bn"]:
            index[name] = index[name][perm]
        index[layer["next"]] = index[layer["next"]][:, perm]
    return torch.cat([index[s.name].reshape(-1) for s in layout.slots])


def _unit_features(t, layer, spec_i, spec, perms):
    """Per-output-unit feature rows of one layer in weight dict `t`, with the neighbouring
    layers' permutations applied so that rows are comparable with the reference's."""
    w = t[layer["conv"]]
    if spec_i > 0 and perms is not None:
        w = w[:, perms[spec_i - 1]]
    rows = [w.reshape(w.shape[0], -1)] + [t[n].reshape(-1, 1) for n in layer["bn"]]
    nxt = t[layer["next"]]
    if perms is not None and spec_i + 1 < len(spec):
        nxt = nxt[perms[spec_i + 1]]
    rows.append(nxt.transpose(0, 1).reshape(nxt.shape[1], -1))
    return torch.cat(rows, dim=1)


def weight_matching(reference, other, layout, spec, max_sweeps=100, seed=0):
    """Permutations (one per layer) that bring `other`'s units onto `reference`'s.

    Both are flat vectors. Coordinate descent: each sweep visits the layers in random order and
    solves a linear assignment for one layer with the others held fixed.
    """
    # Imported here: scipy.optimize adds ~0.6 s to the start of every script that imports this
    # module, and most of them only read an alignment cached in the dataset folder.
    from scipy.optimize import linear_sum_assignment
    ref, oth = _tensors(reference.double(), layout), _tensors(other.double(), layout)
    perms = [torch.arange(ref[layer["conv"]].shape[0]) for layer in spec]
    g = torch.Generator().manual_seed(seed)
    for _ in range(max_sweeps):
        changed = False
        for i in torch.randperm(len(spec), generator=g).tolist():
            a = _unit_features(ref, spec[i], i, spec, None)
            b = _unit_features(oth, spec[i], i, spec, perms)
            _, cols = linear_sum_assignment((a @ b.T).numpy(), maximize=True)
            new = torch.as_tensor(cols, dtype=torch.long)
            changed |= not torch.equal(new, perms[i])
            perms[i] = new
        if not changed:
            break
    return perms


@torch.no_grad()
def block_outputs(vector, layout, model_config, images):
    """Each conv block's output (after BatchNorm and ReLU) on `images` (standardised float), as
    [channels, images x pixels]."""
    model = model_from_flat(vector, layout, model_config)
    h, out = images, []
    for block in model.features:
        h = block(h)
        out.append(h.transpose(0, 1).reshape(h.shape[1], -1))
    return out


def activation_matching(reference, other, layout, model_config, images):
    """Permutations (one per layer) that bring `other`'s channels onto `reference`'s by the
    correlation of their outputs on `images` (one assignment per layer; a channel's output does
    not depend on how earlier layers are ordered, so the layers are matched independently)."""
    from scipy.optimize import linear_sum_assignment  # see weight_matching
    perms = []
    for a, b in zip(block_outputs(reference, layout, model_config, images),
                    block_outputs(other, layout, model_config, images)):
        za, zb = [(t - t.mean(1, keepdim=True)) / (t.std(1, keepdim=True) + 1e-6) for t in (a, b)]
        _, cols = linear_sum_assignment((za.double() @ zb.double().T).numpy(), maximize=True)
        perms.append(torch.as_tensor(cols, dtype=torch.long))
    return perms


ALIGN_METHODS = ("weights", "activations", "none")


def align_method(align):
    """One of ALIGN_METHODS; True and False (how checkpoints recorded it before activation
    matching) are weights and none."""
    if isinstance(align, bool):
        return "weights" if align else "none"
    if align not in ALIGN_METHODS:
        raise ValueError(f"align must be one of {', '.join(ALIGN_METHODS)}, not {align!r}")
    return align


def match(reference, other, layout, model_config, spec, method, images=None):
    """Permutations (one per layer) that bring `other` onto `reference` by weight matching
    ("weights") or activation matching on `images` ("activations")."""
    if method == "weights":
        return weight_matching(reference, other, layout, spec)
    return activation_matching(reference, other, layout, model_config, images)


def align_runs(final_weights, layout, model_config, reference_run, method="weights", images=None):
    """{run: flat index} that aligns every run to `reference_run`, matched on each run's
    `final_weights[run]` (one flat vector per run) by weight matching, or by activation matching
    on `images` (standardised); the reference gets the identity."""
    spec = permutation_spec(model_config)
    ref = final_weights[reference_run]
    out = {}
    for run, vec in final_weights.items():
        if run == reference_run:
            out[run] = torch.arange(layout.numel)
            continue
        out[run] = flat_index(match(ref, vec, layout, model_config, spec, method, images), layout, spec)
    return out
