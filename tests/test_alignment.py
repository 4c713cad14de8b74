"""Weight matching: an aligned TinyNN computes what the original does, and a permuted copy of
the reference is mapped back onto it exactly."""
import torch

from weightgen.alignment import activation_matching, align_runs, block_outputs, flat_index, permutation_spec, weight_matching
from weightgen.cifar10 import standardize
from weightgen.tinynn import TINYNN_DEFAULTS, FlatLayout, TinyNN, model_from_flat
from weightgen.tinynn_training import RunTrainer

CONFIG = dict(TINYNN_DEFAULTS)


def briefly_trained(cifar, seed, steps=30):
    run = RunTrainer(cifar.train_images[:4000], cifar.train_labels[:4000], seed,
                     train_config=None, device="cpu")
    run.cfg.batch_size = 64
    run.train(steps)
    return run.flat_weights(FlatLayout.of(run.model))


def random_perms(spec, layout, seed):
    g = torch.Generator().manual_seed(seed)
    sizes = [layout.slots[[s.name for s in layout.slots].index(l["conv"])].shape[0] for l in spec]
    return [torch.randperm(n, generator=g) for n in sizes]


def test_permuted_network_computes_the_same_function(cifar):
    layout = FlatLayout.of(TinyNN(**CONFIG))
    spec = permutation_spec(CONFIG)
    vec = briefly_trained(cifar, 0)
    permuted = vec[flat_index(random_perms(spec, layout, 1), layout, spec)]
    assert not torch.equal(permuted, vec)
    x = standardize(cifar.test_images[:200])
    with torch.no_grad():
        a = model_from_flat(vec, layout, CONFIG)(x)
        b = model_from_flat(permuted, layout, CONFIG)(x)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_weight_matching_undoes_a_permutation_exactly(cifar):
    layout = FlatLayout.of(TinyNN(**CONFIG))
    spec = permutation_spec(CONFIG)
    ref = briefly_trained(cifar, 0)
    scrambled = ref[flat_index(random_perms(spec, layout, 2), layout, spec)]
    perms = weight_matching(ref, scrambled, layout, spec)
    assert torch.equal(scrambled[flat_index(perms, layout, spec)], ref)


def test_aligning_an_independent_run_keeps_function_and_moves_it_closer(cifar):
    layout = FlatLayout.of(TinyNN(**CONFIG))
    ref, other = briefly_trained(cifar, 0), briefly_trained(cifar, 1)
    index = align_runs({0: ref, 1: other}, layout, CONFIG, reference_run=0)
    assert torch.equal(index[0], torch.arange(layout.numel))
    aligned = other[index[1]]
    x = standardize(cifar.test_images[:200])
    with torch.no_grad():
        torch.testing.assert_close(model_from_flat(aligned, layout, CONFIG)(x),
                                   model_from_flat(other, layout, CONFIG)(x), rtol=1e-5, atol=1e-5)
    assert (aligned - ref).norm() < (other - ref).norm()


def test_activation_matching_maps_a_permuted_copy_onto_the_reference(cifar):
    """A permuted copy computes the same channel outputs in another order; matched back, every
    block's outputs are the reference's (channels that never fire may pair in any order)."""
    layout = FlatLayout.of(TinyNN(**CONFIG))
    spec = permutation_spec(CONFIG)
    ref = briefly_trained(cifar, 0)
    scrambled = ref[flat_index(random_perms(spec, layout, 3), layout, spec)]
    x = standardize(cifar.train_images[:100])
    perms = activation_matching(ref, scrambled, layout, CONFIG, x)
    matched = scrambled[flat_index(perms, layout, spec)]
    assert not torch.equal(block_outputs(scrambled, layout, CONFIG, x)[0], block_outputs(ref, layout, CONFIG, x)[0])
    for a, b in zip(block_outputs(matched, layout, CONFIG, x), block_outputs(ref, layout, CONFIG, x)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
