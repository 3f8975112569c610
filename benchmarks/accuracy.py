"""Test AUROC of methods x gamma x seeds on the shared data, under both split protocols:
the shipped recipes as they are, so the table is what a user gets from them.

    python benchmarks/accuracy.py --out benchmarks/results/accuracy
        [--datasets nanofibre,busi,leather] [--protocols honest,paper]
        [--methods c-ss-ms-gvae,deep-sad,...] [--gammas 0,0.05,0.1,0.2] [--seeds 10 | 7-9]
        [--jobs 2] [--threads 1] [--set KEY=VALUE ...]

Protocols: ``honest`` splits whole source images between training, validation and test
(``split.group_by: source``, the recipes' default); ``paper`` samples patches at random
(``group_by: none``: patches of one image in training and test), as the c-ss-ms-gVAE
paper's figures were made. Seed S draws both the split and the networks (a run with
``--seed S``), so the spread includes the split's.

Every finished cell is appended to OUT/runs.csv at once: a stopped benchmark goes on where
it stopped when started again with the same --out. A run that fails is said at once
(its cell and error) while the others go on; the command then exits non-zero, and
running it again retries only what is missing. When all cells are done (or with
--report-only), OUT/table.md gets mean ± sample std (n) per dataset, protocol, gamma and
method, and the paired Wilcoxon signed-rank p-value of c-ss-ms-gvae against each other
method (pairs: same dataset, protocol, gamma and seed), and OUT/auroc-vs-gamma.png the
figure the papers draw. Jobs run in separate processes of --threads torch threads each:
on 2 cores, 2 jobs of 1 thread train about twice as many runs an hour as 1 job of 2.

``--include RUNS.csv`` (repeatable) adds another results folder's runs to the report (the
grid's cells made on other machines, e.g. ``accuracy-gpu/*/runs.csv``): a run fills a
(dataset, protocol, gamma, method, seed) that OUT's own runs.csv and the files before it
lack, so the first to give a run wins. The table then names, per row, the folders its
runs came from in place of the seconds a run took (those were other machines'), and
OUT/merged.csv holds every run reported with its folder. Include only folders made from
the shipped recipes, not variants (``--set``), or the table stops being what a user gets.
"""

from __future__ import annotations

import argparse
import csv
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RECIPES = {"nanofibre": "recipes/nanofibre.yaml", "busi": "recipes/busi.yaml",
           "leather": "recipes/mvtec-leather.yaml"}
PROTOCOLS = {"honest": "split.group_by=source", "paper": "split.group_by=none"}
COLUMNS = ["dataset", "protocol", "gamma", "seed", "method", "auroc", "val_auroc", "seconds"]
REFERENCE = "c-ss-ms-gvae"
SUPERVISED = {"binclass", "devnet"}  # no run at gamma 0 (devnet refuses it: few-shot)


def seed_range(text: str) -> range:
    """``N``: seeds 0..N-1; ``A-B``: seeds A..B, both included."""
    first, dash, last = text.partition("-")
    try:
        seeds = range(int(first), int(last) + 1) if dash else range(int(first))
    except ValueError:
        seeds = range(0)
    if not seeds:
        raise argparse.ArgumentTypeError(f"{text!r}: give a count N or a range A-B of seeds")
    return seeds


def record_command(path: Path) -> None:
    """Append this command to OUT/command.txt (dated): runs.csv keeps every earlier
    command's rows, so the file keeps every command that made them."""
    line = shlex.join(["python", *sys.argv])
    earlier = path.read_text() if path.is_file() else ""
    if line not in earlier.splitlines():
        path.write_text(earlier + f"# {time.strftime('%Y-%m-%d')}\n{line}\n")


def run_cell(dataset: str, protocol: str, gamma: float, seed: int, method: str, overrides: list[str],
             threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    from oneclass import api

    cell = (dataset, protocol, gamma, seed, method)
    config = api.load_recipe(ROOT / RECIPES[dataset], [PROTOCOLS[protocol], f"split.gamma={gamma}",
                                                       f"method.name={method}", f"seed={seed}", *overrides])
    config.dataset.root = str((ROOT / config.dataset.root).resolve())
    store = api.patch_store(config)
    sets = api.split(store, config)
    from oneclass.engine import TrainingDiverged

    began = time.perf_counter()
    model = api.method_from_recipe(config, store)
    row = {"dataset": dataset, "protocol": protocol, "gamma": gamma, "seed": seed, "method": method}
    try:
        model.fit(sets.train, sets.val)
    except TrainingDiverged as exc:  # a result too: counted and shown, not averaged
        print(f"{cell}: {exc}", file=sys.stderr, flush=True)
        return {**row, "auroc": float("nan"), "val_auroc": float("nan"),
                "seconds": round(time.perf_counter() - began, 1)}
    seconds = time.perf_counter() - began
    if tuned := model.run_info().get("tuned"):  # what the gVAE's lambda grid chose (a list: ensemble members)
        print(f"{cell}: chose {tuned}", file=sys.stderr, flush=True)
    return {**row, "auroc": round(api.auroc(sets.test, model.score(sets.test)), 5),
            "val_auroc": round(api.auroc(sets.val, model.score(sets.val)), 5), "seconds": round(seconds, 1)}


def read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        return [{**{k: row[k] for k in COLUMNS}, "gamma": float(row["gamma"]), "seed": int(row["seed"]),
                 "auroc": float(row["auroc"]), "val_auroc": float(row["val_auroc"]),
                 "seconds": float(row["seconds"])} for row in csv.DictReader(fh)]


def cell_of(row: dict) -> tuple:
    return row["dataset"], row["protocol"], row["gamma"], row["seed"], row["method"]


def with_included(rows: list[dict], own: str, included: list[Path]) -> list[dict]:
    """``rows`` (from the folder ``own``) and, for cells they lack, the included files'
    runs, first file first; every row names its folder under "source"."""
    merged = [{**row, "source": own} for row in rows]
    seen = {cell_of(row) for row in rows}
    for path in included:
        if not path.is_file():
            sys.exit(f"accuracy.py: --include {path}: no such file")
        for row in read_rows(path):
            if cell_of(row) not in seen:
                seen.add(cell_of(row))
                merged.append({**row, "source": path.parent.name})
    return merged


def report(rows: list[dict], out: Path) -> str:
    """The table (markdown) of ``rows``; also draws the figure into ``out``."""
    from oneclass.metrics import wilcoxon as paired  # differences rounded: equal ones tie

    cells: dict[tuple, dict[str, dict[int, float]]] = {}
    for row in rows:
        key = (row["dataset"], row["protocol"], row["gamma"])
        cells.setdefault(key, {}).setdefault(row["method"], {})[row["seed"]] = row["auroc"]
    sourced = any("source" in row for row in rows)  # merged folders: their seconds are other machines'
    lines = ["| dataset | protocol | gamma | method | test AUROC mean ± std (n) | "
             f"p vs {REFERENCE} (pairs) | " + ("runs from |" if sourced else "train s/run |"),
             "|---|---|---|---|---|---|---|"]
    seconds, sources = {}, {}
    for row in rows:
        seconds.setdefault((row["dataset"], row["method"]), []).append(row["seconds"])
        sources.setdefault((row["dataset"], row["protocol"], row["gamma"], row["method"]), set()).add(
            row.get("source"))
    for key in sorted(cells):
        methods = cells[key]
        reference = methods.get(REFERENCE, {})
        for method in sorted(methods, key=lambda m: (m != REFERENCE, m)):
            runs = np.array(list(methods[method].values()))
            values = runs[np.isfinite(runs)]
            diverged = f", {len(runs) - len(values)} diverged" if len(values) < len(runs) else ""
            spread = f" ± {values.std(ddof=1):.3f}" if len(values) > 1 else ""
            test = ""
            pairs = sorted(s for s in set(reference) & set(methods[method])
                           if np.isfinite(reference[s]) and np.isfinite(methods[method][s]))
            if method != REFERENCE and len(pairs) >= 5:
                a = [reference[s] for s in pairs]
                b = [methods[method][s] for s in pairs]
                p = paired(a, b)["p"]
                p = 1.0 if p is None else p
                test = f"{p:.3g} ({len(pairs)})"
            mean = f"{values.mean():.3f}" if len(values) else "–"
            last = ", ".join(sorted(sources[(*key, method)])) if sourced \
                else f"{np.mean(seconds[(key[0], method)]):.0f}"
            lines.append(f"| {key[0]} | {key[1]} | {key[2]:g} | {method} | {mean}{spread} "
                         f"({len(values)}{diverged}) | {test} | {last} |")
    _figure(cells, out / "auroc-vs-gamma.png")
    return "\n".join(lines) + "\n"


def _figure(cells: dict, path: Path) -> None:
    """The toolkit's own AUROC-vs-gamma figure (a bar per method where there is one gamma),
    a panel per dataset and protocol."""
    from oneclass.plots import auc_vs_gamma

    groups = []
    for (dataset, protocol, gamma), methods in cells.items():
        for method, by_seed in methods.items():
            values = np.array([v for v in by_seed.values() if np.isfinite(v)])
            if not len(values):
                continue
            groups.append({"dataset": f"{dataset}, {protocol} split", "method": method, "gamma": gamma,
                           "n": len(values), "auroc_mean": float(values.mean()),
                           "auroc_std": float(values.std(ddof=1)) if len(values) > 1 else 0.0})
    auc_vs_gamma(groups, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="benchmarks/results/accuracy")
    parser.add_argument("--datasets", default="nanofibre,busi,leather")
    parser.add_argument("--protocols", default="honest,paper")
    parser.add_argument("--methods", default="c-ss-ms-gvae,deep-sad,ss-dcae,binclass,ss-vae,ss-vq-vae,devnet,ocsvm-hybrid,ssad-hybrid")
    parser.add_argument("--gammas", default="0,0.05,0.1,0.2")
    parser.add_argument("--seeds", type=seed_range, default=range(10),
                        help="N (seeds 0..N-1) or A-B (seeds A..B): one part of the grid per machine")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--include", action="append", default=[], type=Path,
                        help="another folder's runs.csv, for cells this one lacks (report only)")
    args = parser.parse_args()
    # this checkout's oneclass, not whichever one is installed (a copy of a commit run
    # beside a working tree that changes would otherwise train the working tree's code)
    sys.path.insert(0, str(ROOT))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table = out / "runs.csv"
    rows = read_rows(table)
    done = {(r["dataset"], r["protocol"], r["gamma"], r["seed"], r["method"]) for r in rows}
    cells = [(d, p, g, s, m) for d in args.datasets.split(",") for p in args.protocols.split(",")
             for g in map(float, args.gammas.split(",")) for s in args.seeds
             for m in args.methods.split(",") if not (m in SUPERVISED and g == 0)]
    todo = [c for c in cells if c not in done]
    if not args.report_only and todo:
        record_command(out / "command.txt")
        print(f"{len(todo)} of {len(cells)} runs to do, {args.jobs} jobs x {args.threads} threads", flush=True)
        from _runs import run_cells  # beside this script (imported here: the tests load this file alone)

        rows += run_cells(table, COLUMNS, args.jobs, run_cell, todo, (args.overrides, args.threads),
                          lambda row: " ".join(f"{k}={row[k]}" for k in COLUMNS))
    if args.include:
        rows = with_included(rows, out.name, args.include)
        record_command(out / "command.txt")
        with open(out / "merged.csv.tmp", "w", newline="") as fh:
            writer = csv.DictWriter(fh, [*COLUMNS, "source"])
            writer.writeheader()
            writer.writerows(rows)
        os.replace(out / "merged.csv.tmp", out / "merged.csv")
    if not rows:
        sys.exit(f"{table}: no runs to report")
    text = report(rows, out)
    (out / "table.md").write_text(text)
    print(text)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()
