"""Experiment: are the generated networks new, or copies of training checkpoints?

Reads the report.json of one or more evaluate_generated.py runs (e.g. latent and direct
diffusion) and sets every group of models (generated, baselines) against the training
checkpoints' own figures:
- "copies": share of models nearer to a training checkpoint than the median training
  checkpoint is to its nearest other one (about one save interval of SGD apart);
- "same errors": share whose wrong test predictions overlap some training model's at least as
  much as the median training model overlaps its most similar other training model;
- runs covered: how many of the dataset's runs are some model's nearest, and the largest
  share that one run takes (1/runs when spread evenly; 1.0 when every model is near one run);
- "repeats": share of models with another model of their own group nearer than the copy
  threshold (a generator that keeps producing the same network), and the number of distinct
  models in the group;
- from the report: "new" (accurate, and no closer in its errors to a training network than the
  fresh seeds' 95th percentile; "-" without --fresh_dir), median pairwise test disagreement and
  functionally distinct networks.
Writes new_or_copies.md/.json/.png (distance histograms, nearest-run shares) in --out.

    python -m experiments.novelty --reports checkpoints/Toy_CNN/diffusion_latent/samples_ddim_50_seed0 \\
        checkpoints/Toy_CNN/diffusion_weights/samples_ddim_50_seed0 --labels latent direct
"""
import argparse
import collections
import json
import os

import numpy as np

from weightgen.cli import run_main
from experiments.common import write_table


def load_report(path):
    if os.path.isdir(path):
        path = os.path.join(path, "report.json")
    if not os.path.isfile(path):
        raise SystemExit(f"error: no report at {path}: run evaluate_generated.py on the samples first")
    with open(path) as f:
        report = json.load(f)
    if "pairwise_disagreement" not in report["summary"]["generated"]:
        raise SystemExit(f"error: {path} predates the novelty records this needs: rerun evaluate_generated.py")
    return report


def novelty_rows(report, label, n_runs):
    train = report["per_model"]["training checkpoints"]
    copy_dist = float(np.median(train["nearest_distance"]))
    same_overlap = float(np.median(train["max_error_overlap"]))
    rows = []
    for name, r in report["per_model"].items():
        runs = collections.Counter(r["nearest_run"])
        rows.append(dict(
            models=f"{label}: {name}" if label and name == "generated" else name, n=len(r["accuracy"]),
            accuracy=float(np.mean(r["accuracy"])), median_distance=float(np.median(r["nearest_distance"])),
            copies=float(np.mean(np.asarray(r["nearest_distance"]) <= copy_dist)),
            same_errors=float(np.mean(np.asarray(r["max_error_overlap"]) >= same_overlap)),
            runs_covered=f"{len(runs)}/{n_runs}", top_run_share=max(runs.values()) / len(r["nearest_run"]),
            repeats=float(np.mean(np.asarray(r["nearest_in_group"], dtype=float) <= copy_dist)),
            distinct=report["summary"][name]["distinct"],
            new=_or_dash(report["summary"][name].get("new")),
            disagreement=report["summary"][name]["pairwise_disagreement"]["median"],
            functionally_distinct=_or_dash(report["summary"][name]["functionally_distinct"]),
            copy_distance=copy_dist))
    return rows


def _or_dash(value):
    return "-" if value is None else value


def plot(reports, labels, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.5))
    first = reports[0]["per_model"]
    sets = {"training checkpoints (nearest other)": first["training checkpoints"]}
    sets.update({k: v for k, v in first.items() if k.startswith("train + noise")})
    sets.update({f"{lab}: generated": rep["per_model"]["generated"] for rep, lab in zip(reports, labels)})
    all_d = np.concatenate([r["nearest_distance"] for r in sets.values()])
    bins = np.geomspace(max(all_d.min(), 1e-4), all_d.max() * 1.05, 60)
    for name, r in sets.items():
        a1.hist(np.clip(r["nearest_distance"], bins[0], None), bins=bins, alpha=0.5, label=name)
    a1.axvline(np.median(first["training checkpoints"]["nearest_distance"]), color="k", ls=":",
               label="copy threshold")
    a1.set(xscale="log", xlabel="distance to nearest training checkpoint (RMS, standardised)", ylabel="models",
           title="how far from the training set")
    a1.legend(fontsize=7)
    runs = sorted({r for rep in reports for m in rep["per_model"].values() for r in m["nearest_run"]})
    width = 0.8 / (len(reports) + 1)
    for i, (name, r) in enumerate([("training checkpoints", first["training checkpoints"])]
                                  + [(f"{lab}: generated", rep["per_model"]["generated"])
                                     for rep, lab in zip(reports, labels)]):
        c = collections.Counter(r["nearest_run"])
        a2.bar(np.arange(len(runs)) + i * width, [c[k] / len(r["nearest_run"]) for k in runs], width, label=name)
    a2.set(xticks=np.arange(len(runs)) + 0.4 - width / 2, xticklabels=runs, xlabel="run of the nearest checkpoint",
           ylabel="share of models", title="which training runs the models sit next to")
    a2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(args):
    reports = [load_report(p) for p in args.reports]
    if args.labels:
        labels = args.labels
    else:
        labels = [f"set {i + 1}" for i in range(len(reports))] if len(reports) > 1 else [""]
    if len(labels) != len(reports):
        raise SystemExit("error: give one --labels entry per report")
    with open(os.path.join(reports[0]["checkpoint_dir"], "manifest.json")) as f:
        n_runs = len(json.load(f)["runs"])
    rows = novelty_rows(reports[0], labels[0], n_runs)
    for rep, lab in zip(reports[1:], labels[1:]):
        rows += [r for r in novelty_rows(rep, lab, n_runs) if r["models"].startswith(lab)]
    out = args.out or (args.reports[0] if os.path.isdir(args.reports[0]) else os.path.dirname(args.reports[0]))
    os.makedirs(out, exist_ok=True)
    write_table(os.path.join(out, "new_or_copies"), "New networks or copies?",
                ["models", "n", "accuracy", "new", "median_distance", "copies", "same_errors", "runs_covered",
                 "top_run_share", "repeats", "distinct", "disagreement", "functionally_distinct"], rows)
    plot(reports, labels, os.path.join(out, "new_or_copies.png"))
    print(f"copy threshold (median training nearest-other distance): {rows[0]['copy_distance']:.4f}")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reports", nargs="+", required=True,
                   help="evaluate_generated.py outputs (sample folders or their report.json)")
    p.add_argument("--labels", nargs="+", default=None, help="a name per report (default set 1, set 2, ...)")
    p.add_argument("--out", default=None, help="output folder (default: the first report's folder)")
    return p.parse_args(argv)


if __name__ == "__main__":
    run_main(main, parse_args)
