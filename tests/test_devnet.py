"""DevNet and devnet-plain: the deviation loss and top-k pooling against hand-computed
values, the paper's training settings as the trainer receives them, the balanced batches,
gradient maps that light up the region a score depends on, separation of the synthetic
defects, check_method, and one clear line for each bad input. Every network here is tiny
or sees tiny images; weights are random (weights: none), so nothing is downloaded."""

from __future__ import annotations

import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from oneclass import testing
from oneclass.data.items import LABELED_ANOMALY, LABELED_NORMAL, UNLABELED, PatchData
from oneclass.engine import Trainer
from oneclass.errors import OneclassError
from oneclass.maps import gradient_map, gradient_maps
from oneclass.methods import devnet as devnet_module
from oneclass.methods.base import Method
from oneclass.methods.devnet import DevNet, DevNetPlain, deviation, deviation_loss, topk_pool
from oneclass.metrics import auroc
from oneclass.recipe import TrainSection

pytestmark = pytest.mark.filterwarnings("ignore:.*random weights:UserWarning")

ROOT = Path(__file__).resolve().parents[1]
# small and quick: ResNet-18 cut after layer3, 32 px images, batches of 8 + 8
TINY = dict(weights="none", scales=[32], layer="layer3", batch_size=16, anomalies_per_batch=8)


def tiny(cls=DevNet, **changes):
    return replace(cls.Params(), **{**TINY, **changes})


def trained(cls, params, in_shape, seed=0, epochs=1, batch_size=16):
    """``cls`` built after a seeded CPU trainer, as ``oneclass train`` builds it."""
    trainer = Trainer(TrainSection(epochs=epochs, batch_size=batch_size, lr=1e-3, device="cpu"), seed=seed)
    method = cls(params, in_shape)
    method.trainer = trainer
    return method


def few_shot_set(n_normal=40, n_anomalous=6, size=32):
    """testing.easy_anomalies: normal textures first, then labelled anomalies."""
    images = testing.easy_anomalies(n_normal, n_anomalous, size)
    roles = np.r_[np.full(n_normal, UNLABELED), np.full(n_anomalous, LABELED_ANOMALY)].astype(np.int8)
    return PatchData(images, np.arange(n_normal + n_anomalous), roles=roles)


# -- the deviation loss --------------------------------------------------------------------


def test_deviation_is_a_z_score_against_the_reference():
    reference = torch.tensor([1.0, 3.0, 5.0])  # mean 3, unbiased std 2
    assert deviation(torch.tensor([3.0, 7.0, -1.0]), reference).tolist() == pytest.approx([0.0, 2.0, -2.0])


def test_deviation_loss_matches_hand_computation():
    reference = torch.tensor([-1.0, 0.0, 1.0])  # mean 0, std 1: dev = score
    scores = torch.tensor([0.5, -2.0, 6.0, 3.0, -1.0, 5.0], requires_grad=True)
    anomalous = torch.tensor([False, False, True, True, True, True])
    loss = deviation_loss(scores, anomalous, reference, margin=5.0)
    # normal: |dev|; anomalies: max(0, 5 - dev), zero once past the margin
    assert loss.tolist() == pytest.approx([0.5, 2.0, 0.0, 2.0, 6.0, 0.0])
    loss.sum().backward()
    assert scores.grad.tolist() == pytest.approx([1.0, -1.0, 0.0, -1.0, -1.0, 0.0])


def test_deviation_loss_margin_and_reference_scale():
    reference = torch.tensor([1.0, 3.0, 5.0])  # dev = (s - 3) / 2
    scores = torch.tensor([4.0, 9.0, 13.0])
    loss = deviation_loss(scores, torch.tensor([False, True, True]), reference, margin=4.0)
    assert loss.tolist() == pytest.approx([0.5, 4.0 - 3.0, 0.0])


# -- top-k pooling --------------------------------------------------------------------------


CELLS = torch.tensor([[0.5, -3.0, 1.0, 2.0, -0.1, 0.2, 0.0, 0.3, 0.4, 0.6]])


@pytest.mark.parametrize("topk,on,expected", [
    (0.2, "abs", (3.0 + 2.0) / 2),  # |-3| ranks first
    (0.2, "raw", (2.0 + 1.0) / 2),
    (0.1, "abs", 3.0),  # ceil(0.1 x 10) = 1
    (0.1, "raw", 2.0),
    (0.25, "raw", (2.0 + 1.0 + 0.6) / 3),  # ceil(2.5) = 3
    (0.01, "raw", 2.0),  # at least one cell
    (1.0, "abs", float(CELLS.abs().mean())),
])
def test_topk_pool_picks_the_right_cells(topk, on, expected):
    assert topk_pool(CELLS, topk, on).item() == pytest.approx(expected)


def test_topk_count_is_robust_to_floating_point():
    cells = torch.arange(30.0).unsqueeze(0)  # 0.1 x 30 = 3.0000000000000004: three cells, not four
    assert topk_pool(cells, 0.1, "raw").item() == pytest.approx((29 + 28 + 27) / 3)


def _head_reads_channel_zero(method):
    with torch.no_grad():
        method.net.head.weight.zero_()
        method.net.head.weight[0, 0] = 1.0
        method.net.head.bias.zero_()


def test_devnet_image_score_is_the_top_k_of_its_cells():
    method = DevNet(tiny(topk=0.25, topk_on="raw"), (1, 32, 32))
    _head_reads_channel_zero(method)
    features = torch.zeros(2, method.net.head.in_channels, 2, 4)  # 8 cells: k = 2
    features[0, 0] = torch.tensor([[1.0, -9.0, 3.0, 0.0], [0.0, 2.0, 0.0, 0.0]])
    features[1, 0] = torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 4.0, 6.0]])
    assert method._pool(features).tolist() == pytest.approx([2.5, 5.0])
    method.params.topk_on = "abs"
    assert method._pool(features).tolist() == pytest.approx([6.0, 5.0])


def test_devnet_plain_pools_the_features_globally():
    method = DevNetPlain(tiny(DevNetPlain), (1, 32, 32))
    _head_reads_channel_zero(method)
    features = torch.zeros(1, method.net.head.in_channels, 2, 2)
    features[0, 0] = torch.tensor([[1.0, -9.0], [3.0, 1.0]])
    assert method._pool(features).tolist() == pytest.approx([-1.0])
    assert not hasattr(method.params, "topk")


def test_scales_average_the_scores_of_each_resized_image():
    method = DevNet(tiny(scales=[32, 64]), (1, 32, 32))
    method.net.eval()
    x = torch.rand(3, 1, 32, 32)
    with torch.no_grad():
        both = method._score(x)
        large = method._pool(method.net(torch.nn.functional.interpolate(x, size=(64, 64), mode="bilinear",
                                                                       antialias=True)))
        alone = method._pool(method.net(x))
    assert both.tolist() == pytest.approx(((alone + large) / 2).tolist(), rel=1e-5)


# -- training: the paper's settings, the balanced batches ---------------------------------


def test_default_params_are_the_papers():
    p = DevNet.Params()
    assert (p.backbone, p.weights, p.topk, p.topk_on, p.scales) == ("resnet18", "imagenet", 0.1, "abs", [448, 224])
    assert (p.margin, p.prior_draws, p.batch_size, p.anomalies_per_batch) == (5.0, 5000, 48, 24)
    assert (p.lr, p.weight_decay, p.epochs, p.steps_per_epoch, p.lr_step, p.lr_factor, p.clip) == \
        (2e-4, 1e-5, 50, 20, 10, 0.1, 1.0)
    assert p.augment == ["rotate:180"]


def test_the_trainer_gets_the_papers_stage(monkeypatch):
    """Defaults (except weights/scales) on 96 unlabelled items: passes of 96 / 24 = 4
    batches, so the lr falls every 10 x 20 / 4 = 50 passes = 200 steps; 50 x 20 steps."""
    data = few_shot_set(n_normal=96, n_anomalous=5)
    method = trained(DevNet, replace(DevNet.Params(), weights="none", scales=[32]), (1, 32, 32))
    seen = {}
    monkeypatch.setattr(method.trainer, "stage", lambda spec, *a, **k: seen.update(spec=spec))
    method.fit(data)
    spec = seen["spec"]
    assert (spec.optimizer, spec.lr, spec.weight_decay, spec.clip) == ("adam", 2e-4, 1e-5, 1.0)
    assert (spec.steps, spec.schedule, spec.step_size, spec.lr_factor) == (1000, "step", 50, 0.1)
    assert (spec.sampler, spec.batch_size, spec.anomalies_per_batch) == ("balanced", 48, 24)
    assert spec.augment == ("rotate:180",)
    assert {id(p) for p in spec.params} == {id(p) for p in method.net.parameters()}


def test_a_pass_longer_than_the_lr_step_steps_the_schedule_per_optimizer_step(monkeypatch):
    """30 unlabelled items at 8 + 8 are passes of 4 batches; lr_step 1 x 2 steps_per_epoch
    asks for a fall every 2 steps, which whole passes cannot give (rounded, it fell every
    pass; past ~4,800 items at the defaults, never): the schedule counts steps there."""
    data = few_shot_set(n_normal=30, n_anomalous=3)
    method = trained(DevNet, tiny(steps=8, steps_per_epoch=2, lr_step=1, lr=1e-3, augment=[]), (1, 32, 32))
    logged = []
    monkeypatch.setattr(method.trainer, "log", logged.append)
    method.fit(data)
    assert [r["lr"] for r in logged if "epoch" in r] == pytest.approx([1e-5, 1e-7])  # two falls a pass
    assert [r["lr_step_every"] for r in logged if "lr_step_every" in r] == [2]


def test_every_batch_holds_the_asked_number_of_labelled_anomalies(monkeypatch):
    calls = []

    def counting(scores, anomalous, reference, margin=5.0):
        calls.append((len(scores), int(anomalous.sum()), len(reference), margin))
        # the Gaussian prior's draws (Sec. 3.2): N(0, 1), within 4 standard errors
        bound = 4 / len(reference) ** 0.5
        assert abs(float(reference.mean())) < bound and abs(float(reference.std()) - 1) < bound
        return deviation_loss(scores, anomalous, reference, margin)

    monkeypatch.setattr(devnet_module, "deviation_loss", counting)
    data = few_shot_set(n_normal=30, n_anomalous=3)  # 3 anomalies, drawn with replacement
    method = trained(DevNet, tiny(batch_size=16, anomalies_per_batch=6, steps=7, prior_draws=100,
                                  margin=3.0, augment=[]), (1, 32, 32))
    method.fit(data)
    assert len(calls) == 7  # steps; a pass is ceil(30 / 10) = 3 batches
    assert all(anomalies == 6 and draws == 100 and margin == 3.0 for _, anomalies, draws, margin in calls)
    assert [size for size, *_ in calls] == [16, 16, 16, 16, 16, 16, 16]


def test_the_balanced_batches_deal_unlabelled_and_labelled_normal_items_as_normal(monkeypatch):
    calls = []
    monkeypatch.setattr(devnet_module, "deviation_loss",
                        lambda s, a, r, m=5.0: calls.append(a.clone()) or deviation_loss(s, a, r, m))
    data = few_shot_set(n_normal=20, n_anomalous=2)
    data.roles[:5] = LABELED_NORMAL
    method = trained(DevNet, tiny(batch_size=12, anomalies_per_batch=4, steps=3, augment=[]), (1, 32, 32))
    method.fit(data)
    assert [int(a.sum()) for a in calls] == [4, 4, 4] and [len(a) for a in calls] == [12, 12, 8]


def test_weights_are_loaded_when_fit_starts_and_recorded(tmp_path, monkeypatch):
    import torchvision

    def no_download(*args, **kwargs):
        raise AssertionError("building the method downloaded weights")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    DevNet(DevNet.Params(), (3, 64, 64))  # imagenet asked: nothing fetched to build (or to load a run)
    torch.manual_seed(1)
    state = torchvision.models.resnet18().state_dict()
    path = tmp_path / "resnet18.pt"
    torch.save(state, path)
    method = trained(DevNet, tiny(weights=str(path), steps=1), (1, 32, 32))
    logged = []
    monkeypatch.setattr(method.trainer, "log", logged.append)
    monkeypatch.setattr(method.trainer, "stage", lambda *a, **k: None)
    method.fit(few_shot_set())
    assert method.weights_source.startswith(f"file:{path.resolve()} sha256:")
    assert torch.equal(method.net.backbone.body.layer1[0].conv1.weight, state["layer1.0.conv1.weight"])
    assert logged[0]["weights"] == method.weights_source and logged[0]["backbone"] == "resnet18 layer3"


def test_weights_file_missing_is_one_line_at_fit(tmp_path):
    method = trained(DevNet, tiny(weights=str(tmp_path / "absent.pt")), (1, 32, 32))
    with pytest.raises(OneclassError, match=r"^method\.devnet\.weights: weights file .* not found"):
        method.fit(few_shot_set())


# -- maps ------------------------------------------------------------------------------------


class _RegionNet(nn.Module):
    """Scores an image from the pixels of rows 8..15, columns 18..27 alone."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Tanh(), nn.Conv2d(4, 1, 1))

    def forward(self, x):
        return self.conv(x[:, :, 8:16, 18:28]).pow(2).mean((1, 2, 3))


def _region_mask(n, size=32):
    mask = np.zeros((n, size, size), bool)
    mask[:, 8:16, 18:28] = True
    return mask


def test_gradient_maps_light_up_the_region_the_score_depends_on():
    torch.manual_seed(0)
    net = _RegionNet()
    method = Method(None, (3, 32, 32))
    method.add("net", net)
    images = np.random.default_rng(0).integers(0, 256, (6, 3, 32, 32), np.uint8)
    maps = gradient_maps(method, net, PatchData(images, np.arange(6)))
    assert maps.shape == (6, 32, 32) and maps.dtype == np.float32 and np.isfinite(maps).all()
    mask = _region_mask(6)
    assert auroc(mask.reshape(-1), maps.reshape(-1)) > 0.97  # pooled over the images
    assert min(auroc(m.reshape(-1), s.reshape(-1)) for m, s in zip(mask, maps)) > 0.97  # each image


def test_gradient_map_is_the_channel_summed_absolute_gradient_clipped_then_smoothed():
    weight = torch.randn(3, 2, 16, 16) * torch.tensor([1.0, 5.0, 0.2]).view(3, 1, 1, 1)

    def linear(x):  # d score_i / d x_i = weight_i: each item its own gradient
        return (x * weight).sum((1, 2, 3))

    x = torch.rand(3, 2, 16, 16)
    raw = gradient_map(linear, x, sigma=0, percentile=None)
    expected = weight.abs().sum(1).numpy()
    assert np.allclose(raw, expected)
    clipped = gradient_map(linear, x, sigma=0)  # each item at its own 99th percentile
    assert np.allclose(clipped, [np.minimum(e, np.percentile(e, 99)) for e in expected])
    smoothed = gradient_map(linear, x)
    from scipy.ndimage import gaussian_filter

    for item in range(3):  # within each image, never across the batch
        assert np.allclose(smoothed[item], gaussian_filter(clipped[item], 4.0), atol=1e-6 * clipped[item].max())
    with pytest.raises(ValueError, match="expected \\(3,\\)"):
        gradient_map(lambda x: x.sum((2, 3)), x)


def test_devnet_explains_at_input_resolution_whatever_the_scales():
    method = DevNet(tiny(scales=[48, 24]), (3, 40, 40))
    images = np.random.default_rng(0).integers(0, 256, (5, 3, 40, 40), np.uint8)
    data = PatchData(images, np.arange(5))
    maps = method.explain(data)
    assert maps.shape == (5, 40, 40) and np.isfinite(maps).all() and (maps >= 0).all()
    assert maps.reshape(5, -1).max(1).min() > 0  # every image has a gradient
    scores = method.score(data)
    assert np.allclose(method.explain(data.subset(np.array([3]))), maps[3:4], rtol=1e-4, atol=1e-7)
    assert scores.shape == (5,) and method.embed(data).shape == (5, 256)


# -- learning and the protocol -----------------------------------------------------------------


SYNTHETIC_RECIPE = """\
seed: 0
dataset: {name: synthetic, normal: 6, anomalous: 8, height: 128, width: 128}
patches: {size: 32, stride: 16}
split: {labeled_anomalies: 10, contamination: 0, val_fraction: 0.2, test_fraction: 0.3}
method:
  name: devnet
  devnet: {weights: none, scales: [32], layer: layer2, batch_size: 32, anomalies_per_batch: 16,
           steps: 60, lr: 1.0e-3, augment: []}
train: {device: cpu}
"""


def test_devnet_separates_the_synthetic_defects(tmp_path, monkeypatch):
    """Random weights and 60 steps (rotations slow learning this short; 0.90-0.96 over seeds 0-2)."""
    from oneclass import api

    monkeypatch.setenv("ONECLASS_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "devnet.yaml"
    path.write_text(SYNTHETIC_RECIPE)
    config = api.load_recipe(path)
    store = api.patch_store(config)
    sets = api.split(store, config)
    assert sets.counts["train"]["labeled_anomaly"] == 10
    method = api.method_from_recipe(config, store)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        method.fit(sets.train, sets.val)
        value = api.auroc(sets.test, method.score(sets.test))
    finally:
        torch.set_num_threads(threads)
    assert value > 0.85, value


@pytest.mark.slow
def test_devnet_and_its_plain_ablation_separate_real_digits():
    """MNIST 0 vs the other digits from ten labelled anomalies (recipes/devnet-mnist.yaml,
    random weights). Seeds 0-4 on torch 2.14.1: devnet 0.970 +- 0.013, devnet-plain
    0.969 +- 0.013 (p = 0.63): a whole digit is no small defect, so top-k MIL pooling
    has nothing to find that global pooling misses. (Torch 2.11 gave 0.978 against 0.853
    at seed 0 alone, which this test used to take for the paper's MIL-DS > DS.) A fresh
    environment of 2026-11-27 (torch 2.14.1, numpy 2.4.6, torchvision 0.29.1, an AVX-512
    CPU, with ATEN_CPU_CAPABILITY=avx2 alike) gives seed 0 those 0.978 and 0.853 again,
    seeds 1 and 2 of devnet-plain 0.951 and 0.959: the plain model's seed 0 lies near an
    edge that float sums move, so it is held to 0.80 (chance is 0.5), devnet to 0.93."""
    from conftest import auroc_of_a_short_real_run

    devnet = auroc_of_a_short_real_run("recipes/devnet-mnist.yaml", [])
    plain = auroc_of_a_short_real_run("recipes/devnet-mnist.yaml", ["method.name=devnet-plain"])
    assert devnet >= 0.93 and plain >= 0.80, (devnet, plain)


@pytest.mark.parametrize("name", ["devnet", "devnet-plain"])
def test_check_method(name, monkeypatch):
    # what testing.FAST_BY_METHOD needs for the devnets: random weights and the check's own
    # 32 px images at one scale (the defaults download ImageNet weights, score at 448 and
    # 224 px and take 1000 steps); the check's `steps` keys shorten training
    monkeypatch.setitem(testing.FAST_BY_METHOD, name, {**TINY})
    measured = testing.check_method(name)
    assert measured["auroc (gamma 0.2)"] >= testing.MIN_AUROC


# -- bad input ----------------------------------------------------------------------------------


def _one_line(cls=DevNet, in_shape=(1, 32, 32), **changes) -> str:
    with pytest.raises(OneclassError) as info:
        cls(tiny(cls, **changes), in_shape)
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("topk", [0.0, -0.1, 1.5])
def test_topk_outside_zero_one(topk):
    assert _one_line(topk=topk) == f"method devnet: topk must lie in (0, 1] (the share of feature-map " \
                                   f"cells averaged), got {topk}"


@pytest.mark.parametrize("cls", [DevNet, DevNetPlain])
def test_scales_empty_or_not_positive(cls):
    assert "scales is empty" in _one_line(cls, scales=[])
    assert "scales must be positive image sides in pixels, got 0 in [32, 0]" in _one_line(cls, scales=[32, 0])
    assert "got -8" in _one_line(cls, scales=[-8])


def test_a_backbone_with_an_empty_feature_map():
    message = _one_line(backbone="vgg16", layer="relu5_3", scales=[64, 8])
    assert message == ("method devnet: vgg16 (relu5_3) has an empty feature map for 8x8 images "
                       "(scales: [64, 8]); use larger scales or an earlier layer")


def test_other_bad_params():
    assert "anomalies_per_batch must lie in 1..15 (the batch size is 16), got 16" in _one_line(anomalies_per_batch=16)
    assert "needs 1- or 3-channel images, got 2" in _one_line(in_shape=(2, 32, 32))
    assert "prior_draws must be at least 2" in _one_line(prior_draws=1)
    assert "margin must be positive" in _one_line(margin=0.0)
    assert "steps must be at least 1" in _one_line(steps=0)
    assert _one_line(augment=["spin"]).startswith("method.devnet.augment: unknown augmentation 'spin'")
    assert _one_line(backbone="resnet19").startswith("method.devnet.backbone: unknown backbone 'resnet19'")


@pytest.mark.parametrize("cls", [DevNet, DevNetPlain])
def test_refuses_to_train_without_labelled_anomalies(cls):
    data = few_shot_set()
    data.roles[:] = UNLABELED
    method = trained(cls, tiny(cls), (1, 32, 32))
    with pytest.raises(OneclassError) as info:
        method.fit(data)
    assert str(info.value) == (f"method {cls.name}: needs labelled anomalies (a few-shot method); set "
                               f"split.labeled_anomalies (the paper: 10) or split.gamma > 0")


def test_a_recipe_with_a_wrong_topk_on_names_the_key(tmp_path):
    from oneclass import api
    from oneclass.recipe import RecipeError
    from oneclass.training import method_class

    config = api.load_recipe(ROOT / "recipes/devnet-folder.yaml", ["method.devnet.topk_on=max"])
    with pytest.raises(RecipeError, match=r"method\.devnet\.topk_on: expected one of 'abs', 'raw', got 'max'"):
        method_class(config)


# -- recipes -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["devnet-folder", "devnet-mvtec"])
def test_recipes_load_and_build(name, tmp_path):
    from oneclass import api
    from oneclass.training import method_class

    config = api.load_recipe(ROOT / f"recipes/{name}.yaml")
    cls, params = method_class(config)
    assert cls is DevNet and config.split.labeled_anomalies == 10 and config.patches.whole_image
    side = config.patches.resize
    assert (side, params.scales) == ((128, [128]) if name == "devnet-folder" else (448, [448, 224]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        DevNet(params, (3, side, side))  # builds without downloading anything
    if name == "devnet-mvtec":
        assert config.train.device == "cuda" and params.weights == "imagenet"
        assert (params.epochs, params.steps_per_epoch, params.batch_size) == (50, 20, 48)


def test_folder_recipe_documents_the_open_set_setting():
    text = (ROOT / "recipes/devnet-folder.yaml").read_text()
    assert "seen_subclasses" in text and "open set" in text.lower()


def _masked_folder(root: Path, normal: int = 24, anomalous: int = 16) -> Path:
    """64 px whole images: smooth noise; anomalies with a bright square and its mask."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for kind, count in (("normal", normal), ("anomalous/square", anomalous)):
        (root / kind).mkdir(parents=True)
        for i in range(count):
            pixels = rng.normal(90, 10, (64, 64)).clip(0, 255)
            if kind != "normal":
                mask = np.zeros((64, 64), np.uint8)
                y, x = rng.integers(4, 40, 2)
                mask[y:y + 20, x:x + 20] = 255
                pixels[mask > 0] = 240
                Image.fromarray(mask).save(root / kind / f"{i:02d}_mask.png")
            Image.fromarray(pixels.astype(np.uint8)).save(root / kind / f"{i:02d}.png")
    return root


@pytest.mark.slow
def test_folder_recipe_trains_scores_and_draws_maps(tmp_path):
    """recipes/devnet-folder.yaml from the CLI, shortened: a run with scores, maps and pixel AUROC."""
    import json

    from conftest import oneclass

    root = _masked_folder(tmp_path / "images")
    out = tmp_path / "run"
    done = oneclass("train", "recipes/devnet-folder.yaml", "--set", f"dataset.root={root}", "--out", out, "-q",
                    "--set", "patches.resize=32", "--set", "method.devnet.scales=[32]",
                    "--set", "method.devnet.weights=none", "--set", "method.devnet.steps=12",
                    "--set", "train.device=cpu", env={"ONECLASS_CACHE": str(tmp_path / "cache")}, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == ["oneclass: warning: method.devnet.weights: resnet18 has random weights "
                                        "(weights: none); DevNet is meant to fine-tune pretrained features"]
    metrics = json.loads((out / "metrics.json").read_text())
    maps = np.load(out / "maps/test.npy")
    assert metrics["method"] == "devnet" and maps.shape == (metrics["test"]["n"], 32, 32)
    assert metrics["train"]["method"] == {"backbone": "resnet18", "layer": "layer4", "weights": "none"}
    assert 0 <= metrics["test"]["auroc"] <= 1 and 0 <= metrics["test"]["pixel_auroc"] <= 1
    assert 0 <= metrics["test"]["pixel_auroc_per_item"] <= 1 and metrics["test"]["pixel_auroc_items"] > 0
    shown = oneclass("evaluate", out, "--format", "json", "-q")
    assert json.loads(shown.stdout)["groups"][0]["pixel_auroc_per_item_mean"] == \
        pytest.approx(metrics["test"]["pixel_auroc_per_item"])
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert records[0] == {"stage": "train", "backbone": "resnet18 layer4", "weights": "none", "steps": 12,
                          "lr_step_every": records[0]["lr_step_every"]}
    data = json.loads((out / "data.json").read_text())
    assert data["counts"]["train"]["labeled_anomaly"] == 10
