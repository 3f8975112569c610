"""Seed ensembles (``train.ensemble`` / ``--repeats R --ensemble``): one run folder whose
model is R members on one split, scored by their validation-standardised mean; it
resumes exactly, scores from its folder as a single model does, and refuses misuse."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from conftest import oneclass
from oneclass import api
from oneclass import recipe as recipes
from oneclass.artifacts import open_run
from oneclass.data.store import PatchStore
from oneclass.ensemble import Ensemble
from oneclass.scoring import load_method
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


def _assert_rescored_alike(written: str, rescored: str) -> None:
    """Every written row again, its score equal up to float32 rounding: ``oneclass score``
    batches the whole store, training scored the test set alone, and CPU kernels (torch
    2.14's among them) may sum a batch of another size in another order."""
    rows = {line.split(",")[0]: line.rsplit(",", 1) for line in written.splitlines()[1:]}
    again = {line.split(",")[0]: line.rsplit(",", 1) for line in rescored.splitlines()[1:]}
    assert rows and all(again[key][0] == row[0] for key, row in rows.items())
    np.testing.assert_allclose([float(again[key][1]) for key in rows], [float(row[1]) for row in rows.values()],
                               rtol=1e-5, atol=1e-6)


def test_run_info_names_what_each_member_chose_where_they_differ(tiny):
    """Members that chose their own lambda or kernel width on validation are not reported
    as member 0's choice: a differing key lists every scoring member's value."""
    config = recipes.load(tiny["recipe"], ["train.ensemble=3"])
    method = api.method_from_recipe(config, PatchStore.open(tiny["store"]))
    for k, member in enumerate(method.members):
        member.run_info = lambda k=k: {"backbone": "resnet18", "tuned": {"lambda3": [0.1, 1.0, 0.1][k]}}
    assert method.run_info() == {"backbone": "resnet18", "tuned": [{"lambda3": 0.1}, {"lambda3": 1.0}, {"lambda3": 0.1}],
                                 "ensemble_seeds": [0, 1, 2]}
    method.standardisation.alive[1] = False  # a dropped member is neither listed nor a disagreement
    assert method.run_info() == {"backbone": "resnet18", "tuned": {"lambda3": 0.1},
                                 "ensemble_dropped": [{"member": 1, "seed": 1}]}


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
    _assert_rescored_alike((run / "scores/test.csv").read_text(), rescored.stdout)

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


def _diverging(seeds: set[int]):
    """``oneclass.ensemble.build`` whose members from ``seeds`` output NaN while training:
    their Deep SAD loss becomes NaN and the engine stops them as it stops any run."""
    from oneclass.methods.base import build

    def poisoned(cls, params, in_shape, seed=0, **kwargs):
        member = build(cls, params, in_shape, seed, **kwargs)
        if seed in seeds:
            member.net.register_forward_hook(lambda module, args, out: out * float("nan") if module.training else out)
        return member
    return poisoned


def test_a_diverging_member_is_left_out_and_the_run_resumes_without_it(tiny, tmp_path, monkeypatch):
    monkeypatch.setattr("oneclass.ensemble.build", _diverging({1}))
    config = recipes.load(tiny["recipe"], ["train.ensemble=3"])
    store = PatchStore.open(tiny["store"])
    with pytest.warns(UserWarning, match=r"ensemble member 1 \(seed 1\) diverged and is left out: stage m1/train"):
        run = train_run(config, tmp_path / "ens", store=store)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["train"]["method"]["ensemble_dropped"] == [{"member": 1, "seed": 1}], metrics
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in log if "dropped" in r] == ["m1"]
    assert [r["stage"] for r in log if "epoch" in r][-2:] == ["m2/train", "m2/train"]  # m2 trained after

    # the saved model scores with members 0 and 2, standardised on validation normals
    loaded = load_method(open_run(run), "cpu")
    assert loaded.standardisation.alive.tolist() == [True, False, True]
    sets = api.split(store, config)
    mean, std = loaded.standardisation.mean.numpy(), loaded.standardisation.std.numpy()
    by_hand = np.mean([(loaded.members[k].score(sets.test) - mean[k]) / std[k] for k in (0, 2)], axis=0)
    np.testing.assert_allclose(loaded.score(sets.test), by_hand, rtol=1e-5, atol=1e-6)
    rescored = oneclass("score", run, tiny["store"], "--format", "csv")  # the CLI reloads it alike
    assert rescored.returncode == 0, rescored.stderr
    _assert_rescored_alike((run / "scores/test.csv").read_text(), rescored.stdout)

    def interrupt(event):  # Ctrl-C in the third member, after the second was dropped
        if event.get("event") == "batch" and event["stage"] == "m2/train" and event["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt), pytest.warns(UserWarning):
        train_run(config, tmp_path / "cut", store=store, report=interrupt)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # m1 is not trained (nor dropped) again
        train_run(config, tmp_path / "cut", store=store, resume=True)
    resumed_log = [json.loads(line) for line in (tmp_path / "cut/log.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in resumed_log if "dropped" in r] == ["m1"]
    assert (tmp_path / "cut/scores/test.csv").read_text() == (run / "scores/test.csv").read_text()
    assert json.loads((tmp_path / "cut/metrics.json").read_text())["train"]["method"]["ensemble_dropped"] == [{"member": 1, "seed": 1}]


def test_an_ensemble_whose_members_all_diverge_stops_in_one_line(tiny, tmp_path, monkeypatch):
    from oneclass.engine import TrainingDiverged

    monkeypatch.setattr("oneclass.ensemble.build", _diverging({0, 1}))
    config = recipes.load(tiny["recipe"], ["train.ensemble=2"])
    with pytest.raises(TrainingDiverged) as caught, pytest.warns(UserWarning) as warned:
        train_run(config, tmp_path / "ens", store=PatchStore.open(tiny["store"]))
    assert [str(w.message).split(" diverged")[0] for w in warned] == [
        "ensemble member 0 (seed 0)", "ensemble member 1 (seed 1)"]
    assert str(caught.value).startswith("every member of the ensemble diverged; member 1: stage m1/train, epoch 1")
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "ens/model.pt").exists()


def test_a_member_scoring_normals_infinite_is_left_out(tiny, monkeypatch):
    """A member whose loss stayed finite but whose scores overflow (float16 under AMP)
    would make every ensemble score NaN; it is dropped as a diverged one is."""
    from oneclass.methods.base import build

    def overflowing(cls, params, in_shape, seed=0, **kwargs):
        member = build(cls, params, in_shape, seed, **kwargs)
        if seed == 1:
            fit = member.fit

            def fit_then_overflow(train, val=None):
                fit(train, val)
                member.score = lambda data: np.full(len(data), np.inf, np.float32)
            member.fit = fit_then_overflow
        return member

    monkeypatch.setattr("oneclass.ensemble.build", overflowing)
    config = recipes.load(tiny["recipe"], ["train.ensemble=3", "train.epochs=1"])
    store = PatchStore.open(tiny["store"])
    sets = api.split(store, config)
    method = api.method_from_recipe(config, store)
    with pytest.warns(UserWarning, match=r"ensemble member 1 \(seed 1\) scores normals NaN or infinite"):
        method.fit(sets.train, sets.val)
    assert method.standardisation.alive.tolist() == [True, False, True]
    assert np.isfinite(method.score(sets.test)).all()
    assert method.run_info()["ensemble_dropped"] == [{"member": 1, "seed": 1}]


def test_building_a_member_seeds_the_cpu_generator_alone(tiny, monkeypatch):
    """torch.manual_seed would queue each member's seed for a CUDA not yet initialised,
    and the last one queued (S + R - 1) would then seed the run's GPU draws."""
    import torch

    from oneclass.methods.base import build
    from oneclass.training import method_class

    cls, params = method_class(recipes.load(tiny["recipe"]))
    queued = []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", queued.append)
    monkeypatch.setattr(torch.cuda, "manual_seed", queued.append)
    torch.random.default_generator.manual_seed(123)
    member = build(cls, params, (1, 32, 32), seed=5)
    assert queued == []
    assert torch.random.default_generator.initial_seed() == 123  # the caller's state is back
    torch.random.default_generator.manual_seed(5)
    same = cls(params, (1, 32, 32))
    assert all(torch.equal(a, b) for a, b in zip(member.net.state_dict().values(), same.net.state_dict().values()))


def test_keeping_the_best_epoch_snapshots_only_the_member_in_training(tiny, monkeypatch):
    """keep: best copies the modules at each better epoch; the other members' do not
    change meanwhile, so copying them (R times the memory and checkpoint) bought nothing.
    The member restored from its own snapshot scores as from a copy of every module."""
    from oneclass.methods.base import Method

    config = recipes.load(tiny["recipe"], ["train.ensemble=2", "train.epochs=2", "train.keep=best",
                                           "method.deep-sad.pretrain_epochs=0"])
    store = PatchStore.open(tiny["store"])
    sets = api.split(store, config)
    taken = []
    snapshot = Ensemble.snapshot

    def recording(self):
        state = snapshot(self)
        taken.append(sorted({key.split(".")[0] for key in state["modules"]}))
        return state

    monkeypatch.setattr(Ensemble, "snapshot", recording)
    method = api.method_from_recipe(config, store)
    method.fit(sets.train, sets.val)
    assert taken and all(len(members) == 1 for members in taken) and {m[0] for m in taken} == {"m0", "m1"}
    monkeypatch.setattr(Ensemble, "snapshot", Method.snapshot)  # every module, as before
    every = api.method_from_recipe(config, store)
    every.fit(sets.train, sets.val)
    np.testing.assert_allclose(method.score(sets.test), every.score(sets.test), rtol=1e-6)
