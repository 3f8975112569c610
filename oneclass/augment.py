"""Training-time augmentation of a whole batch on its device, drawn per sample.

``parse_augment(["hflip", "rotate:15"])`` validates a list of specs (``name`` or
``name:value``) and returns an :class:`Augment`, a callable applying the ops in the given
order to a float batch in [0, 1] of shape (N, C, H, W):

- ``hflip``, ``vflip``: flip with probability 0.5.
- ``rot90``: rotate by k·90°, k uniform in 0..3 (square images only).
- ``rotate:DEG``: rotate by an angle uniform in [-DEG, DEG], DEG in (0, 180]; bilinear,
  the border is filled by reflection (no black corners for the model to learn as normal).
- ``resized_crop:SCALE``: crop a share uniform in [SCALE, 1] of the area, with the image's
  aspect ratio (square for square images), at a uniform position inside the image, and
  resize it back to H×W, bilinear; SCALE in (0, 1].
- ``cutout:FRAC``: set to 0 a square of side round(FRAC·min(H, W)) lying wholly inside the
  image at a uniform position; FRAC in (0, 1).
- ``brightness:DELTA``: add an offset uniform in [-DELTA, DELTA], DELTA in (0, 1].
- ``contrast:DELTA``: scale the deviation from the image's mean by a factor uniform in
  [1 - DELTA, 1 + DELTA], DELTA in (0, 1]. Both clamp to [0, 1].

Mind the data: a flip or a rotation must not turn an anomaly into a normal image (MVTec's
metal_nut has a "flip" defect class; pathology tiles, by contrast, have no orientation).

Every op is vectorised over the batch. torchvision's v2 transforms are not used: given a
batch tensor they draw one parameter set for the whole batch, not one per sample.
Consecutive geometric ops (rotate, resized_crop) are composed into one affine map and
resampled once, so the image is interpolated once rather than once per op.

Parameters are drawn on the CPU (a few numbers per sample) from ``generator`` when given,
else from torch's global generator, so a seeded trainer repeats the same augmentation,
a resumed one restores it with the checkpointed torch RNG state, and a batch gets the
same draws on CPU and CUDA.
"""

from __future__ import annotations

import difflib
import math
from typing import Callable

import torch
import torch.nn.functional as F

from oneclass.errors import OneclassError

# name -> (meaning of the value, lowest (exclusive), highest, highest included); None: no value
_VALUES: dict[str, tuple[str, float, float, bool] | None] = {
    "hflip": None,
    "vflip": None,
    "rot90": None,
    "rotate": ("DEG", 0.0, 180.0, True),
    "resized_crop": ("SCALE", 0.0, 1.0, True),
    "cutout": ("FRAC", 0.0, 1.0, False),
    "brightness": ("DELTA", 0.0, 1.0, True),
    "contrast": ("DELTA", 0.0, 1.0, True),
}


def _uniform(n: int, lo: float, hi: float, gen: torch.Generator | None) -> torch.Tensor:
    device = gen.device if gen is not None else "cpu"
    return lo + (hi - lo) * torch.rand(n, generator=gen, device=device, dtype=torch.float64)


def _coin(n: int, gen: torch.Generator | None) -> torch.Tensor:
    return _uniform(n, 0.0, 1.0, gen) < 0.5


def _per_sample(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A (N,) parameter as (N, 1, 1, 1) on x's device and in x's dtype (bool stays bool)."""
    t = t.to(x.device) if t.dtype == torch.bool else t.to(x.device, x.dtype)
    return t.view(-1, 1, 1, 1)


# Pixel ops: (x, value, generator, key) -> x


def _flip(dim: int):
    def op(x, value, gen, key):
        return torch.where(_per_sample(_coin(len(x), gen), x), x.flip(dim), x)
    return op


def _rot90(x, value, gen, key):
    if x.shape[-1] != x.shape[-2]:
        raise OneclassError(f"{key}: rot90 needs square images, got {x.shape[-2]}×{x.shape[-1]}")
    k = torch.randint(0, 4, (len(x),), generator=gen, device=gen.device if gen is not None else "cpu").to(x.device)
    out = x.clone()
    for turns in (1, 2, 3):
        idx = (k == turns).nonzero().squeeze(1)
        out[idx] = torch.rot90(x[idx], turns, (2, 3))
    return out


def _cutout(x, frac, gen, key):
    return cutout(x, frac, gen)


def cutout(x: torch.Tensor, frac: float, gen: torch.Generator | None = None) -> torch.Tensor:
    """Each image of ``x`` with a square of side round(frac * min(H, W)), wholly inside it
    at a uniform position, set to 0."""
    n, _, h, w = x.shape
    side = round(frac * min(h, w))
    device = gen.device if gen is not None else "cpu"
    top = torch.randint(0, h - side + 1, (n, 1), generator=gen, device=device).to(x.device)
    left = torch.randint(0, w - side + 1, (n, 1), generator=gen, device=device).to(x.device)
    rows, cols = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
    inside_rows = (rows >= top) & (rows < top + side)  # (N, H)
    inside_cols = (cols >= left) & (cols < left + side)  # (N, W)
    return x.masked_fill((inside_rows[:, :, None] & inside_cols[:, None, :])[:, None], 0)


def _brightness(x, delta, gen, key):
    return (x + _per_sample(_uniform(len(x), -delta, delta, gen), x)).clamp(0, 1)


def _contrast(x, delta, gen, key):
    factor = _per_sample(_uniform(len(x), 1 - delta, 1 + delta, gen), x)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return ((x - mean) * factor + mean).clamp(0, 1)


# Geometric ops: (n, h, w, value, generator) -> (N, 3, 3) float64 maps from output to input
# coordinates, normalised to [-1, 1] as F.affine_grid wants them.


def _rotate(n, h, w, deg, gen):
    angle = torch.deg2rad(_uniform(n, -deg, deg, gen))
    cos, sin = angle.cos(), angle.sin()
    m = torch.eye(3, dtype=torch.float64).repeat(n, 1, 1)
    # A rotation in pixels; in normalised coordinates the axes are scaled by W/2 and H/2.
    m[:, 0, 0], m[:, 0, 1] = cos, -sin * h / w
    m[:, 1, 0], m[:, 1, 1] = sin * w / h, cos
    return m


def _resized_crop(n, h, w, scale, gen):
    side = _uniform(n, scale, 1.0, gen).sqrt()  # of the image's width and height
    m = torch.eye(3, dtype=torch.float64).repeat(n, 1, 1)
    m[:, 0, 0] = m[:, 1, 1] = side
    m[:, 0, 2] = (1 - side) * _uniform(n, -1.0, 1.0, gen)
    m[:, 1, 2] = (1 - side) * _uniform(n, -1.0, 1.0, gen)
    return m


_PIXEL: dict[str, Callable] = {"hflip": _flip(3), "vflip": _flip(2), "rot90": _rot90, "cutout": _cutout,
                               "brightness": _brightness, "contrast": _contrast}
_AFFINE: dict[str, Callable] = {"rotate": _rotate, "resized_crop": _resized_crop}


def _warp(x: torch.Tensor, ops: list[tuple[str, float]], gen) -> torch.Tensor:
    n, _, h, w = x.shape
    m = torch.eye(3, dtype=torch.float64).repeat(n, 1, 1)
    for name, value in ops:
        m = m @ _AFFINE[name](n, h, w, value, gen)  # each op's output is the next one's input
    if n == 0:  # affine_grid refuses an empty batch
        return x
    theta = m[:, :2].to(x.device, x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


class Augment:
    """The ops of ``specs`` in order; call it on a batch (N, C, H, W) of floats in [0, 1].
    Returns a new batch of the same shape, dtype and device, or ``x`` itself when there
    are no ops."""

    def __init__(self, specs: tuple[str, ...], ops: tuple[tuple[str, float | None], ...],
                 key: str = "method.augment"):
        self.specs, self._ops, self._key = specs, ops, key

    def __repr__(self) -> str:
        return f"Augment({list(self.specs)!r})"

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if not self._ops:
            return x
        if x.ndim != 4 or not x.is_floating_point():
            raise ValueError(f"augment expects a float batch (N, C, H, W), got {x.dtype} {tuple(x.shape)}")
        pending: list[tuple[str, float]] = []
        for name, value in self._ops:
            if name in _AFFINE:
                pending.append((name, value))
                continue
            if pending:
                x, pending = _warp(x, pending, generator), []
            x = _PIXEL[name](x, value, generator, self._key)
        return _warp(x, pending, generator) if pending else x


def parse_augment(specs: list[str], key: str = "method.augment") -> Augment:
    """Validate ``specs`` ("name" or "name:value"); a mistake is a one-line OneclassError
    naming ``key`` and the item."""
    if isinstance(specs, str) or not isinstance(specs, (list, tuple)):
        raise OneclassError(f"{key}: expected a list of augmentations such as ['hflip', 'rotate:15'], "
                            f"got {specs!r}")
    names = ", ".join(_VALUES)
    kept, ops = [], []
    for item in specs:
        if not isinstance(item, str):
            raise OneclassError(f"{key}: {item!r} is not a string; expected one of: {names}")
        name, sep, text = (part.strip() for part in item.partition(":"))
        if name not in _VALUES:
            close = difflib.get_close_matches(name, list(_VALUES), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise OneclassError(f"{key}: unknown augmentation {item!r}{hint}; expected one of: {names}")
        rule = _VALUES[name]
        if rule is None:
            if sep:
                raise OneclassError(f"{key}: {item!r}: {name} takes no value; write '{name}'")
            kept.append(name)
            ops.append((name, None))
            continue
        what, lo, hi, hi_included = rule
        interval = f"({lo:g}, {hi:g}{']' if hi_included else ')'}"
        if not sep or not text:
            raise OneclassError(f"{key}: {item!r} needs a value: write '{name}:{what}' with {what} in {interval}")
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (lo < value < hi or (hi_included and value == hi)):
            raise OneclassError(f"{key}: {item!r}: {what} must be a number in {interval}")
        kept.append(f"{name}:{text}")
        ops.append((name, value))
    return Augment(tuple(kept), tuple(ops), key)
