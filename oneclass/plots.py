"""Figures: AUC versus gamma with error bars (the papers' Figs. 4, 8, 11) and t-SNE maps
of latent vectors marked by outcome (c-ss-ms-gvae.txt Figs. 5 and 9). Files are
written under a temporary name and renamed."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from oneclass.artifacts import write_atomic


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=150, bbox_inches="tight"))


def auc_vs_gamma(groups: list[dict], path: Path) -> None:
    """One panel per dataset: mean test AUROC ± sample std over runs against gamma, a line
    per method (the papers' Figs. 4, 8, 11); with a single gamma a line means nothing, so
    the panel is a bar per method. The legend gives each method's number of runs, and
    the chance level (0.5) is drawn. A method keeps one colour and marker in every panel;
    past ten methods (the colour cycle's length) markers and dashes tell them apart."""
    plt = _pyplot()
    groups = [g for g in groups if g["gamma"] is not None]  # score tables and few-shot runs have none
    datasets = sorted({g["dataset"] for g in groups})
    style = {method: _method_style(i) for i, method in enumerate(sorted({g["method"] for g in groups}))}
    fig, axes = plt.subplots(1, len(datasets), figsize=(7.5 * len(datasets), 4), squeeze=False,
                             layout="constrained")
    for ax, dataset in zip(axes[0], datasets):
        rows = [g for g in groups if g["dataset"] == dataset]
        methods = sorted({g["method"] for g in rows})
        gammas = sorted({g["gamma"] for g in rows})
        for i, method in enumerate(methods):
            points = sorted((g["gamma"], g["auroc_mean"], g["auroc_std"] or 0.0, g["n"])
                            for g in rows if g["method"] == method)
            xs, means, stds, runs = map(np.array, zip(*points))
            label = f"{method} (n = {_runs(runs)})"
            color, marker, line = style[method]
            if len(gammas) == 1:
                ax.bar(i, means[0], width=0.6, yerr=stds[0], capsize=3, label=label, color=color)
            else:
                ax.errorbar(xs, means, yerr=stds, marker=marker, linestyle=line, color=color, capsize=3,
                            label=label)
        ax.axhline(0.5, color="grey", linestyle="--", linewidth=1, label="chance")
        if len(gammas) == 1:
            ax.set_xticks(range(len(methods)), methods, rotation=30, ha="right", fontsize=8)
            ax.set_xlim(-0.8, max(len(methods), 2) - 0.2)
            ax.set_title(f"{dataset or 'scores'}, gamma {gammas[0]:g}")
        else:
            ax.set_title(dataset or "scores")
            ax.set_xlabel("gamma (labelled anomalies / training set)")
        ax.set_ylabel("test AUROC (mean ± std over runs)")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1), borderaxespad=0)  # off the data
    _save(fig, path)
    plt.close(fig)


def _method_style(index: int) -> tuple[str, str, str]:
    """Colour, marker and line style of the index-th method: the ten cycle colours, then
    again with another marker and line."""
    turn = index // 10
    return f"C{index % 10}", "osD^v"[turn % 5], ("-", "--", ":", "-.")[turn % 4]


def _runs(counts: np.ndarray) -> str:
    """Runs per point: one number, or the range where gammas had different counts."""
    low, high = int(counts.min()), int(counts.max())
    return f"{low}" if low == high else f"{low}-{high}"


OUTCOME_STYLE = {"TP": ("tab:red", "o"), "FN": ("tab:red", "x"),
                 "TN": ("tab:blue", "o"), "FP": ("tab:blue", "x")}


def tsne_map(points: np.ndarray, outcomes: list[str], title: str, path: Path) -> None:
    """Points coloured by ground truth (red anomalous, blue normal), marked by outcome."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 6))
    outcomes = np.asarray(outcomes)
    for outcome, (colour, marker) in OUTCOME_STYLE.items():
        pick = outcomes == outcome
        if pick.any():
            kind = "anomalous" if outcome in ("TP", "FN") else "normal"
            ax.scatter(points[pick, 0], points[pick, 1], c=colour, marker=marker, s=12,
                       linewidths=0.8, label=f"{outcome} ({kind}, {int(pick.sum())})")
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0)  # off the points
    _save(fig, path)
    plt.close(fig)


def map_overlay(pixels: np.ndarray, heat: np.ndarray, title: str, path: Path) -> None:
    """An item (C, H, W uint8) beside the same with its anomaly map (H, W) laid over it in
    colour (scaled to the map's own range, its scale bar beside it), titled."""
    plt = _pyplot()
    image = pixels[0] if pixels.shape[0] == 1 else np.moveaxis(pixels, 0, -1)
    cmap = "gray" if pixels.shape[0] == 1 else None
    fig, axes = plt.subplots(1, 2, figsize=(7, 3.6))
    for ax in axes:
        ax.imshow(image, cmap=cmap, vmin=0, vmax=255, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
    shown = axes[1].imshow(heat, cmap="inferno", alpha=0.55, interpolation="bilinear")
    fig.colorbar(shown, ax=axes[1], fraction=0.046, pad=0.04, label="anomaly map")
    axes[0].set_title("input", fontsize=9)
    axes[1].set_title("map over input", fontsize=9)
    fig.suptitle(title, fontsize=9)
    _save(fig, path)
    plt.close(fig)
