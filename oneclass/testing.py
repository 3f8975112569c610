"""``check_method``: the checks every registered method and plugin must pass, after
scikit-learn's ``check_estimator``.

``check_method(name_or_class)`` builds the method from its defaults, trains it at a tiny
size (:data:`FAST`) on an easy synthetic anomaly set (:func:`easy_anomalies`) at every
supervision level, and asserts the protocol of ``oneclass.methods.base``: scores are
finite, one per item, higher for anomalies; a reloaded method scores the same; the same
seed trains the same; loading leaves the global random state alone; unknown parameters
are refused; ``embed``/``explain`` have their shapes. A failure is an
:class:`AssertionError` naming the method and the check::

    check_method('deep-sad') failed [save and reload]: ...

How a method is built, trained and reloaded is written once, in :func:`build` and
:func:`reload` (they mirror ``training.train_run`` and ``scoring.load_method``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import random
import time
from dataclasses import asdict
from typing import Any, Iterator

import numpy as np

from oneclass.errors import OneclassError
from oneclass.protocol import method_class_problems

#: Shortens training for the check and nothing else: each key is applied where a
#: method's ``Params`` has a field of that name that takes the value (checked like a
#: recipe's ``method.`` keys); mappings are merged into the field key by key.
FAST: dict[str, Any] = {
    # LeNet family (deep-svdd, deep-sad, ss-dcae, binclass); their epochs: FAST_TRAIN
    "rep_dim": 16, "pretrain_epochs": 1,
    # gVAE family: warm-start stages short, the (semi-)supervised ones long enough for
    # the single-scale variants' batch-norm statistics to catch up with their weights
    "width": 8, "latent_channels": 2, "classifier_hidden": 8,
    "epochs": {"mean": 1, "scale": 1, "shape": 1, "semi": 10, "classifier": 2},
    # VQ-VAE family
    "steps": 48, "codes": 16, "dim": 8, "hidden": 16, "residual_hidden": 8, "residual_layers": 1,
}
#: Per method (by name), over FAST: the unsupervised latent scores need longer to rank
#: anomalies first reliably (measured over seeds 0-7).
FAST_BY_METHOD: dict[str, dict[str, Any]] = {
    "ms-gvae": {"epochs": {"mean": 8, "scale": 8, "shape": 8}},
    "vq-vae": {"steps": 200},
    # random weights (no download), one small scale, a shallow feature map
    "devnet": {"weights": "none", "scales": [32], "layer": "layer3", "batch_size": 16, "anomalies_per_batch": 8},
    "devnet-plain": {"weights": "none", "scales": [32], "layer": "layer3", "batch_size": 16,
                     "anomalies_per_batch": 8},
    # random VGG weights, a narrow autoencoder, short phases (8 -> 16 -> 32 px)
    "dpa": {"weights": "none", "width": 8, "latent": 16, "batch_size": 16, "transition": 128, "stable": 256},
    **{name: {"width": 8, "latent": 8, "epochs": 10} for name in
       ("recode-vae", "rsc-vae-o", "rsc-vae-d", "rsc-vae-e")},
}
#: The ``train`` section the check trains with (``oneclass.recipe.TrainSection`` keys).
#: ONECLASS_CHECK_DEVICE=cuda runs the check on a GPU (the CUDA paths of every method).
FAST_TRAIN: dict[str, Any] = {"epochs": 3, "batch_size": 16, "lr": 1e-3,
                              "device": os.environ.get("ONECLASS_CHECK_DEVICE", "cpu")}
#: Over all the above, for the fits that check the code rather than what it learns
#: (same seed same scores, labels ignored, labels refused, training without labels):
#: one epoch or a few steps, on a smaller training set.
QUICK: dict[str, Any] = {"epochs": {"mean": 1, "scale": 1, "shape": 1, "semi": 1, "classifier": 1},
                         "steps": 4}
QUICK_TRAIN: dict[str, Any] = {"epochs": 1}
#: On CUDA the same-seed fits run with torch's deterministic algorithms (what a user sets
#: to reproduce scores there), and scores compared across batch compositions, fits or a
#: reload may differ by float rounding (cuDNN picks kernels by batch size): up to
#: CUDA_TOLERANCE of the scores' range, where the CPU must agree exactly.
ON_CUDA = FAST_TRAIN["device"].startswith("cuda")
if ON_CUDA:
    QUICK_TRAIN["deterministic"] = True
CUDA_TOLERANCE = 1e-3

IN_SHAPE = (1, 32, 32)
MIN_AUROC = 0.8
SEED = 0

# training sets: rows of easy_anomalies(); roles as in oneclass.data.splits
_N_NORMAL_TRAIN, _N_LABELED_NORMAL, _N_LABELED_ANOMALY = 64, 8, 16  # gamma = 16 / 80 = 0.2
_N_VAL, _N_TEST = 8, 24  # of each class
_QUICK = (24, 4, 8)  # the same for the quick fits, taken from the front of those


class _Failed(AssertionError):
    pass


def easy_anomalies(n_normal: int, n_anomalous: int, size: int = 32, seed: int = 0) -> np.ndarray:
    """(n_normal + n_anomalous, 1, size, size) uint8: normal items are smooth
    low-contrast textures (a few random gratings around grey 80), anomalous ones the
    same kind of texture with a bright Gaussian blob; normal items first."""
    rng = np.random.default_rng(seed)
    n = n_normal + n_anomalous
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / size
    images = np.full((n, size, size), 80.0)
    for _ in range(3):
        fy, fx = rng.uniform(-3, 3, (2, n, 1, 1))
        phase = rng.uniform(0, 2 * np.pi, (n, 1, 1))
        images += rng.uniform(4, 10, (n, 1, 1)) * np.sin(2 * np.pi * (fy * yy + fx * xx) + phase)
    images += rng.normal(0, 2, images.shape)
    cy, cx = rng.uniform(0.2 * size, 0.8 * size, (2, n_anomalous, 1, 1))
    sigma = rng.uniform(0.06 * size, 0.12 * size, (n_anomalous, 1, 1))
    blob = np.exp(-((yy * size - cy) ** 2 + (xx * size - cx) ** 2) / (2 * sigma ** 2))
    images[n_normal:] += 160 * blob
    return np.clip(np.rint(images), 0, 255).astype(np.uint8)[:, None]


@dataclasses.dataclass
class _Sets:
    unlabeled: Any  # PatchData: normal items, all unlabelled (gamma 0)
    labeled: Any  # PatchData: the same, some labelled normal, then labelled anomalies (gamma 0.2)
    quick_unlabeled: Any  # smaller ones of the same kinds, for the quick fits
    quick_labeled: Any
    val: Any  # PatchData with labels, balanced
    test: Any


def _sets(seed: int, size: int) -> _Sets:
    from oneclass.data.items import LABELED_ANOMALY, LABELED_NORMAL, UNLABELED
    from oneclass.data.items import PatchData

    n_normal = _N_NORMAL_TRAIN + _N_VAL + _N_TEST
    n_anomalous = _N_LABELED_ANOMALY + _N_VAL + _N_TEST
    images = easy_anomalies(n_normal, n_anomalous, size, seed)
    normal, anomalous = np.arange(n_normal), np.arange(n_normal, n_normal + n_anomalous)

    def training(n_normal: int, n_labeled_normal: int, n_labeled_anomaly: int):
        rows = normal[:n_normal]
        unlabeled = PatchData(images, rows, roles=np.full(n_normal, UNLABELED, np.int8))
        roles = np.full(n_normal, UNLABELED, np.int8)
        roles[::n_normal // n_labeled_normal] = LABELED_NORMAL
        labeled = PatchData(images, np.r_[rows, anomalous[:n_labeled_anomaly]],
                            roles=np.r_[roles, np.full(n_labeled_anomaly, LABELED_ANOMALY, np.int8)])
        return unlabeled, labeled

    def evaluation(start: int, count: int):
        rows = np.r_[normal[_N_NORMAL_TRAIN + start:][:count], anomalous[_N_LABELED_ANOMALY + start:][:count]]
        return PatchData(images, rows, labels=np.r_[np.zeros(count, np.int64), np.ones(count, np.int64)])

    return _Sets(*training(_N_NORMAL_TRAIN, _N_LABELED_NORMAL, _N_LABELED_ANOMALY), *training(*_QUICK),
                 evaluation(0, _N_VAL), evaluation(_N_VAL, _N_TEST))


# -- the one place that knows how a method is built, trained and reloaded ---------------


def fast_params(cls, quick: bool = False, overrides: dict | None = None):
    """``cls.Params``: its defaults, then :data:`FAST`, :data:`FAST_BY_METHOD` and, with
    ``quick``, :data:`QUICK` where it has the field, then ``overrides``; built as a
    recipe's ``method.`` section is."""
    from oneclass.recipe import check_options
    from oneclass.training import merge_nested

    fields = {f.name for f in dataclasses.fields(cls.Params)}
    chosen: dict[str, Any] = {}
    for table in (FAST, FAST_BY_METHOD.get(getattr(cls, "name", None), {}), QUICK if quick else {}):
        for key, value in table.items():
            if key not in fields:
                continue
            merged = merge_nested(chosen[key], value) if isinstance(chosen.get(key), dict) else value
            try:  # a plugin's field of the same name may take another kind of value
                check_options(cls.Params, {key: merged}, "<check_method>", "method.")
            except OneclassError:
                continue
            chosen[key] = merged
    return check_options(cls.Params, merge_nested(chosen, overrides or {}), "<check_method>", "method.")


def _train_section(quick: bool = False):
    from oneclass.recipe import TrainSection

    return TrainSection(**{**FAST_TRAIN, **(QUICK_TRAIN if quick else {})})


def build(cls, params, in_shape=IN_SHAPE, seed: int = SEED, val=None, quick: bool = False):
    """A method ready to train, as ``training.train_run`` builds it (``quick``: with the
    shorter ``train`` section of the quick fits)."""
    from oneclass.engine import Trainer
    from oneclass.methods.base import build as build_method

    trainer = Trainer(_train_section(quick), seed, val=val)
    method = build_method(cls, params, tuple(in_shape), seed, keep_rng=False)
    method.trainer = trainer
    return method


def reload(cls, params, in_shape, state: dict, seed: int = SEED):
    """A method rebuilt from saved weights, as ``scoring.load_method`` builds it: the build
    draws throwaway initial weights, so it leaves the global generators as they were."""
    from oneclass.methods.base import build as build_method

    method = build_method(cls, params, tuple(in_shape), seed)
    method.load_state_dict(state)
    return method


def save_load(method) -> dict:
    """``method.state_dict()`` through ``torch.save`` and ``torch.load(weights_only=True)``,
    as a run's model.pt."""
    import torch

    buffer = io.BytesIO()
    torch.save(method.state_dict(), buffer)
    buffer.seek(0)
    return torch.load(buffer, map_location="cpu", weights_only=True)


# -- the checks -----------------------------------------------------------------------------


def check_method(method: str | type, seed: int = SEED, in_shape: tuple[int, int, int] = IN_SHAPE) -> dict:
    """Hold a registered method (by name) or a method class to the protocol; raises
    AssertionError naming the method and the failed check. Returns what it measured
    (test AUROC per supervision level, seconds). Leaves the global random state, and
    torch's thread count, as it found them."""
    import torch

    from oneclass import registry
    from oneclass.engine import keep_global_rng

    if isinstance(method, str):
        cls, label = registry.methods.get(method), method
        problems = method_class_problems(cls, method)
    else:
        cls, label = method, getattr(method, "name", None) or getattr(method, "__name__", repr(method))
        problems = method_class_problems(cls)
    checker = _Checker(cls, label, seed, tuple(in_shape))
    with checker.check("protocol"):
        assert not problems, "; ".join(problems)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny networks: threads cost more than they give
    deterministic = torch.are_deterministic_algorithms_enabled(), \
        torch.is_deterministic_algorithms_warn_only_enabled()
    if ON_CUDA:  # float32 on CUDA: TF32's rounding would swamp the comparisons
        tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    began = time.perf_counter()
    try:
        with keep_global_rng():  # training seeds the global generators
            checker.run()
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic[0], warn_only=deterministic[1])
        if ON_CUDA:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    return {**checker.results, "seconds": round(time.perf_counter() - began, 2)}


class _Checker:
    def __init__(self, cls, label: str, seed: int, in_shape: tuple[int, int, int]):
        self.cls, self.label, self.seed, self.in_shape = cls, label, seed, in_shape
        self.results: dict[str, Any] = {}

    @contextlib.contextmanager
    def check(self, what: str) -> Iterator[None]:
        try:
            yield
        except _Failed:
            raise
        except AssertionError as exc:
            raise _Failed(f"check_method({self.label!r}) failed [{what}]: {exc}") from exc
        except Exception as exc:  # noqa: BLE001 -- any error is this check's failure
            raise _Failed(f"check_method({self.label!r}) failed [{what}]: "
                          f"{type(exc).__name__}: {exc}") from exc

    def run(self) -> None:
        cls, supervision = self.cls, self.cls.supervision
        data = _sets(self.seed, self.in_shape[1])
        with self.check("params"):
            self.params_check()
        with self.check("build from defaults"):
            build(cls, cls.Params(), self.in_shape, self.seed)
        params, quick = fast_params(cls), fast_params(cls, quick=True)
        # the main fit: the level the method is made for; what it learns is checked
        level, train = ("gamma 0", data.unlabeled) if supervision == "unsupervised" else ("gamma 0.2", data.labeled)
        with self.check(f"fit ({level})"):
            method = self.fit(params, train, data.val)
        with self.check(f"scores ({level})"):
            scores = self.scores_check(method, data.test, level, MIN_AUROC)
        for attr in ("embed", "explain"):
            if getattr(method, attr, None) is not None:
                with self.check(attr):
                    self.map_check(method, attr, data.test)
        with self.check("save and reload"):
            state = save_load(method)
            self.reload_check(method, params, state, data.test, scores)
        with self.check("global random state untouched by loading"):
            self.rng_check(params, state, data.test)
        # quick fits: what the code does with the seed and the labels
        quick_train = data.quick_unlabeled if supervision == "unsupervised" else data.quick_labeled
        with self.check(f"same seed, same scores (quick fits, {level})"):
            first = self.fit(quick, quick_train, None, quick=True).score(data.test)
            again = self.fit(quick, quick_train, None, quick=True).score(data.test)
            assert _agree(first, again), \
                f"two fits with seed {self.seed} differ by up to {_max_diff(first, again):.3g}"
        self.levels_check(quick, data, first)

    # -- one check each ------------------------------------------------------------------

    def params_check(self) -> None:
        from oneclass.recipe import check_options

        Params = self.cls.Params
        defaults = check_options(Params, {}, "<check_method>", "method.")
        assert defaults == Params(), "Params built from an empty recipe section differ from Params()"
        try:
            check_options(Params, {"no_such_param": 1}, "<check_method>", "method.")
        except OneclassError as exc:
            assert "method.no_such_param" in str(exc), f"the error does not name the key: {exc}"
        else:
            raise AssertionError("an unknown parameter `method.no_such_param` was accepted")
        params = fast_params(self.cls)
        again = check_options(Params, asdict(params), "<check_method>", "method.")
        assert again == params, "Params do not survive asdict() and a recipe round trip"

    def fit(self, params, train, val, quick: bool = False):
        method = build(self.cls, params, self.in_shape, self.seed, val=val, quick=quick)
        method.fit(train, val)
        return method

    def scores_check(self, method, test, level: str, min_auroc: float | None) -> np.ndarray:
        from oneclass.metrics import auroc

        scores = method.score(test)
        n = len(test)
        assert isinstance(scores, np.ndarray), f"score() returned {type(scores).__name__}, not a numpy array"
        assert scores.shape == (n,), f"score() gave shape {scores.shape} for {n} items, expected ({n},)"
        assert np.issubdtype(scores.dtype, np.floating), f"score() gave dtype {scores.dtype}, not float"
        assert np.isfinite(scores).all(), f"{int((~np.isfinite(scores)).sum())} of {n} scores are not finite"
        again = method.score(test)
        assert np.array_equal(scores, again), (f"scoring twice gave different scores (up to "
                                               f"{_max_diff(scores, again):.3g}): not deterministic in eval mode")
        reverse = test.subset(np.arange(n)[::-1])
        alone = test.subset(np.arange(n) == n - 1)
        for part, expected, what in ((reverse, scores[::-1], "in reverse order"), (alone, scores[-1:], "alone")):
            got = method.score(part)
            assert got.shape == expected.shape and _agree(got, expected, scores, rtol=1e-4), (
                f"an item scored {what} gets another score (up to {_max_diff(got, expected):.3g}): "
                "an item's score must not depend on the others scored with it")
        if min_auroc is not None:  # a quick fit's ranking means nothing
            value = auroc(test.labels, scores)
            self.results[f"auroc ({level})"] = round(float(value), 4)
            assert value >= min_auroc, (f"test AUROC {value:.3f} < {min_auroc} on the easy anomaly set: "
                                        "higher scores must mean more anomalous")
        return scores

    def map_check(self, method, attr: str, test) -> None:
        out = getattr(method, attr)(test)
        n, (_, height, width) = len(test), self.in_shape
        assert isinstance(out, np.ndarray), f"{attr}() returned {type(out).__name__}, not a numpy array"
        if attr == "embed":
            assert out.ndim == 2 and out.shape[0] == n and out.shape[1] >= 1, \
                f"embed() gave shape {out.shape} for {n} items, expected ({n}, d)"
        else:
            assert out.shape == (n, height, width), (f"explain() gave shape {out.shape} for {n} items of "
                                                     f"{height}x{width}, expected ({n}, {height}, {width})")
        assert np.issubdtype(out.dtype, np.floating), f"{attr}() gave dtype {out.dtype}, not float"
        assert np.isfinite(out).all(), f"{attr}() gave non-finite values"

    def reload_check(self, method, params, state: dict, test, scores: np.ndarray) -> None:
        fresh = build(self.cls, params, self.in_shape, self.seed).state_dict()
        only_fresh, only_trained = sorted(set(fresh) - set(state)), sorted(set(state) - set(fresh))
        assert not (only_fresh or only_trained), (
            f"a freshly built method's state_dict keys differ from the trained one's (only fresh: "
            f"{only_fresh[:5]}, only trained: {only_trained[:5]}); what a fit adds is lost on reload")
        reloaded = reload(self.cls, params, self.in_shape, state, self.seed).to(method.device)
        got = reloaded.score(test)
        assert _agree(got, scores), \
            f"the reloaded method scores differently (up to {_max_diff(got, scores):.3g})"

    def rng_check(self, params, state: dict, test) -> None:
        import torch

        random.seed(12345)
        np.random.seed(12345)
        torch.manual_seed(12345)
        before = (random.getstate(), np.random.get_state(), torch.get_rng_state())
        reload(self.cls, params, self.in_shape, state, self.seed).score(test)
        after = (random.getstate(), np.random.get_state(), torch.get_rng_state())
        changed = [name for name, a, b in zip(("random", "numpy", "torch"), before, after) if not _same_state(a, b)]
        assert not changed, (f"rebuilding the method for loading, load_state_dict and score changed "
                             f"the global {', '.join(changed)} generator(s)")

    def levels_check(self, quick, data: _Sets, scores: np.ndarray) -> None:
        """The supervision levels besides the main one, on quick fits: an unsupervised
        method ignores labels; a semi-supervised one also trains without any (gamma 0); a
        supervised one refuses to train without labelled anomalies, with one clear line."""
        supervision = self.cls.supervision
        if supervision == "unsupervised":
            with self.check("unsupervised: labels ignored (quick fit, gamma 0.2)"):
                got = self.fit(quick, data.quick_labeled, None, quick=True).score(data.test)
                assert _agree(got, scores), (
                    f"labelled normals and anomalies added to the training set changed the scores "
                    f"(up to {_max_diff(got, scores):.3g}); an unsupervised method must not use them")
        elif supervision == "semi-supervised":
            with self.check("fit (quick, gamma 0)"):
                method = self.fit(quick, data.quick_unlabeled, None, quick=True)
            with self.check("scores (quick fit, gamma 0)"):
                self.scores_check(method, data.test, "gamma 0", None)
        else:
            with self.check("supervised: refuses gamma 0"):
                try:
                    self.fit(quick, data.quick_unlabeled, None, quick=True)
                except OneclassError as exc:
                    message = str(exc)
                    assert message and "\n" not in message, f"the refusal is not one line: {message!r}"
                    assert "label" in message and self.cls.name in message, (
                        f"the refusal does not name the method and the missing labelled anomalies: {message!r}")
                else:
                    raise AssertionError("trained without any labelled anomaly; a supervised method must "
                                         "refuse with a OneclassError")


def _agree(got: np.ndarray, expected: np.ndarray, scale: np.ndarray | None = None, rtol: float = 0.0) -> bool:
    """Equal on the CPU (within ``rtol``); on CUDA within CUDA_TOLERANCE of the range of
    ``scale`` (default: ``expected``)."""
    if not ON_CUDA:
        return np.allclose(got, expected, rtol=rtol, atol=1e-6) if rtol else np.array_equal(got, expected)
    scale = expected if scale is None else scale
    return np.allclose(got, expected, rtol=rtol, atol=CUDA_TOLERANCE * float(np.ptp(scale)) + 1e-6)


def _same_state(a, b) -> bool:
    import torch

    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, np.ndarray):
        return np.array_equal(a, b)
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(_same_state(x, y) for x, y in zip(a, b))
    return a == b


def _max_diff(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        return float("nan")
    return float(np.nanmax(np.abs(a - b))) if a.size else 0.0
