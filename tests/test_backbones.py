"""Pretrained backbones by name (oneclass.methods.nets.backbones); CPU, offline, small inputs."""

from __future__ import annotations

import hashlib
from urllib.error import URLError

import pytest
import torch
import torchvision
from torch import nn

from oneclass.errors import OneclassError
from oneclass.methods.nets.backbones import (
    BACKBONES,
    build_backbone,
    default_layers,
    layer_names,
)

pytestmark = pytest.mark.filterwarnings("ignore:.*random weights:UserWarning")

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)

RESNET_CHANNELS = {"resnet18": [64, 128, 256, 512], "resnet50": [256, 512, 1024, 2048],
                   "wide_resnet50_2": [256, 512, 1024, 2048]}
VGG_CONVS = {"vgg16": [2, 2, 3, 3, 3], "vgg19": [2, 2, 4, 4, 4]}  # convolutions per block


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny inputs gain nothing from threads, and on a busy machine they slow down a lot."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def expected(name: str, side: int = 32) -> dict[str, tuple[int, int]]:
    """{layer: (channels, spatial side)} for a side x side input."""
    if name in RESNET_CHANNELS:
        return {f"layer{i + 1}": (c, side // 4 // 2 ** i) for i, c in enumerate(RESNET_CHANNELS[name])}
    widths = [64, 128, 256, 512, 512]
    return {f"relu{b + 1}_{c + 1}": (widths[b], side // 2 ** b)
            for b, n in enumerate(VGG_CONVS[name]) for c in range(n)}


def features(backbone, x):
    with torch.no_grad():
        return backbone.eval()(x)


def resnet18_file(tmp_path, name="r18.pt", wrap=False, drop_head=False):
    torch.manual_seed(1)
    model = torchvision.models.resnet18()
    state = {k: v for k, v in model.state_dict().items() if not (drop_head and k.startswith("fc."))}
    path = tmp_path / name
    torch.save({"state_dict": state, "epoch": 3} if wrap else state, path)
    return path, model.state_dict()


@pytest.mark.parametrize("name", BACKBONES)
def test_all_layers_shapes_and_channels(name):
    layers = layer_names(name)
    assert list(expected(name)) == layers
    backbone = build_backbone(name, "none", layers)
    out = features(backbone, torch.rand(1, 3, 32, 32))
    assert list(out) == layers
    for layer, (channels, side) in expected(name).items():
        assert backbone.out_channels[layer] == channels
        assert out[layer].shape == (1, channels, side, side)


def test_defaults_and_caller_order():
    assert default_layers("resnet18") == ["layer4"]
    assert default_layers("vgg19") == ["relu3_2"]
    backbone = build_backbone("vgg16", "none")
    assert backbone.layers == ["relu3_2"] and backbone.out_channels == {"relu3_2": 256}
    backbone = build_backbone("resnet18", "none", ["layer2", "layer1", "layer2"])
    assert backbone.layers == ["layer2", "layer1"]
    assert list(features(backbone, torch.rand(1, 3, 32, 32))) == ["layer2", "layer1"]


def test_network_is_cut_after_the_deepest_layer():
    resnet = build_backbone("resnet18", "none", ["layer2"])
    assert [child for child, _ in resnet.body.named_children()][-1] == "layer2"
    assert not any(k.startswith(("body.layer3", "body.layer4", "body.fc")) for k in resnet.state_dict())
    vgg = build_backbone("vgg16", "none", ["relu1_2"])
    assert len(vgg.body) == 4  # conv, relu, conv, relu


def test_grayscale_is_the_replicated_image():
    backbone = build_backbone("resnet18", "none", ["layer1", "layer3"])
    gray = torch.rand(2, 1, 32, 32)
    one, three = features(backbone, gray), features(backbone, gray.repeat(1, 3, 1, 1))
    for layer in one:
        torch.testing.assert_close(one[layer], three[layer])


def test_imagenet_normalisation_is_applied():
    backbone = build_backbone("resnet18", "none", ["layer4"]).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        manual = backbone.body((x - IMAGENET_MEAN) / IMAGENET_STD)
        raw = backbone.body(x)
    torch.testing.assert_close(features(backbone, x)["layer4"], manual)
    assert not torch.allclose(manual, raw)


@pytest.mark.parametrize("wrap, drop_head", [(False, False), (True, False), (False, True)],
                         ids=["raw", "state_dict-key", "no-fc-head"])
def test_local_state_dict(tmp_path, wrap, drop_head):
    path, state = resnet18_file(tmp_path, wrap=wrap, drop_head=drop_head)
    backbone = build_backbone("resnet18", path, ["layer4"])
    loaded = backbone.body.state_dict()
    assert len(loaded) > 100
    for k, v in loaded.items():
        torch.testing.assert_close(v, state[k], rtol=0, atol=0)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    assert backbone.weights_source == f"file:{path.resolve()} sha256:{digest}"


def test_weights_none_warns_and_says_so():
    with pytest.warns(UserWarning, match="resnet18 has random weights"):
        backbone = build_backbone("resnet18", "none", ["layer1"])
    assert backbone.weights_source == "none"


def one_line_error(*args, **kwargs) -> str:
    with pytest.raises(OneclassError) as info:
        build_backbone(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message and "weights_only=False" not in message
    return message


def test_missing_weights_file(tmp_path):
    message = one_line_error("resnet18", tmp_path / "nope.pt", key="method.devnet.backbone")
    assert message.startswith("method.devnet.backbone: weights file ")
    assert "nope.pt not found" in message and "imagenet, none" in message


def test_truncated_weights_file(tmp_path):
    path, _ = resnet18_file(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    assert f"cannot read weights file {path}: truncated" in one_line_error("resnet18", path)


class NotATensor:
    pass


def test_weights_file_with_objects_or_no_state_dict(tmp_path):
    torch.save({"conv1.weight": NotATensor()}, tmp_path / "obj.pt")
    message = one_line_error("resnet18", tmp_path / "obj.pt")
    assert "holds objects other than tensors (test_backbones.NotATensor)" in message
    torch.save([torch.zeros(1)], tmp_path / "list.pt")
    assert "holds no state dict" in one_line_error("resnet18", tmp_path / "list.pt")


def test_state_dict_of_another_architecture(tmp_path):
    vgg = build_backbone("vgg16", "none", ["relu5_3"])
    torch.save({f"features.{k}": v for k, v in vgg.body.state_dict().items()}, tmp_path / "vgg16.pt")
    message = one_line_error("resnet18", tmp_path / "vgg16.pt")
    assert message.startswith(f"method.backbone: weights file {tmp_path / 'vgg16.pt'} does not fit resnet18: ")
    assert "missing key 'conv1.weight'" in message and "unexpected key 'features.0.weight'" in message


def test_state_dict_with_a_wrong_shape(tmp_path):
    path, state = resnet18_file(tmp_path)
    state["conv1.weight"] = torch.zeros(64, 1, 7, 7)
    torch.save(state, path)
    message = one_line_error("resnet18", path)
    assert "key 'conv1.weight' has shape (64, 1, 7, 7), resnet18 needs (64, 3, 7, 7)" in message
    assert "missing" not in message and "unexpected" not in message


def test_unknown_backbone_and_layer():
    message = one_line_error("resnet19", "none", key="method.backbone")
    assert message.startswith("method.backbone: unknown backbone 'resnet19' (did you mean 'resnet18'?); known: ")
    assert "wide_resnet50_2" in message
    assert "did you mean" not in one_line_error("inception", "none")
    message = one_line_error("vgg16", "none", ["relu5_4"])
    assert "unknown layer 'relu5_4' for vgg16 (did you mean 'relu5_3'?); valid: relu1_1," in message
    assert "valid: layer1, layer2, layer3, layer4" in one_line_error("resnet18", "none", ["layer5"])
    assert "no layers" in one_line_error("resnet18", "none", [])


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty torch hub cache; any download attempt fails as it does without network."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    attempts = []

    def offline(url, dst, *args, **kwargs):
        attempts.append(url)
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    folder = tmp_path / "torch" / "hub" / "checkpoints"
    return folder, attempts


@pytest.mark.parametrize("name, file_name", [("resnet18", "resnet18-f37072fd.pth"),
                                             ("vgg19", "vgg19-dcbb9e9d.pth")])
def test_imagenet_without_network(hub, capsys, name, file_name):
    folder, attempts = hub
    message = one_line_error(name, "imagenet", key="method.backbone")
    assert message.startswith(f"method.backbone: cannot download ImageNet weights for {name} "
                              "([Errno -3] Temporary failure in name resolution); ")
    assert f"place {file_name}" in message and f"in {folder}/" in message and "weights: PATH" in message
    assert len(attempts) == 1 and attempts[0].endswith(file_name)
    assert capsys.readouterr().out == ""  # stdout belongs to the commands' tables


def test_imagenet_from_the_hub_cache(hub, tmp_path):
    folder, attempts = hub
    folder.mkdir(parents=True)
    _, state = resnet18_file(folder, name="resnet18-f37072fd.pth")
    backbone = build_backbone("resnet18", "imagenet", ["layer1"])
    assert attempts == [] and backbone.weights_source == "imagenet:IMAGENET1K_V1"
    torch.testing.assert_close(backbone.body.conv1.weight, state["conv1.weight"], rtol=0, atol=0)


def test_imagenet_cache_file_corrupted(hub):
    folder, _ = hub
    folder.mkdir(parents=True)
    (folder / "resnet18-f37072fd.pth").write_bytes(b"not a checkpoint")
    message = one_line_error("resnet18", "imagenet")
    assert f"cannot read weights file {folder / 'resnet18-f37072fd.pth'}" in message
    assert "delete it to download it again" in message


def bn_stats(module: nn.Module) -> list[torch.Tensor]:
    return [b.clone() for n, b in module.named_buffers() if "running" in n]


def test_freeze_keeps_batch_norm_statistics():
    x = torch.rand(2, 3, 32, 32)
    backbone = build_backbone("resnet18", "none", ["layer1"])
    before = bn_stats(backbone)
    backbone.train()(x)
    assert any(not torch.equal(a, b) for a, b in zip(before, bn_stats(backbone), strict=True))  # the test can fail

    frozen = build_backbone("resnet18", "none", ["layer1"]).freeze()
    parent = nn.ModuleDict({"backbone": frozen, "head": nn.Conv2d(64, 1, 1)}).train()
    before = bn_stats(frozen)
    frozen(x)
    assert parent.head.training and not frozen.training
    assert not any(m.training for m in frozen.modules())
    assert all(torch.equal(a, b) for a, b in zip(before, bn_stats(frozen), strict=True))
    assert not any(p.requires_grad for p in frozen.parameters())


def test_bad_input_tensor():
    backbone = build_backbone("resnet18", "none", ["layer1"])
    for x in (torch.rand(1, 4, 32, 32), torch.rand(3, 32, 32), torch.zeros(1, 3, 32, 32, dtype=torch.uint8)):
        with pytest.raises(ValueError, match="expects float images"):
            backbone(x)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_runs_on_cuda():
    backbone = build_backbone("vgg19", "none", ["relu1_2", "relu3_2"]).cuda().freeze()
    out = backbone(torch.rand(2, 1, 32, 32, device="cuda"))
    assert out["relu3_2"].device.type == "cuda" and out["relu3_2"].shape == (2, 256, 8, 8)
