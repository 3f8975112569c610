"""Metrics of the protocol. Label 1 = anomalous (the positive class); higher score =
more anomalous. Sensitivity is the true-positive rate on anomalies, specificity the
true-negative rate on normals."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np

from oneclass.errors import OneclassError


def _check(labels: np.ndarray, scores: np.ndarray, name: str) -> None:
    if len(labels) == 0:
        raise OneclassError(f"{name}: no labelled rows to evaluate")
    other = np.setdiff1d(labels, (0, 1))
    if len(other):
        raise OneclassError(f"{name}: labels must be 0 (normal) or 1 (anomalous), found {other[0].item()!r}")
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
    """The threshold where sensitivity = specificity (closest point on the ROC curve;
    every threshold is kept: the collinear points roc_curve drops by default can hold it)."""
    from sklearn.metrics import roc_curve

    fpr, tpr, thresholds = roc_curve(labels, scores, drop_intermediate=False)
    i = int(np.argmin(np.abs(tpr - (1 - fpr))[1:])) + 1  # [0] is the +inf threshold
    return float(thresholds[i])


def youden_threshold(labels, scores) -> float:
    """The threshold maximising sensitivity + specificity (for tuning on validation)."""
    from sklearn.metrics import roc_curve

    fpr, tpr, thresholds = roc_curve(labels, scores, drop_intermediate=False)
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


# -- image level: patch scores aggregated per source image ----------------------------

IMAGE_SCORES = ("max", "mean", "topk_mean")


def check_image_rule(how: str, k: float) -> None:
    """``evaluate.image_score`` and ``evaluate.image_topk`` as the recipe gives them."""
    if how not in IMAGE_SCORES:
        raise OneclassError(f"evaluate.image_score: expected one of {', '.join(IMAGE_SCORES)}, got {how!r}")
    if how == "topk_mean" and not (isinstance(k, (int, float)) and 0 < k <= 1):
        raise OneclassError(f"evaluate.image_topk: the share of an image's patches averaged by "
                            f"topk_mean must lie in (0, 1], got {k!r}")


def image_rule(how: str, k: float) -> dict:
    """The aggregation as metrics.json records it (k only where it is used)."""
    return {"image_score": how, "image_topk": float(k)} if how == "topk_mean" else {"image_score": how}


def describe_rule(rule: dict) -> str:
    """``topk_mean(0.1)``, ``max``, ``mean``: the aggregation in one word, for tables."""
    how = rule.get("image_score", "")
    return f"{how}({rule['image_topk']:g})" if how == "topk_mean" and "image_topk" in rule else how


def topk_count(n: int, k: float) -> int:
    """How many of an image's ``n`` patch scores topk_mean averages: ceil(k·n), at least 1.
    k·n is rounded to 9 decimals first, so 0.1·30 counts 3 patches, not 4 (it is
    3.0000000000000004 in floating point)."""
    return min(n, max(1, math.ceil(round(k * n, 9))))


def image_score(scores, how: str = "topk_mean", k: float = 0.1) -> float:
    """One image's score from its patch scores: their maximum, their mean, or (DevNet's
    top-k rule) the mean of the ceil(k·n) highest."""
    scores = np.asarray(scores, dtype=float).reshape(-1)
    if len(scores) == 0:
        raise ValueError("an image needs at least one patch score")
    if how == "max":
        return float(scores.max())
    if how == "mean":
        return float(scores.mean())
    if how == "topk_mean":
        return float(np.sort(scores)[::-1][:topk_count(len(scores), k)].mean())
    check_image_rule(how, k)
    raise AssertionError(how)


def aggregate_images(sources, labels, subclasses, scores, how: str = "topk_mean",
                     k: float = 0.1) -> list[dict]:
    """One row per source image (artifacts.IMAGE_COLUMNS), sorted by source.

    Label: 1 (anomalous) when any of the image's patches is anomalous, else 0 when all are
    known to be normal, else None (unknown; a label < 0 or None is unknown). Subclass: the
    most frequent subclass among the anomalous patches (ties: the first in alphabetical
    order; None when they carry none), "good" for a normal image, None when unknown."""
    check_image_rule(how, k)
    members: dict[str, list[int]] = {}
    for i, source in enumerate(sources):
        members.setdefault(str(source), []).append(i)
    scores = np.asarray(scores, dtype=float).reshape(-1)
    subclasses = list(subclasses) if subclasses is not None else [None] * len(scores)
    out = []
    for source in sorted(members):
        rows = members[source]
        known = [None if labels[i] is None or int(labels[i]) < 0 else int(labels[i]) for i in rows]
        if 1 in known:
            label = 1
            counts = Counter(subclasses[i] for i, lab in zip(rows, known) if lab == 1 and subclasses[i])
            subclass = min(counts, key=lambda s: (-counts[s], s)) if counts else None
        elif None in known:
            label, subclass = None, None
        else:
            label, subclass = 0, "good"
        out.append({"source": source, "label": label, "subclass": subclass, "patches": len(rows),
                    "score": image_score(scores[rows], how, k)})
    return out


def image_metrics(labels, scores, rule: dict, what: str = "images") -> tuple[dict | None, str | None]:
    """(metrics, None) — AUROC, AUPRC, images, anomalous images and the aggregation ``rule``
    — where the images with known labels hold both classes; else (None, why not)."""
    labels = np.asarray([-1 if lab is None else int(lab) for lab in labels], dtype=int)
    scores = np.asarray(scores, dtype=float)
    known = labels >= 0
    labels, scores = labels[known], scores[known]
    n, n_pos = int(len(labels)), int(labels.sum())
    if n_pos in (0, n):
        return None, (f"{what}: image AUROC needs normal and anomalous images; got {n - n_pos} "
                      f"normal and {n_pos} anomalous")
    if not np.isfinite(scores).all():
        raise OneclassError(f"{what}: image scores contain NaN or infinity")
    return {"n": n, "anomalous": n_pos, "auroc": auroc(labels, scores), "auprc": auprc(labels, scores),
            "aggregation": dict(rule)}, None


def _finite_maps(maps) -> np.ndarray:
    values = np.asarray(maps, dtype=np.float32)
    if not np.isfinite(values).all():
        raise OneclassError(f"anomaly maps: {int((~np.isfinite(values)).sum())} pixel(s) NaN or infinite "
                            f"(the method's explain diverged, or overflowed under train.amp)")
    return values


def pixel_auroc(masks: np.ndarray, maps: np.ndarray) -> float | None:
    """AUROC over every pixel of the patches; None when the masks hold one class only."""
    truth = np.asarray(masks).reshape(-1).astype(bool)
    if truth.all() or not truth.any():
        return None
    return auroc(truth, _finite_maps(maps).reshape(-1))


def pixel_auroc_per_image(masks: np.ndarray, maps: np.ndarray) -> tuple[float | None, int]:
    """The mean of per-item pixel AUROCs over the items whose mask holds both classes
    (DevNet's localisation figure, Pang et al. Sec. 6.9: anomalous test images), and how
    many items that is; (None, 0) when there is none."""
    truth = np.asarray(masks).reshape(len(masks), -1).astype(bool)
    values = _finite_maps(maps).reshape(len(maps), -1)
    scores = [auroc(t, v) for t, v in zip(truth, values) if t.any() and not t.all()]
    return (float(np.mean(scores)), len(scores)) if scores else (None, 0)


def wilcoxon(a, b) -> dict:
    """Paired two-sided Wilcoxon signed-rank test of a - b (exact for small samples
    without ties). The differences are rounded to 12 decimals first, so that equal ones
    tie and zero ones are dropped (float noise makes 0.9 - 0.8 and 0.6 - 0.5 differ, and
    two AUROCs reached along different sums differ by 1e-16): ``n`` counts the pairs,
    ``n_nonzero`` those ranked."""
    from scipy.stats import wilcoxon as test

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    diff = np.round(a - b, 12)
    out = {"n": int(len(diff)), "n_nonzero": int(np.count_nonzero(diff)), "statistic": None, "p": None,
           "mean_difference": float((a - b).mean()) if len(diff) else None}
    if len(diff) >= 2 and out["n_nonzero"]:
        result = test(diff)
        out.update(statistic=float(result.statistic), p=float(result.pvalue))
    return out


def silhouette(vectors: np.ndarray, labels: np.ndarray) -> float | None:
    from sklearn.metrics import silhouette_score

    if len(set(np.asarray(labels).tolist())) < 2:
        return None
    return float(silhouette_score(vectors, labels))
