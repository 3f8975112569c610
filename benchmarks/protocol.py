"""Test AUROC (mean +- std over seeds) of methods x gamma on a recipe, training time per
run and training throughput. Every cell is a full `oneclass train` run.

    python benchmarks/protocol.py recipes/nanofibre.yaml --out bench-runs
        [--methods deep-svdd,deep-sad,ss-dcae,binclass] [--gammas 0,0.05,0.2] [--seeds 3]
        [--set train.epochs=10 ...]   (recipe overrides applied to every run)

Prints one line per run as it finishes, then the table; run folders stay under --out, so
`oneclass evaluate bench-runs/*/* --plot auc.png` redraws the figure.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("recipe")
    parser.add_argument("--out", default="bench-runs")
    parser.add_argument("--methods", default="deep-svdd,deep-sad,ss-dcae,binclass")
    parser.add_argument("--gammas", default="0,0.05,0.2")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    args = parser.parse_args()
    oneclass = str(Path(sys.executable).with_name("oneclass"))
    table: dict[tuple[str, float], list[float]] = {}
    speed: dict[str, list[float]] = {}
    seconds: dict[str, list[float]] = {}
    for method in args.methods.split(","):
        for gamma in map(float, args.gammas.split(",")):
            if method == "binclass" and gamma == 0:
                continue  # needs labelled anomalies
            out = Path(args.out) / f"{method}-gamma{gamma:g}"
            began = time.perf_counter()
            done = subprocess.run(
                [oneclass, "train", args.recipe, "--set", f"method.name={method}",
                 "--set", f"split.gamma={gamma}", "--repeats", str(args.seeds), "--out", str(out),
                 "--overwrite", "-q", *[a for o in args.overrides for a in ("--set", o)]],
                check=True, capture_output=True, text=True)
            for run in done.stdout.split():
                metrics = json.loads((Path(run) / "metrics.json").read_text())
                table.setdefault((method, gamma), []).append(metrics["test"]["auroc"])
                speed.setdefault(method, []).append(metrics["train"]["patches_per_s"])
                seconds.setdefault(method, []).append(metrics["train"]["seconds"])
            aucs = table[(method, gamma)]
            print(f"{method:13s} gamma {gamma:<5g} AUROC {np.mean(aucs):.3f} +- {np.std(aucs, ddof=1) if len(aucs) > 1 else 0:.3f} "
                  f"({time.perf_counter() - began:.0f} s for {len(aucs)} seeds)", flush=True)
    print("\nmethod         " + "  ".join(f"gamma {g:<13s}" for g in args.gammas.split(",")))
    for method in args.methods.split(","):
        cells = []
        for gamma in map(float, args.gammas.split(",")):
            aucs = table.get((method, gamma))
            cells.append(f"{np.mean(aucs):.3f} +- {np.std(aucs, ddof=1) if len(aucs) > 1 else 0:.3f}" if aucs else "n/a".ljust(15))
        print(f"{method:13s}  " + "  ".join(cells))
    print("\ntraining per run: seconds (mean, min-max over runs), patches/s (mean over epochs and runs)")
    for method, values in speed.items():
        took = seconds[method]
        print(f"  {method:13s} {np.mean(took):6.0f} s ({min(took):.0f}-{max(took):.0f})  {np.mean(values):6.0f} patches/s")


if __name__ == "__main__":
    main()
