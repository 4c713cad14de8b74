"""evaluate_generated.py on known models, and the novelty measures."""
import json

import pytest
import torch

from baselines import all_baselines, max_error_overlap, nearest
from conftest import DATA_DIR, private_copy, run_script
from model_io import save_checkpoint
from tinynn_training import evaluate_flat
from weight_dataset import WeightDataset


@pytest.fixture(scope="module")
def dataset(tiny_dataset, tmp_path_factory):
    return private_copy(tiny_dataset, tmp_path_factory, "eval")


def test_training_checkpoints_as_generated_reproduce_their_accuracy_and_zero_distance(dataset, cifar):
    """Training checkpoints passed as if generated: their test accuracy is what evaluating them
    directly gives, and their distance to the training set is zero."""
    ds = WeightDataset(str(dataset), align=True, seed=0)
    weights = ds.standardizer.destandardize(ds.train[:3])
    gen = dataset / "as_generated"
    save_checkpoint(dict(kind="generated-tinynns", weights=weights, tinynn=ds.tinynn_config,
                         layout=ds.layout.to_json(), batchnorm="training checkpoints", dataset=ds.description),
                    str(gen / "generated.pt"))
    run_script("evaluate_generated.py", "--model_path", gen, "--checkpoint_dir", dataset, "--train_models", "100",
               "--baseline_models", "2", "--data_dir", DATA_DIR, "--no_download", "--device", "cpu")
    report = json.load(open(gen / "report.json"))
    direct = evaluate_flat(weights, ds.layout, ds.tinynn_config, cifar.test_images, cifar.test_labels)
    assert report["per_model"]["generated"]["accuracy"] == pytest.approx(direct, abs=1e-6)
    assert report["per_model"]["generated"]["nearest_distance"] == pytest.approx([0, 0, 0], abs=1e-4)
    assert report["per_model"]["generated"]["nearest_run"] == [r["run"] for r in ds.train_records[:3]]
    # --train_models 100 samples every training checkpoint, so each "generated" one meets itself.
    assert report["summary"]["generated"]["max_error_overlap"]["min"] == pytest.approx(1.0)
    assert {"train + noise 0.01", "average of 5", "per-coordinate Gaussian"} <= set(report["summary"])
    for name in ["report.md", "accuracy_hist.png", "novelty.png"]:
        assert (gen / name).stat().st_size > 0


def test_novelty_measures_on_hand_made_cases():
    train = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    dist, row = nearest(torch.tensor([[3.0, 4.0], [0.0, 1.0]]), train)
    assert dist.tolist() == pytest.approx([0.0, 1 / 2 ** 0.5]) and row.tolist() == [1, 0]
    # Excluding itself, the first training vector's nearest other one is 5 away (RMS: 5/sqrt(2)).
    dist, row = nearest(train[:1], train, torch.tensor([0]))
    assert dist.item() == pytest.approx(5 / 2 ** 0.5) and row.item() == 1
    wrong_train = torch.tensor([[1, 1, 0, 0], [0, 0, 1, 1]], dtype=torch.bool)
    query = torch.tensor([[1, 1, 1, 0]], dtype=torch.bool)
    assert max_error_overlap(query, wrong_train).item() == pytest.approx(2 / 3)


def test_baselines_have_the_asked_shapes_and_spreads():
    z = torch.randn(50, 20, generator=torch.Generator().manual_seed(0))
    b = all_baselines(z, 30, 5, seed=1)
    assert all(v.shape == (30, 20) for v in b.values())
    # Noise of 0.01 stays next to a training vector; the averages are smoother than the data.
    assert nearest(b["train + noise 0.01"], z)[0].max() < 0.02
    assert b["average of 5"].std() < z.std() * 0.6
