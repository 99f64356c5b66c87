"""Every figure the project draws, with matplotlib on the file-only Agg backend: ROC,
calibration, FROC, training curves (the paper's Fig. 6) and the paper's Figs. 3–5.
Each takes results (curves from `mccscan.metrics`) and a PNG path, and returns the path."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mccscan.metrics import calibration, roc_auc


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, out_png: str | Path) -> Path:
    """Lay out, write and close a figure (closing frees it: pyplot keeps every open one)."""
    fig.tight_layout()
    fig.savefig(out_png)
    pyplot().close(fig)
    return Path(out_png)


def plot_roc(curves: dict[str, tuple[np.ndarray, np.ndarray]], out_png: str | Path) -> Path:
    """ROC curves of one or more models, {name: (labels, probabilities)}, AUC in the legend."""
    from sklearn.metrics import roc_curve

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.2, 4.2), dpi=120)
    for name, (labels, prob) in curves.items():
        fpr, tpr, _ = roc_curve(np.asarray(labels).astype(bool), prob)
        ax.plot(fpr, tpr, label=f"{name} (AUC {roc_auc(labels, prob):.3f})")
    ax.plot([0, 1], [0, 1], ls=":", c="grey")
    ax.set(xlabel="1 − specificity", ylabel="sensitivity", title="ROC, test patches", xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    return save_figure(fig, out_png)


def plot_calibration(labels: np.ndarray, probabilities: np.ndarray, out_png: str | Path) -> Path:
    """Reliability diagram (fraction of MCC patches per predicted-probability bin) with counts."""
    cal = calibration(labels, probabilities)
    n_bins = len(cal["bin_count"])
    centres = (np.arange(n_bins) + 0.5) / n_bins
    plt = pyplot()
    fig, (ax, hist) = plt.subplots(2, 1, figsize=(4.2, 5), dpi=120, sharex=True,
                                   gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], ls=":", c="grey", label="perfect")
    ax.plot(cal["mean_probability"], cal["fraction_positive"], "o-", label=f"model (ECE {cal['ece']:.3f})")
    ax.set(ylabel="fraction with MCC", title="calibration, test patches", ylim=(0, 1))
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    hist.bar(centres, cal["bin_count"], width=1 / n_bins, color="grey")
    hist.set(xlabel="predicted P(MCC)", ylabel="patches", xlim=(0, 1))
    return save_figure(fig, out_png)


def plot_froc(result: dict, out_png: str | Path, label: str = "model") -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.8, 3.6), dpi=120)
    ax.plot(result["fp_per_image"], result["sensitivity"], "o-", ms=3, label=label)
    for fp in (0.5, 1.0):
        ax.axvline(fp, ls=":", c="grey")
        ax.annotate(f"{result['sensitivity_at_fp'][str(fp)]:.2f}", (fp, result["sensitivity_at_fp"][str(fp)]),
                    textcoords="offset points", xytext=(4, -12), fontsize=8)
    ax.set(xlabel="false-positive clusters per image", ylabel="cluster sensitivity", ylim=(0, 1.02),
           title=f"FROC: {result['clusters']} clusters on {result['images']} images")
    ax.set_xscale("symlog", linthresh=1)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return save_figure(fig, out_png)


def plot_training_curves(history: list[dict], out_png: Path) -> Path:
    """Training and validation accuracy and loss per epoch (the paper's Fig. 6)."""
    plt = pyplot()
    epochs = [h["epoch"] for h in history]
    fig, (acc, loss) = plt.subplots(1, 2, figsize=(9, 3.4), dpi=120)
    acc.plot(epochs, [h["train_accuracy"] for h in history], label="training")
    acc.plot(epochs, [h["val_accuracy"] for h in history], label="validation")
    acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    loss.plot(epochs, [h["train_loss"] for h in history], label="training")
    loss.plot(epochs, [h["val_loss"] for h in history], label="validation")
    loss.set(xlabel="epoch", ylabel="binary cross-entropy", title="loss")
    for ax in (acc, loss):
        ax.grid(alpha=0.3)
        ax.legend()
    return save_figure(fig, out_png)


def plot_feature_maps(patch_u8: np.ndarray, f0: list[np.ndarray], f1: list[np.ndarray], out_png: str | Path) -> Path:
    """Fig. 3: the patch, its F0 maps (one per CL1 filter) and F1 maps (one per CL2 filter)."""
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
    return save_figure(fig, out_png)


def plot_filter_response(f0: np.ndarray, kernel: np.ndarray, response: np.ndarray, freq: np.ndarray,
                         band_energy_fraction: float, band_cycles_per_px: tuple[float, float], filter_number: int,
                         out_png: str | Path) -> Path:
    """Fig. 4: a CL1 filter's output, its weights and its magnitude response with the MC band."""
    plt = pyplot()
    fig, (a, b, c) = plt.subplots(1, 3, figsize=(10, 3.4), dpi=110)
    a.imshow(f0, cmap="magma")
    a.set_title(f"CL1 filter {filter_number}: output F0", fontsize=9)
    a.axis("off")
    b.imshow(kernel, cmap="coolwarm")
    b.set_title(f"filter {filter_number} weights ({kernel.shape[-1]}×{kernel.shape[-1]})", fontsize=9)
    b.axis("off")
    extent = (freq[0], freq[-1], freq[-1], freq[0])
    im = c.imshow(response, cmap="viridis", extent=extent)
    t = np.linspace(0, 2 * np.pi, 200)
    for r in band_cycles_per_px:
        c.plot(r * np.cos(t), r * np.sin(t), "w--", lw=1)
    c.set(title=f"|H|, {band_energy_fraction:.0%} of energy in the MC band (dashed)", xlabel="cycles/pixel",
          ylabel="cycles/pixel")
    c.title.set_fontsize(9)
    fig.colorbar(im, ax=c, fraction=0.046)
    return save_figure(fig, out_png)


def plot_mean_f2(groups: dict[str, np.ndarray], out_png: str | Path) -> Path:
    """Fig. 5: element-wise mean (± s.d.) of F2 per group of patches, {name: (N, C)}."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.4), dpi=120)
    channels = np.arange(1, max(f2.shape[1] for f2 in groups.values()) + 1)
    for name, f2 in groups.items():
        if len(f2):
            mean, sd = f2.mean(0), f2.std(0)
            ax.plot(channels, mean, "o-", label=f"{name} ({len(f2)} patches)")
            ax.fill_between(channels, mean - sd, mean + sd, alpha=0.2)
    ax.set(xlabel="F2 element (CL2 filter)", ylabel="mean global max", title="Fig. 5: mean F2, present vs absent")
    ax.set_xticks(channels)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, out_png)


def plot_cluster_frocs(results: dict[str, dict], out_png: str | Path, title: str = "") -> Path:
    """Cluster FROC curves of several detectors ({name: metrics.cluster_froc result}) with the
    sensitivity and its 95% CI at each reported false-positive rate."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.6, 4.0), dpi=130)
    for name, r in results.items():
        points = sorted(zip(r["fp_per_image"], r["sensitivity"]))
        line, = ax.plot([p[0] for p in points], [p[1] for p in points], drawstyle="steps-post", label=name)
        for f, at in r["sensitivity_at_fp"].items():
            lo, hi = at["ci95"]
            ax.errorbar(float(f), at["value"], yerr=[[at["value"] - lo], [hi - at["value"]]], fmt="o", ms=3,
                        capsize=2, color=line.get_color())
    ax.set(xlabel="false-positive clusters per image", ylabel="cluster sensitivity", xlim=(0, 3), ylim=(0, 1.02),
           title=title)
    ax.grid(alpha=0.3)
    ax.legend(loc="center right", fontsize=8)
    return save_figure(fig, out_png)


def plot_realism(crops: dict[str, list[np.ndarray]], stats: dict[str, list[dict]], out_png: str | Path,
                 reference: str = "real") -> Path:
    """Realism at a glance: a row of crops per group in `crops` (each windowed to its own
    1–99 % range), then one strip per statistic with every image's value per group of
    `stats` and the `reference` group's range shaded."""
    plt = pyplot()
    keys = list(stats[reference][0])
    n_cols = max([len(c) for c in crops.values()] + [len(keys)])
    fig = plt.figure(figsize=(2.0 * n_cols, 2.0 * len(crops) + 2.4), dpi=110)
    grid = fig.add_gridspec(len(crops) + 1, n_cols, height_ratios=[1] * len(crops) + [1.2])
    for g, (group, images) in enumerate(crops.items()):
        for k, crop in enumerate(images):
            ax = fig.add_subplot(grid[g, k])
            lo, hi = np.percentile(crop, [1, 99])
            ax.imshow(np.clip((crop - lo) / max(hi - lo, 1e-6), 0, 1), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([]), ax.set_yticks([])
            if k == 0:
                ax.set_ylabel(group)
    for k, key in enumerate(keys):
        ax = fig.add_subplot(grid[len(crops), k])
        real = [s[key] for s in stats[reference]]
        ax.axhspan(min(real), max(real), color="tab:blue", alpha=0.15)
        for g, group in enumerate(stats):
            values = [s[key] for s in stats[group]]
            ax.plot(np.full(len(values), g) + np.linspace(-0.15, 0.15, len(values)), values, "o", ms=3)
        ax.set_xticks(range(len(stats)), list(stats), fontsize=7)
        ax.set_title(key, fontsize=8)
    return save_figure(fig, out_png)
