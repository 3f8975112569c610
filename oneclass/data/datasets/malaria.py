from __future__ import annotations

import difflib
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from oneclass.data.datasets.base import Dataset, Item, Loaded
from oneclass.data.items import NORMAL
from oneclass.data.readers import read_image
from oneclass.errors import OneclassError

INFECTED = ["ring", "trophozoite", "schizont", "gametocyte"]


@dataclass
class BoxItem(Item):
    """An image whose anomalies are axis-aligned boxes (r0, c0, r1, c1, category)."""

    image_path: Path = None
    annotation: Path = None
    shape: tuple[int, int] | None = None  # (rows, cols) declared by the annotation
    boxes: list[tuple[int, int, int, int, str]] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)

    def load(self) -> Loaded:
        image = read_image(self.image_path, self.bits)
        if self.shape is not None and tuple(self.shape) != image.shape[:2]:
            raise OneclassError(
                f"{self.image_path}: image is {image.shape[1]}x{image.shape[0]} but "
                f"{self.annotation.name} declares {self.shape[1]}x{self.shape[0]}")
        if not self.boxes:
            return Loaded(image, None, [])
        labels = np.zeros(image.shape[:2], dtype=np.uint8)
        for r0, c0, r1, c1, category in self.boxes:
            labels[max(r0, 0):max(r1, 0), max(c0, 0):max(c1, 0)] = self.categories.index(category) + 1
        return Loaded(image, labels, self.categories)

    def files(self) -> list[Path]:
        return [self.image_path]


def _with_close_match(name: str, names: set) -> str:
    close = difflib.get_close_matches(name.lower(), sorted(names), n=1, cutoff=0.6)
    return f"{name!r} (did you mean {close[0]!r}?)" if close else repr(name)


class MalariaDataset(Dataset):
    """BBBC041 malaria blood smears; infected-cell boxes become anomalous regions."""

    name = "malaria"
    description = __doc__
    layout = """\
root/                       BBBC041 as distributed
  images/<name>.png|jpg     blood-smear images
  training.json, test.json  [{"image": {"pathname": "/images/<name>", "shape": {"r", "c"}},
                               "objects": [{"bounding_box": {"minimum": {"r", "c"},
                                            "maximum": {"r", "c"}}, "category": ...}]}]
Boxes of the infected categories (option anomalous, default ring, trophozoite, schizont,
gametocyte) are anomalous regions with their category as subclass; a patch holding several
takes the category with most pixels. Box maxima are treated as exclusive. Other
categories (red blood cell, leukocyte, difficult) are normal."""

    @dataclass
    class Options:
        annotations: list[str] = field(default_factory=lambda: ["training.json", "test.json"])
        anomalous: list[str] = field(default_factory=lambda: list(INFECTED))

    def items(self):
        files = [self.root / name for name in self.options.annotations if (self.root / name).is_file()]
        if not files:
            raise OneclassError(f"{self.root}: none of the annotation files "
                                f"{', '.join(self.options.annotations)} found (dataset.annotations)")
        items, listed_in, found = [], {}, set()
        for path in files:
            for item in self._parse(path, found):
                if item.source in listed_in:  # its patches would be cut twice, under one name
                    raise OneclassError(f"{path}: image {item.source} is listed again (first in "
                                        f"{listed_in[item.source]})")
                listed_in[item.source] = path.name
                items.append(item)
        absent = [c for c in self.options.anomalous if c not in found]
        if absent:  # a typo would make every cell of that kind normal
            said = (f"dataset.anomalous: {', '.join(_with_close_match(c, found) for c in absent)} named in no "
                    f"object of {', '.join(f.name for f in files)} (they name {', '.join(sorted(found))})")
            if len(absent) == len(self.options.anomalous):
                raise OneclassError(f"{said}; no cell would be anomalous")
            warnings.warn(said, stacklevel=2)
        return items

    def _parse(self, path: Path, found: set) -> list[BoxItem]:
        """``path``'s items; the categories its objects name are added to ``found``."""
        try:
            entries = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise OneclassError(f"{path}: cannot read annotations: {exc}") from None
        if not isinstance(entries, list):
            raise OneclassError(f"{path}: expected a list of image entries")
        items = []
        for i, entry in enumerate(entries):
            try:
                image = entry["image"]
                rel = image["pathname"].lstrip("/")
                shape = (int(image["shape"]["r"]), int(image["shape"]["c"])) if "shape" in image else None
                boxes = []
                for obj in entry.get("objects", []):
                    found.add(obj["category"])
                    if obj["category"] not in self.options.anomalous:
                        continue
                    lo, hi = obj["bounding_box"]["minimum"], obj["bounding_box"]["maximum"]
                    boxes.append((int(lo["r"]), int(lo["c"]), int(hi["r"]), int(hi["c"]), obj["category"]))
            except (KeyError, TypeError, ValueError) as exc:
                raise OneclassError(f"{path}: entry {i}: malformed ({type(exc).__name__}: {exc})") from None
            image_path = self.root / rel
            if not image_path.is_file():
                raise OneclassError(f"{image_path}: image listed in {path.name} not found")
            categories = [c for c in self.options.anomalous if any(b[4] == c for b in boxes)]
            counts = {c: sum(b[4] == c for b in boxes) for c in categories}
            subclass = max(categories, key=lambda c: counts[c]) if categories else NORMAL
            items.append(BoxItem(rel, subclass, image_path=image_path, annotation=path, shape=shape,
                                 boxes=boxes, categories=categories))
        return items

    def subclasses(self):
        return sorted({c for item in self.items() for c in item.categories})
