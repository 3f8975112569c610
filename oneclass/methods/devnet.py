"""DevNet (Pang et al., "Explainable Deep Few-shot Anomaly Detection with Deviation
Networks"; NOTES.md, "devnet.txt") and its ablation without multiple-instance learning.

A backbone (ResNet-18 by default) without its pooling and classifier gives a feature map;
a 1x1 convolution turns each of its cells into a score. ``devnet`` scores an image by the
mean of its top-k cell scores (k = ceil(topk x cells), at least one: top-k
multiple-instance learning, Eq. 6); ``devnet-plain`` (the paper's ablation "DS") by one
score of the globally averaged features. With several ``scales`` the image is resized to
each side, scored there, and the scores are averaged. The score is a deviation from a
N(0, 1) prior: training draws ``prior_draws`` reference scores r ~ N(0, 1) every step and
minimises, per item, (1 - y)|dev| + y max(0, a - dev) with dev = (s - mean r) / std r,
y = 1 for labelled anomalies, margin a (Eq. 7-8), so normal items score about 0 and
labelled anomalies at least a. It is a few-shot method: it refuses to train without
labelled anomalies. Maps (``explain``) are the gradient of the image score with respect
to the input (``oneclass.maps``).

Where we follow or depart from the authors' code (mala-lab/deviation-network-image):

- top-k: the code ranks and averages the *absolute* cell scores (``torch.topk(torch.abs(
  scores))`` in ``modeling/net.py``), the paper's Eq. 6 the scores themselves; param
  ``topk_on``: ``abs`` (default, the code, which produced the published numbers) or
  ``raw`` (the text). The code takes k = max(floor(topk x cells), 1); we take
  ceil(topk x cells), at least 1 (the toolkit's image top-k rule, ``metrics.topk_count``):
  19 vs 20 of the 196 cells of a 448 px ResNet-18 map.
- scales: the code scores the image at ``img_size // 2**s`` for s < n_scales (448 and 224
  by default), in training and scoring alike, and averages; so do we, at the sides listed
  in ``scales``. It resizes with ``F.interpolate``'s default nearest mode; we resize
  bilinearly with antialiasing (a side equal to the input's is used as is).
- sampling: the code's batches are 24 normal + 24 labelled anomalies, each side cycling
  through random permutations, 20 batches an epoch. The trainer's balanced sampler deals
  the unlabelled items once a pass and draws the labelled anomalies with replacement.
- schedule: the code steps StepLR(10, 0.1) once per epoch of 20 batches. Our epoch is a
  pass over the unlabelled items, so the lr falls by ``lr_factor`` every ``lr_step`` x
  ``steps_per_epoch`` steps rounded to whole passes (exact where a pass is
  ``steps_per_epoch`` batches long); where a pass is longer than that (more than ~4,800
  unlabelled items at 24 + 24), the schedule counts optimizer steps instead, so that it
  still falls every ``lr_step`` x ``steps_per_epoch`` steps, not once a pass or never.
  Training stops after ``epochs`` x ``steps_per_epoch`` optimizer steps as in the code.
- the loss (``modeling/layers/deviation_loss.py``): followed; the reference's std is the
  unbiased one (torch's default), as here. Adam 2e-4, weight decay 1e-5, gradient norm
  clipped at 1.0, RandomRotation(180): followed; our rotation fills the corners by
  reflection instead of black (``oneclass.augment``).
- the backbone's pretrained weights initialise it when ``fit`` starts, not when the method
  is built: the whole backbone is fine-tuned and saved with the model, so loading a
  finished run never needs the ImageNet file.
- the code trains on clean normal images; here the unlabelled items may be contaminated
  (the protocol's ``split.contamination``), which the paper's Sec. 6.8.3 studies.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from oneclass.data.items import LABELED_ANOMALY, PatchData
from oneclass.errors import OneclassError
from oneclass.maps import gradient_maps
from oneclass.methods.base import INFER_BATCH, Method
from oneclass.methods.nets.backbones import build_backbone, default_layers, feature_shapes, load_weights
from oneclass.metrics import topk_count

SCORE_PIXELS = INFER_BATCH * 128 * 128  # input pixels (at the largest scale) per scoring batch


def deviation(scores: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Z-score of ``scores`` against the ``reference`` scores drawn from the prior (Eq. 7)."""
    return (scores - reference.mean()) / reference.std()


def deviation_loss(scores: torch.Tensor, anomalous: torch.Tensor, reference: torch.Tensor,
                   margin: float = 5.0) -> torch.Tensor:
    """Per-item deviation loss (Eq. 8): |dev| for normal/unlabelled items, max(0, margin -
    dev) for labelled anomalies (``anomalous`` true)."""
    dev = deviation(scores, reference)
    y = anomalous.to(dev.dtype)
    return (1 - y) * dev.abs() + y * (margin - dev).clamp(min=0)


def topk_pool(cells: torch.Tensor, topk: float, on: str = "abs") -> torch.Tensor:
    """(N, M) cell scores → (N,): the mean of each row's ceil(topk x M) highest values
    (at least one), ranked and averaged on the absolute values (``on="abs"``, the authors'
    code) or on the scores themselves (``on="raw"``, the paper's Eq. 6)."""
    if on not in ("abs", "raw"):
        raise ValueError(f"topk_pool: on must be 'abs' or 'raw', got {on!r}")
    values = cells.abs() if on == "abs" else cells
    return values.topk(topk_count(cells.shape[1], topk), dim=1).values.mean(1)


@dataclass
class _Params:
    """What devnet and devnet-plain share. ``lr``, ``weight_decay``, ``batch_size`` and
    ``epochs`` set to null fall back to the ``train`` section."""

    backbone: str = "resnet18"  # resnet18, resnet50, wide_resnet50_2, vgg16, vgg19
    weights: str = "imagenet"  # imagenet | none | PATH of a state dict; loaded when fit starts
    layer: str | None = None  # the feature map scored; null: layer4 (ResNets), relu3_2 (VGGs)
    scales: list[int] = field(default_factory=lambda: [448, 224])  # sides each image is scored at
    margin: float = 5.0  # a: labelled anomalies are pushed to a deviation of at least a
    prior_draws: int = 5000  # l: reference scores drawn from N(0, 1) each step
    batch_size: int | None = 48
    anomalies_per_batch: int = 24  # labelled anomalies in each batch, drawn with replacement
    lr: float | None = 2.0e-4  # Adam
    weight_decay: float | None = 1.0e-5
    epochs: int | None = 50
    steps_per_epoch: int = 20  # an epoch is this many optimizer steps, as in the authors' code
    steps: int | None = None  # optimizer steps in all; null: epochs x steps_per_epoch
    lr_step: int = 10  # epochs between lr reductions
    lr_factor: float = 0.1
    clip: float | None = 1.0  # gradient norm
    augment: list[str] = field(default_factory=lambda: ["rotate:180"])


class _ScoreNet(nn.Module):
    """Backbone feature map and the 1x1 convolution scoring its cells."""

    def __init__(self, backbone: nn.Module, layer: str):
        super().__init__()
        self.backbone = backbone
        self.layer = layer
        self.head = nn.Conv2d(backbone.out_channels[layer], 1, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)[self.layer]


class DevNet(Method):
    """DevNet (Pang et al.): deviation networks with a Gaussian prior and top-k MIL over feature-map cells."""

    name = "devnet"
    supervision = "supervised"  # few-shot: needs labelled anomalies, refuses gamma = 0

    @dataclass
    class Params(_Params):
        topk: float = 0.1  # share of the feature-map cells whose mean is the image score
        topk_on: Literal["abs", "raw"] = "abs"  # rank |cell scores| (authors' code) or the scores (paper)

    def __init__(self, params, in_shape):
        super().__init__(params, in_shape)
        self._check_params()
        p = self.params
        layer = p.layer if p.layer is not None else default_layers(p.backbone)[0]
        with warnings.catch_warnings():  # random weights here; the asked ones are loaded by fit
            warnings.simplefilter("ignore")
            backbone = build_backbone(p.backbone, "none", [layer], key=f"method.{self.name}.backbone")
        self._check_feature_maps(backbone, layer)
        self.net = self.add("net", _ScoreNet(backbone, layer))
        self.weights_source: str | None = None  # set by fit: what initialised the backbone

    def run_info(self) -> dict:
        return {"backbone": self.params.backbone, "layer": self.net.layer, "weights": self.weights_source}

    # -- checks -------------------------------------------------------------------------

    def _fail(self, message: str) -> None:
        raise OneclassError(f"method {self.name}: {message}")

    def _check_params(self) -> None:
        from oneclass.augment import parse_augment

        p, channels = self.params, self.in_shape[0]
        if channels not in (1, 3):
            self._fail(f"needs 1- or 3-channel images, got {channels} channels")
        topk = getattr(p, "topk", None)
        if topk is not None and not 0 < topk <= 1:
            self._fail(f"topk must lie in (0, 1] (the share of feature-map cells averaged), got {topk}")
        if not p.scales:
            self._fail("scales is empty; give at least one image side, e.g. [448, 224]")
        bad = [s for s in p.scales if isinstance(s, bool) or s <= 0]
        if bad:
            self._fail(f"scales must be positive image sides in pixels, got {bad[0]} in {p.scales}")
        if p.prior_draws < 2:
            self._fail(f"prior_draws must be at least 2 (their std scales the deviation), got {p.prior_draws}")
        if not p.margin > 0:
            self._fail(f"margin must be positive, got {p.margin}")
        for key in ("epochs", "steps", "steps_per_epoch", "lr_step", "batch_size"):
            value = getattr(p, key)
            if value is not None and value < 1:
                self._fail(f"{key} must be at least 1, got {value}")
        for key in ("lr", "clip", "lr_factor"):
            value = getattr(p, key)
            if value is not None and not value > 0:
                self._fail(f"{key} must be positive, got {value}")
        if p.weight_decay is not None and p.weight_decay < 0:
            self._fail(f"weight_decay must not be negative, got {p.weight_decay}")
        if p.batch_size is not None:
            self._check_batch(p.batch_size)
        parse_augment(p.augment, f"method.{self.name}.augment")

    def _check_batch(self, batch_size: int) -> None:
        apb = self.params.anomalies_per_batch
        if not 0 < apb < batch_size:
            self._fail(f"anomalies_per_batch must lie in 1..{batch_size - 1} (the batch size is "
                       f"{batch_size}), got {apb}")

    def _check_feature_maps(self, backbone: nn.Module, layer: str) -> None:
        """Every scale must leave the backbone a non-empty feature map."""
        for side, shapes in feature_shapes(backbone, self.params.scales).items():
            if shapes is None or min(shapes[layer][1:]) < 1:
                self._fail(f"{self.params.backbone} ({layer}) has an empty feature map for {side}x{side} "
                           f"images (scales: {self.params.scales}); use larger scales or an earlier layer")

    # -- the network ------------------------------------------------------------------

    def _resize(self, x: torch.Tensor, side: int) -> torch.Tensor:
        if x.shape[-2:] == (side, side):
            return x
        return F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False, antialias=True)

    def _pool(self, features: torch.Tensor) -> torch.Tensor:
        """(N, C, h, w) features → (N,) image scores: top-k of the cells' scores."""
        cells = self.net.head(features).flatten(1)
        return topk_pool(cells, self.params.topk, self.params.topk_on)

    def _score(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) in [0, 1] → (N,) deviations, averaged over the scales."""
        scores = [self._pool(self.net(self._resize(x, side))) for side in self.params.scales]
        return torch.stack(scores, 1).mean(1)

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        """Globally averaged features, averaged over the scales."""
        return torch.stack([self.net(self._resize(x, side)).mean((2, 3)) for side in self.params.scales]).mean(0)

    # -- training -----------------------------------------------------------------------

    def fit(self, train: PatchData, val: PatchData | None = None) -> None:
        p = self.params
        anomalous = train.roles == LABELED_ANOMALY if train.roles is not None else np.zeros(len(train), bool)
        if not anomalous.any():
            self._fail("needs labelled anomalies (a few-shot method); set split.labeled_anomalies "
                       "(the paper: 10) or split.gamma > 0")
        if anomalous.all():
            self._fail("needs unlabelled or labelled normal items besides the labelled anomalies")
        trainer = self.prepare(val)  # puts the networks on the training device
        batch_size = p.batch_size or trainer.cfg.batch_size
        self._check_batch(batch_size)
        self.weights_source = load_weights(self.net.backbone, p.weights, f"method.{self.name}.weights",
                                           "DevNet is meant to fine-tune pretrained features")
        # optimizer steps, and the lr schedule in passes of the balanced sampler over the
        # unlabelled items (the trainer steps schedules once a pass)
        steps = p.steps if p.steps is not None else (p.epochs or trainer.cfg.epochs) * p.steps_per_epoch
        per_pass = math.ceil(int((~anomalous).sum()) / (batch_size - p.anomalies_per_batch))
        every = p.lr_step * p.steps_per_epoch  # optimizer steps between lr reductions
        per = "epoch" if per_pass <= every else "step"
        step_size = max(1, round(every / per_pass)) if per == "epoch" else every
        if not trainer.resuming:
            trainer.log({"stage": "train", "backbone": f"{p.backbone} {self.net.layer}",
                         "weights": self.weights_source, "steps": steps,
                         "lr_step_every": step_size * per_pass if per == "epoch" else every})
        spec = trainer.spec("train", self.net.parameters(), optimizer="adam",
                            lr=p.lr if p.lr is not None else trainer.cfg.lr,
                            weight_decay=p.weight_decay if p.weight_decay is not None else trainer.cfg.weight_decay,
                            steps=steps, schedule="step", step_size=step_size, schedule_per=per,
                            lr_factor=p.lr_factor,
                            clip=p.clip, batch_size=batch_size, sampler="balanced",
                            anomalies_per_batch=p.anomalies_per_batch, augment=tuple(p.augment))

        def objective(batch):
            # l reference scores from the N(0, 1) prior, fresh each step (drawn on the CPU
            # from the seeded global generator, so CPU and CUDA runs draw the same)
            reference = torch.randn(p.prior_draws).to(self.device)
            scores = self._score(batch["x"]).float()
            return deviation_loss(scores, batch["roles"] == LABELED_ANOMALY, reference, p.margin).mean()

        trainer.stage(spec, train, objective, scorer=self._score)

    # -- inference ----------------------------------------------------------------------

    def _map_in_chunks(self, fn, data: PatchData) -> np.ndarray:
        """``self.map`` in batches of at most SCORE_PIXELS pixels at the largest scale."""
        side = max(max(self.params.scales), *self.in_shape[1:])
        return self.map(fn, data, batch_size=max(1, min(INFER_BATCH, SCORE_PIXELS // (side * side))))

    def score(self, data: PatchData) -> np.ndarray:
        return self._map_in_chunks(self._score, data)

    def embed(self, data: PatchData) -> np.ndarray:
        return self._map_in_chunks(self._embed, data)

    def explain(self, data: PatchData) -> np.ndarray:
        """(n, H, W) maps at input resolution: the gradient of the image score with respect
        to the input pixels (``oneclass.maps.gradient_maps``)."""
        side = max(max(self.params.scales), *self.in_shape[1:])
        items = max(1, SCORE_PIXELS // 4 // (side * side))  # a quarter of scoring's: gradients need memory
        return gradient_maps(self, self._score, data, pixel_budget=items * self.in_shape[1] * self.in_shape[2])


class DevNetPlain(DevNet):
    """DevNet without MIL (the paper's ablation DS): one score of the globally averaged features."""

    name = "devnet-plain"

    @dataclass
    class Params(_Params):
        pass

    def _pool(self, features: torch.Tensor) -> torch.Tensor:
        # a 1x1 convolution is linear: the same as the mean of the cells' scores
        return self.net.head(features.mean((2, 3), keepdim=True)).flatten()
