"""Every registered method passes ``check_method``; the check itself fails, naming the
check, on toy methods each broken in one way (so it cannot pass vacuously); the
protocol check a registry can run on plugins; loading leaves the global random state."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import nn

from oneclass import registry
from oneclass.data.items import LABELED_ANOMALY
from oneclass.data.items import PatchData
from oneclass.engine import Trainer, keep_global_rng
from oneclass.errors import OneclassError
from oneclass.methods.base import Method
from oneclass.protocol import check_method_class, method_class_problems
from oneclass.recipe import TrainSection
from oneclass.testing import check_method, easy_anomalies


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*has random weights:UserWarning")  # FAST trains backbones offline
@pytest.mark.parametrize("name", registry.methods.names())
def test_registered_method_passes_check_method(name):
    check_method(name)


# -- a toy method that passes, and its broken variants --------------------------------------


class _Centre(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("c", torch.zeros(()))


def _peak(x: torch.Tensor) -> torch.Tensor:
    return x.amax((1, 2, 3))


class Toy(Method):
    """Score: how far an item's brightest pixel is above the training items' mean one."""

    name = "toy"
    supervision = "unsupervised"

    @dataclass
    class Params:
        scale: float = 1.0

    def __init__(self, params, in_shape):
        super().__init__(params, in_shape)
        self.centre = self.add("centre", _Centre())

    def training_items(self, train: PatchData) -> PatchData:
        return train.subset(train.roles != LABELED_ANOMALY)

    def fit(self, train, val):
        self.centre.c.fill_(float(self.map(_peak, self.training_items(train)).mean()))

    def _score(self, x):
        return self.params.scale * (_peak(x) - self.centre.c)

    def score(self, data):
        return self.map(self._score, data)

    def embed(self, data):
        return self.map(lambda x: torch.stack([x.mean((1, 2, 3)), _peak(x)], 1), data)

    def explain(self, data):
        return self.map(lambda x: (x - self.centre.c).sum(1), data)


class Inverted(Toy):
    def _score(self, x):
        return self.centre.c - _peak(x)


class Unseeded(Toy):
    def fit(self, train, val):
        super().fit(train, val)
        self.centre.c += float(np.random.default_rng().normal(0, 1e-3))  # not drawn from the seed


class IgnoresLoad(Toy):
    def load_state_dict(self, state):
        pass


class DrawsWhenScoring(Toy):
    def _score(self, x):
        return super()._score(x) + 0 * torch.rand(())


class NoisyScores(Toy):
    def score(self, data):
        return super().score(data) + np.random.default_rng().normal(0, 1e-3, len(data)).astype(np.float32)


class BatchDependent(Toy):
    def _score(self, x):
        return _peak(x) - _peak(x).mean()


class ColumnScores(Toy):
    def score(self, data):
        return super().score(data)[:, None]


class IntegerScores(Toy):
    def score(self, data):
        return (super().score(data) * 1000).astype(np.int64)


class NaNScores(Toy):
    def score(self, data):
        scores = super().score(data)
        scores[0] = np.nan
        return scores


class UsesLabels(Toy):
    def training_items(self, train):
        return train


class SupervisedWithoutRefusal(Toy):
    supervision = "supervised"


class SemiRefusesGammaZero(Toy):
    supervision = "semi-supervised"

    def fit(self, train, val):
        if not (train.roles == LABELED_ANOMALY).any():
            raise OneclassError("method toy: needs labelled anomalies")
        super().fit(train, val)


class SupervisedVagueRefusal(SemiRefusesGammaZero):
    supervision = "supervised"

    def fit(self, train, val):
        if not (train.roles == LABELED_ANOMALY).any():
            raise OneclassError("bad data")
        super().fit(train, val)


class StateFromFit(Toy):
    def fit(self, train, val):
        super().fit(train, val)
        self.add("extra", _Centre())  # a fresh build has no such module


class FlatEmbedding(Toy):
    def embed(self, data):
        return super().embed(data)[:, 0]


class ChannelMaps(Toy):
    def explain(self, data):
        return super().explain(data)[:, None]


class NoParams(Toy):
    Params = None


BROKEN = [
    (Inverted, "scores (gamma 0)", "higher scores must mean more anomalous"),
    (Unseeded, "same seed, same scores", "differ by up to"),
    (IgnoresLoad, "save and reload", "reloaded method scores differently"),
    (DrawsWhenScoring, "global random state untouched by loading", "torch generator"),
    (NoisyScores, "scores (gamma 0)", "scoring twice gave different scores"),
    (BatchDependent, "scores (gamma 0)", "scored (alone|in reverse order) gets another score"),
    (ColumnScores, "scores (gamma 0)", r"shape \(48, 1\) for 48 items"),
    (IntegerScores, "scores (gamma 0)", "not float"),
    (NaNScores, "scores (gamma 0)", "1 of 48 scores are not finite"),
    (UsesLabels, "unsupervised: labels ignored", "must not use them"),
    (SupervisedWithoutRefusal, "supervised: refuses gamma 0", "must refuse with a OneclassError"),
    (SupervisedVagueRefusal, "supervised: refuses gamma 0", "does not name the method"),
    (SemiRefusesGammaZero, "fit (quick, gamma 0)", "OneclassError: method toy: needs labelled anomalies"),
    (StateFromFit, "save and reload", r"only trained: \['extra.c'\]"),
    (FlatEmbedding, "embed", r"expected \(48, d\)"),
    (ChannelMaps, "explain", r"expected \(48, 32, 32\)"),
    (NoParams, "protocol", "no `Params` dataclass"),
]


def test_the_toy_method_passes():
    measured = check_method(Toy)
    assert measured["auroc (gamma 0)"] == 1.0


@pytest.mark.parametrize("cls,check,detail", BROKEN, ids=[b[0].__name__ for b in BROKEN])
def test_check_method_names_the_failed_check(cls, check, detail):
    with pytest.raises(AssertionError) as info:
        check_method(cls)
    message = str(info.value)
    assert message.startswith(f"check_method('toy') failed [{check}"), message
    assert re.search(detail, message), message


def test_check_method_leaves_the_global_random_state_and_threads():
    random.seed(7)
    np.random.seed(7)
    torch.manual_seed(7)
    threads = torch.get_num_threads()
    before = random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state()
    check_method(Toy)
    assert random.getstate() == before[0] and np.array_equal(np.random.get_state()[1], before[1])
    assert torch.equal(torch.get_rng_state(), before[2]) and torch.get_num_threads() == threads


def test_easy_anomalies_are_deterministic_and_bright():
    images = easy_anomalies(10, 10, seed=3)
    assert images.shape == (20, 1, 32, 32) and images.dtype == np.uint8
    assert np.array_equal(images, easy_anomalies(10, 10, seed=3))
    assert images[:10].max() < 140 < images[10:].max((1, 2, 3)).min()


# -- the protocol check for plugins ------------------------------------------------------


def test_every_registered_method_class_meets_the_protocol():
    for name in registry.methods.names():
        assert method_class_problems(registry.methods.get(name), name) == [], name


class _NotAMethod:
    name = "not-a-method"
    supervision = "sometimes"

    def __init__(self, params):
        pass

    def fit(self, train, val):
        pass

    embed = 3


@pytest.mark.parametrize("obj,problem", [
    (_NotAMethod, "`supervision` is 'sometimes', not one of unsupervised, semi-supervised, supervised"),
    (_NotAMethod, "no `Params` dataclass"),
    (_NotAMethod, "no `score` method"),
    (_NotAMethod, "`embed` is neither None nor a method"),
    (_NotAMethod, "its constructor does not take (params, in_shape)"),
    (Toy, "its `name` is 'toy', registered as 'my-toy'"),
    (len, "not a class but builtin_function_or_method"),
])
def test_plugin_lacking_the_protocol_fails_in_one_line_naming_it(obj, problem):
    with pytest.raises(OneclassError) as info:
        check_method_class(obj, "method 'my-toy' (toy-plugin 1.0)", name="my-toy")
    message = str(info.value)
    assert message.startswith("method 'my-toy' (toy-plugin 1.0): not a oneclass method: ")
    assert problem in message and "\n" not in message


def test_a_class_with_required_params_fails_the_protocol():
    class Required(Toy):
        @dataclass
        class Params:
            size: int

    assert method_class_problems(Required) == ["`Params` fields without a default: size"]


# -- the engine's part in loading --------------------------------------------------------


def _states():
    return random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state()


def _same(a, b) -> bool:
    return a[0] == b[0] and np.array_equal(a[1], b[1]) and torch.equal(a[2], b[2])


def test_building_to_load_does_not_seed_but_a_trainer_does():
    from oneclass.methods.base import build

    train = TrainSection(device="cpu")
    torch.manual_seed(99)
    before = _states()
    first = build(Toy, Toy.Params(), (1, 8, 8), seed=3)
    assert _same(before, _states())
    again = build(Toy, Toy.Params(), (1, 8, 8), seed=3)
    assert all(torch.equal(first.state_dict()[k], again.state_dict()[k]) for k in first.state_dict())
    Trainer(train, seed=0)
    seeded = _states()
    torch.manual_seed(0)
    assert torch.equal(seeded[2], torch.get_rng_state())  # training runs seed as before


def test_keep_global_rng_puts_every_generator_back():
    before = _states()
    with keep_global_rng():
        random.random(), np.random.rand(), torch.rand(3)
        nn.Linear(4, 4)
    assert _same(before, _states())
    with pytest.raises(ValueError), keep_global_rng():
        torch.rand(3)
        raise ValueError
    assert _same(before, _states())


def test_loading_a_run_leaves_the_global_random_state(tmp_path):
    from oneclass.artifacts import RunFolder
    from oneclass.scoring import load_method
    from oneclass.training import save_model
    from oneclass.testing import build, fast_params

    cls = registry.methods.get("deep-sad")
    method = build(cls, fast_params(cls))
    save_model(tmp_path / "model.pt", cls.name, method.params, (1, 32, 32), method)
    recipe = {"seed": 0, "method": {"name": "deep-sad", "rep_dim": 16, "pretrain_epochs": 1},
              "train": {"device": "cpu"}}
    data = PatchData(easy_anomalies(4, 4), np.arange(8))
    random.seed(5)
    np.random.seed(5)
    torch.manual_seed(5)
    before = _states()
    loaded = load_method(RunFolder(tmp_path, recipe, {}, {}, {}), "cpu")
    scores = loaded.score(data)
    assert _same(before, _states())
    assert np.array_equal(scores, method.to("cpu").score(data))  # built on ONECLASS_CHECK_DEVICE
