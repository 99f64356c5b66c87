"""Hyperband search over the paper's Table 2 space: `mccscan tune`.

Optuna samples an architecture and optimiser setting per trial; each trial trains with
epochs as Hyperband's resource and reports validation accuracy after every epoch, and
Optuna's HyperbandPruner stops the unpromising ones. The study lives in Optuna's
storage (SQLite file by default, a PostgreSQL URL for workers on several machines), so
any number of `mccscan tune` processes pointed at the same storage and study name share
the work, and a killed worker's trial is retried by the next.
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mccscan.database import redacted, sqlalchemy_url
from mccscan.dataset_dir import PatchDataset
from mccscan.errors import InputError
from mccscan.models import MCCNet, NetConfig
from mccscan.paper import PAPER_BEST, SEARCH_SPACE
from mccscan.train import TrainConfig, train


@dataclass
class TuneConfig:
    trials: int = 40  # trials this worker runs (each worker adds its own)
    max_epochs: int = 27  # Hyperband's maximum resource
    min_epochs: int = 1
    reduction_factor: int = 3
    seed: int = 0  # sampler and training seed; give each worker its own
    storage: str | None = None  # default: sqlite:///OUT/study.db
    study_name: str = "mccscan-hyperband"
    bf16: bool = False
    max_train_patches: int | None = None  # a random subset per trial, for quick searches


def net_config(params: dict) -> NetConfig:
    return NetConfig((params["cl1_filters"], params["cl2_filters"]), (params["cl1_size_px"], params["cl2_size_px"]))


STORAGE_ATTEMPTS = 3


def _storage(url: str):
    """Optuna's storage for a database URL (see `mccscan.database`: PostgreSQL through psycopg 3)."""
    import optuna

    import sqlalchemy

    for attempt in range(STORAGE_ATTEMPTS):
        with warnings.catch_warnings():  # the heartbeat API is marked experimental
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            try:
                return optuna.storages.RDBStorage(
                    sqlalchemy_url(url), heartbeat_interval=60, grace_period=180,
                    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1))
            except ImportError as exc:  # Optuna re-raises the driver's ModuleNotFoundError as this
                raise InputError(f"{redacted(url)}: this database's driver is missing ({exc}); "
                                 "pip install 'mccscan[archive]' (in a checkout: pip install -e '.[archive]')") from exc
            except sqlalchemy.exc.OperationalError as exc:
                raise InputError(f"{redacted(url)}: cannot reach the database ({exc.orig})") from exc
            except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
                # workers started together on an empty database race to create Optuna's tables;
                # the loser finds them made when it tries again
                if attempt == STORAGE_ATTEMPTS - 1:
                    raise
                time.sleep(1.0 + attempt)


def tune(data_dir: str | Path, out_dir: str | Path, config: TuneConfig = TuneConfig(), *,
         progress: bool = False) -> dict:
    """Run this worker's trials, then write best.json and table.md from the whole study."""
    import optuna

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    storage = config.storage or f"sqlite:///{(out_dir / 'study.db').resolve()}"
    dataset = PatchDataset(data_dir)
    train_set, val_set = dataset.load_split("train"), dataset.load_split("val")
    study = optuna.create_study(
        study_name=config.study_name, storage=_storage(storage), direction="maximize", load_if_exists=True,
        sampler=optuna.samplers.RandomSampler(seed=config.seed),  # Hyperband samples at random
        pruner=optuna.pruners.HyperbandPruner(config.min_epochs, config.max_epochs, config.reduction_factor))

    def objective(trial: optuna.Trial) -> float:
        params = {name: trial.suggest_categorical(name, choices) for name, choices in SEARCH_SPACE.items()}
        net = net_config(params)
        trial.set_user_attr("parameters", MCCNet(net).num_parameters())
        patches, labels = train_set
        if config.max_train_patches and len(labels) > config.max_train_patches:
            keep = np.sort(np.random.default_rng(config.seed + trial.number).choice(
                len(labels), config.max_train_patches, replace=False))
            patches, labels = patches[keep], labels[keep]
        accuracies = []

        def report(row: dict) -> None:
            accuracies.append(row["val_accuracy"])
            trial.report(row["val_accuracy"], row["epoch"])
            trial.set_user_attr("epochs", row["epoch"])
            if trial.should_prune():
                raise optuna.TrialPruned()

        run = TrainConfig(arch=net, epochs=config.max_epochs, batch_size=params["batch_size"],
                          learning_rate=params["learning_rate"], augment=False, seed=config.seed, bf16=config.bf16)
        train(patches, labels, *val_set, run, out_dir / "trials" / f"{trial.number:04d}", progress=progress,
              on_epoch=report)
        return max(accuracies)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study.optimize(objective, n_trials=config.trials, show_progress_bar=progress)
    summary = study_summary(study)
    (out_dir / "best.json").write_text(json.dumps(summary["best"], indent=2) + "\n")
    (out_dir / "table.md").write_text(summary["table"] + "\n")
    return summary


def study_summary(study, top: int = 10) -> dict:
    """The best trial and a Table 1-like table of the best completed trials."""
    import optuna

    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not done:
        raise InputError(f"study {study.study_name!r} has no completed trial yet")
    done.sort(key=lambda t: -t.value)
    best = done[0]
    rows = [{"name": f"trial {t.number}", "config": net_config(t.params), "accuracy": t.value,
             "parameters": t.user_attrs.get("parameters"),
             "extra": f"{t.user_attrs.get('epochs', '?')} ep, batch {t.params['batch_size']}, "
                      f"lr {t.params['learning_rate']:g}"} for t in done[:top]]
    counts = {s.name.lower(): sum(t.state == s for t in study.trials) for s in optuna.trial.TrialState}
    return {"best": {**best.params, "validation_accuracy": best.value, "trial": best.number,
                     "parameters": best.user_attrs.get("parameters"), "paper_best": PAPER_BEST,
                     "trials": {k: v for k, v in counts.items() if v}},
            "table": architecture_table(rows, accuracy_label="val. accuracy", extra_label="epochs, batch, lr")}


def architecture_table(rows: list[dict], *, accuracy_label: str = "accuracy", extra_label: str = "") -> str:
    """Markdown in the layout of the paper's Table 1. Each row: name, config (NetConfig),
    parameters, accuracy, and optional paper_parameters, paper_accuracy, extra."""
    paper = any("paper_accuracy" in r for r in rows)
    head = ["architecture", "CL", "filter size", "filters", "MPL", "parameters", accuracy_label]
    head += ["paper parameters", "paper accuracy"] if paper else []
    head += [extra_label] if extra_label else []
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cfg = r["config"]
        sizes = cfg.kernel_sizes_px
        size = f"{sizes[0]}×{sizes[0]}" if len(set(sizes)) == 1 else ", ".join(f"{k}×{k}" for k in sizes)
        acc = r.get("accuracy")
        cells = [r["name"], str(len(cfg.conv_channels)), size, ", ".join(map(str, cfg.conv_channels)),
                 str(cfg.max_pool_layers), f"{r['parameters']:,}" if r.get("parameters") else "–",
                 f"{acc:.1%}" if acc is not None else "not trained"]
        if paper:
            cells += [f"{r['paper_parameters']:,}" if "paper_parameters" in r else "",
                      f"{r['paper_accuracy']:.1%}" if "paper_accuracy" in r else ""]
        cells += [r.get("extra", "")] if extra_label else []
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
