"""What the network computes: the paper's Figs. 3–5 from any trained MCCNet (`mccscan explain`).

- Fig. 3: a patch with MCs, its CL1 maps F0 and its CL2 maps F1.
- Fig. 4: one CL1 filter's output and the filter's 2-D magnitude response, with the MC
  frequency band (an MC spans 2–14 px at 70 µm: about 1/14 to 1/2 cycles/pixel) marked.
- Fig. 5: the mean F2 vector over patches classified "present" and over "absent".
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mccscan.evaluate import patch_batches, predict_patches, pyplot
from mccscan.models import MCCNet

MC_BAND_CYCLES_PER_PX = (1 / 14, 1 / 2)  # MC sizes 2–14 px at 70 µm


def _maps(model: MCCNet, patch_u8: np.ndarray) -> list[np.ndarray]:
    model.eval()
    with torch.inference_mode():
        x = torch.from_numpy(np.asarray(patch_u8, np.float32) / 255)[None, None]
        return [m[0].numpy() for m in model.conv_features(x)]


def magnitude_response(kernel: np.ndarray, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """|FFT| of a kernel zero-padded to size×size, centred, and the frequency axis (cycles/px)."""
    response = np.abs(np.fft.fftshift(np.fft.fft2(kernel, (size, size))))
    return response, np.fft.fftshift(np.fft.fftfreq(size))


def band_response(kernel: np.ndarray, band=MC_BAND_CYCLES_PER_PX, size: int = 64) -> dict:
    """How much a kernel passes the MC band: the share of its energy |H|² at radial
    frequencies inside the band, and whether its mean |H| there exceeds |H| at DC."""
    response, freq = magnitude_response(kernel, size)
    radius = np.hypot(*np.meshgrid(freq, freq))
    inside = (radius >= band[0]) & (radius <= band[1])
    energy = response ** 2
    return {"band_energy_fraction": float(energy[inside].sum() / energy.sum()),
            "band_pass": bool(response[inside].mean() > abs(kernel.sum()))}


def figure3(model: MCCNet, patch_u8: np.ndarray, out_png: str | Path) -> Path:
    """The patch, its F0 maps (one per CL1 filter) and F1 maps (one per CL2 filter)."""
    f0, f1 = _maps(model, patch_u8)[:2]
    cols = max(len(f0) + 1, 8)
    rows = 1 + -(-len(f1) // cols)
    plt = pyplot()
    fig, axes = plt.subplots(rows, cols, figsize=(1.5 * cols, 1.6 * rows), dpi=110)
    for ax in axes.flat:
        ax.axis("off")
    axes[0, 0].imshow(patch_u8, cmap="gray")
    axes[0, 0].set_title("patch", fontsize=8)
    for k, m in enumerate(f0):
        axes[0, k + 1].imshow(m, cmap="magma")
        axes[0, k + 1].set_title(f"F0 {k + 1}", fontsize=8)
    for k, m in enumerate(f1):
        ax = axes[1 + k // cols, k % cols]
        ax.imshow(m, cmap="magma")
        ax.set_title(f"F1 {k + 1}", fontsize=8)
    fig.suptitle(f"Fig. 3: a patch, its {len(f0)} CL1 maps (F0) and {len(f1)} CL2 maps (F1)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out_png)
    plt.close(fig)
    return Path(out_png)


def figure4(model: MCCNet, patch_u8: np.ndarray, out_png: str | Path, filter_index: int | None = None) -> dict:
    """A CL1 filter's output on the patch and its magnitude response with the MC band.

    By default the filter with the largest share of energy in the MC band is shown; the
    share of every filter is returned."""
    kernels = model.convs[0].weight.detach()[:, 0].numpy()
    responses = [band_response(kk) for kk in kernels]
    fractions = [r["band_energy_fraction"] for r in responses]
    k = int(np.argmax(fractions)) if filter_index is None else filter_index
    response, freq = magnitude_response(kernels[k])
    f0 = _maps(model, patch_u8)[0][k]
    plt = pyplot()
    fig, (a, b, c) = plt.subplots(1, 3, figsize=(10, 3.4), dpi=110)
    a.imshow(f0, cmap="magma")
    a.set_title(f"CL1 filter {k + 1}: output F0", fontsize=9)
    a.axis("off")
    b.imshow(kernels[k], cmap="coolwarm")
    b.set_title(f"filter {k + 1} weights ({kernels.shape[-1]}×{kernels.shape[-1]})", fontsize=9)
    b.axis("off")
    extent = (freq[0], freq[-1], freq[-1], freq[0])
    im = c.imshow(response, cmap="viridis", extent=extent)
    t = np.linspace(0, 2 * np.pi, 200)
    for r in MC_BAND_CYCLES_PER_PX:
        c.plot(r * np.cos(t), r * np.sin(t), "w--", lw=1)
    c.set(title=f"|H|, {fractions[k]:.0%} of energy in the MC band (dashed)", xlabel="cycles/pixel",
          ylabel="cycles/pixel")
    c.title.set_fontsize(9)
    fig.colorbar(im, ax=c, fraction=0.046)
    fig.tight_layout()
    fig.savefig(out_png)
    plt.close(fig)
    return {"png": str(out_png), "filter": k + 1, "band_energy_fraction": fractions,
            "band_pass": [r["band_pass"] for r in responses]}


def mean_f2(model: MCCNet, patches_u8: np.ndarray) -> np.ndarray:
    """F2 (the global-max features) of each patch."""
    model.eval()
    with torch.inference_mode():
        return np.concatenate([model.features(x).f2.numpy() for x in patch_batches(patches_u8)])


def figure5(model: MCCNet, patches_u8: np.ndarray, out_png: str | Path, n: int = 100, seed: int = 0) -> dict:
    """Element-wise mean (± s.d.) of F2 over n patches classified "present" and n "absent"."""
    prob = predict_patches(model, patches_u8)
    rng = np.random.default_rng(seed)
    groups = {}
    for name, members in (("present", np.flatnonzero(prob >= 0.5)), ("absent", np.flatnonzero(prob < 0.5))):
        pick = np.sort(rng.choice(members, min(n, len(members)), replace=False)) if len(members) else members
        groups[name] = mean_f2(model, patches_u8[pick]) if len(pick) else np.zeros((0, model.dense.in_features))
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.4), dpi=120)
    channels = np.arange(1, model.dense.in_features + 1)
    for name, f2 in groups.items():
        if len(f2):
            mean, sd = f2.mean(0), f2.std(0)
            ax.plot(channels, mean, "o-", label=f"{name} ({len(f2)} patches)")
            ax.fill_between(channels, mean - sd, mean + sd, alpha=0.2)
    ax.set(xlabel="F2 element (CL2 filter)", ylabel="mean global max", title="Fig. 5: mean F2, present vs absent")
    ax.set_xticks(channels)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_png)
    plt.close(fig)
    present, absent = groups["present"], groups["absent"]
    higher = int((present.mean(0) > absent.mean(0)).sum()) if len(present) and len(absent) else None
    return {"png": str(out_png), "present": len(present), "absent": len(absent),
            "elements_higher_when_present": higher, "elements": int(model.dense.in_features)}


def explain(model: MCCNet, patches_u8: np.ndarray, labels: np.ndarray, out_dir: str | Path) -> dict:
    """Figs. 3–5 for a model on a patch set; Figs. 3–4 use the MCC patch it is surest of."""
    if not isinstance(model, MCCNet):
        raise ValueError("explain needs the paper's kind of network (conv layers → global max → dense)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    prob = predict_patches(model, patches_u8)
    positives = np.flatnonzero(np.asarray(labels) == 1)
    pick = positives[np.argmax(prob[positives])] if len(positives) else int(np.argmax(prob))
    patch = np.asarray(patches_u8[pick])
    return {"patch_index": int(pick), "patch_probability": float(prob[pick]),
            "fig3": str(figure3(model, patch, out_dir / "fig3_feature_maps.png")),
            "fig4": figure4(model, patch, out_dir / "fig4_filter_response.png"),
            "fig5": figure5(model, patches_u8, out_dir / "fig5_mean_f2.png")}
