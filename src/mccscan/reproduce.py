"""The paper's experiments end to end on a built dataset: `mccscan reproduce`.

Reads top to bottom: train the proposed network with the paper's protocol, evaluate it
at patch level (with intervals) and image level (FROC), train the Table 1 rows, tune
(Hyperband over Table 2), train the Table 3 baselines and time them, draw Figs. 3–6,
then write `report.md` with every number beside the paper's. Each model trains in its
own folder and resumes there, so an interrupted run continues where it stopped.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from mccscan.builder import phantom_dataset
from mccscan.dataset_dir import PatchDataset
from mccscan.datasets.phantom import make_phantom
from mccscan.evaluate import evaluate_on_dataset
from mccscan.explain import explain
from mccscan.metrics import patch_evaluation
from mccscan.models import flops_per_patch, parameter_count
from mccscan.paper import (BASELINES, PAPER_BEST, PAPER_EPOCHS, PAPER_MODEL, PAPER_TABLE3, PAPER_TRAIN_PATCHES,
                           TABLE1, build_model, config_by_name)
from mccscan.perf import inference_times, peak_flops
from mccscan.plots import plot_roc
from mccscan.predict import predict_patches
from mccscan.train import TrainConfig, train
from mccscan.weights import LoadedModel
from mccscan.tune import TuneConfig, architecture_table, tune


@dataclass
class ReproduceConfig:
    quick: bool = False  # minutes on a small set: few epochs, subsets, no tuning
    epochs: int = PAPER_EPOCHS
    baseline_epochs: int | None = None  # default: epochs
    table1_epochs: int | None = None  # default: epochs; 0: list Table 1 without training it
    max_train_patches: int | None = None  # subset for Table 1 rows and baselines
    tune_trials: int = 40
    tune_max_epochs: int = 27
    n_bootstrap: int = 1000
    bf16: bool = False
    seed: int = 0
    pixel_spacing_mm: float | None = None  # to re-read a CBIS-DDSM source for the FROC

    @classmethod
    def quick_mode(cls, **overrides) -> "ReproduceConfig":
        return cls(**{"quick": True, "epochs": 3, "baseline_epochs": 1, "max_train_patches": 256,
                      "table1_epochs": 0, "tune_trials": 0, "n_bootstrap": 200, **overrides})


def _completed_trials(db: Path, study_name: str) -> int:
    import optuna

    if not db.is_file():
        return 0
    try:
        study = optuna.load_study(study_name=study_name, storage=f"sqlite:///{db.resolve()}")
    except KeyError:
        return 0
    return sum(t.state.is_finished() for t in study.trials)


def _subset(patches: np.ndarray, labels: np.ndarray, n: int | None, seed: int):
    if not n or len(labels) <= n:
        return patches, labels
    keep = np.sort(np.random.default_rng(seed).choice(len(labels), n, replace=False))
    return patches[keep], labels[keep]


def reproduce(data_dir: str | Path | None, out_dir: str | Path, config: ReproduceConfig = ReproduceConfig(), *,
              phantom_images: int = 6, progress: bool = False, command: str = "") -> dict:
    """Every experiment, then OUT/results.json and OUT/report.md. With no `data_dir`, a
    dataset of `phantom_images` phantom mammograms is built in OUT/data first."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if data_dir is None:
        print(f"no data given: a phantom dataset of {phantom_images} mammograms in {out_dir / 'data'}")
        data_dir = phantom_dataset(out_dir, phantom_images, seed=config.seed, progress=progress)
    figures = out_dir / "figures"
    figures.mkdir(exist_ok=True)
    patch_data = PatchDataset(data_dir)
    dataset = patch_data.card
    sets = {split: patch_data.load_split(split) for split in ("train", "val", "test")}
    test_patches, test_labels = sets["test"]
    groups = patch_data.window_groups()
    results = {"command": command, "config": asdict(config), "dataset": {
        "path": str(data_dir), "data": dataset["data"], "synthetic": dataset.get("synthetic", False),
        "protocol": dataset["protocol"], "protocol_note": dataset["protocol_note"],
        "patients_in_several_splits": dataset.get("patients_in_several_splits"),
        "patches": {s: len(sets[s][1]) for s in sets}}}
    results["machine"] = {"cpu_threads": torch.get_num_threads(), "cores": os.cpu_count(),
                          "torch": torch.__version__, "python": platform.python_version(),
                          "peak_gflops_fp32": peak_flops() / 1e9}
    started = time.perf_counter()

    def fit(name: str, arch, epochs: int, subset: int | None = None, **overrides) -> tuple[LoadedModel, list]:
        run = TrainConfig(arch=arch, epochs=epochs, augment=False, seed=config.seed, bf16=config.bf16, **overrides)
        patches, labels = _subset(*sets["train"], subset, config.seed)
        print(f"== {name}: {len(labels)} training patches, {epochs} epochs", flush=True)
        model, card = train(patches, labels, *sets["val"], run, out_dir / "models" / name, progress=progress,
                            card={"trained_on": dataset["data"], "command": command})
        with open(out_dir / "models" / name / "metrics.csv", newline="") as fh:
            history = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)]
        return LoadedModel(model, name, card["sha256"], card), history

    # 1. the proposed network, the paper's protocol (Adam 1e-3, batch 64, BCE, dropout 0.2)
    proposed, history = fit("proposed", "proposed", config.epochs)
    model = proposed.model
    evaluation = evaluate_on_dataset(proposed, data_dir, figures, n_bootstrap=config.n_bootstrap, seed=config.seed,
                                     pixel_spacing_mm=config.pixel_spacing_mm)
    prob = evaluation["probabilities"]
    results["training"] = {
        "epochs": len(history), "best_epoch": int(max(history, key=lambda h: (h["val_accuracy"], -h["val_loss"]))
                                                  ["epoch"]),
        "patches_per_s": float(np.median([h["patches_per_s"] for h in history])),
        "fraction_of_peak": float(np.median([h["fraction_of_peak"] for h in history])),
        "bf16": config.bf16, "fig6": str((out_dir / "models" / "proposed" / "training_curves.png"))}
    results["training"]["paper_protocol_minutes"] = (PAPER_TRAIN_PATCHES * PAPER_EPOCHS
                                                     / results["training"]["patches_per_s"] / 60)

    # 2–3. patch level with intervals and calibration; image level (FROC on whole test mammograms)
    results["patch_level"], results["froc"] = evaluation["patch_level"], evaluation["froc"]
    print("== evaluated the proposed network", flush=True)

    # 4. Table 1: every row the paper lists (trained unless --quick)
    table1 = []
    for name, row in TABLE1.items():
        entry = {"name": name, "config": row.config, "parameters": build_model(name).num_parameters(),
                 "paper_parameters": row.paper_parameters, "paper_accuracy": row.paper_accuracy, "accuracy": None}
        if name == PAPER_MODEL:
            entry["accuracy"] = results["patch_level"]["metrics"]["accuracy"]["value"]
        elif config.table1_epochs != 0:
            m = fit(name, name, config.table1_epochs or config.epochs, config.max_train_patches)[0].model
            entry["accuracy"] = float(((predict_patches(m, test_patches) >= 0.5) == test_labels).mean())
        table1.append(entry)
    results["table1"] = [{**e, "config": asdict(e["config"])} for e in table1]

    # 5. Hyperband over Table 2 (not in --quick)
    if config.tune_trials:
        tuning = TuneConfig(trials=config.tune_trials, seed=config.seed, max_epochs=config.tune_max_epochs,
                            bf16=config.bf16, max_train_patches=config.max_train_patches)
        done = _completed_trials(out_dir / "tune" / "study.db", tuning.study_name)
        tuning.trials = max(0, tuning.trials - done)  # a resumed run only adds the missing trials
        summary = tune(data_dir, out_dir / "tune", tuning, progress=progress)
        results["tuning"] = {"best": summary["best"], "table": summary["table"]}
    else:
        results["tuning"] = {"skipped": "--quick: no Hyperband search"}

    # 6. Table 3: baselines trained from scratch on the same split, with timings
    mammogram = make_phantom(7, size="small" if config.quick else "large", n_clusters=3).image
    repeats = 1 if config.quick else 3
    table3, curves = [], {"proposed": (test_labels, prob)}
    for name in ("proposed", *BASELINES):
        m = model if name == "proposed" else fit(
            name, name, config.baseline_epochs or config.epochs, config.max_train_patches)[0].model
        p = prob if name == "proposed" else predict_patches(m, test_patches)
        curves[name] = (test_labels, p)
        ev = patch_evaluation(test_labels, p, groups=groups, n_bootstrap=config.n_bootstrap, seed=config.seed)
        paper_acc, paper_params = PAPER_TABLE3.get(name, (None, None))
        table3.append({"name": name, "accuracy": ev["metrics"]["accuracy"], "roc_auc": ev["metrics"]["roc_auc"],
                       "parameters": parameter_count(m),
                       "parameters_keras": parameter_count(m, with_bn_statistics=True),
                       "paper_accuracy": paper_acc, "paper_parameters": paper_params,
                       "mflop_per_patch": flops_per_patch(m) / 1e6,
                       **inference_times(m, test_patches, mammogram, repeats=repeats)})
    results["table3"] = table3
    plot_roc(curves, figures / "roc.png")

    # 7. Figures 3–5
    results["figures"] = explain(model, test_patches, test_labels, figures)
    results["elapsed_min"] = (time.perf_counter() - started) / 60
    (out_dir / "results.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    (out_dir / "report.md").write_text(report_markdown(results, out_dir))
    return results


def _pct(x) -> str:
    return "–" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.1%}"


def _with_ci(m: dict, fmt=_pct) -> str:
    lo, hi = m["ci95"]
    return f"{fmt(m['value'])} ({fmt(lo)}–{fmt(hi)})"


def _auc(x) -> str:
    return "–" if x is None or np.isnan(x) else f"{x:.3f}"


def _rel(path, out_dir: Path) -> str:
    return os.path.relpath(path, out_dir)


def report_markdown(r: dict, out_dir: Path) -> str:
    d, t, pl = r["dataset"], r["training"], r["patch_level"]
    lines = [
        "# mccscan: reproduction of Luna-Lozoya et al. (2024)", "",
        f"**Protocol: {d['protocol']}** — {d['protocol_note']}."
        + (f" {d['patients_in_several_splits']} patients have patches in more than one split; test accuracy is "
           "inflated by it." if d["protocol"] == "paper" else ""), "",
        f"**Data:** {d['data']} (`{d['path']}`): {d['patches']['train']:,} training, {d['patches']['val']:,} "
        f"validation, {d['patches']['test']:,} test patches.", ""]
    if d["synthetic"]:
        lines += ["> These numbers come from the synthetic phantom, not from patient data; they test the "
                  "pipeline and are not comparable with the paper's INbreast results.", ""]
    cfg = r["config"]
    mode = ("--quick: few epochs and training subsets, no tuning; a smoke test of the pipeline, not a result"
            if cfg["quick"] else "full")
    lines += [f"**Run:** {mode}. `{r['command']}`; {r['machine']['cores']} cores, torch {r['machine']['torch']}, "
              f"measured fp32 peak {r['machine']['peak_gflops_fp32']:.0f} GFLOP/s; {r['elapsed_min']:.1f} min.", "",
              "## Training (the paper's protocol)", "",
              f"Adam, learning rate 0.001, batch 64, binary cross-entropy, dropout 0.2 on F2, {cfg['epochs']} epochs "
              f"(paper: 100), best epoch on validation kept (epoch {t['best_epoch']})"
              + (", bfloat16 autocast" if t["bf16"] else ", float32") + ".", "",
              f"Throughput {t['patches_per_s']:.0f} patches/s forward + backward ({t['fraction_of_peak']:.0%} of the "
              f"fp32 peak): the paper's 10,088 patches × 100 epochs would take "
              f"**{t['paper_protocol_minutes']:.0f} min** here.", "",
              f"![Fig. 6: training curves]({_rel(t['fig6'], out_dir)})", "",
              "## Patch level, test split", "",
              f"Bootstrap 95% intervals ({pl['n_bootstrap']} resamples of {pl['groups']} windows; the augmented "
              "copies of a window are resampled together). The paper reports accuracy only.", "",
              "| metric | ours (95% CI) | paper |", "|---|---|---|"]
    for k, v in pl["metrics"].items():
        lines.append(f"| {k.replace('_', ' ')} | {_with_ci(v, _auc if k == 'roc_auc' else _pct)} | "
                     f"{'99.3%' if k == 'accuracy' else 'not reported'} |")
    c = pl["confusion"]
    lines += ["", "| confusion | called MCC | called normal |", "|---|---|---|",
              f"| MCC | {c['tp']} | {c['fn']} |", f"| normal | {c['fp']} | {c['tn']} |", "",
              f"Calibration: expected calibration error {pl['calibration']['ece']:.3f}.", "",
              "![ROC](figures/roc.png) ![calibration](figures/calibration.png)", "",
              "## Image level: FROC (not in the paper)", ""]
    fr = r["froc"]
    if "skipped" in fr:
        lines += [f"Skipped: {fr['skipped']}", ""]
    else:
        s = fr["sensitivity_at_fp"]
        lines += [f"{fr['clusters']} annotated clusters on {fr['images']} test mammograms. Dense map at a 16 px "
                  "stride; candidates are connected regions above the threshold, each at its peak window; a "
                  "candidate finds a cluster when that window covers it by ≥ 50% of the smaller of window and "
                  "cluster (the rule that labels a training patch MCC); other candidates are false positives.", "",
                  f"Cluster sensitivity: **{_pct(s['0.5'])} at 0.5** and **{_pct(s['1.0'])} at 1 false positive "
                  f"per image** ({_pct(s['2.0'])} at 2).", "", "![FROC](figures/froc.png)", ""]
    lines += ["## Table 1: architectures", "",
              architecture_table([{**e, "config": config_by_name(e["name"])} for e in r["table1"]],
                                 accuracy_label="test accuracy"), ""]
    if cfg["table1_epochs"] == 0:
        lines += ["Only the proposed row is trained in this run; every row trains by name with "
                  "`mccscan train --arch NAME`.", ""]
    elif cfg["table1_epochs"] or cfg["max_train_patches"]:
        lines += [f"The other rows trained {cfg['table1_epochs'] or cfg['epochs']} epochs"
                  + (f" on {cfg['max_train_patches']} training patches" if cfg["max_train_patches"] else "") + ".", ""]
    lines += ["## Table 2: Hyperband search", ""]
    tu = r["tuning"]
    if "skipped" in tu:
        lines += [f"Skipped ({tu['skipped']}). Paper's best: " + _params(PAPER_BEST) + ".", ""]
    else:
        b = tu["best"]
        lines += [f"Best: {_params(b)} (validation accuracy {_pct(b['validation_accuracy'])}, "
                  f"{b['parameters']:,} parameters). Paper's best: {_params(PAPER_BEST)}. Trials: {b['trials']}.", "",
                  tu["table"], ""]
    lines += ["## Table 3: against baselines trained from scratch on the same split", "",
              "| architecture | test accuracy (95% CI) | paper accuracy | ROC AUC | parameters | paper parameters "
              "| MFLOP/patch | ms/patch | s/mammogram |", "|---|---|---|---|---|---|---|---|---|"]
    for row in r["table3"]:
        params = f"{row['parameters']:,}" + (f" ({row['parameters_keras']:,} with BN statistics)"
                                              if row["parameters_keras"] != row["parameters"] else "")
        lines.append(f"| {row['name']} | {_with_ci(row['accuracy'])} | {_pct(row['paper_accuracy'])} | "
                     f"{_with_ci(row['roc_auc'], _auc)} | {params} | "
                     f"{'' if row['paper_parameters'] is None else format(row['paper_parameters'], ',')} | "
                     f"{row['mflop_per_patch']:.0f} | {row['s_per_patch'] * 1e3:.2f} | {row['s_per_mammogram']:.2f} |")
    m = r["table3"][0]
    lines += ["", f"Per mammogram: every breast tile ({m['mammogram_tiles']}) of a {m['mammogram_px'][1]}×"
              f"{m['mammogram_px'][0]} phantom, scored as the app does (one convolutional pass for the proposed "
              "network, batches of 64 tiles for the others). The paper's MobileNetV2 head (flatten → dense 2048) "
              "is the only one whose parameter count matches its 67,797,505.", ""]
    f = r["figures"]
    f4, f5 = f["fig4"], f["fig5"]
    lines += ["## Figures 3–5", "",
              f"Fig. 3 — the test MCC patch the network is surest of (P = {f['patch_probability']:.3f}) and its maps:",
              "", "![Fig. 3](figures/fig3_feature_maps.png)", "",
              f"Fig. 4 — CL1 filter {f4['filter']}: {_pct(f4['band_energy_fraction'][f4['filter'] - 1])} of its "
              "energy lies in the MC band (1/14–1/2 cycles/pixel); across the six filters: "
              + ", ".join(_pct(x) for x in f4["band_energy_fraction"])
              + f"; {sum(f4['band_pass'])} of {len(f4['band_pass'])} pass the band more than DC (the paper: "
              "band-pass).", "", "![Fig. 4](figures/fig4_filter_response.png)", "",
              f"Fig. 5 — mean F2 over {f5['present']} patches called present and {f5['absent']} called absent"
              + (f": higher when present in {f5['elements_higher_when_present']} of {f5['elements']} elements"
                 if f5["elements_higher_when_present"] is not None else " (one group is empty: no comparison)")
              + " (the paper shows two separated curves).", "", "![Fig. 5](figures/fig5_mean_f2.png)", ""]
    return "\n".join(lines)


def _params(p: dict) -> str:
    return (f"CL1 {p['cl1_filters']} filters {p['cl1_size_px']}×{p['cl1_size_px']}, CL2 {p['cl2_filters']} filters "
            f"{p['cl2_size_px']}×{p['cl2_size_px']}, batch {p['batch_size']}, lr {p['learning_rate']:g}")
