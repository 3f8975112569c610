"""Scoring with a finished run: its method loaded back (the global random state left
alone), new inputs cut as the run's store was, score rows for the tables."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from oneclass import recipe as recipes
from oneclass.artifacts import RUN_FORMAT, RunFolder
from oneclass.data.datasets.base import Item, Loaded
from oneclass.data.store import PatchStore
from oneclass.errors import OneclassError


def score_rows(index: list[dict], rows: np.ndarray, scores: np.ndarray,
               known_labels: bool = True) -> list[dict]:
    """Score-table rows; numbers are numbers (JSON lines write them unquoted)."""
    out = []
    for row, score in zip(rows.tolist(), scores.tolist()):
        entry = index[row]
        out.append({"id": int(entry["id"]), "source": entry["source"], "x": int(entry["x"]), "y": int(entry["y"]),
                    "label": int(entry["label"]) if known_labels else None,
                    "subclass": entry["subclass"] if known_labels else None, "score": float(score)})
    return out


def load_method(run: RunFolder, device: str = "auto"):
    """The run's trained method, ready to score (weights loaded with weights_only)."""
    from oneclass.artifacts import load_torch
    from oneclass.engine import deterministic_mode, resolve_device
    from oneclass.training import build_method, method_class

    config = recipes.from_dict(run.recipe, str(run.path / "recipe.yaml"))
    cls, params = method_class(config)
    path = run.path / "model.pt"
    saved = load_torch(path, "model", ("format", "method", "in_shape", "state"))
    if saved["format"] != RUN_FORMAT or saved["method"] != cls.name:
        raise OneclassError(f"{path}: not a {cls.name} model of run format {RUN_FORMAT}")
    method = build_method(config, cls, params, tuple(saved["in_shape"]))  # global random state untouched
    try:
        method.load_state_dict(saved["state"])
    except (RuntimeError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise OneclassError(f"{path}: its weights do not fit a {cls.name} of the run's parameters ({first})") from None
    deterministic_mode(config.train.deterministic)
    return method.to(resolve_device(device, "--device"), amp=config.train.amp,
                     channels_last=config.train.channels_last)


# extraction parameters that decide what a patch's pixels show (not which patches are cut)
_PIXEL_KEYS = ("whole_image", "size", "resize", "level", "channels", "bits")


def scoring_input(run: RunFolder, source: str, stdin_lines: list[str] | None = None):
    """(images, index, known_labels) for INPUT: a patch store, an image file or folder
    (cut with the run's extraction parameters), or '-' with image paths in ``stdin_lines``."""
    shape = tuple(run.data["image_shape"])
    path = Path(source)
    if source != "-" and (path / "meta.json").is_file():
        store = PatchStore.open(path)
        got = tuple(store.meta.get("image_shape") or store.images.shape[1:])
        if got != shape:
            raise OneclassError(f"{path}: patches are {_shape(got)} but the run was trained on "
                                f"{_shape(shape)}; extract them as the run did (see its recipe.yaml)")
        made = {"whole_image": False, **(store.meta.get("params") or {})}
        trained = {"whole_image": False, **(run.data.get("extraction") or {})}
        differ = [f"patches.{k} (run {trained[k]!r}, store {made.get(k)!r})" for k in _PIXEL_KEYS
                  if k in trained and made.get(k) != trained[k]]
        if differ:
            raise OneclassError(f"{path}: the patches were not cut as the run's were: {'; '.join(differ)}; "
                                f"extract them as the run did (see its recipe.yaml)")
        return store.images, store.index, True
    if source == "-":
        paths = [Path(line.strip()) for line in stdin_lines or [] if line.strip()]
        if not paths:
            raise OneclassError("-: no image paths on standard input")
    elif path.is_dir():
        from oneclass.data.datasets.base import walk_images
        from oneclass.data.datasets.folder import MASK_STEM

        # as the folder dataset reads a tree: no hidden folders, no <stem>_mask.png files,
        # and in a folder dataset's root not its masks/ tree
        masks = path / "masks" if (path / "normal").is_dir() or (path / "anomalous").is_dir() else None
        paths = [image for image in walk_images(path)
                 if not MASK_STEM.search(image.stem) and not (masks and masks in image.parents)]
        if not paths:
            raise OneclassError(f"{path}: no images found")
    elif path.is_file():
        paths = [path]
    else:
        raise OneclassError(f"{path}: no such file, folder or patch store")
    level = run.data["extraction"].get("level") or 0
    if level:  # image files have no levels: their pixels are taken as they are
        warnings.warn(f"the run was trained on slides read at level {level}; image files are cut at their own "
                      f"resolution: give them at that level's magnification, or score a store extracted from "
                      f"the slides", stacklevel=2)
    # converted to the run's channel count, as extraction converted its images; said where
    # the recipe did not ask for a count (the run took its first image's)
    asked = (run.recipe.get("patches") or {}).get("channels") is not None
    return cut_images(paths, run.data["extraction"], shape, warn=not asked)


def _shape(shape) -> str:
    return f"{shape[0]} x {shape[1]} x {shape[2]} (channels x height x width)"


@dataclass
class _DecodedImage(Item):
    """An image already in memory, with no mask (labels unknown)."""

    image: np.ndarray = None

    def load(self) -> Loaded:
        return Loaded(self.image, None, [])


def cut_images(paths: list[Path], params: dict, shape: tuple, warn: bool = False):
    from oneclass.data.extract import ExtractParams, ImageTask, run_image
    from oneclass.data.items import NORMAL
    from oneclass.data.readers import read_image

    fields = {k: params[k] for k in ("size", "stride", "mask_frac", "resize", "level", "channels",
                                     "whole_image") if k in params}
    extract = ExtractParams(**{**fields, "level": 0, "max_per_image": None})
    extract.check()
    channels = shape[0]
    images, index, converted = [], [], []
    for path in paths:
        if not path.is_file():
            raise OneclassError(f"{path}: no such image file")
        image = read_image(path, params.get("bits"))
        if image.shape[2] != channels:
            converted.append(path)
        chunk = run_image(ImageTask(_DecodedImage(str(path), NORMAL, image), extract, channels))
        images.append(chunk.images)
        for x, y in zip(chunk.x.tolist(), chunk.y.tolist()):
            index.append({"id": str(len(index)), "source": str(path), "x": str(x), "y": str(y)})
    if converted and warn:
        warnings.warn(f"{converted[0]}: converted to the {channels} channel(s) the run was trained on, as "
                      f"extraction converts ({len(converted)} of {len(paths)} image(s) converted)", stacklevel=2)
    pixels = np.concatenate(images) if images else np.zeros((0, *shape), np.uint8)
    if tuple(pixels.shape[1:]) != shape:
        raise OneclassError(f"{paths[0]}: patches come out {_shape(pixels.shape[1:])}, the run "
                            f"expects {_shape(shape)}")
    return pixels, index, False
