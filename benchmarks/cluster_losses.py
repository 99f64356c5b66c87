"""Where the cluster detector loses clusters: stage by stage, on whole validation phantoms.

    python benchmarks/cluster_losses.py [--phantoms 20] [--pixel-spacing 0.07] [--weights mc.pt] [--per-cluster]
    python benchmarks/cluster_losses.py --tissue CASES/sfm-benign-0 --weights runs/holdout-benign/mc.pt

For each phantom cluster (validation seeds: never tested on, never trained on), counts how
many of its MCs survive each stage of `mccscan.mcdetect`: a candidate at all (normalised
high-pass above a lower SNR of 2.5), a candidate at the weights' SNR, P(MC) ≥ the weights'
MC floor; and the P of its 3rd-best MC, which must reach the cluster threshold (3 MCs make
a cluster). A cluster is lost at the first stage that leaves fewer than 3 of its MCs. With
--pixel-spacing, each phantom is delivered at that spacing and brought back to 70 µm, as
`mccscan evaluate` does. The breast mask is the phantom's own, so the mask is not measured.
With --tissue, the clusters are the ones `benchmarks/real_tissue.py` inserts into those
films (the same draws), so its sensitivity can be read against the stages here; a line
before the stages counts, for reference, the clusters with 3 MCs whose signal alone stands
above the film's noise (`evaluate.cluster_signal_snr`; not a stage: noise can lift a
fainter MC over the candidate SNR, or push a brighter one under).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

LOW_SNR = 2.5  # what a candidate stage with a lower threshold could still reach


def cluster_stages(mcs, clusters, image: np.ndarray, breast: np.ndarray, loaded, image_id) -> list[dict]:
    """Per cluster: MCs that are candidates (at LOW_SNR and at the weights' SNR), that reach
    the MC floor, and the P of the 3rd-best MC. The candidate stage is the weights' own."""
    from mccscan.mcdetect import find_candidates, score_candidates
    from mccscan.scan import detector_options
    from mccscan.train_detector import mc_reach_px

    options = detector_options(loaded)
    snr, floor = options["candidate_snr"], options["mc_floor"]
    cands = find_candidates(image, breast, patch_px=loaded.model.config.patch_px, snr=LOW_SNR,
                            context_pool=loaded.model.config.context_pool, wide_sigma_px=options["wide_sigma_px"])
    p = score_candidates(loaded.model, cands.patches)
    rows = []
    for cluster in clusters:
        members = [m for m in mcs if m.cluster_id == cluster.id]
        low = at_snr = 0
        best_p = []
        for m in members:
            near = np.hypot(*(cands.xy - (m.x, m.y)).T) <= mc_reach_px(m.radius_px)
            low += bool(near.any())
            near &= cands.snr >= snr
            if near.any():
                at_snr += 1
                best_p.append(float(p[near].max()))
        best_p.sort(reverse=True)
        rows.append({"image": image_id, "cluster": cluster.id, "mcs": len(members), "low_snr": low, "snr": at_snr,
                     "floor": sum(v >= floor for v in best_p), "third_p": best_p[2] if len(best_p) >= 3 else 0.0,
                     "contrast": float(np.median([m.contrast for m in members]))})
    return rows


def tissue_rows(root: Path, inserts: int, loaded) -> list[dict]:
    """The stages on the films under `root` with the clusters real_tissue.py inserts."""
    from real_tissue import inserted_draws, read_films  # this folder: the same films and draws

    from mccscan.evaluate import cluster_signal_snr
    from mccscan.tiling import breast_mask

    paths, images = read_films(root)
    if not paths:
        raise SystemExit(f"{root}: no DICOM in it (fetch the films as real_tissue.py says)")
    rows = []
    for k, (path, image) in enumerate(zip(paths, images)):
        breast = breast_mask(image)
        for draw, tissue, mcs, clusters in inserted_draws(image, breast, k, inserts):
            stages = cluster_stages(mcs, clusters, tissue, breast, loaded, f"{path.name}-{draw}")
            for row, snr in zip(stages, cluster_signal_snr(tissue, image, breast, mcs, clusters), strict=True):
                row["signal_snr"] = float(snr)
            rows += stages
    return rows


def main() -> None:
    from mccscan.evaluate import delivered_phantom
    from mccscan.io import SCAN_PIXEL_SPACING_MM
    from mccscan.metrics import NOISE_FLOOR_SNR
    from mccscan.scan import default_threshold
    from mccscan.train_detector import VAL_SEEDS
    from mccscan.weights import load_detector

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--phantoms", type=int, default=20)
    parser.add_argument("--pixel-spacing", type=float, default=SCAN_PIXEL_SPACING_MM)
    parser.add_argument("--weights", help="mc weights (default: the shipped ones)")
    parser.add_argument("--per-cluster", action="store_true", help="also print a line per cluster")
    parser.add_argument("--tissue", type=Path, help="real films (real_tissue.py's folder) instead of phantoms")
    parser.add_argument("--inserts", type=int, default=4, help="with --tissue: insertion draws per film")
    args = parser.parse_args()
    loaded = load_detector("mc", args.weights)
    threshold = default_threshold(loaded)
    if args.tissue:
        rows = tissue_rows(args.tissue, args.inserts, loaded)
        where = f"{args.tissue} with inserted clusters"
    else:
        rows = []
        for seed in VAL_SEEDS[:args.phantoms]:
            ph, image = delivered_phantom(int(seed), pixel_spacing_mm=args.pixel_spacing)
            rows += cluster_stages(ph.mcs, ph.clusters, image, ph.breast_mask, loaded, ph.seed)
        where = f"{args.phantoms} validation phantoms delivered at {args.pixel_spacing} mm"
    if args.per_cluster:
        print("image cluster MCs candidates@2.5 candidates@SNR P>=floor 3rd-P contrast 3rd-signal-SNR")
        for r in rows:
            print(r["image"], r["cluster"], r["mcs"], r["low_snr"], r["snr"], r["floor"], f"{r['third_p']:.3f}",
                  f"{r['contrast']:.3f}", f"{r.get('signal_snr', float('nan')):.1f}")
    n = len(rows)
    stages = [("≥ 3 MCs are candidates at SNR 2.5", sum(r["low_snr"] >= 3 for r in rows)),
              ("≥ 3 MCs are candidates at the weights' SNR", sum(r["snr"] >= 3 for r in rows)),
              ("≥ 3 MCs reach the MC floor", sum(r["floor"] >= 3 for r in rows)),
              (f"3rd-best MC reaches the cluster threshold {threshold:.3f}",
               sum(r["third_p"] >= threshold for r in rows))]
    print(f"{n} clusters in {where}:")
    if args.tissue:
        above = sum(r["signal_snr"] >= NOISE_FLOOR_SNR for r in rows)
        print(f"  (for reference: ≥ 3 MCs stand ≥ {NOISE_FLOOR_SNR:g} noise units above the film on their own: "
              f"{above} ({above / n:.2f}))")
    for name, count in stages:
        print(f"  {name}: {count} ({count / n:.2f})")


if __name__ == "__main__":
    main()
