import torch

from weightgen.cifar10 import standardize
from weightgen.tinynn import FlatLayout, TinyNN, clamp_running_var, count_flat_numbers, model_from_flat


def trained_like_model(seed=0):
    """A TinyNN whose BN statistics are not at their defaults, so the round trip sees them."""
    torch.manual_seed(seed)
    model = TinyNN()
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(8, 3, 32, 32))
    return model.eval()


def test_flat_vector_fits_the_vae():
    assert count_flat_numbers() <= 60_000


def test_layout_covers_every_float_tensor_once():
    model = TinyNN()
    layout = FlatLayout.of(model)
    floats = {k: v for k, v in model.state_dict().items() if v.is_floating_point()}
    assert [s.name for s in layout.slots] == list(floats)
    assert layout.numel == sum(v.numel() for v in floats.values())
    offsets = [s.offset for s in layout.slots]
    assert offsets == sorted(offsets) and offsets[0] == 0


def test_flatten_unflatten_round_trip_is_exact():
    model = trained_like_model()
    layout = FlatLayout.of(model)
    vec = layout.flatten(model.state_dict())
    restored = layout.unflatten(vec.clone())
    assert set(restored) == set(model.state_dict())  # so load_state_dict(strict=True) works
    for name, t in model.state_dict().items():
        if t.is_floating_point():
            assert torch.equal(restored[name], t), name
    assert torch.equal(layout.flatten(restored), vec)


def test_layout_json_round_trip():
    layout = FlatLayout.of(TinyNN())
    assert FlatLayout.from_json(layout.to_json()) == layout


def test_model_from_flat_computes_the_same_function(cifar):
    model = trained_like_model(1)
    layout = FlatLayout.of(model)
    rebuilt = model_from_flat(layout.flatten(model.state_dict()), layout, model.config())
    x = standardize(cifar.test_images[:64])
    with torch.no_grad():
        assert torch.equal(model(x), rebuilt(x))


def test_unflatten_rejects_a_wrong_length():
    layout = FlatLayout.of(TinyNN())
    try:
        layout.unflatten(torch.zeros(layout.numel + 1))
    except ValueError as e:
        assert str(layout.numel) in str(e)
    else:
        raise AssertionError("a vector of the wrong length was accepted")


def test_negative_generated_variances_are_clamped_and_the_net_runs(cifar):
    layout = FlatLayout.of(TinyNN())
    vec = layout.flatten(trained_like_model(2).state_dict()).repeat(2, 1)
    var = next(s for s in layout.slots if s.name.endswith("running_var"))
    vec[0, var.offset:var.offset + 3] = -0.5
    assert clamp_running_var(vec, layout) == 3
    assert (vec[0, var.offset:var.offset + 3] == 0).all()
    with torch.no_grad():
        assert torch.isfinite(model_from_flat(vec[0], layout, TinyNN().config())(standardize(cifar.test_images[:8]))).all()
