"""The accuracy predictor behind sample.py --guide learns accuracy from vectors."""
import torch

from train_guide import fit, held_out_fit, parse_args


def test_predictor_learns_a_smooth_accuracy_far_better_than_the_mean():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 8, generator=g)
    y = 0.1 + 0.6 * torch.sigmoid(2 * x[:, 0] - x[:, 1])  # an accuracy in (0.1, 0.7) set by two directions
    args = parse_args(["--model_path", "-", "--epochs", "1000", "--quiet"])
    model = fit(x[:300], y[:300], args)
    report = held_out_fit(model, x[300:], y[300:])
    mean_error = (y[300:] - y[:300].mean()).abs().mean().item()
    assert report["n"] == 100 and report["mae"] < mean_error / 3 and report["corr"] > 0.95
