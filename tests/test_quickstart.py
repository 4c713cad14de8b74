"""The quickstart, at a tiny size and as a user starts it (its own process): every step runs and
the report is written."""
import json

from conftest import DATA_DIR, TEST_IMAGES, TINY_VAE_FLAGS, run_process
from model_io import DIFFUSION_KIND, load_checkpoint


def test_quickstart_runs_end_to_end(tmp_path):
    name = str(tmp_path / "qs")
    out = run_process("quickstart.py", "--name", name, "--runs", "2", "--ckpts_per_run", "4", "--min_acc", "0.2",
                     "--vae_epochs", "2", "--diffusion_epochs", "2", "--num_models", "3", "--train_models", "5",
                     "--fresh_ckpts_per_run", "4", "--baseline_models", "2", "--test_images", TEST_IMAGES,
                     "--data_dir", DATA_DIR, "--no_download", "--device", "cpu",
                     "--dataset_flags", "--train_size 2000 --val_size 500 --epochs 2 --save_every 3 --batch_size 64",
                     "--vae_flags", TINY_VAE_FLAGS, "--diffusion_flags", "--ema 0.99 --save_every 1")
    assert out.stdout.count("$ python Gen_Diffusion_Dataset.py") == 2  # the dataset and the fresh set
    for script in ["Gen_Diffusion_Dataset.py", "train_vae.py", "train_diffusion.py", "sample.py",
                   "evaluate_generated.py"]:
        assert f"$ python {script}" in out.stdout  # each command is shown as it runs
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
