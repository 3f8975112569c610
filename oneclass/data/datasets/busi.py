from __future__ import annotations

import re
import warnings

from oneclass.data.datasets.base import Dataset, ImageItem, sorted_images
from oneclass.data.items import NORMAL
from oneclass.errors import OneclassError

_MASK = re.compile(r"^(?P<stem>.+)_mask(_\d+)?$")


class BUSIDataset(Dataset):
    """Breast ultrasound (BUSI): normal, benign and malignant with merged masks."""

    name = "busi"
    description = __doc__
    layout = """\
root/                                   Dataset_BUSI_with_GT (or the folder holding it)
  normal/normal (<n>).png               normal images (their masks are empty)
  benign/benign (<n>).png               subclass "benign"
  benign/benign (<n>)_mask.png          mask; extra masks _mask_1.png, _mask_2.png, ...
  malignant/malignant (<n>).png         subclass "malignant", masks as for benign
All masks of one image are merged (logical OR)."""

    CLASSES = ("normal", "benign", "malignant")

    def items(self):
        root = self.root
        if not (root / "normal").is_dir() and (root / "Dataset_BUSI_with_GT").is_dir():
            root = root / "Dataset_BUSI_with_GT"
        items = []
        for cls in self.CLASSES:
            files = sorted_images(root / cls)
            masks: dict[str, list] = {}
            images = []
            for path in files:
                match = _MASK.match(path.stem)
                if match:
                    masks.setdefault(match["stem"], []).append(path)
                else:
                    images.append(path)
            subclass = NORMAL if cls == "normal" else cls
            for path in images:
                mask_paths = sorted(masks.pop(path.stem, []))
                if not mask_paths and cls != "normal":  # its tumour would be cut into normal patches
                    raise OneclassError(f"{path}: no mask ({path.stem}_mask.png); a {cls} image needs one "
                                        f"(move the image out of the data set to leave it out)")
                items.append(ImageItem(str(path.relative_to(self.root)), subclass, image_path=path,
                                       mask_paths=mask_paths))
            if masks:
                orphan = sorted(masks.values())[0][0]
                warnings.warn(f"{orphan}: a mask of no image (no {_MASK.match(orphan.stem)['stem']}{orphan.suffix}); "
                              f"{sum(map(len, masks.values()))} such mask(s) in {cls}/ left out", stacklevel=2)
        return items
