"""Experiment: the published weight generators side by side, on TinyNN, judged by one bar.

    python -m experiments.generators --preset short     # R20x3 (short recipe, 20 runs) + R20Fresh
    python -m experiments.generators --preset seed      # S10x20 (the seed's 18 epochs, 10 runs) + S10Fresh
    python -m experiments.generators --preset short --outside mine=path/to/state_dicts

Each row is one generator (the idea of a published one, on this project's datasets) or a
reference, trained, sampled and judged by this one command (a step whose output exists is
skipped, so an interrupted or repeated run goes on where it stopped):
- latent: latent diffusion over whole networks (an MLP VAE, then a DDPM on its latents;
  p-diff's whole-model variant, this project's default route);
- pdiff_part: p-diff's own setting, a VAE over the head and the BatchNorm weights and biases
  (train_vae.py --part head_bn) with a latent DDPM, the rest of every network the first training
  run's last checkpoint; p-diff trains on one run's last-epoch checkpoints, here on the part of
  every training run, aligned;
- weights: a DDPM directly on the weights (G.pt's idea without its loss conditioning);
- flow_pca: DeepWeightFlow's recipe, flow matching over the coordinates of the weight-matched
  training weights along one principal direction per run, Heun steps, BatchNorm statistics
  recomputed on training images (sample.py --bn_images);
- layercodes: latent diffusion over per-layer channel codes (SANE-like tokens), each network
  then trained --train_steps SGD steps;
- blends: blends of 3 runs trained --train_steps steps (sample_blends.py, no novelty check);
- every --outside NAME=FOLDER: a folder of TinyNN state_dicts made elsewhere.
References, from the first evaluation: training checkpoints, fresh seeds, training weights +
noise at three scales (Zeng et al.'s baseline), run averages (and the other baselines of
evaluate_generated.py), and fresh checkpoints trained --train_steps steps, whose error overlaps
are the trained fresh bar for the rows that train their networks after generating them.

Every row is sampled with --seeds seeds (the generator trained once, with seed 0); those that
train their networks take the second seed only when their median max error overlap is within
--near of the bar. A row's seconds are its trainers' own training seconds (train_vae.py's
final.json, train_diffusion.py's log: not the evaluations they run beside) plus the wall time
of its sampling command, the mean over seeds (for rows that train their networks, that holds
the training on). Writes, in checkpoints/DATASET/generators/: generators.md/.json (the
table), generators.png (accuracy against max error overlap, every row), seconds.json (what each
step took when it ran).
"""
import argparse
import json
import os
import statistics
from dataclasses import dataclass, field

import torch

from weightgen.tinynn import FlatLayout
from experiments.common import _read_json
from weightgen import checkpoint_dataset as cd
from weightgen import ROOT
from weightgen.baselines import new_network_bar
from weightgen.cli import (add_more_flags, add_runtime_flags, add_test_images_flag, count, nonnegative,
                           resume_if_started, run_main, run_step, runtime_argv)

# Per preset: its dataset and fresh set (configs/NAME.args), and the generators' sizes. Epochs
# are fewer on the seed preset, whose 180 training vectors make three times the steps an epoch.
# A VAE of 54-180 vectors makes 2-6 steps an epoch: the rate is doubled and not decayed, as in
# the quickstart's small preset (RESULTS.md, "The quickstart's two routes": reconstructions
# 0.6845 against 0.6795 at the seed's decayed rate).
VAE_FLAGS = ["--lr", "2e-3", "--lr_step", "1000"]
PRESETS = dict(
    short=dict(dataset="R20x3", fresh="R20Fresh", vae_epochs=100, diffusion_epochs=1000, weights_epochs=300,
               layercodes_epochs=1000),
    seed=dict(dataset="S10x20", fresh="S10Fresh", vae_epochs=100, diffusion_epochs=300, weights_epochs=100,
              layercodes_epochs=300),
)
ROWS = ("latent", "pdiff_part", "weights", "flow_pca", "layercodes", "blends")
TRAIN, FRESH = "training checkpoints", "fresh seeds"


@dataclass
class Generator:
    label: str
    train: list                      # [(command, its output: skipped when it exists)]
    sample: object                   # sample(seed, out) -> command
    files: list = field(default_factory=list)  # the model files whose numbers the generator holds
    trained_on: bool = False         # its networks are trained after they are generated


def generators(a, folder):
    """{row: Generator} for the rows asked for, on the dataset in `folder`."""
    d, run = a.dataset, lambda name: os.path.join(folder, name)
    rt = runtime_argv(a)
    quiet = ["--quiet"]

    def vae(name, *flags):
        return (["train_vae.py", "--checkpoint_dir", d, "--run_name", name, "--epochs", a.vae_epochs, *flags,
                 *quiet, *rt, *VAE_FLAGS, *a.vae_flags, *resume_if_started(folder, name, "vae_last.pt")],
                run(f"{name}/final.json"))

    def diffusion(name, epochs, *flags):
        return (["train_diffusion.py", "--checkpoint_dir", d, "--run_name", name, "--epochs", epochs, *flags,
                 *quiet, "--device", a.device, *a.diffusion_flags, *resume_if_started(folder, name, "diffusion.pt")],
                run(f"{name}/loss.png"))  # written once the last epoch is done

    def sampler(name, *flags):
        return lambda seed, out: ["sample.py", "--model_path", run(f"{name}/diffusion.pt"), "--num_models",
                                  a.num_models, "--seed", seed, "--out", out, *flags, *quiet, *rt]

    train_on = ["--train_steps", a.train_steps]
    rows = dict(
        latent=Generator("latent diffusion, whole network (MLP VAE + DDPM)",
                         [vae("vae"), diffusion("diffusion_latent", a.diffusion_epochs)],
                         sampler("diffusion_latent"), [run("vae/vae.pt"), run("diffusion_latent/diffusion.pt")]),
        pdiff_part=Generator("p-diff's setting: head + BatchNorm only (VAE + DDPM)",
                             [vae("vae_head_bn", "--part", "head_bn"),
                              diffusion("diffusion_head_bn", a.diffusion_epochs, "--vae_path", run("vae_head_bn/vae.pt"))],
                             sampler("diffusion_head_bn"),
                             [run("vae_head_bn/vae.pt"), run("diffusion_head_bn/diffusion.pt")]),
        weights=Generator("direct weight diffusion (G.pt, unconditioned)",
                          [diffusion("diffusion_weights", a.weights_epochs, "--space", "weights", "--batch_size", 32)],
                          sampler("diffusion_weights"), [run("diffusion_weights/diffusion.pt")]),
        flow_pca=Generator("DeepWeightFlow: flow matching on PCA coordinates, BN recomputed",
                           [diffusion("diffusion_pca_flow", a.diffusion_epochs, "--space", "pca", "--objective", "flow")],
                           sampler("diffusion_pca_flow", "--sampler", "heun", "--bn_images", a.bn_images),
                           [run("diffusion_pca_flow/diffusion.pt")]),
        layercodes=Generator(f"per-layer channel codes (SANE-like), trained {a.train_steps} steps",
                             [vae("vae_layercodes", "--autoencoder", "layercodes"),
                              diffusion("diffusion_layercodes", a.layercodes_epochs, "--vae_path",
                                        run("vae_layercodes/vae.pt"))],
                             sampler("diffusion_layercodes", *train_on),
                             [run("vae_layercodes/vae.pt"), run("diffusion_layercodes/diffusion.pt")], trained_on=True),
        blends=Generator(f"blends of 3 runs, trained {a.train_steps} steps", [],
                         lambda seed, out: blends_command(a, seed, out), trained_on=True),
    )
    return {name: rows[name] for name in a.rows}


def blends_command(a, seed, out):
    return ["sample_blends.py", "--checkpoint_dir", a.dataset, "--num_models", a.num_models, "--oversample", 1,
            "--steps", a.train_steps, "--seed", seed, "--out", out, "--quiet", *runtime_argv(a)]


def numbers_in(path):
    """The numbers a model file holds for sampling: its EMA weights (and buffers, such as a partial
    VAE's fixed checkpoint) and a PCA space's mean and directions."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    n = sum(t.numel() for t in ckpt["ema"].values() if t.is_floating_point())
    space = ckpt.get("space") or {}
    return n + sum(space[k].numel() for k in ("pca_mean", "pca_directions") if k in space)


def generator_numbers(name, gen, folder):
    if name == "blends":  # a blend generator holds its dataset: every checkpoint it draws members from
        manifest = cd.load_manifest(folder)
        return len(manifest["checkpoints"]) * FlatLayout.from_json(manifest["layout"]).numel
    return sum(numbers_in(f) for f in gen.files)


def training_seconds(output):
    """The seconds a trainer's own record gives its training, without the evaluations it runs
    beside (train_vae.py's final report decodes 100 prior samples on the test set)."""
    if output.endswith("final.json"):
        return _read_json(output)["train_seconds"]
    with open(os.path.join(os.path.dirname(output), "log.jsonl")) as f:  # train_diffusion.py: per epoch
        return json.loads(f.read().splitlines()[-1])["seconds"]


class Ledger:
    """Seconds of every step that ran, kept in a file, so a skipped step keeps the figure it had."""

    def __init__(self, path):
        self.path = path
        self.seconds = _read_json(path) if os.path.exists(path) else {}

    def run(self, key, cmd, skip_if):
        took = run_step(cmd, skip_if=skip_if)
        if took:
            self.seconds[key] = round(took, 1)
            with open(self.path, "w") as f:
                json.dump(self.seconds, f, indent=1)
        return self.seconds.get(key)


def evaluate(out, a, baselines=0, bar_from=None, checkpoint_dir=None):
    """evaluate_generated.py's report on `out` (made again when it was judged otherwise)."""
    judged_with = dict(fresh_dir=a.fresh, train_models=a.train_models, baseline_models=baselines,
                       test_images=a.test_images)
    path = os.path.join(out, "report.json")
    if os.path.exists(path) and (_read_json(path).get("judged_with") != judged_with
                                 or bar_from and "bar_from" not in _read_json(path)):
        os.remove(path)
    extra = (["--bar_from", bar_from] if bar_from else []) + (["--checkpoint_dir", checkpoint_dir]
                                                              if checkpoint_dir else [])
    run_step(["evaluate_generated.py", "--model_path", out, "--fresh_dir", a.fresh, "--train_models", a.train_models,
              "--baseline_models", baselines, "--test_images", a.test_images, "--quiet", *extra, *runtime_argv(a)],
             skip_if=path)
    return _read_json(path)


def figures(report):
    """One seed's figures of the generated group of a report."""
    s, ens = report["summary"]["generated"], report["ensembles"]
    pick = lambda prefix: next((v["accuracy"] for k, v in ens.items() if k.startswith(prefix)), None)
    return dict(acc_mean=s["accuracy"]["mean"], acc_min=s["accuracy"]["min"], above=s["accuracy"]["above_min_acc"],
                new=s.get("new"), new_trained=(report.get("bar_from") or {}).get("new"),
                overlap=s["max_error_overlap"]["median"], distinct=s["functionally_distinct"],
                ens_k=pick("generated (first"), ens_runs=pick("training checkpoints"), ens_all=pick("generated (all"),
                n=s["accuracy"]["n"])


def _spread(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    mean = statistics.mean(values)
    return f"{mean:.4f}" if len(values) == 1 else f"{mean:.4f} ± {statistics.stdev(values):.4f}"


def _share(values):
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    mean = statistics.mean(values)
    return f"{mean:.0%}" if len(values) == 1 else f"{mean:.0%} ± {statistics.stdev(values):.0%}"


def row(label, per_seed, seconds=None, numbers=None):
    f = per_seed
    return {"generator": label, "seeds": len(f), "n": sum(x["n"] for x in f),
            "accuracy mean (min)": f"{_spread([x['acc_mean'] for x in f])} ({min(x['acc_min'] for x in f):.4f})",
            ">= min_acc": _share([x["above"] for x in f]), "new (fresh bar)": _share([x["new"] for x in f]),
            "new (trained fresh bar)": _share([x["new_trained"] for x in f]),
            "max overlap (median)": _spread([x["overlap"] for x in f]),
            "functionally distinct": "/".join(str(x["distinct"]) for x in f),
            "ensemble of K vs K runs": (f"{f[0]['ens_k']:.4f} vs {f[0]['ens_runs']:.4f}"
                                        if f[0]["ens_k"] is not None and f[0]["ens_runs"] is not None else "-"),
            "ensemble of all": f"{f[0]['ens_all']:.4f}" if f[0]["ens_all"] is not None else "-",
            "seconds (train + sample)": f"{seconds:.0f}" if seconds else "-",
            "numbers": f"{numbers:,}" if numbers else "-"}


def reference_rows(report, trained_report):
    """Rows of the reference groups of the first report, and of the fresh checkpoints trained on."""
    rows = []
    for group, s in report["summary"].items():
        if group == "generated":
            continue
        ens = next((v["accuracy"] for k, v in report["ensembles"].items() if k.startswith(group)), None)
        runs = next(v["accuracy"] for k, v in report["ensembles"].items() if k.startswith(TRAIN))
        f = dict(acc_mean=s["accuracy"]["mean"], acc_min=s["accuracy"]["min"], above=s["accuracy"]["above_min_acc"],
                 new=s.get("new"), new_trained=None, overlap=s["max_error_overlap"]["median"],
                 distinct=s["functionally_distinct"], ens_k=ens, ens_runs=runs, ens_all=None, n=s["accuracy"]["n"])
        rows.append(row(f"reference: {group}", [f]))
    if trained_report:
        rows.append(row(f"reference: fresh checkpoints, trained on (the trained fresh bar)", [figures(trained_report)]))
    return rows


def scatter(groups, bar, trained_bar, min_acc, path):
    """Accuracy against max error overlap of every network of every row, the two bars as lines."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(13, 6.5))
    markers = "os^vD<>phX*"
    for i, (label, r) in enumerate(groups.items()):
        ax.scatter(r["max_error_overlap"], r["accuracy"], s=14, alpha=0.65, marker=markers[i % len(markers)],
                   label=label)
    ax.axvline(bar, color="k", ls="--", lw=1, label=f"fresh seeds' bar ({bar:.3f})")
    if trained_bar is not None:
        ax.axvline(trained_bar, color="tab:red", ls="--", lw=1, label=f"trained fresh bar ({trained_bar:.3f})")
    ax.axhline(min_acc, color="gray", ls=":", lw=1, label=f"min_acc ({min_acc})")
    ax.set(xlabel="max error overlap with any training checkpoint (Jaccard)", ylabel="test accuracy",
           title="every generator, one bar: new networks sit above min_acc, left of the bar")
    ax.set_ylim(max(0.0, min(min(r["accuracy"]) for r in groups.values()) - 0.02), None)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def make_datasets(a, ledger):
    for name in (a.dataset, a.fresh):
        ledger.run(f"dataset {name}", ["Gen_Diffusion_Dataset.py", "@" + os.path.join(ROOT, "configs", f"{name}.args"),
                                       "--quiet",
                                       *runtime_argv(a)], os.path.join(cd.dataset_folder(name), "manifest.json"))


def trained_bar(a, where, ledger):
    """The folder of --num_models fresh checkpoints trained --train_steps steps as the generated ones
    are (the trained fresh bar), judged. sample_blends.py makes it beside the blends of seed 0 (the
    blends row's), which are made first, on their own, so that each step's seconds are its own."""
    blends = os.path.join(where, "blends_seed0")
    ledger.run("blends: sample seed 0", blends_command(a, 0, blends), os.path.join(blends, "generated.pt"))
    out = blends + "_fresh_trained"
    ledger.run("trained fresh bar", blends_command(a, 0, blends) + ["--fresh_dir", a.fresh],
               os.path.join(out, "generated.pt"))
    return out, evaluate(out, a)


def main(a):
    for key, value in PRESETS[a.preset].items():
        if getattr(a, key) is None:
            setattr(a, key, value)
    folder = cd.dataset_folder(a.dataset)
    where = os.path.join(folder, "generators")
    os.makedirs(where, exist_ok=True)
    ledger = Ledger(os.path.join(where, "seconds.json"))
    make_datasets(a, ledger)
    gens = generators(a, folder)
    bar_dir = trained_report = None
    if any(g.trained_on for g in gens.values()):
        bar_dir, trained_report = trained_bar(a, where, ledger)
    rows, groups, first = [], {}, None
    for name, gen in gens.items():
        for cmd, out in gen.train:
            ledger.run(f"{name}: {cmd[0]} {out}", cmd, out)
        train_seconds = sum(training_seconds(out) for _, out in gen.train)
        per_seed, sample_seconds = [], []
        for seed in range(a.seeds):
            out = os.path.join(where, f"{name}_seed{seed}")
            sample_seconds.append(ledger.run(f"{name}: sample seed {seed}", gen.sample(seed, out),
                                             os.path.join(out, "generated.pt")) or 0)
            report = evaluate(out, a, baselines=a.baseline_models if first is None else 0,
                              bar_from=bar_dir if gen.trained_on else None)
            first = first or report
            per_seed.append(figures(report))
            if seed == 0:
                groups[gen.label] = report["per_model"]["generated"]
            near = abs(per_seed[0]["overlap"] - report["new_bar"]) <= a.near
            if gen.trained_on and not near:
                break  # far from the bar: one seed of a costly row says what it does
        seconds = train_seconds + statistics.mean(sample_seconds) if any(sample_seconds) or train_seconds else None
        rows.append(row(gen.label, per_seed, seconds, generator_numbers(name, gen, folder)))
    for spec in a.outside:
        label, path = spec.split("=", 1)
        report = evaluate(path, a, baselines=a.baseline_models if first is None else 0, checkpoint_dir=a.dataset)
        first = first or report
        rows.append(row(f"outside: {label}", [figures(report)]))
        groups[f"outside: {label}"] = report["per_model"]["generated"]
    rows = reference_rows(first, trained_report) + rows
    for group, r in first["per_model"].items():
        if group != "generated":
            groups[f"reference: {group}"] = r
    if trained_report:
        groups["reference: fresh checkpoints, trained on"] = trained_report["per_model"]["generated"]
    write(rows, a, first, trained_report, where)
    scatter(groups, first["new_bar"], _trained_bar(trained_report), first["min_acc"],
            os.path.join(where, "generators.png"))
    print(f"table: {os.path.join(where, 'generators.md')}; scatter: {os.path.join(where, 'generators.png')}")


def _trained_bar(trained_report):
    """The 95th percentile of the trained fresh checkpoints' max error overlap (None without them)."""
    if not trained_report:
        return None
    return new_network_bar(trained_report["per_model"]["generated"]["max_error_overlap"])


def write(rows, a, first, trained_report, where):
    columns = list(rows[0])
    bar = _trained_bar(trained_report)
    lines = [f"# Weight generators on {a.dataset}, judged against {a.fresh}", "",
             f"{first['test_images']} CIFAR-10 test images; min_acc {first['min_acc']}; the fresh seeds' "
             f"bar {first['new_bar']:.3f}" + (f"; the trained fresh bar {bar:.3f} ({a.train_steps} steps)" if bar else "")
             + f"; {first['summary'][TRAIN]['accuracy']['n']} training checkpoints judged against; K = "
             f"{first['training_runs']['all']} runs.", "",
             "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(r[c]) for c in columns) + " |" for r in rows]
    text = "\n".join(lines) + "\n"
    with open(os.path.join(where, "generators.md"), "w") as f:
        f.write(text)
    with open(os.path.join(where, "generators.json"), "w") as f:
        json.dump(dict(rows=rows, preset=a.preset, dataset=a.dataset, fresh=a.fresh, new_bar=first["new_bar"],
                       trained_bar=bar, args={k: v for k, v in vars(a).items()}), f, indent=1)
    print("\n" + text)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default="short",
                   help="short: R20x3 and R20Fresh (default); seed: S10x20 and S10Fresh, the seed's 18-epoch recipe")
    p.add_argument("--dataset", default=None, help="the training dataset (default: the preset's; made from "
                                                   "configs/NAME.args when it is missing)")
    p.add_argument("--fresh", default=None, help="its fresh set (default: the preset's)")
    p.add_argument("--rows", nargs="+", choices=ROWS, default=list(ROWS), help="generators to run (default all)")
    p.add_argument("--outside", nargs="*", default=[], metavar="NAME=FOLDER",
                   help="folders of TinyNN state_dicts made elsewhere, judged as rows of their own")
    p.add_argument("--num_models", type=count, default=20, help="networks per row and seed (default 20)")
    p.add_argument("--seeds", type=count, default=2, help="sample seeds per row (default 2)")
    p.add_argument("--near", type=nonnegative, default=0.10,
                   help="a row that trains its networks takes its second seed only when its median max error overlap "
                        "is within this of the bar (default 0.10)")
    p.add_argument("--train_models", type=count, default=20,
                   help="training checkpoints judged against, spread over the runs (default 20)")
    p.add_argument("--baseline_models", type=count, default=20, help="networks per baseline (default 20)")
    p.add_argument("--train_steps", type=count, default=200,
                   help="SGD steps the layercodes and blends rows train each network, and the trained fresh bar "
                        "(default 200)")
    p.add_argument("--bn_images", type=count, default=5000,
                   help="training images flow_pca recomputes BatchNorm statistics on (default 5000)")
    for key in ("vae_epochs", "diffusion_epochs", "weights_epochs", "layercodes_epochs"):
        p.add_argument(f"--{key}", type=count, default=None,
                       help=f"default: the preset's ({', '.join(f'{k} {v[key]}' for k, v in PRESETS.items())})")
    add_more_flags(p, "vae", "train_vae.py", "--final_models 10", where=" for every VAE trained")
    add_more_flags(p, "diffusion", "train_diffusion.py", "--batch_size 16", where=" for every diffusion model trained")
    add_test_images_flag(p)
    add_runtime_flags(p, seed=False, quiet=False)
    args = p.parse_args(argv)
    for spec in args.outside:
        if "=" not in spec:
            p.error(f"--outside takes NAME=FOLDER, not {spec!r}")
    return args


if __name__ == "__main__":
    run_main(main, parse_args)
