from pathlib import Path

import pytest

from conftest import SHARED_DATA, oneclass
from oneclass import recipe as recipes

RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.yaml"))


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_shipped_recipes_are_valid(path):
    recipes.load(path)


def test_demo_recipe_runs(tmp_path):
    result = oneclass("extract-patches", RECIPES[0].parent / "demo.yaml", "--out", tmp_path / "d")
    assert result.returncode == 0, result.stderr
    assert "patches of 24 sources" in result.stderr and result.stdout.strip() == str(tmp_path / "d")


def test_nanofibre_recipe_runs_from_the_project_root(tmp_path):
    if not SHARED_DATA.exists():
        pytest.skip(f"shared data {SHARED_DATA} not present (only in the team checkout and CI)")
    result = oneclass("extract-patches", "recipes/nanofibre.yaml", "--out", tmp_path / "n", "-q",
                      cwd=RECIPES[0].parent.parent)
    assert result.returncode == 0, result.stderr
