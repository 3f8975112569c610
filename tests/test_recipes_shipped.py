import json
import math
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


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_shipped_recipes_name_a_method_with_valid_parameters(path):
    from oneclass.runs import method_class

    config = recipes.load(path)
    if config.method.name:
        method_class(config)


@pytest.mark.parametrize("name,shorten", [
    ("nanofibre", ["split.train_size=300", "method.epochs={mean: 1, scale: 1, shape: 1, semi: 1, classifier: 1}"]),
    ("busi", ["split.train_size=100", "method.pretrain_epochs=1"]),
])
def test_real_data_recipes_train_end_to_end(name, shorten, tmp_path):
    """nanofibre trains c-ss-ms-gVAE through all five stages; busi Deep SAD."""
    if not SHARED_DATA.exists():
        pytest.skip(f"shared data {SHARED_DATA} not present (only in the team checkout and CI)")
    args = ["train", f"recipes/{name}.yaml", "--out", tmp_path / "run", "--set", "train.epochs=1"]
    for item in shorten:
        args += ["--set", item]
    env = {"ONECLASS_CACHE": str(tmp_path / "cache")}
    root = RECIPES[0].parent.parent
    first = oneclass(*args, env=env, cwd=root)
    assert first.returncode == 0, first.stderr
    assert "(extracted)" in first.stderr and (tmp_path / "run/metrics.json").is_file()
    epochs = [json.loads(line) for line in (tmp_path / "run/log.jsonl").read_text().splitlines()]
    assert all(math.isfinite(e["loss"]) for e in epochs if "loss" in e)
    if name == "nanofibre":
        assert [e["stage"] for e in epochs] == ["mean", "scale", "shape", "semi", "classifier"]
    scores = (tmp_path / "run/scores/test.csv").read_text()
    again = oneclass(*args, "--overwrite", env=env, cwd=root)
    assert again.returncode == 0 and "(cached)" in again.stderr
    assert (tmp_path / "run/scores/test.csv").read_text() == scores  # cached store, same seed
