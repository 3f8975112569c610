"""What the benchmarks share: a resumable OUT/runs.csv filled by jobs in separate processes."""

from __future__ import annotations

import csv
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Callable


def read_rows(path: Path) -> list[dict]:
    """The rows of ``path`` as strings; none when it does not exist yet."""
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def run_cells(path: Path, columns: list[str], jobs: int, fn: Callable[..., dict], cells: list[tuple],
              extra: tuple, describe: Callable[[dict], str]) -> None:
    """``fn(*cell, *extra)`` for every cell in ``jobs`` processes; each row is appended to
    ``path`` as soon as it is done (a stopped benchmark goes on where it stopped) and
    ``describe(row)`` printed."""
    with ProcessPoolExecutor(jobs) as pool:
        futures = [pool.submit(fn, *cell, *extra) for cell in cells]
        for future in as_completed(futures):
            row = future.result()
            new = not path.is_file()
            with open(path, "a", newline="") as fh:
                writer = csv.DictWriter(fh, columns)
                if new:
                    writer.writeheader()
                writer.writerow(row)
            print(describe(row), flush=True)
