"""The patch store: a folder of memory-mappable arrays, an index table and metadata.

    images.npy   (N, C, H, W) uint8
    masks.npy    (N, H, W) uint8 in {0, 1}, the patch masks at output size
    index.csv    id,source,x,y,label,anomaly_frac,subclass
    meta.json    every extraction parameter, the dataset plugin, each source file's size
                 and SHA-256, the counts, and the toolkit version

The arrays are streamed to disk as patches arrive (whole-slide extraction never holds
a slide's patches in memory); the .npy header is reserved up front and rewritten with the
final count. A store is built under a temporary name and renamed into place only when
complete, so an interrupted run never leaves a folder that looks like a store.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from collections import Counter
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from oneclass.data.patches import PatchChunk
from oneclass.artifacts import check_destination, mark, named_folder, replace_folder
from oneclass.errors import OneclassError, OutputError

INDEX_COLUMNS = ["id", "source", "x", "y", "label", "anomaly_frac", "subclass"]
_HEADER_BYTES = 128  # npy v1.0 header, padded; room for any realistic shape


def _csv_field(text: str) -> str:
    """Quote a CSV field only when it needs it (paths may hold commas or quotes)."""
    if any(c in text for c in ',"\n\r'):
        return '"' + text.replace('"', '""') + '"'
    return text


def _write_at(file, data: memoryview, offset: int) -> None:
    """Write all of ``data`` at ``offset`` of ``file``, leaving its position alone."""
    if not hasattr(os, "pwrite"):  # not POSIX
        file.seek(offset)
        file.write(data)
        return
    while data:
        written = os.pwrite(file.fileno(), data, offset)
        data, offset = data[written:], offset + written


class NpyStreamWriter:
    """Append rows to a .npy file whose first dimension is unknown until close().

    With ``sparse``, runs of all-zero rows are not written but skipped over, leaving holes
    that read back as zeros (the masks of normal images and of most patches of anomalous
    ones: on the nanofibre grid half the store's bytes, which the kernel then neither
    copies nor allocates)."""

    def __init__(self, path: Path, row_shape: tuple[int, ...], dtype=np.uint8, sparse: bool = False):
        self.path = path
        self.row_shape = tuple(row_shape)
        self.dtype = np.dtype(dtype)
        self.sparse = sparse
        self.rows = 0
        self._row_bytes = int(np.prod(self.row_shape)) * self.dtype.itemsize
        self._file = open(path, "wb")
        self._file.write(self._header(0))
        if sparse:
            self._file.flush()  # rows go straight to their offsets (_write_sparse)

    def _header(self, rows: int) -> bytes:
        shape = (rows, *self.row_shape)
        text = "{'descr': '%s', 'fortran_order': False, 'shape': %r, }" % (self.dtype.str, shape)
        preamble = b"\x93NUMPY\x01\x00"
        body_len = _HEADER_BYTES - len(preamble) - 2
        body = text.ljust(body_len - 1) + "\n"
        if len(body) != body_len:
            raise ValueError(f"array shape {shape} too large for the reserved .npy header")
        return preamble + body_len.to_bytes(2, "little") + body.encode("latin1")

    def append(self, rows: np.ndarray) -> None:
        if rows.shape[1:] != self.row_shape or rows.dtype != self.dtype:
            raise ValueError(f"expected rows of {self.row_shape} {self.dtype}, got {rows.shape} {rows.dtype}")
        data = np.ascontiguousarray(rows)
        if self.sparse and len(data):
            self._write_sparse(data)
        else:
            self._file.write(memoryview(data).cast("B"))
        self.rows += len(rows)

    def _write_sparse(self, data: np.ndarray) -> None:
        # each run of rows that are not all zero is written at its offset, one pwrite each:
        # seeking past the zero runs was one more system call a run (~640 for the nanofibre
        # grid), each a hand-over of the GIL to the threads cutting patches
        zero = ~data.reshape(len(data), -1).any(1)
        edges = np.flatnonzero(np.diff(zero.astype(np.int8))) + 1
        first = _HEADER_BYTES + self.rows * self._row_bytes
        for start, stop in zip(np.r_[0, edges].tolist(), np.r_[edges, len(data)].tolist()):
            if not zero[start]:
                _write_at(self._file, memoryview(data[start:stop]).cast("B"), first + start * self._row_bytes)

    def close(self) -> None:
        self._file.truncate(_HEADER_BYTES + self.rows * self._row_bytes)  # a trailing hole, too
        self._file.seek(0)
        self._file.write(self._header(self.rows))
        self._file.close()


class StoreWriter:
    """Builds a patch store in ``<out>.tmp-<pid>`` and renames it to ``out`` on commit."""

    def __init__(self, out: Path, overwrite: bool = False):
        out = named_folder(out)
        check_destination(out, "store", overwrite)
        self.out = out
        self.tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
        self._images: NpyStreamWriter | None = None
        self._masks: NpyStreamWriter | None = None
        self.count = 0
        self.counts: dict[tuple[int, str], int] = {}
        self._index = None
        self._kept = False  # the finished store stays in tmp (commit could not move it)
        try:
            with self._writing():
                out.parent.mkdir(parents=True, exist_ok=True)
                if self.tmp.exists():
                    shutil.rmtree(self.tmp)
                self.tmp.mkdir()
                self._index = open(self.tmp / "index.csv", "w", newline="")
                self._index.write(",".join(INDEX_COLUMNS) + "\n")
        except BaseException:
            self.abort()
            raise

    @contextmanager
    def _writing(self):
        """A failed write (full disk, read-only place) becomes one line naming the store."""
        try:
            yield
        except OSError as exc:
            raise OutputError(f"{self.out}: cannot write the patch store: {exc.strerror or exc}") from None

    def append(self, chunk: PatchChunk) -> None:
        with self._writing():
            self._append(chunk)

    def _append(self, chunk: PatchChunk) -> None:
        if self._images is None:
            self._images = NpyStreamWriter(self.tmp / "images.npy", chunk.images.shape[1:])
            self._masks = NpyStreamWriter(self.tmp / "masks.npy", chunk.masks.shape[1:], sparse=True)
        if len(chunk) == 0:
            return
        self._images.append(chunk.images)
        self._masks.append(chunk.masks)
        ids = range(self.count, self.count + len(chunk))
        source = _csv_field(chunk.source)
        subclasses = {name: _csv_field(name) for name in set(chunk.subclass)}  # a few per image
        self._index.write("".join(
            f"{i},{source},{x},{y},{label},{frac:.6g},{subclasses[subclass]}\n"
            for i, x, y, label, frac, subclass in zip(ids, chunk.x.tolist(), chunk.y.tolist(),
                                                      chunk.label.tolist(), chunk.anomaly_frac.tolist(),
                                                      chunk.subclass)))
        for key, n in Counter(zip(chunk.label.tolist(), chunk.subclass)).items():
            self.counts[key] = self.counts.get(key, 0) + n
        self.count += len(chunk)

    def commit(self, meta: dict[str, Any], empty_shape: tuple[int, ...]) -> tuple[Path, dict]:
        with self._writing():
            return self._commit(meta, empty_shape)

    def _commit(self, meta: dict[str, Any], empty_shape: tuple[int, ...]) -> tuple[Path, dict]:
        if self._images is None:  # no patch at all: still a valid, empty store
            self._images = NpyStreamWriter(self.tmp / "images.npy", empty_shape)
            self._masks = NpyStreamWriter(self.tmp / "masks.npy", empty_shape[1:])
        self._images.close()
        self._masks.close()
        self._index.close()
        meta = {**meta, "count": self.count,
                "image_shape": list(self._images.row_shape),
                "counts": [{"label": lab, "subclass": sub, "count": n}
                           for (lab, sub), n in sorted(self.counts.items())]}
        (self.tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        mark(self.tmp, "store")
        try:
            replace_folder(self.tmp, self.out, "store")
        except OneclassError:  # OUT became something else meanwhile: the error says where the store is kept
            self._kept = True
            raise
        return self.out, meta

    def abort(self) -> None:
        files = [w._file for w in (self._images, self._masks) if w is not None] + [self._index]
        for file in files:
            if file is not None and not file.closed:
                with suppress(OSError):  # closing flushes, and a full disk refuses that too
                    file.close()
        if not self._kept:
            shutil.rmtree(self.tmp, ignore_errors=True)


@dataclass
class PatchStore:
    """A patch store opened for reading; arrays are memory-mapped."""

    path: Path
    images: np.ndarray
    masks: np.ndarray
    index: list[dict[str, str]]
    meta: dict[str, Any]

    @classmethod
    def open(cls, path: str | Path) -> "PatchStore":
        path = Path(path)
        for name in ("images.npy", "masks.npy", "index.csv", "meta.json"):
            if not (path / name).is_file():
                raise OneclassError(f"{path}: not a patch store (missing {name})")
        with open(path / "index.csv", newline="") as fh:
            index = list(csv.DictReader(fh))
        # an empty store cannot be memory-mapped; its arrays are loaded as they are
        mode = "r" if index else None
        return cls(
            path=path,
            images=np.load(path / "images.npy", mmap_mode=mode),
            masks=np.load(path / "masks.npy", mmap_mode=mode),
            index=index,
            meta=json.loads((path / "meta.json").read_text()),
        )

    def __len__(self) -> int:
        return len(self.index)

    @property
    def labels(self) -> np.ndarray:
        return np.array([int(r["label"]) for r in self.index], dtype=np.int8)
