"""The types every layer shares: an item's ground truth, a training item's role, and a
set of items (rows of a patch store's image array).

Ground truth (``label``, ``subclass``) stays in the store's index; a method sees only
the roles of its training items and, for validation, the labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NORMAL = "good"  # the subclass of normal items (MVTec's name for them)

UNLABELED, LABELED_NORMAL, LABELED_ANOMALY = 0, 1, -1  # Deep SAD's semi-targets
ROLE_NAMES = {UNLABELED: "unlabeled", LABELED_NORMAL: "labeled_normal", LABELED_ANOMALY: "labeled_anomaly"}


@dataclass
class PatchData:
    """Rows of a patch store's image array; ``roles`` (training) or ``labels`` (validation)."""

    images: np.ndarray  # (N, C, H, W) uint8, usually a memmap
    rows: np.ndarray
    roles: np.ndarray | None = None
    labels: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def subset(self, keep: np.ndarray) -> "PatchData":
        pick = lambda a: None if a is None else a[keep]  # noqa: E731
        return PatchData(self.images, self.rows[keep], pick(self.roles), pick(self.labels))
