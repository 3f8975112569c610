"""Files the toolkit writes and reads back: run folders, score tables, environment.

A run folder is built as ``<out>.partial`` and renamed to ``<out>`` once every file is
written, so a folder without that suffix is always complete. It holds:

    recipe.yaml   the resolved recipe          env.json     versions, device, git commit
    data.json     store, split members, counts model.pt     the learned state
    log.jsonl     one line per epoch           scores/      val.csv, test.csv
    metrics.json  test and validation metrics  maps/        test.npy (methods that explain)
    .oneclass     the marker: what kind of folder oneclass wrote here

Patch-level runs also write ``scores/val_images.csv`` and ``scores/test_images.csv``
(IMAGE_COLUMNS: one row per source image, its patch scores aggregated); they are
optional when reading, as runs on whole-image stores and older runs have none.

Only folders carrying the marker (or, written before it existed, a run's env.json or a
store's meta.json) and holding nothing but what oneclass writes there are ever replaced
by ``--overwrite``: whatever else ``--out`` names is refused before any work starts, and
the old folder goes only once its replacement is complete.
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
from oneclass.errors import OneclassError, OutputError

RUN_FORMAT = 1
RUN_FILES = ("recipe.yaml", "env.json", "data.json", "model.pt", "log.jsonl",
             "scores/val.csv", "scores/test.csv", "metrics.json")
SCORE_COLUMNS = ("id", "source", "x", "y", "label", "subclass", "score")
# scores/{val,test}_images.csv of patch runs; optional: runs written before them lack them
IMAGE_COLUMNS = ("source", "label", "subclass", "patches", "score")
PARTIAL = ".partial"
CHECKPOINT = "checkpoint.pt"  # in an unfinished run: what --resume continues from
MARKER = ".oneclass"


def write_atomic(path: Path, write) -> None:
    """``write(tmp)`` to a temporary name in the same folder, then rename it to ``path``.
    A failure removes the temporary file and becomes one line naming ``path``."""
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        with open(tmp, "rb") as fh:  # on disk before the rename: a power cut leaves the old file or the new
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if not isinstance(exc, OSError):
            raise
        raise OutputError(f"{path}: cannot write: {exc.strerror or exc}") from None


def write_text(path: Path, text: str) -> None:
    write_atomic(path, lambda tmp: tmp.write_text(text))


def load_torch(path: Path, what: str, keys: tuple[str, ...]) -> dict:
    """A file oneclass saved with torch, loaded with ``weights_only=True`` (tensors and
    plain containers only, never arbitrary objects), or one line saying it is damaged or
    not a oneclass ``what``. ``keys`` are the entries such a file must hold."""
    import pickle
    import zipfile

    import torch

    if not path.is_file():
        raise OneclassError(f"{path}: no such {what}")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # torch's own message advises weights_only=False, which would run whatever the
        # file holds: never pass that on
        raise OneclassError(f"{path}: not a oneclass {what}: it holds objects other than tensors, "
                            f"so it was not loaded") from None
    except (EOFError, RuntimeError, zipfile.BadZipFile, ValueError, OSError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "truncated or damaged"
        raise OneclassError(f"{path}: cannot read the {what}: {reason}") from None
    missing = [k for k in keys if not isinstance(saved, dict) or k not in saved]
    if missing:
        raise OneclassError(f"{path}: not a oneclass {what} (no {', '.join(missing)})")
    return saved


def save_torch(path: Path, obj) -> None:
    """torch.save through memory: a full disk then fails as an OSError with its own words
    (torch's file writer reports it as an opaque RuntimeError)."""
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_atomic(path, lambda tmp: tmp.write_bytes(buffer.getbuffer()))


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


def format_scores(rows: Iterable[dict], fmt: str, out: TextIO,
                  columns: tuple[str, ...] = SCORE_COLUMNS) -> None:
    """Write score rows (dicts with ``columns``: SCORE_COLUMNS, or IMAGE_COLUMNS for
    image tables) as CSV or JSON lines."""
    if fmt == "jsonl":
        for row in rows:
            out.write(json.dumps({k: row[k] for k in columns}) + "\n")
        return
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row[k]) for k in columns])


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def write_scores(path: Path, rows: list[dict], columns: tuple[str, ...] = SCORE_COLUMNS) -> None:
    buffer = io.StringIO()
    format_scores(rows, "csv", buffer, columns)
    write_text(path, buffer.getvalue())


def write_image_scores(path: Path, rows: list[dict]) -> None:
    """An image table (IMAGE_COLUMNS): one row per source image."""
    write_scores(path, rows, IMAGE_COLUMNS)


@dataclass
class ScoreTable:
    name: str
    labels: np.ndarray  # int, -1 where unknown
    scores: np.ndarray
    # per row, where the table has the column (None otherwise); "" and null read as None
    sources: list[str | None] | None = None
    subclasses: list[str | None] | None = None

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
            if labels[-1] not in (-1, 0, 1):  # a class code would count as anomalous, or break AUROC
                raise ValueError(label)
        except (TypeError, ValueError):
            raise OneclassError(f"{name}: row {number - 1}: bad score or label "
                                f"({record.get('score')!r}, {record.get('label')!r}); a label is 0 "
                                f"(normal), 1 (anomalous) or blank (unknown)") from None
    columns = {c: [_text(r.get(c)) for r in records] if any(c in r for r in records) else None
               for c in ("source", "subclass")}
    return ScoreTable(name, np.asarray(labels, dtype=int), np.asarray(scores, dtype=float),
                      sources=columns["source"], subclasses=columns["subclass"])


def _text(value) -> str | None:
    return None if value in ("", None) else str(value)


# -- destinations: what may be written, and what may be replaced ---------------------


def mark(folder: Path, kind: str) -> None:
    """Mark ``folder`` as a oneclass ``kind`` ("run", "store" or "maps")."""
    write_json(folder / MARKER, {"kind": kind, "oneclass": __version__})


def folder_kind(path: Path) -> str | None:
    """"run", "store" or "maps" for a folder oneclass wrote; None for anything else."""
    if not path.is_dir():
        return None
    try:
        if (path / MARKER).is_file():
            kind = json.loads((path / MARKER).read_text()).get("kind")
            return kind if kind in ("run", "store", "maps") else None
        # folders written before the marker: a run's env.json, a store's meta.json
        if "run_format" in json.loads((path / "env.json").read_text()):
            return "run"
    except (OSError, ValueError, AttributeError, TypeError):
        pass
    try:
        return "store" if "oneclass_version" in json.loads((path / "meta.json").read_text()) else None
    except (OSError, ValueError, TypeError):
        return None


# What oneclass writes in each kind of folder (paths relative to it, fnmatch patterns;
# ``oneclass tsne`` draws into a run folder by default). Anything else found in one was
# put there by someone else, and --overwrite refuses to delete it.
_OWN_FILES = {
    "run": (MARKER, "recipe.yaml", "env.json", "data.json", "model.pt", "log.jsonl", "metrics.json",
            "select.json", "select-progress.json", CHECKPOINT, "scores/*.csv", "maps/*.npy", "tsne-*.png", "tsne-*.json"),
    "store": (MARKER, "images.npy", "masks.npy", "index.csv", "meta.json"),
    "maps": (MARKER, "scores.csv", "[0-9][0-9][0-9]*-*.png"),  # RANK-SOURCE-xX-yY.png, rank 001 on
}
_OWN_FOLDERS = {"run": ("scores", "maps"), "store": (), "maps": ()}
_TEMPORARY = ".*.tmp*"  # write_atomic's names, left by an interrupted write


def foreign_entries(folder: Path, kind: str) -> list[str]:
    """Paths under ``folder`` (relative, sorted) that oneclass does not write in a ``kind``
    folder: a user's notes, images, links or folders put into a run folder."""
    from fnmatch import fnmatchcase

    found = []
    for root, dirs, files in os.walk(folder):
        here = Path(root).relative_to(folder)
        ours = []
        for name in dirs:
            entry = (here / name).as_posix()
            if (folder / entry).is_symlink() or entry not in _OWN_FOLDERS[kind]:
                found.append(entry + "/")  # not walked into: named as a whole
            else:
                ours.append(name)
        dirs[:] = ours
        for name in files:
            entry = (here / name).as_posix()
            if not (fnmatchcase(name, _TEMPORARY) or
                    any(fnmatchcase(entry, pattern) for pattern in _OWN_FILES[kind])):
                found.append(entry)
    return sorted(found)


def refuse_foreign(path: Path, kind: str, then: str) -> None:
    """One line naming what ``path`` holds that oneclass did not write there, if anything."""
    foreign = foreign_entries(path, kind)
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise OneclassError(f"{path}: a oneclass {kind} folder holding what oneclass did not write "
                            f"({shown}); replacing it would delete them: {then}")


def named_folder(path: Path) -> Path:
    """``path``, or where it ends without a name ("." or "runs/..") the absolute folder it
    names (no symbolic link resolved): a folder is built beside it under its name."""
    return Path(os.path.abspath(path)) if path.name in ("", "..") else path


def check_destination(path: Path, kind: str, overwrite: bool, flag: str = "--out") -> None:
    """Refuse, before any work, a ``kind`` folder destination that cannot be written or
    must not be replaced: an existing file, an existing folder without ``--overwrite``,
    a folder oneclass did not write (or of another kind), a read-only place."""
    if path.is_symlink() or path.exists():
        if not path.is_dir():
            raise OneclassError(f"{path}: exists and is not a folder ({flag} names the {kind} folder to write)")
        found = folder_kind(path)
        if found != kind:
            what = f"a oneclass {found} folder" if found else f"a folder oneclass did not write (no {MARKER} marker)"
            raise OneclassError(f"{path}: exists and is {what}; oneclass replaces only its own {kind} "
                                f"folders: choose another {flag} or remove it yourself")
        if not overwrite:
            raise OneclassError(f"{path}: {kind} folder exists; pass --overwrite to replace it")
        refuse_foreign(path, kind, f"move them out first, or choose another {flag}")
    check_writable(path.parent)


def check_output_file(path: Path, flag: str) -> None:
    """Refuse, before any work, an output file that cannot be written."""
    if path.is_dir():
        raise OneclassError(f"{flag}: {path} is a folder; name the file to write")
    check_writable(path.parent)


def check_writable(folder: Path) -> None:
    """``folder``, or the nearest part of it that exists, must be a writable folder
    (missing parents are created when writing starts)."""
    existing = folder.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise OneclassError(f"{existing}: not a folder, so nothing can be written under it")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(f"{existing}: not writable (read-only file system or no permission)")


def replace_folder(built: Path, out: Path, kind: str) -> None:
    """Move the completed folder ``built`` to ``out``. A folder already at ``out`` must be
    a oneclass ``kind`` (checked again: it may have changed since the run began) and is
    removed only once the new one is in place."""
    trash = None
    if out.is_symlink() or out.exists():
        if folder_kind(out) != kind:
            raise OneclassError(f"{out}: no longer a oneclass {kind} folder; the new one is kept at {built}")
        refuse_foreign(out, kind, f"the new one is kept at {built}")
        trash = out.with_name(f".{out.name}.old-{os.getpid()}")
        out.rename(trash)
    try:
        built.rename(out)
    except BaseException:
        if trash is not None:
            trash.rename(out)  # the old folder back where it was
        raise
    if trash is not None:
        discard(trash)


def discard(path: Path) -> None:
    """Remove a folder oneclass built (a symbolic link goes, never its target)."""
    import shutil

    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path, ignore_errors=True)


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

    def image_scores(self, split: str) -> ScoreTable | None:
        """scores/SPLIT_images.csv, or None where the run has none (whole-image runs, and
        runs written before image tables existed)."""
        path = self.path / "scores" / f"{split}_images.csv"
        if not path.is_file():
            return None
        return parse_scores(path.read_text(), str(path))

    @property
    def whole_image(self) -> bool:
        """Whether the run's items are whole images (one per source) rather than patches."""
        return bool((self.data.get("extraction") or {}).get("whole_image"))


def read_recipe_copy(path: Path) -> dict | None:
    """The resolved recipe a run folder keeps, or None when it is missing or damaged."""
    import yaml

    try:
        recipe = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    return recipe if isinstance(recipe, dict) else None


def open_run(path: str | Path) -> RunFolder:
    """A complete run folder of a compatible format, or one clear error."""

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
    recipe = read_recipe_copy(path / "recipe.yaml")
    if recipe is None:
        raise OneclassError(f"{path / 'recipe.yaml'}: damaged (not a YAML mapping of recipe sections); "
                            f"the run's recipe cannot be read back")
    return RunFolder(path, recipe, env, read_json(path / "data.json"), read_json(path / "metrics.json"))
