"""What the experiment scripts share: running the pipeline's scripts and collecting results.

Each experiment drives the ordinary scripts (train_vae.py, train_diffusion.py, sample.py,
evaluate_generated.py) with flags, printing every command, and skips a step whose output
already exists (an evaluation, only when it was judged the same way): an interrupted experiment
continues where it stopped when run again.
Run them from the project root as modules: python -m experiments.NAME --help.
"""
import json
import os

from weightgen.cli import add_more_flags, add_runtime_flags, add_test_images_flag, count, run_step, runtime_argv
from weightgen.generate import save


def sample_and_evaluate(model_path, out, args, seed=0):
    """Sample args.num_models networks with DDIM-50 into `out` and evaluate them (no baselines);
    returns the report's summary."""
    run_step(["sample.py", "--model_path", model_path, "--num_models", args.num_models, "--sampler", "ddim",
              "--steps", 50, "--seed", seed, "--out", out, "--quiet", *runtime_argv(args, data=False)],
             skip_if=os.path.join(out, "generated.pt"))
    return judge(out, args)["summary"]


def judge(out, args, fresh_dir=None, baseline_models=0):
    """evaluate_generated.py's report on the networks in `out`, judged against args.train_models
    training checkpoints on args.test_images test images (and the bar of `fresh_dir`); a report
    judged otherwise, or by an older evaluate_generated.py that did not say how, is made again."""
    judged_with = dict(fresh_dir=fresh_dir, train_models=args.train_models, baseline_models=baseline_models,
                       test_images=args.test_images)
    path = os.path.join(out, "report.json")
    if os.path.exists(path) and _read_json(path).get("judged_with") != judged_with:
        os.remove(path)
    fresh = ["--fresh_dir", fresh_dir] if fresh_dir else []
    run_step(["evaluate_generated.py", "--model_path", out, *fresh, "--train_models", args.train_models,
              "--baseline_models", baseline_models, "--test_images", args.test_images, *runtime_argv(args)],
             skip_if=path)
    return _read_json(path)


def _read_json(path):
    with open(path) as f:
        return json.load(f)


def save_group(weights, layout, tinynn_config, out, source, description, batchnorm):
    """generate.save, for a group made again: the folder (with the report that judged the old
    networks) is replaced whole."""
    save(weights, layout, tinynn_config, out, source, description, batchnorm=batchnorm, overwrite=True)


def accuracy_row(summary):
    """The generated models' accuracy figures, and the training sample's mean beside them."""
    g, t = summary["generated"]["accuracy"], summary["training checkpoints"]["accuracy"]
    return dict(mean=g["mean"], std=g["std"], median=g["median"], min=g["min"], max=g["max"],
                above_min_acc=g["above_min_acc"], training_mean=t["mean"],
                nearest_distance=summary["generated"]["nearest_distance"]["median"])


def plot_generated_accuracy(ax, x, rows):
    """Generated mean ± std and median against `x`, with the training checkpoints' mean."""
    ax.errorbar(x, [r["mean"] for r in rows], yerr=[r["std"] for r in rows], marker="o", capsize=3,
                label="generated mean ± std")
    ax.plot(x, [r["median"] for r in rows], "s--", label="generated median")
    ax.axhline(rows[-1]["training_mean"], color="gray", ls=":", label="training checkpoints (mean)")
    ax.set(xscale="log", ylabel="test accuracy")


def write_table(path, title, columns, rows):
    """rows: list of dicts; writes PATH.md (a table) and PATH.json, and prints the table."""
    lines = [f"# {title}", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r[c]) for c in columns) + " |")
    text = "\n".join(lines) + "\n"
    with open(path + ".md", "w") as f:
        f.write(text)
    with open(path + ".json", "w") as f:
        json.dump(rows, f, indent=1)
    print("\n" + text)


def _fmt(v):
    return f"{v:.4f}" if isinstance(v, float) else "-" if v is None else str(v)


def common_flags(p, dataset=True, vae=False, num_models=50, train_models=50):
    """Flags every experiment has; dataset: --checkpoint_dir, for experiments on one dataset;
    vae: --vae_flags, for experiments that train VAEs."""
    if dataset:
        p.add_argument("--checkpoint_dir", required=True, help="dataset name under checkpoints/")
    p.add_argument("--num_models", type=count, default=num_models,
                   help=f"networks generated per setting (default {num_models})")
    p.add_argument("--train_models", type=count, default=train_models,
                   help=f"training checkpoints evaluated beside them (default {train_models})")
    if vae:
        add_more_flags(p, "vae", "train_vae.py", "--hidden 64", where=" for every VAE trained")
    add_test_images_flag(p)
    add_runtime_flags(p, seed=False, quiet=False)


# The columns of report_rows, for write_table.
REPORT_COLUMNS = ["dataset", "models", "n", "acc_mean", "acc_min", "above_min_acc", "new", "max_overlap",
                  "disagreement", "functionally_distinct", "ens_k_gen", "ens_k_runs", "ens_all_gen"]


def group_row(dataset, label, group, report):
    """The report's figures of one group of networks ("generated", "training checkpoints", ...)."""
    s = report["summary"][group]
    return dict(dataset=dataset, models=label, n=s["accuracy"]["n"], acc_mean=s["accuracy"]["mean"],
                acc_min=s["accuracy"]["min"], above_min_acc=s["accuracy"]["above_min_acc"], new=s.get("new", "-"),
                max_overlap=s["max_error_overlap"]["median"], disagreement=s["pairwise_disagreement"]["median"],
                functionally_distinct=s["functionally_distinct"])


def ensemble_figures(report):
    """{ens_k_gen, ens_k_runs, ens_all_gen}: ensembles of K generated networks, of one training
    checkpoint per run (K runs) and of all generated networks."""
    ens = report["ensembles"]
    pick = lambda prefix: next(v["accuracy"] for k, v in ens.items() if k.startswith(prefix))
    return dict(ens_k_gen=pick("generated (first"), ens_k_runs=pick("training checkpoints"),
                ens_all_gen=pick("generated (all"))


def report_rows(dataset, reports):
    """Table rows of evaluate_generated.py reports [(name, report), ...] of one dataset: the training
    and fresh rows once (from the first report), then a row per generator."""
    first = reports[0][1]
    none = dict(ens_k_gen="-", ens_k_runs="-", ens_all_gen="-")
    rows = [dict(group_row(dataset, group, group, first), **none) for group in ("training checkpoints", "fresh seeds")]
    return rows + [dict(group_row(dataset, f"generated: {name}", "generated", report), **ensemble_figures(report))
                   for name, report in reports]


def plot_overlap_scatter(per_dataset, path):
    """Accuracy against max error overlap of every network, one panel per dataset
    ({dataset: [(name, report), ...]}), the fresh seeds' bar as a line."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(per_dataset), figsize=(6.5 * len(per_dataset), 5), squeeze=False)
    for ax, (dataset, reports) in zip(axes[0], per_dataset.items()):
        first = reports[0][1]
        groups = [(g, first["per_model"][g]) for g in first["per_model"] if g != "generated"]
        groups += [(f"generated: {name}", rep["per_model"]["generated"]) for name, rep in reports]
        for label, r in groups:
            ax.scatter(r["max_error_overlap"], r["accuracy"], s=10, alpha=0.6, label=label)
        ax.axvline(first["new_bar"], color="k", ls="--", lw=0.8, label="fresh seeds' 95th percentile (the bar)")
        ax.axhline(first["min_acc"], color="gray", ls=":", lw=0.8, label="--min_acc")
        ax.set(xlabel="max error overlap with any training checkpoint", ylabel="test accuracy",
               title=f"{dataset}: new networks sit left of the bar, above min_acc")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
