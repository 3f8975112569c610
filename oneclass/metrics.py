"""Metrics of the protocol. Label 1 = anomalous (the positive class); higher score =
more anomalous. Sensitivity is the true-positive rate on anomalies, specificity the
true-negative rate on normals."""

from __future__ import annotations

import numpy as np

from oneclass.errors import OneclassError


def _check(labels: np.ndarray, scores: np.ndarray, name: str) -> None:
    if len(labels) == 0:
        raise OneclassError(f"{name}: no labelled rows to evaluate")
    n_pos = int(labels.sum())
    if n_pos in (0, len(labels)):
        raise OneclassError(f"{name}: AUROC needs normal and anomalous rows; got "
                            f"{len(labels) - n_pos} normal and {n_pos} anomalous")
    if not np.isfinite(scores).all():
        raise OneclassError(f"{name}: scores contain NaN or infinity")


def auroc(labels, scores) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores))


def auprc(labels, scores) -> float:
    """Average precision (the step-wise area under the precision-recall curve)."""
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(labels, scores))


def equal_error_threshold(labels, scores) -> float:
    """The threshold where sensitivity = specificity (closest point on the ROC curve)."""
    from sklearn.metrics import roc_curve

    fpr, tpr, thresholds = roc_curve(labels, scores)
    i = int(np.argmin(np.abs(tpr - (1 - fpr))[1:])) + 1  # [0] is the +inf threshold
    return float(thresholds[i])


def youden_threshold(labels, scores) -> float:
    """The threshold maximising sensitivity + specificity (for tuning on validation)."""
    from sklearn.metrics import roc_curve

    fpr, tpr, thresholds = roc_curve(labels, scores)
    i = int(np.argmax((tpr - fpr)[1:])) + 1
    return float(thresholds[i])


def confusion(labels, scores, threshold: float) -> dict:
    """Counts and rates when ``score >= threshold`` is called anomalous."""
    labels = np.asarray(labels).astype(bool)
    predicted = np.asarray(scores) >= threshold
    tp = int((predicted & labels).sum())
    fn = int((~predicted & labels).sum())
    tn = int((~predicted & ~labels).sum())
    fp = int((predicted & ~labels).sum())
    return {"threshold": float(threshold), "tp": tp, "fn": fn, "tn": tn, "fp": fp,
            "accuracy": (tp + tn) / len(labels),
            "sensitivity": tp / (tp + fn) if tp + fn else float("nan"),
            "specificity": tn / (tn + fp) if tn + fp else float("nan")}


def evaluate_scores(labels, scores, name: str, val: tuple | None = None) -> dict:
    """AUROC, AUPRC and the two thresholds (equal-error on these scores, and Youden's on
    ``val`` = (labels, scores) when given) with their confusion counts."""
    labels, scores = np.asarray(labels), np.asarray(scores, dtype=float)
    _check(labels, scores, name)
    out = {"n": int(len(labels)), "anomalous": int(labels.sum()),
           "auroc": auroc(labels, scores), "auprc": auprc(labels, scores),
           "at_equal_error": confusion(labels, scores, equal_error_threshold(labels, scores))}
    if val is not None:
        val_labels, val_scores = np.asarray(val[0]), np.asarray(val[1], dtype=float)
        _check(val_labels, val_scores, f"{name} (validation)")
        out["at_val_threshold"] = confusion(labels, scores, youden_threshold(val_labels, val_scores))
    return out


def pixel_auroc(masks: np.ndarray, maps: np.ndarray) -> float | None:
    """AUROC over every pixel of the patches; None when the masks hold one class only."""
    truth = np.asarray(masks).reshape(-1).astype(bool)
    if truth.all() or not truth.any():
        return None
    return auroc(truth, np.asarray(maps, dtype=np.float32).reshape(-1))


def wilcoxon(a, b) -> dict:
    """Paired two-sided Wilcoxon signed-rank test of a - b (exact for small samples)."""
    from scipy.stats import wilcoxon as test

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    diff = a - b
    if len(diff) < 2 or not np.any(diff):
        return {"n": int(len(diff)), "statistic": None, "p": None, "mean_difference": float(diff.mean()) if len(diff) else None}
    result = test(a, b)
    return {"n": int(len(diff)), "statistic": float(result.statistic), "p": float(result.pvalue),
            "mean_difference": float(diff.mean())}


def silhouette(vectors: np.ndarray, labels: np.ndarray) -> float | None:
    from sklearn.metrics import silhouette_score

    if len(set(np.asarray(labels).tolist())) < 2:
        return None
    return float(silhouette_score(vectors, labels))
