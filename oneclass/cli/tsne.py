"""``oneclass tsne``: a 2-D t-SNE map of a run's latent vectors."""

from __future__ import annotations

import json
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
                                   help="Map at most this many points, drawn at random within each class in "
                                   "proportion, each class keeping one at least (t-SNE is quadratic)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
) -> None:
    """Draw a t-SNE map of a run's latent vectors.

    The method's embed() vectors of a split, coloured by ground truth and marked
    TP/FN/TN/FP (anomalous = positive) at the threshold where sensitivity = specificity.
    The silhouette score of the ground-truth classes, computed in the latent space itself,
    is printed and saved with the figure as FILE.json.
    """
    from oneclass.latent import latent_map
    from oneclass.plots import tsne_map

    if split not in ("test", "val"):
        raise OneclassError(f"--split: expected test or val, got {split!r}")
    if perplexity <= 0:
        raise OneclassError(f"--perplexity: must be positive, got {perplexity}")
    folder = open_run(run)
    out = out or folder.path / f"tsne-{split}.png"
    if out.suffix.lower() != ".png":
        raise OneclassError(f"--out: {out}: expected a .png file name")
    check_output_file(out, "--out")
    record = out.with_suffix(".json")
    if record.exists() and not _is_tsne_record(record):  # RUN/metrics.png would replace RUN/metrics.json
        raise OneclassError(f"--out: {out} would replace {record}, which is not a t-SNE record; "
                            f"choose another name")
    found = latent_map(folder, split, perplexity, seed, max_points, device)
    score = found.silhouette
    tsne_map(found.points, found.outcomes, found.title(split), out)
    write_json(record, {"run": str(folder.path), "split": split, "points": len(found.points), "of": found.total,
                                          "silhouette": score, "threshold": found.threshold,
                                          "outcomes": found.counts(), "perplexity": perplexity, "seed": seed,
                                          "max_points": max_points})
    if score is not None:
        err.print(f"silhouette of the ground-truth classes in latent space: {score:.4f}")
    print(out)


def _is_tsne_record(path: Path) -> bool:
    try:
        found = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(found, dict) and {"silhouette", "perplexity", "outcomes"} <= set(found)
