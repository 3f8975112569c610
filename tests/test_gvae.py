"""c-ss-ms-gVAE and its family: shapes through the scales, the losses of Eqs. (1)-(5)
against hand computations, the staged schedule's freezing, variants, separation of an
easy anomaly set and determinism."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from oneclass.data.items import LABELED_ANOMALY, LABELED_NORMAL, UNLABELED
from oneclass.data.items import PatchData
from oneclass.engine import TrainingDiverged
from oneclass.errors import OneclassError
from oneclass.methods import gg
from oneclass.methods.gvae import A0, A1, A2, A3, A4, GVAE, MSGVAE, SSGVAE, SSMSGVAE, classifier_loss, hinge_push
from oneclass.metrics import auroc
from oneclass.registry import methods
from test_methods import easy_set, engine, make

VARIANTS = [GVAE, SSMSGVAE, MSGVAE, SSGVAE, A0, A1, A2, A3, A4]


def small(cls, **kw):
    return cls.Params(width=4, latent_channels=2, classifier_hidden=8, **kw)


@pytest.mark.parametrize("channels", [1, 3])
def test_shapes_through_all_scales(channels):
    method = make(GVAE, GVAE.Params(), (channels, 32, 32), engine())
    x = torch.rand(5, channels, 32, 32)
    heads = method.encoder(x)
    assert [tuple(t.shape) for t in heads[0]] == [(5, 4, 16, 16)] * 3
    assert [tuple(mu.shape) for mu, _, _ in heads] == [(5, 4, 16, 16), (5, 8, 8, 8), (5, 16, 4, 4), (5, 32, 2, 2)]
    image = method.decoder({s: mu for s, (mu, _, _) in zip(method.encoder.latent_scales, heads)})
    assert [tuple(t.shape) for t in image] == [(5, channels, 32, 32)] * 3
    assert method.latent_dims == 1920 and method.embed(PatchData((x * 255).byte().numpy(), np.arange(5))).shape == (5, 1920)
    single = make(SSGVAE, SSGVAE.Params(), (channels, 32, 32), engine())
    assert [tuple(mu.shape) for mu, _, _ in single.encoder(x)] == [(5, 32, 2, 2)]
    assert single.latent_dims == 128


def test_bigger_patches_and_fewer_scales():
    method = make(GVAE, small(GVAE, scales=3), (1, 64, 64), engine())
    assert [tuple(mu.shape[1:]) for mu, _, _ in method.encoder(torch.rand(2, 1, 64, 64))] == \
        [(2, 32, 32), (4, 16, 16), (8, 8, 8)]


@pytest.mark.parametrize("shape,params,message", [
    ((1, 36, 36), {}, r"multiple of 2\^scales = 16"),
    ((2, 32, 32), {}, "1- or 3-channel"),
    ((1, 32, 32), {"delta": 1.5}, "0 < delta < 1"),
])
def test_unusable_shapes_and_regularisers_are_refused(shape, params, message):
    with pytest.raises(OneclassError, match=message):
        make(GVAE, GVAE.Params(**params), shape, engine())


def test_hinge_push_and_classifier_loss_match_hand_computations():
    values = torch.tensor([10.0, 14.0, 13.0, 40.0], requires_grad=True)
    anomalous = torch.tensor([False, False, True, True])
    push = hinge_push(values, anomalous, floor=8.0)
    # normal mean 12, so anomalies are pushed up to 20: 20 - 13 = 7 and 0 for 40
    assert push[anomalous].tolist() == pytest.approx([7.0, 0.0])
    push[anomalous].sum().backward()
    assert values.grad.tolist() == pytest.approx([0.0, 0.0, -1.0, 0.0])  # the reference is held constant
    logits = torch.tensor([0.0, 2.0, -1.0])
    is_anomaly = torch.tensor([True, False, False])
    sigmoid = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    expected = -math.log(sigmoid(0.0)) - (math.log(1 - sigmoid(2.0)) + math.log(1 - sigmoid(-1.0))) / 2
    assert classifier_loss(logits, is_anomaly).item() == pytest.approx(expected)


def test_per_item_terms_of_eq_1_by_hand():
    """One latent scale of one dimension, an image of one pixel, tiny enough to do by hand."""
    method = make(GVAE, small(GVAE), (1, 32, 32), engine())
    reg = method.reg
    mu, alpha, beta = torch.tensor([[0.3]]), torch.tensor([[0.2]]), torch.tensor([[-0.4]])
    image_params = (torch.tensor([[0.6]]), torch.tensor([[-1.0]]), torch.tensor([[0.5]]))
    x = torch.tensor([[0.5]])
    torch.manual_seed(3)
    z = gg.sample(mu, alpha, beta, reg)
    method.encoder.forward = lambda x, scale, shape: [(mu, alpha if scale else None, beta if shape else None)]
    method.decoder.forward = lambda zs, scale, shape: (
        image_params[0], image_params[1] if scale else None, image_params[2] if shape else None)
    torch.manual_seed(3)
    latent, image, zs = method.per_item(x, method.mode("shape"))

    def log_g(b, m, a, be):
        s, p = 0.1 + math.exp(a), 0.1 + math.exp(be)
        return math.log(p / s) - (((b - m) / s) ** 2 + 0.1) ** (p / 2) - math.lgamma(1 / p) - math.log(2)

    zv = z.item()
    assert zs[0].item() == pytest.approx(zv)
    assert latent.item() == pytest.approx(0.5 * zv ** 2 + log_g(zv, 0.3, 0.2, -0.4), rel=1e-5)
    assert image.item() == pytest.approx(-log_g(0.5, 0.6, -1.0, 0.5), abs=1e-6)
    # stage "mean": z is the mean, scale 1 and shape 2: 0.5 mu^2 and ((x - m)^2 + eps) + constants
    latent, image, zs = method.per_item(x, method.mode("mean"))
    assert zs[0].item() == pytest.approx(0.3) and latent.item() == pytest.approx(0.045)
    assert image.item() == pytest.approx((0.01 + 0.1) + math.lgamma(0.5))  # log(p/s) = log 2 cancels


def test_objective_of_eq_5_by_hand():
    method = make(GVAE, small(GVAE, lambda2=0.5, lambda3=2.0, margin=1.0), (1, 32, 32), engine())
    latent = torch.tensor([1.0, 3.0, 2.0, 5.0])
    image = torch.tensor([10.0, 12.0, 14.0, 2000.0])
    zs = [torch.zeros(4, 1)]
    method.per_item = lambda x, mode: (latent, image, zs)
    method.net_classifier = lambda z: torch.tensor([0.0, 1.0, 2.0, 3.0])
    method.latent_dims = 2  # latent floor 1.0 * 2 nats; image floor 1.0 * 1024
    roles = torch.tensor([UNLABELED, UNLABELED, LABELED_NORMAL, LABELED_ANOMALY])
    batch = {"x": torch.zeros(4, 1, 32, 32), "roles": roles}
    l1 = ((1 + 10) + (3 + 12)) / 2
    normal_latent, normal_image = (1 + 3 + 2) / 3, (10 + 12 + 14) / 3
    push = max(0, normal_latent + 2 - 5) + max(0, normal_image + 1024 - 2000)
    l2 = (2 + 14) + push
    softplus = lambda v: math.log1p(math.exp(v))  # noqa: E731
    l3 = softplus(-3.0) + (softplus(0.0) + softplus(1.0) + softplus(2.0)) / 3
    assert method.objective(batch, method.mode("semi"), semi=True).item() == pytest.approx(l1 + 0.5 * l2)
    assert method.objective(batch, method.mode("classifier"), semi=True).item() == \
        pytest.approx(l1 + 0.5 * l2 + 2.0 * l3)
    assert method.objective(batch, method.mode("shape"), semi=False).item() == pytest.approx(
        (latent + image).mean().item())


EXPECTED_TRAINABLE = {  # stage -> (log-scale branches, log-shape branches, classifier)
    "mean": (False, False, False), "scale": (True, False, False), "shape": (True, True, False),
    "semi": (True, True, False), "classifier": (True, True, True)}


def test_staged_schedule_freezes_exactly_the_branches_it_should():
    images, labels = easy_set(48, 16)
    roles = np.where(labels == 1, LABELED_ANOMALY, UNLABELED).astype(np.int8)
    data = PatchData(images, np.arange(len(images)), roles=roles)
    eng = engine(epochs=1)
    method = make(GVAE, small(GVAE), (1, 32, 32), eng)
    assert method.stages() == list(EXPECTED_TRAINABLE)
    for stage, (scale, shape, classifier) in EXPECTED_TRAINABLE.items():
        mode = method.mode(stage)
        before = {name: p.detach().clone() for name, p in method.named_parameters()}
        method._stage(stage, data, semi=stage in ("semi", "classifier"))
        for name, param in method.named_parameters():
            expected = not (("log_scale" in name and not scale) or ("log_shape" in name and not shape)
                            or (name.startswith("classifier.") and not classifier))
            assert param.requires_grad == expected, (stage, name)
            if not expected:
                assert torch.equal(param, before[name]), f"frozen {name} moved in stage {stage}"
        moved = [name for name, p in method.named_parameters() if not torch.equal(p, before[name])]
        assert any("mean" in name for name in moved)
        assert any("log_scale" in name for name in moved) == scale
        assert any("log_shape" in name for name in moved) == shape
        assert any(name.startswith("classifier.") for name in moved) == classifier
        assert mode.variational == (stage != "mean")


def test_the_classifier_loss_trains_the_encoder_too():
    """Eq. 4's L3 is a function of the encoder's parameters (the classifier reads the
    sampled latent): its gradient reaches the encoder's mean branches."""
    images, labels = easy_set(8, 8)
    method = make(GVAE, small(GVAE), (1, 32, 32), engine())
    per_item = method.per_item

    def latent_only(x, mode):  # L1 and L2 without terms: what trains the encoder is L3
        zs = per_item(x, mode)[2]
        return x.new_zeros(len(x)), x.new_zeros(len(x)), zs

    method.per_item = latent_only
    roles = torch.from_numpy(np.where(labels == 1, LABELED_ANOMALY, UNLABELED).astype(np.int8))
    batch = {"x": torch.from_numpy(images).float() / 255, "roles": roles}
    method.objective(batch, method.mode("classifier"), semi=True).backward()
    reached = [name for name, p in method.named_parameters()
               if name.startswith("encoder.") and "mean" in name and p.grad is not None and p.grad.abs().sum() > 0]
    assert reached


def test_the_warm_start_stages_never_see_a_labelled_anomaly(monkeypatch):
    """Stages mean, scale and shape are the unsupervised ms-gVAE (Sec. 3.7), trained on
    the inliers; only semi and classifier take the labelled anomalies."""
    images, labels = easy_set(48, 16)
    roles = np.where(labels == 1, LABELED_ANOMALY, UNLABELED).astype(np.int8)
    method = make(GVAE, small(GVAE), (1, 32, 32), engine(epochs=1))  # unset stage epochs: train.epochs
    seen = {}
    objective = method.objective

    def recording(batch, mode, semi):
        stage = next(s for s in method.stages() if method.mode(s) == mode and (s in ("semi", "classifier")) == semi)
        seen.setdefault(stage, set()).update(batch["roles"].tolist())
        return objective(batch, mode, semi)

    monkeypatch.setattr(method, "objective", recording)
    method.fit(PatchData(images, np.arange(len(images)), roles=roles))
    assert set(seen) == {"mean", "scale", "shape", "semi", "classifier"}
    assert all(LABELED_ANOMALY not in seen[stage] for stage in ("mean", "scale", "shape"))
    assert LABELED_ANOMALY in seen["semi"] and LABELED_ANOMALY in seen["classifier"]


def test_a_joining_branch_starts_at_the_value_it_was_held_at():
    method = make(GVAE, small(GVAE), (1, 32, 32), engine())
    mu, alpha, beta = method.encoder(torch.rand(3, 1, 32, 32))[0]
    assert torch.allclose(method.reg.scale(alpha), torch.tensor(1.0))
    assert torch.allclose(method.reg.shape(beta), torch.tensor(2.0))


@pytest.mark.slow
@pytest.mark.parametrize("cls", VARIANTS, ids=lambda c: c.name)
def test_every_variant_is_registered_and_trains(cls, tmp_path):
    assert methods.get(cls.name) is cls
    images, labels = easy_set(48, 16)
    roles = np.where(labels == 1, LABELED_ANOMALY, UNLABELED).astype(np.int8)
    eng = engine(epochs=1)
    eng.run_dir = tmp_path
    method = make(cls, small(cls), (1, 32, 32), eng)
    method.fit(PatchData(images, np.arange(len(images)), roles=roles), None)
    stages = [json.loads(line)["stage"] for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert stages == method.stages()
    scores = method.score(PatchData(images, np.arange(len(images))))
    assert scores.shape == (64,) and np.isfinite(scores).all()
    maps = method.explain(PatchData(images, np.arange(4)))
    assert maps.shape == (4, 32, 32) and (maps >= 0).all() and maps.sum() > 0


def test_ablations_are_configurations():
    assert (A1.latent_model, A1.image_model, A1.classifier, A1.multiscale) == ("norm", "gg", False, False)
    assert (A2.image_model, A3.latent_model, A3.image_model, A4.image_model) == ("squared", "none", "squared", "none")
    a4 = make(A4, small(A4), (1, 32, 32), engine())
    assert a4.decoder is None
    # no decoder to keep information: bias-free (Deep SVDD's argument), BN without shift
    assert not any(name.endswith("bias") for name, _ in a4.encoder.named_parameters())
    assert all(not m.affine for m in a4.encoder.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert any(name.endswith("bias") for name, _ in make(A2, small(A2), (1, 32, 32), engine()).encoder.named_parameters())
    assert A0.stages() == ["mean", "scale", "shape", "semi", "classifier"]
    assert A1.stages() == ["mean", "scale", "shape", "semi"]  # the image GG still has scale and shape
    assert A2.stages() == A3.stages() == A4.stages() == ["mean", "semi"]
    assert MSGVAE.stages() == ["mean", "scale", "shape"]


def test_without_labelled_items_ss_ms_gvae_is_ms_gvae():
    images, labels = easy_set(64, 0)
    data = PatchData(images, np.arange(64), roles=np.zeros(64, np.int8))
    scores = []
    for cls in (MSGVAE, SSMSGVAE, GVAE):
        method = make(cls, small(cls), (1, 32, 32), engine(epochs=1))
        method.fit(data, None)
        scores.append(method.score(data))
    np.testing.assert_array_equal(scores[0], scores[1])
    np.testing.assert_array_equal(scores[0], scores[2])


def _fit_easy(cls, seed=0, **params):
    images, labels = easy_set()
    train_rows = np.r_[np.arange(0, 160), np.arange(240, 280)]  # 160 normal + 40 anomalous: gamma 0.2
    roles = np.where(labels[train_rows] == 1, LABELED_ANOMALY, UNLABELED).astype(np.int8)
    eng = engine(epochs=2)
    eng.seed = seed
    method = make(cls, cls.Params(**params), (1, 32, 32), eng)
    method.fit(PatchData(images, train_rows, roles=roles), None)
    test_rows = np.r_[np.arange(160, 240), np.arange(280, 300)]
    return labels[test_rows], method.score(PatchData(images, test_rows))


@pytest.mark.slow
def test_c_ss_ms_gvae_separates_an_easy_anomaly_set_and_is_deterministic():
    narrow = {"width": 8, "latent_channels": 2, "classifier_hidden": 16}  # the default width, 16, is 3x slower
    labels, scores = _fit_easy(GVAE, **narrow)
    assert auroc(labels, scores) > 0.95
    _, again = _fit_easy(GVAE, **narrow)
    np.testing.assert_array_equal(scores, again)


def _tuned(tmp_path, grid: list[float]):
    """ss-ms-gVAE tuned over lambda2 in ``grid`` on the easy set; the method, the train
    and validation data, the trainer and the log's records."""
    images, labels = easy_set()
    train_rows = np.r_[np.arange(0, 120), np.arange(240, 270)]
    roles = np.where(labels[train_rows] == 1, LABELED_ANOMALY, UNLABELED).astype(np.int8)
    val_rows = np.r_[np.arange(120, 160), np.arange(270, 280)]
    val = PatchData(images, val_rows, labels=labels[val_rows])
    eng = engine(epochs=1)
    tmp_path.mkdir(parents=True, exist_ok=True)
    eng.val, eng.run_dir = val, tmp_path
    method = make(SSMSGVAE, small(SSMSGVAE, tune_lambda2=grid), (1, 32, 32), eng)
    train = PatchData(images, train_rows, roles=roles)
    method.fit(train, val)
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    return method, train, eng, records


@pytest.mark.slow
def test_lambda_grid_is_tuned_on_validation(tmp_path):
    method, train, eng, records = _tuned(tmp_path, [0.1, 10.0])
    tried = [r for r in records if r["stage"] == "tune" and "lambda2" in r]
    chosen = next(r for r in records if r["stage"] == "tune" and "chosen" in r)
    assert [r["lambda2"] for r in tried] == [0.1, 10.0]
    best = max(tried, key=lambda r: r["val_auroc"])
    assert chosen["chosen"]["lambda2"] == best["lambda2"] == method.lambda2
    assert method.run_info() == {"tuned": {"lambda2": method.lambda2, "lambda3": 1.0}}  # metrics.json's record
    assert eng.val_auroc(method._score) == pytest.approx(best["val_auroc"])  # the best point's weights
    eng.val = None
    with pytest.raises(OneclassError, match="validation set"):
        method.fit(train, None)


@pytest.mark.slow
def test_a_diverging_lambda_point_is_ruled_out_and_the_others_still_chosen(tmp_path):
    """On the nanofibre paper split (seed 0, a 3 x 3 grid) lambda2 = 10 made the semi
    stage's loss NaN, which stopped the whole run; now that point is ruled out."""
    method, _, _, records = _tuned(tmp_path / "one", [float("inf"), 0.1])
    tried = [r for r in records if r["stage"] == "tune" and "lambda2" in r]
    assert "diverged" in tried[0] and "the loss became" in tried[0]["diverged"] and "val_auroc" in tried[1]
    assert method.lambda2 == 0.1 and records[-1]["chosen"]["lambda2"] == 0.1
    with pytest.raises(TrainingDiverged, match="every lambda2/lambda3 point diverged; the last: stage semi"):
        _tuned(tmp_path / "all", [float("inf"), 1e38])


def test_a3_is_scored_by_its_own_reconstruction_error():
    """A3 has no latent loss, so the family's ||E^mu|| reads an untrained latent; its
    score is the squared reconstruction error at the latent mean, by hand here."""
    method = make(A3, small(A3), (1, 32, 32), engine())
    data = PatchData(np.random.default_rng(0).integers(0, 256, (5, 1, 32, 32), dtype=np.uint8), np.arange(5))
    x = torch.from_numpy(data.images).float() / 255
    for module in method.modules.values():
        module.eval()
    with torch.no_grad():
        means = {s: mu for s, (mu, _, _) in zip(method.encoder.latent_scales, method.encoder(x, False, False))}
        expected = ((x - method.decoder(means, False, False)[0]) ** 2).flatten(1).sum(1)
    np.testing.assert_allclose(method.score(data), expected.numpy(), rtol=1e-5)
