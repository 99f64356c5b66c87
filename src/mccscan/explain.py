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

from mccscan.dataset_dir import PatchDataset
from mccscan.errors import InputError
from mccscan.models import MCCNet
from mccscan.patches import phantom_patches
from mccscan.plots import plot_feature_maps, plot_filter_response, plot_mean_f2
from mccscan.predict import predict_f2, predict_patches

MC_BAND_CYCLES_PER_PX = (1 / 14, 1 / 2)  # MC sizes 2–14 px at 70 µm
PHANTOM_SEEDS = range(30_000, 30_004)  # without a dataset: phantoms no shipped training used


def explain_patches(data_dir: str | Path | None, split: str = "test") -> tuple[np.ndarray, np.ndarray, str]:
    """The patches to explain, their labels and what they are: a built dataset's split,
    or without one, labelled patches of four phantom mammograms."""
    if data_dir is not None:
        return (*PatchDataset(data_dir).load_split(split), f"{data_dir} ({split} split)")
    patches, labels = phantom_patches(PHANTOM_SEEDS, seed=PHANTOM_SEEDS.start)
    return patches, labels, f"{len(PHANTOM_SEEDS)} phantom mammograms (synthetic, not patient data)"


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
    return plot_feature_maps(patch_u8, f0, f1, out_png)


def figure4(model: MCCNet, patch_u8: np.ndarray, out_png: str | Path, filter_index: int | None = None) -> dict:
    """A CL1 filter's output on the patch and its magnitude response with the MC band.

    By default the filter with the largest share of energy in the MC band is shown; the
    share of every filter is returned."""
    kernels = model.convs[0].weight.detach()[:, 0].numpy()
    responses = [band_response(kk) for kk in kernels]
    fractions = [r["band_energy_fraction"] for r in responses]
    k = int(np.argmax(fractions)) if filter_index is None else filter_index
    response, freq = magnitude_response(kernels[k])
    plot_filter_response(_maps(model, patch_u8)[0][k], kernels[k], response, freq, fractions[k],
                         MC_BAND_CYCLES_PER_PX, k + 1, out_png)
    return {"png": str(out_png), "filter": k + 1, "band_energy_fraction": fractions,
            "band_pass": [r["band_pass"] for r in responses]}


def figure5(model: MCCNet, patches_u8: np.ndarray, out_png: str | Path, n: int = 100, seed: int = 0) -> dict:
    """Element-wise mean (± s.d.) of F2 over n patches classified "present" and n "absent"."""
    prob = predict_patches(model, patches_u8)
    rng = np.random.default_rng(seed)
    groups = {}
    for name, members in (("present", np.flatnonzero(prob >= 0.5)), ("absent", np.flatnonzero(prob < 0.5))):
        pick = np.sort(rng.choice(members, min(n, len(members)), replace=False)) if len(members) else members
        groups[name] = predict_f2(model, patches_u8[pick])
    plot_mean_f2(groups, out_png)
    present, absent = groups["present"], groups["absent"]
    higher = int((present.mean(0) > absent.mean(0)).sum()) if len(present) and len(absent) else None
    return {"png": str(out_png), "present": len(present), "absent": len(absent),
            "elements_higher_when_present": higher, "elements": int(model.dense.in_features)}


def explain(model: MCCNet, patches_u8: np.ndarray, labels: np.ndarray, out_dir: str | Path) -> dict:
    """Figs. 3–5 for a model on a patch set; Figs. 3–4 use the MCC patch it is surest of."""
    if not isinstance(model, MCCNet):
        raise InputError("explain needs the paper's kind of network (conv layers → global max → dense)")
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
