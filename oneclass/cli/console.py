"""Human-facing output goes to stderr; stdout carries only requested data."""

from rich.console import Console

err = Console(stderr=True, highlight=False)
