from __future__ import annotations

from oneclass.data.datasets.base import Dataset, ImageItem, sorted_images
from oneclass.data.items import NORMAL
from oneclass.errors import OneclassError


class NanofibreDataset(Dataset):
    """NanoTWICE SEM images of nanofibrous material with defect masks."""

    name = "nanofibre"
    description = __doc__
    layout = """\
root/
  Normal/*.tif                    defect-free images
  Anomalous/images/<stem>.tif     images with defects (subclass "defect")
  Anomalous/gt/<stem>_gt.png      their binary masks, same size (required)"""

    def items(self):
        normal = sorted_images(self.root / "Normal")
        anomalous = sorted_images(self.root / "Anomalous" / "images")
        items = [ImageItem(str(p.relative_to(self.root)), NORMAL, image_path=p) for p in normal]
        for path in anomalous:
            mask = self.root / "Anomalous" / "gt" / f"{path.stem}_gt.png"
            if not mask.is_file():
                raise OneclassError(f"{mask}: mask of {path.name} not found")
            items.append(ImageItem(str(path.relative_to(self.root)), "defect",
                                   image_path=path, mask_paths=[mask]))
        return items
