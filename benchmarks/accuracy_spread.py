"""Where the AUROC spread across splits comes from, from accuracy.py's runs.csv files.

    python benchmarks/accuracy_spread.py RUNS.csv [NAME=RUNS.csv ...]
        [--dataset nanofibre] [--protocol honest] [--gamma 0.2] [--methods m1,m2,...]

Each file's rows are named by their method, or by NAME where given (a variant folder's
runs, e.g. ``gvae-ens5=benchmarks/results/accuracy-gpu/nano-honest-ens5/runs.csv``); a
name seen twice keeps the later file's rows. Only names with a row for every seed that
all of them share are used. Prints:

- the per-split best: for each split seed, the highest test AUROC any of the runs
  reached on it, and their mean. It is an oracle (the best is picked after seeing the
  test set, so it is biased upwards): a method that is to average above it on these
  splits has to beat every run on most of them.
- a two-way decomposition of the AUROCs of ``--methods`` (split seed x method, no
  replication): the std of the split means (how much the split moves every method
  alike), of the method means (how much the methods differ), and of the residual (each
  method's own luck on each split: training noise and split x method interaction).
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

import numpy as np


def read_named(specs: list[str], dataset: str, protocol: str, gamma: float) -> dict[str, dict[int, float]]:
    """{name: {seed: test AUROC}} of the rows that match; diverged runs (NaN) are left out."""
    table: dict[str, dict[int, float]] = {}
    for spec in specs:
        name, _, path = spec.rpartition("=")
        with open(Path(path), newline="") as fh:
            for row in csv.DictReader(fh):
                auroc = float(row["auroc"])
                if (row["dataset"], row["protocol"]) != (dataset, protocol) or float(row["gamma"]) != gamma:
                    continue
                if not math.isnan(auroc):
                    table.setdefault(name or row["method"], {})[int(row["seed"])] = auroc
    return table


def decompose(matrix: np.ndarray) -> tuple[float, float, float]:
    """Std of the column (split) effects, the row (method) effects and the residual of an
    additive two-way model fitted to ``matrix`` (methods x splits)."""
    grand = matrix.mean()
    splits = matrix.mean(0) - grand
    methods = matrix.mean(1) - grand
    residual = matrix - grand - splits[None] - methods[:, None]
    dof = (matrix.shape[0] - 1) * (matrix.shape[1] - 1)
    return float(splits.std(ddof=1)), float(methods.std(ddof=1)), float(np.sqrt((residual ** 2).sum() / dof))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="runs.csv, or NAME=runs.csv")
    parser.add_argument("--dataset", default="nanofibre")
    parser.add_argument("--protocol", default="honest")
    parser.add_argument("--gamma", type=float, default=0.2)
    parser.add_argument("--methods", default="c-ss-ms-gvae,binclass,devnet,ss-vae,ss-vq-vae",
                        help="the methods of the decomposition")
    args = parser.parse_args()
    table = read_named(args.runs, args.dataset, args.protocol, args.gamma)
    if not table:
        raise SystemExit(f"no rows for {args.dataset}, {args.protocol}, gamma {args.gamma:g} in the files given")
    seeds = sorted(set.intersection(*(set(runs) for runs in table.values())))
    if not seeds:
        raise SystemExit("no split seed is shared by every name: pass fewer files")
    names = sorted(table)
    matrix = np.array([[table[name][s] for s in seeds] for name in names])
    best = matrix.max(0)
    print(f"{args.dataset}, {args.protocol}, gamma {args.gamma:g}: {len(names)} runs x {len(seeds)} splits "
          f"(seeds {', '.join(map(str, seeds))})")
    print("per-split best: " + ", ".join(f"{seed} {value:.3f} ({names[i]})"
                                         for seed, value, i in zip(seeds, best, matrix.argmax(0))))
    print(f"per-split best, mean {best.mean():.3f} +- {best.std(ddof=1):.3f} (n = {len(seeds)})")
    chosen = [m for m in args.methods.split(",") if m in table]
    if missing := sorted(set(args.methods.split(",")) - set(chosen)):
        print(f"not in the files (left out of the decomposition): {', '.join(missing)}")
    if len(chosen) >= 2:
        split_std, method_std, residual_std = decompose(np.array([[table[m][s] for s in seeds] for m in chosen]))
        print(f"decomposition over {', '.join(chosen)}: split std {split_std:.3f}, method std {method_std:.3f}, "
              f"residual std {residual_std:.3f}")


if __name__ == "__main__":
    main()
