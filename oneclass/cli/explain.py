"""``oneclass explain``: a trained run + patches or images → anomaly maps as figures."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import typer

from oneclass.errors import OneclassError


def explain(
    run: Path = typer.Argument(..., help="A run folder written by `oneclass train`."),
    input: str = typer.Argument(..., help="A patch store, an image file or folder, or - for "
                                "image paths on standard input, one per line."),
    out: Path = typer.Option(..., "--out", "-o", help="The folder of figures to write."),
    top: int = typer.Option(20, "--top", min=0, help="Draw the TOP highest-scoring items (0: all)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing maps folder."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
) -> None:
    """Draw anomaly maps of a trained run for a person to look at.

    Items are cut as for `oneclass score`, scored, and the most anomalous drawn: each
    figure shows the item and its map laid over it, titled with its source, position,
    score and the run's validation threshold (and whether the score passes it). OUT also
    gets scores.csv: rank, id, source, x, y, score, figure. Maps are the method's own
    (reconstruction error, code distance) or the gradient of its score (DevNet's recipe).
    OUT is built under a temporary name and renamed when complete.
    """
    import csv

    from oneclass.artifacts import (MARKER, PARTIAL, check_destination, discard, folder_kind, mark, named_folder,
                                    open_run, refuse_foreign, replace_folder)
    from oneclass.data.items import PatchData
    from oneclass.plots import map_overlay
    from oneclass.scoring import load_method, scoring_input

    out = named_folder(out)
    check_destination(out, "maps", overwrite)
    built = out.with_name(out.name + PARTIAL)
    if (built.is_symlink() or built.exists()) and folder_kind(built) != "maps":  # only ever delete our own
        raise OneclassError(f"{built}: exists and is not an unfinished oneclass maps folder (no {MARKER} "
                            f"marker); remove it yourself or choose another --out")
    if built.is_dir() and not built.is_symlink():
        refuse_foreign(built, "maps", "move them out first, or choose another --out")
    folder = open_run(run)
    lines = sys.stdin.read().splitlines() if input == "-" else None
    images, index, _ = scoring_input(folder, input, lines)
    method = load_method(folder, device)
    if method.explain is None:
        raise OneclassError(f"{run}: method {folder.recipe['method']['name']} draws no anomaly maps")
    rows = np.arange(len(index))
    scores = method.score(PatchData(images, rows))
    order = np.argsort(-scores, kind="stable")[: top or None]
    chosen = np.sort(order)
    maps = dict(zip(chosen.tolist(), method.explain(PatchData(images, chosen))))
    threshold = ((folder.metrics.get("test") or {}).get("at_val_threshold") or {}).get("threshold")
    if built.is_symlink() or built.exists():
        discard(built)  # a maps folder a killed explain left unfinished
    try:
        built.mkdir(parents=True)
        mark(built, "maps")
        table = []
        for rank, row in enumerate(order.tolist(), 1):
            item = index[row]
            name = f"{rank:03d}-{Path(item['source']).stem}-x{item['x']}-y{item['y']}.png"
            verdict = ("" if threshold is None else
                       f", threshold {threshold:.4g}: {'anomalous' if scores[row] >= threshold else 'normal'}")
            title = f"{item['source']} at ({item['x']}, {item['y']}): score {scores[row]:.4g}{verdict}"
            map_overlay(images[row], maps[row], title, built / name)
            table.append({"rank": rank, "id": item["id"], "source": item["source"], "x": item["x"],
                          "y": item["y"], "score": f"{scores[row]:.6g}", "figure": name})
        with open(built / "scores.csv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, ["rank", "id", "source", "x", "y", "score", "figure"], lineterminator="\n")
            writer.writeheader()
            writer.writerows(table)
        replace_folder(built, out, "maps")
    except BaseException:
        discard(built)
        raise
    print(out, flush=True)
