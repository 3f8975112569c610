"""What a dataset plugin is: a root folder turned into items with (image, mask, subclass).

A plugin subclasses :class:`Dataset`, declares its options as a dataclass ``Options``
(checked like recipe keys), documents its folder ``layout``, and returns items. An item
knows how to load its pixels and its label map; extraction does the rest.
"""

from __future__ import annotations

import functools
import hashlib
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

from oneclass.data.items import NORMAL
from oneclass.data.readers import ImageReadError, read_image, read_mask
from oneclass.errors import OneclassError


@dataclass
class Loaded:
    """An item's pixels and label map (0 normal, k >= 1 the defect type categories[k-1])."""

    image: np.ndarray  # (H, W, C) uint8
    labels: np.ndarray | None  # (H, W) uint8, None when the image holds no anomaly
    categories: list[str]


@dataclass
class Item:
    """One image of a dataset. ``source`` is its name in the patch index."""

    source: str
    subclass: str  # the image's defect type, or "good"

    # the significant bits of 16-bit pixels (patches.bits), set by extraction before it
    # loads the item; an item that reads image files passes it to readers.read_image
    bits = None  # int | None; a class attribute, not a dataclass field

    def load(self) -> Loaded:
        raise NotImplementedError

    def files(self) -> list[Path]:
        """The files this item reads, for provenance (size and SHA-256)."""
        return []


@dataclass
class ImageItem(Item):
    """An image file with zero or more binary mask files, merged by logical OR."""

    image_path: Path = None
    mask_paths: list[Path] = field(default_factory=list)
    mask_threshold: int | None = None  # for masks that are not strictly binary (extraction sets it)

    def load(self) -> Loaded:
        image = read_image(self.image_path, self.bits)
        if not self.mask_paths:
            return Loaded(image, None, [])
        merged = np.zeros(image.shape[:2], dtype=bool)
        for mask_path in self.mask_paths:
            merged |= read_mask(mask_path, image.shape[:2], self.mask_threshold)
        if not merged.any():
            return Loaded(image, None, [])
        category = self.subclass if self.subclass != NORMAL else "anomaly"
        return Loaded(image, merged.astype(np.uint8), [category])

    def files(self) -> list[Path]:
        return [self.image_path, *self.mask_paths]


class Dataset:
    """Base class of dataset plugins."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    layout: ClassVar[str] = ""
    needs_root: ClassVar[bool] = True
    is_slide: ClassVar[bool] = False

    @dataclass
    class Options:
        pass

    def __init__(self, root: Path | None, options: "Dataset.Options"):
        if self.needs_root:
            if root is None:
                raise OneclassError(f"dataset {self.name!r}: a root folder is required (--root or dataset.root)")
            if not root.is_dir():
                raise OneclassError(f"{root}: dataset root not found")
        self.root = root
        self.options = options

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "items" in cls.__dict__:
            cls.items = _listed_once(cls.__dict__["items"])

    def items(self) -> list[Item]:
        """The dataset's items. A plugin's ``items`` runs once per instance: the store's
        cache key, the subclasses and the extraction all read the same listing, and its
        warnings are printed once."""
        raise NotImplementedError

    def subclasses(self) -> list[str]:
        """The anomaly subclasses present, in a stable order."""
        return sorted({item.subclass for item in self.items()} - {NORMAL})

    def describe_source(self, item: Item) -> dict:
        """Provenance of an item's files, relative to the root when possible."""
        return {"source": item.source, "subclass": item.subclass,
                "files": [file_record(p, self.root) for p in item.files()]}


def file_record(path: Path, root: Path | None) -> dict:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    except OSError as exc:
        raise ImageReadError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        shown = str(path.resolve().relative_to(root.resolve())) if root else str(path)
    except ValueError:
        shown = str(path)
    return {"path": shown, "size": path.stat().st_size, "sha256": digest.hexdigest()}


def sorted_images(folder: Path) -> list[Path]:
    from oneclass.data.readers import IMAGE_SUFFIXES

    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                  and not p.name.startswith("."))


def walk_images(folder: Path) -> list[Path]:
    """Every image file under ``folder`` at any depth, as :func:`walk_files` finds them."""
    from oneclass.data.readers import IMAGE_SUFFIXES

    return walk_files(folder, IMAGE_SUFFIXES)


def walk_files(folder: Path, suffixes) -> list[Path]:
    """Every file under ``folder`` at any depth whose suffix (any case) is in ``suffixes``,
    sorted: linked folders followed (once: a link back up does not loop), hidden files and
    folders (".ipynb_checkpoints", ".DS_Store") left out. (Python's rglob enters no link.)"""
    found, seen, broken = [], set(), []
    root = os.path.realpath(folder)
    for top, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(top)
        # reached again through a link, or a link up to a folder holding the walk's own
        # (normal/x -> .. would take anomalous/ for normal images)
        if real in seen or (real != root and os.path.commonpath([real, root]) == real):
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            path = Path(top) / name
            if name.startswith(".") or path.suffix.lower() not in suffixes:
                continue
            if path.is_file():
                found.append(path)
            elif path.is_symlink():
                broken.append(path)
    if broken:
        warnings.warn(f"{broken[0]}: a link to no file, left out ({len(broken)} such link(s) under {folder})",
                      stacklevel=3)
    return sorted(found)


def _listed_once(items):
    @functools.wraps(items)
    def listed(self) -> list[Item]:
        if "_items" not in self.__dict__:
            self._items = items(self)
        return list(self._items)

    return listed
