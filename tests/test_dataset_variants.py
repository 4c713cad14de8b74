"""Dataset variants (issue: the seed's dataset experiment): each recipe flag does what it says,
variants never share a folder, and the experiment runs end to end and resumes."""
import json

import torch

from weightgen import checkpoint_dataset as cd
from weightgen.cifar10 import standardize
from conftest import DATA_DIR, TEST_IMAGES, TINY, TINY_VAE_FLAGS, gen, run_script
from weightgen.tinynn import FlatLayout, sparsity
from weightgen.tinynn_training import RunTrainer, TrainConfig


def test_prune_gives_checkpoints_at_least_that_sparse(tmp_path):
    folder = tmp_path / "pruned"
    gen(folder, "--runs", "1", "--prune", "0.5")
    manifest = cd.load_manifest(str(folder))
    weights = cd.load_weights(str(folder), manifest)
    zeros = sparsity(weights, FlatLayout.from_json(manifest["layout"]))["zeros"]
    assert len(weights) == 4 and (zeros >= 0.5).all() and manifest["train_config"]["prune"] == 0.5


def test_l1_lowers_the_weights_l1_norm_against_the_same_seed(cifar):
    def l1_after(l1):
        run = RunTrainer(cifar.train_images[:2000], cifar.train_labels[:2000], seed=3,
                         train_config=TrainConfig(batch_size=64, epochs=1, l1=l1))
        run.train(30)
        return sum(w.abs().sum().item() for w in run.weights)
    assert l1_after(1e-3) < 0.9 * l1_after(0.0)


def test_augment_none_hands_the_source_images_on_unchanged(cifar):
    run = RunTrainer(cifar.train_images[:500], cifar.train_labels[:500], seed=0,
                     train_config=TrainConfig(batch_size=50, augment="none"))
    x, y = run.next_batch()
    idx = run._order[:50]
    assert torch.equal(x, standardize(cifar.train_images[:500][idx])) and torch.equal(y, cifar.train_labels[:500][idx])
    full = RunTrainer(cifar.train_images[:500], cifar.train_labels[:500], seed=0,
                      train_config=TrainConfig(batch_size=50))
    assert not torch.equal(full.next_batch()[0], x)  # same order, but augmented


def test_variants_cannot_share_a_folder(tmp_path):
    folder = tmp_path / "ds"
    gen(folder, "--runs", "1")
    out = gen(folder, "--runs", "2", "--weight_decay", "0", check=False)
    assert out.returncode != 0 and "other settings" in out.stderr and "train_config.weight_decay" in out.stderr
    assert "Traceback" not in out.stderr


def test_a_recipe_that_cannot_reach_min_acc_says_so_in_one_line(tmp_path):
    out = gen(tmp_path / "hopeless", "--runs", "1", "--min_acc", "0.99", "--max_epochs", "1", check=False)
    assert out.returncode != 0 and "never reached --min_acc 0.99" in out.stderr and "Traceback" not in out.stderr


TINY_FLAGS = " ".join(TINY[2:TINY.index("--data_dir")])  # all but --ckpts_per_run


def test_dataset_variants_experiment_runs_and_resumes(tmp_path):
    # One variant, the one with the most steps (pruned samples too): every step of the loop runs,
    # and a second variant would only repeat them (a minute of the suite).
    args = ["-m", "experiments.dataset_variants", "--variants", "prune50", "--prefix", tmp_path / "V",
            "--runs", "2", "--ckpts_per_run", "4", "--fresh_runs", "1", "--fresh_ckpts_per_run", "2",
            "--vae_epochs", "2", "--diffusion_epochs", "2", "--num_models", "3", "--train_models", "3",
            "--test_images", TEST_IMAGES,
            "--dataset_flags", TINY_FLAGS,
            "--vae_flags", TINY_VAE_FLAGS,
            "--data_dir", DATA_DIR, "--no_download", "--device", "cpu"]
    run_script(*args)
    rows = json.load(open(tmp_path / "V_variants" / "dataset_variants.json"))
    assert [r["variant"] for r in rows] == ["prune50", "prune50 + prune_to 0.5"]
    pruned, pruned_to = rows
    assert pruned["train_zeros"] >= 0.5 and pruned_to["gen_zeros"] >= 0.5
    for r in rows:
        assert 0 <= r["gen_acc"] <= 1 and 0 <= r["new"] <= 1
    assert (tmp_path / "V_variants" / "dataset_variants.png").stat().st_size > 0
    again = run_script(*args)
    assert "$ python" not in again.stdout and again.stdout.count("# skipped") == 8
