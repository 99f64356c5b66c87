"""Weights on disk: a state dict plus, beside it, a JSON model card carrying the SHA-256
that `load_model` checks, the architecture, and what the weights were trained on."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from mccscan.atomic import atomic_write, atomic_write_text
from mccscan.errors import MccscanError, UnknownNameError
from mccscan.models import MCCNet, MCNet, MCNetConfig, NetConfig, arch_name, parameter_count
from mccscan.paper import BASELINES, build_model, config_by_name

WEIGHTS_DIR = Path(__file__).parent / "weights"
DEMO_WEIGHTS = WEIGHTS_DIR / "demo.pt"  # the paper's net, trained on phantoms
DETECTORS = {"mc": WEIGHTS_DIR / "mc.pt", "paper": DEMO_WEIGHTS}  # shipped weights of each detector
DEFAULT_DETECTOR = "mc"


class WeightsError(MccscanError, RuntimeError):
    """Weights missing, corrupt, or not matching their model card."""


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def card_path(weights_path: str | Path) -> Path:
    return Path(weights_path).with_suffix(".json")


def save_weights(model: nn.Module, path: str | Path, card: dict) -> dict:
    """Write the state dict and, beside it, a JSON model card with config and SHA-256."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda fh: torch.save(model.state_dict(), fh))
    if isinstance(model, MCCNet):
        arch = {"config": asdict(model.config)}
    elif isinstance(model, MCNet):
        arch = {"arch": arch_name(model), "config": asdict(model.config)}
    else:
        arch = {"arch": arch_name(model)}
    card = {**card, **arch, "parameters": parameter_count(model), "sha256": file_sha256(path)}
    atomic_write_text(card_path(path), json.dumps(card, indent=2) + "\n")
    return card


@dataclass
class LoadedModel:
    model: nn.Module  # MCCNet, MCNet (the cluster detector's), or a baseline when the card names one
    name: str
    sha256: str
    card: dict


def load_model(path: str | Path | None = None) -> LoadedModel:
    """Load weights (the shipped demo weights by default), checking the card's SHA-256.

    A .pt file without a card is accepted as the paper's architecture, and its hash
    is reported but cannot be checked.
    """
    path = Path(path) if path is not None else DEMO_WEIGHTS
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found")
    sha = file_sha256(path)
    card = json.loads(card_path(path).read_text()) if card_path(path).is_file() else {}
    if card.get("sha256") and card["sha256"] != sha:
        raise WeightsError(f"{path}: SHA-256 {sha[:12]}… does not match its model card "
                           f"({card['sha256'][:12]}…); the file is corrupt or was replaced")
    if card.get("arch") == MCNet.arch:
        model = MCNet(MCNetConfig.from_dict(card["config"]))
    elif card.get("arch") in BASELINES:
        model = build_model(card["arch"])
    else:
        model = MCCNet(NetConfig.from_dict(card["config"]) if "config" in card else config_by_name("proposed"))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except Exception as exc:  # torch raises many types for a bad file
        raise WeightsError(f"{path}: cannot load weights ({exc})") from exc
    model.eval()
    return LoadedModel(model, card.get("name", path.stem), sha, card)


def load_detector(detector: str | None = None, weights: str | Path | None = None) -> LoadedModel:
    """The weights to scan with: `weights` if given, else the shipped ones of `detector`
    ("mc", the default: MCs then clusters; "paper": the paper's net on tiles)."""
    if weights is not None:
        return load_model(weights)
    detector = detector or DEFAULT_DETECTOR
    if detector not in DETECTORS:
        raise UnknownNameError(f"unknown detector {detector!r}; choose from {', '.join(DETECTORS)}")
    return load_model(DETECTORS[detector])
