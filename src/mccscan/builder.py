"""Build a patch dataset on disk from any source: `mccscan build-dataset`.

Two passes over the images, so memory holds one mammogram at a time whatever the dataset
size: the first reads each image at 70 µm, lays candidate windows (the tiling grid plus
jittered windows around clusters and MCs) and labels them by the `LabelRule`; then the
windows are split and balanced; the second pass cuts the chosen patches (×5 augmented)
straight into a memory-mapped `patches.npy`.

Protocols:
- "patient" (default): patients are split 64/16/20, then each split is balanced and
  augmented; no patient is in two splits.
- "paper": the paper's recipe: windows from all images are balanced, split 64/16/20 at
  patch level (per class), then augmented inside each split; a patient can be in several
  splits, which inflates test accuracy — every output says so.

Output in the folder: `patches.npy` (uint8 N×144×144, `np.load(..., mmap_mode="r")`),
`manifest.csv` (one row per patch), `card.json` (counts, patients, skipped images and
why, the rule and the protocol) and `contact_sheet.png`. The same inputs and seed give
byte-identical files.
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from mccscan.dataset_dir import MANIFEST_COLUMNS, SPLITS
from mccscan.datasets import read_source
from mccscan.datasets.base import DatasetIndex, MammogramRecord, Skipped
from mccscan.errors import InputError
from mccscan.io import SCAN_PIXEL_SPACING_MM, MammogramError
from mccscan.patches import (AUGMENTATIONS, LabelRule, Window, annotate, balanced_indices, labelled_windows,
                             read_record)
from mccscan.tiling import PATCH_SIZE_PX

PROTOCOLS = ("patient", "paper")
SPLIT_FRACTIONS = (0.64, 0.16, 0.20)
@dataclass
class _Chosen:
    image: int  # index into the used records
    window: Window
    split: str


def _split_counts(n: int) -> tuple[int, int, int]:
    """64/16/20 of n, with at least one in each split when n ≥ 3."""
    n_train, n_val = round(n * SPLIT_FRACTIONS[0]), round(n * SPLIT_FRACTIONS[1])
    if n >= 3:
        n_val = max(n_val, 1)
        n_train = max(1, min(n_train, n - n_val - 1))
    return n_train, n_val, n - n_train - n_val


def _balance(windows: list[tuple[int, Window]], rng: np.random.Generator) -> list[tuple[int, Window]]:
    """`balanced_indices` over (image, window) pairs."""
    return [windows[i] for i in balanced_indices(np.array([w.label for _, w in windows]), rng)]


def build_dataset(index: DatasetIndex, out_dir: str | Path, *, protocol: str = "patient", seed: int = 0,
                  rule: LabelRule = LabelRule(), augment: bool = True, jitter_per_cluster: int = 8,
                  insert_synthetic: int = 0, progress: bool = False) -> dict:
    """Write the patch dataset of `index` into `out_dir`; returns the dataset card.

    `insert_synthetic` > 0 puts that many phantom clusters into each normal mammogram
    (`annotate`), for exact positives on real tissue without annotations."""
    from tqdm import tqdm

    if protocol not in PROTOCOLS:
        raise InputError(f"protocol must be one of {PROTOCOLS}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    skipped = list(index.skipped)
    used: list[MammogramRecord] = []
    windows: list[tuple[int, Window]] = []
    tally = {"positive": 0, "negative": 0, "ambiguous_left_out": 0, "too_little_breast": 0}
    inserted: list[int] = []  # used images that received synthetic clusters

    # pass 1: label candidate windows, image by image
    for record in tqdm(index.records, desc="labelling", unit="img", disable=not progress):
        if record.unlocated_findings:
            skipped.append(Skipped(str(record.image_path), "finding without a location (image-level label only): "
                                   + "; ".join(record.unlocated_findings)))
            continue
        try:
            ann = annotate(record, insert_synthetic, (seed, len(used)))
        except MammogramError as exc:
            skipped.append(Skipped(str(record.image_path), exc.problem_and_fix()))
            continue
        labelled = labelled_windows(ann, rule, rng, jitter_per_cluster)
        for w in labelled:
            key = {1: "positive", 0: "negative", -1: "ambiguous_left_out", -2: "too_little_breast"}[w.label]
            tally[key] += 1
        windows += [(len(used), w) for w in labelled if w.label in (0, 1)]
        used.append(record)
        if insert_synthetic and not record.annotated:
            inserted.append(len(used) - 1)

    # split and balance
    chosen: list[_Chosen] = []
    if protocol == "patient":
        patients = sorted({r.patient_id for r in used})
        order = [patients[i] for i in rng.permutation(len(patients))]
        n_train, n_val, _ = _split_counts(len(order))
        split_of = {p: SPLITS[0] if i < n_train else SPLITS[1] if i < n_train + n_val else SPLITS[2]
                    for i, p in enumerate(order)}
        for split in SPLITS:
            part = [w for w in windows if split_of[used[w[0]].patient_id] == split]
            chosen += [_Chosen(i, w, split) for i, w in _balance(part, rng)]
    else:
        balanced = _balance(windows, rng)
        for label in (1, 0):
            members = [w for w in balanced if w[1].label == label]
            order = rng.permutation(len(members))
            n_train, n_val, _ = _split_counts(len(members))
            for rank, j in enumerate(order):
                split = SPLITS[0] if rank < n_train else SPLITS[1] if rank < n_train + n_val else SPLITS[2]
                chosen.append(_Chosen(members[j][0], members[j][1], split))
    chosen.sort(key=lambda c: (SPLITS.index(c.split), c.image, c.window.y, c.window.x))

    # pass 2: cut the patches straight into the memory-mapped array
    augmentations = list(AUGMENTATIONS) if augment else ["identity"]
    n_rows = len(chosen) * len(augmentations)
    size = PATCH_SIZE_PX
    patches = np.lib.format.open_memmap(out_dir / "patches.npy", mode="w+", dtype=np.uint8,
                                        shape=(n_rows, size, size))
    manifest = []
    by_image: dict[int, list[int]] = {}
    for k, c in enumerate(chosen):
        by_image.setdefault(c.image, []).append(k)
    for image_idx in tqdm(sorted(by_image), desc="cutting", unit="img", disable=not progress):
        image = read_record(used[image_idx], insert_synthetic, (seed, image_idx))[0]  # no masks re-read
        image8 = np.round(image * 255).astype(np.uint8)
        for k in by_image[image_idx]:
            w = chosen[k].window
            patch = image8[w.y:w.y + size, w.x:w.x + size]
            for a, name in enumerate(augmentations):
                patches[k * len(augmentations) + a] = AUGMENTATIONS[name](patch)
    for k, c in enumerate(chosen):
        record = used[c.image]
        for a, name in enumerate(augmentations):
            manifest.append([k * len(augmentations) + a, c.split, c.window.label, record.image_id, record.patient_id,
                             c.window.x, c.window.y, name, c.window.n_mcs, c.window.cluster_overlap,
                             int(c.image in inserted), _relative(record.image_path, index.root)])
    patches.flush()
    del patches
    with open(out_dir / "manifest.csv", "w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(MANIFEST_COLUMNS)
        writer.writerows(manifest)

    card = _card(index, used, chosen, skipped, tally, protocol, seed, rule, augmentations, jitter_per_cluster)
    card["synthetic_clusters_inserted"] = {
        "clusters_per_normal_image": insert_synthetic, "images": len(inserted),
        "note": "phantom MC clusters drawn into normal mammograms at known places (mccscan.datasets.phantom."
                "insert_clusters); their positives are synthetic lesions on real tissue" if inserted else ""}
    (out_dir / "card.json").write_text(json.dumps(card, indent=1) + "\n")
    contact_sheet(out_dir / "patches.npy", manifest, out_dir / "contact_sheet.png")
    return card


def _relative(path: Path, root: Path) -> str:
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _card(index, used, chosen, skipped, tally, protocol, seed, rule, augmentations, jitter) -> dict:
    counts, patients, images = {}, {}, {}
    for split in SPLITS:
        members = [c for c in chosen if c.split == split]
        n_aug = len(augmentations)
        counts[split] = {"mcc": sum(c.window.label == 1 for c in members) * n_aug,
                         "normal": sum(c.window.label == 0 for c in members) * n_aug}
        patients[split] = len({used[c.image].patient_id for c in members})
        images[split] = len({c.image for c in members})
    per_split = {s: {used[c.image].patient_id for c in chosen if c.split == s} for s in SPLITS}
    shared = sorted(set.union(*(per_split[a] & per_split[b] for a, b in
                                (("train", "val"), ("train", "test"), ("val", "test")))))
    synthetic = index.source == "phantom"
    return {
        "dataset": "mccscan patch dataset",
        "source": index.source, "root": str(index.root), "synthetic": synthetic,
        "data": ("synthetic phantom (mccscan.datasets.phantom), not patient data" if synthetic
                 else f"{index.source} read from {index.root}"),
        "protocol": protocol,
        "protocol_note": ("paper: balanced, split 64/16/20 at patch level, augmented inside each split; "
                          "patients can appear in several splits" if protocol == "paper" else
                          "patient: patients split 64/16/20, then balanced and augmented inside each split"),
        "seed": seed, "patch_size_px": PATCH_SIZE_PX, "pixel_spacing_mm": SCAN_PIXEL_SPACING_MM,
        "label_rule": asdict(rule), "jitter_per_cluster": jitter, "augmentations": augmentations,
        "counts": counts, "patients": patients, "images": images,
        "patients_in_several_splits": len(shared),
        "windows_labelled": tally,
        "images_used": len(used), "images_skipped": [asdict(s) for s in skipped],
        "reader_notes": index.notes,
        "files": {"patches": "patches.npy", "manifest": "manifest.csv", "contact_sheet": "contact_sheet.png"},
    }


def card_table(card: dict) -> str:
    """The card's counts as a printed table."""
    lines = [f"{'split':<8}{'MCC':>8}{'normal':>8}{'total':>8}{'patients':>10}{'images':>8}"]
    for split in SPLITS:
        c = card["counts"][split]
        lines.append(f"{split:<8}{c['mcc']:>8}{c['normal']:>8}{c['mcc'] + c['normal']:>8}"
                     f"{card['patients'][split]:>10}{card['images'][split]:>8}")
    w = card["windows_labelled"]
    lines.append(f"protocol: {card['protocol_note']}")
    lines.append(f"windows labelled: {w['positive']} MCC, {w['negative']} normal; left out: "
                 f"{w['ambiguous_left_out']} ambiguous (1–2 MCs or a cluster edge), "
                 f"{w['too_little_breast']} mostly background")
    lines.append(f"images used: {card['images_used']}; skipped: {len(card['images_skipped'])}")
    lines += [f"  skipped {s['path']}: {s['reason']}" for s in card["images_skipped"]]
    lines += [f"note: {n}" for n in card["reader_notes"]]
    return "\n".join(lines)


def contact_sheet(patches_path: Path, manifest: list[list], out_path: Path, per_class: int = 8) -> Path:
    """A PNG of sample patches, one row per class (unaugmented, spread over the dataset)."""
    patches = np.load(patches_path, mmap_mode="r")
    size, pad, caption = PATCH_SIZE_PX, 4, 16
    sheet = Image.new("L", (per_class * (size + pad) + pad, 2 * (size + pad + caption) + pad), 32)
    draw = ImageDraw.Draw(sheet)
    for row, (label, name) in enumerate(((1, "MCC"), (0, "normal"))):
        ids = [m[0] for m in manifest if m[2] == label and m[7] == "identity"]
        picks = [ids[i] for i in np.linspace(0, len(ids) - 1, min(per_class, len(ids))).astype(int)] if ids else []
        y = pad + row * (size + pad + caption)
        draw.text((pad, y), f"{name} ({len(ids)} unaugmented)", fill=230)
        for col, patch_id in enumerate(picks):
            sheet.paste(Image.fromarray(np.asarray(patches[patch_id])), (pad + col * (size + pad), y + caption))
    sheet.save(out_path)
    return out_path


def phantom_dataset(out_dir: str | Path, images: int, *, seed: int = 0, progress: bool = False) -> Path:
    """OUT/data: a patch dataset of `images` phantom mammograms written to OUT/phantom-source
    (built once, then reused); what `train` and `reproduce` use when given no data."""
    data = Path(out_dir) / "data"
    if not (data / "card.json").is_file():
        index = read_source("phantom", Path(out_dir) / "phantom-source", phantom_images=images)
        build_dataset(index, data, seed=seed, progress=progress)
    return data
