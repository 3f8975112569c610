"""Deep SVDD (Ruff et al. 2018) and Deep SAD (Ruff et al. 2020).

A bias-free encoder phi maps patches into R^rep_dim; the score is ||phi(x) - c||^2.
Training (NOTES.md, "Baselines"):

1. an autoencoder (same bias-free encoder + decoder) is pretrained on the training
   items by the squared reconstruction error;
2. its encoder weights initialise phi -- every key must match, which is checked (the
   public reference lost them to a key-prefix mismatch);
3. the centre c is the mean of phi over an initial pass of the training items, with
   coordinates |c_i| < 0.1 pushed to +-0.1 (a near-zero coordinate lets trivial
   solutions through);
4. Deep SAD minimises, per item with semi-target t (0 unlabelled, +1 labelled normal,
   -1 labelled anomaly): ||phi(x)-c||^2 if t = 0, else eta (||phi(x)-c||^2 + eps)^t.

Deep SVDD is the unsupervised one-class objective: labelled anomalies are left out of
its training set and labelled normals count as unlabelled items.

As the reference code does, and noted because each is a choice: Deep SAD's pretraining
and centre take every training item, labelled anomalies included (a fifth of them at
gamma 0.2); the centre's pass runs in eval mode, so with ``pretrain_epochs: 0`` (the
BUSI, MVTec leather and nanofibre-paper recipes) batch norm still holds its initial
statistics there and c sits away from the train-mode features (the first epochs then
mostly move the features onto it; the reference always pretrains). Defaults shorter than
Ruff et al.'s 150 + 150 epochs: ``pretrain_epochs`` 20 and ``train.epochs``; the recipes
say what they train, and ``recipes/nanofibre.yaml`` names the paper's schedule for a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from oneclass.data.items import LABELED_ANOMALY
from oneclass.data.items import PatchData
from oneclass.errors import OneclassError
from oneclass.maps import gradient_maps
from oneclass.methods.base import Method
from oneclass.methods.nets.lenet import AutoEncoder, Encoder, check_shape


def deep_sad_loss(dist: torch.Tensor, roles: torch.Tensor, eta: float, eps: float) -> torch.Tensor:
    """Per-item Deep SAD loss (Ruff et al. 2020, Eq. 4) from squared distances to c."""
    labelled = eta * (dist + eps) ** roles.to(dist.dtype)
    return torch.where(roles == 0, dist, labelled)


def init_center(features: torch.Tensor, min_abs: float = 0.1) -> torch.Tensor:
    """Mean feature vector, coordinates with |c_i| < min_abs moved to +-min_abs."""
    c = features.mean(0)
    small = c.abs() < min_abs
    c[small & (c < 0)] = -min_abs
    c[small & (c >= 0)] = min_abs
    return c


class _Center(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("c", torch.zeros(dim))


class DeepSAD(Method):
    """Deep SAD: a hypersphere around normal data; labelled anomalies pushed out."""

    name = "deep-sad"

    @dataclass
    class Params:
        rep_dim: int = 128
        eta: float = 1.0  # weight of the labelled items
        eps: float = 1e-6  # keeps the inverse distance of labelled anomalies finite
        center_min: float = 0.1  # the +-0.1 rule for the centre's coordinates
        epochs: int | None = None  # of the one-class objective; null: train.epochs
        pretrain_epochs: int = 20  # autoencoder pretraining; 0 skips it
        pretrain_lr: float = 1e-4
        pretrain_weight_decay: float = 0.5e-3

    def __init__(self, params, in_shape):
        super().__init__(params, in_shape)
        check_shape(self.name, self.in_shape)
        if params.epochs is not None and params.epochs < 1:
            raise OneclassError(f"method.{self.name}.epochs: must be >= 1 (or null: train.epochs), "
                                f"got {params.epochs}")
        channels, size, _ = self.in_shape
        self.net = self.add("net", Encoder(channels, size, params.rep_dim, bias=False))
        self.center = self.add("center", _Center(params.rep_dim))

    def training_items(self, train: PatchData) -> PatchData:
        return train

    def fit(self, train: PatchData, val: PatchData | None = None) -> None:
        p, trainer = self.params, self.prepare(val)
        train = self.training_items(train)
        if p.pretrain_epochs > 0:
            channels, size, _ = self.in_shape
            ae = self.add("ae", AutoEncoder(channels, size, p.rep_dim, bias=False))

            def reconstruction(batch):
                return ((ae(batch["x"]) - batch["x"]) ** 2).flatten(1).sum(1).mean()

            trainer.stage(trainer.spec("pretrain", ae.parameters(), lr=p.pretrain_lr,
                                       epochs=p.pretrain_epochs, weight_decay=p.pretrain_weight_decay),
                          train, reconstruction)
            # strict: every encoder weight must reach the one-class network
            self.net.load_state_dict(ae.encoder.state_dict(), strict=True)
            del self.modules["ae"]  # not part of the model

        def start():
            features = torch.from_numpy(self.map(self.net, train)).to(self.device)
            self.center.c.copy_(init_center(features, p.center_min))

        def objective(batch):
            dist = ((self.net(batch["x"]) - self.center.c) ** 2).sum(1)
            return deep_sad_loss(dist, batch["roles"], p.eta, p.eps).mean()

        epochs = {} if p.epochs is None else {"epochs": p.epochs}
        trainer.stage(trainer.spec("train", self.net.parameters(), **epochs), train, objective, on_start=start,
                      scorer=self._distance)

    def _distance(self, x: torch.Tensor) -> torch.Tensor:
        return ((self.net(x) - self.center.c) ** 2).sum(1)

    def score(self, data: PatchData) -> np.ndarray:
        return self.map(self._distance, data)

    def embed(self, data: PatchData) -> np.ndarray:
        return self.map(self.net, data)

    def explain(self, data: PatchData) -> np.ndarray:
        """The gradient map of the distance to c (oneclass.maps, DevNet's recipe)."""
        return gradient_maps(self, self._distance, data)


class DeepSVDD(DeepSAD):
    """Deep SVDD: the unsupervised one-class hypersphere (labelled anomalies unused)."""

    name = "deep-svdd"
    supervision = "unsupervised"

    @classmethod
    def ignored_params(cls) -> tuple[str, ...]:
        return ("eta", "eps")  # the labelled items' term

    def training_items(self, train: PatchData) -> PatchData:
        kept = train.subset(train.roles != LABELED_ANOMALY)
        kept.roles = np.zeros_like(kept.roles)
        return kept
