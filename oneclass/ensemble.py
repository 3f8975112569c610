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

A member whose loss becomes non-finite is dropped (logged, warned, named in metrics.json)
and the others go on: one diverging seed should not cost the R - 1 good ones. The model
keeps which members it scores with; a resumed run skips the members dropped before.
Only when every member diverges does training stop.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import torch
from torch import nn

from oneclass.data.items import LABELED_ANOMALY, PatchData
from oneclass.engine import TrainingDiverged
from oneclass.methods.base import Method, build


class _Standardisation(nn.Module):
    """Each member's score mean and standard deviation on validation normals, and
    whether it scores (False: it diverged in training)."""

    def __init__(self, members: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(members, dtype=torch.float64))
        self.register_buffer("std", torch.ones(members, dtype=torch.float64))
        self.register_buffer("alive", torch.ones(members, dtype=torch.bool))

    def _load_from_state_dict(self, state, prefix, *args, **kwargs):
        # model files written before members could be dropped score with every member
        state.setdefault(prefix + "alive", torch.ones_like(self.alive))
        super()._load_from_state_dict(state, prefix, *args, **kwargs)


def _reference(train: PatchData, val: PatchData | None) -> tuple[PatchData, bool]:
    """The normals a member's scores are standardised on: the validation set's, or where
    it holds fewer than two (no mean and spread to take), the training items not labelled
    anomalous; and whether they are the validation set's."""
    if val is not None and val.labels is not None and (val.labels == 0).sum() >= 2:
        return val.subset(val.labels == 0), True
    if train.roles is None:
        return train, False
    return train.subset(train.roles != LABELED_ANOMALY), False


class Ensemble(Method):
    """``members`` copies of ``cls`` from seeds seed, seed + 1, ...; scored by their mean z-score."""

    def __init__(self, cls: type[Method], params, in_shape, members: int, seed: int):
        self.seeds = [seed + k for k in range(members)]
        self.members = [build(cls, params, in_shape, member_seed) for member_seed in self.seeds]
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
        last = None
        for k, member in enumerate(self.members):
            member._trainer = trainer  # one trainer: one log, one checkpoint for all members
            if trainer.dropped_before(k):  # by the interrupted run this one resumes
                continue
            with trainer.member(k):
                try:
                    member.fit(train, val)
                except TrainingDiverged as error:
                    last = f"member {k}: {error}"
                    self._drop(trainer, k, "diverged", f": {error}")
        if len(trainer.dropped_members) == len(self.members):
            raise TrainingDiverged(f"every member of the ensemble diverged; {last}")
        alive = self.standardisation.alive
        alive.fill_(True)
        alive[trainer.dropped_members] = False
        reference, from_val = _reference(train, val)
        trainer.val_decides |= from_val  # the members are standardised on the validation normals
        for k in self._alive():
            scores = self.members[k].score(reference).astype(np.float64)
            if not np.isfinite(scores).all():  # e.g. float16 overflow: its loss stayed finite
                last = f"member {k}: non-finite scores on the {len(scores)} reference normals"
                self._drop(trainer, k, "scores normals NaN or infinite")
                alive[k] = False
                continue
            std = scores.std()
            self.standardisation.mean[k] = scores.mean()
            self.standardisation.std[k] = std if std > 0 else 1.0
        if not self._alive():
            raise TrainingDiverged(f"no member of the ensemble is left to score with; {last}")

    def snapshot(self) -> dict:
        """The modules of the member in training only (keep: best snapshots each better
        epoch; the other members' modules are not changing)."""
        k = self._trainer.training_member if self._trainer is not None else None
        if k is None:
            return super().snapshot()
        return {"modules": {f"m{k}.{name}": copy.deepcopy(module.state_dict())
                            for name, module in self.members[k].modules.items()}}

    def _drop(self, trainer, k: int, why: str, detail: str = "") -> None:
        """Leave member ``k`` out: logged, warned, and named in metrics.json (run_info)."""
        trainer.dropped_members.append(k)
        trainer.log({"stage": f"m{k}", "dropped": f"member {k} (seed {self.seeds[k]}) left the ensemble: "
                     f"{why}{detail}"})
        warnings.warn(f"ensemble member {k} (seed {self.seeds[k]}) {why} and is left out{detail}", stacklevel=3)

    def _alive(self) -> list[int]:
        return [k for k, alive in enumerate(self.standardisation.alive.tolist()) if alive]

    def run_info(self) -> dict:
        """The members' run_info where they agree; where they differ (each chose its own
        lambda or kernel width on validation), ``<key>`` lists the scoring members'
        values in ``ensemble_seeds`` order."""
        alive = self._alive()
        infos = [self.members[k].run_info() for k in alive]
        keys = list(dict.fromkeys(key for info in infos for key in info))
        first = infos[0]
        info = {key: first[key] for key in keys if all(key in i and i[key] == first[key] for i in infos)}
        differing = [key for key in keys if key not in info]
        info.update({key: [i.get(key) for i in infos] for key in differing})
        if differing:
            info["ensemble_seeds"] = [self.seeds[k] for k in alive]
        dropped = [k for k in range(len(self.members)) if k not in alive]
        if dropped:
            info["ensemble_dropped"] = [{"member": k, "seed": self.seeds[k]} for k in dropped]
        return info

    def score(self, data: PatchData) -> np.ndarray:
        mean, std = self.standardisation.mean.cpu().numpy(), self.standardisation.std.cpu().numpy()
        z = [(self.members[k].score(data) - mean[k]) / std[k] for k in self._alive()]
        return np.mean(z, axis=0).astype(np.float32)

    def explain(self, data: PatchData) -> np.ndarray:
        std = self.standardisation.std.cpu().numpy()
        maps = [self.members[k].explain(data) / std[k] for k in self._alive()]
        return np.mean(maps, axis=0).astype(np.float32)
