"""Nothing lost, nothing mixed: a trainer leaves a run it finds alone unless told (--resume,
--overwrite), --resume trains at the rate it is given and refuses what a run cannot change,
vae.pt is only ever replaced by a better model, impossible values are one argparse line, run
files of another recipe are refused by name, and a full disk or an unsafe file is one line that
keeps its reason."""
import argparse
import hashlib
import json
import os

import pytest
import torch

from conftest import DATA_DIR, gen, private_copy, run_script
from weightgen import checkpoint_dataset as cd
from weightgen.model_io import DIFFUSION_KIND, VAE_KIND, CheckpointError, load_checkpoint, write_json

VAE = ["--hidden", "32", "--latent_dim", "4", "--batch_size", "2", "--eval_every", "1000", "--eval_models", "1",
       "--eval_images", "200", "--final_models", "1", "--test_images", "200", "--val_fraction", "0.25",
       "--data_dir", DATA_DIR, "--no_download", "--quiet"]
DIFFUSION = ["--space", "weights", "--hidden", "32", "--depth", "1", "--time_dim", "16", "--timesteps", "50",
             "--batch_size", "4", "--quiet"]
TRAINERS = {"vae": ("train_vae.py", VAE, "vae_last.pt", VAE_KIND),
            "diffusion": ("train_diffusion.py", DIFFUSION, "diffusion.pt", DIFFUSION_KIND)}


@pytest.fixture(scope="module")
def dataset(tiny_dataset, tmp_path_factory):
    return private_copy(tiny_dataset, tmp_path_factory, "refusals")


def train(trainer, dataset, run, *extra, check=True):
    script, flags, _, _ = TRAINERS[trainer]
    return run_script(script, "--checkpoint_dir", dataset, "--run_name", run, *flags, *extra, check=check)


def digests(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir() if p.is_file()}


def one_error_line(out):
    """The one line a refusal prints (no traceback)."""
    assert "Traceback" not in out.stderr, out.stderr
    lines = [line for line in out.stderr.splitlines() if "error:" in line]
    assert len(lines) == 1, out.stderr
    return lines[0]


@pytest.fixture(scope="module")
def trained(dataset):
    """A finished run of each trainer, two epochs; tests must leave it as it is."""
    for trainer in TRAINERS:
        train(trainer, dataset, f"kept_{trainer}", "--epochs", "2")
    return {trainer: dataset / f"kept_{trainer}" for trainer in TRAINERS}


@pytest.mark.parametrize("trainer", sorted(TRAINERS))
def test_a_rerun_without_resume_is_refused_and_touches_nothing(dataset, trained, trainer):
    before = digests(trained[trainer])
    refused = train(trainer, dataset, f"kept_{trainer}", "--epochs", "2", check=False)
    line = one_error_line(refused)
    assert refused.returncode == 2 and "--resume" in line and "--overwrite" in line
    assert "its log ends at epoch 2" in line
    assert digests(trained[trainer]) == before  # not a byte changed


@pytest.mark.parametrize("trainer, flag", [("vae", ["--hidden", "64"]), ("diffusion", ["--depth", "2"])])
def test_resume_refuses_by_name_a_flag_a_run_keeps(dataset, trained, trainer, flag):
    before = digests(trained[trainer])
    refused = train(trainer, dataset, f"kept_{trainer}", "--epochs", "3", "--resume", *flag, check=False)
    line = one_error_line(refused)
    assert refused.returncode == 1 and f"{flag[0]} {flag[1]}" in line
    assert line.count(flag[0]) == 2  # what it was trained with, and what this command asks
    assert digests(trained[trainer]) == before


@pytest.mark.parametrize("trainer", sorted(TRAINERS))
def test_resume_trains_at_the_lr_it_is_given_and_overwrite_starts_again(dataset, trainer):
    _, _, name, kind = TRAINERS[trainer]
    train(trainer, dataset, f"lr_{trainer}", "--epochs", "2", "--lr", "1e-3")
    resumed = train(trainer, dataset, f"lr_{trainer}", "--epochs", "3", "--lr", "2.5e-4", "--resume")
    assert "--lr 0.001 -> 0.00025" in resumed.stdout
    path = dataset / f"lr_{trainer}" / name
    ckpt = load_checkpoint(str(path), kind)
    assert ckpt["optimizer"]["param_groups"][0]["lr"] == 2.5e-4 and ckpt["config"]["lr"] == 2.5e-4
    assert [h["lr"] for h in ckpt["history"]] == [1e-3, 1e-3, 2.5e-4]
    assert ckpt["resumes"] == [dict(epoch=2, changed=dict(epochs=[2, 3], lr=[1e-3, 2.5e-4]))]
    train(trainer, dataset, f"lr_{trainer}", "--epochs", "1", "--overwrite")  # asked: replaced
    assert load_checkpoint(str(path), kind)["epoch"] == 1


def test_resume_on_another_vae_names_the_vae_it_was_trained_on(dataset, trained):
    train("vae", dataset, "vae_b", "--epochs", "1", "--seed", "1")
    own = trained["vae"] / "vae.pt"
    latent = ["--hidden", "32", "--depth", "1", "--time_dim", "16", "--timesteps", "50", "--batch_size", "4",
              "--quiet", "--run_name", "on_kept"]
    run_script("train_diffusion.py", "--checkpoint_dir", dataset, *latent, "--epochs", "1", "--vae_path", own)
    refused = run_script("train_diffusion.py", "--checkpoint_dir", dataset, *latent, "--epochs", "2", "--resume",
                         "--vae_path", dataset / "vae_b" / "vae.pt", check=False)
    line = one_error_line(refused)
    assert refused.returncode == 1 and f"--vae_path {own}" in line


def test_a_ctrl_c_during_the_best_write_leaves_the_best_in_vae_pt(dataset, monkeypatch):
    """A Ctrl-C that lands while vae.pt is being replaced by a better model (here raised from inside
    torch.save on the second write of vae.pt) leaves vae.pt holding the lowest validation loss
    reached, and the report of the resumed run names the epoch it loaded."""
    real_save, writes = torch.save, []

    def save(obj, f, *args, **kwargs):
        if os.path.basename(str(f)).startswith("vae.pt.tmp"):
            writes.append(f)
            if len(writes) == 2:
                raise KeyboardInterrupt
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    flags = ["--epochs", "6", "--save_every", "1"]
    assert train("vae", dataset, "best", *flags, check=False).returncode == 130
    assert len(writes) == 3  # the interrupted write, then the Ctrl-C handler's
    out = dataset / "best"

    def saved():
        history = load_checkpoint(str(out / "vae_last.pt"), VAE_KIND)["history"]
        kept = load_checkpoint(str(out / "vae.pt"), VAE_KIND)["history"][-1]
        return history, kept

    history, kept = saved()
    assert kept["val_loss"] == min(h["val_loss"] for h in history) and kept["epoch"] == len(history) >= 2
    finished = train("vae", dataset, "best", *flags, "--resume")
    history, kept = saved()
    lowest = min(history, key=lambda h: h["val_loss"])
    assert len(history) == 6 and kept == lowest
    assert f"vae.pt: epoch {lowest['epoch']}, validation loss {lowest['val_loss']:.4f}" in finished.stdout
    assert json.load(open(out / "final.json"))["kept_epoch"] == lowest["epoch"]


@pytest.mark.parametrize("script, flag, value", [
    ("Gen_Diffusion_Dataset.py", "--save_every", "0"),
    ("Gen_Diffusion_Dataset.py", "--runs", "0"),
    ("Gen_Diffusion_Dataset.py", "--runs", "-2"),
    ("Gen_Diffusion_Dataset.py", "--ckpts_per_run", "0"),
    ("Gen_Diffusion_Dataset.py", "--batch_size", "0"),
    ("Gen_Diffusion_Dataset.py", "--lr", "0"),
    ("train_vae.py", "--batch_size", "0"),
    ("train_vae.py", "--save_every", "0"),
    ("train_vae.py", "--epochs", "0"),
    ("train_diffusion.py", "--batch_size", "0"),
    ("train_diffusion.py", "--epochs", "0"),
    ("evaluate_generated.py", "--test_images", "-5"),
    ("evaluate_generated.py", "--train_models", "0"),
])
def test_an_impossible_value_is_one_argparse_line(tmp_path, script, flag, value):
    where = "--model_path" if script == "evaluate_generated.py" else "--checkpoint_dir"
    out = run_script(script, where, tmp_path / "x", flag, value, check=False)
    line = one_error_line(out)
    assert out.returncode == 2 and f"argument {flag}: must be" in line and f"not {value}" in line
    assert not (tmp_path / "x").exists()


def test_test_images_0_still_means_all_and_resume_with_overwrite_is_refused(tmp_path):
    import evaluate_generated
    assert evaluate_generated.parse_args(["--model_path", "x", "--test_images", "0"]).test_images == 0
    out = run_script("train_vae.py", "--checkpoint_dir", tmp_path, "--resume", "--overwrite", check=False)
    assert out.returncode == 2 and "not allowed with argument" in one_error_line(out)


def test_run_files_of_another_recipe_are_refused_by_name(dataset, tmp_path):
    """A hand edit of settings.json (lr 0.2 -> 0.1) would put runs of two recipes in one dataset:
    --assemble and continuing with the edited value both refuse, naming a run file and the
    setting; a run file from before the recipe record is accepted with a note."""
    folder = tmp_path / "edited"
    folder.mkdir()
    for name in ["settings.json", cd.run_filename(0), cd.run_filename(1)]:
        (folder / name).write_bytes((dataset / name).read_bytes())
    settings = json.loads((folder / "settings.json").read_text())
    made_at = settings["train_config"]["lr"]
    settings["train_config"]["lr"] = made_at / 2
    (folder / "settings.json").write_text(json.dumps(settings))
    for extra in (["--assemble"], ["--runs", "3", "--lr", str(made_at / 2)]):
        out = gen(folder, *extra, check=False)
        line = one_error_line(out)
        assert out.returncode == 1 and cd.run_filename(0) in line and "train_config.lr" in line
    assert cd.completed_runs(str(folder)) == [0, 1] and not (folder / cd.MANIFEST).exists()  # nothing trained

    (folder / "settings.json").write_bytes((dataset / "settings.json").read_bytes())
    old = torch.load(folder / cd.run_filename(0), weights_only=True)
    del old["recipe"]
    torch.save(old, folder / cd.run_filename(0))
    out = gen(folder, "--assemble")
    assert "predate the record of their recipe (run_0000.pt)" in out.stdout
    assert len(cd.load_manifest(str(folder))["runs"]) == 2


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_full_disk_is_one_line_naming_the_file(dataset, tmp_path):
    """The write goes to /dev/full (a link at the temporary name the atomic write uses), which
    fails as a full disk does: one line naming the file and the bytes it needs, nothing left."""
    out = dataset / "full"
    out.mkdir()
    target = out / "diffusion.pt"
    os.symlink("/dev/full", f"{target}.tmp{os.getpid()}")
    failed = train("diffusion", dataset, "full", "--epochs", "1", check=False)
    line = one_error_line(failed)
    assert failed.returncode == 1 and str(target) in line and "no space left" in line and "bytes" in line
    assert sorted(os.listdir(out)) == []  # no partial file, and the link is gone
    path = tmp_path / "report.json"
    os.symlink("/dev/full", f"{path}.tmp{os.getpid()}")
    with pytest.raises(CheckpointError, match=rf"could not write {path}: no space left .* needs about \d+ bytes"):
        write_json(str(path), dict(a=1))


def test_an_unsafe_file_is_refused_with_its_reason(dataset, tmp_path):
    """torch's message for a pickled object opens with how to load it anyway; the line keeps what
    the object is, the reason it is refused."""
    evil = tmp_path / "evil.pt"
    torch.save(dict(kind=VAE_KIND, config=argparse.Namespace(lr=1)), evil)
    out = run_script("train_diffusion.py", "--checkpoint_dir", dataset, "--run_name", "evil", "--vae_path", evil,
                     "--epochs", "1", check=False)
    line = one_error_line(out)
    assert out.returncode == 1 and str(evil) in line and "argparse.Namespace" in line and "could run code" in line
