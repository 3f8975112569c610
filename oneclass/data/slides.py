"""Whole-slide images through OpenSlide: opening, tissue detection, polygon annotations.

Slides are read region by region at the extraction level; polygons (level-0 pixel
coordinates) are rasterised per region, so nothing slide-sized is ever held in memory.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from oneclass.errors import OneclassError

SLIDE_SUFFIXES = {".svs", ".tif", ".tiff", ".ndpi", ".vms", ".vmu", ".scn", ".mrxs",
                  ".svslide", ".bif", ".dcm"}
THUMBNAIL_SIZE = 2048  # longest side of the low-resolution image used for tissue detection


class SlideError(OneclassError):
    pass


@dataclass
class Polygon:
    vertices: np.ndarray  # (n, 2) float, (x, y) at level 0
    category: str  # a subclass, or "" for an exclusion (a hole cut out of the tumour)

    def bbox(self) -> tuple[float, float, float, float]:
        return (*self.vertices.min(axis=0), *self.vertices.max(axis=0))

    def overlaps(self, x0: float, y0: float, x1: float, y1: float) -> bool:
        """Whether the bounding box meets the level-0 rectangle [x0, x1] x [y0, y1]."""
        bx0, by0, bx1, by1 = self.bbox()
        return not (bx1 < x0 or by1 < y0 or bx0 > x1 or by0 > y1)


@lru_cache(maxsize=4)
def open_slide(path: str):
    """Open a slide and prove it readable; cached per process (workers reuse handles)."""
    import openslide

    try:
        slide = openslide.OpenSlide(path)
        slide.read_region((0, 0), slide.level_count - 1, (1, 1))
    except openslide.OpenSlideUnsupportedFormatError:
        raise SlideError(f"{path}: not a slide format OpenSlide can read") from None
    except (openslide.OpenSlideError, OSError) as exc:
        raise SlideError(f"{path}: cannot read slide: {exc}") from None
    return slide


def read_region(path: str, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
    """RGB pixels of a region given in level coordinates; transparent areas become white."""
    import openslide

    slide = open_slide(path)
    scale = slide.level_downsamples[level]
    try:
        rgba = np.asarray(slide.read_region((int(round(x * scale)), int(round(y * scale))),
                                            level, (width, height)))
    except (openslide.OpenSlideError, OSError) as exc:
        raise SlideError(f"{path}: cannot read region at level {level} ({x}, {y}): {exc}") from None
    alpha = rgba[..., 3:4].astype(np.uint16)
    rgb = (rgba[..., :3] * alpha + 255 * (255 - alpha)) // 255
    return rgb.astype(np.uint8)


def otsu_threshold(values: np.ndarray) -> float:
    """Otsu's threshold of uint8 values (maximises the between-class variance)."""
    hist = np.bincount(values.ravel(), minlength=256).astype(np.float64)
    total = hist.sum()
    if total == 0:
        return 0.0
    levels = np.arange(256)
    weight0 = np.cumsum(hist)
    weight1 = total - weight0
    mean0 = np.cumsum(hist * levels)
    mean_all = mean0[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mean_all * weight0 - mean0 * total) ** 2 / (weight0 * weight1)
    between[~np.isfinite(between)] = -1
    return float(np.argmax(between))


def tissue_mask(path: str) -> tuple[np.ndarray, float]:
    """Tissue on a low-resolution image: Otsu on saturation (stained tissue is coloured,
    glass is white or grey). Returns the mask and its pixel size in level-0 pixels."""
    slide = open_slide(path)
    width, height = slide.dimensions
    scale = max(width, height) / THUMBNAIL_SIZE
    if scale < 1:
        scale = 1.0
    level = slide.get_best_level_for_downsample(scale)
    lw, lh = slide.level_dimensions[level]
    step = max(1, int(max(lw, lh) // THUMBNAIL_SIZE))  # slides without small levels
    rows = []
    strip = max(step, (1 << 22) // max(lw, 1) // step * step)  # ~16 MB of RGBA per read
    for y in range(0, lh, strip):
        rows.append(read_region(path, level, 0, y, lw, min(strip, lh - y))[::step, ::step])
    rgb = np.concatenate(rows)
    factor = slide.level_downsamples[level] * step
    saturation = (rgb.max(axis=2) - rgb.min(axis=2)).astype(np.uint8)
    threshold = otsu_threshold(saturation)
    return saturation > threshold, float(factor)


def read_annotations(path: Path, subclass: str, exclusion_groups: list[str],
                     group_subclasses: bool) -> list[Polygon]:
    """Polygons from ASAP XML or the CAMELYON16 JSON form ({"positive": [...], "negative": [...]}).

    An ASAP document or a JSON object with empty lists holds no polygon (a normal slide,
    as NCRF's Normal_*.json); any other XML or JSON is refused rather than read as empty.
    """
    try:
        if path.suffix.lower() == ".json":
            polygons = _json_polygons(path, subclass)
        else:
            polygons = _asap_polygons(path, subclass, exclusion_groups, group_subclasses)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, ET.ParseError) as exc:
        raise OneclassError(f"{path}: cannot read annotations: {exc}") from None
    for polygon in polygons:
        if polygon.vertices.ndim != 2 or polygon.vertices.shape[1] != 2 or len(polygon.vertices) < 3:
            raise OneclassError(f"{path}: a polygon needs at least 3 (x, y) vertices")
    return polygons


def _json_polygons(path: Path, subclass: str) -> list[Polygon]:
    data = json.loads(path.read_text())
    if not isinstance(data, dict) or not {"positive", "negative"} & data.keys():
        raise OneclassError(f'{path}: not CAMELYON16/NCRF JSON annotations: expected an object with '
                            f'"positive" and/or "negative" polygon lists, found {_json_outline(data)}')
    positive, negative = data.get("positive", []), data.get("negative", [])
    if not isinstance(positive, list) or not isinstance(negative, list):
        raise ValueError('"positive" and "negative" must be lists of polygons')
    return [_json_polygon(p, subclass) for p in positive] + [_json_polygon(p, "") for p in negative]


def _json_outline(data) -> str:
    """What a JSON document is, in a few words (a GeoJSON export shows its keys)."""
    if isinstance(data, dict):
        return "keys " + ", ".join(map(repr, list(data)[:5])) if data else "an empty object"
    text = json.dumps(data)
    return text if len(text) <= 40 else text[:37] + "..."


def _json_polygon(entry, category: str) -> Polygon:
    if not isinstance(entry, dict) or "vertices" not in entry:
        raise ValueError('each polygon must be an object with "vertices"')
    return Polygon(np.asarray(entry["vertices"], dtype=np.float64), category)


def _asap_polygons(path: Path, subclass: str, exclusion_groups: list[str],
                   group_subclasses: bool) -> list[Polygon]:
    root = ET.parse(path).getroot()
    if root.tag != "ASAP_Annotations":
        raise OneclassError(f"{path}: not ASAP XML annotations: expected an <ASAP_Annotations> document, "
                            f"found <{root.tag}>")
    polygons = []
    for annotation in root.iter("Annotation"):
        group = annotation.get("PartOfGroup") or ""
        points = sorted(annotation.iter("Coordinate"), key=lambda c: float(c.get("Order", 0)))
        vertices = np.array([[float(c.get("X")), float(c.get("Y"))] for c in points])
        if group in exclusion_groups:
            category = ""
        else:
            category = group if group_subclasses and group else subclass
        polygons.append(Polygon(vertices, category))
    return polygons


def fill_polygon(vertices: np.ndarray, width: int, height: int) -> np.ndarray:
    """Pixels of a (width, height) grid whose centre (j + 0.5, i + 0.5) lies inside the
    polygon (even-odd rule). Vertices are in the grid's pixel units; scanline, vectorised."""
    mask = np.zeros((height, width), dtype=bool)
    start, end = vertices, np.roll(vertices, -1, axis=0)
    centres = np.arange(height) + 0.5
    lo, hi = np.minimum(start[:, 1], end[:, 1]), np.maximum(start[:, 1], end[:, 1])
    edges = (hi > 0.5) & (lo <= height - 0.5) & (start[:, 1] != end[:, 1])  # crossing a row's centre
    if not edges.any():
        return mask
    (x1, y1), (x2, y2) = start[edges].T, end[edges].T
    cy = centres[:, None]
    crosses = (y1 > cy) != (y2 > cy)  # half-open rule: a vertex on the scanline counts once
    rows, cols = np.nonzero(crosses)
    xs = x1[cols] + (cy[rows, 0] - y1[cols]) * (x2[cols] - x1[cols]) / (y2[cols] - y1[cols])
    first = np.clip(np.ceil(xs - 0.5), 0, width).astype(np.int64)  # first centre at or right of x
    toggles = np.zeros((height, width + 1), dtype=np.int32)
    np.add.at(toggles, (rows, first), 1)
    return (np.cumsum(toggles[:, :width], axis=1) & 1).astype(bool)


def rasterise(polygons: list[Polygon], categories: list[str], downsample: float,
              x: int, y: int, width: int, height: int) -> np.ndarray:
    """Label map of a region (level coordinates): k for categories[k-1], 0 elsewhere.

    A pixel belongs to a polygon when its centre does. Exclusion polygons are applied last,
    cutting holes into the tumours.
    """
    labels = np.zeros((height, width), dtype=np.uint8)
    region = (x * downsample, y * downsample, (x + width) * downsample, (y + height) * downsample)
    ordered = [p for p in polygons if p.category] + [p for p in polygons if not p.category]
    for polygon in ordered:
        if not polygon.overlaps(*region):
            continue
        inside = fill_polygon(polygon.vertices / downsample - np.array([x, y]), width, height)
        labels[inside] = categories.index(polygon.category) + 1 if polygon.category else 0
    return labels


@dataclass
class SlideInfo:
    path: str
    level: int
    downsample: float
    width: int  # at the level
    height: int
    polygons: list[Polygon] = field(default_factory=list)


def slide_info(path: Path, level: int, polygons: list[Polygon]) -> SlideInfo:
    slide = open_slide(str(path))
    if not 0 <= level < slide.level_count:
        raise OneclassError(f"{path}: --level {level} does not exist (slide has levels 0-{slide.level_count - 1})")
    width, height = slide.level_dimensions[level]
    return SlideInfo(str(path), level, float(slide.level_downsamples[level]), width, height, polygons)
