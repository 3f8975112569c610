"""Files the toolkit writes and reads back: run folders, score tables, environment.

A run folder is built as ``<out>.partial`` and renamed to ``<out>`` once every file is
written, so a folder without that suffix is always complete. It holds:

    recipe.yaml   the resolved recipe          env.json     versions, device, git commit
    data.json     store, split members, counts model.pt     the learned state
    log.jsonl     one line per epoch           scores/      val.csv, test.csv
    metrics.json  test and validation metrics  maps/        test.npy (methods that explain)
"""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, TextIO

import numpy as np

from oneclass import __version__
from oneclass.errors import OneclassError

RUN_FORMAT = 1
RUN_FILES = ("recipe.yaml", "env.json", "data.json", "model.pt", "log.jsonl",
             "scores/val.csv", "scores/test.csv", "metrics.json")
SCORE_COLUMNS = ("id", "source", "x", "y", "label", "subclass", "score")
PARTIAL = ".partial"


def write_text(path: Path, text: str) -> None:
    """Write via a temporary name in the same folder, then rename."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json(path: Path, data) -> None:
    write_text(path, json.dumps(data, indent=2) + "\n")


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise OneclassError(f"{path}: cannot read JSON: {exc}") from None


def git_commit() -> str | None:
    """The toolkit's git commit when it runs from a checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() or None


def environment(device) -> dict:
    import sklearn
    import torch
    import torchvision

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    return {"run_format": RUN_FORMAT, "oneclass": __version__, "git_commit": git_commit(),
            "python": sys.version.split()[0], "platform": platform.platform(),
            "torch": torch.__version__, "torchvision": torchvision.__version__,
            "numpy": np.__version__, "sklearn": sklearn.__version__,
            "cuda": torch.version.cuda, "device": str(device), "device_name": name,
            "cpu_threads": torch.get_num_threads()}


# -- score tables -------------------------------------------------------------------


def format_scores(rows: Iterable[dict], fmt: str, out: TextIO) -> None:
    """Write score rows (dicts with SCORE_COLUMNS) as CSV or JSON lines."""
    if fmt == "jsonl":
        for row in rows:
            out.write(json.dumps({k: row[k] for k in SCORE_COLUMNS}) + "\n")
        return
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(SCORE_COLUMNS)
    for row in rows:
        writer.writerow([_cell(row[k]) for k in SCORE_COLUMNS])


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def write_scores(path: Path, rows: list[dict]) -> None:
    buffer = io.StringIO()
    format_scores(rows, "csv", buffer)
    write_text(path, buffer.getvalue())


@dataclass
class ScoreTable:
    name: str
    labels: np.ndarray  # int, -1 where unknown
    scores: np.ndarray

    @property
    def known(self) -> np.ndarray:
        return self.labels >= 0


def parse_scores(text: str, name: str) -> ScoreTable:
    """A score table from CSV or JSON-lines text; fails with the file name and line."""
    lines = text.splitlines()
    if not any(line.strip() for line in lines):
        raise OneclassError(f"{name}: empty score file")
    first = next(line for line in lines if line.strip()).lstrip()
    records = []
    if first.startswith("{"):
        for number, line in enumerate(lines, 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise OneclassError(f"{name}: line {number}: not JSON: {exc.msg}") from None
    else:
        records = list(csv.DictReader(io.StringIO(text)))
    if not records:
        raise OneclassError(f"{name}: no score rows (only a header)")
    missing = [c for c in ("score", "label") if c not in records[0]]
    if missing:
        raise OneclassError(f"{name}: missing column(s) {', '.join(missing)}; "
                            f"expected {','.join(SCORE_COLUMNS)}")
    labels, scores = [], []
    for number, record in enumerate(records, 2):
        try:
            scores.append(float(record["score"]))
            label = record["label"]
            labels.append(-1 if label in ("", None) else int(label))
        except (TypeError, ValueError):
            raise OneclassError(f"{name}: row {number - 1}: bad score or label "
                                f"({record.get('score')!r}, {record.get('label')!r})") from None
    return ScoreTable(name, np.asarray(labels, dtype=int), np.asarray(scores, dtype=float))


# -- run folders --------------------------------------------------------------------


@dataclass
class RunFolder:
    path: Path
    recipe: dict
    env: dict
    data: dict
    metrics: dict

    def scores(self, split: str) -> ScoreTable:
        path = self.path / "scores" / f"{split}.csv"
        return parse_scores(path.read_text(), str(path))


def open_run(path: str | Path) -> RunFolder:
    """A complete run folder of a compatible format, or one clear error."""
    import yaml

    path = Path(path)
    if not path.is_dir():
        partial = path.with_name(path.name + PARTIAL)
        hint = f" ({partial} is an unfinished run: resume it with `oneclass train --resume`)" \
            if partial.is_dir() else ""
        raise OneclassError(f"{path}: no such run folder{hint}")
    if path.name.endswith(PARTIAL):
        raise OneclassError(f"{path}: an unfinished run (resume it with `oneclass train --resume`)")
    missing = [name for name in RUN_FILES if not (path / name).is_file()]
    if missing:
        raise OneclassError(f"{path}: incomplete run folder (missing {', '.join(missing)})")
    env = read_json(path / "env.json")
    if env.get("run_format") != RUN_FORMAT:
        raise OneclassError(f"{path}: run format {env.get('run_format')!r} written by oneclass "
                            f"{env.get('oneclass', '?')}; this is oneclass {__version__} "
                            f"(format {RUN_FORMAT}): retrain it")
    recipe = yaml.safe_load((path / "recipe.yaml").read_text())
    return RunFolder(path, recipe, env, read_json(path / "data.json"), read_json(path / "metrics.json"))
