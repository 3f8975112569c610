"""`torchrun --nproc_per_node=2 -m oneclass train` on the CPU (gloo): data-parallel
training that takes one process's steps, scores every item exactly once, writes one run
folder from rank 0, and resumes under another number of processes (oneclass.distributed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import one_error_line, oneclass
from oneclass import distributed
from oneclass import recipe as recipes
from oneclass.data.store import PatchStore
from oneclass.engine import _dealt
from oneclass.training import train_run

# The unsupervised VQ-VAE without codebook restarts, no batch norm: its loss is a mean
# over items, so two ranks' averaged gradients are one process's, and the runs agree to
# float rounding. (Losses that average within a role, or batch norm, see each rank's share
# only: they train alike but not to rounding; see test_the_demo_recipe_trains_under_torchrun_...)
VQ_RECIPE = """\
seed: 0
dataset: {name: synthetic, normal: 6, anomalous: 8, height: 128, width: 128}
patches: {size: 32, stride: 16}
split: {gamma: 0.2, contamination: 0.1, val_fraction: 0.2, test_fraction: 0.25}
method: {name: vq-vae, restart_below: 0, steps: 10, codes: 64, dim: 16, hidden: 32, residual_hidden: 16}
train: {epochs: 2, batch_size: 64, lr: 0.001, device: cpu}
"""

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # each case starts two training processes


def torchrun(*args, processes: int = 2, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           f"--nproc_per_node={processes}", "-m", "oneclass", *map(str, args)],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


@pytest.fixture
def vq_recipe(tmp_path) -> Path:
    path = tmp_path / "vq.yaml"
    path.write_text(VQ_RECIPE)
    return path


def _scores(run: Path, split: str) -> tuple[list[str], np.ndarray]:
    lines = (run / "scores" / f"{split}.csv").read_text().splitlines()[1:]
    return [line.rsplit(",", 1)[0] for line in lines], np.array([float(line.rsplit(",", 1)[1]) for line in lines])


def _epochs(run: Path) -> list[int]:
    return [json.loads(line)["epoch"] for line in (run / "log.jsonl").read_text().splitlines()]


def _agree(one: Path, two: Path) -> None:
    """Same rows in the same order, every item once; scores equal to 1e-3 of their range."""
    for split in ("val", "test"):
        rows_one, scores_one = _scores(one, split)
        rows_two, scores_two = _scores(two, split)
        assert rows_two == rows_one and len(set(rows_two)) == len(rows_two)
        assert np.abs(scores_two - scores_one).max() <= 1e-3 * np.ptp(scores_one), split


def test_two_processes_train_as_one(tiny, vq_recipe, tmp_path):
    one = tmp_path / "one"
    train_run(recipes.load(vq_recipe), one, store=PatchStore.open(tiny["store"]))
    two = tmp_path / "two"
    done = torchrun("train", vq_recipe, "--store", tiny["store"], "--out", two, "-q")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(two)  # one path, from rank 0
    _agree(one, two)
    data = json.loads((two / "data.json").read_text())
    metrics = json.loads((two / "metrics.json").read_text())
    assert metrics["test"]["n"] == len(data["members"]["test"]) and metrics["val"]["n"] == len(data["members"]["val"])
    assert metrics["train"]["processes"] == 2
    assert _epochs(two) == _epochs(one) == [1, 2, 3]  # rank 0's lines only (10 steps of 4 a epoch)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "two", "vq.yaml"]  # no rank's leftovers
    assert not (two / "checkpoint.pt").exists()


def test_a_run_cut_in_one_process_resumes_under_two(tiny, vq_recipe, tmp_path):
    """The checkpoint holds the plain modules and the batch order does not depend on N."""
    store = PatchStore.open(tiny["store"])
    config = recipes.load(vq_recipe)
    train_run(config, tmp_path / "whole", store=store)

    def interrupt(event):  # Ctrl-C in the second epoch
        if event.get("event") == "batch" and event["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_run(config, tmp_path / "cut", store=store, report=interrupt)
    done = torchrun("train", vq_recipe, "--store", tiny["store"], "--out", tmp_path / "cut", "--resume", "-q")
    assert done.returncode == 0, done.stderr
    _agree(tmp_path / "whole", tmp_path / "cut")
    assert _epochs(tmp_path / "cut") == [1, 2, 3]


def test_the_demo_recipe_trains_under_torchrun_as_in_one_process(tmp_path):
    """The bundled example (Deep SAD: batch norm in its network and a mean over each role
    in its loss, which each rank takes over its share; README, torchrun): the same items
    scored once each, test AUROC within 0.05 of one process's (benchmarks/sweep.py:
    0.016 apart on average over 3 seeds, where seeds are 0.095 apart). No --store: rank 0
    cuts the recipe's store into the cache while rank 1 waits for it."""
    recipe, cache = ROOT / "recipes/demo.yaml", {"ONECLASS_CACHE": str(tmp_path / "cache")}
    done = torchrun("train", recipe, "--out", tmp_path / "two", "-q", env=cache)
    assert done.returncode == 0, done.stderr
    assert len(list((tmp_path / "cache/stores").iterdir())) == 1
    one = subprocess.run([sys.executable, "-m", "oneclass", "train", recipe, "--out", tmp_path / "one", "-q"],
                         capture_output=True, text=True, timeout=300, env={**os.environ, **cache})
    assert one.returncode == 0, one.stderr
    for split in ("val", "test"):
        rows, _ = _scores(tmp_path / "two", split)
        assert rows == _scores(tmp_path / "one", split)[0] and len(set(rows)) == len(rows)
    aurocs = [json.loads((tmp_path / run / "metrics.json").read_text())["test"]["auroc"] for run in ("one", "two")]
    assert abs(aurocs[0] - aurocs[1]) <= 0.05 and min(aurocs) > 0.8, aurocs


def test_what_torchrun_cannot_do_is_refused_by_each_rank(tiny, tmp_path):
    recipe = tmp_path / "select.yaml"
    recipe.write_text(VQ_RECIPE + "select: {grid: {method.codes: [32, 64]}}\n")
    done = torchrun("train", recipe, "--store", tiny["store"], "--out", tmp_path / "run")
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if "error:" in line]
    assert sorted(line.split(":")[0] for line in lines) == ["oneclass", "oneclass[rank 1]"], done.stderr
    assert all("select.grid: not under torchrun" in line for line in lines)
    done = torchrun("train", tiny["recipe"], "--store", tiny["store"], "--out", tmp_path / "run",
                    "--device", "cuda:1")
    assert "'cuda:1' under torchrun" in done.stderr and done.returncode != 0
    assert not any(tmp_path.glob("run*"))


def test_ranks_that_cannot_see_rank_0s_cache_are_refused_before_any_cutting(vq_recipe, tmp_path):
    """Nodes with a cache folder each (ONECLASS_CACHE on a local disk): rank 1 would wait
    for a store that rank 0 cuts where rank 1 cannot see it. Here each rank is given its
    own folder, as two nodes would have."""
    launcher = tmp_path / "node.py"
    launcher.write_text("import os, runpy\n"
                        f"os.environ['ONECLASS_CACHE'] = os.path.join({str(tmp_path)!r}, 'node' + os.environ['RANK'])\n"
                        "runpy.run_module('oneclass', run_name='__main__', alter_sys=True)\n")
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           launcher, "train", vq_recipe, "--out", tmp_path / "run"],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if "error:" in line]
    assert sorted(line.split(":")[0] for line in lines) == ["oneclass", "oneclass[rank 1]"], done.stderr
    assert all("rank(s) 1 do not see what rank 0 writes there" in line for line in lines), lines
    assert list((tmp_path / "node0/stores").iterdir()) == []  # nothing cut, the marker removed
    assert not (tmp_path / "node1").exists() and not any(tmp_path.glob("run*"))
    done = torchrun("train", vq_recipe, "--out", tmp_path / "run", "-q",
                    env={"ONECLASS_CACHE": str(tmp_path / "shared")})  # one folder: rank 0 cuts, rank 1 reads
    assert done.returncode == 0, done.stderr
    assert [p.name.startswith("synthetic-") for p in (tmp_path / "shared/stores").iterdir()] == [True]


def test_world_size_without_torchrun_is_one_line(tiny, tmp_path):
    done = oneclass("train", tiny["recipe"], "--store", tiny["store"], "--out", tmp_path / "run",
                    env={"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": ""})
    one_error_line(done, 2, "WORLD_SIZE=2: cannot join the process group", "start with torchrun")
    assert list(tmp_path.iterdir()) == []


def test_batches_are_dealt_out_and_too_small_ones_left_out():
    batches = [np.arange(10), np.arange(10, 15), np.arange(15, 18)]
    assert [b.tolist() for b in _dealt(iter(batches), 0, 2)] == [[0, 2, 4, 6, 8], [10, 12, 14]]
    assert [b.tolist() for b in _dealt(iter(batches), 1, 2)] == [[1, 3, 5, 7, 9], [11, 13]]
    assert [b.tolist() for b in _dealt(iter(batches), 0, 1)] == [list(range(10)), list(range(10, 15)),
                                                                 list(range(15, 18))]


def test_inference_shares_cover_every_item_once(monkeypatch):
    for size in (1, 2, 3, 7):
        slices = []
        for rank in range(size):
            monkeypatch.setattr(distributed, "_GROUP", distributed.Group(rank, size, rank))
            slices.append(distributed.share(10))
        covered = np.concatenate([np.arange(10)[s] for s in slices])
        assert covered.tolist() == list(range(10))
        assert max(s.stop - s.start for s in slices) - min(s.stop - s.start for s in slices) <= 1
