"""Helpers shared by the recipe-reading subcommands."""

from __future__ import annotations

from pathlib import Path

import typer

from oneclass import recipe as recipes
from oneclass import registry

SET = typer.Option(None, "--set", metavar="SECTION.KEY=VALUE",
                   help="Override a recipe key (repeatable), e.g. --set patches.size=64.")


def make_dataset(recipe: recipes.Recipe):
    """The dataset plugin named by the recipe, with its options checked."""
    section = recipe.dataset
    cls = registry.datasets.get(section.name)
    options = recipes.check_options(cls.Options, section.options, recipe.source, "dataset.")
    root = Path(section.root).expanduser() if section.root else None
    return cls(root, options)
