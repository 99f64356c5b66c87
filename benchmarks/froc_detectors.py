"""Every detector on the same 50 unseen phantoms (3328×4084, seeds never trained on), each
scanned as `mccscan scan` does: cluster FROC with 95% bootstrap CIs over images, the
stress metrics (isolated 1–2-MC sites and benign lookalike calcifications that produce a
cluster), and the scan time.

    python benchmarks/froc_detectors.py [NAME=WEIGHTS.pt ...] [--phantoms 50] [--out docs/froc-detectors.png]

Without arguments: the shipped detectors (mc, paper). Writes the plot and prints a
markdown table; the numbers go in the README.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mccscan.evaluate import EVAL_PHANTOM_SEEDS, evaluate_on_phantoms
from mccscan.metrics import FROC_FP_RATES, by_kind_text
from mccscan.plots import plot_cluster_frocs
from mccscan.weights import DETECTORS, load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("weights", nargs="*", help="NAME=PATH of extra weights to compare")
    parser.add_argument("--phantoms", type=int, default=len(EVAL_PHANTOM_SEEDS))
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--out", default="docs/froc-detectors.png")
    args = parser.parse_args()
    runs = {name: path for name, path in DETECTORS.items()}
    runs.update(dict(w.split("=", 1) for w in args.weights))
    results = {}
    for name, path in runs.items():
        results[name] = evaluate_on_phantoms(load_model(path), args.phantoms, n_bootstrap=args.bootstrap,
                                             progress=True)
        brief = {k: v for k, v in results[name].items() if k not in ("thresholds", "sensitivity", "fp_per_image")}
        print(f"{name}: {json.dumps(brief)}", flush=True)
    plot_cluster_frocs(results, args.out, f"FROC on {args.phantoms} unseen phantoms "
                                          f"({next(iter(results.values()))['clusters']} clusters)")
    print("\n| detector | " + " | ".join(f"sens. at {f} FP/img (95% CI)" for f in FROC_FP_RATES)
          + " | isolated sites → cluster | lookalikes → cluster | FP/img at its operating point | scan s |")
    print("|---|" + "---|" * (len(FROC_FP_RATES) + 4))
    for name, r in results.items():
        cells = [f"{r['sensitivity_at_fp'][str(f)]['value']:.2f} ({r['sensitivity_at_fp'][str(f)]['ci95'][0]:.2f}–"
                 f"{r['sensitivity_at_fp'][str(f)]['ci95'][1]:.2f})" for f in FROC_FP_RATES]
        iso, benign, op = r["isolated_sites"], r["lookalike_sites"], r["operating_point"]
        print(f"| {name} | " + " | ".join(cells) + f" | {iso['with_a_cluster']}/{iso['sites']} "
              f"({iso['fraction']:.1%}) | {benign['with_a_cluster']}/{benign['sites']} ({benign['fraction']:.1%}) | "
              f"{op['fp_per_image']:.2f} (sens. {op['found']}/{op['clusters']}) | "
              f"{r['scan_s_median']:.2f} |")
    for name, r in results.items():
        print(f"lookalikes → cluster by kind, {name}: {by_kind_text(r['lookalike_sites'])}")
    Path(args.out).with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
