from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from oneclass.data.datasets.base import Dataset, Item
from oneclass.data.items import NORMAL
from oneclass.data.slides import SLIDE_SUFFIXES, Polygon, read_annotations
from oneclass.errors import OneclassError


@dataclass
class SlideItem(Item):
    """A whole-slide image and its polygons (level-0 coordinates)."""

    slide_path: Path = None
    annotation_path: Path | None = None
    polygons: list[Polygon] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)

    def files(self) -> list[Path]:
        return [self.slide_path] + ([self.annotation_path] if self.annotation_path else [])


class WSIDataset(Dataset):
    """Any OpenSlide-readable slides with polygon annotations (ASAP XML or JSON)."""

    name = "wsi"
    description = __doc__
    is_slide = True
    layout = """\
root/
  **/<slide>.svs|tif|ndpi|mrxs|...      slides, any depth (files under the annotation
                                         folder are not slides)
  <annotations>/<slide stem>.xml|json   polygons in level-0 pixels, matched to slides by
                                         stem, case-insensitively; default folder: root
ASAP XML: each <Annotation PartOfGroup="..."> is a polygon; its group names the subclass
(groups listed in exclude_groups are holes). JSON (CAMELYON16/NCRF form): "positive"
polygons are anomalous (subclass option), "negative" ones are holes. Slides without an
annotation are normal. Patches come only from tissue: Otsu on the saturation of a
low-resolution level; a patch is kept when >= tissue_frac of it is tissue."""

    group_subclasses = True

    @dataclass
    class Options:
        annotations: str | None = None
        subclass: str = "anomaly"
        exclude_groups: list[str] = field(default_factory=lambda: ["_2", "Exclusion", "exclusion"])
        tissue_frac: float = 0.5

    def __init__(self, root, options):
        super().__init__(root, options)
        if not 0 <= options.tissue_frac <= 1:
            raise OneclassError(f"dataset.tissue_frac: must lie in [0, 1], got {options.tissue_frac}")

    def items(self):
        note_dir = self.root / self.options.annotations if self.options.annotations else self.root
        if not note_dir.is_dir():
            raise OneclassError(f"{note_dir}: annotation folder not found (dataset.annotations)")
        notes: dict[str, Path] = {}
        for path in sorted(note_dir.rglob("*")):
            if path.suffix.lower() in (".xml", ".json") and path.is_file():
                notes.setdefault(path.stem.lower(), path)
        items = []
        for path in sorted(self.root.rglob("*")):
            if not path.is_file() or path.suffix.lower() not in SLIDE_SUFFIXES or path.name.startswith("."):
                continue
            if self.options.annotations and note_dir in path.parents:
                continue
            note = notes.get(path.stem.lower())
            polygons = read_annotations(note, self.options.subclass, self.options.exclude_groups,
                                        self.group_subclasses) if note else []
            categories = sorted({p.category for p in polygons if p.category})
            subclass = categories[0] if len(categories) == 1 else ("+".join(categories) or NORMAL)
            items.append(SlideItem(str(path.relative_to(self.root)), subclass, slide_path=path,
                                   annotation_path=note, polygons=polygons, categories=categories))
        return items

    def subclasses(self):
        return sorted({c for item in self.items() for c in item.categories})


class Camelyon16Dataset(WSIDataset):
    """CAMELYON16 whole-slide images with tumour polygons (ASAP XML or JSON)."""

    name = "camelyon16"
    description = __doc__
    layout = """\
root/                                   CAMELYON16 as distributed, e.g.
  training/normal/normal_001.tif        slides (any depth; .tif)
  training/tumor/tumor_001.tif
  training/lesion_annotations/tumor_001.xml   ASAP XML (groups Tumor, _0, _1 are tumour,
                                              _2 is a hole), or NCRF-style JSON
                                              (Tumor_001.json: positive/negative polygons)
Annotations are matched to slides by stem, case-insensitively, anywhere under root (or
under the annotations option). Every tumour polygon has subclass "tumor". Patches come
only from tissue (Otsu on saturation at low resolution; tissue_frac, default 0.5)."""

    group_subclasses = False

    @dataclass
    class Options(WSIDataset.Options):
        subclass: str = "tumor"
