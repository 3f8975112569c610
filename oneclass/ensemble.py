"""Seed ensembles: one model of R members of one method (issue 15, stability).

Member k is the recipe's method with initial weights drawn from seed S + k, trained on
the same split (the split follows the run's seed S alone) by the run's one trainer: its
stages are logged and checkpointed as ``m<k>/<stage>``, so an interrupted ensemble
resumes like any run. After training, each member's scores on the validation set's
normal items give its mean and standard deviation; the ensemble's score is the mean of
the members' standardised scores (z-scores), so members whose scores live on different
scales weigh alike. ``explain`` averages the members' maps divided by each member's
score standard deviation, where the method draws maps.

A single seed can lose 0.17 validation AUROC against the next on the nanofibre images;
averaging R members trades R times the training for a steadier model.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from oneclass.data.items import LABELED_ANOMALY, PatchData
from oneclass.methods.base import Method, build


class _Standardisation(nn.Module):
    """Each member's score mean and standard deviation on validation normals."""

    def __init__(self, members: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(members, dtype=torch.float64))
        self.register_buffer("std", torch.ones(members, dtype=torch.float64))


class Ensemble(Method):
    """``members`` copies of ``cls`` from seeds seed, seed + 1, ...; scored by their mean z-score."""

    def __init__(self, cls: type[Method], params, in_shape, members: int, seed: int):
        self.members = [build(cls, params, in_shape, seed + k) for k in range(members)]
        super().__init__(params, in_shape)
        self.name, self.supervision = cls.name, cls.supervision
        self.standardisation = _Standardisation(members)
        self.embed = None  # members' latent spaces differ; nothing to average
        if cls.explain is None:
            self.explain = None

    @property
    def modules(self) -> dict[str, nn.Module]:
        """Every member's modules as ``m<k>.<name>``, live (members add and drop modules
        while they train), and the standardisation."""
        out = {f"m{k}.{name}": module for k, member in enumerate(self.members)
               for name, module in member.modules.items()}
        out["standardisation"] = self.standardisation
        return out

    @modules.setter
    def modules(self, value) -> None:  # Method.__init__ sets an empty dict; members hold them
        pass

    @property
    def infer_batch(self) -> int:
        return self.members[0].infer_batch

    @infer_batch.setter
    def infer_batch(self, value: int) -> None:  # the members score
        for member in self.members:
            member.infer_batch = value

    def to(self, device, amp: bool = False, channels_last: bool = False) -> "Ensemble":
        for member in self.members:
            member.to(device, amp, channels_last)
        self.standardisation.to(device)
        self.device, self.amp = torch.device(device), self.members[0].amp
        self.channels_last = channels_last
        return self

    def fit(self, train: PatchData, val: PatchData | None = None) -> None:
        trainer = self.prepare(val)
        for k, member in enumerate(self.members):
            member._trainer = trainer  # one trainer: one log, one checkpoint for all members
            with trainer.member(k):
                member.fit(train, val)
        if val is not None and val.labels is not None and (val.labels == 0).any():
            reference = val.subset(val.labels == 0)
        else:  # no validation normals: the training items not labelled anomalous
            reference = train.subset(train.roles != LABELED_ANOMALY)
        scores = np.stack([member.score(reference) for member in self.members]).astype(np.float64)
        std = scores.std(1)
        self.standardisation.mean.copy_(torch.from_numpy(scores.mean(1)))
        self.standardisation.std.copy_(torch.from_numpy(np.where(std > 0, std, 1.0)))

    def run_info(self) -> dict:
        return self.members[0].run_info()  # the members differ in their seeds only

    def _zscores(self, outputs: list[np.ndarray]) -> np.ndarray:
        mean, std = self.standardisation.mean.cpu().numpy(), self.standardisation.std.cpu().numpy()
        return np.mean([(out - m) / s for out, m, s in zip(outputs, mean, std)], axis=0)

    def score(self, data: PatchData) -> np.ndarray:
        return self._zscores([member.score(data) for member in self.members]).astype(np.float32)

    def explain(self, data: PatchData) -> np.ndarray:
        std = self.standardisation.std.cpu().numpy()
        maps = [member.explain(data) / s for member, s in zip(self.members, std)]
        return np.mean(maps, axis=0).astype(np.float32)
