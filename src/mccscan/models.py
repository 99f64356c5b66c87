"""The paper's lightweight CNN and its Table 1 variants.

conv k×k → ReLU (→ 2×2 max pool) … → global max pool (F2) → dropout → dense → logit.
Convolutions are "valid" (no padding), as in Keras' default, so that running the
convolutional part once over a whole mammogram and taking a 128×128 max reproduces the
per-patch result exactly (see `mccscan.scan`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

PATCH_SIZE_PX = 144  # 1 cm² at 70 µm
WEIGHTS_DIR = Path(__file__).parent / "weights"
DEMO_WEIGHTS = WEIGHTS_DIR / "demo.pt"


@dataclass(frozen=True)
class NetConfig:
    """Architecture of one network: filters per conv layer, one kernel size for all."""

    conv_channels: tuple[int, ...] = (6, 16)
    kernel_size_px: int = 9
    max_pool_layers: int = 0  # 2×2 max pools, after the first `max_pool_layers` convs
    dropout: float = 0.2  # the paper's "permanency 80%"
    patch_size_px: int = PATCH_SIZE_PX

    def __post_init__(self):
        object.__setattr__(self, "conv_channels", tuple(int(c) for c in self.conv_channels))
        if not 0 <= self.max_pool_layers <= len(self.conv_channels):
            raise ValueError("max_pool_layers must be between 0 and the number of conv layers")

    @classmethod
    def from_dict(cls, d: dict) -> "NetConfig":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


@dataclass(frozen=True)
class Table1Row:
    """One architecture from the paper's Table 1, with the paper's published numbers."""

    config: NetConfig
    paper_parameters: int
    paper_accuracy: float
    note: str = ""


# The paper's Table 1. Row "cl2-k3-6x16" is printed with filters "16, 16" in the paper,
# but its published parameter count (957) is only consistent with 6, 16 filters.
TABLE1: dict[str, Table1Row] = {
    "cl2-k5-6x16-mp2": Table1Row(NetConfig((6, 16), 5, max_pool_layers=2), 2589, 0.991),
    "cl2-k5-6x16": Table1Row(NetConfig((6, 16), 5), 2589, 0.991),
    "cl2-k5-4x10": Table1Row(NetConfig((4, 10), 5), 1125, 0.988),
    "cl1-k5-16": Table1Row(NetConfig((16,), 5), 433, 0.978),
    "cl6-k5-4": Table1Row(NetConfig((4,) * 6, 5), 2129, 0.990),
    "cl2-k3-6x16": Table1Row(
        NetConfig((6, 16), 3), 957, 0.980,
        note="paper prints filters 16, 16; its 957 parameters imply 6, 16",
    ),
    "cl2-k7-6x16": Table1Row(NetConfig((6, 16), 7), 5037, 0.991),
    "cl2-k11-6x16": Table1Row(NetConfig((6, 16), 11), 12381, 0.993),
    "cl2-k9-6x16": Table1Row(NetConfig((6, 16), 9), 8301, 0.993),
}
PAPER_MODEL = "cl2-k9-6x16"  # the paper's "proposed" network, 8,301 parameters


def config_by_name(name: str) -> NetConfig:
    """Config of a Table 1 architecture by name ("proposed" is the paper's model)."""
    key = PAPER_MODEL if name == "proposed" else name
    if key not in TABLE1:
        raise KeyError(f"unknown architecture {name!r}; known: proposed, {', '.join(TABLE1)}")
    return TABLE1[key].config


@dataclass
class Features:
    """Intermediate outputs: conv maps after ReLU (F0, F1, …), F2 and the logit."""

    conv_maps: list[torch.Tensor] = field(default_factory=list)
    f2: torch.Tensor | None = None
    logit: torch.Tensor | None = None


class MCCNet(nn.Module):
    """Shallow CNN that scores a 144×144 patch for the presence of an MC cluster."""

    def __init__(self, config: NetConfig = NetConfig()):
        super().__init__()
        self.config = config
        channels = (1, *config.conv_channels)
        self.convs = nn.ModuleList(
            nn.Conv2d(c_in, c_out, config.kernel_size_px) for c_in, c_out in zip(channels, channels[1:])
        )
        self.dropout = nn.Dropout(config.dropout)
        self.dense = nn.Linear(channels[-1], 1)

    @property
    def fully_convolutional(self) -> bool:
        """True when a whole-image conv pass + window max equals per-patch inference."""
        return self.config.max_pool_layers == 0

    def conv_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Conv maps after ReLU for input x [N,1,H,W] (any H, W ≥ the receptive field)."""
        maps = []
        for i, conv in enumerate(self.convs):
            x = F.relu(conv(x))
            if i < self.config.max_pool_layers:
                x = F.max_pool2d(x, 2)
            maps.append(x)
        return maps

    def head(self, f2: torch.Tensor) -> torch.Tensor:
        """Logit from the global-max features F2 [N, C]."""
        return self.dense(self.dropout(f2)).squeeze(-1)

    def features(self, x: torch.Tensor) -> Features:
        maps = self.conv_features(x)
        f2 = torch.amax(maps[-1], dim=(-2, -1))
        return Features(maps, f2, self.head(f2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logit per patch; the paper's sigmoid output is `torch.sigmoid` of it."""
        return self.head(torch.amax(self.conv_features(x)[-1], dim=(-2, -1)))

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def flops_per_patch(self) -> int:
        """Floating-point operations (2 per multiply-add) of one forward pass on one patch."""
        size, flops = self.config.patch_size_px, 0
        for i, conv in enumerate(self.convs):
            size -= conv.kernel_size[0] - 1
            flops += 2 * conv.in_channels * conv.out_channels * conv.kernel_size[0] ** 2 * size * size
            if i < self.config.max_pool_layers:
                size //= 2
        return flops + 2 * self.dense.in_features * self.dense.out_features


def build_model(name_or_config: str | NetConfig = "proposed") -> MCCNet:
    config = config_by_name(name_or_config) if isinstance(name_or_config, str) else name_or_config
    return MCCNet(config)


# ---- weights on disk: state dict + JSON model card carrying the SHA-256 -------------

class WeightsError(RuntimeError):
    """Weights missing, corrupt, or not matching their model card."""


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def card_path(weights_path: str | Path) -> Path:
    return Path(weights_path).with_suffix(".json")


def save_weights(model: MCCNet, path: str | Path, card: dict) -> dict:
    """Write the state dict and, beside it, a JSON model card with config and SHA-256."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    card = {**card, "config": asdict(model.config), "parameters": model.num_parameters(),
            "sha256": file_sha256(path)}
    card_path(path).write_text(json.dumps(card, indent=2) + "\n")
    return card


@dataclass
class LoadedModel:
    model: MCCNet
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
    config = NetConfig.from_dict(card["config"]) if "config" in card else config_by_name("proposed")
    model = MCCNet(config)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except Exception as exc:  # torch raises many types for a bad file
        raise WeightsError(f"{path}: cannot load weights ({exc})") from exc
    model.eval()
    return LoadedModel(model, card.get("name", path.stem), sha, card)
