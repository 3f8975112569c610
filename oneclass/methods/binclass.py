"""BinClass: a fully supervised binary CNN (c-ss-ms-gvae.txt Sec. 4, baseline (vi)).

Labelled anomalies are the positive class; unlabelled and labelled normal items the
negative one. It cannot run without labelled anomalies (gamma = 0). The score is the
logit of the anomalous class. The papers train it on the imbalanced set as it comes
(which is why it degrades at small gamma); ``balance: true`` weights the positives by
the negatives-to-positives ratio instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from oneclass.data.items import LABELED_ANOMALY
from oneclass.data.items import PatchData
from oneclass.maps import gradient_maps
from oneclass.errors import OneclassError
from oneclass.methods.base import Method
from oneclass.methods.nets.lenet import Encoder, check_shape


class _Classifier(nn.Module):
    def __init__(self, channels: int, size: int, rep_dim: int):
        super().__init__()
        self.encoder = Encoder(channels, size, rep_dim, bias=True)
        self.head = nn.Linear(rep_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.leaky_relu(self.encoder(x), 0.01)).squeeze(1)


class BinClass(Method):
    """Supervised binary CNN classifier; needs labelled anomalies (gamma > 0)."""

    name = "binclass"
    supervision = "supervised"

    @dataclass
    class Params:
        rep_dim: int = 128
        balance: bool = False  # weight positives by #negatives / #positives

    def __init__(self, params, in_shape):
        super().__init__(params, in_shape)
        check_shape(self.name, self.in_shape)
        channels, size, _ = self.in_shape
        self.net = self.add("net", _Classifier(channels, size, params.rep_dim))

    def fit(self, train: PatchData, val: PatchData | None = None) -> None:
        positives = int((train.roles == LABELED_ANOMALY).sum())
        if positives == 0:
            raise OneclassError("method binclass: needs labelled anomalies; set split.gamma > 0")
        weight = (len(train) - positives) / positives if self.params.balance else 1.0
        trainer = self.prepare(val)  # puts the network on the training device
        pos_weight = torch.tensor(weight, device=self.device)

        def objective(batch):
            target = (batch["roles"] == LABELED_ANOMALY).float()
            return F.binary_cross_entropy_with_logits(self.net(batch["x"]), target,
                                                      pos_weight=pos_weight)

        trainer.stage(trainer.spec("train", self.net.parameters()), train, objective, scorer=self.net)

    def score(self, data: PatchData) -> np.ndarray:
        return self.map(self.net, data)

    def embed(self, data: PatchData) -> np.ndarray:
        return self.map(self.net.encoder, data)

    def explain(self, data: PatchData) -> np.ndarray:
        """The gradient map of the anomaly logit (oneclass.maps, DevNet's recipe)."""
        return gradient_maps(self, self.net, data)
