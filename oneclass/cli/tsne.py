"""``oneclass tsne``: a 2-D t-SNE map of a run's latent vectors."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from oneclass.artifacts import check_output_file, open_run, write_json
from oneclass.cli.console import err
from oneclass.errors import OneclassError


def tsne(
    run: Path = typer.Argument(..., help="A run folder written by `oneclass train`."),
    split: str = typer.Option("test", "--split", help="test or val."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="The PNG to write. [default: RUN/tsne-SPLIT.png]"),
    perplexity: float = typer.Option(30.0, "--perplexity", help="t-SNE perplexity."),
    seed: int = typer.Option(0, "--seed", help="Seed of the t-SNE embedding and of --max-points."),
    max_points: int = typer.Option(5000, "--max-points", min=10,
                                   help="Map at most this many points, drawn at random (t-SNE is quadratic)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
) -> None:
    """t-SNE of the method's embed() vectors on a split, coloured by ground truth and marked
    TP/FN/TN/FP (anomalous = positive) at the threshold where sensitivity = specificity.

    The silhouette score of the ground-truth classes, computed in the latent space itself,
    is printed and saved with the figure as FILE.json.
    """
    import numpy as np

    from oneclass.data.store import PatchStore
    from oneclass.engine import PatchData
    from oneclass.metrics import equal_error_threshold, silhouette
    from oneclass.runs import load_method

    if split not in ("test", "val"):
        raise OneclassError(f"--split: expected test or val, got {split!r}")
    if perplexity <= 0:
        raise OneclassError(f"--perplexity: must be positive, got {perplexity}")
    folder = open_run(run)
    out = out or folder.path / f"tsne-{split}.png"
    if out.suffix.lower() != ".png":
        raise OneclassError(f"--out: {out}: expected a .png file name")
    check_output_file(out, "--out")
    method = load_method(folder, device)
    if method.embed is None:
        raise OneclassError(f"method {method.name}: has no latent space (no embed); t-SNE needs one")
    store_path = Path(folder.data["store"])
    if not store_path.is_dir():
        raise OneclassError(f"{store_path}: the run's patch store is gone (data.json); retrain or re-extract it")
    store = PatchStore.open(store_path)
    rows = np.asarray(folder.data["members"][split])
    scores = folder.scores(split).scores  # in the order of rows
    if len(rows) > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(len(rows), max_points, replace=False))
        rows, scores = rows[keep], scores[keep]
    if len(rows) <= perplexity:
        raise OneclassError(f"--perplexity: must be below the number of points ({len(rows)})")
    labels = store.labels[rows].astype(int)
    vectors = method.embed(PatchData(store.images, rows)).reshape(len(rows), -1)
    threshold = equal_error_threshold(labels, scores)
    predicted = scores >= threshold
    outcomes = [("TP" if p else "FN") if y else ("FP" if p else "TN") for y, p in zip(labels, predicted)]
    from sklearn.manifold import TSNE

    points = TSNE(n_components=2, perplexity=perplexity, random_state=seed, init="pca").fit_transform(vectors)
    score = silhouette(vectors, labels)
    from oneclass.plots import tsne_map

    title = f"{method.name} ({split}); silhouette {score:.3f}" if score is not None else method.name
    tsne_map(points, outcomes, title, out)
    counts = {k: outcomes.count(k) for k in ("TP", "FN", "TN", "FP")}
    write_json(out.with_suffix(".json"), {"run": str(folder.path), "split": split, "points": len(rows),
                                          "silhouette": score, "threshold": threshold, "outcomes": counts,
                                          "perplexity": perplexity, "seed": seed, "max_points": max_points})
    err.print(f"silhouette of the ground-truth classes in latent space: {score:.4f}")
    print(out)
