"""A built patch dataset on disk (`mccscan build-dataset`'s output), read in one place.

    patches.npy    uint8 (N, 144, 144), memory-mapped
    manifest.csv   one row per patch (MANIFEST_COLUMNS)
    card.json      counts, patients, the rule, the protocol, where the mammograms came from

`PatchDataset` parses the manifest and the card once and answers everything a trainer
or an evaluator asks of the folder: a split's patches and labels, the windows its
augmented copies came from, and the whole mammograms behind it.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from mccscan.datasets import read_source
from mccscan.errors import InputError, MissingDataError
from mccscan.patches import AnnotatedImage, annotate

SPLITS = ("train", "val", "test")
MANIFEST_COLUMNS = ["patch_id", "split", "label", "image_id", "patient_id", "x", "y", "augmentation",
                    "n_mcs", "cluster_overlap", "synthetic_clusters", "source_image"]


class PatchDataset:
    """The folder of a built patch dataset."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        for name in ("card.json", "manifest.csv", "patches.npy"):
            if not (self.folder / name).is_file():
                raise MissingDataError(f"{self.folder}: no {name}; is this a `mccscan build-dataset` folder?")
        self.card: dict = json.loads((self.folder / "card.json").read_text())
        with open(self.folder / "manifest.csv", newline="") as fh:
            self.manifest: list[dict[str, str]] = list(csv.DictReader(fh))

    def rows(self, split: str) -> list[dict[str, str]]:
        if split not in SPLITS:
            raise InputError(f"split must be one of {', '.join(SPLITS)}, not {split!r}")
        return [r for r in self.manifest if r["split"] == split]

    def load_split(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """Patches (uint8, in memory) and labels of one split."""
        rows = self.rows(split)
        if not rows:
            raise InputError(f"{self.folder}: no patches in the {split!r} split")
        ids = np.array([int(r["patch_id"]) for r in rows])
        labels = np.array([int(r["label"]) for r in rows], np.uint8)
        return np.asarray(np.load(self.folder / "patches.npy", mmap_mode="r")[ids]), labels

    def window_groups(self, split: str = "test") -> np.ndarray:
        """Per patch of a split, the window it was cut from: its augmented copies form one
        bootstrap unit."""
        keys = [(r["image_id"], r["x"], r["y"]) for r in self.rows(split)]
        return np.unique(np.array(keys), axis=0, return_inverse=True)[1].ravel()

    def split_images(self, split: str = "test", *,
                     pixel_spacing_mm: float | None = None) -> Iterator[tuple[str, AnnotatedImage]]:
        """(image_id, AnnotatedImage) for the whole mammograms behind one split, read again
        from the source the card names (for image-level evaluation)."""
        wanted = {r["image_id"] for r in self.rows(split)}
        root = Path(self.card["root"])
        if not root.is_dir():
            raise MissingDataError(f"{self.folder / 'card.json'}: the source folder {root} is not there; "
                                   "image-level evaluation needs the whole mammograms")
        index = read_source(self.card["source"], root, pixel_spacing_mm=pixel_spacing_mm)
        for record in index.records:
            if record.image_id in wanted:
                yield record.image_id, annotate(record)
