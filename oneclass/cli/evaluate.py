"""``oneclass evaluate``: score tables or run folders → metrics, tables, a figure."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Optional

import typer

from oneclass.artifacts import check_output_file
from oneclass.cli.console import err
from oneclass.errors import OneclassError


def evaluate(
    inputs: list[str] = typer.Argument(..., help="Run folders, score files (CSV or JSON lines), "
                                       "or - for a score table on standard input."),
    format: Optional[str] = typer.Option(None, "--format", "-f",
                                         help="Also print the results on stdout: csv (one row per "
                                         "input) or json (inputs, groups and tests)."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Draw test AUROC against gamma "
                                        "(mean +- std per method) into this PNG."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No table on stderr."),
) -> None:
    """AUROC, AUPRC and thresholds of runs or score tables.

    Thresholds: where sensitivity = specificity on the scores themselves, and (for runs)
    the one maximising sensitivity + specificity on the run's validation scores, each
    with confusion counts (anomalous = positive) and accuracy. Runs are grouped by
    dataset, method and gamma (few-shot runs by their labelled anomalies; a run named
    twice counts once), with mean +- sample std over repeats, and methods are compared
    by a paired Wilcoxon signed-rank test per dataset and gamma, pairing runs of one seed. Runs
    of one method whose recipes differ in more than seed and speed settings are kept
    apart, each method named with the keys that differ ("deep-sad (eta=2.0)"); two runs
    of one method, settings and seed are refused.

    Image level: for patch runs, image AUROC and AUPRC from scores/test_images.csv (each
    source image's patch scores aggregated by the recipe's evaluate.image_score); score
    tables with a source column are aggregated by topk_mean (k = 0.1). Shown where both
    classes are present among the images.
    """
    from oneclass.report import compare_methods, group, load_inputs

    if format not in (None, "csv", "json"):
        raise OneclassError(f"--format: expected csv or json, got {format!r}")
    if plot is not None and plot.suffix.lower() != ".png":
        raise OneclassError(f"--plot: {plot}: expected a .png file name")
    if plot is not None:
        check_output_file(plot, "--plot")
    stdin = sys.stdin.read() if "-" in inputs else None
    results = load_inputs(inputs, stdin)
    groups = [g.summary() for g in group(results)]
    if plot is not None and not any(g["gamma"] is not None for g in groups):  # refused before any output
        raise OneclassError("--plot: AUROC against gamma needs run folders of a split.gamma (score files "
                            "and few-shot runs carry none)")
    tests = compare_methods(results)
    if not quiet:
        print_tables(results, groups, tests)
    if format == "csv":
        rows = [r.flat() for r in results]
        columns = list(dict.fromkeys(k for row in rows for k in row))
        writer = csv.DictWriter(sys.stdout, columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    elif format == "json":
        selections = {r.name: r.selection for r in results if r.selection is not None}
        json.dump({"inputs": [r.flat() for r in results], "groups": groups, "wilcoxon": tests,
                   **({"selections": selections} if selections else {})}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    if plot is not None:
        from oneclass.plots import auc_vs_gamma

        auc_vs_gamma(groups, plot)
        if not quiet:
            err.print(f"figure: {plot}")


def _pm(group: dict, key: str) -> str:
    """``mean ± std (n=R)`` over the R runs that have the metric; a single run's value alone."""
    mean, n = group[f"{key}_mean"], group[f"{key}_n"]
    if mean is None:
        return ""
    return f"{mean:.4f}" if n == 1 else f"{mean:.4f} ± {group[f'{key}_std']:.4f} (n={n})"


def print_tables(results, groups, tests) -> None:
    from rich.table import Table

    # image columns only where some input has image metrics (patch runs, tables with sources)
    images = any(r.metrics.get("image") for r in results)
    table = Table(title="test metrics (mean ± sample std over n runs)", title_justify="left")
    for column in ("dataset", "method", "gamma", "runs", "AUROC", "AUPRC", "acc@val thr", "pixel AUROC",
                   "pixel AUROC/item",
                   *(("image AUROC", "image AUPRC") if images else ())):
        table.add_column(column, justify="left" if column in ("dataset", "method") else "right")
    for g in groups:
        acc = g["val_threshold_accuracy_mean"]
        labels = (f"{g['labeled_anomalies']} shots" if g["labeled_anomalies"] is not None else
                  "" if g["gamma"] is None else f"{g['gamma']:g}")
        table.add_row(g["dataset"], g["method"], labels,
                      str(g["n"]), _pm(g, "auroc"), _pm(g, "auprc"),
                      "" if acc is None else f"{acc:.3f}", _pm(g, "pixel_auroc"), _pm(g, "pixel_auroc_per_item"),
                      *((_pm(g, "image_auroc"), _pm(g, "image_auprc")) if images else ()))
    err.print(table)
    if len(results) <= 12:
        detail = Table(title="per input", title_justify="left")
        for column in ("input", "AUROC", "EER threshold", "TP/FN/TN/FP", "accuracy",
                       *(("image AUROC", "images (anomalous)", "image score") if images else ())):
            detail.add_column(column)
        for r in results:
            at = r.metrics["at_equal_error"]
            row = r.flat()
            extra = ("" if row["image_auroc"] is None else f"{row['image_auroc']:.4f}",
                     "" if row["images"] is None else f"{row['images']} ({row['anomalous_images']})",
                     row["image_score"] or "")
            detail.add_row(r.name, f"{r.metrics['auroc']:.4f}", f"{at['threshold']:.5g}",
                           f"{at['tp']}/{at['fn']}/{at['tn']}/{at['fp']}", f"{at['accuracy']:.3f}",
                           *(extra if images else ()))
        err.print(detail)
    for r in results:
        if r.selection is not None:
            err.print(_selection_table(r.name, r.selection))
    if tests:
        paired = Table(title="paired Wilcoxon signed-rank tests (test AUROC)", title_justify="left")
        for column in ("dataset", "gamma", "method A", "method B", "pairs", "mean A−B", "p"):
            paired.add_column(column)
        for t in tests:
            p = "" if t["p"] is None else f"{t['p']:.4g}"
            labels = (f"{t['labeled_anomalies']} shots" if t["labeled_anomalies"] is not None else
                      "" if t["gamma"] is None else f"{t['gamma']:g}")
            paired.add_row(t["dataset"], labels, t["method_a"], t["method_b"], str(t["n"]),
                           f"{t['mean_difference']:+.4f}", p)
        err.print(paired)


def _selection_table(name: str, record: dict):
    """A run's hyperparameter selection (select.json): every grid point's held-out folds."""
    from rich.table import Table

    metric = record["metric"].upper()
    table = Table(title=f"hyperparameter selection of {name}: {metric} on {record['folds']} held-out folds "
                        f"of the validation set (anomalies per fold: "
                        f"{', '.join(map(str, record['fold_anomalies']))})", title_justify="left")
    for key in record["grid"]:
        table.add_column(key)
    for column in ("folds", "mean ± std", "chosen"):
        table.add_column(column, justify="left" if column == "folds" else "right")
    for i, point in enumerate(record["points"]):
        folds = ", ".join("diverged" if v is None else f"{v:.4f}" for v in point["folds"])
        mean = "" if point["mean"] is None else f"{point['mean']:.4f} ± {point['std']:.4f}"
        table.add_row(*(str(point["values"][key]) for key in record["grid"]), folds, mean,
                      "✓" if i == record["chosen"] else "")
    return table
