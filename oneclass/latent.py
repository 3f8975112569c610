"""A run's latent space: t-SNE coordinates of its embed() vectors on a split, the outcome of
each point at the equal-error threshold, and the silhouette of the true classes
(c-ss-ms-gvae.txt Figs. 5 and 9)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from oneclass.artifacts import RunFolder
from oneclass.errors import OneclassError


@dataclass
class LatentMap:
    points: np.ndarray  # (n, 2) t-SNE coordinates
    outcomes: list[str]  # TP/FN/TN/FP per point, anomalous = positive
    threshold: float  # where sensitivity = specificity on the mapped points
    silhouette: float | None  # of the ground-truth classes, in the latent space itself
    method: str
    total: int  # points in the split, before the max_points subsample

    def title(self, split: str) -> str:
        shown = f"{len(self.points)} of {self.total}" if self.total > len(self.points) else f"{self.total}"
        quality = f"; silhouette {self.silhouette:.3f}" if self.silhouette is not None else ""
        return (f"{self.method}, {split} set ({shown} points)\n"
                f"outcomes at the equal-error threshold {self.threshold:.4g}{quality}")

    def counts(self) -> dict[str, int]:
        return {k: self.outcomes.count(k) for k in ("TP", "FN", "TN", "FP")}


def draw_per_class(labels: np.ndarray, count: int, seed: int) -> np.ndarray:
    """``count`` sorted positions drawn at random within each class, in proportion to its
    share, every class keeping at least one: a plain draw of 5,000 from a split of few
    anomalies can keep none, and the map's threshold would then mean nothing."""
    rng = np.random.default_rng(seed)
    members = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    wanted = [max(1, round(count * len(m) / len(labels))) for m in members]
    wanted[int(np.argmax(wanted))] += count - sum(wanted)  # rounding's remainder: the largest class
    return np.sort(np.concatenate([rng.choice(m, n, replace=False) for m, n in zip(members, wanted)]))


def latent_map(folder: RunFolder, split: str, perplexity: float, seed: int, max_points: int,
               device: str = "auto") -> LatentMap:
    """t-SNE of a run's latent vectors on ``split``; at most ``max_points`` points, drawn
    with ``seed`` (t-SNE is quadratic in the number of points)."""
    from sklearn.manifold import TSNE

    from oneclass.data.store import PatchStore
    from oneclass.data.items import PatchData
    from oneclass.metrics import equal_error_threshold, silhouette
    from oneclass.scoring import load_method
    from oneclass.stores import store_hash

    method = load_method(folder, device)
    if method.embed is None:
        raise OneclassError(f"method {method.name}: has no latent space (no embed); t-SNE needs one")
    store_path = Path(folder.data["store"])
    if not store_path.is_dir():
        raise OneclassError(f"{store_path}: the run's patch store is gone (data.json); retrain or re-extract it")
    store = PatchStore.open(store_path)
    if folder.data.get("store_hash") not in (None, store_hash(store)):
        raise OneclassError(f"{store_path}: the patch store changed since the run was trained (extracted "
                            f"again?); its split rows (data.json) no longer name the same patches: retrain the run")
    rows = np.asarray(folder.data["members"][split])
    total = len(rows)
    scores = folder.scores(split).scores  # in the order of rows
    labels = store.labels[rows].astype(int)
    if len(set(labels.tolist())) < 2:
        raise OneclassError(f"--split {split}: its {total} patches are all "
                            f"{'anomalous' if labels.any() else 'normal'}; the map's equal-error "
                            f"threshold needs both classes")
    if len(rows) > max_points:
        keep = draw_per_class(labels, max_points, seed)
        rows, scores, labels = rows[keep], scores[keep], labels[keep]
    if len(rows) <= perplexity:
        raise OneclassError(f"--perplexity: must be below the number of points ({len(rows)})")
    vectors = method.embed(PatchData(store.images, rows)).reshape(len(rows), -1)
    threshold = equal_error_threshold(labels, scores)
    predicted = scores >= threshold
    outcomes = [("TP" if p else "FN") if y else ("FP" if p else "TN") for y, p in zip(labels, predicted)]
    points = TSNE(n_components=2, perplexity=perplexity, random_state=seed, init="pca").fit_transform(vectors)
    return LatentMap(points, outcomes, float(threshold), silhouette(vectors, labels), method.name, total)
