"""Deterministic synthetic data: fibre-like textures with defects, and pyramidal slides.

Image i of a synthetic set depends only on (seed, i, size), never on how many images are
asked for, so a small set is a prefix of a large one. The slide writer produces a tiled,
pyramidal TIFF that OpenSlide opens as generic-tiff, with tumour polygons in the JSON
form used for CAMELYON16, generated tile by tile so any size fits in little memory.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from oneclass.data.datasets.base import Dataset, Item, Loaded
from oneclass.data.items import NORMAL
from oneclass.errors import OneclassError

DEFECTS = ("bead", "film")


def fibre_texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Grayscale SEM-like fibres: random bright lines on a dark, noisy background."""
    from PIL import Image, ImageDraw, ImageFilter

    canvas = Image.new("L", (width, height), 35)
    draw = ImageDraw.Draw(canvas)
    n_fibres = max(4, int(height * width / 1800))
    diag = float(np.hypot(height, width))
    for _ in range(n_fibres):
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        angle = rng.uniform(0, np.pi)
        dx, dy = np.cos(angle) * diag, np.sin(angle) * diag
        draw.line([(cx - dx, cy - dy), (cx + dx, cy + dy)],
                  fill=int(rng.integers(110, 215)), width=int(rng.integers(2, 6)))
    blurred = np.asarray(canvas.filter(ImageFilter.GaussianBlur(1.2)), dtype=np.float32)
    noisy = blurred + rng.normal(0, 6, size=blurred.shape)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def add_defects(rng: np.random.Generator, image: np.ndarray, kind: str) -> np.ndarray:
    """Paint 1-3 defects of one kind; returns their mask.

    bead: bright, round electrospinning beads; film: a flat membrane hiding the fibres.
    """
    height, width = image.shape
    yy, xx = np.mgrid[:height, :width]
    mask = np.zeros((height, width), dtype=bool)
    for _ in range(int(rng.integers(1, 4))):
        scale = min(height, width)
        ry, rx = rng.uniform(0.05, 0.16, size=2) * scale
        cy, cx = rng.uniform(ry, height - ry), rng.uniform(rx, width - rx)
        angle = rng.uniform(0, np.pi)
        u = ((xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)) / rx
        v = (-(xx - cx) * np.sin(angle) + (yy - cy) * np.cos(angle)) / ry
        inside = u * u + v * v <= 1.0
        if kind == "bead":
            shade = 255 - 70 * (u * u + v * v)
            image[inside] = np.clip(shade[inside] + rng.normal(0, 4, inside.sum()), 0, 255)
        else:
            image[inside] = np.clip(100 + rng.normal(0, 3, inside.sum()), 0, 255)
        mask |= inside
    return mask


@dataclass
class SyntheticItem(Item):
    index: int = 0
    seed: int = 0
    height: int = 256
    width: int = 256

    def generate(self) -> tuple[np.ndarray, np.ndarray | None]:
        rng = np.random.default_rng([self.seed, self.index, self.height, self.width])
        image = fibre_texture(rng, self.height, self.width)
        mask = add_defects(rng, image, self.subclass) if self.subclass != NORMAL else None
        return image, mask

    def load(self) -> Loaded:
        image, mask = self.generate()
        if mask is None:
            return Loaded(image[:, :, None], None, [])
        return Loaded(image[:, :, None], mask.astype(np.uint8), [self.subclass])


class SyntheticDataset(Dataset):
    """Deterministic fibre-like grayscale textures with defect blobs and masks."""

    name = "synthetic"
    description = __doc__
    needs_root = False
    layout = """\
(no files: generated in memory; root is ignored)
options: normal (default 12), anomalous (default 12), height, width (default 256),
seed (default 0), defects (default [bead, film]: the anomaly subclasses, dealt round-robin)
Image i is the same whatever the counts, so small sets are prefixes of large ones."""

    @dataclass
    class Options:
        normal: int = 12
        anomalous: int = 12
        height: int = 256
        width: int = 256
        seed: int = 0
        defects: list[str] = field(default_factory=lambda: list(DEFECTS))

    def __init__(self, root, options):
        super().__init__(root, options)
        o = options
        unknown = [d for d in o.defects if d not in DEFECTS]
        if unknown:
            raise OneclassError(f"dataset.defects: unknown defect {unknown[0]!r}; choose from {', '.join(DEFECTS)}")
        if o.normal < 0 or o.anomalous < 0 or (o.anomalous and not o.defects):
            raise OneclassError("dataset.normal/anomalous must be >= 0, with at least one defect kind")
        if o.height < 16 or o.width < 16:
            raise OneclassError("dataset.height/width must be at least 16 pixels")

    def items(self):
        o = self.options
        common = dict(seed=o.seed, height=o.height, width=o.width)
        items = [SyntheticItem(f"normal/{i:05d}", NORMAL, index=i, **common) for i in range(o.normal)]
        for j in range(o.anomalous):
            kind = o.defects[j % len(o.defects)]
            index = o.normal + j
            items.append(SyntheticItem(f"{kind}/{index:05d}", kind, index=index, **common))
        return items

    def describe_source(self, item: SyntheticItem) -> dict:
        image, mask = item.generate()
        digest = hashlib.sha256(image.tobytes())
        if mask is not None:
            digest.update(mask.tobytes())
        return {"source": item.source, "subclass": item.subclass,
                "files": [{"path": f"<generated {item.source}>", "size": image.nbytes,
                           "sha256": digest.hexdigest()}]}


# --- a synthetic whole-slide image ------------------------------------------------------

def _slide_blobs(seed: int, width: int, height: int) -> tuple[list, list]:
    """Tissue ellipses and tumour polygons (level-0 coordinates) of a synthetic slide."""
    rng = np.random.default_rng([seed, width, height])
    tissue = []
    for _ in range(3):
        cx, cy = rng.uniform(0.25, 0.75) * width, rng.uniform(0.25, 0.75) * height
        tissue.append((cx, cy, rng.uniform(0.15, 0.3) * width, rng.uniform(0.15, 0.3) * height))
    tumours = []
    for cx, cy, rx, ry in tissue[:2]:
        angles = np.linspace(0, 2 * np.pi, 24, endpoint=False)
        radius = 0.35 * min(rx, ry) * (1 + 0.2 * np.sin(3 * angles + rng.uniform(0, np.pi)))
        tumours.append([[float(cx + r * np.cos(a)), float(cy + r * np.sin(a))] for a, r in zip(angles, radius)])
    return tissue, tumours


def _slide_tile(x0: float, y0: float, w: int, h: int, step: float, tissue, tumours) -> np.ndarray:
    """RGB pixels of a tile whose pixel (i, j) sits at level-0 (x0 + j*step, y0 + i*step)."""
    from PIL import Image, ImageDraw

    xs = x0 + (np.arange(w) + 0.5) * step
    ys = y0 + (np.arange(h) + 0.5) * step
    xx, yy = np.meshgrid(xs, ys)
    inside = np.zeros((h, w), dtype=bool)
    for cx, cy, rx, ry in tissue:
        inside |= ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1
    tumour = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(tumour)
    for polygon in tumours:
        draw.polygon([((px - x0) / step, (py - y0) / step) for px, py in polygon], fill=1)
    in_tumour = np.asarray(tumour, dtype=bool) & inside
    texture = 18 * np.sin(xx / 23.0) * np.cos(yy / 17.0)
    tile = np.full((h, w, 3), 242, dtype=np.float32)
    tile[inside] = np.array([225, 140, 185], dtype=np.float32)
    tile[in_tumour] = np.array([135, 60, 150], dtype=np.float32)
    tile[inside] += texture[inside, None]
    return np.clip(np.rint(tile), 0, 255).astype(np.uint8)


def write_synthetic_slide(path: Path, width: int, height: int, seed: int = 0, tile: int = 256,
                          levels: int | None = None) -> Path:
    """Write a tiled pyramidal RGB TIFF (levels halve in size) and its tumour annotations.

    The annotations go beside the slide as ``<stem>.json`` in the CAMELYON16 JSON form
    ({"positive": [{"name", "vertices": [[x, y], ...]}], "negative": []}). Pixels are
    generated tile by tile, so memory stays small whatever the slide size.
    """
    import tifffile

    tissue, tumours = _slide_blobs(seed, width, height)
    if levels is None:
        levels = 1
        while max(width, height) >> levels >= 2 * tile and levels < 8:
            levels += 1
    path = Path(path)
    with tifffile.TiffWriter(path, bigtiff=width * height * 3 > 2**31) as tif:
        for level in range(levels):
            step = 2 ** level
            lw, lh = max(1, width // step), max(1, height // step)

            def tiles(lw=lw, lh=lh, step=step):
                for ty in range(0, lh, tile):
                    for tx in range(0, lw, tile):
                        block = np.full((tile, tile, 3), 242, dtype=np.uint8)
                        h, w = min(tile, lh - ty), min(tile, lw - tx)
                        block[:h, :w] = _slide_tile(tx * step, ty * step, w, h, step, tissue, tumours)
                        yield block

            tif.write(tiles(), shape=(lh, lw, 3), dtype=np.uint8, tile=(tile, tile),
                      photometric="rgb", compression="zlib", subfiletype=1 if level else 0,
                      resolution=None, metadata=None)
    annotation = {"positive": [{"name": f"Annotation {i}", "vertices": p} for i, p in enumerate(tumours)],
                  "negative": []}
    path.with_suffix(".json").write_text(json.dumps(annotation))
    return path
