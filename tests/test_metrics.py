"""Metrics against scikit-learn and SciPy, thresholds and confusion counts by hand."""

from __future__ import annotations

import numpy as np
import pytest

from oneclass import metrics
from oneclass.artifacts import parse_scores
from oneclass.errors import OneclassError


def test_auroc_and_auprc_match_sklearn():
    from sklearn.metrics import average_precision_score, roc_auc_score

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 300)
    scores = rng.normal(size=300) + labels
    assert metrics.auroc(labels, scores) == pytest.approx(roc_auc_score(labels, scores))
    assert metrics.auprc(labels, scores) == pytest.approx(average_precision_score(labels, scores))


def test_confusion_counts_by_hand():
    labels = [0, 0, 0, 1, 1, 1]
    scores = [0.1, 0.4, 0.6, 0.5, 0.7, 0.9]
    c = metrics.confusion(labels, scores, 0.5)  # >= 0.5 is called anomalous
    assert (c["tp"], c["fn"], c["tn"], c["fp"]) == (3, 0, 2, 1)
    assert c["accuracy"] == pytest.approx(5 / 6)


def test_equal_error_threshold_balances_sensitivity_and_specificity():
    labels = np.r_[np.zeros(100), np.ones(100)]
    scores = np.r_[np.arange(100), np.arange(100) + 80.5]  # 20 overlapping of each
    t = metrics.equal_error_threshold(labels, scores)
    c = metrics.confusion(labels, scores, t)
    assert abs(c["sensitivity"] - c["specificity"]) <= 0.011
    assert c["sensitivity"] == pytest.approx(0.9, abs=0.011)


def test_youden_threshold_separates_separable_scores():
    labels = [0, 0, 1, 1]
    assert metrics.youden_threshold(labels, [0.1, 0.2, 0.8, 0.9]) == pytest.approx(0.8)


def test_wilcoxon_matches_scipy():
    from scipy.stats import wilcoxon

    a = [0.81, 0.84, 0.79, 0.9, 0.88, 0.86]
    b = [0.78, 0.80, 0.80, 0.85, 0.83, 0.80]
    out = metrics.wilcoxon(a, b)
    assert out["p"] == pytest.approx(wilcoxon([3, 4, -1, 5, 5, 6]).pvalue)  # 0.05 and 0.05 tie
    assert out["n"] == out["n_nonzero"] == 6


def test_wilcoxon_ties_equal_differences_and_drops_zero_ones_whatever_the_float_noise():
    """Every difference is +-0.1 but in floats 0.09999999999999998, 0.10000000000000003, ...:
    ranked apart, they gave p = 0.203; tied, as they are, 0.125."""
    from scipy.stats import wilcoxon

    a = [0.7, 0.3, 0.55, 0.9, 0.45, 0.62, 0.81]
    b = [0.6, 0.2, 0.45, 0.8, 0.55, 0.52, 0.71]
    assert len({x - y for x, y in zip(a, b)}) > 2  # the noise
    out = metrics.wilcoxon(a, b)
    assert out["p"] == pytest.approx(wilcoxon([1, 1, 1, 1, -1, 1, 1]).pvalue) == pytest.approx(0.125, abs=1e-3)
    same = metrics.wilcoxon([0.7, 0.3, 0.5], [0.7, 0.2, 0.4])
    assert same["n"] == 3 and same["n_nonzero"] == 2


def test_pixel_auroc_over_all_pixels():
    masks = np.zeros((2, 4, 4), np.uint8)
    masks[1, :2, :2] = 1
    maps = masks.astype(float) * 2 + 0.1
    assert metrics.pixel_auroc(masks, maps) == 1.0
    assert metrics.pixel_auroc(np.zeros((2, 4, 4)), maps) is None


@pytest.mark.parametrize("text,message", [
    ("", "empty score file"),
    ("id,source,x,y,label,subclass,score\n", "no score rows"),
    ("id,score\n1,0.5\n", "missing column"),
    ("id,source,x,y,label,subclass,score\n1,s,0,0,1,a,abc\n", "row 1: bad score"),
    # a class code, not a label: 2 would count as anomalous, three codes break AUROC
    ("label,score\n0,0.1\n1,0.5\n2,0.7\n", r"row 3: bad score or label \('0.7', '2'\); a label is 0 "
                                             r"\(normal\), 1 \(anomalous\) or blank \(unknown\)"),
])
def test_bad_score_tables(text, message):
    with pytest.raises(OneclassError, match=message):
        parse_scores(text, "f.csv")


def test_jsonl_and_csv_tables_parse_alike():
    csv_text = "id,source,x,y,label,subclass,score\n0,s,0,0,1,a,0.5\n1,s,0,0,,,0.25\n"
    jsonl = ('{"id": "0", "label": "1", "score": 0.5}\n{"id": "1", "label": null, "score": 0.25}\n')
    a, b = parse_scores(csv_text, "a"), parse_scores(jsonl, "b")
    assert a.labels.tolist() == b.labels.tolist() == [1, -1]
    assert a.scores.tolist() == b.scores.tolist() == [0.5, 0.25]


def test_equal_error_threshold_inside_a_collinear_stretch_of_the_roc_curve():
    """Two negatives outscore every positive, then ten positives in a row: the ROC curve
    rises vertically at fpr 0.2 and crosses sensitivity = specificity = 0.8 at threshold 3,
    a point roc_curve drops by default (the curve's corner would give threshold 1)."""
    from oneclass.metrics import equal_error_threshold

    labels = np.r_[np.zeros(10, int), np.ones(10, int)]
    scores = np.r_[np.zeros(8), [10.5, 10.5], np.arange(1, 11)]
    assert equal_error_threshold(labels, scores) == 3


def test_pixel_auroc_pooled_and_per_item_by_hand():
    """Pooled: one ranking of every pixel; per item (DevNet's): each anomalous item's own
    ranking, averaged over the items whose mask holds both classes."""
    masks = np.zeros((3, 1, 4), np.uint8)
    masks[1] = [[1, 1, 0, 0]]
    masks[2] = [[1, 1, 1, 1]]  # all anomalous: no ranking inside it, left out per item
    maps = np.array([[[0.9, 0.0, 0.0, 0.0]],  # a normal item with one hot pixel
                     [[0.5, 0.2, 0.3, 0.1]],  # pairs (anomalous > normal): 0.5>0.3, 0.5>0.1, 0.2>0.1; 0.2<0.3
                     [[0.4, 0.4, 0.4, 0.4]]])
    per_item, items = metrics.pixel_auroc_per_image(masks, maps)
    assert items == 1 and per_item == pytest.approx(3 / 4)
    # pooled: 6 anomalous pixels (0.5, 0.2, 0.4 x 4) against 6 normal (0.9, 0, 0, 0, 0.3, 0.1)
    anomalous, normal = [0.5, 0.2, 0.4, 0.4, 0.4, 0.4], [0.9, 0.0, 0.0, 0.0, 0.3, 0.1]
    wins = sum((a > b) + 0.5 * (a == b) for a in anomalous for b in normal)
    assert metrics.pixel_auroc(masks, maps) == pytest.approx(wins / 36)
    assert metrics.pixel_auroc_per_image(np.zeros((2, 1, 4)), maps[:2]) == (None, 0)


def test_labels_other_than_0_and_1_and_non_finite_maps_are_refused():
    with pytest.raises(OneclassError, match=r"^test: labels must be 0 \(normal\) or 1 \(anomalous\), found 2$"):
        metrics.evaluate_scores(np.array([0, 1, 2]), np.array([0.1, 0.5, 0.9]), "test")
    masks = np.zeros((2, 4, 4), bool)
    masks[:, 0] = True
    maps = np.ones((2, 4, 4), np.float32)
    maps[1, 2, 2] = np.nan
    for pixel_level in (metrics.pixel_auroc, metrics.pixel_auroc_per_image):
        with pytest.raises(OneclassError, match=r"^anomaly maps: 1 pixel\(s\) NaN or infinite"):
            pixel_level(masks, maps)


def test_methods_are_compared_per_dataset_and_gamma_not_pooled():
    """A is better at gamma 0.1 on every seed and worse at 0.2: one test per gamma says
    so; a pooled test would average the two into nothing."""
    from oneclass.report import Result, compare_methods

    def run(method, gamma, seed, auroc):
        return Result(f"{method}-{gamma}-{seed}", {"auroc": auroc}, "nanofibre", method, gamma, seed)

    results = [run("a", g, s, base + (0.1 if g == 0.1 else -0.1)) for g in (0.1, 0.2)
               for s, base in enumerate((0.6, 0.7, 0.65, 0.72, 0.58, 0.69))]
    results += [run("b", g, s, base) for g in (0.1, 0.2) for s, base in enumerate((0.6, 0.7, 0.65, 0.72, 0.58, 0.69))]
    tests = compare_methods(results)
    assert [(t["gamma"], t["method_a"], t["method_b"], t["n"], round(t["mean_difference"], 6)) for t in tests] == [
        (0.1, "a", "b", 6, 0.1), (0.2, "a", "b", 6, -0.1)]
    assert all(t["p"] == pytest.approx(0.03125) for t in tests)  # six of six one way, exact
