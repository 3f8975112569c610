"""``oneclass score``: a trained run + new patches → a score table on stdout."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import numpy as np
import typer

from oneclass.artifacts import check_output_file, format_scores, open_run, write_text
from oneclass.errors import OneclassError


def score(
    run: Path = typer.Argument(..., help="A run folder written by `oneclass train`."),
    input: str = typer.Argument(..., help="A patch store, an image file or folder, or - for "
                                "image paths on standard input, one per line."),
    format: str = typer.Option("csv", "--format", "-f", help="csv or jsonl."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write here instead of stdout."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    batch_size: int = typer.Option(256, "--batch-size", "-b", min=1,
                                   help="Items per scoring batch (fewer for methods on large images; on "
                                   "the CPU batches are also cut to keep activations small)."),
) -> None:
    """Score a patch store or images with a trained run.

    A higher score means more anomalous, for every method. Images are cut into patches
    with the run's extraction parameters (size, stride, resize, channels). Columns:
    id,source,x,y,label,subclass,score; label and subclass are empty when unknown
    (images without masks). The model loads with weights_only.
    """
    import io

    from oneclass.data.items import PatchData
    from oneclass.methods.base import BatchTooLarge
    from oneclass.scoring import load_method, score_rows, scoring_input

    if format not in ("csv", "jsonl"):
        raise OneclassError(f"--format: expected csv or jsonl, got {format!r}")
    if output is not None:
        check_output_file(output, "--output")
    folder = open_run(run)
    lines = sys.stdin.read().splitlines() if input == "-" else None
    images, index, known = scoring_input(folder, input, lines)
    method = load_method(folder, device)
    method.infer_batch = batch_size
    rows = np.arange(len(index))
    try:
        scores = method.score(PatchData(images, rows))
    except BatchTooLarge as exc:
        hint = f" (--batch-size {exc.fits})" if exc.fits else ""
        raise OneclassError(f"--batch-size: {exc}{hint}") from None
    table = score_rows(index, rows, scores, known_labels=known)
    if output is None:
        format_scores(table, format, sys.stdout)
        return
    buffer = io.StringIO()
    format_scores(table, format, buffer)
    write_text(output, buffer.getvalue())
