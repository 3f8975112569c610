"""MNIST handwritten digits, one-vs-rest: some digits are normal, every other digit is an anomaly.

The idx files are read with NumPy as distributed (gzip'd or not). Each file is parsed once
per process and shared by every item; each file is hashed once per dataset for provenance.
"""

from __future__ import annotations

import functools
import gzip
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from oneclass.data.datasets.base import Dataset, Item, Loaded, file_record
from oneclass.data.items import NORMAL
from oneclass.errors import OneclassError

DIGITS = range(10)
SPLITS = ("train", "t10k")  # the order of the items: train images first, when present
_UBYTE = 0x08  # idx data type code of unsigned bytes
_NDIM = {"images": 3, "labels": 1}


def subclass_of(digit: int) -> str:
    """The anomaly subclass of a digit: ``digit-7``. A plain ``7`` would be read as an
    integer by YAML, and ``split.seen_subclasses`` takes strings only."""
    return f"digit-{digit}"


def _candidates(split: str, kind: str) -> list[str]:
    ndim = _NDIM[kind]
    names = [f"{split}-{kind}-idx{ndim}-ubyte", f"{split}-{kind}.idx{ndim}-ubyte"]  # the latter: Kaggle's copy
    return [n + suffix for n in names for suffix in ("", ".gz")]


def _find(folder: Path, split: str, kind: str) -> Path | None:
    for name in _candidates(split, kind):
        if (folder / name).is_file():
            return folder / name
    return None


def _raw_bytes(path: Path, limit: int | None = None) -> bytes:
    """The file's (decompressed) bytes, at most ``limit`` of them."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                return fh.read() if limit is None else fh.read(limit)
        with open(path, "rb") as fh:
            return fh.read() if limit is None else fh.read(limit)
    except EOFError:
        raise OneclassError(f"{path}: truncated MNIST idx file (the gzip stream ends early)") from None
    except gzip.BadGzipFile:
        raise OneclassError(f"{path}: cannot read MNIST idx file: not a gzip file") from None
    except (OSError, zlib.error) as exc:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise OneclassError(f"{path}: cannot read MNIST idx file: {reason}") from None


def _header(data: bytes, path: Path, kind: str) -> tuple[int, ...]:
    """Check the magic number (0x0000 0x08 ndim) and return the dimensions."""
    ndim = _NDIM[kind]
    expected = 0x800 | ndim
    if len(data) < 4:
        raise OneclassError(f"{path}: truncated MNIST idx file ({len(data)} bytes, no header)")
    magic = int.from_bytes(data[:4], "big")
    if magic != expected:
        raise OneclassError(f"{path}: not an MNIST {kind} idx file (magic number {magic:#010x}, "
                            f"expected {expected:#010x})")
    if len(data) < 4 + 4 * ndim:
        raise OneclassError(f"{path}: truncated MNIST idx file (header cut short)")
    return tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))


def header(path: Path, kind: str) -> tuple[int, ...]:
    """The dimensions of an idx file, reading only its header."""
    return _header(_raw_bytes(path, 4 + 4 * _NDIM[kind]), path, kind)


def read_idx(path: Path, kind: str) -> np.ndarray:
    """An idx file of unsigned bytes as a read-only array: (n, rows, cols) images or (n,) labels."""
    data = _raw_bytes(path)
    shape = _header(data, path, kind)
    offset = 4 + 4 * len(shape)
    expected = int(np.prod(shape))
    if len(data) - offset != expected:
        what = "truncated" if len(data) - offset < expected else "longer than its header says"
        raise OneclassError(f"{path}: {what} MNIST idx file ({len(data) - offset} data bytes, "
                            f"header says {expected})")
    return np.frombuffer(data, dtype=np.uint8, count=expected, offset=offset).reshape(shape)


@functools.lru_cache(maxsize=8)
def _cached(path: str, size: int, mtime_ns: int, kind: str) -> np.ndarray:
    return read_idx(Path(path), kind)


def load_idx(path: Path, kind: str) -> np.ndarray:
    """:func:`read_idx`, parsed once per process and file version (path, size, mtime):
    items pickled into extraction workers find the arrays there instead of re-reading."""
    try:
        stat = path.stat()
    except OSError as exc:
        raise OneclassError(f"{path}: cannot read MNIST idx file: {exc.strerror or exc}") from None
    return _cached(str(path.resolve()), stat.st_size, stat.st_mtime_ns, kind)


class IdxPair:
    """The images and labels file of one MNIST split, parsed once and shared by its items.

    The parsed arrays stay out of pickles (items travel to extraction workers one by one);
    a worker gets them from :func:`load_idx`'s per-process cache."""

    def __init__(self, split: str, images: Path, labels: Path):
        self.split, self.images_path, self.labels_path = split, images, labels
        self._images: np.ndarray | None = None
        self._labels: np.ndarray | None = None

    def __repr__(self) -> str:
        return f"IdxPair({self.split!r}, {str(self.images_path)!r}, {str(self.labels_path)!r})"

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_images": None, "_labels": None}

    def labels(self) -> np.ndarray:
        if self._labels is None:
            labels = load_idx(self.labels_path, "labels")
            if labels.size and labels.max() > 9:
                raise OneclassError(f"{self.labels_path}: label {int(labels.max())} is not a digit 0-9")
            self._labels = labels
        return self._labels

    def check(self) -> None:
        """Images and labels agree in count, read from the images file's header only."""
        n_images = header(self.images_path, "images")[0]
        if n_images != len(self.labels()):
            raise OneclassError(f"{self.images_path}: {n_images} images but {self.labels_path.name} "
                                f"holds {len(self.labels())} labels")

    def images(self) -> np.ndarray:
        if self._images is None:
            images = load_idx(self.images_path, "images")
            if len(images) != len(self.labels()):
                raise OneclassError(f"{self.images_path}: {len(images)} images but "
                                    f"{self.labels_path.name} holds {len(self.labels())} labels")
            self._images = images
        return self._images


@dataclass
class MNISTItem(Item):
    """Image ``index`` of a split's idx files. An anomalous digit is anomalous everywhere."""

    pair: IdxPair = None
    index: int = 0
    digit: int = 0

    def load(self) -> Loaded:
        image = np.array(self.pair.images()[self.index])[:, :, None]  # (28, 28, 1), a copy
        if self.subclass == NORMAL:
            return Loaded(image, None, [])
        return Loaded(image, np.ones(image.shape[:2], dtype=np.uint8), [self.subclass])

    def files(self) -> list[Path]:
        return [self.pair.images_path, self.pair.labels_path]


class MNISTDataset(Dataset):
    """MNIST digits, one-vs-rest: the normal_classes digits are normal, the others anomalous."""

    name = "mnist"
    description = __doc__
    layout = """\
root/                                  the folder holding raw/, or raw/ itself (or MNIST/raw)
  raw/t10k-images-idx3-ubyte[.gz]      the 10,000 test digits, 28 x 28, as distributed
  raw/t10k-labels-idx1-ubyte[.gz]      their labels 0-9
  raw/train-images-idx3-ubyte[.gz]     the 60,000 training digits: used when present
  raw/train-labels-idx1-ubyte[.gz]     (a labels file without its images is ignored)
gzip'd or plain (plain wins when both exist); the Kaggle names t10k-images.idx3-ubyte also
work. Which file a digit came from is not a protocol role: the split deals all of them.
Each image is one item, source "<split>/<index>" (t10k/00042); a normal digit has subclass
"good", an anomalous one "digit-<d>" (digit-7) and a mask of ones.
options: normal_classes (default [0]: the normal digits, the rest are anomalies),
use_train (default true: also read the train files when present), max_per_class (default
none: every image; n keeps n images of each digit, all when fewer, for quick runs: a random
draw per digit seeded by `seed` (default 0) and the digit, kept in file order)"""

    @dataclass
    class Options:
        normal_classes: list[int] = field(default_factory=lambda: [0])
        use_train: bool = True
        max_per_class: int | None = None
        seed: int = 0

    def __init__(self, root, options):
        super().__init__(root, options)
        normal = options.normal_classes
        bad = [d for d in normal if d not in DIGITS]
        if bad:
            raise OneclassError(f"dataset.normal_classes: {bad[0]} is not a digit 0-9")
        if not normal:
            raise OneclassError("dataset.normal_classes: empty; name the normal digits, e.g. [0]")
        if set(normal) == set(DIGITS):
            raise OneclassError("dataset.normal_classes: all ten digits leave no anomalies; "
                                "leave at least one digit out")
        if options.max_per_class is not None and options.max_per_class <= 0:
            raise OneclassError(f"dataset.max_per_class: must be positive, got {options.max_per_class}")
        if options.seed < 0:
            raise OneclassError(f"dataset.seed: must be >= 0, got {options.seed}")
        self._records: dict[Path, dict] = {}  # file → its size and SHA-256, hashed once

    def raw_folder(self) -> Path:
        for folder in (self.root / "raw", self.root, self.root / "MNIST" / "raw"):
            if any(_find(folder, split, kind) for split in SPLITS for kind in _NDIM):
                return folder
        raise OneclassError(f"{self.root}: no MNIST idx files found (expected raw/t10k-images-idx3-ubyte.gz "
                            f"and raw/t10k-labels-idx1-ubyte.gz; see `oneclass list datasets --verbose`)")

    def pairs(self) -> list[IdxPair]:
        folder = self.raw_folder()
        pairs = []
        for split in SPLITS:
            if split == "train" and not self.options.use_train:
                continue
            images, labels = _find(folder, split, "images"), _find(folder, split, "labels")
            if images is not None and labels is None:
                raise OneclassError(f"{images}: its labels file {_candidates(split, 'labels')[1]} is missing")
            if images is not None:  # labels without their images are ignored
                pairs.append(IdxPair(split, images, labels))
        if not pairs:
            raise OneclassError(f"{folder}: no MNIST images file found (expected "
                                f"t10k-images-idx3-ubyte.gz with its labels file)")
        return pairs

    def items(self):
        o = self.options
        normal = set(o.normal_classes)
        pairs = self.pairs()
        for pair in pairs:
            pair.check()
        digits = [pair.labels() for pair in pairs]
        keep = [np.ones(len(d), dtype=bool) for d in digits]
        if o.max_per_class is not None:
            every = np.concatenate(digits)
            chosen = np.zeros(len(every), dtype=bool)
            for digit in DIGITS:
                where = np.flatnonzero(every == digit)
                rng = np.random.default_rng([o.seed, digit])
                chosen[rng.permutation(where)[: o.max_per_class]] = True
            keep = np.split(chosen, np.cumsum([len(d) for d in digits])[:-1])
        present = set(np.unique(np.concatenate(digits)).tolist())
        missing = sorted(normal - present)
        if missing:
            raise OneclassError(f"dataset.normal_classes: no images of digit {missing[0]} in "
                                f"{', '.join(str(p.labels_path) for p in pairs)}")
        items = []
        for pair, labels, kept in zip(pairs, digits, keep):
            width = max(5, len(str(len(labels) - 1)))
            for index in np.flatnonzero(kept).tolist():
                digit = int(labels[index])
                subclass = NORMAL if digit in normal else subclass_of(digit)
                items.append(MNISTItem(f"{pair.split}/{index:0{width}d}", subclass,
                                       pair=pair, index=index, digit=digit))
        return items

    def describe_source(self, item: MNISTItem) -> dict:
        """Each idx file's size and SHA-256 (computed once per dataset), with the item's
        index in it."""
        files = []
        for path in item.files():
            if path not in self._records:
                self._records[path] = file_record(path, self.root)
            files.append({**self._records[path], "index": item.index})
        return {"source": item.source, "subclass": item.subclass, "files": files}
