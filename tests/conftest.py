from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared(subpath: str) -> Path:
    """A folder of ../shared/data, or skip: a fresh clone has no shared data (CI has it)."""
    path = SHARED_DATA / subpath
    if not path.exists():
        pytest.skip(f"shared data {path} not present (only in the team checkout and CI)")
    return path


def oneclass(*args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run the CLI as a user does: a separate process, stdout and stderr apart."""
    return subprocess.run([sys.executable, "-m", "oneclass", *map(str, args)], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, cwd=cwd, timeout=300)
