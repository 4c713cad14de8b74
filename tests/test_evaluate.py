"""evaluate_generated.py on known models, and the novelty measures."""
import json
import shutil

import numpy as np
import pytest
import torch

from weightgen.baselines import (all_baselines, cross_run_disagreement, disagreement, ensemble_accuracy, functionally_distinct,
                       is_new, max_error_overlap, nearest, new_network_bar, one_per_run)
from conftest import DATA_DIR, TEST_IMAGES, gen, private_copy, run_script
from evaluate_generated import ensembles, training_sample
from weightgen.model_io import save_checkpoint
from weightgen.tinynn_training import evaluate_flat
from weightgen.weight_dataset import WeightDataset


@pytest.fixture(scope="module")
def dataset(tiny_dataset, tmp_path_factory):
    return private_copy(tiny_dataset, tmp_path_factory, "eval")


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    """Two runs with the tiny dataset's recipe from another base seed."""
    folder = tmp_path_factory.mktemp("fresh") / "fresh"
    gen(folder, "--runs", "2", "--seed", "1")
    return folder


def evaluate(gen_dir, *extra, check=True):
    return run_script("evaluate_generated.py", "--model_path", gen_dir, "--train_models", "100",
                      "--baseline_models", "2", "--test_images", TEST_IMAGES, "--data_dir", DATA_DIR, "--no_download",
                      "--device", "cpu", *extra,
                      check=check)


def test_training_checkpoints_as_generated_reproduce_their_accuracy_and_zero_distance(dataset, fresh, cifar):
    """Training checkpoints passed as if generated: their test accuracy is what evaluating them
    directly gives, their distance to the training set is zero, and none is new."""
    ds = WeightDataset(str(dataset), align=True, seed=0)
    weights = ds.standardizer.destandardize(ds.train[:3])
    gen = dataset / "as_generated"
    save_checkpoint(dict(kind="generated-tinynns", weights=weights, tinynn=ds.tinynn_config,
                         layout=ds.layout.to_json(), batchnorm="training checkpoints", dataset=ds.description),
                    str(gen / "generated.pt"))
    out = evaluate(gen, "--fresh_dir", fresh)
    report = json.load(open(gen / "report.json"))
    # A line per group as it is done (and a bar over the networks), not silence until the report.
    for group, r in report["per_model"].items():
        assert f"{group}: {len(r['accuracy'])} networks, mean test accuracy {np.mean(r['accuracy']):.4f}" in out.stdout
    assert "networks evaluated" in out.stderr
    direct = evaluate_flat(weights, ds.layout, ds.tinynn_config, cifar.test_images[:TEST_IMAGES],
                           cifar.test_labels[:TEST_IMAGES])
    assert report["per_model"]["generated"]["accuracy"] == pytest.approx(direct, abs=1e-6)
    assert report["test_images"] == TEST_IMAGES
    assert "the first 1000 CIFAR-10 test images" in (gen / "report.md").read_text()
    assert report["per_model"]["generated"]["nearest_distance"] == pytest.approx([0, 0, 0], abs=1e-4)
    assert report["per_model"]["generated"]["nearest_run"] == [r["run"] for r in ds.train_records[:3]]
    # --train_models 100 samples every training checkpoint, so each "generated" one meets itself.
    assert report["summary"]["generated"]["max_error_overlap"]["min"] == pytest.approx(1.0)
    assert {"train + noise 0.01", "average of 5", "run average", "per-coordinate Gaussian"} <= set(report["summary"])
    # The bar: copies of training networks are never new; fresh networks set it.
    assert report["summary"]["generated"]["new"] == 0.0 and report["new_bar"] < 1.0
    fresh_overlaps = report["per_model"]["fresh seeds"]["max_error_overlap"]
    assert len(fresh_overlaps) == 8 and report["new_bar"] == pytest.approx(float(np.percentile(fresh_overlaps, 95)))
    assert 0 < report["summary"]["fresh seeds"]["functionally_distinct"] <= 8
    assert report["training_runs"] == dict(sampled=2, all=2)
    ens = report["ensembles"]  # K = 2 training runs
    assert ens["generated (first 2)"]["n"] == 2 and ens["training checkpoints (one per run)"]["n"] == 2
    assert ens["fresh seeds (one per run)"]["n"] == 2 and ens["generated (all 3)"]["n"] == 3
    text = (gen / "report.md").read_text()
    assert "| fresh seeds |" in text and "| new |" in text and "Ensembles" in text
    assert "from 2 of the 2 training runs" in text
    for name in ["report.md", "accuracy_hist.png", "novelty.png", "new_networks.png"]:
        assert (gen / name).stat().st_size > 0


def test_an_activation_aligned_split_aligns_the_fresh_runs_the_same_way(dataset, fresh, cifar):
    """The fresh runs are matched to the reference run by the method the generator's data was
    aligned with: training checkpoints of an activation-aligned split stay at distance zero and
    at their accuracy, and the nearest training checkpoint of a fresh network is nearer than
    without alignment."""
    ds = WeightDataset(str(dataset), align="activations", seed=0, data_dir=DATA_DIR)
    gen_dir = dataset / "as_generated_activations"
    weights = ds.standardizer.destandardize(ds.train[:3])
    save_checkpoint(dict(kind="generated-tinynns", weights=weights, tinynn=ds.tinynn_config,
                         layout=ds.layout.to_json(), batchnorm="training checkpoints", dataset=ds.description),
                    str(gen_dir / "generated.pt"))
    evaluate(gen_dir, "--fresh_dir", fresh, "--baseline_models", "0")
    report = json.load(open(gen_dir / "report.json"))
    assert report["per_model"]["generated"]["nearest_distance"] == pytest.approx([0, 0, 0], abs=1e-4)
    direct = evaluate_flat(weights, ds.layout, ds.tinynn_config, cifar.test_images[:TEST_IMAGES],
                           cifar.test_labels[:TEST_IMAGES])
    assert report["per_model"]["generated"]["accuracy"] == pytest.approx(direct, abs=1e-6)
    z_aligned, _ = ds.other_dataset(str(fresh))
    plain = WeightDataset(str(dataset), align="none", seed=0)
    z_plain, _ = plain.other_dataset(str(fresh))
    nearest = lambda z, train: torch.cdist(z, train).min(1).values.mean().item()
    assert nearest(z_aligned, ds.train) < nearest(z_plain, plain.train)


def test_reference_predictions_are_cached_and_a_broken_entry_is_computed_again(dataset, fresh, tmp_path):
    """Training and fresh networks' test outputs are kept in the dataset folder; a second group
    judged against them gets the same figures for them, also when an entry is broken."""
    ds = WeightDataset(str(dataset), seed=0)
    shutil.rmtree(dataset / "predictions", ignore_errors=True)  # other tests' entries
    reports = []
    for name in ("first", "second"):
        save_checkpoint(dict(kind="generated-tinynns", weights=ds.standardizer.destandardize(ds.train[:2]),
                             tinynn=ds.tinynn_config, layout=ds.layout.to_json(), batchnorm="", dataset=ds.description),
                        str(tmp_path / name / "generated.pt"))
        evaluate(tmp_path / name, "--fresh_dir", fresh, "--baseline_models", "0", "--train_models", "5")
        reports.append(json.load(open(tmp_path / name / "report.json")))
        entries = sorted((dataset / "predictions").glob("*.pt"))
        if name == "first":
            for entry in entries:
                entry.write_bytes(b"broken")
    assert len(entries) == 2 and all(torch.load(e, weights_only=True).dim() == 3 for e in entries)
    for group in ("training checkpoints", "fresh seeds"):
        assert reports[1]["per_model"][group] == reports[0]["per_model"][group]


def test_a_fresh_folder_that_is_not_fresh_is_one_clear_error(dataset, tmp_path):
    ds = WeightDataset(str(dataset), align=True, seed=0)
    gen_dir = tmp_path / "g"
    save_checkpoint(dict(kind="generated-tinynns", weights=ds.standardizer.destandardize(ds.train[:1]),
                         tinynn=ds.tinynn_config, layout=ds.layout.to_json(), batchnorm="", dataset=ds.description),
                    str(gen_dir / "generated.pt"))
    same_seeds = evaluate(gen_dir, "--fresh_dir", dataset, check=False)  # the training set itself
    assert same_seeds.returncode != 0 and "shares 2 run seed(s)" in same_seeds.stderr
    other = tmp_path / "other_recipe"
    gen(other, "--runs", "1", "--seed", "2", "--lr", "0.1")
    other_recipe = evaluate(gen_dir, "--fresh_dir", other, check=False)
    assert other_recipe.returncode != 0 and "another recipe" in other_recipe.stderr
    assert "train_config.lr: 0.2 vs 0.1" in other_recipe.stderr
    assert "Traceback" not in same_seeds.stderr + other_recipe.stderr


def test_a_group_of_one_network_is_reported_without_infinities(dataset, tmp_path):
    """One generated network has no nearest other one and no pairs: its figures are null in
    report.json (strict JSON, no Infinity/NaN) and "-" in report.md."""
    ds = WeightDataset(str(dataset), align=True, seed=0)
    gen_dir = tmp_path / "one"
    save_checkpoint(dict(kind="generated-tinynns", weights=ds.standardizer.destandardize(ds.train[:1]),
                         tinynn=ds.tinynn_config, layout=ds.layout.to_json(), batchnorm="", dataset=ds.description),
                    str(gen_dir / "generated.pt"))
    evaluate(gen_dir)

    def refuse(constant):
        raise ValueError(f"report.json holds {constant}")
    report = json.loads((gen_dir / "report.json").read_text(), parse_constant=refuse)
    one = report["summary"]["generated"]
    assert report["per_model"]["generated"]["nearest_in_group"] == [None]
    assert one["nearest_in_group"]["n"] == 0 and one["nearest_in_group"]["median"] is None
    assert one["pairwise_disagreement"]["median"] is None and one["accuracy"]["n"] == 1
    assert report["summary"]["training checkpoints"]["nearest_in_group"]["n"] > 0  # other groups keep theirs
    row = next(line for line in (gen_dir / "report.md").read_text().splitlines() if line.startswith("| generated |"))
    assert "| - |" in row and "inf" not in row and "nan" not in row


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


def test_the_training_sample_takes_every_run_before_a_second_checkpoint_of_any():
    runs = [0] * 50 + [1] * 3 + [2] * 10 + [3]  # unequal runs, as after min_acc selection
    for seed in range(5):
        rows = training_sample(runs, 4, torch.Generator().manual_seed(seed))
        assert sorted(runs[i] for i in rows) == [0, 1, 2, 3]
        rows = training_sample(runs, 10, torch.Generator().manual_seed(seed)).tolist()
        assert len(set(rows)) == 10 and sorted(runs[i] for i in rows) == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3]
    everything = training_sample(runs, 100, torch.Generator().manual_seed(0))
    assert sorted(everything.tolist()) == list(range(len(runs)))
    again = training_sample(runs, 10, torch.Generator().manual_seed(0))
    assert torch.equal(again, training_sample(runs, 10, torch.Generator().manual_seed(0)))
    assert not torch.equal(again, training_sample(runs, 10, torch.Generator().manual_seed(1)))


def test_baselines_have_the_asked_shapes_and_spreads():
    z = torch.randn(50, 20, generator=torch.Generator().manual_seed(0))
    runs = [i % 4 for i in range(50)]  # 4 runs of 12-13 checkpoints
    b = all_baselines(z, runs, 30, 5, seed=1)
    assert all(v.shape == (30, 20) for v in b.values())
    # Noise of 0.01 stays next to a training vector; the averages are smoother than the data.
    assert nearest(b["train + noise 0.01"], z)[0].max() < 0.02
    assert b["average of 5"].std() < z.std() * 0.6
    # The run average: each network is the mean of one whole run, the 4 runs in turn.
    means = torch.stack([z[r::4].mean(0) for r in range(4)])
    which = [int(torch.cdist(v[None], means).argmin()) for v in b["run average"]]
    assert torch.allclose(b["run average"], means[which]) and sorted(which[:4]) == [0, 1, 2, 3]
    assert which[4:8] == which[:4]


def test_the_new_network_bar_on_hand_made_predictions():
    labels = torch.arange(10)
    wrong_train = torch.zeros(2, 10, dtype=torch.bool)
    wrong_train[0, :3] = True   # training network A misses images 0-2
    wrong_train[1, 3:5] = True  # training network B misses images 3-4
    copy_of_a = wrong_train[:1].clone()
    disjoint = torch.zeros(1, 10, dtype=torch.bool)
    disjoint[0, 8:] = True      # misses only images 8-9, which no training network misses
    overlaps = max_error_overlap(torch.cat([copy_of_a, disjoint]), wrong_train)
    assert overlaps.tolist() == [1.0, 0.0]
    bar = new_network_bar([0.1, 0.2, 0.3, 0.4, 0.5])
    assert bar == pytest.approx(0.48)  # numpy's (linear) 95th percentile
    assert not is_new(0.9, overlaps[0].item(), min_acc=0.75, bar=bar)     # accurate, but a copy
    assert is_new(0.8, overlaps[1].item(), min_acc=0.75, bar=bar)         # accurate and its own mistakes
    assert not is_new(0.6, overlaps[1].item(), min_acc=0.75, bar=bar)     # its own mistakes, but too many
    # Predictions of those networks: functional measures.
    preds = torch.stack([labels, labels, torch.where(disjoint[0], (labels + 1) % 10, labels)])
    assert disagreement(preds, preds)[0].tolist() == pytest.approx([0.0, 0.0, 0.2])
    assert functionally_distinct(preds, threshold=0.1) == 2  # the two identical networks count once
    assert cross_run_disagreement(preds, [0, 0, 1]).tolist() == pytest.approx([0.2, 0.2, 0.2, 0.2])


def test_an_ensemble_of_copies_scores_like_the_network_itself():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 10, (500,), generator=g)
    probs = torch.randn(1, 500, 10, generator=g).softmax(2)
    single = probs[0].argmax(1).eq(labels).float().mean().item()
    assert ensemble_accuracy(probs.repeat(7, 1, 1), labels) == pytest.approx(single)
    assert one_per_run([3, 3, 5, 3, 7, 5], k=2) == [0, 2] and one_per_run([3, 3, 5], k=10) == [0, 2]


def test_ensembles_of_fewer_generated_networks_than_runs_say_how_many():
    """K generated networks against K training runs: with fewer generated, the ensemble is of all
    of them and its name and count say so, not K."""
    labels = torch.tensor([0, 1, 1])
    one_hot = lambda predictions: torch.eye(2)[torch.tensor(predictions)]  # [networks, images, classes]
    probs = {"generated": one_hot([[0, 1, 1], [0, 0, 1]]), "training checkpoints": one_hot([[0, 1, 1]] * 3)}
    ens = ensembles(probs, {"training checkpoints": [0, 1, 2]}, labels, k=3)
    assert set(ens) == {"generated (first 2)", "training checkpoints (one per run)", "generated (all 2)"}
    assert ens["generated (first 2)"]["n"] == 2 and ens["training checkpoints (one per run)"]["n"] == 3
    assert ens["generated (first 2)"]["accuracy"] == pytest.approx(ensemble_accuracy(probs["generated"], labels))
