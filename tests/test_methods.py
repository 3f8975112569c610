"""Losses against hand computations, the Deep SVDD/SAD recipe details NOTES.md warns
about, separation of an easy anomaly set, the engine's guard and resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from oneclass.data.items import LABELED_ANOMALY, LABELED_NORMAL, UNLABELED
from oneclass.data.items import PatchData
from oneclass.engine import Stage, Trainer, TrainingDiverged
from oneclass.methods.base import Method
from oneclass.methods.deep_sad import DeepSAD, DeepSVDD, deep_sad_loss, init_center
from oneclass.methods.ss_dcae import hinged_reconstruction_loss
from oneclass.recipe import TrainSection


def test_deep_sad_loss_matches_hand_computation():
    dist = torch.tensor([4.0, 0.5, 2.0, 0.25])
    roles = torch.tensor([UNLABELED, LABELED_NORMAL, LABELED_ANOMALY, LABELED_ANOMALY])
    eta, eps = 2.0, 0.1
    expected = [4.0, 2.0 * (0.5 + 0.1), 2.0 / (2.0 + 0.1), 2.0 / (0.25 + 0.1)]
    assert deep_sad_loss(dist, roles, eta, eps).tolist() == pytest.approx(expected)


def test_center_rule_pushes_small_coordinates_to_a_tenth():
    features = torch.tensor([[0.02, -0.5, -0.04, 0.0], [0.04, -0.7, 0.0, 0.0]])
    assert init_center(features).tolist() == pytest.approx([0.1, -0.6, -0.1, 0.1])


def test_hinged_reconstruction_loss():
    error = torch.tensor([0.01, 0.03, 0.01, 0.2], requires_grad=True)
    roles = torch.tensor([UNLABELED, LABELED_NORMAL, LABELED_ANOMALY, LABELED_ANOMALY])
    loss = hinged_reconstruction_loss(error, roles, eta=2.0, margin=3.0)
    # normal reference 0.02: anomalies are pushed up to 3 x 0.02 = 0.06, then left alone
    assert loss.tolist() == pytest.approx([0.01, 0.03, 2.0 * (0.06 - 0.01), 0.0])
    loss.sum().backward()
    assert error.grad.tolist() == pytest.approx([1.0, 1.0, -2.0, 0.0])  # reference held constant


def easy_set(n_normal=240, n_anomalous=60, seed=0):
    """Normal: dim noisy texture. Anomalous: the same with a bright 10 x 10 square."""
    rng = np.random.default_rng(seed)
    images = rng.integers(40, 90, size=(n_normal + n_anomalous, 1, 32, 32)).astype(np.uint8)
    for i in range(n_normal, n_normal + n_anomalous):
        y, x = rng.integers(0, 22, size=2)
        images[i, 0, y:y + 10, x:x + 10] = 240
    labels = np.r_[np.zeros(n_normal, int), np.ones(n_anomalous, int)]
    return images, labels


def engine(epochs=3, **kw):
    return Trainer(TrainSection(epochs=epochs, batch_size=32, lr=1e-3, device="cpu", **kw), seed=0)


def make(cls, params, in_shape, trainer):
    """A method built after ``trainer`` seeded the global state, as ``oneclass train`` does."""
    method = cls(params, in_shape)
    method.trainer = trainer
    return method


def holding(module: torch.nn.Module, trainer: Trainer) -> torch.nn.Module:
    """``module`` as the one network of a bare method that ``trainer`` trains."""
    method = Method(None, (1, 4, 4))
    method.add("net", module)
    method.trainer = trainer
    return module


@pytest.mark.slow
def test_deep_sad_ranks_easy_anomalies_first_at_gamma_0_2():
    images, labels = easy_set()
    train_rows = np.r_[np.arange(0, 160), np.arange(240, 280)]  # 160 normal + 40 anomalous
    roles = np.where(labels[train_rows] == 1, LABELED_ANOMALY, UNLABELED).astype(np.int8)  # gamma 0.2
    eng = engine(epochs=4)
    method = make(DeepSAD, DeepSAD.Params(rep_dim=16, pretrain_epochs=2), (1, 32, 32), eng)
    method.fit(PatchData(images, train_rows, roles=roles), None)
    test_rows = np.r_[np.arange(160, 240), np.arange(280, 300)]
    from oneclass.metrics import auroc

    assert auroc(labels[test_rows], method.score(PatchData(images, test_rows))) > 0.9


def test_deep_sad_network_is_bias_free_and_receives_the_pretrained_encoder():
    images, _ = easy_set(64, 0)
    eng = engine(epochs=0)
    method = make(DeepSAD, DeepSAD.Params(rep_dim=8, pretrain_epochs=1), (1, 32, 32), eng)
    assert not any("bias" in name for name, _ in method.net.named_parameters())
    assert all(not m.affine for m in method.net.modules() if isinstance(m, torch.nn.BatchNorm2d))
    before = {k: v.clone() for k, v in method.net.state_dict().items()}
    captured = {}
    real_stage = eng.stage

    def spy(spec, *args, **kw):
        real_stage(spec, *args, **kw)
        if spec.name == "pretrain":
            captured.update({k: v.clone() for k, v in eng.modules["ae"].encoder.state_dict().items()})

    eng.stage = spy
    method.fit(PatchData(images, np.arange(64), roles=np.zeros(64, np.int8)), None)
    after = method.net.state_dict()
    assert captured and set(captured) == set(after)
    assert all(torch.equal(captured[k], after[k]) for k in after)  # epochs=0: the encoder as pretrained
    assert any(not torch.equal(before[k], after[k]) for k in after)
    # the centre: Ruff's rule on the pretrained encoder's (eval-mode) features of the training items
    from oneclass.methods.deep_sad import init_center

    features = torch.from_numpy(method.embed(PatchData(images, np.arange(64))))
    torch.testing.assert_close(method.center.c.cpu(), init_center(features), rtol=1e-5, atol=1e-6)


def test_deep_sad_trains_its_own_epochs_from_random_weights_without_pretraining():
    images, _ = easy_set(64, 0)
    eng = engine(epochs=1)
    method = make(DeepSAD, DeepSAD.Params(rep_dim=8, pretrain_epochs=0, epochs=3), (1, 32, 32), eng)
    stages = []
    real_stage = eng.stage
    eng.stage = lambda spec, *args, **kw: stages.append((spec.name, spec.epochs)) or real_stage(spec, *args, **kw)
    method.fit(PatchData(images, np.arange(64), roles=np.zeros(64, np.int8)), None)
    assert stages == [("train", 3)] and "ae" not in method.modules  # train.epochs (1) overridden


def test_deep_svdd_leaves_labelled_anomalies_out():
    data = PatchData(np.zeros((4, 1, 32, 32), np.uint8), np.arange(4),
                     roles=np.array([UNLABELED, LABELED_ANOMALY, LABELED_NORMAL, UNLABELED], np.int8))
    method = make(DeepSVDD, DeepSVDD.Params(rep_dim=8), (1, 32, 32), engine())
    kept = method.training_items(data)
    assert kept.rows.tolist() == [0, 2, 3] and not kept.roles.any()


def test_non_finite_loss_stops_naming_the_epoch(tmp_path):
    eng = Trainer(TrainSection(epochs=3, batch_size=8, device="cpu"), seed=0, run_dir=tmp_path)
    net = holding(torch.nn.Linear(1, 1), eng)
    calls = []

    def loss(batch):
        calls.append(1)
        value = net(batch["x"].mean((1, 2, 3))[:, None]).mean()
        return value * float("nan") if len(calls) > 2 else value

    data = PatchData(np.zeros((16, 1, 4, 4), np.uint8), np.arange(16))
    with pytest.raises(TrainingDiverged, match=r"stage fit, epoch 2: the loss became nan.*last good checkpoint \(epoch 1\)"):
        eng.stage(Stage("fit", list(net.parameters()), 1e-3, 3), data, loss)
    assert (tmp_path / "checkpoint.pt").is_file()
    saved = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert saved["epoch"] == 1


@pytest.mark.parametrize("settings, stage_keep", [({"early_stopping": 2}, None), ({"keep": "best"}, None),
                                                  ({"keep": "last"}, "best")])  # a method's own choice wins
def test_early_stopping_and_keep_best_keep_the_best_validation_epoch(settings, stage_keep, tmp_path):
    images = np.r_[np.full((8, 1, 4, 4), 10, np.uint8), np.full((8, 1, 4, 4), 200, np.uint8)]
    val = PatchData(images, np.arange(16), labels=np.r_[np.zeros(8, int), np.ones(8, int)])
    eng = Trainer(TrainSection(epochs=6, batch_size=4, lr=0.1, device="cpu", **settings),
                  seed=0, run_dir=tmp_path, val=val)
    net = holding(torch.nn.Linear(1, 1), eng)
    with torch.no_grad():
        net.weight.fill_(1.0)
    weights = []

    def loss(batch):  # drives the weight negative: validation AUROC falls from 1 to 0
        return net(batch["x"].mean((1, 2, 3))[:, None]).mean()

    def scorer(x):
        weights.append(net.weight.item())
        return net(x.mean((1, 2, 3))[:, None]).squeeze(1)

    eng.stage(Stage("fit", list(net.parameters()), 0.1, 6, keep=stage_keep), val, loss, scorer=scorer)
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    epochs = [r for r in log if "loss" in r]
    assert log[-1] == {"stage": "fit", "kept_epoch": 1, "val_auroc": 1.0}
    assert eng.selected == {"fit": {"epoch": 1, "of": 6, "val_auroc": 1.0}}
    if "early_stopping" in settings:
        assert log[-2] == {"stage": "fit", "early_stop": 3, "best_epoch": 1, "val_auroc": 1.0}
        assert len(epochs) == 3  # epochs 1-3, then the stop
    else:
        assert len(epochs) == 6  # keep: best trains every epoch, then goes back
    assert net.weight.item() == pytest.approx(weights[0])  # epoch 1's weights are back


@pytest.mark.parametrize("settings, kept, trained", [({"early_stopping": 1}, 2, 3), ({"keep": "best"}, 4, 5)])
def test_monitoring_the_normals_score_keeps_its_lowest_epoch_whatever_the_anomalies_score(settings, kept, trained,
                                                                                        tmp_path):
    """train.monitor: normal_score (the perceptual-AE paper's stop on the holdout normals'
    loss): the epoch of lowest mean validation-normal score is kept, though at epoch 2
    every anomaly scores below every normal (validation AUROC 0)."""
    val = PatchData(np.r_[np.full((4, 1, 4, 4), 10, np.uint8), np.full((4, 1, 4, 4), 200, np.uint8)], np.arange(8),
                    labels=np.r_[np.zeros(4, int), np.ones(4, int)])
    eng = Trainer(TrainSection(epochs=5, batch_size=4, lr=0.1, device="cpu", monitor="normal_score", **settings),
                  seed=0, run_dir=tmp_path, val=val)
    net = holding(torch.nn.Linear(1, 1), eng)
    normal, anomalous = iter([0.5, 0.3, 0.4, 0.2, 0.25]), iter([1.0, 0.0, 1.0, 1.0, 1.0])
    weights = []

    def scorer(x):  # one batch holds the whole validation set
        weights.append(net.weight.item())
        return torch.where(x.flatten(1).mean(1) > 0.5, next(anomalous), next(normal))

    eng.stage(Stage("fit", list(net.parameters()), 0.1, 5), val,
              lambda batch: net(batch["x"].mean((1, 2, 3))[:, None]).mean(), scorer=scorer)
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    epochs = [r for r in log if "loss" in r]
    assert [r["val_normal_score"] for r in epochs] == pytest.approx([0.5, 0.3, 0.4, 0.2, 0.25][:trained])
    assert [r["val_auroc"] for r in epochs] == [1.0, 0.0, 1.0, 1.0, 1.0][:trained]  # logged, not deciding
    best = [0.5, 0.3, 0.4, 0.2][kept - 1]
    assert log[-1] == {"stage": "fit", "kept_epoch": kept, "val_normal_score": pytest.approx(best)}
    assert eng.selected == {"fit": {"epoch": kept, "of": 5, "val_normal_score": pytest.approx(best)}}
    if "early_stopping" in settings:
        assert log[-2] == {"stage": "fit", "early_stop": 3, "best_epoch": 2, "val_normal_score": pytest.approx(0.3)}
    assert len(epochs) == trained
    assert net.weight.item() == pytest.approx(weights[kept - 1])  # the kept epoch's weights are back


def _scripted_stage(tmp_path, aurocs, epochs, resume=False, stop_at=None, **settings):
    """A stage whose validation AUROC per epoch is ``aurocs``; ``stop_at``: a Ctrl-C when
    the log line holding that key is written. Returns the trainer, the log and the
    number of loss calls."""
    val = PatchData(np.r_[np.full((4, 1, 4, 4), 10, np.uint8), np.full((4, 1, 4, 4), 200, np.uint8)], np.arange(8),
                    labels=np.r_[np.zeros(4, int), np.ones(4, int)])
    eng = Trainer(TrainSection(epochs=epochs, batch_size=4, lr=0.1, device="cpu", **settings), seed=0,
                  run_dir=tmp_path, val=val, resume=resume)
    net = holding(torch.nn.Linear(1, 1), eng)
    log, calls = [], []
    scripted = iter(aurocs)
    eng._val_auroc = lambda scorer: next(scripted)  # what the stage logs and keeps by
    written = eng.log

    def log_line(record):
        if stop_at in record:
            raise KeyboardInterrupt
        log.append(record)
        written(record)

    def loss(batch):
        calls.append(1)
        return net(batch["x"].mean((1, 2, 3))[:, None]).mean()

    eng.log = log_line
    eng.stage(Stage("fit", list(net.parameters()), 0.1, epochs), val, loss,
              scorer=lambda x: net(x.mean((1, 2, 3))[:, None]).squeeze(1))
    return eng, log, len(calls)


@pytest.mark.parametrize("settings, aurocs, kept, trained", [
    ({"keep": "best"}, [float("nan"), 0.6, 0.8, 0.7], 3, 4),
    ({"early_stopping": 1}, [float("nan"), 0.6, 0.5, 0.9], 2, 3),
    ({"keep": "best"}, [float("nan")] * 3, 1, 3),  # nothing better: the first epoch stays
])
def test_an_epoch_without_a_validation_auroc_is_never_the_best(tmp_path, settings, aurocs, kept, trained):
    eng, log, _ = _scripted_stage(tmp_path, aurocs, len(aurocs), **settings)
    assert eng.selected["fit"]["epoch"] == kept
    assert sum("loss" in r for r in log) == trained


def test_a_run_stopped_early_resumes_stopped(tmp_path):
    """Ctrl-C after the stopping epoch's checkpoint (its lines, the stop's included, are
    written before it), before the kept epoch is logged: resuming trains no further
    epoch, keeps the same best epoch and logs the stop once."""
    with pytest.raises(KeyboardInterrupt):
        _scripted_stage(tmp_path, [0.9, 0.5, 0.95, 0.96], 4, stop_at="kept_epoch", early_stopping=1)
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["epoch"] == 2
    eng, log, calls = _scripted_stage(tmp_path, [], 4, resume=True, early_stopping=1)
    assert calls == 0 and eng.selected["fit"]["epoch"] == 1
    lines = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert sum("early_stop" in r for r in lines) == 1 and sum("kept_epoch" in r for r in lines) == 1


def test_a_method_keeping_its_last_epoch_overrides_train_keep_best(tmp_path):
    val = PatchData(np.r_[np.full((4, 1, 4, 4), 10, np.uint8), np.full((4, 1, 4, 4), 200, np.uint8)], np.arange(8),
                    labels=np.r_[np.zeros(4, int), np.ones(4, int)])
    eng = Trainer(TrainSection(epochs=3, batch_size=4, lr=0.1, device="cpu", keep="best"), seed=0,
                  run_dir=tmp_path, val=val)
    net = holding(torch.nn.Linear(1, 1), eng)
    eng.stage(Stage("fit", list(net.parameters()), 0.1, 3, keep="last"), val,
              lambda batch: net(batch["x"].mean((1, 2, 3))[:, None]).mean(),
              scorer=lambda x: net(x.mean((1, 2, 3))[:, None]).squeeze(1))
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert not any("kept_epoch" in r for r in log) and eng.selected == {}


def test_every_built_in_method_draws_maps():
    """Maps and pixel AUROC for every method (issue 12 item 3): the ones without a native
    map explain by the gradient of their score (oneclass.maps)."""
    from oneclass import registry

    missing = [name for name in registry.methods.names() if not callable(registry.methods.get(name).explain)]
    assert missing == []


def test_deep_sad_refuses_fewer_than_one_epoch_naming_the_key():
    from oneclass.errors import OneclassError

    with pytest.raises(OneclassError, match=r"^method.deep-sad.epochs: must be >= 1 \(or null: train.epochs\), got 0$"):
        DeepSAD(DeepSAD.Params(epochs=0), (1, 32, 32))
