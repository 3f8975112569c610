"""Deep perceptual autoencoder (Tuluptceva et al., "Anomaly Detection with Deep Perceptual
Autoencoders"; NOTES.md, perceptual-ae.txt).

An autoencoder of pre-activation residual blocks without normalisation layers, with a
dense bottleneck of ``latent`` units, is trained on normal items only to minimise the
relative-perceptual-L1 loss (Sec. 3.1)

    L(x, x^) = ||f^(x) - f^(x^)||_1 / ||f^(x)||_1,    f^(x) = (f(x) - mu) / sigma,

f a frozen pretrained VGG's ReLU output at one layer, mu and sigma its per-channel mean
and std. The same quantity, per item, is the anomaly score; ``explain`` maps its
per-location terms back to the input's pixels.

Progressive growing (Sec. 3.2, ``progressive: true``): training starts at ``start`` x
``start`` pixels and doubles the resolution up to the item size. Each doubling fades the
new layers in over ``transition`` images, alpha rising linearly from 0 to 1: the input and
the output are mixes of the new resolution and the previous one upsampled, and the loss
is alpha L(f_2(x), f_2(x^)) + (1 - alpha) L(f_1(down x), f_1(down x^)) with f_1, f_2 the
layers of the previous and new resolution; then ``stable`` images at full mix. Every
phase is a stage of its own, with a fresh Adam (the authors' code), so resuming inside a
phase is exact (the trainer's checkpoints; the images seen in the phase are a buffer of
the model).

Where the paper is silent we follow the authors' code (ninatu/anomaly_detection, dpa/),
and depart from it where noted:

- blocks: pre-activation residual blocks, LeakyReLU(0.2), no normalisation, 3x3
  convolutions; a resolution step down is average pooling, up is nearest upsampling; the
  encoder ends, and the decoder starts, at 4 x 4. The code's NIH and CIFAR-10
  configurations map 4 x 4 to the latent with an unpadded 4 x 4 convolution; a dense
  layer here, the same map. Its Camelyon16 ones keep a spatial bottleneck instead
  (``latent_res`` 8 with 4 channels, 16 x 4 in its search), which this network does not
  build: ``latent`` is a vector here. Output linear, images
  in [-1, 1] inside the autoencoder (the code's Normalize(0.5, 0.5)). One ``width`` at
  every resolution (the code's CIFAR-10 and NIH configurations use 32 and 16).
- layers: relu1_2 at 8 px, relu2_2 at 16, relu3_2 at 32 (the code's NIH progressive
  configuration, the one that starts at 8 px as ours may), relu4_2 at 64 and above (its
  Camelyon16 one; NIH keeps relu3_2 at 64, and Camelyon16 uses relu3_2 already at 16 px).
  ``layer`` overrides the one at the item size (the paper chooses it by validation),
  ``layers`` any resolution's ({16: relu3_2, 32: relu3_2} is the Camelyon16 growth).
- feature statistics: the paper normalises features by a mean and standard deviation
  "precalculated on a large dataset"; the code reads ImageNet's from a file in its
  repository (vgg19_ILSVRC2012_object_detection_mean_var.pt), which this toolkit cannot
  download or ship. We centre and divide per channel by the training normals' mean and
  standard deviation at the resolution each layer is used (before the phase that first
  uses it), flooring the std at 1% of the layer's mean std so that a channel silent on
  every normal item (common with random weights) does not divide by zero. Centred on
  the normals, the loss's denominator grows with an item's distance from normality,
  which ImageNet's mean would not do: an anomaly's relative error is divided by more
  than in the paper. ``feature_stats: PATH`` reads the authors' file instead (with
  ``weights: imagenet``, the features it describes).
- the loss is the code's per-item mean absolute difference over the mean absolute
  feature (the paper's ratio of L1 norms: the element counts cancel); the denominator
  takes no gradient (the code's ``.detach()``).
- phase lengths: the code's 20,000 iterations of 128 images for every transition and
  stable phase (``transition``/``stable`` count images); the last phase may stop early
  (``train.early_stopping``) on validation AUROC, or as the paper says ("until after the
  loss on the holdout set of normal images stops decreasing") on the validation normals'
  mean loss, which is their mean score (``train.monitor: normal_score``).
- images are resized (area averaging) to each phase's resolution; the code resizes
  bilinearly, which is the same for a factor of two.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from oneclass.data.items import LABELED_ANOMALY, PatchData
from oneclass.errors import OneclassError
from oneclass.methods.base import INFER_BATCH, Method, batch_pixels
from oneclass.methods.nets.backbones import build_backbone, feature_shapes, layer_names, load_weights

BASE = 4  # the encoder's last and the decoder's first resolution
SCORE_PIXELS = INFER_BATCH * 64 * 64  # input pixels per scoring batch (VGG activations are large)
STD_FLOOR = 0.01  # a channel's std is at least this share of the layer's mean std


def default_layer(side: int) -> str:
    """The perceptual layer at a resolution: the authors' progressive configurations."""
    return {4: "relu1_2", 8: "relu1_2", 16: "relu2_2", 32: "relu3_2"}.get(side, "relu4_2")


def fade(seen: int, transition: int) -> float:
    """The mix of a new resolution after ``seen`` of its ``transition`` images: 0 at the
    start of the transition, rising linearly to 1 at its end."""
    return min(1.0, seen / transition)


def relative_l1(fx: torch.Tensor, fy: torch.Tensor) -> torch.Tensor:
    """Per item ||fx - fy||_1 / ||fx||_1 over normalised features (N, C, h, w); the
    denominator carries no gradient."""
    return (fx - fy).abs().flatten(1).mean(1) / fx.abs().flatten(1).mean(1).detach()


def area_resize(x: torch.Tensor, side: int) -> torch.Tensor:
    """Square images down to ``side`` (a power-of-two fraction of theirs) by area averaging."""
    factor = x.shape[-1] // side
    return x if factor == 1 else F.avg_pool2d(x, factor)


def _act() -> nn.Module:
    return nn.LeakyReLU(0.2)


class _Residual(nn.Module):
    """Pre-activation residual block: x + conv(act(conv(act(x))))."""

    def __init__(self, width: int):
        super().__init__()
        self.body = nn.Sequential(_act(), nn.Conv2d(width, width, 3, padding=1),
                                  _act(), nn.Conv2d(width, width, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class _Resample(nn.Module):
    """A pre-activation residual block that halves (``down``) or doubles the resolution."""

    def __init__(self, width: int, down: bool):
        super().__init__()
        self.resample = nn.AvgPool2d(2) if down else nn.Upsample(scale_factor=2, mode="nearest")
        self.body = nn.Sequential(_act(), self.resample, nn.Conv2d(width, width, 3, padding=1),
                                  _act(), nn.Conv2d(width, width, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.resample(x) + self.body(x)


class _Encoder(nn.Module):
    def __init__(self, channels: int, width: int, latent: int, sides: list[int], top: int):
        super().__init__()
        self.from_image = nn.ModuleDict({str(s): nn.Conv2d(channels, width, 3, padding=1) for s in sides})
        # blocks[s] takes s x s features to s/2 x s/2
        self.blocks = nn.ModuleDict({str(s): nn.Sequential(_Residual(width), _Resample(width, down=True))
                                     for s in _doublings(2 * BASE, top)})
        self.head = nn.Sequential(_Residual(width), _act(), nn.Flatten(), nn.Linear(width * BASE * BASE, latent))

    def forward(self, x: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
        side = x.shape[-1]
        h = self.from_image[str(side)](x)
        if side > BASE:
            h = self.blocks[str(side)](h)
            if alpha < 1:  # the new resolution fades in over the previous one's path
                h = alpha * h + (1 - alpha) * self.from_image[str(side // 2)](F.avg_pool2d(x, 2))
        side //= 2
        while side >= 2 * BASE:
            h = self.blocks[str(side)](h)
            side //= 2
        return self.head(h)


class _Decoder(nn.Module):
    def __init__(self, channels: int, width: int, latent: int, sides: list[int], top: int):
        super().__init__()
        self.width = width
        self.stem = nn.Linear(latent, width * BASE * BASE)
        self.base = _Residual(width)
        # blocks[s] takes s/2 x s/2 features to s x s
        self.blocks = nn.ModuleDict({str(s): nn.Sequential(_Resample(width, down=False), _Residual(width))
                                     for s in _doublings(2 * BASE, top)})
        self.to_image = nn.ModuleDict({str(s): nn.Sequential(_act(), nn.Conv2d(width, channels, 3, padding=1))
                                       for s in sides})

    def forward(self, z: torch.Tensor, side: int, alpha: float = 1.0) -> torch.Tensor:
        h = self.base(self.stem(z).view(-1, self.width, BASE, BASE))
        at = BASE
        while at < side // 2:
            at *= 2
            h = self.blocks[str(at)](h)
        if side == BASE:
            return self.to_image[str(side)](h)
        out = self.to_image[str(side)](self.blocks[str(side)](h))
        if alpha < 1:
            out = alpha * out + (1 - alpha) * F.interpolate(self.to_image[str(side // 2)](h), scale_factor=2,
                                                            mode="nearest")
        return out


class _AutoEncoder(nn.Module):
    """Images in [0, 1] at any of ``sides`` → reconstructions in the same range (linear
    output, not clamped)."""

    def __init__(self, channels: int, width: int, latent: int, sides: list[int]):
        super().__init__()
        self.encoder = _Encoder(channels, width, latent, sides, sides[-1])
        self.decoder = _Decoder(channels, width, latent, sides, sides[-1])

    def forward(self, x: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
        return (self.decoder(self.encoder(x * 2 - 1, alpha), x.shape[-1], alpha) + 1) / 2


class _FeatureStats(nn.Module):
    """Per-channel mean and std of the perceptual layer's features at each resolution,
    computed on the training normals; and the images seen in the current phase."""

    def __init__(self, channels_at: dict[int, int]):
        super().__init__()
        for side, channels in channels_at.items():
            self.register_buffer(f"mean_{side}", torch.zeros(channels))
            self.register_buffer(f"std_{side}", torch.ones(channels))
        self.register_buffer("seen", torch.zeros((), dtype=torch.int64))

    def normalise(self, features: torch.Tensor, side: int) -> torch.Tensor:
        mean, std = getattr(self, f"mean_{side}"), getattr(self, f"std_{side}")
        return (features - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)


def _doublings(first: int, last: int) -> list[int]:
    sides = []
    while first <= last:
        sides.append(first)
        first *= 2
    return sides


class DPA(Method):
    """Deep perceptual autoencoder: relative-perceptual-L1 on frozen VGG features, progressive growing."""

    name = "dpa"
    supervision = "unsupervised"
    uses_validation = ("early stopping in the last phase on validation AUROC or, as the paper, on the "
                       "normals' loss (train.early_stopping, train.monitor: normal_score); the recipe's "
                       "select: section chooses hyperparameters with it")

    @dataclass
    class Params:
        latent: int = 32  # bottleneck units (the authors' configurations: 4 to 256)
        width: int = 32  # channels at every resolution
        backbone: str = "vgg19"  # the perceptual network: vgg19 (the paper) or vgg16
        weights: str = "imagenet"  # imagenet | none | PATH of a state dict; loaded when fit starts
        layer: str | None = None  # at the item size; null: relu1_2 (8 px), relu2_2 (16), relu3_2 (32), relu4_2
        # the layer at each resolution named, {16: relu3_2, 32: relu3_2} (the authors'
        # Camelyon16 configuration); the others as above, ``layer`` at the item size. A
        # recipe's keys are text ("16"); without growth only the item size's entry is used
        layers: dict[str, str] | None = None
        progressive: bool = True  # grow from start x start to the item size; false: the item size only
        start: int = 8  # the first resolution when growing
        transition: int = 2_560_000  # images over which each new resolution fades in
        stable: int = 2_560_000  # images at full mix at each resolution (the last may stop early)
        batch_size: int | None = 128
        lr: float | None = 1.0e-3  # Adam, fresh at every phase
        # normals: the training normals' per-channel mean and std; or PATH of the authors'
        # ImageNet statistics (their vgg19_ILSVRC2012_object_detection_mean_var.pt: layer
        # "r22" -> (mean, var)), for the paper's normalisation with imagenet weights
        feature_stats: str = "normals"

    @classmethod
    def ignored_at(cls, params) -> dict[str, str]:
        return {} if params.progressive else {"start": "progressive is false",
                                              "transition": "progressive is false"}

    def __init__(self, params, in_shape):
        super().__init__(params, in_shape)
        self._check_params()
        p = self.params
        channels, side = self.in_shape[0], self.in_shape[1]
        self.sides = _doublings(p.start, side) if p.progressive else [side]
        self.layers = {s: default_layer(s) for s in self.sides}
        self.layers.update(self._layers_named())
        if p.layer is not None:
            self.layers[side] = p.layer
        with warnings.catch_warnings():  # random weights here; the asked ones are loaded by fit
            warnings.simplefilter("ignore")
            vgg = build_backbone(p.backbone, "none", list(dict.fromkeys(self.layers.values())),
                                 key=f"method.{self.name}.layer")
        shapes = feature_shapes(vgg, self.sides, {s: [layer] for s, layer in self.layers.items()})
        for s, layer in self.layers.items():
            if shapes[s] is None or min(shapes[s][layer][1:]) < 1:
                self._fail(f"{p.backbone} {layer} has an empty feature map for {s}x{s} images; "
                           f"use an earlier layer (method.{self.name}.layer or .layers) or larger items")
        self.vgg = self.add("vgg", vgg.freeze())
        self.ae = self.add("ae", _AutoEncoder(channels, p.width, p.latent, self.sides))
        self.stats = self.add("stats", _FeatureStats({s: shapes[s][layer][0] for s, layer in self.layers.items()}))
        self.weights_source: str | None = None  # set by fit

    def run_info(self) -> dict:
        return {"backbone": self.params.backbone, "weights": self.weights_source,
                "layers": {str(s): layer for s, layer in self.layers.items()},
                "feature_stats": self.params.feature_stats}

    # -- checks -------------------------------------------------------------------------

    def _fail(self, message: str) -> None:
        raise OneclassError(f"method {self.name}: {message}")

    def _check_params(self) -> None:
        p = self.params
        channels, height, width = self.in_shape
        if p.backbone not in ("vgg19", "vgg16"):
            self._fail(f"backbone must be vgg19 or vgg16 (the perceptual layers are VGG ReLU outputs), "
                       f"got {p.backbone!r}")
        if channels not in (1, 3):
            self._fail(f"needs 1- or 3-channel images, got {channels} channels")
        for key in ("latent", "width", "transition", "stable", "batch_size"):
            value = getattr(p, key)
            if value is not None and value < 1:
                self._fail(f"{key} must be at least 1, got {value}")
        if p.lr is not None and not p.lr > 0:
            self._fail(f"lr must be positive, got {p.lr}")
        start = p.start if p.progressive else BASE
        if p.progressive and (p.start < BASE or p.start & (p.start - 1)):
            self._fail(f"start must be a power of two of at least {BASE}, got {p.start}")
        if height != width or height not in _doublings(start, height):
            series = ", ".join(str(start << i) for i in range(4))
            self._fail(f"items of {height}x{width} pixels cannot be reached by doubling from {start}x{start} "
                       f"({series}, ...); resize the items (patches.resize) to a square side in that "
                       f"series" + (" or change start" if p.progressive else ""))

    def _layers_named(self) -> dict[int, str]:
        """``layers`` as {side: layer} at the sides trained; each side named must be one
        of the growth's resolutions (trained or not: ``progressive: false`` trains the
        item size only, and ignores the others' entries)."""
        p, key = self.params, f"method.{self.name}.layers"
        allowed = _doublings(p.start if p.progressive else BASE, self.in_shape[1])
        valid = layer_names(p.backbone, f"method.{self.name}.backbone")
        named, seen = {}, set()
        for side, layer in (p.layers or {}).items():
            if not (isinstance(side, int) or (isinstance(side, str) and side.isascii() and side.isdecimal())):
                raise OneclassError(f"{key}: {side!r} is not a resolution in pixels")
            side = int(side)
            if side in seen:
                raise OneclassError(f"{key}: {side} px is named twice")
            seen.add(side)
            if side not in allowed:
                raise OneclassError(f"{key}: {side} px is not a resolution this network grows through "
                                    f"({', '.join(map(str, allowed))})")
            if side not in self.sides:
                continue
            if layer not in valid:
                raise OneclassError(f"{key}: unknown layer {layer!r} at {side} px for {p.backbone}; "
                                    f"valid: {', '.join(valid)}")
            if side == self.sides[-1] and p.layer is not None and p.layer != layer:
                raise OneclassError(f"{key}: {layer} at {side} px, but method.{self.name}.layer says {p.layer}; "
                                    f"give one")
            named[side] = layer
        return named

    # -- the loss -----------------------------------------------------------------------

    def _perceptual(self, x: torch.Tensor, y: torch.Tensor, side: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised features of images ``x`` and reconstructions ``y`` at ``side``."""
        layer = self.layers[side]
        with torch.no_grad():  # x takes no gradient: its features need no backward pass
            fx = self.vgg(x, [layer])[layer].float()
        fy = self.vgg(y, [layer])[layer].float()
        return self.stats.normalise(fx, side), self.stats.normalise(fy, side)

    def _loss(self, x: torch.Tensor, y: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
        """Per-item relative-perceptual-L1 of ``x`` (at a phase's resolution) and its
        reconstruction ``y``; during a fade-in mixed with the previous resolution's."""
        side = x.shape[-1]
        loss = relative_l1(*self._perceptual(x, y, side))
        if alpha < 1:
            previous = relative_l1(*self._perceptual(F.avg_pool2d(x, 2), F.avg_pool2d(y, 2), side // 2))
            loss = alpha * loss + (1 - alpha) * previous
        return loss

    def _mixed(self, x: torch.Tensor, side: int, alpha: float) -> torch.Tensor:
        """Items at ``side``; while it fades in, mixed with their ``side / 2`` version
        upsampled (the progressive-growing input)."""
        x = area_resize(x, side)
        if alpha < 1:
            x = alpha * x + (1 - alpha) * F.interpolate(F.avg_pool2d(x, 2), scale_factor=2, mode="nearest")
        return x

    def _score(self, x: torch.Tensor) -> torch.Tensor:
        return self._loss(x, self.ae(x))

    # -- training -----------------------------------------------------------------------

    def training_items(self, train: PatchData) -> PatchData:
        """Normal items only: labelled anomalies are left out (the method is unsupervised)."""
        if train.roles is None:
            return train
        kept = train.subset(train.roles != LABELED_ANOMALY)
        kept.roles = np.zeros_like(kept.roles)
        return kept

    @torch.no_grad()
    def feature_statistics(self, normals: PatchData, side: int) -> None:
        """Per-channel mean and std of the layer used at ``side`` over ``normals`` (all of
        them, resized to ``side``); stored in the model."""
        layer, total, squares, count = self.layers[side], 0.0, 0.0, 0
        self.vgg.eval()
        batch = max(1, SCORE_PIXELS // (self.in_shape[1] * self.in_shape[2]))
        for start in range(0, len(normals), batch):
            x = batch_pixels(normals, np.arange(start, min(start + batch, len(normals))), self.device, self.channels_last)
            f = self.vgg(area_resize(x, side), [layer])[layer].double()
            total = total + f.sum((0, 2, 3))
            squares = squares + (f * f).sum((0, 2, 3))
            count += f.shape[0] * f.shape[2] * f.shape[3]
        mean = total / count
        std = (squares / count - mean * mean).clamp(min=0).sqrt()
        std = std.clamp(min=max(STD_FLOOR * float(std.mean()), 1e-12))
        getattr(self.stats, f"mean_{side}").copy_(mean.float())
        getattr(self.stats, f"std_{side}").copy_(std.float())

    def read_feature_stats(self, path: str) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        """{side: (mean, divisor)} of the layer used at each side, from a file laid out as
        the authors' (layer "reluX_Y" as "rXY" -> (mean, var), each 1 x C x 1 x 1). Their
        code divides by the second tensor as it is, named var; so do we."""
        key = f"method.{self.name}.feature_stats"
        try:
            found = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise OneclassError(f"{key}: {path}: file not found (or write normals)") from None
        except Exception as exc:  # noqa: BLE001 - any unpickling failure is the file's fault
            raise OneclassError(f"{key}: {path}: not a torch file of feature statistics ({exc})") from None
        out = {}
        for side, layer in self.layers.items():
            short = "r" + layer.removeprefix("relu").replace("_", "")
            pair = found.get(short) if isinstance(found, dict) else None
            channels = getattr(self.stats, f"mean_{side}").numel()
            if not (isinstance(pair, (tuple, list)) and len(pair) == 2
                    and all(isinstance(t, torch.Tensor) and t.numel() == channels for t in pair)):
                raise OneclassError(f"{key}: {path}: no ({channels}-channel mean, var) for {layer} "
                                    f"(key {short!r}), the layer used at {side} px")
            if not (torch.isfinite(pair[0]).all() and torch.isfinite(pair[1]).all() and (pair[1] > 0).all()):
                raise OneclassError(f"{key}: {path}: {short!r} holds a non-finite mean or a var that is not "
                                    f"positive; features cannot be divided by it")
            out[side] = (pair[0].flatten().float(), pair[1].flatten().float())
        return out

    def phases(self) -> list[tuple[str, int, bool]]:
        """(stage name, resolution, fading in?) of every training phase, in order."""
        if not self.params.progressive:
            return [("train", self.sides[0], False)]
        phases = []
        for i, side in enumerate(self.sides):
            if i:
                phases.append((f"{side}px-fade", side, True))
            phases.append((f"{side}px", side, False))
        return phases

    def fit(self, train: PatchData, val: PatchData | None = None) -> None:
        p = self.params
        normals = self.training_items(train)
        if not len(normals):
            self._fail("no normal items to train on (the training set holds only labelled anomalies)")
        trainer = self.prepare(val)
        batch_size = p.batch_size or trainer.cfg.batch_size
        self.weights_source = load_weights(self.vgg, p.weights, f"method.{self.name}.weights",
                                           "the perceptual loss is meant to use pretrained features")
        if not trainer.resuming:
            trainer.log({"stage": "setup", "backbone": p.backbone, "weights": self.weights_source,
                         "layers": {str(s): layer for s, layer in self.layers.items()}})
        fixed = None if p.feature_stats == "normals" else self.read_feature_stats(p.feature_stats)
        final = self.sides[-1]
        for name, side, fading in self.phases():
            images = p.transition if fading else p.stable
            spec = trainer.spec(name, self.ae.parameters(), optimizer="adam",
                                lr=p.lr if p.lr is not None else trainer.cfg.lr, weight_decay=0.0,
                                steps=math.ceil(images / batch_size), schedule="constant", batch_size=batch_size,
                                frozen=("vgg",))

            def on_start(side=side, fading=fading):
                self.stats.seen.zero_()
                if fading or side == self.sides[0]:  # the first phase at this resolution
                    if fixed is None:
                        self.feature_statistics(normals, side)
                    else:
                        getattr(self.stats, f"mean_{side}").copy_(fixed[side][0])
                        getattr(self.stats, f"std_{side}").copy_(fixed[side][1])

            def objective(batch, side=side, fading=fading):
                alpha = fade(int(self.stats.seen), p.transition) if fading else 1.0
                x = self._mixed(batch["x"], side, alpha)
                loss = self._loss(x, self.ae(x, alpha), alpha).mean()
                # the whole batch, as the stage's length counts it: under torchrun x is one
                # process's share, and a pass's last batch is short, either of which would
                # leave alpha short of 1 when the fade-in ends
                self.stats.seen += batch_size
                return loss

            def epoch_stats(fading=fading):
                return {"alpha": round(fade(int(self.stats.seen), p.transition), 4)} if fading else {}

            trainer.stage(spec, normals, objective, on_start=on_start, epoch_stats=epoch_stats,
                          scorer=self._score if side == final and not fading else None)

    # -- inference ----------------------------------------------------------------------

    def _batch(self) -> int:
        return max(1, min(INFER_BATCH, SCORE_PIXELS // (self.in_shape[1] * self.in_shape[2])))

    def score(self, data: PatchData) -> np.ndarray:
        return self.map(self._score, data, batch_size=self._batch())

    def embed(self, data: PatchData) -> np.ndarray:
        return self.map(lambda x: self.ae.encoder(x * 2 - 1), data, batch_size=self._batch())

    def _pixel_map(self, x: torch.Tensor) -> torch.Tensor:
        """Each feature location's share of the score, upsampled to the item's pixels."""
        fx, fy = self._perceptual(x, self.ae(x), x.shape[-1])
        cells = (fx - fy).abs().mean(1) / fx.abs().flatten(1).mean(1).view(-1, 1, 1)
        return F.interpolate(cells[:, None], size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]

    def explain(self, data: PatchData) -> np.ndarray:
        return self.map(self._pixel_map, data, batch_size=self._batch())
