"""Scoring throughput on the full nanofibre grid (128 px patches, stride 16, resized to 32):
`oneclass score` as a whole process, the scoring call alone, and a bare torch loop.

    python benchmarks/score.py [--out /tmp/oneclass-score-bench] [--repeats 3] [--threads 1]

For deep-sad and c-ss-ms-gvae (short training runs made once under OUT; speed does not
depend on what they learned), with --threads torch threads (1: per core):

- `oneclass score RUN STORE -o FILE`, whole process, three ways: as it comes (the code
  raises glibc's thresholds itself, oneclass.heap), with the thresholds raised in the
  environment instead (MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_: the code then
  leaves malloc alone), and with neither (ONECLASS_STEADY_HEAP=0: glibc as it comes);
  patches/s, minor page faults and system CPU seconds of each; the runs alternate and
  the best of --repeats is kept;
- `method.score(store)` in this process, patches/s;
- the ceiling: the same per-batch function the method scores with, in batches of the size
  score() chooses, in a bare loop over the whole store preloaded as one float tensor (no
  reading, no conversion, no copies).

Ratios are measured in one run of this script, on one machine: the table says which.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RECIPE = ROOT / "recipes/nanofibre.yaml"
RUNS = {
    "deep-sad": ["method.name=deep-sad", "method.deep-sad.epochs=1"],
    "c-ss-ms-gvae": ["method.name=c-ss-ms-gvae",
                     "method.c-ss-ms-gvae.epochs={mean: 1, scale: 1, shape: 1, semi: 1, classifier: 1}"],
}
SETTINGS = {"as it comes": {}, "env raised": {"MALLOC_MMAP_THRESHOLD_": str(1 << 30),
                                             "MALLOC_TRIM_THRESHOLD_": str(1 << 30)},
            "heap code off": {"ONECLASS_STEADY_HEAP": "0"}}


def oneclass(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "oneclass", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, cwd=ROOT, check=True)


def prepare(out: Path) -> tuple[Path, dict[str, Path]]:
    """The full-grid store and one short run per method, made once."""
    store = out / "store"
    if not (store / "meta.json").is_file():
        oneclass("extract-patches", str(RECIPE), "--set", "patches.stride=16", "--out", str(store), "-q")
    runs = {}
    for name, overrides in RUNS.items():
        runs[name] = out / name
        if not (runs[name] / "model.pt").is_file():
            sets = [x for o in [*overrides, "train.device=cpu", "train.epochs=1"] for x in ("--set", o)]
            oneclass("train", str(RECIPE), *sets, "--out", str(runs[name]), "-q")
    return store, runs


def whole_process(run: Path, store: Path, scores: Path, threads: int, env: dict) -> dict:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    oneclass("score", str(run), str(store), "-o", str(scores), "--device", "cpu",
             env={**env, "OMP_NUM_THREADS": str(threads)})
    wall = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"wall": wall, "faults": after.ru_minflt - before.ru_minflt, "sys": after.ru_stime - before.ru_stime}


def in_process(run: Path, store_path: Path, repeats: int) -> tuple[float, float, int]:
    """(score() patches/s, bare-loop patches/s, patches)."""
    import torch

    from oneclass.artifacts import open_run
    from oneclass.data.items import PatchData
    from oneclass.data.store import PatchStore
    from oneclass.methods.base import INFER_BATCH, PROBE_ITEMS, cpu_batch_size, largest_output
    from oneclass.scoring import load_method

    method = load_method(open_run(run), "cpu")
    store = PatchStore.open(store_path)
    data = PatchData(store.images, np.arange(len(store.images)))
    best_ours = best_bare = float("inf")
    captured = {}
    real_map = method.map
    method.map = lambda fn, d, batch_size=INFER_BATCH: captured.update(fn=fn) or np.zeros(len(d))
    method.score(data.subset(np.arange(2)))  # which function the method scores a batch with
    method.map = real_map
    for module in method.modules.values():
        module.eval()
    pixels = torch.from_numpy(np.array(store.images)).float().div_(255)
    with torch.inference_mode(), largest_output(method.modules.values()) as largest:
        captured["fn"](pixels[:PROBE_ITEMS])
    batch = cpu_batch_size(largest[0], PROBE_ITEMS, INFER_BATCH)  # as score() cuts
    for _ in range(repeats):
        began = time.perf_counter()
        method.score(data)
        best_ours = min(best_ours, time.perf_counter() - began)
        began = time.perf_counter()
        with torch.inference_mode():
            for start in range(0, len(pixels), batch):
                captured["fn"](pixels[start:start + batch])
        best_bare = min(best_bare, time.perf_counter() - began)
    n = len(data)
    return n / best_ours, n / best_bare, n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/oneclass-score-bench"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: per core)")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    store, runs = prepare(args.out)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; torch "
          f"{torch.__version__}, {args.threads} thread(s); best of {args.repeats}", flush=True)
    labels = list(SETTINGS)
    lines = ["| method | patches | " + " | ".join(f"`oneclass score` patches/s, {k}" for k in labels)
             + " | env raised / as it comes | minor faults (" + " / ".join(labels) + ") | sys s ("
             + " / ".join(labels) + ") | score() in process | bare loop (ceiling) | score() / ceiling |",
             "|---" * (len(labels) + 7) + "|"]
    for name, run in runs.items():
        best = dict.fromkeys(labels)
        for _ in range(args.repeats):
            for label, env in SETTINGS.items():
                got = whole_process(run, store, args.out / "scores.csv", args.threads, env)
                if best[label] is None or got["wall"] < best[label]["wall"]:
                    best[label] = got
        ours, bare, n = in_process(run, store, args.repeats)
        rate = {k: n / best[k]["wall"] for k in labels}
        lines.append(f"| {name} | {n} | " + " | ".join(f"{rate[k]:.0f}" for k in labels)
                     + f" | {rate['env raised'] / rate['as it comes']:.2f} | "
                     + " / ".join(str(best[k]["faults"]) for k in labels) + " | "
                     + " / ".join(f"{best[k]['sys']:.2f}" for k in labels)
                     + f" | {ours:.0f} | {bare:.0f} | {ours / bare:.2f} |")
        print(lines[-1], flush=True)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
