from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from oneclass.data.datasets.base import Dataset, ImageItem, Loaded, sorted_images, walk_images
from oneclass.data.items import NORMAL
from oneclass.data.readers import read_image
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
Linked folders are followed, hidden files and folders left out; an image elsewhere under
anomalous/ is refused.
options: missing_masks: error | skip | whole (default error; "skip" warns; "whole" labels
every pixel of an unmasked anomalous image anomalous, for image-level labels)"""

    @dataclass
    class Options:
        missing_masks: Literal["error", "skip", "whole"] = "error"

    def items(self):
        normal_dir, anomalous_dir = self.root / "normal", self.root / "anomalous"
        if not normal_dir.is_dir() and not anomalous_dir.is_dir():
            raise OneclassError(f"{self.root}: expected normal/ and/or anomalous/<subclass>/ folders")
        items = [ImageItem(self._rel(path), NORMAL, image_path=path)
                 for path in walk_images(normal_dir) if not MASK_STEM.search(path.stem)]
        return items + self._anomalous(anomalous_dir)

    def _anomalous(self, anomalous_dir: Path) -> list[ImageItem]:
        by_folder: dict[Path, list[Path]] = {}
        for path in walk_images(anomalous_dir):
            by_folder.setdefault(path.parent, []).append(path)
        misplaced = [image for folder, files in by_folder.items() if folder.parent != anomalous_dir
                     for image in files if not MASK_STEM.search(image.stem)][:1]  # masks there are left alone
        if misplaced:
            raise OneclassError(f"{misplaced[0]}: anomalous images go directly in anomalous/<subclass>/, one folder "
                                f"per defect type (masks beside them or in masks/<subclass>/)")
        if any(folder.name == NORMAL and folder.parent == anomalous_dir for folder in by_folder):
            raise OneclassError(f"{anomalous_dir / NORMAL}: {NORMAL!r} names the normal class in the patch index; "
                                f"name the defect type otherwise (normal images go in normal/)")
        items, skipped = [], []
        for folder in sorted((f for f in by_folder if f.parent == anomalous_dir), key=lambda f: f.name):
            sub = folder.name
            beside = _by_stem(p for p in by_folder[folder] if MASK_STEM.search(p.stem))
            in_tree = _by_stem(sorted_images(self.root / "masks" / sub), whole_stem=True)
            for path in by_folder[folder]:
                if MASK_STEM.search(path.stem):
                    continue
                masks = beside.get(path.stem) or in_tree.get(path.stem, [])
                if masks:
                    items.append(ImageItem(self._rel(path), sub, image_path=path, mask_paths=masks))
                elif self.options.missing_masks == "whole":
                    items.append(WholeImageItem(self._rel(path), sub, image_path=path))
                elif self.options.missing_masks == "error":
                    raise OneclassError(
                        f"{path}: no mask found (looked for {path.stem}_mask.png beside it and in "
                        f"masks/{sub}/); set dataset.missing_masks=skip or whole")
                else:
                    skipped.append(self._rel(path))
        if skipped:
            warnings.warn(f"{self.root}: skipped {len(skipped)} anomalous image(s) without a mask (e.g. "
                          f"{skipped[0]}); dataset.missing_masks=whole labels them whole instead", stacklevel=2)
        return items

    def _rel(self, path: Path) -> str:
        return str(path.relative_to(self.root))


def _by_stem(masks, whole_stem: bool = False) -> dict[str, list[Path]]:
    """Mask files by the stem of the image they belong to: <stem>_mask and <stem>_mask_<k>;
    in a masks/ tree (``whole_stem``) also <stem> itself."""
    found: dict[str, list[Path]] = {}
    for mask in sorted(masks):
        stems = {MASK_STEM.sub("", mask.stem)} if not whole_stem else {mask.stem, mask.stem.removesuffix("_mask")}
        for stem in stems:
            found.setdefault(stem, []).append(mask)
    return found
