"""Anomaly maps from the gradient of a differentiable score (DevNet's explanation, Pang
et al. Sec. 4.4), written for any method.

Given ``score_fn``, a function from a batch of images (N, C, H, W) to one differentiable
score per item, :func:`gradient_map` draws for every item the gradient of its score with
respect to its input pixels: absolute values summed over the channels, clipped at the
image's 99th percentile (a few extreme pixels would otherwise dwarf the rest) and smoothed
with a Gaussian of sigma 4 pixels, at the input's resolution. :func:`gradient_maps` does
this over a whole :class:`~oneclass.data.items.PatchData` with a method's networks in
eval mode, so items are independent of the others in their batch. A method whose score is
differentiable gets its ``explain`` in one line::

    def explain(self, data):
        return gradient_maps(self, self._score, data)

Compared with the DevNet reference code (mala-lab/deviation-network-image,
``localization.py``), which we follow in taking the gradient with respect to the input
image (its hooks on ``layer4[1].conv2`` collect feature gradients that the map never
uses), summing absolute values over channels, clipping at the 99th percentile and
smoothing with ``scipy.ndimage.gaussian_filter(sigma=4)``:

- the gradient is taken with respect to the pixels in [0, 1], not the ImageNet-normalised
  input, so each channel's gradient is the reference's divided by that channel's std;
- the reference also rescales each map to [0, 1] by its minimum and 99th percentile; we
  only clip, so maps keep their magnitudes and stay comparable across images (a pooled
  pixel AUROC over many images needs that; a per-image AUROC is unchanged by it);
- a grey input is the one channel the backbone copies to three, so its gradient is the
  signed sum of the three copies' gradients (the derivative with respect to the grey
  pixel, as Sec. 4.4 defines the map); the reference feeds RGB copies and sums the three
  absolute values. On random weights the two differ (correlation 0.63);
- the paper says a "16x16 sliding Gaussian kernel with sigma=4"; the reference, and we,
  call scipy's gaussian_filter, whose kernel reaches 4 sigma (33 x 33): the tails only.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np
import torch

if TYPE_CHECKING:
    from oneclass.data.items import PatchData
    from oneclass.methods.base import Method

SIGMA = 4.0  # pixels, at the input's resolution
PERCENTILE = 99.0
PIXEL_BUDGET = 64 * 128 * 128  # input pixels per batch when explaining (gradients need memory)


def gradient_map(score_fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                 sigma: float = SIGMA, percentile: float | None = PERCENTILE) -> np.ndarray:
    """(N, H, W) float32 maps of one batch ``x`` (N, C, H, W): |d score_i / d x_i| summed
    over channels, clipped per image at ``percentile`` (None: not clipped), smoothed with
    a Gaussian of ``sigma`` pixels (0: not smoothed).

    ``score_fn`` must score each item independently of the others in the batch (networks
    in eval mode), so the gradient of the batch's summed score is each item's own."""
    from scipy.ndimage import gaussian_filter

    x = x.detach().float().requires_grad_(True)
    with torch.enable_grad():
        scores = score_fn(x)
        if scores.shape != (len(x),):
            raise ValueError(f"score_fn gave shape {tuple(scores.shape)} for {len(x)} items, expected ({len(x)},)")
        (grad,) = torch.autograd.grad(scores.float().sum(), x)
    maps = grad.abs().sum(1).cpu().numpy().astype(np.float32)
    if percentile is not None and maps.size:
        top = np.percentile(maps, percentile, axis=(1, 2), keepdims=True)
        maps = np.minimum(maps, top)
    if sigma > 0 and maps.size:
        # scipy's default "reflect" border, as the reference code's gaussian_filter call
        maps = gaussian_filter(maps, sigma=(0, sigma, sigma))
    return maps.astype(np.float32, copy=False)


def gradient_maps(method: "Method", score_fn: Callable[[torch.Tensor], torch.Tensor], data: "PatchData",
                  sigma: float = SIGMA, percentile: float | None = PERCENTILE,
                  pixel_budget: int = PIXEL_BUDGET) -> np.ndarray:
    """:func:`gradient_map` of every item of ``data`` (rows in order), with ``method``'s
    modules in eval mode on its device; (n, H, W) float32. Batches hold at most
    ``pixel_budget`` input pixels (at least one item)."""
    from oneclass.methods.base import INFER_BATCH, batch_pixels

    for module in method.modules.values():
        module.eval()
    _, height, width = data.images.shape[1:]
    size = max(1, min(INFER_BATCH, pixel_budget // max(1, height * width)))
    out = [np.zeros((0, height, width), np.float32)]
    with _tolerant_determinism():
        for start in range(0, len(data), size):
            x = batch_pixels(data, np.arange(start, min(start + size, len(data))), method.device, method.channels_last)
            out.append(gradient_map(score_fn, x, sigma, percentile))
    return np.concatenate(out)


@contextmanager
def _tolerant_determinism() -> Iterator[None]:
    """Under ``train.deterministic`` torch refuses the CUDA backward of interpolation and
    pooling ops (no deterministic kernel); a map may differ in its last bits between runs,
    so those ops only warn here."""
    if not torch.are_deterministic_algorithms_enabled() or torch.is_deterministic_algorithms_warn_only_enabled():
        yield
        return
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(True)
