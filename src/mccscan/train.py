"""Training: the paper's protocol (BCE, Adam lr 1e-3, batch 64, ×5 geometric augmentation).

Reads top to bottom: data in, model, optimiser, the epoch loop with validation, best
checkpoint out. Each epoch's shuffling and dropout are seeded from (seed, epoch), so a
run killed mid-way resumes from `last.pt` and ends with the same weights.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from tqdm import tqdm

from mccscan.atomic import atomic_write, atomic_write_text
from mccscan.builder import phantom_dataset
from mccscan.dataset_dir import PatchDataset
from mccscan.errors import InputError
from mccscan.metrics import binary_metrics
from mccscan.models import NetConfig, training_flops_per_patch
from mccscan.paper import build_model
from mccscan.patches import AUGMENTATIONS
from mccscan.perf import peak_flops
from mccscan.plots import plot_training_curves
from mccscan.predict import predict_patches
from mccscan.weights import card_path, load_model, save_weights


@dataclass
class TrainConfig:
    arch: str | NetConfig = "proposed"  # a name (`mccscan.paper.ARCHITECTURES`) or a config
    epochs: int = 100
    batch_size: int = 64
    learning_rate: float = 1e-3
    augment: bool = True  # the paper's ×5 geometric augmentation, applied on the fly
    seed: int = 0
    bf16: bool = False  # bfloat16 autocast for the forward pass (CPUs with AVX-512 BF16 / AMX)
    patience: int | None = None  # early stopping: epochs without a better validation result


def augmented_batch(patches_u8: np.ndarray, index: np.ndarray, augment: bool) -> torch.Tensor:
    """Float batch (B,1,H,W) in [0,1] for sample indices; with augmentation, sample i is
    patch i // 5 under transform i % 5 (the order of `AUGMENTATIONS`)."""
    if not augment:
        return torch.from_numpy(patches_u8[index]).float().div_(255)[:, None]
    base, which = index // len(AUGMENTATIONS), index % len(AUGMENTATIONS)
    batch = patches_u8[base].copy()
    for a, transform in enumerate(AUGMENTATIONS.values()):
        sel = which == a
        if a and sel.any():
            batch[sel] = transform(batch[sel])
    return torch.from_numpy(batch).float().div_(255)[:, None]


def train(train_patches: np.ndarray, train_labels: np.ndarray, val_patches: np.ndarray,
          val_labels: np.ndarray, config: TrainConfig, out_dir: str | Path, *,
          progress: bool = True, card: dict | None = None,
          on_epoch: Callable[[dict], None] | None = None) -> tuple[torch.nn.Module, dict]:
    """Train, validating each epoch; writes best.pt (+ card), last.pt and metrics.csv.

    `on_epoch(row)` sees each epoch's metrics and may raise to stop (Hyperband pruning).
    Returns the best-on-validation model and its model card.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    model = build_model(config.arch).to(memory_format=torch.channels_last)  # 1.5× faster on CPU
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    labels_t = torch.from_numpy(train_labels.astype(np.float32))
    n_samples = len(train_labels) * (len(AUGMENTATIONS) if config.augment else 1)
    flops_per_sample = training_flops_per_patch(model)
    forward = getattr(model, "training_forward", model)  # MCCNet: backward through the max's fields only
    peak = peak_flops()

    # resume
    start_epoch, best, history = 0, {"accuracy": -1.0, "loss": float("inf"), "epoch": -1}, []
    last_path = out_dir / "last.pt"
    if last_path.is_file():
        state = load_checkpoint(last_path)
        same_run = {**state["config"], "epochs": config.epochs} == asdict(config)  # epochs may be extended
        if same_run:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            start_epoch, best, history = state["epoch"] + 1, state["best"], state["history"]
            print(f"resuming from {last_path} at epoch {start_epoch + 1}")
        else:
            print(f"{last_path} belongs to a different configuration; starting afresh")

    for epoch in range(start_epoch, config.epochs):
        if config.patience is not None and best["epoch"] > 0 and epoch - best["epoch"] >= config.patience:
            print(f"early stop: no better validation result in {config.patience} epochs")
            break
        model.train()
        torch.manual_seed(config.seed * 100_003 + epoch)  # dropout of this epoch
        order = torch.randperm(n_samples, generator=torch.Generator().manual_seed(config.seed * 100_003 + epoch))
        order = order.numpy()
        start, seen, loss_sum, correct = time.perf_counter(), 0, 0.0, 0
        bar = tqdm(range(0, n_samples, config.batch_size), desc=f"epoch {epoch + 1}/{config.epochs}",
                   unit="batch", disable=not progress, leave=False, mininterval=1.0)
        for i in bar:
            index = order[i:i + config.batch_size]
            x = augmented_batch(train_patches, index, config.augment).contiguous(memory_format=torch.channels_last)
            y = labels_t[index // len(AUGMENTATIONS) if config.augment else index]
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=config.bf16):
                logits = forward(x).float()
            loss = F.binary_cross_entropy_with_logits(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            seen += len(index)
            loss_sum += loss.item() * len(index)
            correct += int(((logits > 0) == (y > 0.5)).sum())
            rate = seen / (time.perf_counter() - start)
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}", patches_s=f"{rate:.0f}",
                            peak=f"{rate * flops_per_sample / peak:.0%}")
        elapsed = time.perf_counter() - start
        val_prob = predict_patches(model, val_patches)
        val_loss = float(F.binary_cross_entropy(torch.from_numpy(val_prob).clamp(1e-7, 1 - 1e-7),
                                                torch.from_numpy(val_labels.astype(np.float32))))
        val = binary_metrics(val_labels, val_prob)
        row = {"epoch": epoch + 1, "train_loss": loss_sum / seen, "train_accuracy": correct / seen,
               "val_loss": val_loss, "val_accuracy": val["accuracy"], "patches_per_s": seen / elapsed,
               "fraction_of_peak": seen * flops_per_sample / elapsed / peak}
        history.append(row)
        improved = (val["accuracy"], -val_loss) > (best["accuracy"], -best["loss"])
        if improved:
            best = {"accuracy": val["accuracy"], "loss": val_loss, "epoch": epoch + 1}
            save_weights(model, out_dir / "best.pt", {**(card or {}), "name": out_dir.name,
                                                       "epoch": epoch + 1, "train_config": asdict(config)})
        print(f"epoch {epoch + 1:3d}  loss {row['train_loss']:.4f}  acc {row['train_accuracy']:.4f}  "
              f"val_loss {val_loss:.4f}  val_acc {val['accuracy']:.4f}  {row['patches_per_s']:.0f} patches/s "
              f"({row['fraction_of_peak']:.0%} of peak){'  *best*' if improved else ''}", flush=True)
        _write_metrics(out_dir / "metrics.csv", history)
        state = {"config": asdict(config), "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "epoch": epoch, "best": best, "history": history}
        save_checkpoint(last_path, state)
        if on_epoch is not None:
            on_epoch(row)

    plot_training_curves(history, out_dir / "training_curves.png")
    loaded = load_model(out_dir / "best.pt")
    return loaded.model, loaded.card


def save_checkpoint(path: Path, state: dict) -> None:
    """The state a killed run resumes from; a crash mid-write keeps the previous one."""
    atomic_write(path, lambda fh: torch.save(state, fh))


def load_checkpoint(path: Path) -> dict:
    """A run's last.pt; a file that cannot be read is a clear error, not a traceback."""
    try:
        return torch.load(path, weights_only=False)
    except Exception as exc:  # noqa: BLE001 — torch raises many types for a damaged file
        raise InputError(f"{path}: the checkpoint cannot be read ({type(exc).__name__}: {exc}); delete it to "
                         "start this run afresh") from exc


def _write_metrics(path: Path, history: list[dict]) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)


def train_on_dataset(data_dir: str | Path | None, out_dir: str | Path, config: TrainConfig, *,
                     phantom_images: int = 24, progress: bool = True, command: str = "") -> dict:
    """Train on a built patch dataset (its augmentations are already rows, so none is added),
    evaluate the best checkpoint on its test split, and write the model card.

    With no `data_dir`, a dataset of `phantom_images` phantom mammograms is built first in
    OUT/data by the same builder and label rule as any other source (reused on a rerun)."""
    if data_dir is None:
        data_dir = phantom_dataset(out_dir, phantom_images, seed=config.seed, progress=progress)
    dataset = PatchDataset(data_dir)
    config = TrainConfig(**{**asdict(config), "augment": False})
    sets = {split: dataset.load_split(split) for split in ("train", "val", "test")}
    card = {"trained_on": dataset.card["data"], "command": command,
            "data": {"dataset": str(data_dir), "protocol": dataset.card["protocol"],
                     "protocol_note": dataset.card["protocol_note"],
                     **{split: {"patches": len(sets[split][1])} for split in sets}}}
    model, card = train(*sets["train"], *sets["val"], config, out_dir, progress=progress, card=card)
    card["test"] = binary_metrics(sets["test"][1], predict_patches(model, sets["test"][0]))
    atomic_write_text(card_path(Path(out_dir) / "best.pt"), json.dumps(card, indent=2) + "\n")
    return card
