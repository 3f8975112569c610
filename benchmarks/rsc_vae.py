"""RSC-VAE's three modes and Recode-VAE on MNIST one-vs-rest, digit by digit, beside the
paper's Table 1.

For each normal digit and seed, the four methods train on the same split of
recipes/rsc-vae-mnist.yaml (``rsc-vae-e`` with ``split.gamma`` 0.005 labelled anomalies,
the paper's ablation share; its test set is drawn before the training set, so it is the
same, which the script checks); test AUROC per digit (mean over seeds), the mean over
digits, and training / scoring images per second. The paper's figures come from 500
epochs and the epoch of best *test* AUROC; ours from ``--epochs`` and the last epoch.

    python benchmarks/rsc_vae.py --out benchmarks/results/rsc-vae            # 60 epochs, 1 seed
    python benchmarks/rsc_vae.py --epochs 20 --digits 0,1,2 --jobs 2         # quicker
    python benchmarks/rsc_vae.py --device cuda --jobs 1 --epochs 500 --seeds 3

Every finished cell is appended to OUT/runs.csv at once (a stopped benchmark goes on where
it stopped); OUT/table.md gets the table when all are done.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _runs import read_rows, run_cells  # noqa: E402 - beside this script

METHODS = ("recode-vae", "rsc-vae-o", "rsc-vae-d", "rsc-vae-e")
# Table 1 of the paper: Recode VAE, RSC-VAE_o, _d, _e per digit
PAPER = {0: (0.996, 0.999, 0.997, 0.999), 1: (0.999, 0.999, 0.999, 0.999), 2: (0.958, 0.972, 0.978, 0.999),
         3: (0.957, 0.942, 0.963, 0.999), 4: (0.972, 0.978, 0.984, 0.999), 5: (0.974, 0.982, 0.977, 0.999),
         6: (0.996, 0.998, 0.996, 0.999), 7: (0.970, 0.971, 0.983, 0.999), 8: (0.957, 0.941, 0.942, 0.998),
         9: (0.983, 0.981, 0.988, 0.998)}
COLUMNS = ["digit", "seed", "method", "auroc", "seconds", "train_images_per_s", "score_images_per_s", "test_hash"]


def run_cell(digit: int, seed: int, method: str, epochs: int, device: str, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    from oneclass import api
    from oneclass.engine import Trainer

    overrides = [f"dataset.normal_classes=[{digit}]", f"seed={seed}", f"method.name={method}",
                 f"method.{method}.epochs={epochs}", f"train.device={device}",
                 *(["split.gamma=0.005"] if method == "rsc-vae-e" else [])]
    config = api.load_recipe(ROOT / "recipes/rsc-vae-mnist.yaml", overrides)
    config.dataset.root = str((ROOT / config.dataset.root).resolve())
    store = api.patch_store(config)
    sets = api.split(store, config)
    model = api.method_from_recipe(config, store)
    records = []
    model.trainer = Trainer(config.train, config.seed, report=records.append)
    began = time.perf_counter()
    model.fit(sets.train)
    seconds = time.perf_counter() - began
    started = time.perf_counter()
    scores = model.score(sets.test)
    scoring = len(sets.test) / (time.perf_counter() - started)
    speed = [r["patches_per_s"] for r in records if "patches_per_s" in r]
    return {"digit": digit, "seed": seed, "method": method, "auroc": api.auroc(sets.test, scores),
            "seconds": round(seconds, 1), "train_images_per_s": round(float(np.median(speed)), 1),
            "score_images_per_s": round(scoring, 1),
            "test_hash": hashlib.sha1(np.asarray(sets.test.rows).tobytes()).hexdigest()[:10]}


def report(rows: list[dict]) -> str:
    digits = sorted({int(r["digit"]) for r in rows})
    header = " | ".join(f"{m} (paper)" for m in METHODS)
    lines = [f"| digit | {header} |", "|---" * (len(METHODS) + 1) + "|"]
    means: dict[str, list[float]] = {m: [] for m in METHODS}
    for d in digits:
        cells = []
        for j, m in enumerate(METHODS):
            values = [float(r["auroc"]) for r in rows if int(r["digit"]) == d and r["method"] == m]
            if values:
                means[m].append(float(np.mean(values)))
            cells.append(f"{np.mean(values):.3f}{_n(values)} ({PAPER[d][j]:.3f})" if values else "")
        lines.append(f"| {d} | " + " | ".join(cells) + " |")
    lines.append("| mean | " + " | ".join(
        f"{np.mean(means[m]):.3f} ± {np.std(means[m], ddof=1) if len(means[m]) > 1 else float('nan'):.3f} "
        f"(n={len(means[m])} digits) ({np.mean([PAPER[d][j] for d in digits]):.3f})" if means[m] else ""
        for j, m in enumerate(METHODS)) + " |")
    hashes = {}
    for r in rows:
        hashes.setdefault((r["digit"], r["seed"]), set()).add(r["test_hash"])
    same = all(len(h) == 1 for h in hashes.values())
    speed = {m: [float(r["train_images_per_s"]) for r in rows if r["method"] == m] for m in METHODS}
    scoring = {m: [float(r["score_images_per_s"]) for r in rows if r["method"] == m] for m in METHODS}
    lines += ["", f"Same test set for the four methods in every (digit, seed): {'yes' if same else 'NO'}.",
              "Median training / scoring images/s: " + "; ".join(
                  f"{m} {np.median(speed[m]):.0f} / {np.median(scoring[m]):.0f}" for m in METHODS if speed[m])]
    return "\n".join(lines) + "\n"


def _n(values: list[float]) -> str:
    return f" ± {np.std(values, ddof=1):.3f}" if len(values) > 1 else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/rsc-vae")
    parser.add_argument("--digits", default="0,1,2,3,4,5,6,7,8,9")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per job")
    args = parser.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    runs = args.out / "runs.csv"
    done = {(int(r["digit"]), int(r["seed"]), r["method"]) for r in read_rows(runs)}
    cells = [(int(d), s, m) for d in args.digits.split(",") for s in range(args.seeds)
             for m in args.methods.split(",") if (int(d), s, m) not in done]
    print(f"{len(cells)} runs to do ({len(done)} done), {args.epochs} epochs, on {args.device}, "
          f"{args.jobs} jobs x {args.threads} threads", flush=True)
    run_cells(runs, COLUMNS, args.jobs, run_cell, cells, (args.epochs, args.device, args.threads),
              lambda row: f"  digit {row['digit']} seed {row['seed']} {row['method']}: AUROC {row['auroc']:.3f} "
                          f"({row['seconds']:.0f} s, {row['train_images_per_s']} images/s)")
    table = report(read_rows(runs))
    (args.out / "table.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
