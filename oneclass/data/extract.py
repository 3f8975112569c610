"""Dataset → patch store: plan tasks (one per image, one per slide region), run them,
possibly in worker processes, and stream their patches into a store in a fixed order."""

from __future__ import annotations

import zlib
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from oneclass import __version__
from oneclass.artifacts import check_destination
from oneclass.data import patches as P
from oneclass.data.datasets.base import Dataset, ImageItem, Item
from oneclass.data.store import StoreWriter
from oneclass.errors import OneclassError
from oneclass.heap import steady_heap

REGION = 2048  # longest side of a slide region read at once (level pixels)


MASK_FRAC = 0.05  # the default share of a patch's pixels that makes it anomalous


@dataclass
class ExtractParams:
    size: int | None = None  # default 64; unset with whole_image
    stride: int | None = None
    mask_frac: float = 0.05  # MASK_FRAC; patches only
    resize: int | None = None
    level: int = 0
    max_per_image: int | None = None
    channels: int | None = None
    seed: int = 0
    workers: int = 1
    whole_image: bool = False  # one item per image, resized to resize x resize
    mask_threshold: int | None = None  # masks not strictly binary: pixels >= it are anomalous
    bits: int | None = None  # significant bits of 16-bit images' pixels (readers.read_image)

    def check(self) -> None:
        if self.whole_image:
            for flag, value in (("--size", self.size), ("--stride", self.stride),
                                ("--max-per-image", self.max_per_image)):
                if value is not None:
                    raise OneclassError(f"{flag}: not used with --whole-image (each image is one "
                                        f"item, resized to --resize); leave it out")
            if self.mask_frac != MASK_FRAC:  # an image is anomalous where its mask marks any pixel
                raise OneclassError("--mask-frac: not used with --whole-image (an image is anomalous "
                                    "where its mask marks any pixel, or its subclass is a defect's); leave it out")
            if self.resize is None or self.resize <= 0:
                raise OneclassError(f"--resize: --whole-image needs the side of the square every "
                                    f"image is resized to (e.g. 128), got {self.resize}")
            if self.level:
                raise OneclassError("--level: --whole-image takes plain images, not slide levels")
        else:
            if self.size is None:
                self.size = 64
            if self.size <= 0:
                raise OneclassError(f"--size: must be a positive number of pixels, got {self.size}")
            if self.stride is None:
                self.stride = self.size
            if self.stride <= 0:
                raise OneclassError(f"--stride: must be positive, got {self.stride}")
        if not 0 < self.mask_frac <= 1:
            raise OneclassError(f"--mask-frac: must lie in (0, 1], got {self.mask_frac}")
        if self.resize is not None and self.resize <= 0:
            raise OneclassError(f"--resize: must be positive, got {self.resize}")
        if self.level < 0:
            raise OneclassError(f"--level: must be >= 0, got {self.level}")
        if self.max_per_image is not None and self.max_per_image <= 0:
            raise OneclassError(f"--max-per-image: must be positive, got {self.max_per_image}")
        if self.channels not in (None, 1, 3):
            raise OneclassError(f"--channels: must be 1 or 3, got {self.channels}")
        if self.workers < 1:
            raise OneclassError(f"--workers: must be >= 1, got {self.workers}")
        if self.mask_threshold is not None and self.mask_threshold < 1:
            raise OneclassError(f"--mask-threshold: must be >= 1, got {self.mask_threshold}")
        if self.bits is not None and not 8 <= self.bits <= 16:
            raise OneclassError(f"--bits: must be in 8..16, got {self.bits}")


_PATCH_RULES = {"grid": "corners at 0, stride, 2*stride, ... while the patch fits",
                "label": "anomalous iff anomaly_frac >= mask_frac",
                "resize": "area averaging (shrink) / linear (enlarge)",
                "mask": "patch mask resized the same way, then >= 0.5"}
_WHOLE_IMAGE_RULES = {"item": "each image whole, resized to resize x resize (aspect ratio not kept)",
                      "label": "anomalous iff its mask marks any pixel, or its subclass is a defect's",
                      "resize": "area averaging (shrink) / linear (enlarge), each axis on its own",
                      "mask": "image mask resized the same way, then >= 0.5"}


@dataclass
class ImageTask:
    item: Item
    params: ExtractParams
    channels: int


@dataclass
class RegionTask:
    source: str
    slide: str
    level: int
    downsample: float
    x: int
    y: int
    width: int
    height: int
    ys: np.ndarray  # patch corners, level coordinates
    xs: np.ndarray
    polygons: list
    categories: list[str]
    params: ExtractParams
    channels: int


def _rng(seed: int, source: str) -> np.random.Generator:
    # independent of item order and of the worker that runs it
    return np.random.default_rng([seed, zlib.crc32(source.encode())])


def _sample(ys: np.ndarray, xs: np.ndarray, params: ExtractParams, source: str) -> tuple[np.ndarray, np.ndarray]:
    if params.max_per_image is None:  # no generator: numpy.random's import is 8 ms of a run
        return ys, xs
    return P.sample_positions(ys, xs, params.max_per_image, _rng(params.seed, source))


def _grid(height: int, width: int, params: ExtractParams) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.meshgrid(P.grid(height, params.size, params.stride),
                         P.grid(width, params.size, params.stride), indexing="ij")
    return ys.ravel(), xs.ravel()


def run_image(task: ImageTask) -> P.PatchChunk:
    item, params = task.item, task.params
    loaded = item.load()
    if params.whole_image:
        chunk = P.whole_image(loaded.image, loaded.labels, loaded.categories, item.subclass,
                              params.resize, task.channels)
        chunk.source = item.source
        return chunk
    height, width = loaded.image.shape[:2]
    if params.size > min(height, width):
        raise OneclassError(f"{item.source}: patch size {params.size} is larger than the image "
                            f"({width}x{height})")
    ys, xs = _grid(height, width, params)
    ys, xs = _sample(ys, xs, params, item.source)
    frac, label, subclass = P.label_patches(loaded.labels, loaded.categories, ys, xs,
                                            params.size, params.mask_frac)
    anomalous = loaded.labels > 0 if loaded.labels is not None else None
    images, masks = P.cut_and_resize(loaded.image, anomalous, ys, xs, params.size,
                                     params.resize, task.channels)
    return P.PatchChunk(images, masks, xs, ys, frac, label, subclass, item.source)


def run_region(task: RegionTask) -> P.PatchChunk:
    from oneclass.data.slides import rasterise, read_region

    rgb = read_region(task.slide, task.level, task.x, task.y, task.width, task.height)
    labels = (rasterise(task.polygons, task.categories, task.downsample, task.x, task.y,
                        task.width, task.height) if task.polygons else None)
    ys, xs = task.ys - task.y, task.xs - task.x
    params = task.params
    frac, label, subclass = P.label_patches(labels, task.categories, ys, xs, params.size,
                                            params.mask_frac)
    anomalous = labels > 0 if labels is not None else None
    images, masks = P.cut_and_resize(rgb, anomalous, ys, xs, params.size, params.resize, task.channels)
    return P.PatchChunk(images, masks, task.xs, task.ys, frac, label, subclass, task.source)


def run_task(task) -> P.PatchChunk:
    return run_image(task) if isinstance(task, ImageTask) else run_region(task)


def plan_slide(item, params: ExtractParams, tissue_frac: float, channels: int) -> list[RegionTask]:
    """Tissue-filtered, sampled patch corners of a slide, grouped into bounded regions."""
    from oneclass.data.slides import slide_info, tissue_mask

    info = slide_info(item.slide_path, params.level, item.polygons)
    if params.size > min(info.width, info.height):
        raise OneclassError(f"{item.source}: patch size {params.size} is larger than the slide at "
                            f"level {params.level} ({info.width}x{info.height})")
    ys, xs = _grid(info.height, info.width, params)
    if tissue_frac > 0 and len(ys):
        tissue, factor = tissue_mask(info.path)
        scale = info.downsample / factor  # level pixels → tissue-mask pixels
        table = P.integral_image(tissue)
        y0 = np.clip(np.floor(ys * scale).astype(np.int64), 0, tissue.shape[0] - 1)
        x0 = np.clip(np.floor(xs * scale).astype(np.int64), 0, tissue.shape[1] - 1)
        y1 = np.clip(np.ceil((ys + params.size) * scale).astype(np.int64), y0 + 1, tissue.shape[0])
        x1 = np.clip(np.ceil((xs + params.size) * scale).astype(np.int64), x0 + 1, tissue.shape[1])
        inside = table[y1, x1] - table[y0, x1] - table[y1, x0] + table[y0, x0]
        keep = inside / ((y1 - y0) * (x1 - x0)) >= tissue_frac
        ys, xs = ys[keep], xs[keep]
    ys, xs = _sample(ys, xs, params, item.source)
    steps = max(1, (REGION - params.size) // params.stride + 1)  # grid steps per region side
    block = steps * params.stride
    keys = (ys // block) * (info.width // block + 1) + xs // block
    tasks = []
    for key in np.unique(keys):
        sel = keys == key
        by, bx = ys[sel], xs[sel]
        x, y = int(bx.min()), int(by.min())
        width, height = int(bx.max()) + params.size - x, int(by.max()) + params.size - y
        region = (x * info.downsample, y * info.downsample,
                  (x + width) * info.downsample, (y + height) * info.downsample)
        polygons = [p for p in item.polygons if p.overlaps(*region)]
        tasks.append(RegionTask(item.source, info.path, params.level, info.downsample, x, y, width,
                                height, by, bx, polygons, item.categories, params, channels))
    return tasks


def extract(
    dataset: Dataset,
    params: ExtractParams,
    out: Path,
    overwrite: bool = False,
    on_plan: Callable[[int], None] | None = None,
    on_task: Callable[[P.PatchChunk], None] | None = None,
    recipe: dict | None = None,
) -> tuple[Path, dict]:
    """Extract a dataset into a patch store at ``out``; returns (path, meta)."""
    params.check()
    check_destination(out, "store", overwrite)
    items = dataset.items()
    if not items:
        raise OneclassError(f"{dataset.root}: no images found for dataset {dataset.name!r} "
                            f"(see `oneclass list datasets --verbose` for its layout)")
    if params.level and not dataset.is_slide:
        raise OneclassError(f"--level: dataset {dataset.name!r} has no pyramid levels; only slide datasets do")
    if params.whole_image and dataset.is_slide:
        raise OneclassError(f"--whole-image: dataset {dataset.name!r} holds whole-slide images, "
                            f"which are cut into patches")
    for item in items:  # before the first is loaded for its channels below
        item.bits = params.bits
        if isinstance(item, ImageItem):
            item.mask_threshold = params.mask_threshold
    # default: the images' own channel count (the first image's; the rest are converted)
    channels = params.channels or (3 if dataset.is_slide else items[0].load().image.shape[2])
    # hashed in a thread beside the extraction (_Sources) where that runs in threads too
    # (_read_ahead); worker processes are forked, from a process that must have no threads
    sources_aside = not dataset.is_slide and (params.workers <= 1 or len(items) <= 1)
    sources = []
    tasks: list = []
    for item in items:
        if not sources_aside:
            sources.append(dataset.describe_source(item))
        if dataset.is_slide:
            tasks.extend(plan_slide(item, params, dataset.options.tissue_frac, channels))
        else:
            tasks.append(ImageTask(item, params, channels))
    if on_plan:
        on_plan(len(tasks))
    # every task allocates its chunk's arrays (4 MB for a nanofibre image) and frees them once
    # written; above glibc's default mmap threshold each came as fresh pages from the
    # system and went back, and faulting them in was ~30 ms of the grid's ~150 ms
    steady_heap()
    writer = StoreWriter(out, overwrite)
    try:
        with _Sources(dataset, items if sources_aside else []) as described:
            for chunk in _run_all(tasks, params.workers):
                writer.append(chunk)
                if on_task:
                    on_task(chunk)
        sources += described.records
        out_size = params.resize if params.whole_image else params.resize or params.size
        meta = {
            "oneclass_version": __version__,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "dataset": {"name": dataset.name, "root": str(dataset.root) if dataset.root else None,
                        "options": asdict(dataset.options),
                        # the anomalous patches' (an image's own subclass is one of its defects)
                        "subclasses": sorted({sub for label, sub in writer.counts if label == 1} - {P.NORMAL})},
            "params": {**asdict(params), "channels": channels},
            "rules": _WHOLE_IMAGE_RULES if params.whole_image else _PATCH_RULES,
            "recipe": recipe,
            "sources": sources,
        }
        return writer.commit(meta, (channels, out_size, out_size))
    except BaseException:
        writer.abort()
        raise


class _Sources:
    """The items' provenance records (their files' SHA-256), taken in a thread while the
    patches are cut: hashing releases the GIL, and the nanofibre images' 12 MB took 10 ms
    before the first image was read. A source that cannot be read stops the extraction
    with its own error, as it did when the records were taken first; Ctrl-C does not wait
    for the rest."""

    def __init__(self, dataset: Dataset, items: list[Item]):
        self.dataset, self.items, self.records = dataset, items, []

    def __enter__(self) -> "_Sources":
        from concurrent.futures import ThreadPoolExecutor

        self._pool = ThreadPoolExecutor(1, thread_name_prefix="oneclass-sources")
        self._futures = [self._pool.submit(self.dataset.describe_source, item) for item in self.items]
        return self

    def __exit__(self, kind, error, trace) -> None:
        interrupted = kind is not None and not issubclass(kind, Exception)
        self._pool.shutdown(wait=not interrupted, cancel_futures=interrupted)
        if not interrupted:
            self.records = [future.result() for future in self._futures]  # the first failure, if any


def _run_all(tasks: list, workers: int) -> Iterator[P.PatchChunk]:
    if workers <= 1 or len(tasks) <= 1:
        if all(isinstance(task, ImageTask) for task in tasks):
            yield from _read_ahead(tasks)
        else:  # slide regions: one reader at a time per slide handle
            for task in tasks:
                yield run_task(task)
        return
    import multiprocessing

    # fork starts workers in milliseconds and extraction runs no threads; spawn elsewhere
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    with multiprocessing.get_context(method).Pool(workers) as pool:
        yield from pool.imap(run_task, tasks, chunksize=1)


def _read_ahead(tasks: list[ImageTask], threads: int = 2) -> Iterator[P.PatchChunk]:
    """The tasks' chunks in order, decoded and cut by ``threads`` threads while the caller
    writes (decoding, numpy and file writes release the GIL): 0.62 s -> 0.52 s for the
    nanofibre grid on two cores (benchmarks/extract.py). At most ``threads`` chunks are
    in flight besides the one being written, so memory stays bounded. The decoders are
    quieted once, here, for all threads (oneclass.data.readers.quiet_decoders)."""
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    from oneclass.data.readers import decoding_thread, quiet_decoders

    with quiet_decoders(), ThreadPoolExecutor(threads, thread_name_prefix="oneclass-extract",
                                              initializer=decoding_thread) as pool:
        pending = deque(pool.submit(run_task, task) for task in tasks[:threads])
        for task in tasks[threads:]:
            chunk = pending.popleft().result()
            pending.append(pool.submit(run_task, task))
            yield chunk
        while pending:
            yield pending.popleft().result()
