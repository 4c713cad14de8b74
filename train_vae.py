"""Train the weight VAE on a checkpoint dataset.

    python train_vae.py --checkpoint_dir Toy_CNN --batch_size 32 --epochs 100
    python train_vae.py --checkpoint_dir Toy_CNN --align none --run_name vae_noalign  # the ablation
    python train_vae.py --checkpoint_dir Toy_CNN --resume --epochs 200                # go on (also --lr)
    python train_vae.py --checkpoint_dir Toy_CNN --overwrite                          # start RUN_NAME again
    python train_vae.py --checkpoint_dir Toy_CNN --autoencoder channels --run_name vae_channels  # a token per channel
    python train_vae.py --checkpoint_dir Toy_CNN --part head_bn --run_name vae_head_bn  # p-diff: a part only

Runs are aligned to the first run by weight matching (or --align activations; cached in the
dataset folder), each tensor is standardised, and a validation split holds out checkpoints (or
whole runs with --holdout runs). The model with the best validation loss is kept (EMA weights;
--keep last: the last). Every --eval_every epochs, held-out checkpoints are reconstructed and
prior samples decoded into TinyNNs, and their test accuracy logged; the final report also says
whether each reconstruction is its original's network or nearer a training run's. With --part
head_bn the VAE codes only the head and the BatchNorm weights and biases (p-diff's setting); the
rest of every decoded network is the last checkpoint of the first training run. Outputs, in
checkpoints/NAME/RUN_NAME/: vae.pt (the best saved model: arguments, standardiser and EMA
weights, what decoding needs), vae_last.pt (everything, optimizer included, for --resume),
log.jsonl, final.json and vae_curves.png. A RUN_NAME that holds a run already is left alone unless
--resume continues it or --overwrite replaces it (diffusion models trained on its vae.pt load only
that file).
"""
import argparse
import copy
import math
import os
import time

import torch
from tqdm import tqdm

from weightgen import checkpoint_dataset as cd
from weightgen.baselines import reconstruction_identity
from weightgen.cifar10 import load_cifar10
from weightgen.cli import (add_align_flag, add_runtime_flags, add_test_images_flag, count, nonnegative, positive,
                           run_main, share, whole)
from weightgen.model_io import VAE_KIND, load_checkpoint, pick_device, save_checkpoint, write_json
from weightgen.tinynn_training import probabilities_flat
from weightgen.training_utils import (EMA, batches_per_epoch, clear_run, descend, existing_run, for_sampling,
                                      restore, resumable, reuse_freed_memory, run_epochs, steps_summary,
                                      training_state, write_log)
from vae_model import AUTOENCODERS, VAE_DEFAULTS, autoencoder_for, load_vae
from weightgen.weight_dataset import WeightDataset


def decoded_predictions(flat_z, ds, test, device):
    """Test-set predictions [networks, images] of TinyNNs whose standardised weights are `flat_z`."""
    weights = ds.standardizer.destandardize(flat_z.to(device))
    return probabilities_flat(weights, ds.layout, ds.tinynn_config, test[0], device).argmax(2)


def accuracy_report(vae, ds, test, n_models, device, seed, identity=False):
    """Reconstructed held-out checkpoints against their originals, and prior samples. identity:
    also whether the reconstructions are their originals' networks or a training run's
    (baselines.reconstruction_identity, against the last checkpoint of every training run)."""
    vae.eval()
    pick = torch.randperm(len(ds.val), generator=torch.Generator().manual_seed(seed))[:n_models]
    originals = ds.val[pick].to(device)
    with torch.no_grad():
        recon = vae.reconstruct(originals)
        prior = vae.sample(n_models, torch.Generator(device=device).manual_seed(seed))
    preds = [decoded_predictions(z, ds, test, device) for z in (originals, recon, prior)]
    orig_acc, recon_acc, prior_acc = (p.eq(test[1].cpu()).float().mean(1).numpy() for p in preds)

    def stats(a):
        return dict(mean=float(a.mean()), std=float(a.std()), min=float(a.min()), max=float(a.max()))
    report = dict(n_heldout=len(pick), n_prior=n_models, original=stats(orig_acc), reconstructed=stats(recon_acc),
                  gap=stats(orig_acc - recon_acc), prior=stats(prior_acc), test_images=len(test[1]))
    if identity:
        report["identity"] = reconstruction_identity(preds[0], preds[1],
                                                     decoded_predictions(ds.run_ends(), ds, test, device))
    return report


def validation_loss(model, val, kl_weight, batch_size):
    model.eval()
    with torch.no_grad():
        parts = [model.loss(val[i:i + batch_size], kl_weight) for i in range(0, len(val), batch_size)]
    n = [min(batch_size, len(val) - i) for i in range(0, len(val), batch_size)]
    return [sum(p[j].item() * k for p, k in zip(parts, n)) / len(val) for j in range(3)]


def plot_history(history, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    ep = [h["epoch"] for h in history]
    a.plot(ep, [h["train_mse"] for h in history], label="train MSE")
    a.plot(ep, [h["val_mse"] for h in history], label="val MSE")
    a.set(xlabel="epoch", ylabel="reconstruction MSE (standardised weights)", yscale="log")
    a.legend()
    ev = [h for h in history if "eval" in h]
    if ev:
        for key, label in [("original", "held-out originals"), ("reconstructed", "reconstructions"),
                           ("prior", "prior samples")]:
            b.plot([h["epoch"] for h in ev], [h["eval"][key]["mean"] for h in ev], marker="o", label=label)
        b.set(xlabel="epoch", ylabel="mean test accuracy (eval subset)")
        b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def held_out_runs_are_seen(ds):
    """Whether some held-out checkpoint comes from a run the VAE trains on."""
    return bool({r["run"] for r in ds.val_records} & {r["run"] for r in ds.train_records})


# What a run keeps to its end: --resume refuses other values of these by name (the learning rate,
# its schedule, the epochs, the KL weight, batch size, EMA decay and evaluations may change).
FIXED = ("autoencoder", "part", "hidden", "latent_dim", "input_noise", "latent_noise", "align", "holdout", "val_fraction",
         "val_runs", "min_acc", "max_train", "seed")
OUTPUTS = ("vae.pt", "vae_last.pt", "final.json", "log.jsonl", "vae_curves.png")


def make_state(model, ema, opt, sched, args, ds, history, best_val, resumes):
    return dict(kind=VAE_KIND, autoencoder=args.autoencoder, model_args=model.args, config=vars(args),
                part=dict(name=args.part, base=base_record(ds) if args.part != "all" else None),
                dataset=ds.description, tinynn=ds.tinynn_config, standardizer=ds.standardizer.state_dict(),
                best_val=best_val, **training_state(model, ema, opt, history, sched, resumes))


def base_record(ds):
    """Which checkpoint a --part VAE's networks take the rest of their weights from: the last
    training checkpoint of the first training run (ds.run_ends()[0])."""
    first = min(r["run"] for r in ds.train_records)
    return max((r for r in ds.train_records if r["run"] == first), key=lambda r: r["step"])


def split_of(description):
    """A dataset description without its folder (which may move): the checkpoints it splits."""
    return {k: v for k, v in description.items() if k != "folder"}


def saved_val_loss(path):
    """The validation loss of the model saved at `path` (inf when there is none yet)."""
    if not os.path.exists(path):
        return math.inf
    history = load_checkpoint(path, VAE_KIND)["history"]
    return history[-1]["val_loss"] if history else math.inf


def main(args):
    device = pick_device(args.device)
    reuse_freed_memory()  # the wide layers' gradients: no page faults every step on the CPU
    folder = cd.dataset_folder(args.checkpoint_dir)
    out = os.path.join(folder, args.run_name)
    found = existing_run(out, OUTPUTS, "VAE run", args, note=" (diffusion models trained on it then stop loading)")
    last_path, best_path = os.path.join(out, "vae_last.pt"), os.path.join(out, "vae.pt")
    ckpt = resumable(last_path, VAE_KIND, args, FIXED) if args.resume else None
    data = load_cifar10(args.data_dir, device, download=not args.no_download)  # first: --align activations reads it
    ds = WeightDataset(folder, align=args.align, min_acc=args.min_acc, holdout=args.holdout,
                       val_fraction=args.val_fraction, val_runs=args.val_runs, seed=args.seed,
                       max_train=args.max_train, data_dir=args.data_dir)
    test_sub = data.first_test(args.eval_images)
    train, val = ds.train.to(device), ds.val.to(device)
    print(f"{folder}: {len(train)} training / {len(val)} held-out checkpoints of {ds.layout.numel} numbers "
          f"(align={args.align}, holdout={args.holdout}); {steps_summary(len(train), args.batch_size, args.epochs)}; "
          f"device {device}")
    if args.keep == "best" and not held_out_runs_are_seen(ds):
        print("note: no held-out checkpoint comes from a training run (--holdout runs, or one checkpoint per "
              "run), so the validation loss measures unseen runs; it is lowest after a few epochs, and --keep "
              "best keeps that barely trained model. Pass --keep last to keep the trained one.")

    # Seeded here, not before the data: computing an alignment builds TinyNNs, which draws from the
    # global generator, so a run would otherwise depend on whether alignment.pt was cached.
    torch.manual_seed(args.seed)
    sizes = {k: v for k, v in dict(hidden=args.hidden, latent_dim=args.latent_dim).items()
             if v is not None}  # else the autoencoder's own defaults
    model = autoencoder_for(args.autoencoder, ds.layout, args.part, input_noise=args.input_noise,
                            latent_noise=args.latent_noise, **sizes)
    if args.part != "all":
        model.base.copy_(ds.run_ends()[0])
        print(f"--part {args.part}: {len(model.index)} of the {ds.layout.numel} numbers coded; the rest is run "
              f"{base_record(ds)['run']}'s checkpoint at step {base_record(ds)['step']}")
    model = model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, fused=True)  # one kernel per step: faster on CPU and GPU
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=args.lr_step, gamma=args.lr_gamma)
    ema = EMA(model, args.ema)
    history, best, resumes = [], dict(val=math.inf), []
    if ckpt:
        expected = {"model arguments": (ckpt["model_args"], model.args),
                    "split": (split_of(ckpt["dataset"]), split_of(ds.description))}
        resumes = ckpt.get("resumes", []) + [restore(ckpt, last_path, model, ema, opt, args, sched, expected)]
        # The best so far is the model in vae.pt, whatever a save cut short may have recorded.
        history, best["val"] = ckpt["history"], min(ckpt["best_val"], saved_val_loss(best_path))
    else:
        if args.overwrite:
            clear_run(out, found)
        model.initialise_from(train)
    os.makedirs(out, exist_ok=True)

    t0 = time.time()
    gen = torch.Generator(device=device).manual_seed(args.seed + len(history))
    ema_model = copy.deepcopy(model)

    def train_epoch(epoch):
        model.train()
        order = torch.randperm(len(train), generator=gen, device=device)
        sums = torch.zeros(3, device=device)
        for i in range(0, len(order), args.batch_size):
            loss, mse, kl = model.loss(train[order[i:i + args.batch_size]], args.kl_weight)
            descend(loss, model, opt, ema)
            sums += torch.stack([loss.detach(), mse.detach(), kl.detach()])
        sched.step()
        n_batches = batches_per_epoch(len(order), args.batch_size)
        ema_model.load_state_dict(ema.state)
        val_loss, val_mse, val_kl = validation_loss(ema_model, val, args.kl_weight, 256)
        rec = dict(epoch=epoch + 1, train_loss=sums[0].item() / n_batches, train_mse=sums[1].item() / n_batches,
                   train_kl=sums[2].item() / n_batches, val_loss=val_loss, val_mse=val_mse, val_kl=val_kl,
                   lr=opt.param_groups[0]["lr"], seconds=round(time.time() - t0, 1))
        if (epoch + 1) % args.eval_every == 0 or epoch + 1 == args.epochs:
            rec["eval"] = accuracy_report(ema_model, ds, test_sub, args.eval_models, device, args.seed)
            tqdm.write(f"epoch {epoch + 1}: val MSE {val_mse:.4f}, held-out acc "
                       f"{rec['eval']['original']['mean']:.3f} -> recon {rec['eval']['reconstructed']['mean']:.3f}, "
                       f"prior {rec['eval']['prior']['mean']:.3f}")
        return rec

    def save():
        # vae.pt is replaced only by a better model (the lowest validation loss of its EMA weights
        # among the saved epochs; --keep last: the latest), and the best moves only once that file
        # is written: a save cut short (Ctrl-C, a full disk) leaves the old vae.pt and its loss, and
        # the Ctrl-C handler's save, which comes next, writes the better model again.
        val_loss = history[-1]["val_loss"] if history else math.inf
        if val_loss < best["val"] or args.keep == "last":
            state = make_state(model, ema, opt, sched, args, ds, history, min(val_loss, best["val"]), resumes)
            save_checkpoint(for_sampling(state), best_path)
            best["val"] = min(val_loss, best["val"])
        save_checkpoint(make_state(model, ema, opt, sched, args, ds, history, best["val"], resumes), last_path)
        write_log(history, os.path.join(out, "log.jsonl"))

    run_epochs(history, args.epochs, train_epoch, save, args.save_every, "vae", args.quiet, loss_key="train_loss")
    train_seconds = time.time() - t0
    plot_history(history, os.path.join(out, "vae_curves.png"))

    vae, _, kept = load_vae(best_path)
    kept_epoch, kept_val = kept["history"][-1]["epoch"], kept["history"][-1]["val_loss"]
    final = accuracy_report(vae.to(device), ds, data.first_test(args.test_images),
                            args.final_models, device, args.seed + 1, identity=True)
    final.update(train_seconds=round(train_seconds, 1), dataset=ds.description, best_val_loss=best["val"],
                 kept_epoch=kept_epoch, kept_val_loss=kept_val, keep=args.keep)
    write_json(os.path.join(out, "final.json"), final)
    g, i = final["gap"], final["identity"]
    why = "the last saved" if args.keep == "last" else "the lowest of the saved epochs"
    print(f"vae.pt: epoch {kept_epoch}, validation loss {kept_val:.4f} ({why})")
    print(f"held-out checkpoints ({final['n_heldout']}): original {final['original']['mean']:.4f}, reconstructed "
          f"{final['reconstructed']['mean']:.4f}, gap {g['mean'] * 100:.2f} points (min {g['min'] * 100:.2f}, "
          f"max {g['max'] * 100:.2f}); a reconstruction disagrees with its original on {i['with_original']:.3f} of "
          f"the test images, with the nearest training run on {i['with_nearest_run']:.3f} (originals with it: "
          f"{i['original_with_nearest_run']:.3f})")
    p = final["prior"]
    print(f"prior samples ({final['n_prior']}): mean {p['mean']:.4f}, min {p['min']:.4f}, max {p['max']:.4f}; "
          f"training {train_seconds:.0f}s; written to {out}")


def parse_args(argv=None):
    d = VAE_DEFAULTS
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint_dir", required=True, help="dataset name under checkpoints/ (or an absolute path)")
    p.add_argument("--run_name", default="vae", help="output folder inside the dataset folder (default vae)")
    p.add_argument("--batch_size", type=count, default=32, help="default 32")
    p.add_argument("--epochs", type=count, default=100,
                   help="epochs in all (with --resume: where the run ends; default 100)")
    p.add_argument("--lr", type=positive, default=1e-3,
                   help="Adam learning rate, decayed by StepLR (with --resume: from here on; default 1e-3)")
    p.add_argument("--lr_step", type=count, default=30, help="StepLR: epochs between decays (default 30)")
    p.add_argument("--lr_gamma", type=positive, default=0.5, help="StepLR: decay factor (default 0.5)")
    p.add_argument("--kl_weight", type=nonnegative, default=0.1,
                   help="weight of the KL term against the reconstruction (default 0.1)")
    p.add_argument("--autoencoder", choices=sorted(AUTOENCODERS), default="mlp",
                   help="autoencoder network (vae_model.AUTOENCODERS): mlp, MLPs over the whole weight vector "
                        "(default); channels, a transformer over one token per output channel; layercodes, a "
                        "linear code of each output channel with one map per layer, started at the channels' "
                        "principal directions")
    p.add_argument("--part", choices=["all", "head_bn"], default="all",
                   help="what the VAE codes: all of each network (default), or head_bn, the linear head and the "
                        "BatchNorm weights and biases, the rest of every decoded network fixed from one training "
                        "checkpoint (p-diff's setting)")
    p.add_argument("--hidden", type=count, default=None,
                   help=f"width: of the MLP layers (mlp, default {d['hidden']}) or of the tokens (channels, default "
                        "64); layercodes has none")
    p.add_argument("--latent_dim", type=count, default=None,
                   help=f"latent numbers (mlp and channels: default {d['latent_dim']}); channels spreads them over "
                        "its tokens, at least one each (TinyNN: 210); layercodes over its layers in proportion "
                        "to their numbers per channel, at least one a channel (default: a quarter of the network's numbers)")
    p.add_argument("--input_noise", type=nonnegative, default=d["input_noise"],
                   help=f"std of noise added to standardised input weights in training (default {d['input_noise']})")
    p.add_argument("--latent_noise", type=nonnegative, default=d["latent_noise"],
                   help=f"std of noise added to the latent in training (default {d['latent_noise']})")
    p.add_argument("--ema", type=share, default=0.999, help="EMA decay of the kept weights (default 0.999)")
    add_align_flag(p)
    p.add_argument("--holdout", choices=["checkpoints", "runs"], default="checkpoints",
                   help="validation split: random checkpoints, or whole runs (default checkpoints)")
    p.add_argument("--val_fraction", type=share, default=0.1, help="held-out share with --holdout checkpoints")
    p.add_argument("--val_runs", type=count, default=1, help="runs held out with --holdout runs (default 1)")
    p.add_argument("--min_acc", type=share, default=None, help="train only on checkpoints with val_acc >= this")
    p.add_argument("--max_train", type=count, default=None,
                   help="train on only this many random training checkpoints (default all)")
    p.add_argument("--save_every", type=count, default=10,
                   help="epochs between checkpoint saves, the best model chosen among them; also saved after the "
                        "last epoch and on Ctrl-C (default 10)")
    p.add_argument("--keep", choices=["best", "last"], default="best",
                   help="which saved model becomes vae.pt: the lowest validation loss (default) or the last; "
                        "take 'last' with --holdout runs, where the validation loss on unseen runs can rise while "
                        "reconstructions get more accurate")
    p.add_argument("--eval_every", type=count, default=10, help="epochs between accuracy evaluations (default 10)")
    p.add_argument("--eval_models", type=count, default=10, help="networks decoded per periodic evaluation")
    p.add_argument("--eval_images", type=whole, default=2000,
                   help="test images for periodic evaluations (default 2000; 0: all 10,000)")
    p.add_argument("--final_models", type=count, default=100,
                   help="held-out reconstructions and prior samples in the final report (default 100)")
    add_test_images_flag(p, where="the final report: ")
    again = p.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true",
                       help="continue RUN_NAME from its vae_last.pt, with this command's --epochs, --lr and "
                            "schedule; model sizes, data and split must be the ones it was trained with")
    again.add_argument("--overwrite", action="store_true",
                       help="replace the run RUN_NAME holds (default: refuse; diffusion models trained on its vae.pt "
                            "then stop loading)")
    add_runtime_flags(p, seed_help="seed of initialisation, shuffling and the validation split (default 0)")
    args = p.parse_args(argv)
    if args.hidden is not None and not AUTOENCODERS[args.autoencoder].has_width:
        p.error(f"--autoencoder {args.autoencoder} has no width; drop --hidden")
    return args


if __name__ == "__main__":
    run_main(main, parse_args)
