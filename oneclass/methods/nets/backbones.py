"""Pretrained torchvision backbones by name, as feature extractors.

``build_backbone("resnet18", "imagenet", ["layer3", "layer4"])`` gives a module that takes
float images in [0, 1], (N, 1 or 3, H, W), repeats grayscale to three channels,
normalises them as the ImageNet weights expect and returns ``{layer: feature map}``.
The network is cut after the deepest requested layer, so nothing beyond it is built or
run.

Layers: ``layer1`` ... ``layer4`` for the ResNets (default ``layer4``: DevNet puts its
1x1 scoring convolution on ResNet-18 without the fully connected layer); the ReLU
outputs ``relu1_1``, ``relu1_2``, ``relu2_1``, ... ``relu5_3`` (VGG16) or ``relu5_4``
(VGG19) for the VGGs. The VGG default is ``relu3_2``, the layer the perceptual autoencoder
authors' released configurations use most (ninatu/anomaly_detection, configs/dpa: CIFAR-10
at 32 px; Camelyon16 at 16 and 32 px, relu4_2 at 64; NIH relu1_2 at 8, relu2_2 at 16,
relu3_2 at 32 and 64). The paper itself chooses the layer by hyperparameter search; the
DPA method picks its own per resolution (``oneclass.methods.dpa``).

Weights: ``"imagenet"`` (torchvision's IMAGENET1K_V1, downloaded once into torch's hub
cache), ``"none"`` (random initialisation, with a warning) or the path of a local state
dict of the whole torchvision network (the classifier head may be left out).
``Backbone.weights_source`` says which, for the run's records.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import os
import re
import sys
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlparse

import torch
import torchvision.models as tvm
from torch import nn

from oneclass.errors import OneclassError

# IMAGENET1K_V1 rather than DEFAULT: the weights must not change with the torchvision version.
_ARCHS = {
    "resnet18": (tvm.resnet18, tvm.ResNet18_Weights.IMAGENET1K_V1),
    "resnet50": (tvm.resnet50, tvm.ResNet50_Weights.IMAGENET1K_V1),
    "wide_resnet50_2": (tvm.wide_resnet50_2, tvm.Wide_ResNet50_2_Weights.IMAGENET1K_V1),
    "vgg16": (tvm.vgg16, tvm.VGG16_Weights.IMAGENET1K_V1),
    "vgg19": (tvm.vgg19, tvm.VGG19_Weights.IMAGENET1K_V1),
}
BACKBONES = tuple(_ARCHS)
_RESNET_STEM = ("conv1", "bn1", "relu", "maxpool")


def _did_you_mean(word: str, choices) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _arch(name: str, key: str):
    if name not in _ARCHS:
        raise OneclassError(f"{key}: unknown backbone '{name}'{_did_you_mean(name, BACKBONES)}; "
                            f"known: {', '.join(BACKBONES)}")
    builder, weights = _ARCHS[name]
    with torch.device("meta"):  # shapes only: no memory, no time spent on initialisation
        full = builder()
    return full, weights


def _body_and_taps(name: str, full: nn.Module) -> tuple[nn.Sequential, dict[str, str], str]:
    """The feature part of ``full`` as a Sequential, {layer name: child name}, and the
    prefix of the body's keys in the full network's state dict."""
    if name.startswith("vgg"):
        taps, block, conv = {}, 1, 0
        for child, module in full.features.named_children():
            if isinstance(module, nn.Conv2d):
                conv += 1
            elif isinstance(module, nn.ReLU):
                taps[f"relu{block}_{conv}"] = child
            elif isinstance(module, nn.MaxPool2d):
                block, conv = block + 1, 0
        return full.features, taps, "features."
    children = _RESNET_STEM + tuple(f"layer{i}" for i in range(1, 5))
    body = nn.Sequential(OrderedDict((child, getattr(full, child)) for child in children))
    return body, {f"layer{i}": f"layer{i}" for i in range(1, 5)}, ""


def layer_names(name: str, key: str = "method.backbone") -> list[str]:
    """The layer names ``build_backbone`` accepts for backbone ``name``, shallow to deep."""
    full, _ = _arch(name, key)
    return list(_body_and_taps(name, full)[1])


def default_layers(name: str) -> list[str]:
    return ["relu3_2"] if name.startswith("vgg") else ["layer4"]


class Backbone(nn.Module):
    """A truncated torchvision network returning ``{layer: feature map}``; see the module doc."""

    def __init__(self, name: str, body: nn.Sequential, taps: dict[str, str],
                 out_channels: dict[str, int], weights_source: str,
                 mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.name = name
        self.body = body
        self._taps = {child: layer for layer, child in taps.items()}
        self.layers = list(taps)
        self.out_channels = out_channels
        self.weights_source = weights_source
        self.frozen = False
        # Not persistent: the state dict holds the network's weights only.
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor, layers: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
        """``{layer: feature map}`` of ``layers`` (default: all the backbone's); stops
        after the deepest one asked."""
        if x.ndim != 4 or x.shape[1] not in (1, 3) or not x.is_floating_point():
            raise ValueError(f"{self.name}: expects float images (N, 1 or 3, H, W) in [0, 1], "
                             f"got {x.dtype} {tuple(x.shape)}")
        wanted = self.layers if layers is None else list(layers)
        unknown = [layer for layer in wanted if layer not in self.layers]
        if unknown:
            raise ValueError(f"{self.name}: built without layer {unknown[0]!r}; it has {', '.join(self.layers)}")
        x = (x.expand(-1, 3, -1, -1) - self.mean) / self.std
        found = {}
        for child, module in self.body.named_children():
            x = module(x)
            if child in self._taps:
                found[self._taps[child]] = x
                if all(layer in found for layer in wanted):
                    break
        return {layer: found[layer] for layer in wanted}

    def freeze(self) -> Backbone:
        """No gradients, and batch norm keeps its running statistics even under ``train()``."""
        self.requires_grad_(False)
        self.frozen = True
        return self.train(self.training)

    def train(self, mode: bool = True) -> Backbone:
        return super().train(mode and not self.frozen)


def build_backbone(name: str, weights: str | os.PathLike, layers: Sequence[str] | str | None = None,
                   key: str = "method.backbone") -> Backbone:
    """Backbone ``name`` with ``weights`` ("imagenet", "none" or a state-dict path),
    returning the feature maps of ``layers`` (default: ``default_layers(name)``).
    Mistakes raise OneclassError naming ``key``."""
    full, enum = _arch(name, key)
    body, taps, prefix = _body_and_taps(name, full)
    layers = default_layers(name) if layers is None else [layers] if isinstance(layers, str) else layers
    layers = list(dict.fromkeys(layers))
    if not layers:
        raise OneclassError(f"{key}: no layers asked of {name}; valid: {', '.join(taps)}")
    for layer in layers:
        if layer not in taps:
            raise OneclassError(f"{key}: unknown layer '{layer}' for {name}{_did_you_mean(layer, taps)}; "
                                f"valid: {', '.join(taps)}")

    shapes = {k: v.shape for k, v in full.state_dict().items()}
    children = [child for child, _ in body.named_children()]
    body = body[:max(children.index(taps[layer]) for layer in layers) + 1]
    tapped = {taps[layer]: layer for layer in layers}
    out_channels, channels = {}, 3
    for child, module in body.named_children():
        convs = [m.out_channels for m in module.modules() if isinstance(m, nn.Conv2d)]
        channels = convs[-1] if convs else channels
        if child in tapped:
            out_channels[tapped[child]] = channels

    body.to_empty(device="cpu")
    _init(body)
    if weights == "none":
        source = "none"
        warnings.warn(f"{key}: {name} has random weights (weights: none); its features are not pretrained",
                      stacklevel=2)
    else:
        if weights == "imagenet":
            state, source = _imagenet_state(name, enum, key), f"imagenet:{enum.name}"
            what = f"ImageNet weights for {name}"
        else:
            path = Path(weights)
            state, digest = _read_state(path, key), _sha256(path)
            source, what = f"file:{path.resolve()} sha256:{digest[:12]}", f"weights file {path}"
        _check_fits(state, shapes, name, what, key)
        wanted = body.state_dict()
        body.load_state_dict({k[len(prefix):]: v for k, v in state.items()
                              if k.startswith(prefix) and k[len(prefix):] in wanted})
    transforms = enum.transforms()
    return Backbone(name, body, {layer: taps[layer] for layer in layers},
                    {layer: out_channels[layer] for layer in layers}, source,
                    tuple(transforms.mean), tuple(transforms.std))


def load_weights(backbone: Backbone, weights: str | os.PathLike, key: str, meant: str) -> str:
    """Replace ``backbone``'s weights by ``weights`` ("imagenet" or a state-dict path), as
    a method does when its fit starts; returns their source for the run's records. With
    "none" the random weights stay, with a warning that the method is ``meant`` otherwise.
    The global random state is left alone (building draws throwaway initial weights)."""
    from oneclass.engine import keep_global_rng

    if weights == "none":
        warnings.warn(f"{key}: {backbone.name} has random weights (weights: none); {meant}", stacklevel=3)
        return "none"
    with keep_global_rng():
        pretrained = build_backbone(backbone.name, weights, backbone.layers, key=key)
    backbone.body.load_state_dict(pretrained.body.state_dict())
    return pretrained.weights_source


def feature_shapes(backbone: Backbone, sides: Sequence[int], layers: dict[int, list[str]] | None = None
                   ) -> dict[int, dict[str, tuple[int, ...]] | None]:
    """{side: {layer: (C, h, w)}} of ``backbone`` for square inputs of each side, or None
    where the network cannot take that side up to the layers asked (``layers[side]``,
    default all of the backbone's); shapes only (on the meta device)."""
    probe = copy.deepcopy(backbone).to("meta").eval()
    shapes: dict[int, dict[str, tuple[int, ...]] | None] = {}
    for side in sides:
        try:
            with torch.no_grad():
                found = probe(torch.empty(1, 3, side, side, device="meta"), (layers or {}).get(side))
            shapes[side] = {layer: tuple(f.shape[1:]) for layer, f in found.items()}
        except RuntimeError:
            shapes[side] = None
    return shapes


def _init(body: nn.Module) -> None:
    # torchvision's own initialisation of these networks (ResNet and VGG alike).
    for m in body.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            m.reset_parameters()


def _imagenet_state(name: str, enum, key: str) -> dict:
    file_name = os.path.basename(urlparse(enum.url).path)
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    cached = folder / file_name
    if not cached.exists():
        # Not torch.hub.load_state_dict_from_url: it announces the download on stdout,
        # which belongs to the commands' tables.
        print(f"downloading ImageNet weights for {name} to {cached}", file=sys.stderr)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(enum.url, str(cached), progress=False)
        except (OSError, RuntimeError) as e:  # URLError and HTTPError are OSErrors
            reason = (str(getattr(e, "reason", e)).splitlines() or [type(e).__name__])[0]
            raise OneclassError(f"{key}: cannot download ImageNet weights for {name} ({reason}); "
                                f"place {file_name} (from {enum.url}) in {folder}/, "
                                f"or set weights: PATH to a local state-dict file") from None
    return _read_state(cached, key, hint="; delete it to download it again")


def _read_state(path: Path, key: str, hint: str = "") -> dict:
    if not path.is_file():
        raise OneclassError(f"{key}: weights file {path} not found "
                            f"(weights takes imagenet, none or the path of a state-dict file)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure to deserialise is the file's fault
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        if found:
            raise OneclassError(f"{key}: weights file {path} holds objects other than tensors "
                                f"({found[1]}); save the model's state_dict() instead{hint}") from None
        raise OneclassError(f"{key}: cannot read weights file {path}: truncated or not written by "
                            f"torch.save ({type(e).__name__}){hint}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not (isinstance(state, dict) and state
            and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())):
        raise OneclassError(f"{key}: weights file {path} holds no state dict "
                            f"(a dict of tensors, or a dict with a 'state_dict' entry){hint}")
    return state


def _check_fits(state: dict, expected: dict, name: str, what: str, key: str) -> None:
    """Raise naming the first missing, unexpected and reshaped keys; ``expected``: key -> shape."""
    head = "classifier." if name.startswith("vgg") else "fc."

    def optional(k: str) -> bool:  # the head is cut off anyway; old files lack BN counters
        return k.startswith(head) or k.endswith("num_batches_tracked")

    missing = [k for k in expected if k not in state and not optional(k)]
    unexpected = [k for k in state if k not in expected]
    reshaped = [k for k in expected if k in state and state[k].shape != expected[k]]
    problems = []
    for keys, label in ((missing, "missing key"), (unexpected, "unexpected key")):
        if keys:
            more = f" (and {len(keys) - 1} more)" if len(keys) > 1 else ""
            problems.append(f"{label} '{keys[0]}'{more}")
    if reshaped:
        k = reshaped[0]
        problems.append(f"key '{k}' has shape {tuple(state[k].shape)}, {name} needs {tuple(expected[k])}")
    if problems:
        raise OneclassError(f"{key}: {what} does not fit {name}: {'; '.join(problems)}")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
