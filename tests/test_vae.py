"""WeightDataset, standardisation, and a tiny train_vae run that reloads on its own."""
import json
import shutil

import pytest
import torch

from conftest import DATA_DIR, private_copy, run_script
from weightgen.model_io import CheckpointError, save_checkpoint
from weightgen.tinynn import FlatLayout, TinyNN
from weightgen.baselines import channel_codes
from vae_model import ChannelTokenVAE, LayerCodeVAE, channel_layers, join_channels, load_vae, split_channels
from weightgen.standardizer import Standardizer
from weightgen.weight_dataset import WeightDataset

TINY_VAE = ["--hidden", "64", "--latent_dim", "8", "--batch_size", "2", "--eval_every", "2",
            "--eval_models", "2", "--eval_images", "500", "--final_models", "2", "--data_dir", DATA_DIR,
            "--no_download", "--quiet", "--val_fraction", "0.25"]


@pytest.fixture(scope="module")
def dataset(tiny_dataset, tmp_path_factory):
    return private_copy(tiny_dataset, tmp_path_factory, "vae")


@pytest.fixture(scope="module")
def trained(dataset):
    run_script("train_vae.py", "--checkpoint_dir", dataset, "--epochs", "10", *TINY_VAE)
    return dataset / "vae"


def test_standardisation_round_trips_and_standardises():
    layout = FlatLayout.of(TinyNN())
    g = torch.Generator().manual_seed(0)
    weights = torch.randn(20, layout.numel, generator=g) * 3 + 2
    std = Standardizer.fit(weights, layout)
    z = std.standardize(weights)
    torch.testing.assert_close(std.destandardize(z), weights, rtol=1e-5, atol=1e-5)
    for s in layout.slots:
        t = z[:, s.offset:s.offset + s.numel]
        assert abs(t.mean().item()) < 1e-4 and abs(t.std().item() - 1) < 1e-3
    again = Standardizer.from_state_dict(json.loads(json.dumps(std.state_dict())))
    assert torch.equal(again.standardize(weights), z)


def test_alignment_is_cached_and_keeps_accuracy(dataset, cifar):
    aligned = WeightDataset(str(dataset), align=True, val_fraction=0.25)
    cache = dataset / "alignment.pt"
    stamp = cache.stat().st_mtime_ns
    again = WeightDataset(str(dataset), align=True, val_fraction=0.25)
    assert cache.stat().st_mtime_ns == stamp  # read, not recomputed
    torch.testing.assert_close(again.train, aligned.train)
    plain = WeightDataset(str(dataset), align=False, val_fraction=0.25)
    assert [r["run"] for r in plain.train_records] == [r["run"] for r in aligned.train_records]
    from weightgen.tinynn_training import evaluate_flat
    imgs, labels = cifar.test_images[:500], cifar.test_labels[:500]
    a = evaluate_flat(aligned.standardizer.destandardize(aligned.train[-2:]), aligned.layout,
                      aligned.tinynn_config, imgs, labels)
    b = evaluate_flat(plain.standardizer.destandardize(plain.train[-2:]), plain.layout,
                      plain.tinynn_config, imgs, labels)
    assert a == pytest.approx(b, abs=1e-9)


def correlation_of_matched_channels(ds, images):
    """Per conv block, the summed correlation between run 0's channels and run 1's channel of
    the same index, each run's last training checkpoint."""
    from weightgen.alignment import block_outputs
    last = {r["run"]: i for i, r in enumerate(ds.train_records)}
    w = ds.standardizer.destandardize(ds.train[[last[0], last[1]]])
    a, b = (block_outputs(v, ds.layout, ds.tinynn_config, images) for v in w)
    z = lambda t: (t - t.mean(1, keepdim=True)) / (t.std(1, keepdim=True) + 1e-6)
    return [(z(x) * z(y)).mean(1).sum().item() for x, y in zip(a, b)]


def test_activation_alignment_is_cached_keeps_function_and_matches_outputs(dataset, cifar):
    """--align activations: cached in its own file (read again without any images), the same
    networks as trained, and channel outputs at least as well paired as weight matching pairs
    them on the images it matched (it solves that assignment exactly, layer by layer)."""
    from weightgen.weight_dataset import alignment_images
    by_acts = WeightDataset(str(dataset), align="activations", val_fraction=0.25, data_dir=DATA_DIR)
    cache = dataset / "alignment_activations.pt"
    stamp = cache.stat().st_mtime_ns
    again = WeightDataset(str(dataset), align="activations", val_fraction=0.25, data_dir="/no/such/folder")
    assert cache.stat().st_mtime_ns == stamp and torch.equal(again.train, by_acts.train)
    by_weights = WeightDataset(str(dataset), align=True, val_fraction=0.25)  # True: as older checkpoints recorded it
    assert by_weights.description["align"] == "weights" and by_acts.description["align"] == "activations"
    from weightgen.tinynn_training import evaluate_flat
    imgs, labels = cifar.test_images[:500], cifar.test_labels[:500]
    acc = lambda ds: evaluate_flat(ds.standardizer.destandardize(ds.train), ds.layout, ds.tinynn_config, imgs, labels)
    assert acc(by_acts) == pytest.approx(acc(by_weights), abs=1e-9)
    images = alignment_images(by_acts.manifest, DATA_DIR)
    acts, weights = (correlation_of_matched_channels(ds, images) for ds in (by_acts, by_weights))
    assert all(a >= w - 1e-3 for a, w in zip(acts, weights)) and sum(acts) > sum(weights)


def test_holdout_runs_keeps_whole_runs_out(dataset):
    ds = WeightDataset(str(dataset), holdout="runs", val_runs=1)
    assert {r["run"] for r in ds.val_records} == {1} and {r["run"] for r in ds.train_records} == {0}
    assert len(ds.val) == 4 and len(ds.train) == 4


def test_max_train_subsets_training_and_keeps_validation(dataset):
    full = WeightDataset(str(dataset), val_fraction=0.25)
    part = WeightDataset(str(dataset), val_fraction=0.25, max_train=3)
    assert len(full.train) == 6 and len(part.train) == 3
    assert part.val_records == full.val_records
    steps = lambda records: {(r["run"], r["step"]) for r in records}
    assert steps(part.train_records) < steps(full.train_records)
    assert part.description["max_train"] == 3 and part.description["n_train"] == 3


def test_trained_vae_reloads_alone_and_reconstructs(trained, dataset):
    vae, std, ckpt = load_vae(str(trained / "vae.pt"))
    assert ckpt["model_args"]["in_dim"] == std.layout.numel == FlatLayout.of(TinyNN(**ckpt["tinynn"])).numel
    ds = WeightDataset(str(dataset), val_fraction=0.25)
    mse = ((vae.reconstruct(ds.train) - ds.train) ** 2).mean().item()
    assert mse < 0.9 * (ds.train ** 2).mean().item()  # better than decoding every input to the mean
    final = json.load(open(trained / "final.json"))
    assert final["n_heldout"] == 2 and 0 <= final["prior"]["mean"] <= 1
    assert final["keep"] == "best" and final["kept_epoch"] in (10, *[h["epoch"] for h in ckpt["history"]][9::10])
    assert set(final["identity"]) == {"with_original", "with_nearest_run", "original_with_nearest_run"}
    assert all(0 <= v <= 1 for v in final["identity"].values())
    history = ckpt["history"]
    assert history[-1]["train_mse"] < history[0]["train_mse"]
    for name in ["vae_last.pt", "log.jsonl", "vae_curves.png"]:
        assert (trained / name).stat().st_size > 0


def test_channel_tokens_are_output_channels_and_join_back():
    """One token per output channel: conv kernel row and its BatchNorm numbers together; the
    tokens join back into the same flat vector."""
    net = TinyNN()
    layout = FlatLayout.of(net)
    layers = channel_layers([s.shape for s in layout.slots])
    assert [n for n, _ in layers] == [16, 32, 32, 40, 40, 40, 10] and layers[0][1] == [27, 1, 1, 1, 1]
    x = torch.randn(3, layout.numel)
    tokens = split_channels(x, layers)
    state = layout.unflatten(x[1])
    assert torch.equal(tokens[1][1, 5, :144], state["features.1.0.weight"][5].reshape(-1))
    assert tokens[1][1, 5, 144] == state["features.1.1.weight"][5] and tokens[-1][1, 7, 40] == state["head.bias"][7]
    assert torch.equal(join_channels(tokens, layers), x)
    vae = ChannelTokenVAE.for_layout(layout, hidden=16, latent_dim=64, depth=1)
    assert vae.latent_dim == 210 and vae.decode(vae.encode(x)[0]).shape == x.shape
    assert ChannelTokenVAE.for_layout(layout, hidden=16, latent_dim=420, depth=1).latent_dim == 420


def test_channel_vae_trains_reconstructs_and_reloads(dataset):
    """train_vae.py --autoencoder channels: the checkpoint rebuilds the same network alone, and it
    reconstructs its training checkpoints better than their mean."""
    run_script("train_vae.py", "--checkpoint_dir", dataset, "--run_name", "vae_channels", "--autoencoder",
               "channels", "--epochs", "20", "--lr_step", "100", *TINY_VAE)
    vae, _, ckpt = load_vae(str(dataset / "vae_channels" / "vae.pt"))
    assert isinstance(vae, ChannelTokenVAE) and ckpt["autoencoder"] == "channels" and vae.latent_dim == 210
    ds = WeightDataset(str(dataset), val_fraction=0.25)
    mse = ((vae.reconstruct(ds.train) - ds.train) ** 2).mean().item()
    assert mse < 0.9 * (ds.train ** 2).mean().item()
    final = json.load(open(dataset / "vae_channels" / "final.json"))
    assert final["n_heldout"] == 2 and 0 <= final["reconstructed"]["mean"] <= 1


def test_layer_codes_start_at_the_best_shared_linear_code():
    """LayerCodeVAE spreads its latent over the layers (a quarter of the numbers by default, at least
    one a channel) and, initialised from training vectors, decodes any vector as baselines.channel_codes
    does: the least-squares optimum of a linear code shared by a layer's channels."""
    layout = FlatLayout.of(TinyNN())
    layers = channel_layers([s.shape for s in layout.slots])
    vae = LayerCodeVAE.for_layout(layout)
    assert vae.latent_dim == sum(n * k for (n, _), k in zip(layers, vae.codes))
    assert abs(vae.latent_dim - layout.numel / 4) < 210 and min(vae.codes) >= 1
    assert LayerCodeVAE.for_layout(layout, latent_dim=1).latent_dim == 210
    g = torch.Generator().manual_seed(0)
    train, query = torch.randn(6, layout.numel, generator=g), torch.randn(3, layout.numel, generator=g)
    vae.initialise_from(train)
    best, _ = channel_codes(train, query, layers, 0.25)
    torch.testing.assert_close(vae.eval().reconstruct(query), best, rtol=1e-4, atol=1e-4)
    mu, logvar = vae.encode(train)
    assert mu.shape == logvar.shape == (6, vae.latent_dim)
    assert mu.std().item() == pytest.approx(1, abs=0.05)  # whitened: the prior's scale


def test_layer_code_vae_trains_reconstructs_and_reloads(dataset):
    """train_vae.py --autoencoder layercodes: starts at the training channels' code, keeps it under
    the VAE loss, reloads alone, and reconstructs its training checkpoints better than their mean.
    It has no width: --hidden is refused."""
    flags = [f for f in TINY_VAE if f not in ("--hidden", "64", "--latent_dim", "8")]
    run_script("train_vae.py", "--checkpoint_dir", dataset, "--run_name", "vae_layercodes", "--autoencoder",
               "layercodes", "--epochs", "4", *flags)
    vae, _, ckpt = load_vae(str(dataset / "vae_layercodes" / "vae.pt"))
    assert isinstance(vae, LayerCodeVAE) and ckpt["autoencoder"] == "layercodes"
    assert vae.latent_dim == LayerCodeVAE.for_layout(FlatLayout.of(TinyNN())).latent_dim
    ds = WeightDataset(str(dataset), val_fraction=0.25)
    for x in (ds.train, ds.val):  # the held-out checkpoints too: the code is not a lookup of the training ones
        mse = ((vae.reconstruct(x) - x) ** 2).mean().item()
        assert mse < 0.5 * ((x - ds.train.mean(0)) ** 2).mean().item()
    refused = run_script("train_vae.py", "--checkpoint_dir", dataset, "--autoencoder", "layercodes", *TINY_VAE,
                         check=False)
    assert refused.returncode == 2 and "no width" in refused.stderr


def test_keep_last_keeps_the_last_saved_epoch(dataset, tmp_path):
    """--keep last: vae.pt is the last epoch's model whatever its validation loss."""
    run_script("train_vae.py", "--checkpoint_dir", dataset, "--run_name", "vae_keep_last", "--epochs", "4",
               "--save_every", "2", "--keep", "last", *TINY_VAE)
    final = json.load(open(dataset / "vae_keep_last" / "final.json"))
    _, _, ckpt = load_vae(str(dataset / "vae_keep_last" / "vae.pt"))
    assert final["kept_epoch"] == 4 == ckpt["history"][-1]["epoch"] and final["keep"] == "last"


def test_unseen_runs_as_validation_say_their_steps_and_warn_against_keep_best(dataset):
    """With whole runs held out, --keep best would keep an early epoch: the run says so, and says
    how many optimizer steps its epochs are (4 training checkpoints, batch 2: 2 an epoch)."""
    best = run_script("train_vae.py", "--checkpoint_dir", dataset, "--run_name", "vae_runs_best", "--epochs", "2",
                      "--holdout", "runs", *TINY_VAE)
    last = run_script("train_vae.py", "--checkpoint_dir", dataset, "--run_name", "vae_runs_last", "--epochs", "2",
                      "--holdout", "runs", "--keep", "last", *TINY_VAE)
    assert "4 optimizer steps (2 an epoch)" in best.stdout and "4 optimizer steps" in last.stdout
    assert "Pass --keep last" in best.stdout and "Pass --keep last" not in last.stdout


def test_a_cached_alignment_does_not_change_the_run(tiny_dataset, tmp_path):
    """The first run of a dataset computes its alignment (building TinyNNs, which draws random
    numbers), the second reads the cache: both train the same VAE."""
    folder = tmp_path / "ds"
    shutil.copytree(tiny_dataset, folder)
    losses = []
    for name in ("computes", "reads"):
        run_script("train_vae.py", "--checkpoint_dir", folder, "--run_name", name, "--epochs", "1", *TINY_VAE)
        losses.append(json.loads((folder / name / "log.jsonl").read_text().splitlines()[0])["train_loss"])
    assert losses[0] == losses[1]


def test_resume_continues_the_same_history(trained, dataset):
    run_script("train_vae.py", "--checkpoint_dir", dataset, "--epochs", "12", "--resume", *TINY_VAE)
    _, _, ckpt = load_vae(str(trained / "vae_last.pt"))
    assert [h["epoch"] for h in ckpt["history"]] == list(range(1, 13))
    lines = (trained / "log.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == list(range(1, 13))


def test_corrupted_or_foreign_checkpoints_give_one_clear_error(trained, tmp_path):
    broken = tmp_path / "broken.pt"
    broken.write_bytes((trained / "vae.pt").read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="corrupted"):
        load_vae(str(broken))
    other = tmp_path / "other.pt"
    save_checkpoint(dict(kind="diffusion"), str(other))
    with pytest.raises(CheckpointError, match="'diffusion' checkpoint, expected 'weight-vae'"):
        load_vae(str(other))
    smaller = FlatLayout.of(TinyNN(widths=(8, 16, 16)))
    with pytest.raises(CheckpointError, match="another TinyNN layout"):
        load_vae(str(trained / "vae.pt"), expect_layout=smaller)


def test_script_reports_a_corrupted_resume_checkpoint(dataset, tmp_path):
    folder = tmp_path / "ds"
    shutil.copytree(dataset, folder)
    (folder / "vae").mkdir(exist_ok=True)
    (folder / "vae" / "vae_last.pt").write_bytes(b"garbage")
    out = run_script("train_vae.py", "--checkpoint_dir", folder, "--epochs", "2", "--resume", *TINY_VAE,
                     check=False)
    assert out.returncode != 0 and "corrupted" in out.stderr and "Traceback" not in out.stderr


def test_missing_dataset_is_one_clear_error(tmp_path):
    out = run_script("train_vae.py", "--checkpoint_dir", tmp_path / "none", "--epochs", "1", *TINY_VAE,
                     check=False)
    assert out.returncode != 0 and "checkpoint dataset not found" in out.stderr
    assert "Traceback" not in out.stderr
