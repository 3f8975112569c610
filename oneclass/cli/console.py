"""Human-facing output goes to stderr; stdout carries only requested data."""

import os
import shutil

from rich.console import Console

# batch logs (stderr not a terminal) get wide lines instead of rich's 80-column default
_width = None if os.isatty(2) else max(shutil.get_terminal_size((120, 24)).columns, 120)
err = Console(stderr=True, highlight=False, width=_width)
