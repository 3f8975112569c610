"""What a method is: a scikit-learn-like estimator with torch inside.

A method class declares its recipe parameters as a dataclass ``Params`` (checked like
recipe keys: ``method.<key>``), is constructed from (params, input shape, engine), and
implements ``fit(train, val)`` and ``score(data)`` (higher = more anomalous). It may
implement ``embed(data)`` (latent vectors, for t-SNE) and ``explain(data)`` (per-pixel
maps, for pixel-level AUROC). Its whole learned state lives in the modules it tracks
with the engine, so ``state_dict()`` is a flat mapping of tensors that loads with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from oneclass.engine import Engine, PatchData


class Method:
    name: ClassVar[str] = ""
    #: "unsupervised" methods ignore labelled anomalies; "supervised" ones need them
    supervision: ClassVar[str] = "semi-supervised"

    @dataclass
    class Params:
        pass

    def __init__(self, params: "Method.Params", in_shape: tuple[int, int, int], engine: Engine):
        self.params = params
        self.in_shape = tuple(in_shape)
        self.engine = engine

    def fit(self, train: PatchData, val: PatchData | None) -> None:
        raise NotImplementedError

    def score(self, data: PatchData) -> np.ndarray:
        raise NotImplementedError

    embed = None  # (data) -> (n, d) array, where a method has a latent space
    explain = None  # (data) -> (n, H, W) array, where a method draws anomaly maps

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {f"{name}.{key}": value for name, module in self.engine.modules.items()
                for key, value in module.state_dict().items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for name, module in self.engine.modules.items():
            prefix = f"{name}."
            module.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the items where ``mask`` holds; 0 (keeping the graph's dtype and device)
    when none does, so a batch without one kind of item adds nothing to a loss."""
    return values[mask].mean() if mask.any() else values.new_zeros(())
