"""Helpers shared by the recipe-reading subcommands."""

from __future__ import annotations

import typer

SET = typer.Option(None, "--set", metavar="SECTION.KEY=VALUE",
                   help="Override a recipe key (repeatable), e.g. --set patches.size=64.")
