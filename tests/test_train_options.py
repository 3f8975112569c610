"""train.prefetch, train.channels_last and train.compile: what each changes and what it
must not (the batches, the scores within float tolerance), and the refusals."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
import torch

from oneclass import api, compiled
from oneclass.data.store import PatchStore
from oneclass.engine import Trainer, _one_ahead
from oneclass.errors import OneclassError
from oneclass.recipe import TrainSection

from conftest import one_error_line, oneclass


def fit_tiny(tiny, *overrides: str):
    config = api.load_recipe(tiny["recipe"], list(overrides))
    store = PatchStore.open(tiny["store"])
    sets = api.split(store, config)
    method = api.method_from_recipe(config, store)
    method.trainer = Trainer(config.train, config.seed)
    method.fit(sets.train, sets.val)
    return method, sets


def test_reading_ahead_keeps_the_order_and_stops_with_the_caller():
    produced = []

    def items():
        for i in range(10):
            produced.append((i, threading.current_thread().name))
            yield {"i": i}

    ahead = _one_ahead(items())
    assert [next(ahead)["i"] for _ in range(3)] == [0, 1, 2]
    ahead.close()  # the caller leaves early: at most the one batch in flight was read
    assert len(produced) <= 4
    assert all(name.startswith("oneclass-batches") for _, name in produced)
    assert [item["i"] for item in _one_ahead(items())] == list(range(10))


def test_a_reading_error_reaches_the_training_loop():
    def items():
        yield {"i": 0}
        raise OSError("store unreadable")

    ahead = _one_ahead(items())
    assert next(ahead) == {"i": 0}
    with pytest.raises(OSError, match="store unreadable"):
        next(ahead)


def test_prefetching_trains_the_same_weights_bit_for_bit(tiny):
    eager, sets = fit_tiny(tiny, "train.prefetch=false")
    ahead, _ = fit_tiny(tiny, "train.prefetch=true")  # on the CPU too, when asked
    for key, value in eager.state_dict().items():
        assert torch.equal(value, ahead.state_dict()[key]), key
    assert np.array_equal(eager.score(sets.test), ahead.score(sets.test))


def test_channels_last_changes_the_memory_order_not_the_scores(tiny):
    method, sets = fit_tiny(tiny, "train.channels_last=true", "train.epochs=1")
    conv = next(m for m in method.net.modules() if isinstance(m, torch.nn.Conv2d) and m.in_channels > 1)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous()
    scores = method.score(sets.test)
    # the same weights in the usual order score the same, to float32 rounding
    method.to("cpu", channels_last=False)
    assert conv.weight.is_contiguous()
    plain = method.score(sets.test)
    assert np.allclose(scores, plain, rtol=1e-4, atol=1e-5 * np.abs(plain).max())
    added = method.add("extra", torch.nn.Conv2d(1, 2, 3))  # modules added later follow the method
    method.to("cpu", channels_last=True)
    assert added.weight.is_contiguous(memory_format=torch.channels_last)


def test_compile_refused_in_one_line_where_the_build_cannot(tiny, tmp_path):
    """A C++ compiler that is not there is what a CPU machine without one looks like to
    Inductor; the refusal comes before anything is written."""
    out = tmp_path / "run"
    result = oneclass("train", tiny["recipe"], "--store", tiny["store"], "--out", out,
                      "--set", "train.compile=true", env={"CXX": str(tmp_path / "no-such-c++")})
    one_error_line(result, 2, "train.compile: this torch build cannot compile on cpu",
                   "set train.compile: try")
    assert not out.exists() and not (tmp_path / "run.partial").exists()


def test_compile_try_falls_back_to_eager_and_says_why(tiny, monkeypatch):
    monkeypatch.setattr(compiled, "can_compile", lambda device: "InvalidCxxCompiler: No working C++ compiler")
    trainer = Trainer(TrainSection(device="cpu", compile="try"), seed=0)
    assert trainer.compile is False and "No working C++ compiler" in trainer.compile_skipped
    with pytest.raises(OneclassError, match="train.compile: this torch build cannot compile on cpu "
                                            r"\(InvalidCxxCompiler"):
        Trainer(TrainSection(device="cpu", compile=True), seed=0)
    assert Trainer(TrainSection(device="cpu"), seed=0).compile is False  # the default asks nothing


def test_a_failure_inside_a_compiled_stage_is_one_line(monkeypatch):
    from torch._dynamo.exc import TorchDynamoException

    class LoweringFailed(TorchDynamoException):  # as Inductor's errors are
        pass

    def failing_compile(fn, **options):
        def run(batch):
            raise LoweringFailed("cannot lower aten.foo\nand a long traceback")
        return run

    monkeypatch.setattr(torch, "compile", failing_compile)
    loss = compiled.compiled_loss(lambda batch: batch["x"].sum(), "semi")
    with pytest.raises(OneclassError, match=r"^stage semi: torch.compile failed .*set train.compile: false$"):
        loss({"x": torch.ones(2)})


def test_recipe_compile_values():
    assert api.load_recipe(None, ["train.compile=try"]).train.compile == "try"
    assert api.load_recipe(None, ["train.compile=true"]).train.compile is True
    with pytest.raises(OneclassError, match=r"train.compile: expected true or false or one of 'try'"):
        api.load_recipe(None, ["train.compile=yes-please"])


def test_compiled_training_scores_as_eager_does(tiny):
    """Inductor on the CPU (needs a C++ compiler: skipped where there is none). The same
    seed, batches and steps; Inductor fuses and reorders float operations, whose rounding
    the training steps carry on, so the models agree to a tolerance, not bit for bit: the
    compiled run must end far closer to the eager one than training moved either."""
    why = compiled.can_compile(torch.device("cpu"))
    if why is not None:
        pytest.skip(f"torch.compile cannot compile here: {why}")
    overrides = ["train.epochs=1", "method.deep-sad.pretrain_epochs=0"]
    eager, sets = fit_tiny(tiny, *overrides)
    fast, _ = fit_tiny(tiny, *overrides, "train.compile=true")
    assert fast.trainer.compile is True
    untrained = api.method_from_recipe(api.load_recipe(tiny["recipe"], overrides), PatchStore.open(tiny["store"]))
    untrained.center.c.copy_(eager.center.c)  # the centre is the mean of the initial features either way
    a, b, before = eager.score(sets.test), fast.score(sets.test), untrained.score(sets.test)
    moved, apart = np.abs(a - before).max(), np.abs(a - b).max()
    assert apart < 0.05 * moved, (apart, moved)


@pytest.mark.parametrize("name", ["c-ss-ms-gvae", "ss-vq-vae"])
def test_losses_of_their_own_operations_compile_to_the_eager_values(name):
    """Two families failed under torch.compile at first: the gVAE's Gamma draw (Inductor
    lays it out channels-last, and the operation's fake kernel disagrees with the real
    one) and the VQ codebook's restarts (an in-place write to a codebook autograd had
    kept). Compiled, the loss of their fullest stage and its gradients must be the eager
    ones on the same batch and random state, to float rounding. (Over many steps the
    rounding grows: benchmarks/train.py reports the score change after training.)"""
    from oneclass import registry
    from oneclass.data.items import LABELED_ANOMALY, UNLABELED
    from oneclass.methods.base import build
    from oneclass.testing import easy_anomalies, fast_params

    why = compiled.can_compile(torch.device("cpu"))
    if why is not None:
        pytest.skip(f"torch.compile cannot compile here: {why}")
    cls = registry.methods.get(name)
    method = build(cls, fast_params(cls, quick=True), (1, 32, 32), seed=0)
    batch = {"x": torch.from_numpy(easy_anomalies(12, 4)).float() / 255,
             "roles": torch.tensor([UNLABELED] * 12 + [LABELED_ANOMALY] * 4, dtype=torch.int8)}
    if name == "c-ss-ms-gvae":
        def loss_fn(b):  # every head, the Gamma draws, the hinge and the classifier
            return method.objective(b, method.mode("classifier"), semi=True)
    else:
        def loss_fn(b):
            method.codebook.usage.zero_()  # every code dead: restarted inside the loss
            return method.objective(b)
    params = [p for m in method.modules.values() for p in m.parameters()]
    results = []
    for fn in (loss_fn, compiled.compiled_loss(loss_fn, "check")):
        state = {k: v.clone() for k, v in method.state_dict().items()}
        torch.manual_seed(1)
        loss = fn(batch)
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        results.append((loss.detach(), [g if g is None else g.detach() for g in grads]))
        method.load_state_dict(state)  # the restarts wrote to the codebook's usage
        method._pending = None  # and chose codes to move at the next step
    (eager, eager_grads), (fast, fast_grads) = results
    assert torch.allclose(eager, fast, rtol=1e-4), (eager, fast)
    assert [g is None for g in eager_grads] == [g is None for g in fast_grads]
    a, b = (torch.cat([g.flatten() for g in grads if g is not None]) for grads in (eager_grads, fast_grads))
    # the whole gradient, relative: batch norm's reductions in another order leave ~1e-3 of
    # a layer's gradient (6.5e-4 of the whole measured for the gVAE), and the biases before
    # batch norm, whose true gradient is 0, hold rounding only
    assert float((a - b).norm() / a.norm()) < 5e-3


def test_metrics_say_whether_training_was_compiled(tiny, tmp_path, monkeypatch):
    out = tmp_path / "run"
    result = oneclass("train", tiny["recipe"], "--store", tiny["store"], "--out", out, "-q",
                      "--set", "train.compile=try", "--set", "train.epochs=1",
                      env={"CXX": str(tmp_path / "no-such-c++")})
    assert result.returncode == 0, result.stderr
    train = json.loads((out / "metrics.json").read_text())["train"]
    assert train["compiled"] is False and "C++ compiler" in train["compile_skipped"]


def test_prefetch_is_on_by_default_on_cuda_only():
    assert Trainer(TrainSection(device="cpu"), seed=0).prefetch is False  # "auto"
    assert Trainer(TrainSection(device="cpu", prefetch=True), seed=0).prefetch is True
    if torch.cuda.is_available():
        assert Trainer(TrainSection(device="cuda"), seed=0).prefetch is True
        assert Trainer(TrainSection(device="cuda", prefetch=False), seed=0).prefetch is False
    assert api.load_recipe(None, ["train.prefetch=auto"]).train.prefetch == "auto"
