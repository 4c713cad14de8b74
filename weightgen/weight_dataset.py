"""The checkpoint dataset as training data for the generators: aligned, standardised, split.

    ds = WeightDataset("checkpoints/Toy_CNN", align="weights", holdout="checkpoints")
    ds.train, ds.val          # standardised flat weights, [n, n_params]
    ds.standardizer           # per-tensor mean/std, saved inside every model checkpoint that uses it
"""
import os

import torch

from weightgen import checkpoint_dataset as cd
from weightgen.alignment import align_method, align_runs
from weightgen.cifar10 import DEFAULT_DATA_DIR, load_cifar10, split_validation, standardize
from weightgen.model_io import atomic_write
from weightgen.standardizer import Standardizer
from weightgen.tinynn import FlatLayout

ALIGNMENT_FILES = dict(weights="alignment.pt", activations="alignment_activations.pt")
# Training images whose channel outputs activation matching compares (as experiments.midpoints
# --match_images): 1,000 images x 32 x 32 pixels are ~1M numbers a channel, far more than the
# 16-40 channels of a layer need to be told apart.
ALIGN_IMAGES = 1000
# The constructor arguments that decide the split; recorded in every model trained on it.
SPLIT_KEYS = ("align", "min_acc", "holdout", "val_fraction", "val_runs", "seed", "max_train")


def _alignment_key(manifest, reference_run, method):
    """What the cached permutations depend on: the runs (and their last checkpoints), and for
    activation matching the images."""
    key = dict(reference_run=reference_run, runs=[[r["run"], r["seed"], r["steps"]] for r in manifest["runs"]])
    if method == "activations":
        key["images"] = ALIGN_IMAGES
    return key


def training_images(manifest, data, n):
    """The first n training images outside the dataset's validation split (the split its runs
    were trained with), uint8: never the validation or test images."""
    train, _ = split_validation(len(data.train_labels), manifest["data"]["val_size"], manifest["data"]["val_seed"])
    return data.train_images[train[:n]]


def alignment_images(manifest, data_dir):
    """The standardised images activation matching compares channels on; a missing data folder
    is one DataError that names it (no download here: the scripts that train have loaded it)."""
    return standardize(training_images(manifest, load_cifar10(data_dir, download=False), ALIGN_IMAGES))


def last_of_each_run(weights, run_of, runs):
    """{run: its last checkpoint's flat weights}: alignment matches runs on their final networks."""
    return {r: weights[(run_of == r).nonzero()[-1].item()] for r in runs}


def apply_alignment(weights, run_of, index):
    """Permute, in place, every checkpoint of each run in `index` ({run: flat index})."""
    for run, idx in index.items():
        rows = (run_of == run).nonzero().squeeze(1)
        weights[rows] = weights[rows][:, idx]


def runs_with_checkpoints(manifest):
    """Run ids in manifest order, leaving out runs that never reached --min_acc."""
    have = {c["run"] for c in manifest["checkpoints"]}
    return [r["run"] for r in manifest["runs"] if r["run"] in have]


def load_alignment(folder, manifest, weights, layout, method, images):
    """{run: flat index} aligning every run to the first run by `method` ("weights" or
    "activations"; `images()` gives the images the latter needs); cached in the dataset folder
    (alignment.pt, alignment_activations.pt) because weight matching takes seconds per run and
    every training run would redo it."""
    runs = runs_with_checkpoints(manifest)
    reference = runs[0]
    key = _alignment_key(manifest, reference, method)
    path = os.path.join(folder, ALIGNMENT_FILES[method])
    if os.path.exists(path):
        try:
            cached = torch.load(path, map_location="cpu", weights_only=True)
            if cached["key"] == key:
                return cached["index"]
        except Exception:  # a broken cache is recomputed, not fatal
            pass
    run_of = torch.tensor([c["run"] for c in manifest["checkpoints"]])
    index = align_runs(last_of_each_run(weights, run_of, runs), layout, manifest["tinynn"], reference, method,
                       images() if method == "activations" else None)
    atomic_write(path, lambda tmp: torch.save(dict(key=key, index=index), tmp))
    return index


class WeightDataset:
    """Flat weights of a checkpoint dataset with a validation split.

    align: how runs are aligned to the first run: "weights" (weight matching), "activations"
    (the correlation of channel outputs on ALIGN_IMAGES training images read from `data_dir`)
    or "none" (True and False, as older checkpoints recorded it, mean weights and none).
    holdout="checkpoints": a random `val_fraction` of all checkpoints is held out;
    holdout="runs": the last `val_runs` runs are held out whole (a harder test: unseen basins).
    max_train: keep only this many training checkpoints, drawn at random (the validation split
    is unchanged, so models trained on fewer checkpoints are judged on the same ones).
    The standardiser is fitted on the training split only.
    """

    def __init__(self, folder, align="weights", min_acc=None, holdout="checkpoints", val_fraction=0.1,
                 val_runs=1, seed=0, max_train=None, data_dir=DEFAULT_DATA_DIR):
        self.folder, self.data_dir = folder, data_dir
        align = align_method(align)
        self.manifest = cd.load_manifest(folder)
        self.layout = FlatLayout.from_json(self.manifest["layout"])
        self.tinynn_config = self.manifest["tinynn"]
        weights = cd.load_weights(folder, self.manifest)
        records = self.manifest["checkpoints"]
        run_of = torch.tensor([c["run"] for c in records])
        # Every run is aligned to the reference run's last checkpoint, which alignment leaves as it is.
        if not len(records):
            raise cd.DatasetError(f"{folder} holds no checkpoints: no run reached its --min_acc")
        reference = runs_with_checkpoints(self.manifest)[0]
        self.reference = last_of_each_run(weights, run_of, [reference])[reference].clone()
        if align != "none":
            apply_alignment(weights, run_of, load_alignment(folder, self.manifest, weights, self.layout, align,
                                                            self._alignment_images))
        keep = torch.ones(len(records), dtype=torch.bool)
        if min_acc is not None:
            keep = torch.tensor([c["val_acc"] >= min_acc for c in records])
        val = self._val_mask(run_of, holdout, val_fraction, val_runs, seed) & keep
        train = ~val & keep
        if max_train is not None and max_train < train.sum():
            rows = train.nonzero().squeeze(1)
            drop = rows[torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed))[max_train:]]
            train[drop] = False
        if train.sum() == 0 or val.sum() == 0:
            raise cd.DatasetError(f"{folder}: the split leaves {int(train.sum())} training and "
                                  f"{int(val.sum())} validation checkpoints; change --min_acc or the hold-out")
        self.train_records = [records[i] for i in train.nonzero().squeeze(1).tolist()]
        self.val_records = [records[i] for i in val.nonzero().squeeze(1).tolist()]
        self.standardizer = Standardizer.fit(weights[train], self.layout)
        self.train = self.standardizer.standardize(weights[train])
        self.val = self.standardizer.standardize(weights[val])
        self.description = dict(folder=os.path.abspath(folder), align=align, min_acc=min_acc, holdout=holdout,
                                val_fraction=val_fraction, val_runs=val_runs, seed=seed, max_train=max_train,
                                n_train=len(self.train), n_val=len(self.val))

    def run_ends(self):
        """The last training checkpoint of every training run (z-space, [runs, n_params]): one
        network per run, to tell which run a network is closest to."""
        run_of = torch.tensor([r["run"] for r in self.train_records])
        return torch.stack(list(last_of_each_run(self.train, run_of, run_of.unique().tolist()).values()))

    def _alignment_images(self):
        return alignment_images(self.manifest, self.data_dir)

    @classmethod
    def from_description(cls, description, folder=None, data_dir=DEFAULT_DATA_DIR):
        """The very split a model was trained on, rebuilt from the `description` it recorded
        (`folder` overrides the recorded path when the dataset has moved). Every consumer of a
        trained model (diffusion on a VAE's latents, sampling, evaluation) builds its data this
        way, so "training checkpoints" always means the ones the generator saw."""
        split = {k: description[k] for k in SPLIT_KEYS if k in description}  # max_train came later
        ds = cls(folder or description["folder"], **split, data_dir=data_dir)
        found = (ds.description["n_train"], ds.description["n_val"])
        if found != (description["n_train"], description["n_val"]):
            raise cd.DatasetError(f"{ds.folder} has changed since the model was trained: its split now has "
                                  f"{found[0]} training / {found[1]} held-out checkpoints, the model saw "
                                  f"{description['n_train']} / {description['n_val']}")
        return ds

    def other_dataset(self, folder):
        """(z-space weights [n, n_params], checkpoint records) of every checkpoint of another
        dataset made with the same recipe (runs from fresh seeds), its runs aligned to this
        dataset's reference run and standardised as this dataset is, so that distances compare."""
        manifest = cd.load_manifest(folder)
        diff = cd.recipe_differences(self.manifest, manifest)
        if diff:
            raise cd.DatasetError(f"{folder} was made with another recipe than {self.folder} "
                                  f"({'; '.join(diff)[:400]}): make it with the same flags and another --seed")
        shared = {r["seed"] for r in self.manifest["runs"]} & {r["seed"] for r in manifest["runs"]}
        if shared:
            raise cd.DatasetError(f"{folder} shares {len(shared)} run seed(s) with {self.folder}: its runs are not "
                                  f"new to the generator; make it with another --seed")
        weights, records = cd.load_weights(folder, manifest), manifest["checkpoints"]
        if not len(weights):
            raise cd.DatasetError(f"{folder} holds no checkpoints")
        run_of = torch.tensor([c["run"] for c in records])
        last = last_of_each_run(weights, run_of, sorted(set(run_of.tolist())))
        apply_alignment(weights, run_of, self.alignment_to_reference(last))
        return self.standardizer.standardize(weights), records

    def alignment_to_reference(self, networks):
        """{key: flat index} aligning each network of `networks` ({key: flat weights}) to this
        dataset's reference run by its alignment method ({} when it has none)."""
        method = self.description["align"]
        if method == "none":
            return {}
        index = align_runs({"reference": self.reference, **networks}, self.layout, self.tinynn_config, "reference",
                           method, self._alignment_images() if method == "activations" else None)
        index.pop("reference")
        return index

    def aligned(self, weights):
        """Flat weights [n, n_params] of networks from elsewhere, each aligned to the reference run
        (distances to the training checkpoints mean nothing across permutations)."""
        index = self.alignment_to_reference(dict(enumerate(weights)))
        return torch.stack([w[index[i]] if i in index else w for i, w in enumerate(weights)])

    @staticmethod
    def _val_mask(run_of, holdout, val_fraction, val_runs, seed):
        if holdout == "runs":
            runs = sorted(set(run_of.tolist()))
            if not 0 < val_runs < len(runs):
                raise cd.DatasetError(f"cannot hold out {val_runs} of {len(runs)} runs")
            return torch.isin(run_of, torch.tensor(runs[-val_runs:]))
        if holdout != "checkpoints":
            raise ValueError(f"holdout must be 'checkpoints' or 'runs', not {holdout!r}")
        g = torch.Generator().manual_seed(seed)
        n_val = max(1, round(val_fraction * len(run_of)))
        mask = torch.zeros(len(run_of), dtype=torch.bool)
        mask[torch.randperm(len(run_of), generator=g)[:n_val]] = True
        return mask
