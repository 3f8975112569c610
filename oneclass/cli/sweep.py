"""``oneclass sweep``: a recipe's grid x seeds as run folders, by submitit's executors."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from oneclass.cli.common import SET
from oneclass.cli.console import err

FAILED_EXIT = 10  # + the number of failed runs


def sweep(
    recipe: Path = typer.Argument(..., help="A YAML recipe (see recipes/)."),
    grid: Optional[list[str]] = typer.Option(None, "--grid", "-g", metavar="SECTION.KEY=V1,V2",
                                             help="Values to sweep (repeatable: every combination)."),
    out: Path = typer.Option(..., "--out", "-o", help="The sweep folder: OUT/<key=value,...>/seed-S/ per run."),
    repeats: int = typer.Option(1, "--repeats", "-r", min=1, help="Seeds S, S+1, ..., S+R-1 of every point."),
    seed: Optional[int] = typer.Option(None, "--seed", help="The first seed. [default: the recipe's]"),
    executor: str = typer.Option("local", "--executor", "-e", help="local (processes here) or slurm "
                                 "(a job array, through submitit)."),
    jobs: Optional[int] = typer.Option(None, "--jobs", "-j", help="Local runs at a time. "
                                       "[default: the number of GPUs, or 1 on a CPU]"),
    slurm: Optional[list[str]] = typer.Option(None, "--slurm", metavar="KEY=VALUE",
                                              help="A Slurm setting (repeatable): partition, time (minutes), "
                                              "gpus_per_task, cpus_per_task, mem, array_parallelism, account, "
                                              "qos, constraint."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress and no table on stderr."),
    set_: Optional[list[str]] = SET,
) -> None:
    """Train every combination of --grid values, each with --repeats seeds.

    Each run is `oneclass train` of the recipe with the point's values into
    OUT/<key=value,...>/seed-S/; its log (the job's stdout and stderr) is beside it in
    seed-S.log/. Runs already complete are skipped and unfinished ones resumed from their
    checkpoint, so running the same command again finishes an interrupted or partly
    failed sweep. A failed run is reported with its log and does not stop the others. The
    sweep ends with the `oneclass evaluate` table of all its runs and prints their folders
    on stdout, one per line.
    """
    from oneclass.report import compare_methods, group, load_inputs
    from oneclass.sweep import sweep as run_sweep

    report = (lambda line: None) if quiet else (lambda line: err.print(line, highlight=False))
    try:
        outcome, folders = run_sweep(recipe, grid or [], set_ or [], repeats, out, executor, jobs, slurm or [],
                                     seed, report)
    except KeyboardInterrupt:
        print("oneclass: interrupted; the runs in progress were stopped, keeping their checkpoints; the same "
              "command goes on (complete runs are skipped, unfinished ones resumed)", file=sys.stderr)
        raise SystemExit(130) from None
    if folders and not quiet:
        from oneclass.cli.evaluate import print_tables

        results = load_inputs([str(f) for f in folders], name_variants=False)  # named by point below
        for r in results:  # a row per grid point (OUT/POINT/seed-S), not one over all of them
            if Path(r.name).parent.name != "base":
                r.method = f"{r.method} [{Path(r.name).parent.name}]"
        print_tables(results, [g.summary() for g in group(results)], compare_methods(results))
    for folder in folders:
        print(folder, flush=True)
    if outcome.failed:
        print(f"oneclass: {len(outcome.failed)} of {len(outcome.failed) + len(outcome.done) + len(outcome.skipped)} "
              f"runs failed:", file=sys.stderr)
        for run, reason in outcome.failed:
            print(f"  {run.folder}: {reason}", file=sys.stderr)
        raise typer.Exit(FAILED_EXIT + min(len(outcome.failed), 115))
