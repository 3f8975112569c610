"""ss-DCAE: a convolutional autoencoder scored by its reconstruction error, with
labelled anomalies pushed away by a bounded negative reconstruction term.

The DCAE baseline (c-ss-ms-gvae.txt Sec. 4, ref. [23]) minimises the squared
reconstruction error of the training items and scores a patch by the same error. Its
semi-supervised version is not given as an equation; a plain negated error on labelled
anomalies is unbounded (the decoder can blow it up without limit), so we hinge it, and
measure the hinge against the batch's own normal error so that it stays active whatever
the images' contrast (an absolute margin was above every error on the nanofibre images,
which silently turned the method into plain DCAE):

    normal / unlabelled:  e(x)                e(x) = mean over pixels of (x - D(E(x)))^2
    labelled anomaly:     eta * max(0, margin * e_ref - e(x))

with e_ref the mean error of the batch's unlabelled and labelled normal items (held
constant in the gradient). ``explain`` gives the per-pixel squared error (summed over
channels), so pixel-level AUROC applies.

The ss-VQ-VAE paper's ablation A2 (Sec. IV-D) calls its own loss without the dictionary
and commitment terms "equivalent to ss-DCAE": the reconstruction error, the anomalies'
negated, with eta weighing the normal items' and the anomalies' means. Ours differs in
two ways it does not need to be measured against: the plain batch mean (anomalies weigh
by their share of the batch, about gamma, not 1 - eta of a mean of their own) and a
difference hinge (pixel errors keep one scale, so the log ratio ss-VQ-VAE needs for its
latent distances is not needed here). It is the c-ss-ms-gVAE paper's DCAE baseline with
labels, as the benchmarks ran it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from oneclass.data.items import LABELED_ANOMALY
from oneclass.data.items import PatchData
from oneclass.methods.base import Method
from oneclass.methods.nets.lenet import AutoEncoder, check_shape


def hinged_reconstruction_loss(error: torch.Tensor, roles: torch.Tensor, eta: float,
                               margin: float) -> torch.Tensor:
    """Per-item loss from per-item reconstruction errors ``error``."""
    anomalous = roles == LABELED_ANOMALY
    reference = error[~anomalous] if (~anomalous).any() else error
    pushed = eta * torch.clamp(margin * reference.detach().mean() - error, min=0)
    return torch.where(anomalous, pushed, error)


class SSDCAE(Method):
    """Semi-supervised deep convolutional autoencoder (reconstruction error score)."""

    name = "ss-dcae"

    @dataclass
    class Params:
        rep_dim: int = 128
        eta: float = 1.0  # weight of the labelled-anomaly term
        margin: float = 2.0  # anomalies' errors beyond margin x the normal error stop counting

    def __init__(self, params, in_shape):
        super().__init__(params, in_shape)
        check_shape(self.name, self.in_shape)
        channels, size, _ = self.in_shape
        self.ae = self.add("ae", AutoEncoder(channels, size, params.rep_dim, bias=True))

    def _pixel_errors(self, x: torch.Tensor) -> torch.Tensor:
        return ((self.ae(x) - x) ** 2).sum(1)

    def _error(self, x: torch.Tensor) -> torch.Tensor:
        return ((self.ae(x) - x) ** 2).flatten(1).mean(1)

    def fit(self, train: PatchData, val: PatchData | None = None) -> None:
        p, trainer = self.params, self.prepare(val)

        def objective(batch):
            return hinged_reconstruction_loss(self._error(batch["x"]), batch["roles"], p.eta,
                                              p.margin).mean()

        trainer.stage(trainer.spec("train", self.ae.parameters()), train, objective, scorer=self._error)

    def score(self, data: PatchData) -> np.ndarray:
        return self.map(self._error, data)

    def embed(self, data: PatchData) -> np.ndarray:
        return self.map(self.ae.encoder, data)

    def explain(self, data: PatchData) -> np.ndarray:
        return self.map(self._pixel_errors, data)
