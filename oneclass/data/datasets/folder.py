from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from oneclass.data.datasets.base import Dataset, ImageItem, Loaded, sorted_images
from oneclass.data.items import NORMAL
from oneclass.data.readers import IMAGE_SUFFIXES, read_image
from oneclass.errors import OneclassError

MASK_STEM = re.compile(r"_mask(_\d+)?$")  # <stem>_mask.png, <stem>_mask_1.png: a mask, not an image


@dataclass
class WholeImageItem(ImageItem):
    """An anomalous image without a mask: every pixel counts as anomalous."""

    def load(self) -> Loaded:
        image = read_image(self.image_path, self.bits)
        return Loaded(image, np.ones(image.shape[:2], dtype=np.uint8), [self.subclass])


class FolderDataset(Dataset):
    """Your own images: normal/ and anomalous/<subclass>/ with masks beside or in a parallel tree."""

    name = "folder"
    description = __doc__
    layout = """\
root/
  normal/**/*.png|jpg|tif              normal images (any depth)
  anomalous/<subclass>/*.png|jpg|tif   anomalous images, one folder per defect type
  masks of an anomalous image, either
    beside it:        anomalous/<subclass>/<stem>_mask.png (more: <stem>_mask_1.png, ...)
    or in a tree:     masks/<subclass>/<stem>.png  or  masks/<subclass>/<stem>_mask.png
options: missing_masks: error | skip | whole (default error; "whole" labels every pixel
of an unmasked anomalous image anomalous, for image-level labels)"""

    @dataclass
    class Options:
        missing_masks: Literal["error", "skip", "whole"] = "error"

    def items(self):
        normal_dir, anomalous_dir = self.root / "normal", self.root / "anomalous"
        if not normal_dir.is_dir() and not anomalous_dir.is_dir():
            raise OneclassError(f"{self.root}: expected normal/ and/or anomalous/<subclass>/ folders")
        items = []
        if normal_dir.is_dir():
            for path in sorted(p for p in normal_dir.rglob("*") if p.is_file()):
                if path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".") \
                        and not MASK_STEM.search(path.stem):
                    items.append(ImageItem(self._rel(path), NORMAL, image_path=path))
        subdirs = sorted(p for p in anomalous_dir.iterdir() if p.is_dir()) if anomalous_dir.is_dir() else []
        for sub in subdirs:
            for path in sorted_images(sub):
                if MASK_STEM.search(path.stem):
                    continue
                masks = self._masks_for(path, sub.name)
                if masks:
                    items.append(ImageItem(self._rel(path), sub.name, image_path=path, mask_paths=masks))
                elif self.options.missing_masks == "whole":
                    items.append(WholeImageItem(self._rel(path), sub.name, image_path=path))
                elif self.options.missing_masks == "error":
                    raise OneclassError(
                        f"{path}: no mask found (looked for {path.stem}_mask.png beside it and in "
                        f"masks/{sub.name}/); set dataset.missing_masks=skip or whole")
        return items

    def _rel(self, path: Path) -> str:
        return str(path.relative_to(self.root))

    def _masks_for(self, image: Path, subclass: str) -> list[Path]:
        beside = [p for p in sorted_images(image.parent)
                  if p.stem == f"{image.stem}_mask" or re.fullmatch(rf"{re.escape(image.stem)}_mask_\d+", p.stem)]
        if beside:
            return beside
        tree = self.root / "masks" / subclass
        return [p for p in sorted_images(tree) if p.stem in (image.stem, f"{image.stem}_mask")]
