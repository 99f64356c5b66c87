"""The networks: the paper's lightweight CNN (any Table 1 / Table 2 configuration) and the
Table 3 baselines, LeNet-5 and MobileNetV2. Nothing else: names and published numbers
are in `mccscan.paper`, weights on disk in `mccscan.weights`.

conv k×k → ReLU (→ 2×2 max pool) … → global max pool (F2) → dropout → dense → logit.
Convolutions are "valid" (no padding), as in Keras' default, so that running the
convolutional part once over a whole mammogram and taking a 128×128 max reproduces the
per-patch result exactly (see `mccscan.scan`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from mccscan.tiling import PATCH_SIZE_PX

F2_POOLS = ("max", "peaks3")
PEAK_NMS_PX = 7  # the count-aware F2's peaks: maxima of a 7×7 neighbourhood, so at least 4 px apart


@dataclass(frozen=True)
class NetConfig:
    """Architecture of one network: filters per conv layer and their kernel size (one for
    all layers, or one per layer as in the paper's Table 2 search space)."""

    conv_channels: tuple[int, ...] = (6, 16)
    kernel_size_px: int | tuple[int, ...] = 9
    max_pool_layers: int = 0  # 2×2 max pools, after the first `max_pool_layers` convs
    f2_pool: str = "max"  # "max": the paper's global max; "peaks3": mean of the 3 strongest separate peaks
    dropout: float = 0.2  # the paper's "permanency 80%"
    patch_size_px: int = PATCH_SIZE_PX

    def __post_init__(self):
        object.__setattr__(self, "conv_channels", tuple(int(c) for c in self.conv_channels))
        if not isinstance(self.kernel_size_px, int):
            sizes = tuple(int(k) for k in self.kernel_size_px)
            object.__setattr__(self, "kernel_size_px", sizes[0] if len(set(sizes)) == 1 else sizes)
        if len(self.kernel_sizes_px) != len(self.conv_channels):
            raise ValueError("give one kernel size, or one per conv layer")
        if not 0 <= self.max_pool_layers <= len(self.conv_channels):
            raise ValueError("max_pool_layers must be between 0 and the number of conv layers")
        if self.f2_pool not in F2_POOLS:
            raise ValueError(f"f2_pool must be one of {', '.join(F2_POOLS)}")

    @property
    def kernel_sizes_px(self) -> tuple[int, ...]:
        k = self.kernel_size_px
        return (k,) * len(self.conv_channels) if isinstance(k, int) else k

    @property
    def conv_shrink_px(self) -> int:
        """Pixels a patch side loses to the valid convolutions (no pools): Σ (k − 1)."""
        return sum(k - 1 for k in self.kernel_sizes_px)

    @classmethod
    def from_dict(cls, d: dict) -> "NetConfig":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


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
            nn.Conv2d(c_in, c_out, k) for c_in, c_out, k in zip(channels, channels[1:], config.kernel_sizes_px)
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

    def f2(self, fmap: torch.Tensor) -> torch.Tensor:
        """F2 [N, C] from the last conv map [N, C, h, w]: its global max (the paper), or the
        mean of its 3 strongest peaks at least 4 px apart (count-aware: one bright speck
        cannot fill all three)."""
        if self.config.f2_pool == "max":
            return torch.amax(fmap, dim=(-2, -1))
        peaks = fmap * (fmap == F.max_pool2d(fmap, PEAK_NMS_PX, 1, PEAK_NMS_PX // 2))
        return peaks.flatten(2).topk(min(3, peaks.shape[-2] * peaks.shape[-1]), dim=2).values.mean(2)

    def head(self, f2: torch.Tensor) -> torch.Tensor:
        """Logit from the global-max features F2 [N, C]."""
        return self.dense(self.dropout(f2)).squeeze(-1)

    def features(self, x: torch.Tensor) -> Features:
        maps = self.conv_features(x)
        f2 = self.f2(maps[-1])
        return Features(maps, f2, self.head(f2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logit per patch; the paper's sigmoid output is `torch.sigmoid` of it."""
        return self.head(self.f2(self.conv_features(x)[-1]))

    def training_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The logits of `forward`, with a backward pass about as cheap as nothing.

        The global max passes gradient to one position per map, so only the receptive
        field of each F2 element (Σ(k−1)+1 px square) matters for training: the full maps
        are computed without autograd to find the maxima, then those fields alone are
        recomputed with it. Same values and gradients (up to ties), about a third of the
        FLOPs of forward + dense backward. Models with max pools or a count-aware F2 use
        `forward`.
        """
        if not self.fully_convolutional or self.config.f2_pool != "max":
            return self(x)
        with torch.no_grad():
            fmap = self.conv_features(x)[-1]
            flat = fmap.flatten(2).argmax(2)  # (N, C): where each F2 element comes from
        n, c, w = fmap.shape[0], fmap.shape[1], fmap.shape[-1]
        field = self.config.conv_shrink_px + 1
        offsets = torch.arange(field, device=x.device)
        rows = (flat // w)[..., None] + offsets  # (N, C, field)
        cols = (flat % w)[..., None] + offsets
        crops = x[torch.arange(n, device=x.device)[:, None, None, None], 0, rows[..., :, None], cols[..., None, :]]
        out = self.conv_features(crops.reshape(n * c, 1, field, field))[-1].reshape(n, c, c)
        f2 = out.diagonal(dim1=1, dim2=2)  # channel k of the field cropped for channel k
        return self.head(f2)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def flops_per_patch(self, size_px: int | None = None) -> int:
        """Floating-point operations (2 per multiply-add) of one forward pass on one patch."""
        size, flops = size_px or self.config.patch_size_px, 0
        for i, conv in enumerate(self.convs):
            size -= conv.kernel_size[0] - 1
            flops += 2 * conv.in_channels * conv.out_channels * conv.kernel_size[0] ** 2 * size * size
            if i < self.config.max_pool_layers:
                size //= 2
        return flops + 2 * self.dense.in_features * self.dense.out_features


# ---- the paper's Table 3 baselines, for 144×144×1 input, trained from scratch ---------

class LeNet5(nn.Module):
    """LeNet-5 (LeCun et al., 1998) on a 144×144 patch.

    C1 conv 5×5×6 with 2 px padding (the original pads its 28×28 digits to 32×32 so C1
    keeps the input size) → S2 2×2 average pool → C3 conv 5×5×16 → S4 pool → C5 120 →
    F6 84 → one logit, tanh throughout. C5's kernel covers all of S4 in the original, so
    it is a dense layer here over S4's 34×34×16; C3 is fully connected (no sparse table).
    2,232,461 parameters; the paper reports 2,233,365 for its Keras version.
    """

    arch = "lenet5"

    def __init__(self, patch_size_px: int = PATCH_SIZE_PX):
        super().__init__()
        s4 = ((patch_size_px // 2) - 4) // 2
        self.features = nn.Sequential(
            nn.Conv2d(1, 6, 5, padding=2), nn.Tanh(), nn.AvgPool2d(2),
            nn.Conv2d(6, 16, 5), nn.Tanh(), nn.AvgPool2d(2), nn.Flatten())
        self.classifier = nn.Sequential(nn.Linear(16 * s4 * s4, 120), nn.Tanh(), nn.Linear(120, 84), nn.Tanh(),
                                        nn.Linear(84, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x)).squeeze(-1)


def _conv_bn(c_in: int, c_out: int, k: int, stride: int = 1, groups: int = 1, relu6: bool = True) -> nn.Sequential:
    layers = [nn.Conv2d(c_in, c_out, k, stride, padding=k // 2, groups=groups, bias=False), nn.BatchNorm2d(c_out)]
    return nn.Sequential(*layers, nn.ReLU6(inplace=True)) if relu6 else nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """MobileNetV2's block: 1×1 expand → 3×3 depthwise → 1×1 linear projection (+ skip)."""

    def __init__(self, c_in: int, c_out: int, stride: int, expansion: int):
        super().__init__()
        hidden = c_in * expansion
        expand = [_conv_bn(c_in, hidden, 1)] if expansion != 1 else []
        self.block = nn.Sequential(*expand, _conv_bn(hidden, hidden, 3, stride, groups=hidden),
                                   _conv_bn(hidden, c_out, 1, relu6=False))
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x) if self.residual else self.block(x)


# (expansion t, channels c, repeats n, first stride s), Table 2 of Sandler et al. (2018)
MOBILENETV2_BLOCKS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                      (6, 160, 3, 2), (6, 320, 1, 1))


class MobileNetV2(nn.Module):
    """MobileNetV2 (Sandler et al., 2018), width 1.0, for a 144×144×1 patch (final map 5×5×1280).

    Head "original": global average pool → dropout → one logit (2.2 M parameters).
    Head "paper": flatten → dense 2048 ReLU → one logit, the head the paper's count of
    67,797,505 implies (Keras counts BatchNorm's running mean and variance as parameters).
    """

    def __init__(self, head: str = "original", patch_size_px: int = PATCH_SIZE_PX, dropout: float = 0.2):
        super().__init__()
        self.arch = "mobilenetv2" if head == "original" else "mobilenetv2-paper-head"
        layers, c = [_conv_bn(1, 32, 3, 2)], 32
        for t, c_out, n, s in MOBILENETV2_BLOCKS:
            for i in range(n):
                layers.append(InvertedResidual(c, c_out, s if i == 0 else 1, t))
                c = c_out
        self.features = nn.Sequential(*layers, _conv_bn(c, 1280, 1))
        if head == "original":
            self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(1280, 1))
        elif head == "paper":
            side = patch_size_px
            for _ in range(5):  # five stride-2 stages, padding 1: ⌈side / 2⌉
                side = (side + 1) // 2
            self.head = nn.Sequential(nn.Flatten(), nn.Linear(1280 * side * side, 2048), nn.ReLU(inplace=True),
                                      nn.Linear(2048, 1))
        else:
            raise ValueError("head must be 'original' or 'paper'")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)).squeeze(-1)


def parameter_count(model: nn.Module, *, with_bn_statistics: bool = False) -> int:
    """Trainable parameters; with BatchNorm's running mean and variance too, as Keras counts."""
    n = sum(p.numel() for p in model.parameters())
    if with_bn_statistics:
        n += sum(m.running_mean.numel() + m.running_var.numel() for m in model.modules()
                 if isinstance(m, nn.BatchNorm2d))
    return n


def flops_per_patch(model: nn.Module) -> int:
    """Forward FLOPs (2 per multiply-add) on one patch: analytic for MCCNet, counted by
    torch's FLOP counter (convolutions and matrix products) for the baselines."""
    if isinstance(model, MCCNet):
        return model.flops_per_patch()
    from torch.utils.flop_counter import FlopCounterMode

    size = getattr(getattr(model, "config", None), "patch_size_px", PATCH_SIZE_PX)
    was_training = model.training
    model.eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 1, size, size))
    model.train(was_training)
    return int(counter.get_total_flops())


def training_flops_per_patch(model: nn.Module) -> int:
    """FLOPs one training sample costs: forward + backward ≈ 3× forward, except for an MCCNet
    trained through `training_forward` (forward, plus 3× the receptive fields' recompute)."""
    if isinstance(model, MCCNet) and model.fully_convolutional:
        field = model.config.conv_shrink_px + 1
        return model.flops_per_patch() + 3 * model.dense.in_features * model.flops_per_patch(field)
    return 3 * flops_per_patch(model)


def arch_name(model: nn.Module) -> str:
    return getattr(model, "arch", "mccnet")


# ---- the two-stage detector's second stage: is this candidate speck an MC? ----------------

@dataclass(frozen=True)
class MCNetConfig:
    """A small CNN that scores one candidate speck from the patch around it (valid convs),
    and, with `context_pool`, from the square centimetre around it too."""

    patch_px: int = 27  # 1.9 mm: an MC (0.1–1 mm) and its surroundings
    channels: tuple[int, ...] = (24, 24, 48, 48)  # 64,729 parameters, chosen by the FROC on real tissue
    kernels_px: tuple[int, ...] = (5, 5, 5, 3)
    pool_after: int = 2  # one 2×2 max pool after this many convs
    context_pool: int = 0  # > 0: a second tower sees patch_px × this px (5: 9.5 mm), mean- and max-pooled by this
    context_channels: tuple[int, ...] = (12, 12, 24, 24)  # its conv widths (same kernels)
    position_aware: bool = False  # the patch tower's whole last map to the dense layer, not its global max

    def __post_init__(self):
        for name in ("channels", "kernels_px", "context_channels"):
            object.__setattr__(self, name, tuple(int(c) for c in getattr(self, name)))
        if len(self.channels) != len(self.kernels_px) or len(self.context_channels) != len(self.kernels_px):
            raise ValueError("give one kernel size per conv layer, and as many context widths")
        if self.context_pool < 0 or (self.context_pool and self.context_pool % 2 == 0):
            raise ValueError(f"context_pool is 0 (no context) or an odd pooling factor, not {self.context_pool}")

    @property
    def in_channels(self) -> int:
        """The patch, then (with context) the mean and max of the pooled context."""
        return 3 if self.context_pool else 1

    @classmethod
    def from_dict(cls, d: dict) -> "MCNetConfig":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


class MCNet(nn.Module):
    """Candidate input (N, in_channels, 27, 27) of the normalised high-pass image → MC logit (N,).
    Channel 0 is the patch around the speck: a tower of convs and a global max says how
    MC-like the brightest thing in it is (with `position_aware`, the tower's whole last map
    says where, too). With context, channels 1–2 are the pooled square
    centimetre around it, and a second tower's global max and mean say what else is there
    (more specks of a cluster, a vessel's line of them, dense texture)."""

    arch = "mcnet"

    def __init__(self, config: MCNetConfig = MCNetConfig()):
        super().__init__()
        self.config = config
        self.convs = _tower(1, config.channels, config.kernels_px)
        features = config.channels[-1] * (self._last_map_px() ** 2 if config.position_aware else 1)
        if config.context_pool:
            self.context_convs = _tower(2, config.context_channels, config.kernels_px)
            features += 2 * config.context_channels[-1]
        self.dense = nn.Linear(features, 1)

    def _last_map_px(self) -> int:
        """The side of the patch tower's last map (27 px → 3 with the default convs and pool)."""
        side = self.config.patch_px
        for i, k in enumerate(self.config.kernels_px):
            side = side - k + 1
            side = side // 2 if i + 1 == self.config.pool_after else side
        return side

    def _conv_features(self, convs: nn.ModuleList, x: torch.Tensor) -> torch.Tensor:
        for i, conv in enumerate(convs):
            x = F.relu(conv(x))  # (N, C, shrinking, shrinking)
            if i + 1 == self.config.pool_after:
                x = F.max_pool2d(x, 2)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.config.in_channels:
            raise ValueError(f"MCNet with context_pool {self.config.context_pool} takes {self.config.in_channels} "
                             f"input channels, not {x.shape[1]}")
        patch = self._conv_features(self.convs, x[:, :1])  # (N, C, 3, 3)
        # global max: how MC-like the brightest thing anywhere in the patch is, the centre speck or a bright
        # neighbour alike; position-aware: where it is too, so a speck beside an MC need not score as one
        features = patch.flatten(1) if self.config.position_aware else torch.amax(patch, dim=(-2, -1))
        if self.config.context_pool:
            around = self._conv_features(self.context_convs, x[:, 1:])
            features = torch.cat([features, torch.amax(around, dim=(-2, -1)), around.mean(dim=(-2, -1))], 1)
        return self.dense(features).squeeze(-1)  # (N,)


def _tower(in_channels: int, channels: tuple[int, ...], kernels_px: tuple[int, ...]) -> nn.ModuleList:
    """Valid convs of these widths and kernel sizes (ReLU and the max pool are in `MCNet`)."""
    widths = (in_channels, *channels)
    return nn.ModuleList(nn.Conv2d(a, b, k) for a, b, k in zip(widths, widths[1:], kernels_px))
