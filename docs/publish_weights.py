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
from mccscan.evaluate import evaluate_on_dataset, froc, predict_patches, truth_image
from mccscan.models import DEMO_WEIGHTS, card_path, file_sha256, load_model
from mccscan.patches import AnnotatedImage, build_phantom_patch_set, polygon_crop

ISOLATED_MC_SEEDS = range(90_100, 90_110)  # phantoms used by no dataset and no test
FROC_SEEDS = range(90_200, 90_220)


def _phantom_truth(model, seed: int):
    """A fresh 2560×3328 phantom with 1–4 clusters as a FROC test image."""
    ph = make_phantom(seed, size="small", n_clusters=1 + seed % 4)
    ann = AnnotatedImage(ph.image, ph.breast_mask, np.array([(m.x, m.y) for m in ph.mcs]).reshape(-1, 2),
                         [polygon_crop(c.outline, ph.image.shape) for c in ph.clusters])
    return truth_image(model, f"phantom-{seed}", ann)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("dataset_dir", type=Path)
    parser.add_argument("--dataset-command", required=True)
    parser.add_argument("--phantom-seeds", default="0-23", help="the seeds the dataset's phantoms were drawn from")
    args = parser.parse_args()

    loaded = load_model(args.run_dir / "best.pt")
    with tempfile.TemporaryDirectory() as tmp:
        evaluation = evaluate_on_dataset(loaded.model, args.dataset_dir, tmp)
    unseen = [_phantom_truth(loaded.model, seed) for seed in FROC_SEEDS]
    unseen_froc = froc(unseen)
    stress = build_phantom_patch_set(ISOLATED_MC_SEEDS, rng_seed=1, isolated_mc_negatives=True,
                                     positives_per_cluster=0)
    called = float((predict_patches(loaded.model, stress.patches) >= 0.5).mean())
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
                                               "patches": len(stress.labels), "fraction": called}}
    shutil.copyfile(args.run_dir / "best.pt", DEMO_WEIGHTS)
    card["sha256"] = file_sha256(DEMO_WEIGHTS)
    card_path(DEMO_WEIGHTS).write_text(json.dumps(card, indent=2) + "\n")
    print(f"sha256 {card['sha256']}; best epoch {card['epoch']}")
    for k, m in pl["metrics"].items():
        print(f"{k:<12}{m['value']:.3f} ({m['ci95'][0]:.3f}–{m['ci95'][1]:.3f})")
    print("confusion", pl["confusion"], "ECE", round(pl["calibration"]["ece"], 4))
    print("FROC", card["evaluation"]["froc"])
    print("FROC on unseen phantoms", card["evaluation"]["froc_unseen_phantoms"])
    print(f"isolated-MC patches called MCC: {called:.3f} of {len(stress.labels)}")


if __name__ == "__main__":
    main()
