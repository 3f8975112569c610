from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

from oneclass.data.datasets.base import Dataset, Item, walk_files
from oneclass.data.items import NORMAL
from oneclass.data.slides import SLIDE_SUFFIXES, Polygon, read_annotations
from oneclass.errors import OneclassError


@dataclass
class SlideItem(Item):
    """A whole-slide image and its polygons (level-0 coordinates)."""

    slide_path: Path = None
    annotation_path: Path | None = None
    parts: list[Path] = field(default_factory=list)  # the slide's other files (a DICOM series)
    polygons: list[Polygon] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)

    def files(self) -> list[Path]:
        return [self.slide_path, *self.parts] + ([self.annotation_path] if self.annotation_path else [])


class WSIDataset(Dataset):
    """Any OpenSlide-readable slides with polygon annotations (ASAP XML or JSON)."""

    name = "wsi"
    description = __doc__
    is_slide = True
    layout = """\
root/
  **/<slide>.svs|tif|ndpi|mrxs|...      slides, any depth (files under the annotation
                                         folder and <stem>_mask.* images are not slides);
                                         a folder's .dcm files are one DICOM slide (one
                                         series), named after its first file
  <annotations>/<slide stem>.xml|json   polygons in level-0 pixels, matched to slides by
                                         stem, case-insensitively; default folder: root;
                                         one file per slide; files matching no slide are
                                         warned about
ASAP XML (an <ASAP_Annotations> document): each <Annotation PartOfGroup="..."> is a
polygon; its group names the subclass (groups listed in exclude_groups are holes). JSON
(CAMELYON16/NCRF form, an object with "positive" and/or "negative" lists): "positive"
polygons are anomalous (subclass option), "negative" ones are holes. Other XML or JSON
(e.g. GeoJSON) is refused. Slides without an annotation, or with an empty one, are
normal. Patches come only from tissue: Otsu on the saturation of a low-resolution level;
a patch is kept when >= tissue_frac of it is tissue."""

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
        notes = _annotation_files(note_dir)
        items = []
        for path, *parts in _slides(self.root, note_dir if self.options.annotations else None):
            note = _annotation_of(path, notes)
            polygons = read_annotations(note, self.options.subclass, self.options.exclude_groups,
                                        self.group_subclasses) if note else []
            categories = sorted({p.category for p in polygons if p.category})
            subclass = categories[0] if len(categories) == 1 else ("+".join(categories) or NORMAL)
            items.append(SlideItem(str(path.relative_to(self.root)), subclass, slide_path=path, parts=parts,
                                   annotation_path=note, polygons=polygons, categories=categories))
        _warn_unmatched(note_dir, notes, {item.annotation_path for item in items})
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
under the annotations option); a file matching no slide is warned about, two matching one
slide are refused. Mask images (masks/tumor_001_mask.tif, any <stem>_mask.*) are not
slides. Every tumour polygon has subclass "tumor". Patches come only from tissue (Otsu on
saturation at low resolution; tissue_frac, default 0.5)."""

    group_subclasses = False

    @dataclass
    class Options(WSIDataset.Options):
        subclass: str = "tumor"


def _slides(root: Path, skip: Path | None) -> list[list[Path]]:
    """Each slide's files under root, the one to open first; mask images (<stem>_mask.tif,
    as CAMELYON16's) and files under ``skip`` are not slides. A DICOM slide is a folder's
    .dcm files: OpenSlide opens any of them to the whole series, so each would repeat it."""
    slides, series = [], {}
    for path in walk_files(root, SLIDE_SUFFIXES):
        if path.stem.lower().endswith("_mask") or (skip and skip in path.parents):
            continue
        if path.suffix.lower() != ".dcm":
            slides.append([path])
        elif path.parent in series:
            series[path.parent].append(path)
        else:
            series[path.parent] = [path]
            slides.append(series[path.parent])
    return slides


def _annotation_files(folder: Path) -> dict[str, list[Path]]:
    """Annotation files by lower-case stem (several per stem are refused when a slide uses it)."""
    notes: dict[str, list[Path]] = {}
    for path in walk_files(folder, (".xml", ".json")):
        notes.setdefault(path.stem.lower(), []).append(path)
    return notes


def _annotation_of(slide: Path, notes: dict[str, list[Path]]) -> Path | None:
    found = notes.get(slide.stem.lower(), [])
    if len(found) > 1:
        raise OneclassError(f"{slide}: {len(found)} annotation files match it by stem "
                            f"({', '.join(map(str, found))}); keep one")
    return found[0] if found else None


def _warn_unmatched(note_dir: Path, notes: dict[str, list[Path]], used: set[Path]) -> None:
    """A misnamed annotation file (Tumour_002.json beside tumor_002.tif) would leave its
    slide labelled normal: name every file that no slide matched."""
    unmatched = [str(p.relative_to(note_dir)) for paths in notes.values() for p in paths if p not in used]
    if unmatched:
        shown = ", ".join(unmatched[:5]) + (f" and {len(unmatched) - 5} more" if len(unmatched) > 5 else "")
        warnings.warn(f"{note_dir}: {len(unmatched)} annotation file(s) match no slide by stem and are "
                      f"not read: {shown}", stacklevel=3)
