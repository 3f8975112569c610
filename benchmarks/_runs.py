"""What the benchmarks share: a resumable OUT/runs.csv filled by jobs in separate processes."""

from __future__ import annotations

import csv
import sys
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
              extra: tuple, describe: Callable[[dict], str]) -> list[dict]:
    """``fn(*cell, *extra)`` for every cell in ``jobs`` processes; each row is appended to
    ``path`` as soon as it is done (a stopped benchmark goes on where it stopped) and
    ``describe(row)`` printed; the rows. A cell that fails is said at once (the cell and
    its error) while the others go on; then the script exits non-zero, and running it
    again retries only the cells missing from ``path``."""
    rows, failed = [], 0
    with ProcessPoolExecutor(jobs) as pool:
        futures = {pool.submit(fn, *cell, *extra): cell for cell in cells}
        for future in as_completed(futures):
            try:
                row = future.result()
            except Exception as exc:
                failed += 1
                print(f"{futures[future]}: failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
                continue
            new = not path.is_file()
            with open(path, "a", newline="") as fh:
                writer = csv.DictWriter(fh, columns)
                if new:
                    writer.writeheader()
                writer.writerow(row)
            rows.append(row)
            print(describe(row), flush=True)
    if failed:
        sys.exit(f"{Path(sys.argv[0]).name}: {failed} of {len(cells)} runs failed (said above, each with its "
                 f"cell); the same command runs them again")
    return rows
