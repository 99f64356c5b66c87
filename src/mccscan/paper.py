"""The paper's published facts in one place: Table 1's architectures with their numbers,
Table 2's search space and best setting, Table 3's baselines, the training protocol's
size; and a network built by its name in those tables.

Luna-Lozoya et al., "Lightweight CNN for Detecting Microcalcifications Clusters in
Digital Mammograms", Computación y Sistemas 28(1), 2024.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from mccscan.errors import UnknownNameError
from mccscan.models import LeNet5, MCCNet, MobileNetV2, NetConfig

PAPER_TRAIN_PATCHES, PAPER_EPOCHS = 10_088, 100  # the paper's training set and epochs


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
    if key in VARIANTS:
        return VARIANTS[key]
    if key not in TABLE1:
        raise UnknownNameError(f"unknown architecture {name!r}; known: {', '.join(ARCHITECTURES)}")
    return TABLE1[key].config


BASELINES = {
    "lenet5": LeNet5,
    "mobilenetv2": MobileNetV2,
    "mobilenetv2-paper-head": lambda: MobileNetV2(head="paper"),
}
# The paper's Table 3: accuracy and parameters as published (same data, from scratch).
PAPER_TABLE3 = {"mobilenetv2-paper-head": (0.998, 67_797_505), "lenet5": (0.993, 2_233_365),
                "proposed": (0.993, 8_301)}
# Beyond the paper: the proposed net with a count-aware F2 (issue 12's detector b).
VARIANTS = {"count-aware": NetConfig((6, 16), 9, f2_pool="peaks3")}
ARCHITECTURES = ("proposed", *TABLE1, *BASELINES, *VARIANTS)


# The paper's Table 2 and the setting its Hyperband found.
SEARCH_SPACE: dict[str, tuple] = {
    "cl1_filters": (4, 6, 8, 10, 12),
    "cl1_size_px": (3, 5, 7, 9, 11),
    "cl2_filters": (16, 20, 24, 28, 32),
    "cl2_size_px": (3, 5, 7, 9, 11),
    "batch_size": (16, 32, 64, 128),
    "learning_rate": (0.01, 0.001, 0.0001),
}
PAPER_BEST = {"cl1_filters": 6, "cl1_size_px": 9, "cl2_filters": 16, "cl2_size_px": 9, "batch_size": 64,
              "learning_rate": 0.001}


def build_model(name_or_config: str | NetConfig = "proposed") -> nn.Module:
    """A fresh model: "proposed", a Table 1 name, a baseline name, or a NetConfig."""
    if isinstance(name_or_config, str) and name_or_config in BASELINES:
        return BASELINES[name_or_config]()
    config = config_by_name(name_or_config) if isinstance(name_or_config, str) else name_or_config
    return MCCNet(config)
