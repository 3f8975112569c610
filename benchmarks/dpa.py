"""The deep perceptual autoencoder's speed, and its AUROC against a pixel-loss autoencoder.

1. Speed: training images/s in each growth phase (a whole step: resize and mix, the
   autoencoder, the VGG features of input and reconstruction, the loss, backward, Adam;
   read from the trainer's epoch records) and scoring images/s, from the first seed's run
   of each dataset.
2. Accuracy: test AUROC of ``dpa`` (relative-perceptual-L1) and ``ss-dcae`` without
   labelled anomalies (a plain convolutional autoencoder with the squared pixel error, the
   DCAE baseline) on the same split, seed by seed (each seed its own split and
   initialisation): mean +- sample std (n) and the paired difference. The paper's claim
   (its Table 4, rows 1-2) is that the perceptual loss beats pixel losses.

Datasets (shared data): ``mnist`` — recipes/dpa-mnist.yaml, digit 0 vs the others, whole
images at 32 px; ``nanofibre`` — recipes/nanofibre.yaml, 128 px patches resized to 32,
gamma 0 and no contamination (both methods are unsupervised here). The VGG weights are
random (``--weights none``, nothing downloaded) unless --weights imagenet or PATH.

    python benchmarks/dpa.py --out benchmarks/results/dpa          # CPU: ~35 min, 2 jobs
    python benchmarks/dpa.py --device cuda --jobs 1 --weights imagenet --seeds 5 \\
        --set method.dpa.transition=64000 --set method.dpa.stable=128000

Every finished cell is appended to OUT/runs.csv at once (a stopped benchmark goes on where
it stopped); OUT/table.md gets the summary when all are done.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _runs import read_rows, run_cells  # noqa: E402 - beside this script

DATASETS = {
    "mnist": ("recipes/dpa-mnist.yaml", []),
    "nanofibre": ("recipes/nanofibre.yaml", [
        "split.gamma=0", "split.contamination=0",
        # dpa's CPU settings of recipes/dpa-mnist.yaml
        "method.dpa={weights: none, latent: 16, width: 16, batch_size: 32, transition: 3200, stable: 6400}"]),
}
# the pixel-loss autoencoder: Deep SAD's 32 px LeNet autoencoder, 30 epochs at lr 1e-3
DCAE = ["method.ss-dcae={rep_dim: 32}", "train.epochs=30", "train.lr=1.0e-3", "train.batch_size=64"]
METHODS = ("dpa", "ss-dcae")
COLUMNS = ["dataset", "seed", "method", "auroc", "seconds", "train_items", "phases", "score_images_per_s"]


def run_cell(dataset: str, seed: int, method: str, overrides: list[str], device: str, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    warnings.filterwarnings("ignore", message=".*random weights")
    from oneclass import api
    from oneclass.engine import Trainer

    recipe, extra = DATASETS[dataset]
    settings = [*extra, f"method.name={method}", f"seed={seed}", f"train.device={device}",
                *(DCAE if method == "ss-dcae" else []), *overrides]
    config = api.load_recipe(ROOT / recipe, settings)
    config.dataset.root = str((ROOT / config.dataset.root).resolve())
    store = api.patch_store(config)
    sets = api.split(store, config)
    model = api.method_from_recipe(config, store)
    records = []
    model.trainer = Trainer(config.train, config.seed, report=records.append)
    began = time.perf_counter()
    model.fit(sets.train)  # no validation set: neither method reads it without early stopping
    seconds = time.perf_counter() - began
    started = time.perf_counter()
    scores = model.score(sets.test)
    scoring = len(sets.test) / (time.perf_counter() - started)
    phases: dict[str, list[float]] = {}
    for record in records:
        if "patches_per_s" in record:
            phases.setdefault(record["stage"], []).append(record["patches_per_s"])
    return {"dataset": dataset, "seed": seed, "method": method, "auroc": api.auroc(sets.test, scores),
            "seconds": round(seconds, 1), "train_items": len(sets.train),
            "phases": " ".join(f"{stage}:{np.median(v):.0f}" for stage, v in phases.items()),
            "score_images_per_s": round(scoring, 1)}


def report(rows: list[dict]) -> str:
    lines = ["| dataset | dpa | ss-dcae (pixel L2) | dpa - ss-dcae, paired | dpa images/s per phase (seed 0) "
             "| scoring images/s (dpa, ss-dcae) |", "|---|---|---|---|---|---|"]
    for dataset in DATASETS:
        cells = {m: {int(r["seed"]): r for r in rows if r["dataset"] == dataset and r["method"] == m} for m in METHODS}
        if not all(cells.values()):
            continue
        seeds = sorted(set(cells["dpa"]) & set(cells["ss-dcae"]))
        values = {m: [float(cells[m][s]["auroc"]) for s in seeds] for m in METHODS}
        first = cells["dpa"][min(cells["dpa"])]
        lines.append(f"| {dataset} | {_summary(values['dpa'])} | {_summary(values['ss-dcae'])} | "
                     f"{_summary(list(np.subtract(values['dpa'], values['ss-dcae'])))} | {first['phases']} | "
                     f"{first['score_images_per_s']}, {cells['ss-dcae'][min(cells['ss-dcae'])]['score_images_per_s']} |")
    return "\n".join(lines) + "\n"


def _summary(values: list[float]) -> str:
    spread = np.std(values, ddof=1) if len(values) > 1 else float("nan")
    return f"{np.mean(values):.3f} ± {spread:.3f} (n={len(values)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/dpa")
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per job")
    parser.add_argument("--weights", default="none", help="dpa's VGG weights: none, imagenet or PATH")
    parser.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE")
    args = parser.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    runs = args.out / "runs.csv"
    done = {(r["dataset"], int(r["seed"]), r["method"]) for r in read_rows(runs)}
    cells = [(d, s, m) for d in args.datasets.split(",") for s in range(args.seeds) for m in METHODS
             if (d, s, m) not in done]
    overrides = [f"method.dpa.weights={args.weights}", *args.overrides]
    print(f"{len(cells)} runs to do ({len(done)} done) on {args.device}, {args.jobs} jobs x {args.threads} "
          f"threads; overrides: {' '.join(overrides)}", flush=True)
    run_cells(runs, COLUMNS, args.jobs, run_cell, cells, (overrides, args.device, args.threads),
              lambda row: f"  {row['dataset']} seed {row['seed']} {row['method']}: AUROC {row['auroc']:.3f} "
                          f"({row['seconds']:.0f} s; {row['phases']}; scoring {row['score_images_per_s']} images/s)")
    table = report(read_rows(runs))
    (args.out / "table.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
