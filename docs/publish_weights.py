"""Publish a training run as the shipped demo weights, with its evaluation in the model card.

    python docs/publish_weights.py RUN_DIR DATASET_DIR --dataset-command "mccscan build-dataset ..."

Copies RUN_DIR/best.pt to src/mccscan/weights/demo.pt and writes demo.json: the run's card
plus the dataset's build command, the phantom seeds, the patch-level evaluation with
bootstrap intervals, the image-level FROC on the test mammograms, and how often patches
around isolated MCs (no cluster) are called MCC. Prints what MODEL_CARD.md should state.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

from mccscan.datasets.phantom import make_phantom
from mccscan.evaluate import evaluate_on_dataset, truth_image
from mccscan.metrics import froc
from mccscan.patches import LabelRule, annotated_truth, cut_patches, labelled_windows
from mccscan.predict import predict_patches
from mccscan.weights import DEMO_WEIGHTS, card_path, file_sha256, load_model

ISOLATED_MC_SEEDS = range(90_100, 90_110)  # phantoms used by no dataset and no test
FROC_SEEDS = range(90_200, 90_220)


def _phantom_truth(model, seed: int):
    """A fresh 2560×3328 phantom with 1–4 clusters as a FROC test image."""
    ph = make_phantom(seed, size="small", n_clusters=1 + seed % 4)
    return truth_image(model, f"phantom-{seed}", annotated_truth(ph.image, ph.breast_mask, ph.mcs, ph.clusters))


def isolated_mc_patches(seeds) -> np.ndarray:
    """Patches of windows the label rule leaves out for holding 1–2 MCs and no cluster:
    what a detector must not call MCC."""
    parts, rng = [], np.random.default_rng(1)
    for seed in seeds:
        ph = make_phantom(seed, size="small", n_clusters=int(rng.integers(2, 5)))
        ann = annotated_truth(ph.image, ph.breast_mask, ph.mcs, ph.clusters)
        windows = [w for w in labelled_windows(ann, LabelRule(), rng)
                   if w.label == -1 and w.cluster_overlap == 0 and 1 <= w.n_mcs <= 2]
        parts.append(cut_patches(ann.image, windows))
    return np.concatenate(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("dataset_dir", type=Path)
    parser.add_argument("--dataset-command", required=True)
    parser.add_argument("--phantom-seeds", default="0-23", help="the seeds the dataset's phantoms were drawn from")
    args = parser.parse_args()

    loaded = load_model(args.run_dir / "best.pt")
    with tempfile.TemporaryDirectory() as tmp:
        evaluation = evaluate_on_dataset(loaded, args.dataset_dir, tmp)
    unseen = [_phantom_truth(loaded.model, seed) for seed in FROC_SEEDS]
    unseen_froc = froc(unseen)
    stress = isolated_mc_patches(ISOLATED_MC_SEEDS)
    called = float((predict_patches(loaded.model, stress) >= 0.5).mean())
    first, last = (int(x) for x in args.phantom_seeds.split("-"))
    dataset = json.loads((args.dataset_dir / "card.json").read_text())
    pl = evaluation["patch_level"]
    card = {**loaded.card, "name": "demo", "dataset_command": args.dataset_command,
            "phantom_seeds": [first, last],
            "data": {"protocol": dataset["protocol"], "protocol_note": dataset["protocol_note"],
                     "label_rule": dataset["label_rule"], "counts": dataset["counts"],
                     "patients": dataset["patients"], "images": dataset["images"]},
            "test": {**{k: m["value"] for k, m in pl["metrics"].items()}, **pl["confusion"], "n": pl["n"]},
            "evaluation": {"patch_level": evaluation["patch_level"],
                           "froc": {k: v for k, v in evaluation["froc"].items()
                                    if k in ("images", "clusters", "sensitivity_at_fp", "skipped")},
                           "froc_unseen_phantoms": {"seeds": [FROC_SEEDS.start, FROC_SEEDS.stop - 1],
                                                    **{k: unseen_froc[k] for k in
                                                       ("images", "clusters", "sensitivity_at_fp")},
                                                    "fewest_fp_per_image": min(unseen_froc["fp_per_image"])}},
            "isolated_mc_patches_called_mcc": {"seeds": [ISOLATED_MC_SEEDS.start, ISOLATED_MC_SEEDS.stop - 1],
                                               "patches": len(stress), "fraction": called}}
    shutil.copyfile(args.run_dir / "best.pt", DEMO_WEIGHTS)
    card["sha256"] = file_sha256(DEMO_WEIGHTS)
    card_path(DEMO_WEIGHTS).write_text(json.dumps(card, indent=2) + "\n")
    print(f"sha256 {card['sha256']}; best epoch {card['epoch']}")
    for k, m in pl["metrics"].items():
        print(f"{k:<12}{m['value']:.3f} ({m['ci95'][0]:.3f}–{m['ci95'][1]:.3f})")
    print("confusion", pl["confusion"], "ECE", round(pl["calibration"]["ece"], 4))
    print("FROC", card["evaluation"]["froc"])
    print("FROC on unseen phantoms", card["evaluation"]["froc_unseen_phantoms"])
    print(f"isolated-MC patches called MCC: {called:.3f} of {len(stress)}")


if __name__ == "__main__":
    main()
