"""Sweep throughput: the wall time of one 4-run sweep with --jobs 1 against --jobs 2; and
data-parallel training: one run of the demo recipe in one process against torchrun's two.

    python benchmarks/sweep.py [--out /tmp/oneclass-sweep-bench] [--repeats 2] [--seeds 3]

The sweep is the demo recipe's 2 x 2 grid (split.gamma 0, 0.2 x method deep-sad, ss-dcae)
shortened to one epoch, through `oneclass sweep`'s local executor, as whole processes
(submitit's start-up included); each measurement starts from an empty sweep folder with
the patch store already cached. With --jobs N the sweep shares the cores out (torch
threads = cores / N per run). Best of --repeats, the two settings alternating.

The data-parallel part trains recipes/demo.yaml (Deep SAD) with seeds 0..--seeds-1, each
as `oneclass train` (one process, torch threads = cores) and as `torchrun
--nproc_per_node=2 -m oneclass train` (threads = cores / 2 each), alternating, and prints
training samples/s (metrics.json: mean over epochs), the whole command's wall time, and
the test AUROC of both, so that the change N = 2 makes is seen beside the change a seed
makes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GRID = ["--grid", "split.gamma=0,0.2", "--grid", "method.name=deep-sad,ss-dcae",
        "--set", "train.epochs=1", "--set", "method.deep-sad.pretrain_epochs=1"]


def sweep(out: Path, jobs: int) -> float:
    shutil.rmtree(out, ignore_errors=True)
    began = time.perf_counter()
    subprocess.run([sys.executable, "-m", "oneclass", "sweep", "recipes/demo.yaml", *GRID, "--out", str(out),
                    "--jobs", str(jobs), "-q"], check=True, cwd=ROOT, capture_output=True)
    return time.perf_counter() - began


def train(out: Path, seed: int, processes: int) -> tuple[dict, float]:
    """(metrics.json, wall seconds) of the demo recipe trained by ``processes`` processes."""
    shutil.rmtree(out, ignore_errors=True)
    threads = max(1, (os.cpu_count() or 1) // processes)
    launch = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"] \
        if processes > 1 else []
    began = time.perf_counter()
    subprocess.run([sys.executable, *launch, "-m", "oneclass", "train", "recipes/demo.yaml", "--seed", str(seed),
                    "--out", str(out), "-q"], check=True, cwd=ROOT, capture_output=True,
                   env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    return json.loads((out / "metrics.json").read_text()), time.perf_counter() - began


def data_parallel(out: Path, seeds: int) -> None:
    train(out / "warm", 0, 1)  # the patch store into the cache
    print("| seed | 1 process samples/s | 2 processes samples/s | ratio | 1 process s | 2 processes s "
          "| test AUROC 1 | test AUROC 2 |")
    print("|---|---|---|---|---|---|---|---|")
    rows = []
    for seed in range(seeds):
        (one, one_s), (two, two_s) = train(out / "n1", seed, 1), train(out / "n2", seed, 2)
        rates = one["train"]["patches_per_s"], two["train"]["patches_per_s"]
        aurocs = one["test"]["auroc"], two["test"]["auroc"]
        rows.append((*rates, one_s, two_s, *aurocs))
        print(f"| {seed} | {rates[0]:.0f} | {rates[1]:.0f} | {rates[1] / rates[0]:.2f} | {one_s:.1f} | {two_s:.1f} "
              f"| {aurocs[0]:.4f} | {aurocs[1]:.4f} |")
    import numpy as np

    a = np.array(rows)
    print(f"mean over {seeds} seeds: samples/s ratio {np.mean(a[:, 1] / a[:, 0]):.2f}; wall time ratio "
          f"{np.mean(a[:, 2] / a[:, 3]):.2f}; test AUROC 1 process {a[:, 4].mean():.4f} +- {a[:, 4].std(ddof=1):.4f}, "
          f"2 processes {a[:, 5].mean():.4f} +- {a[:, 5].std(ddof=1):.4f}, mean |difference| "
          f"{np.abs(a[:, 5] - a[:, 4]).mean():.4f} (n = {seeds})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/oneclass-sweep-bench"))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    data_parallel(args.out / "ddp", args.seeds)
    sweep(args.out / "warm", 1)  # the patch store into the cache
    best = {1: float("inf"), 2: float("inf")}
    for _ in range(args.repeats):
        for jobs in best:
            best[jobs] = min(best[jobs], sweep(args.out / f"jobs-{jobs}", jobs))
    print(f"sweeps: best of {args.repeats}")
    print("| sweep (4 runs) | --jobs 1 s | --jobs 2 s | jobs 1 / jobs 2 |")
    print("|---|---|---|---|")
    print(f"| demo 2 x 2, 1 epoch | {best[1]:.1f} | {best[2]:.1f} | {best[1] / best[2]:.2f} |")


if __name__ == "__main__":
    main()
