"""benchmarks/patch_contrast.py: the patch statistics behind the docs' account of inverted
reconstruction scores, against hand-computed patches, and its report's r column."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "patch_contrast.py"
spec = importlib.util.spec_from_file_location("patch_contrast", SCRIPT)
contrast = importlib.util.module_from_spec(spec)
spec.loader.exec_module(contrast)


def test_statistics_of_a_flat_and_a_checkerboard_patch():
    flat = np.full((1, 1, 6, 6), 50, np.uint8)
    board = (np.indices((6, 6)).sum(axis=0) % 2 * 200).astype(np.uint8)[None, None]
    stats = contrast.patch_statistics(np.concatenate([flat, board]))
    assert stats["std"] == pytest.approx([0, 100])  # half 0, half 200
    assert stats["mean"] == pytest.approx([50, 100])
    # colour: a flat red patch has no contrast, however far apart the channels
    red = np.zeros((1, 3, 6, 6), np.uint8)
    red[:, 0] = 255
    assert contrast.patch_statistics(red)["std"] == pytest.approx([0])
    # every interior pixel differs from its four neighbours by 200: |4 * 200| = 800
    assert stats["laplacian"] == pytest.approx([0, 800])


def test_report_sets_a_methods_auroc_beside_each_statistic():
    rows = [{"dataset": "d", "protocol": "honest", "seed": s, "std": a, "laplacian": 0.5, "mean": 0.4 + s / 100}
            for s, a in enumerate([0.3, 0.4, 0.5])]
    grid = {("d", "honest", s, "ss-dcae", 0.2): a for s, a in enumerate([0.2, 0.4, 0.6])}
    grid[("d", "honest", 0, "ss-vae", 0.0)] = 0.9  # one run: no r
    table = contrast.report(rows, grid)
    assert "| d | honest | 0.400 ± 0.100 (3) [0.30, 0.50] |" in table
    ss_dcae = next(line for line in table.splitlines() if "ss-dcae" in line)
    # std's AUROC rises with the method's (r +1); the Laplacian's is constant (r undefined)
    assert ss_dcae == "| d | honest | ss-dcae | 0.2 | 0.400 (3) | +1.00 | – | +1.00 |"
    assert "ss-vae" not in table
