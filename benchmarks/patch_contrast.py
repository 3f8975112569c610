"""Why reconstruction scores are inverted on some data sets: how well the test patches'
own smoothness separates anomalies from normals, with no model at all.

    python benchmarks/patch_contrast.py [--out benchmarks/results/patch-contrast]
        [--datasets nanofibre,busi,leather] [--protocols honest,paper] [--seeds 10]

For every data set, split protocol and seed (the shipped recipe's test set, as
``benchmarks/accuracy.py`` makes it; a seed's test set is the same at every gamma, drawn
before the training set), the test AUROC of three plain statistics of a
patch: its pixel standard deviation (contrast), its mean |Laplacian| (high-frequency
energy: fine texture, edges) and its mean intensity. An AUROC well below 0.5 for the
first two says the anomalies are *smoother* than the normal patches, so an autoencoder
reconstructs them at least as well and an error score reads them as normal. Where
``--grid`` names a merged.csv of accuracy runs (default: the committed grid), each
statistic's per-split AUROC is set beside the error and latent-norm scores' AUROC on the
same test sets (Pearson r over the seeds).

Writes OUT/runs.csv (one row per data set, protocol, seed) and OUT/table.md.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from accuracy import PROTOCOLS, RECIPES, ROOT  # noqa: E402

STATISTICS = ("std", "laplacian", "mean")
COLUMNS = ["dataset", "protocol", "seed", *STATISTICS]
BATCH = 512
# error or latent-norm scores that read smoothness (ss-DCAE with labels; the unsupervised
# models, gamma 0); their per-split AUROC from the grid, for the r column
COMPARED = (("ss-dcae", 0.2), ("ss-vq-vae", 0.0), ("ss-vae", 0.0), ("c-ss-ms-gvae", 0.0))


def patch_statistics(images: np.ndarray) -> dict[str, np.ndarray]:
    """Per patch (N, C, H, W): pixel std (within each channel, averaged over channels: a
    colour patch's contrast, not the gap between its channels), mean |4-neighbour
    Laplacian|, mean intensity."""
    x = images.astype(np.float64)
    lap = (4 * x[..., 1:-1, 1:-1] - x[..., :-2, 1:-1] - x[..., 2:, 1:-1]
           - x[..., 1:-1, :-2] - x[..., 1:-1, 2:])
    return {"std": x.std(axis=(2, 3)).mean(axis=1), "laplacian": np.abs(lap).mean(axis=(1, 2, 3)),
            "mean": x.mean(axis=(1, 2, 3))}


def split_row(dataset: str, protocol: str, seed: int) -> dict:
    from oneclass import api

    config = api.load_recipe(ROOT / RECIPES[dataset], [PROTOCOLS[protocol], f"seed={seed}"])
    config.dataset.root = str((ROOT / config.dataset.root).resolve())
    test = api.split(api.patch_store(config), config).test
    values = {name: [] for name in STATISTICS}
    for start in range(0, len(test.rows), BATCH):
        for name, v in patch_statistics(np.asarray(test.images[test.rows[start:start + BATCH]])).items():
            values[name].append(v)
    return {"dataset": dataset, "protocol": protocol, "seed": seed,
            **{name: round(api.auroc(test, np.concatenate(v)), 4) for name, v in values.items()}}


def grid_aurocs(path: Path) -> dict[tuple, float]:
    """(dataset, protocol, seed, method, gamma) -> test AUROC, from an accuracy merged.csv."""
    if not path.is_file():
        return {}
    with open(path, newline="") as fh:
        return {(r["dataset"], r["protocol"], int(r["seed"]), r["method"], float(r["gamma"])): float(r["auroc"])
                for r in csv.DictReader(fh)}


def _pearson(x: np.ndarray, y: np.ndarray) -> str:
    if x.std() == 0 or y.std() == 0:
        return "–"  # undefined: one side never varies
    return f"{np.corrcoef(x, y)[0, 1]:+.2f}"


def report(rows: list[dict], grid: dict[tuple, float]) -> str:
    lines = ["Test AUROC of a patch statistic alone: mean ± std over seeds (n) [min, max]. Below 0.5: "
             "the anomalies have less of it than the normals.", "",
             "| dataset | protocol | pixel std | mean abs Laplacian | mean intensity |",
             "|---|---|---|---|---|"]
    cells: dict[tuple, list[dict]] = {}
    for row in rows:
        cells.setdefault((row["dataset"], row["protocol"]), []).append(row)
    for (dataset, protocol), group in sorted(cells.items()):
        parts = []
        for name in STATISTICS:
            v = np.array([float(r[name]) for r in group])
            spread = f" ± {v.std(ddof=1):.3f}" if len(v) > 1 else ""
            parts.append(f"{v.mean():.3f}{spread} ({len(v)}) [{v.min():.2f}, {v.max():.2f}]")
        lines.append(f"| {dataset} | {protocol} | " + " | ".join(parts) + " |")
    compared = []
    for (dataset, protocol), group in sorted(cells.items()):
        for method, gamma in COMPARED:
            runs = [(r, grid.get((dataset, protocol, int(r["seed"]), method, gamma))) for r in group]
            runs = [(r, a) for r, a in runs if a is not None]
            if len(runs) < 3:
                continue
            method_auroc = np.array([a for _, a in runs])
            r_values = [_pearson(np.array([float(r[name]) for r, _ in runs]), method_auroc) for name in STATISTICS]
            compared.append(f"| {dataset} | {protocol} | {method} | {gamma:g} | {method_auroc.mean():.3f} "
                            f"({len(runs)}) | " + " | ".join(r_values) + " |")
    if compared:
        lines += ["", "Beside methods' test AUROC on the same test sets: Pearson r over seeds between "
                  "each statistic's AUROC and the method's.", "",
                  "| dataset | protocol | method | gamma | method's AUROC (n) | r, pixel std | "
                  "r, Laplacian | r, intensity |", "|---|---|---|---|---|---|---|---|", *compared]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/patch-contrast")
    parser.add_argument("--datasets", default="nanofibre,busi,leather")
    parser.add_argument("--protocols", default="honest,paper")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--grid", type=Path, default=ROOT / "benchmarks/results/accuracy-grid/merged.csv")
    args = parser.parse_args()
    rows = [split_row(d, p, s) for d in args.datasets.split(",")
            for p in args.protocols.split(",") for s in range(args.seeds)]
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "runs.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    table = report(rows, grid_aurocs(args.grid))
    (args.out / "table.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
