"""Seed ensembles (``train.ensemble`` / ``--repeats R --ensemble``): one run folder whose
model is R members on one split, scored by their validation-standardised mean; it
resumes exactly, scores from its folder as a single model does, and refuses misuse."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import oneclass
from oneclass import api
from oneclass import recipe as recipes
from oneclass.data.store import PatchStore
from oneclass.ensemble import Ensemble
from oneclass.training import train_run

pytestmark = pytest.mark.slow  # trains


def test_members_are_standardised_on_validation_normals(tiny):
    config = recipes.load(tiny["recipe"], ["train.ensemble=3", "train.epochs=1"])
    store = PatchStore.open(tiny["store"])
    sets = api.split(store, config)
    method = api.method_from_recipe(config, store)
    assert isinstance(method, Ensemble) and len(method.members) == 3
    method.fit(sets.train, sets.val)
    normals = sets.val.subset(sets.val.labels == 0)
    raw = np.stack([member.score(normals) for member in method.members])
    assert len({tuple(r[:3]) for r in raw}) == 3  # three different members (seeds 0, 1, 2)
    z = (raw - raw.mean(1, keepdims=True)) / raw.std(1, keepdims=True)
    np.testing.assert_allclose(method.score(normals), z.mean(0), rtol=1e-4, atol=1e-5)
    assert abs(method.score(normals).mean()) < 1e-4  # centred on the validation normals
    test = method.score(sets.test)
    members = np.stack([(m.score(sets.test) - m_mean) / m_std for m, m_mean, m_std in
                        zip(method.members, raw.mean(1), raw.std(1))]).mean(0)
    np.testing.assert_allclose(test, members, rtol=1e-4, atol=1e-5)


def test_ensemble_run_folder_scores_and_resumes_exactly(tiny, tmp_path):
    done = oneclass("train", tiny["recipe"], "--store", tiny["store"], "--out", tmp_path / "ens",
                    "--repeats", "2", "--ensemble", "-q")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(tmp_path / "ens")]  # one run, not one per seed
    run = tmp_path / "ens"
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [(r["stage"], r["epoch"]) for r in log] == [
        ("m0/pretrain", 1), ("m0/train", 1), ("m0/train", 2), ("m1/pretrain", 1), ("m1/train", 1), ("m1/train", 2)]
    rescored = oneclass("score", run, tiny["store"], "--format", "csv")
    assert rescored.returncode == 0, rescored.stderr
    written = {line.split(",")[0]: line for line in (run / "scores/test.csv").read_text().splitlines()[1:]}
    again = {line.split(",")[0]: line for line in rescored.stdout.splitlines()[1:]}
    assert written and all(again[key] == row for key, row in written.items())

    config = recipes.load(tiny["recipe"], ["train.ensemble=2"])
    store = PatchStore.open(tiny["store"])

    def interrupt(event):  # Ctrl-C inside the second member's one-class training
        if event.get("event") == "batch" and event["stage"] == "m1/train" and event["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_run(config, tmp_path / "cut", store=store, report=interrupt)
    train_run(config, tmp_path / "cut", store=store, resume=True)
    assert (tmp_path / "cut/scores/test.csv").read_text() == (run / "scores/test.csv").read_text()


def test_ensemble_needs_repeats(tiny, tmp_path):
    done = oneclass("train", tiny["recipe"], "--store", tiny["store"], "--out", tmp_path / "e", "--ensemble")
    assert done.returncode == 2
    assert done.stderr.strip() == "oneclass: error: --ensemble: needs --repeats R with R >= 2 (the ensemble's members)"
    assert not (tmp_path / "e").exists()
