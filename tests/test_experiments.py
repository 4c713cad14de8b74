"""The experiment scripts end to end at a tiny size, and the copy shares on a hand-made report."""
import json
import shutil

import pytest
import torch

from weightgen.baselines import channel_codes, distinct, nearest_within, span_shares
from weightgen.blending import blend_coefficients, checkpoint_pairs, interpolate, match_pairs, pair_weights, reestimate_bn
from weightgen.checkpoint_dataset import DatasetError, load_run
from weightgen.cifar10 import standardize
from conftest import DATA_DIR, TEST_IMAGES, TINY, TINY_VAE_FLAGS, private_copy, run_script
from weightgen.generate import save
from weightgen.model_io import GENERATED_KIND, VAE_KIND, load_checkpoint
from weightgen.tinynn import clamp_running_var, layer_slots, model_from_flat
from weightgen.tinynn_training import RunTrainer, TrainConfig, budget_config, evaluate_flat
from vae_model import WeightVAE, channel_layers, join_channels, load_vae
from weightgen.weight_dataset import WeightDataset

from experiments.midpoints import GROUPS, LATENT, MATCHED, cross_layers, latent_interpolate
from experiments.novelty import novelty_rows

SMALL = ["--num_models", "3", "--train_models", "3", "--test_images", TEST_IMAGES, "--data_dir", DATA_DIR,
         "--no_download", "--device", "cpu"]


@pytest.fixture(scope="module")
def dataset(tiny_dataset, tmp_path_factory):
    return private_copy(tiny_dataset, tmp_path_factory, "exp")


@pytest.fixture(scope="module")
def num_checkpoints(dataset):
    args = ["-m", "experiments.num_checkpoints", "--checkpoint_dir", dataset, "--sizes", "3", "6",
            "--vae_steps", "4", "--diffusion_steps", "20", "--vae_flags", TINY_VAE_FLAGS, *SMALL]
    run_script(*args)
    return args


def test_num_checkpoints_gives_a_row_per_size_and_resumes(dataset, num_checkpoints):
    out = dataset / "exp_checkpoints"
    rows = json.load(open(out / "num_checkpoints.json"))
    assert [r["n_train"] for r in rows] == [3, 6]
    for r in rows:
        assert 0 <= r["min"] <= r["mean"] <= r["max"] <= 1 and r["training_mean"] > 0
    assert (out / "num_checkpoints.png").stat().st_size > 0 and "| n_train |" in (out / "num_checkpoints.md").read_text()
    # Run again: every step is found done and skipped, and the table is the same.
    again = run_script(*num_checkpoints)
    assert "$ python" not in again.stdout and again.stdout.count("# skipped") == 8
    assert json.load(open(out / "num_checkpoints.json")) == rows


def test_report_after_max_train_draws_training_checkpoints_only_from_those_seen(dataset, num_checkpoints):
    """train_vae.py --max_train 3: the report's training row holds those 3 checkpoints and no other."""
    vae = load_checkpoint(str(dataset / "exp_checkpoints" / "n3" / "vae" / "vae.pt"), VAE_KIND)
    seen = {(r["run"], r["step"]) for r in WeightDataset.from_description(vae["dataset"]).train_records}
    all_train = {(r["run"], r["step"]) for r in WeightDataset(str(dataset)).train_records}
    assert len(seen) == 3 and len(all_train) > 3
    report = json.load(open(dataset / "exp_checkpoints" / "n3" / "diffusion" / "samples" / "report.json"))
    drawn = {(c["run"], c["step"]) for c in report["training_checkpoints"]}
    assert drawn == seen and report["summary"]["training checkpoints"]["accuracy"]["n"] == 3
    assert report["split"]["max_train"] == 3


def test_diffusion_epochs_resumes_one_run_between_stops(dataset, num_checkpoints):
    vae = dataset / "exp_checkpoints" / "n6" / "vae" / "vae.pt"
    run_script("-m", "experiments.diffusion_epochs", "--checkpoint_dir", dataset, "--vae_path", vae,
               "--epochs", "2", "5", *SMALL)
    out = dataset / "exp_epochs"
    rows = json.load(open(out / "diffusion_epochs.json"))
    assert [r["epochs"] for r in rows] == [2, 5] and all(r["loss"] > 0 for r in rows)
    log = [json.loads(line)["epoch"] for line in open(out / "log.jsonl")]
    assert log == [1, 2, 3, 4, 5]  # the second stop continued the first, no epoch repeated
    assert (out / "epoch_2" / "diffusion.pt").exists() and (out / "diffusion_epochs.png").stat().st_size > 0
    # An earlier stop cannot come from a run already past it.
    late = run_script("-m", "experiments.diffusion_epochs", "--checkpoint_dir", dataset, "--vae_path", vae,
                      "--epochs", "3", *SMALL, check=False)
    assert late.returncode != 0 and "already trained past 3" in late.stderr and "Traceback" not in late.stderr


def test_novelty_shares_on_a_hand_made_report():
    train = dict(accuracy=[0.8] * 4, nearest_distance=[0.01, 0.02, 0.03, 0.04],
                 max_error_overlap=[0.5, 0.6, 0.6, 0.7], nearest_run=[0, 0, 1, 1], nearest_in_group=[0.1] * 4)
    generated = dict(accuracy=[0.7, 0.9, 0.8], nearest_distance=[0.02, 0.5, 0.5], max_error_overlap=[0.9, 0.1, 0.1],
                     nearest_run=[1, 1, 1], nearest_in_group=[0.3, 0.0, 0.0])
    report = dict(per_model={"generated": generated, "training checkpoints": train},
                  summary={"generated": dict(distinct=2, new=2 / 3, functionally_distinct=2,
                                             pairwise_disagreement=dict(median=0.2)),
                           "training checkpoints": dict(distinct=4, new=0.0, functionally_distinct=2,
                                                        pairwise_disagreement=dict(median=0.25))})
    rows = novelty_rows(report, "", n_runs=3)
    g = next(r for r in rows if r["models"] == "generated")
    # copy threshold: the training median nearest-other distance, 0.025; overlap bar: 0.6
    assert g["copy_distance"] == pytest.approx(0.025)
    assert g["copies"] == pytest.approx(1 / 3) and g["same_errors"] == pytest.approx(1 / 3)
    assert g["runs_covered"] == "1/3" and g["top_run_share"] == 1.0 and g["accuracy"] == pytest.approx(0.8)
    assert g["repeats"] == pytest.approx(2 / 3) and g["distinct"] == 2
    assert g["new"] == pytest.approx(2 / 3) and g["disagreement"] == pytest.approx(0.2)
    assert g["functionally_distinct"] == 2
    labelled = novelty_rows(report, "latent", n_runs=3)
    assert [r["models"] for r in labelled] == ["latent: generated", "training checkpoints"]
    assert labelled[1]["copies"] == 0.5 and labelled[1]["distinct"] == 4


def test_distinct_counts_repeated_networks_once():
    z = torch.tensor([[0.0, 0.0], [0.0, 0.001], [3.0, 4.0], [3.0, 4.0], [10.0, 0.0]])
    assert distinct(z, threshold=0.01) == 3 and distinct(z, threshold=0.0) == 4
    assert nearest_within(z).tolist() == pytest.approx([0.001 / 2 ** 0.5, 0.001 / 2 ** 0.5, 0, 0, (65 / 2) ** 0.5])


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fresh") / "fresh"
    run_script("Gen_Diffusion_Dataset.py", "--checkpoint_dir", folder, "--runs", "2", "--seed", "1", *TINY)
    return folder


def test_novelty_ablation_tabulates_every_variant_and_resumes(dataset, fresh, tmp_path):
    out = tmp_path / "ablation"
    args = ["-m", "experiments.novelty_ablation", "--datasets", dataset, "--fresh_dir", fresh, "--variants",
            "default", "temperature1.5", "--add", "direct_eta1", "none", "--space weights --batch_size 32",
            "--eta 1 --oversample 2 --check_images 500",
            "--vae_epochs", "2",
            "--diffusion_epochs", "2", "--baseline_models", "0", "--vae_flags", TINY_VAE_FLAGS, "--out", out,
            *SMALL]
    run_script(*args)
    rows = json.load(open(out / "novelty_ablation.json"))
    assert [r["models"] for r in rows] == ["training checkpoints", "fresh seeds", "generated: default",
                                          "generated: temperature1.5", "generated: direct_eta1"]
    for r in rows[2:]:
        assert r["n"] == 3 and 0 <= r["new"] <= 1 and 0 <= r["acc_min"] <= r["acc_mean"] <= 1
        assert 0 < r["ens_all_gen"] <= 1 and r["ens_k_runs"] == rows[2]["ens_k_runs"]
    assert rows[1]["n"] == 8 and (out / "novelty_ablation.png").stat().st_size > 0
    # default has no VAE flags: the dataset's own VAE; direct diffusion needs none
    assert (dataset / "vae" / "vae.pt").exists() and not [p for p in dataset.iterdir() if p.name.startswith("vae_")]
    source = json.load(open(dataset / "diffusion_direct_eta1" / "samples_direct_eta1_seed0" / "report.json"))["source"]
    assert source["eta"] == 1 and source["oversample"] == 2 and len(source["check_overlaps"]) == 6  # it read the data
    # sample.py's flags alone: one diffusion model, sampled twice
    shared = [json.load(open(dataset / "diffusion" / f"samples_{v}_seed0" / "report.json"))["source"]
              for v in ("default", "temperature1.5")]
    assert [s["temperature"] for s in shared] == [1.0, 1.5] and shared[0]["model_path"] == shared[1]["model_path"]
    assert not (dataset / "diffusion_temperature1.5").exists()
    again = run_script(*args)
    assert "$ python" not in again.stdout and json.load(open(out / "novelty_ablation.json")) == rows


def test_novelty_ablation_variants_of_one_conditioned_model_share_its_training(dataset, fresh, tmp_path):
    run_script("-m", "experiments.novelty_ablation", "--datasets", dataset, "--fresh_dir", fresh, "--variants",
               "run_mix1", "run_mix2", "--vae_epochs", "2", "--diffusion_epochs", "2", "--baseline_models", "0",
               "--vae_flags", TINY_VAE_FLAGS, "--sample_seed", "1", "--out", tmp_path / "ablation", *SMALL)
    rows = json.load(open(tmp_path / "ablation" / "novelty_ablation.json"))
    assert [r["models"] for r in rows[2:]] == ["generated: run_mix1", "generated: run_mix2"]
    sources = [json.load(open(dataset / "diffusion_run_mix1" / f"samples_{v}_seed1" / "report.json"))["source"]
               for v in ("run_mix1", "run_mix2")]
    assert [s["mix_runs"] for s in sources] == [1, 2] and {s["condition"] for s in sources} == {"run"}
    assert {s["seed"] for s in sources} == {1}
    assert not (dataset / "diffusion_run_mix2").exists()


def test_midpoints_at_alpha_0_are_the_first_checkpoints(dataset, fresh, cifar):
    """alpha 0: the interpolated group is the first checkpoint of each pair, as it was trained, and
    the latent group is the VAE's reconstruction of it."""
    run_script("train_vae.py", "--checkpoint_dir", dataset, "--run_name", "vae_mid", "--epochs", "1", "--quiet",
               *TINY_VAE_FLAGS.split(), "--data_dir", DATA_DIR, "--no_download", "--device", "cpu")
    vae_path = dataset / "vae_mid" / "vae.pt"
    run_script("-m", "experiments.midpoints", "--checkpoint_dir", dataset, "--fresh_dir", fresh, "--alpha", "0",
               "--bn_images", "500", "--vae_path", vae_path, *SMALL)
    root = dataset / "midpoints"
    rows = json.load(open(root / "midpoints.json"))
    assert [r["models"] for r in rows] == (["training checkpoints", "fresh seeds"]
                                           + [f"generated: {g}" for g in GROUPS + (LATENT,)])
    ds = WeightDataset(str(dataset))
    pairs = checkpoint_pairs(ds, 3, seed=0)
    first = ds.standardizer.destandardize(ds.train[pairs[:, 0]])
    vae, vae_std, _ = load_vae(str(vae_path))
    images, labels = cifar.test_images[:TEST_IMAGES], cifar.test_labels[:TEST_IMAGES]
    decoded = vae_std.destandardize(vae.reconstruct(vae_std.standardize(first)))
    clamp_running_var(decoded, ds.layout)  # as sample.py saves decoded networks
    for group, weights in [("aligned_BN_interpolated", first), ("VAE_latents_BN_decoded", decoded)]:
        report = json.load(open(root / group / "report.json"))
        expected = evaluate_flat(weights, ds.layout, ds.tinynn_config, images, labels)
        assert report["per_model"]["generated"]["accuracy"] == pytest.approx(expected, abs=1e-6)
    # alpha 0 takes every layer from the first checkpoint: the crossed group is the endpoints group
    crossed, ends = [json.load(open(root / g / "report.json"))["per_model"]["generated"]["accuracy"]
                     for g in ("crossed_layers_BN_reestimated", "endpoints_BN_reestimated")]
    assert crossed == pytest.approx(ends, abs=1e-6)
    assert (root / "midpoints.png").stat().st_size > 0
    # Another alpha makes the groups again (not the alpha-0 networks' reports): alpha 1 is the second checkpoints.
    run_script("-m", "experiments.midpoints", "--checkpoint_dir", dataset, "--fresh_dir", fresh, "--alpha", "1",
               "--bn_images", "500", "--vae_path", vae_path, *SMALL)
    second = ds.standardizer.destandardize(ds.train[pairs[:, 1]])
    report = json.load(open(root / "aligned_BN_interpolated" / "report.json"))
    expected = evaluate_flat(second, ds.layout, ds.tinynn_config, images, labels)
    assert report["source"]["alpha"] == 1 and report["per_model"]["generated"]["accuracy"] == pytest.approx(expected,
                                                                                                         abs=1e-6)
    # Pairs matched by activations, alpha 0: still the first checkpoints; only the groups that use the matching.
    run_script("-m", "experiments.midpoints", "--checkpoint_dir", dataset, "--fresh_dir", fresh, "--alpha", "0",
               "--bn_images", "500", "--match", "activations", "--match_images", "200", *SMALL)
    rows = json.load(open(dataset / "midpoints_activations" / "midpoints.json"))
    assert [r["models"] for r in rows] == ["training checkpoints", "fresh seeds"] + [f"generated: {g}" for g in MATCHED]
    report = json.load(open(dataset / "midpoints_activations" / "aligned_BN_interpolated" / "report.json"))
    unaligned_first = pair_weights(WeightDataset(str(dataset), align=False), pairs)[:, 0]  # a as trained
    expected = evaluate_flat(unaligned_first, ds.layout, ds.tinynn_config, images, labels)
    assert report["source"]["match"] == "activations"
    assert report["per_model"]["generated"]["accuracy"] == pytest.approx(expected, abs=1e-6)


def test_crossed_layers_take_the_first_layers_from_one_run_and_the_rest_from_the_other(dataset):
    ds = WeightDataset(str(dataset))
    layers = layer_slots(ds.layout)
    assert [s for slots in layers for s in slots] == ds.layout.slots  # every slot once, in order
    assert len(layers) == 7 and layers[0][0].name == "features.0.0.weight" and layers[-1][0].name == "head.weight"
    pairs = checkpoint_pairs(ds, 2, seed=0)
    w = ds.standardizer.destandardize(ds.train)
    crossed = cross_layers(pair_weights(ds, pairs), ds.layout, blend_coefficients(2, 0.5))  # round(3.5): 4 from a
    cut = layers[4][0].offset
    assert torch.equal(crossed[:, :cut], w[pairs[:, 0], :cut])
    assert torch.equal(crossed[:, cut:], w[pairs[:, 1], cut:])


def test_blends_of_three_take_equal_shares_and_a_block_of_layers_from_each_in_turn(dataset):
    ds = WeightDataset(str(dataset))
    w = ds.standardizer.destandardize(ds.train[:6]).view(2, 3, -1)
    coef = blend_coefficients(3, 0.5)
    assert coef.tolist() == pytest.approx([1 / 3] * 3)
    assert torch.allclose(interpolate(w, coef), w.mean(1), atol=1e-6)
    crossed, layers = cross_layers(w, ds.layout, coef), layer_slots(ds.layout)
    cuts = [0, layers[2][0].offset, layers[5][0].offset, ds.layout.numel]  # round(7/3) = 2, round(14/3) = 5
    for member in range(3):
        assert torch.equal(crossed[:, cuts[member]:cuts[member + 1]], w[:, member, cuts[member]:cuts[member + 1]])
    with pytest.raises(DatasetError, match="need 3 training runs"):
        checkpoint_pairs(ds, 2, seed=0, k=3)  # the tiny dataset has two


def test_midpoints_blend_three_runs_each_matched_to_the_first(three_runs, fresh, tmp_path):
    three = tmp_path / "three"
    shutil.copytree(three_runs, three)
    ds = WeightDataset(str(three))
    runs = torch.tensor([r["run"] for r in ds.train_records])
    assert all(len(runs[t].unique()) == 3 for t in checkpoint_pairs(ds, 5, seed=0, k=3))
    run_script("-m", "experiments.midpoints", "--checkpoint_dir", three, "--fresh_dir", fresh, "--runs_per_blend", "3",
               "--bn_images", "500", "--match", "activations", "--match_images", "200", *SMALL)
    root = three / "midpoints_activations_3runs"
    rows = json.load(open(root / "midpoints.json"))
    assert [r["models"] for r in rows] == ["training checkpoints", "fresh seeds"] + [f"generated: {g}" for g in MATCHED]
    report = json.load(open(root / "aligned_BN_interpolated" / "report.json"))
    assert report["source"]["runs_per_blend"] == 3 and len(report["per_model"]["generated"]["accuracy"]) == 3
    refused = run_script("-m", "experiments.midpoints", "--checkpoint_dir", three, "--fresh_dir", fresh,
                         "--runs_per_blend", "3", "--alpha", "0.3", *SMALL, check=False)
    assert refused.returncode == 2 and "--alpha" in refused.stderr


def test_matching_maps_permuted_copies_back_onto_the_first(dataset, cifar):
    from weightgen.alignment import block_outputs, flat_index, permutation_spec
    ds = WeightDataset(str(dataset), align=False)
    spec = permutation_spec(ds.tinynn_config)
    g = torch.Generator().manual_seed(0)
    shapes = {s.name: s.shape for s in ds.layout.slots}
    a = ds.standardizer.destandardize(ds.train[:1])[0]
    copies = [a[flat_index([torch.randperm(shapes[layer["conv"]][0], generator=g) for layer in spec], ds.layout,
                           spec)] for _ in range(2)]
    w = torch.stack([a, *copies])[None]  # a blend of three: both later members matched to the first
    assert not torch.equal(w[0, 1], a) and not torch.equal(w[0, 2], w[0, 1])
    assert all(torch.equal(m, a) for m in match_pairs(w.clone(), ds, "weights", None)[0, 1:])
    matched = match_pairs(w.clone(), ds, "activations", standardize(cifar.train_images[:100]))[0, 1:]
    x = standardize(cifar.train_images[100:200])  # channel by channel, the same outputs as a's
    for copy in matched:
        outputs = [block_outputs(v, ds.layout, ds.tinynn_config, x) for v in (copy, a)]
        for m, r in zip(*outputs):
            torch.testing.assert_close(m, r, rtol=1e-4, atol=1e-4)


def test_latent_interpolation_decodes_the_mixed_posterior_means(dataset):
    ds = WeightDataset(str(dataset))
    torch.manual_seed(0)
    vae = WeightVAE(ds.layout.numel, hidden=16, latent_dim=3).eval()
    pairs = checkpoint_pairs(ds, 2, seed=0)
    w = ds.standardizer.destandardize(ds.train)
    with torch.no_grad():
        mu = [vae.encode(ds.standardizer.standardize(w[pairs[:, i]]))[0] for i in (0, 1)]
        expected = ds.standardizer.destandardize(vae.decode(0.7 * mu[0] + 0.3 * mu[1]))
    assert torch.allclose(latent_interpolate(vae, ds.standardizer, ds, pairs, blend_coefficients(2, 0.3)), expected,
                          atol=1e-5)


def test_reestimated_batchnorm_holds_the_statistics_of_the_images(dataset, cifar):
    ds = WeightDataset(str(dataset))
    w = ds.standardizer.destandardize(ds.train[:1])
    images = cifar.train_images[:300]
    out = reestimate_bn(w, ds, images, batch_size=300)  # one batch: the plain mean and variance
    model = model_from_flat(w[0], ds.layout, ds.tinynn_config)
    with torch.no_grad():  # the first BatchNorm sees the pooled first convolution
        pre = model.features[0][1](model.features[0][0](standardize(images)))
    state = ds.layout.unflatten(out[0])
    assert state["features.0.2.running_mean"] == pytest.approx(pre.mean((0, 2, 3)), abs=1e-4)
    assert state["features.0.2.running_var"] == pytest.approx(pre.var((0, 2, 3)), rel=1e-3)
    assert torch.equal(state["features.0.0.weight"], ds.layout.unflatten(w[0])["features.0.0.weight"])


def test_span_shares_see_what_lies_in_the_training_span_and_what_does_not():
    gen = torch.Generator().manual_seed(0)
    basis = torch.randn(5, 2000, generator=gen)
    train = torch.randn(40, 5, generator=gen) @ basis + 3.0  # 40 vectors in a 5-dimensional affine subspace
    inside = torch.randn(4, 5, generator=gen) @ basis + 3.0
    outside = torch.randn(4, 2000, generator=gen)
    assert span_shares(train, inside, [5])[5] == pytest.approx(1.0, abs=1e-9)
    assert span_shares(train, inside, [2])[2] < 0.9
    out = span_shares(train, outside, [5, 40])
    assert out[5] < 0.02 and out[40] == pytest.approx(out[5])  # rank 5: more directions add nothing
    assert span_shares(train, train[:3], [40])[40] == pytest.approx(1.0, abs=1e-9)  # training vectors: all in span
    assert span_shares(train, inside, [5])["mean"] > 0.5  # most of their norm is the common offset


def test_run_span_tabulates_held_out_runs_against_the_training_runs(dataset, tmp_path):
    run_script("-m", "experiments.run_span", "--checkpoint_dir", dataset, "--out", tmp_path, "--codes")
    result = json.load(open(tmp_path / "run_span.json"))
    (row,) = result["rows"]  # the tiny dataset: 2 runs, 1 held out
    assert row["runs"] == 1 and row["checkpoints"] == 4
    assert 0 <= row["in_span"] <= 1 and row["mean_explains"] <= 1
    assert result["codes"] == [] and not (tmp_path / "run_span_codes.md").exists()
    assert (tmp_path / "run_span.md").stat().st_size > 0 and (tmp_path / "run_span.png").stat().st_size > 0


def test_run_span_decodes_the_held_out_run_from_channel_codes(dataset, tmp_path):
    argv = ["-m", "experiments.run_span", "--checkpoint_dir", dataset, "--out", tmp_path, "--codes", "0.1", "0.5",
            "--bn_images", "200", "--steps", "3", *SMALL[4:]]
    run_script(*argv)
    result = json.load(open(tmp_path / "run_span.json"))
    saved = {p: p.stat().st_mtime_ns for p in (tmp_path / "run_span_trained").glob("*.pt")}
    assert len(saved) == 5  # one file a trained group
    damaged = tmp_path / "run_span_trained" / "code_0.5.pt"
    damaged.write_bytes(damaged.read_bytes()[:100])  # cut short: trained again, the rest reused
    run_script(*argv)
    now = {p: p.stat().st_mtime_ns for p in (tmp_path / "run_span_trained").glob("*.pt")}
    assert now[damaged] != saved.pop(damaged) and all(now[p] == t for p, t in saved.items())
    assert json.load(open(tmp_path / "run_span.json"))["trained"] == result["trained"]
    held_out, small, half = result["codes"]
    assert held_out["share"] == 1 and held_out["disagreement"] == 0 and held_out["variance_kept"] == 1
    assert held_out["latent_numbers"] == WeightDataset(str(dataset)).layout.numel
    assert small["latent_numbers"] < half["latent_numbers"] < held_out["latent_numbers"]
    assert 0 < small["variance_kept"] < half["variance_kept"] < 1
    # the originals are trained networks, well above chance (0.1; the tiny runs keep checkpoints from a
    # validation accuracy of 0.2, and their test accuracy moves with the CPU: 0.235 on an AVX2 EPYC)
    assert held_out["acc"] > 0.15
    assert small["disagreement"] > 0  # a tenth of each channel is not the network
    assert result["test_images"] == int(TEST_IMAGES) and (tmp_path / "run_span_codes.md").stat().st_size > 0
    trained = {r["group"]: r for r in result["trained"]}
    assert list(trained) == ["held-out checkpoints, trained", "code 0.1, trained", "code 0.5, trained",
                             "fresh inits, trained", "training runs' last checkpoints, trained"]
    own = trained["held-out checkpoints, trained"]
    assert own["disagreement_own_run"] == 0 and own["nearest_training_run"] > 0 and own["own_run_share"] == 1
    split = WeightDataset(str(dataset), holdout="runs")
    assert own["n"] == len(split.val) and trained["training runs' last checkpoints, trained"]["n"] == 1  # 1 run
    assert 0 < trained["code 0.1, trained"]["disagreement_own_run"] < 1
    assert (tmp_path / "run_span_trained.md").stat().st_size > 0


def test_run_span_refuses_steps_without_codes_and_a_share_twice(dataset, tmp_path):
    bad = run_script("-m", "experiments.run_span", "--checkpoint_dir", dataset, "--codes", "--steps", "3", check=False)
    assert bad.returncode == 2 and "give at least one share" in bad.stderr
    twice = run_script("-m", "experiments.run_span", "--checkpoint_dir", dataset, "--codes", "0.5", "0.5", check=False)
    assert twice.returncode == 2 and "given once" in twice.stderr


def test_channel_codes_keep_what_the_training_channels_span():
    shapes = [(6, 2, 3), (6,), (4, 6)]  # a conv-like layer with its bias (6 tokens of 7), a head (4 of 6)
    layers = channel_layers(shapes)
    gen = torch.Generator().manual_seed(0)
    # Every token of layer 0 in a 2-dimensional affine subspace, layer 1's anywhere.
    basis = torch.randn(2, 7, generator=gen)

    def networks(n):
        first = torch.randn(n, 6, 2, generator=gen) @ basis + 1.0
        return join_channels([first, torch.randn(n, 4, 6, generator=gen)], layers)
    train, query = networks(30), networks(3)
    decoded, kept = channel_codes(train, query, layers, 2 / 7)  # two directions for layer 0
    rows = lambda x: x[:, :42]  # layer 0: 6 channels x 7 numbers, first in layout order
    assert torch.allclose(rows(decoded), rows(query), atol=1e-5) and kept[0] == pytest.approx(1.0, abs=1e-9)
    assert kept[1] < 0.6  # layer 1 keeps round(2 / 7 x 6) = 2 of its 6 random directions
    full, kept = channel_codes(train, query, layers, 1.0)
    assert torch.allclose(full, query, atol=1e-5) and kept[1] == pytest.approx(1.0, abs=1e-9)


def test_budget_config_compresses_the_recipe_to_the_steps():
    recipe = TrainConfig(epochs=18, warmup_epochs=1, lr=0.2, final_lr_frac=0.02, batch_size=2)
    cfg = budget_config(recipe, steps=90, steps_per_epoch=100, lr=0.05)
    run = RunTrainer(torch.zeros(200, 3, 32, 32, dtype=torch.uint8), torch.zeros(200, dtype=torch.long), 0,
                     train_config=cfg)  # 100 steps an epoch
    assert run.total_steps == 90 and cfg.warmup_epochs == pytest.approx(0.05)  # 5 of 90 steps, as 100 of 1800
    assert [run.lr_at(s) for s in (0, 4)] == pytest.approx([0.01, 0.05])
    assert max(run.lr_at(s) for s in range(90)) == pytest.approx(0.05) and run.lr_at(90) == pytest.approx(0.001)
    assert budget_config(recipe, 90, 100).lr == 0.2  # no lr: the recipe's


def test_finetune_trains_each_start_from_its_own_weights_and_resumes(dataset, fresh, tmp_path):
    """At a vanishing learning rate the training-checkpoint start keeps its runs' last weights (only
    BatchNorm statistics move), so the experiment trains on from the start it names; a --start is
    trained from its networks; a fresh init is not."""
    ds = WeightDataset(str(dataset))
    ends = ds.standardizer.destandardize(ds.run_ends())
    start = ends[torch.tensor([1, 0, 1])]
    save(start, ds.layout, ds.tinynn_config, tmp_path / "start", dict(test=True), ds.description,
                   batchnorm="trained")
    args = ["-m", "experiments.finetune", "--checkpoint_dir", dataset, "--fresh_dir", fresh, "--steps", "2",
            "--lr", "1e-9", "--start", f"swapped={tmp_path / 'start'}", "--noise", "0.5", *SMALL]
    run_script(*args)
    root = dataset / "finetune"
    rows = json.load(open(root / "finetune.json"))
    assert [r["models"] for r in rows] == ["training checkpoints", "fresh seeds", "generated: fresh init, 2 steps",
                                          "generated: swapped, 2 steps, lr 1e-09",
                                          "generated: training checkpoints, 2 steps, lr 1e-09",
                                          "generated: training checkpoints + noise 0.5, 2 steps, lr 1e-09",
                                          "generated: fresh checkpoints, 2 steps, lr 1e-09"]
    assert all(r["n"] == 3 for r in rows[2:]) and 0 < rows[2]["run_share"] < 1
    not_bn_stats = torch.cat([torch.arange(s.offset, s.offset + s.numel) for s in ds.layout.slots
                              if "running" not in s.name and "num_batches" not in s.name])
    fresh_ends = torch.stack([load_run(fresh, r)[1][-1] for r in range(2)])
    for group, expected in [("training_checkpoints_2_steps_lr_1e-09", ends[torch.tensor([0, 1, 0])]),
                            ("swapped_2_steps_lr_1e-09", start),
                            ("fresh_checkpoints_2_steps_lr_1e-09", fresh_ends[torch.tensor([0, 1, 0])])]:
        trained = load_checkpoint(root / group / "generated.pt", GENERATED_KIND)["weights"]
        assert torch.allclose(trained[:, not_bn_stats], expected[:, not_bn_stats], atol=1e-5)
    # The noise control: the same runs' last weights, half a tensor's spread away in the dataset's space.
    noisy = load_checkpoint(root / "training_checkpoints_+_noise_0.5_2_steps_lr_1e-09" / "generated.pt",
                            GENERATED_KIND)["weights"]
    offset = ds.standardizer.standardize(noisy) - ds.standardizer.standardize(ends[torch.tensor([0, 1, 0])])
    assert offset[:, not_bn_stats].std().item() == pytest.approx(0.5, rel=0.05)
    fresh_init = load_checkpoint(root / "fresh_init_2_steps" / "generated.pt", GENERATED_KIND)["weights"]
    assert (fresh_init[:, not_bn_stats] - start[:, not_bn_stats]).abs().max() > 0.1
    # Each trained group is also held against the fresh checkpoints trained with its steps and rate.
    fresh_trained = json.load(open(root / "fresh_checkpoints_2_steps_lr_1e-09" / "report.json"))
    bar = float(torch.quantile(torch.tensor(fresh_trained["per_model"]["generated"]["max_error_overlap"],
                                            dtype=torch.float64), 0.95))
    assert rows[2]["bar_same_steps"] == "-" and all(r["bar_same_steps"] == pytest.approx(bar) for r in rows[3:])
    assert all(0 <= r["new_same_steps"] <= 1 for r in rows[3:])
    assert (root / "finetune.png").stat().st_size > 0
    again = run_script(*args)
    assert "$ python" not in again.stdout and json.load(open(root / "finetune.json")) == rows
    # Judged against other training checkpoints: every group evaluated again, none trained again.
    made = (root / "fresh_init_2_steps" / "generated.pt").stat().st_mtime_ns
    rejudged = run_script(*args, "--train_models", "2")
    assert rejudged.stdout.count("$ python evaluate_generated.py") == 5
    assert (root / "fresh_init_2_steps" / "generated.pt").stat().st_mtime_ns == made
    groups = ["fresh_init_2_steps", "swapped_2_steps_lr_1e-09", "training_checkpoints_2_steps_lr_1e-09",
              "training_checkpoints_+_noise_0.5_2_steps_lr_1e-09", "fresh_checkpoints_2_steps_lr_1e-09"]
    for group in groups:
        report = json.load(open(root / group / "report.json"))
        assert len(report["training_checkpoints"]) == 2 and report["judged_with"]["train_models"] == 2
    # A second data order pooled with the first: every group twice as large, one bar from both orders' fresh runs.
    run_script(*args, "--train_models", "2", "--seed", "1", "--pool", "0")
    pooled = json.load(open(dataset / "finetune_seed1" / "finetune_pooled.json"))
    assert [r["models"] for r in pooled] == [r["models"][len("generated: "):] for r in rows[2:]]
    assert all(r["n"] == 6 and r["seeds"] == "0 1" for r in pooled)
    reports = {(g, s): json.load(open(dataset / folder / g / "report.json"))
               for g in groups for s, folder in [(0, "finetune"), (1, "finetune_seed1")]}
    fresh_overlaps = [o for s in (0, 1) for o in
                      reports[("fresh_checkpoints_2_steps_lr_1e-09", s)]["per_model"]["generated"]["max_error_overlap"]]
    bar = float(torch.quantile(torch.tensor(fresh_overlaps, dtype=torch.float64), 0.95))
    for row, group in zip(pooled, groups):
        per = [reports[(group, s)]["per_model"]["generated"] for s in (0, 1)]
        acc, overlap = [a for p in per for a in p["accuracy"]], [o for p in per for o in p["max_error_overlap"]]
        assert row["acc_mean"] == pytest.approx(sum(acc) / 6)
        if group != "fresh_init_2_steps":
            min_acc = reports[(group, 0)]["min_acc"]
            assert row["bar_same_steps"] == pytest.approx(bar)
            new = sum(a >= min_acc and o <= bar for a, o in zip(acc, overlap))
            assert row["new_same_steps"] == pytest.approx(new / 6)
    # Orders judged against other training checkpoints are not pooled: one bar, one judgement.
    mixed = run_script(*args, "--seed", "1", "--pool", "0", check=False)  # --train_models 3 here, 2 in order 0
    assert mixed.returncode == 1 and "judged with" in mixed.stderr and "Traceback" not in mixed.stderr
