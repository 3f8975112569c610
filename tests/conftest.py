from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared(subpath: str) -> Path:
    """A folder of ../shared/data, or skip: a fresh clone has no shared data (CI has it)."""
    path = SHARED_DATA / subpath
    if not path.exists():
        pytest.skip(f"shared data {path} not present (only in the team checkout and CI)")
    return path


def oneclass(*args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run the CLI as a user does: a separate process, stdout and stderr apart."""
    return subprocess.run([sys.executable, "-m", "oneclass", *map(str, args)], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, cwd=cwd, timeout=300)


def sigint_as_at_a_terminal() -> None:
    """Popen's preexec_fn for the Ctrl-C tests: SIGINT's default action in the child, which
    a suite started in the background (``pytest &``) would otherwise pass on as ignored,
    so that Python would never raise KeyboardInterrupt there."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def one_error_line(result: subprocess.CompletedProcess, code: int = 2, *expect: str) -> str:
    """The refusal every user mistake gets: exit ``code``, one "oneclass: error:" line on
    stderr holding each of ``expect``, never the advice to load with weights_only=False;
    the line."""
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("oneclass: error: "), result.stderr
    for text in expect:
        assert text in lines[0], lines[0]
    assert "weights_only" not in result.stderr
    return lines[0]


def auroc_of_a_short_real_run(recipe: str, overrides: list[str]) -> float:
    """Train a shipped recipe (with ``overrides``, on the shared MNIST) on one CPU thread
    (two contend on CI's two cores) and return its test AUROC."""
    import warnings

    import torch

    from oneclass import api

    shared("mnist")
    config = api.load_recipe(recipe, ["dataset.root=" + str(SHARED_DATA / "mnist"), "train.device=cpu", *overrides])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        store = api.patch_store(config)
        sets = api.split(store, config)
        method = api.method_from_recipe(config, store)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. random VGG weights, chosen to stay offline
            method.fit(sets.train, sets.val)
        return api.auroc(sets.test, method.score(sets.test))
    finally:
        torch.set_num_threads(threads)


TINY_RECIPE = """\
seed: 0
dataset: {name: synthetic, normal: 6, anomalous: 8, height: 128, width: 128}
patches: {size: 32, stride: 16}
split: {gamma: 0.2, contamination: 0.1, val_fraction: 0.2, test_fraction: 0.25}
method: {name: deep-sad, rep_dim: 16, deep-sad: {pretrain_epochs: 1}}
train: {epochs: 2, batch_size: 64, lr: 0.001, device: cpu}
"""


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> dict:
    """A small synthetic patch store (32 x 32 patches) and a fast recipe for it."""
    from oneclass.data.datasets.synthetic import SyntheticDataset
    from oneclass.data.extract import ExtractParams, extract

    base = tmp_path_factory.mktemp("tiny")
    options = SyntheticDataset.Options(normal=6, anomalous=8, height=128, width=128)
    store, _ = extract(SyntheticDataset(None, options), ExtractParams(size=32, stride=16), base / "store")
    recipe = base / "tiny.yaml"
    recipe.write_text(TINY_RECIPE)
    return {"store": store, "recipe": recipe, "base": base}
