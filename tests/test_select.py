"""The recipe's select: section (oneclass.select): every grid point scored on held-out
folds of the validation set, the best chosen and trained, test items never looked at;
mistakes refused before any work; a resumed run keeps its choice; dpa and deep-sad."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from conftest import one_error_line, oneclass
from oneclass import recipe as recipes
from oneclass import registry
from oneclass.data.items import LABELED_ANOMALY
from oneclass.data.store import PatchStore
from oneclass.data.splits import make_split
from oneclass.errors import OneclassError
from oneclass.methods.base import Method
from oneclass.select import make_folds
from oneclass.training import train_run

SELECT = """
select:
  grid: {GRID}
  folds: 2
"""


class SignToy(Method):
    """Score: ``sign`` x the item's mean brightness; records every row it scores."""

    name = "sign-toy"
    supervision = "unsupervised"
    scored: list[np.ndarray] = []

    @dataclass
    class Params:
        sign: float = 1.0
        unused: int = 0

    def __init__(self, params, in_shape):
        super().__init__(params, in_shape)
        self.add("lin", torch.nn.Linear(1, 1))

    def fit(self, train, val):
        self.training_rows = train.subset(train.roles != LABELED_ANOMALY).rows

    def score(self, data):
        SignToy.scored.append(np.asarray(data.rows).copy())
        return self.map(lambda x: self.params.sign * x.mean((1, 2, 3)), data)


@pytest.fixture
def sign_toy():
    registry.methods.add("sign-toy", "test_select:SignToy", "a toy for the selection tests")
    SignToy.scored = []
    yield SignToy
    del registry.methods._entries["sign-toy"]


def _recipe(tiny, tmp_path, method: str, grid: str, name: str = "r.yaml"):
    text = tiny["recipe"].read_text().replace(
        "method: {name: deep-sad, rep_dim: 16, deep-sad: {pretrain_epochs: 1}}", method)
    path = tmp_path / name
    path.write_text(text.replace("val_fraction: 0.2", "val_fraction: 0.4") + SELECT.replace("{GRID}", grid))
    return path


def test_selection_picks_the_best_held_out_point_and_never_scores_test_items(tiny, tmp_path, sign_toy):
    recipe = _recipe(tiny, tmp_path, "method: {name: sign-toy}", "{method.sign: [-1.0, 1.0], method.unused: [0, 1]}")
    config = recipes.load(recipe)
    store = PatchStore.open(tiny["store"])
    events = []
    train_run(config, tmp_path / "run", store=store, report=events.append)
    record = json.loads((tmp_path / "run/select.json").read_text())
    assert [p["values"] for p in record["points"]] == [
        {"method.sign": -1.0, "method.unused": 0}, {"method.sign": -1.0, "method.unused": 1},
        {"method.sign": 1.0, "method.unused": 0}, {"method.sign": 1.0, "method.unused": 1}]
    # recomputed by hand: the folds, and each point's AUROC on each held-out fold
    labels = store.labels.astype(np.int64)
    split = make_split(labels, [r["subclass"] for r in store.index], [r["source"] for r in store.index],
                       config.split, config.seed)
    val_labels = labels[split.val]
    folds = make_folds(val_labels, [store.index[int(r)]["source"] for r in split.val], 2, 0, "r")
    brightness = store.images[split.val].astype(np.float64).mean((1, 2, 3))
    for point in record["points"]:
        expected = [roc_auc_score(val_labels[f], point["values"]["method.sign"] * brightness[f]) for f in folds]
        np.testing.assert_allclose(point["folds"], expected, rtol=1e-5)
    means = [p["mean"] for p in record["points"]]
    assert means[0] == pytest.approx(1 - means[2])  # the constructed case: one sign is the better
    best = int(np.argmax(means))
    assert record["chosen"] == best and means[best] > 0.5  # the first of tied points
    assert record["values"] == record["points"][best]["values"]
    chosen = recipes.load(tmp_path / "run/recipe.yaml")
    assert chosen.method.params["sign"] == record["values"]["method.sign"]
    # selection scored the held-out validation folds only; then the run scored val and test
    during = SignToy.scored[:len(record["points"]) * 2]
    assert all(set(rows) <= set(split.val) for rows in during)
    assert sorted(np.concatenate(during[:2])) == sorted(split.val)
    assert [e["fold"] for e in events if e.get("event") == "select"] == [1, 2] * 4


@pytest.mark.parametrize("reads_validation", [False, True])
def test_a_fit_the_validation_set_decides_nothing_in_is_trained_once_for_every_fold(tiny, tmp_path, sign_toy,
                                                                                    monkeypatch, reads_validation):
    """The folds differ only in the validation items a fit may read: where it reads none
    (no kept epoch, no early stop, no choice of its own), every fold's fit is the same
    model, trained once (the DPA recipe trained 12 fits for 4 models). A fit that chooses
    by validation AUROC is trained once a fold, as before."""
    fits = []

    def fit(self, train, val):
        fits.append(len(val))
        if reads_validation:
            self.trainer.val_auroc(lambda x: x.mean((1, 2, 3)))

    monkeypatch.setattr(SignToy, "fit", fit)
    recipe = _recipe(tiny, tmp_path, "method: {name: sign-toy}", "{method.sign: [-1.0, 1.0]}")
    events = []
    train_run(recipes.load(recipe), tmp_path / "run", store=PatchStore.open(tiny["store"]), report=events.append)
    record = json.loads((tmp_path / "run/select.json").read_text())
    assert len(fits) == (2 * 2 if reads_validation else 2) + 1  # the selection's fits, then the run's
    assert all(len(p["folds"]) == 2 and None not in p["folds"] for p in record["points"])
    assert [e["fold"] for e in events if e.get("event") == "select"] == [1, 2] * 2


@pytest.mark.parametrize("grid,expect", [
    ("{method.sign: [1.0]}", ["select.grid has one point", "at least two values"]),
    ("{method.nope: [1, 2]}", ["select.grid: method.nope", "sign-toy has no parameter 'nope'", "sign, unused"]),
    ("{method.deep-sad.rep_dim: [8, 16]}", ["the run's method is sign-toy, not deep-sad"]),
    ("{patches.size: [16, 32]}", ["only method and train keys"]),
    ("{train.nope: [1, 2]}", ["train has no key 'nope'"]),
    ("{method.sign: 3}", ["expected a non-empty list"]),
    ("{method.sign: [1.0, abc]}", ["method.sign", "expected a number"]),
    ("{method.sign-toy.sign: [1.0, -1.0]}", ["the points sign=1.0 and sign=-1.0 train the same model",
                                             "a plain method.KEY in the recipe wins"]),
])
def test_bad_grids_are_refused_before_any_work(tiny, tmp_path, sign_toy, grid, expect):
    # a plain sign in the recipe: it wins over the block's (method.sign-toy.sign)
    config = recipes.load(_recipe(tiny, tmp_path, "method: {name: sign-toy, sign: 1.0}", grid))
    with pytest.raises(OneclassError) as caught:
        train_run(config, tmp_path / "run", store=PatchStore.open(tiny["store"]))
    message = str(caught.value)
    assert "\n" not in message and "select.grid" in message
    for text in expect:
        assert text in message, message
    assert not SignToy.scored and not (tmp_path / "run").exists() and not (tmp_path / "run.partial").exists()


def test_more_folds_than_validation_anomalies_say_how_many_there_are(tiny, tmp_path):
    recipe = _recipe(tiny, tmp_path, "method: {name: deep-sad, rep_dim: 16, deep-sad: {pretrain_epochs: 1}}",
                     "{method.rep_dim: [8, 16]}")
    done = oneclass("train", recipe, "--store", tiny["store"], "--out", tmp_path / "run", "-q",
                    "--set", "select.folds=9")
    line = one_error_line(done, 2, "select.folds: 9 folds need at least 9 validation labelled anomalies")
    assert "the validation set has" in line and "images)" in line
    assert not (tmp_path / "run").exists() and not (tmp_path / "run.partial").exists()
    done = oneclass("train", recipe, "--store", tiny["store"], "--out", tmp_path / "run", "-q",
                    "--set", "select.folds=1")
    one_error_line(done, 2, "select.folds: must be >= 2")


def _deep_sad_selection_run(tiny, tmp_path):
    """Deep SAD choosing rep_dim in {8, 16}, trained whole into tmp_path/whole: (recipe, store)."""
    recipe = _recipe(tiny, tmp_path, "method: {name: deep-sad, rep_dim: 16, deep-sad: {pretrain_epochs: 1}}",
                     "{method.rep_dim: [8, 16]}")
    config = recipes.load(recipe)
    store = PatchStore.open(tiny["store"])
    train_run(config, tmp_path / "whole", store=store)
    return config, store


@pytest.mark.slow
def test_select_for_deep_sad_then_resume_keeps_the_choice(tiny, tmp_path):
    config, store = _deep_sad_selection_run(tiny, tmp_path)

    def interrupt(event):  # Ctrl-C in the chosen point's own training, after the selection
        if event.get("event") == "batch" and not event["stage"].startswith("select") and event["stage"] == "train":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_run(config, tmp_path / "cut", store=store, report=interrupt)
    assert (tmp_path / "cut.partial/select.json").is_file()
    events = []
    train_run(config, tmp_path / "cut", store=store, resume=True, report=events.append)
    assert not [e for e in events if e.get("event") == "select"]  # read back, not run again
    for name in ("select.json", "scores/test.csv", "recipe.yaml"):
        assert (tmp_path / "cut" / name).read_text() == (tmp_path / "whole" / name).read_text()
    shown = oneclass("evaluate", tmp_path / "whole")
    assert shown.returncode == 0, shown.stderr
    assert "hyperparameter selection" in shown.stderr and "method.rep_dim" in shown.stderr


@pytest.mark.slow
def test_select_for_dpa(tiny, tmp_path):
    # one key (multi-key grids are the sign toy's test): each point is two dpa trainings
    recipe = _recipe(tiny, tmp_path, "method: {name: dpa, dpa: {weights: none, width: 4, latent: 4, batch_size: 32, "
                     "transition: 64, stable: 64}}", "{method.dpa.layer: [relu2_2, relu3_2]}")
    done = oneclass("train", recipe, "--store", tiny["store"], "--out", tmp_path / "run", "-q")
    assert done.returncode == 0, done.stderr
    record = json.loads((tmp_path / "run/select.json").read_text())
    assert len(record["points"]) == 2 and all(len(p["folds"]) == 2 for p in record["points"])
    chosen = record["values"]
    metrics = json.loads((tmp_path / "run/metrics.json").read_text())
    assert metrics["train"]["method"]["layers"]["32"] == chosen["method.dpa.layer"]
    shown = oneclass("evaluate", tmp_path / "run", "-q", "-f", "json")
    assert json.loads(shown.stdout)["selections"][str(tmp_path / "run")] == record


def test_a_train_key_the_method_overrides_is_refused(tiny, tmp_path):
    recipe = _recipe(tiny, tmp_path, "method: {name: dpa}", "{train.lr: [0.01, 0.001]}")
    with pytest.raises(OneclassError, match="dpa uses its own lr .method.dpa.lr: 0.001., not train.lr"):
        train_run(recipes.load(recipe), tmp_path / "run", store=PatchStore.open(tiny["store"]))


def test_a_grid_key_also_given_by_set_is_refused(tiny, tmp_path):
    """The grid's values would win over --set's without a word."""
    recipe = _recipe(tiny, tmp_path, "method: {name: deep-sad, rep_dim: 16, deep-sad: {pretrain_epochs: 1}}",
                     "{method.eta: [0.5, 2.0]}")
    done = oneclass("train", recipe, "--store", tiny["store"], "--out", tmp_path / "run",
                    "--set", "method.deep-sad.eta=3.0")
    one_error_line(done, 2, "select.grid method.eta: also set by --set 'method.deep-sad.eta=3.0'; drop one")
    assert not any(tmp_path.glob("run*"))


def test_a_damaged_selection_record_is_one_error_line(tiny, tmp_path, sign_toy):
    recipe = _recipe(tiny, tmp_path, "method: {name: sign-toy}", "{method.sign: [-1.0, 1.0]}")
    train_run(recipes.load(recipe), tmp_path / "run", store=PatchStore.open(tiny["store"]))
    (tmp_path / "run/log.jsonl").write_text("")  # the toy trains no stage, so logs none
    (tmp_path / "run/select.json").write_text("{}")
    done = oneclass("evaluate", tmp_path / "run")
    one_error_line(done, 2, "select.json: not a oneclass selection record")


def test_ctrl_c_after_the_selection_keeps_it_and_resume_trains_the_choice(tiny, tmp_path, sign_toy):
    config, store = _deep_sad_selection_run(tiny, tmp_path)

    def interrupt(event):  # the chosen point's first batch: no checkpoint yet
        if event.get("event") == "batch" and event["stage"] == "pretrain":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_run(config, tmp_path / "cut", store=store, report=interrupt)
    assert not (tmp_path / "cut.partial/checkpoint.pt").exists()
    assert (tmp_path / "cut.partial/select.json").is_file()
    events = []
    train_run(config, tmp_path / "cut", store=store, resume=True, report=events.append)
    assert not [e for e in events if e.get("event") == "select"]
    assert (tmp_path / "cut/scores/test.csv").read_text() == (tmp_path / "whole/scores/test.csv").read_text()


@pytest.mark.slow
def test_ctrl_c_during_the_selection_keeps_its_finished_fits_and_resume_fits_only_the_rest(tiny, tmp_path):
    config, store = _deep_sad_selection_run(tiny, tmp_path)
    fits = []

    def interrupt(event):  # Ctrl-C in the third of the four fits (two points x two folds)
        if event.get("event") == "select":
            fits.append(event)
        if event.get("event") == "batch" and len(fits) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_run(config, tmp_path / "cut", store=store, report=interrupt)
    assert len(json.loads((tmp_path / "cut.partial/select-progress.json").read_text())["fits"]) == 2
    assert not (tmp_path / "cut.partial/select.json").exists()
    events = []
    train_run(config, tmp_path / "cut", store=store, resume=True, report=events.append)
    assert len([e for e in events if e.get("event") == "select"]) == 2  # the other two fits alone
    for name in ("select.json", "scores/test.csv", "recipe.yaml"):
        assert (tmp_path / "cut" / name).read_text() == (tmp_path / "whole" / name).read_text()
    assert not (tmp_path / "cut/select-progress.json").exists()

    def first_fit(event):
        if event.get("event") == "batch":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_run(config, tmp_path / "early", store=store, report=first_fit)
    assert not (tmp_path / "early.partial").exists()  # not one fit finished: nothing to resume


def test_kept_fits_of_another_store_or_damaged_are_refused(tmp_path):
    from oneclass.select import _read_progress

    made = {"metric": "auroc", "fold_sizes": [5, 5], "store_hash": "a"}
    path = tmp_path / "select-progress.json"
    path.write_text(json.dumps({**made, "fits": {"k": 0.7, "j": None}}))
    assert _read_progress(path, made) == {"k": 0.7, "j": None}
    with pytest.raises(OneclassError, match="select-progress.json: kept with another patch store"):
        _read_progress(path, {**made, "store_hash": "b"})  # re-extracted since the fits were kept
    path.write_text(json.dumps({**made, "fits": {"k": "high"}}))
    with pytest.raises(OneclassError, match="select-progress.json: damaged"):
        _read_progress(path, made)
