from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Literal

from oneclass.data.datasets.base import Dataset, ImageItem, sorted_images
from oneclass.data.items import NORMAL
from oneclass.errors import OneclassError


class MVTecDataset(Dataset):
    """One MVTec AD category; defect names are the anomaly subclasses."""

    name = "mvtec"
    description = __doc__
    layout = """\
root/                                  one category, e.g. mvtec_anomaly_detection/leather
  train/good/*.png                     defect-free training images
  test/good/*.png                      defect-free test images
  test/<defect>/<n>.png                defective images; <defect> is the subclass
  ground_truth/<defect>/<n>_mask.png   their masks (0/255, same size)
options: folders (default [train, test]), missing_masks: skip | error (default skip,
with a warning: an anomalous image without its mask cannot be labelled per patch)"""

    @dataclass
    class Options:
        folders: list[str] = field(default_factory=lambda: ["train", "test"])
        missing_masks: Literal["skip", "error"] = "skip"

    def items(self):
        items, missing = [], []
        for folder in self.options.folders:
            base = self.root / folder
            if not base.is_dir():
                raise OneclassError(f"{base}: MVTec folder not found (dataset.folders)")
            for sub in sorted(p for p in base.iterdir() if p.is_dir()):
                for path in sorted_images(sub):
                    source = str(path.relative_to(self.root))
                    if sub.name == NORMAL:
                        items.append(ImageItem(source, NORMAL, image_path=path))
                        continue
                    mask = self.root / "ground_truth" / sub.name / f"{path.stem}_mask.png"
                    if not mask.is_file():
                        if self.options.missing_masks == "error":
                            raise OneclassError(f"{mask}: mask of {source} not found")
                        missing.append(source)
                        continue
                    items.append(ImageItem(source, sub.name, image_path=path, mask_paths=[mask]))
        if missing:
            warnings.warn(f"{self.root}: skipped {len(missing)} anomalous image(s) without a mask "
                          f"(e.g. {missing[0]}); set dataset.missing_masks=error to stop instead",
                          stacklevel=2)
        return items
