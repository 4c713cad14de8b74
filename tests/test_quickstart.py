"""The quickstart, at a tiny size and as a user starts it (its own process): every step of both
routes runs, the reports are written, and the table and verdict come from them."""
import json

from conftest import DATA_DIR, TEST_IMAGES, TINY_VAE_FLAGS, run_process
from weightgen.model_io import DIFFUSION_KIND, load_checkpoint


def test_quickstart_runs_end_to_end(tmp_path):
    name = str(tmp_path / "qs")
    out = run_process("quickstart.py", "--name", name, "--runs", "3", "--ckpts_per_run", "4", "--min_acc", "0.2",
                     "--vae_epochs", "2", "--diffusion_epochs", "2", "--num_models", "3", "--train_models", "5",
                     "--fresh_ckpts_per_run", "4", "--baseline_models", "2", "--test_images", TEST_IMAGES,
                     "--blends", "2", "--blend_steps", "3",
                     "--data_dir", DATA_DIR, "--no_download", "--device", "cpu",
                     "--dataset_flags", "--train_size 2000 --val_size 500 --epochs 2 --save_every 3 --batch_size 64",
                     "--vae_flags", TINY_VAE_FLAGS, "--diffusion_flags", "--ema 0.99 --save_every 1")
    assert out.stdout.count("$ python Gen_Diffusion_Dataset.py") == 2  # the dataset and the fresh set
    for script in ["Gen_Diffusion_Dataset.py", "train_vae.py", "train_diffusion.py", "sample.py", "sample_blends.py",
                   "evaluate_generated.py"]:
        assert f"$ python {script}" in out.stdout  # each command is shown as it runs
    assert out.stdout.count("$ python evaluate_generated.py") == 3  # latent, the trained fresh bar, blends
    report = tmp_path / "qs" / "diffusion_latent" / "quickstart_samples" / "report.md"
    text = report.read_text()
    assert text.startswith("Test accuracy") and "| fresh seeds |" in text and "| new |" in text
    assert "Ensembles" in text and (report.parent / "new_networks.png").stat().st_size > 0
    assert "quickstart done" in out.stdout
    # --test_images reaches both measuring steps
    assert json.load(open(tmp_path / "qs" / "vae" / "final.json"))["test_images"] == TEST_IMAGES
    assert json.load(open(report.parent / "report.json"))["test_images"] == TEST_IMAGES
    # --diffusion_flags reach the diffusion step
    diffusion = load_checkpoint(str(tmp_path / "qs" / "diffusion_latent" / "diffusion.pt"), DIFFUSION_KIND)
    assert diffusion["config"]["ema"] == 0.99 and diffusion["config"]["save_every"] == 1
    # one table of both routes, read from their reports, and the three-line verdict
    summary = json.load(open(tmp_path / "qs" / "quickstart.json"))
    latent = json.load(open(report.parent / "report.json"))
    blends = json.load(open(tmp_path / "qs" / "blends" / "quickstart" / "report.json"))
    rows = {r["route"].split(" (")[0].split(",")[0]: r for r in summary["routes"]}
    assert rows["latent diffusion"]["mean"] == latent["summary"]["generated"]["accuracy"]["mean"]
    assert rows["blends of 3 runs"]["mean"] == blends["summary"]["generated"]["accuracy"]["mean"]
    assert rows["blends of 3 runs"]["new_trained_bar"] == blends["bar_from"]["new"] and blends["bar_from"]["n"] == 2
    assert rows["training checkpoints"]["n"] == 5 and rows["blends of 3 runs"]["n"] == 2
    for line in ("accurate?", "new?", "ensemble?"):
        assert line in out.stdout
