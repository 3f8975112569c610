"""The plugin registry: methods and datasets under short kebab-case names.

Built-in plugins are registered by name with a lazy "module:attribute" target, so that
listing them or looking one up never imports torch unless the plugin itself needs it.
Third-party packages add plugins through the entry-point groups ``oneclass.methods`` and
``oneclass.datasets``; their entry-point name is the plugin name.
"""

from __future__ import annotations

import difflib
import importlib
import re
from dataclasses import dataclass, is_dataclass
from importlib.metadata import entry_points
from typing import Any

from oneclass.errors import OneclassError

_NAME = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")


class UnknownPluginError(OneclassError):
    pass


@dataclass
class _Entry:
    name: str
    target: str | None  # "module:attribute", loaded on first use
    obj: Any = None
    origin: str = "built-in"
    description: str | None = None


def _first_line(text: str | None) -> str:
    return (text or "").strip().splitlines()[0].strip() if (text or "").strip() else ""


class Registry:
    def __init__(self, kind: str, group: str):
        self.kind = kind
        self.group = group
        self._entries: dict[str, _Entry] = {}
        self._discovered = False

    def add(self, name: str, target: str, description: str) -> None:
        """Register a built-in plugin lazily by its import path."""
        self._check_name(name)
        self._entries[name] = _Entry(name, target, description=description)

    def _check_name(self, name: str) -> None:
        if not _NAME.match(name):
            raise ValueError(f"{self.kind} name {name!r} is not kebab-case")
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")

    def _discover(self) -> None:
        if self._discovered:
            return
        self._discovered = True
        for ep in entry_points(group=self.group):
            if ep.name in self._entries:
                continue  # a built-in name cannot be shadowed by a third party
            dist = getattr(ep, "dist", None)
            origin = f"{dist.name} {dist.version}" if dist is not None else "entry point"
            self._entries[ep.name] = _Entry(ep.name, ep.value, origin=origin)

    def names(self) -> list[str]:
        self._discover()
        return sorted(self._entries)

    def get(self, name: str) -> Any:
        self._discover()
        entry = self._entries.get(name)
        if entry is None:
            raise UnknownPluginError(self._unknown_message(name))
        if entry.obj is None:
            module_name, _, attr = entry.target.partition(":")
            try:
                obj = importlib.import_module(module_name)
                for part in filter(None, attr.split(".")):
                    obj = getattr(obj, part)
            except Exception as exc:  # whatever a third party's module raises on import
                raise OneclassError(
                    f"{self.kind} {name!r} ({entry.origin}) failed to load from "
                    f"{entry.target!r}: {type(exc).__name__}: {exc}"
                ) from exc
            # a plugin lacking the protocol fails here, in one line
            where = f"{self.kind} {name!r} ({entry.origin}) from {entry.target!r}"
            if self.kind == "method":
                from oneclass.protocol import check_method_class

                check_method_class(obj, where, name=name)
            else:
                _check_dataset_class(obj, where)
            entry.obj = obj
            if entry.description is None:
                entry.description = _first_line(
                    getattr(obj, "description", None) or getattr(obj, "__doc__", None)
                )
        return entry.obj

    def describe(self) -> list[tuple[str, str, str]]:
        """(name, one-line description, origin) for every plugin, sorted by name."""
        rows = []
        for name in self.names():
            entry = self._entries[name]
            if entry.description is None:
                try:
                    self.get(name)
                except OneclassError as exc:
                    entry.description = f"(failed to load: {exc})"
            rows.append((name, entry.description or "", entry.origin))
        return rows

    def _unknown_message(self, name: str) -> str:
        known = self.names()
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        listing = ", ".join(known) if known else "none installed"
        return f"unknown {self.kind} {name!r}{hint}; known {self.kind}s: {listing}"


def _check_dataset_class(cls: Any, where: str) -> None:
    from oneclass.recipe import hint_problems

    options = getattr(cls, "Options", None)
    if not (isinstance(options, type) and is_dataclass(options)):
        raise OneclassError(f"{where}: not a oneclass dataset: no `Options` dataclass (its recipe options)")
    unreadable = hint_problems(options)
    if unreadable:
        raise OneclassError(f"{where}: `Options` types a recipe cannot give: {', '.join(unreadable)}")


datasets = Registry("dataset", "oneclass.datasets")
methods = Registry("method", "oneclass.methods")

_D = "oneclass.data.datasets"
datasets.add("synthetic", f"{_D}.synthetic:SyntheticDataset",
             "Deterministic fibre-like grayscale textures with defect blobs and masks")
datasets.add("folder", f"{_D}.folder:FolderDataset",
             "Your own images: normal/ and anomalous/<subclass>/ with masks beside or in a parallel tree")
datasets.add("nanofibre", f"{_D}.nanofibre:NanofibreDataset",
             "NanoTWICE SEM images of nanofibrous material with defect masks")
datasets.add("mvtec", f"{_D}.mvtec:MVTecDataset",
             "One MVTec AD category; defect names are the anomaly subclasses")
datasets.add("busi", f"{_D}.busi:BUSIDataset",
             "Breast ultrasound (BUSI): normal, benign and malignant with merged masks")
datasets.add("malaria", f"{_D}.malaria:MalariaDataset",
             "BBBC041 malaria blood smears; infected-cell boxes become anomalous regions")
datasets.add("mnist", f"{_D}.mnist:MNISTDataset",
             "MNIST digits, one-vs-rest: the normal_classes digits are normal, the others anomalous")
datasets.add("camelyon16", f"{_D}.slides:Camelyon16Dataset",
             "CAMELYON16 whole-slide images with tumour polygons (ASAP XML or JSON)")
datasets.add("wsi", f"{_D}.slides:WSIDataset",
             "Any OpenSlide-readable slides with polygon annotations (ASAP XML or JSON)")

_M = "oneclass.methods"
methods.add("deep-svdd", f"{_M}.deep_sad:DeepSVDD",
            "Deep SVDD (Ruff et al. 2018): unsupervised hypersphere around normal data")
methods.add("deep-sad", f"{_M}.deep_sad:DeepSAD",
            "Deep SAD (Ruff et al. 2020): Deep SVDD with labelled normals and anomalies")
methods.add("ss-dcae", f"{_M}.ss_dcae:SSDCAE",
            "Convolutional autoencoder, reconstruction-error score, hinged push on labelled anomalies")
methods.add("ocsvm-hybrid", f"{_M}.svm_hybrid:OCSVMHybrid",
            "OC-SVM-Hybrid: the nu-one-class SVM (RBF) on Deep SVDD autoencoder features")
methods.add("ssad-hybrid", f"{_M}.svm_hybrid:SSADHybrid",
            "SSAD-Hybrid (Goernitz et al.): semi-supervised SSAD (RBF) on Deep SVDD autoencoder features")
methods.add("binclass", f"{_M}.binclass:BinClass",
            "Supervised binary CNN classifier; needs labelled anomalies (gamma > 0)")
methods.add("c-ss-ms-gvae", f"{_M}.gvae:GVAE",
            "c-ss-ms-gVAE (Sharma & Awate): multiscale generalized-Gaussian VAE, semi-supervised, latent classifier")
methods.add("ss-ms-gvae", f"{_M}.gvae:SSMSGVAE", "ss-ms-gVAE: c-ss-ms-gVAE without the latent classifier")
methods.add("ms-gvae", f"{_M}.gvae:MSGVAE", "ms-gVAE: unsupervised multiscale generalized-Gaussian VAE")
methods.add("ss-gvae", f"{_M}.gvae:SSGVAE",
            "ss-gVAE (WACV 2022): semi-supervised GG VAE with one coarsest-scale latent")
methods.add("gvae-a0", f"{_M}.gvae:A0", "Ablation A0: c-ss-ms-gVAE with a single-scale latent")
methods.add("gvae-a1", f"{_M}.gvae:A1",
            "Ablation A1: A0 without classifier, latent GG and variational learning (squared-norm latent loss)")
methods.add("gvae-a2", f"{_M}.gvae:A2", "Ablation A2: A1 with a squared reconstruction error")
methods.add("gvae-a3", f"{_M}.gvae:A3", "Ablation A3: A2 without the latent loss (close to ss-DCAE)")
methods.add("gvae-a4", f"{_M}.gvae:A4", "Ablation A4: A2 without the decoder loss (close to Deep SAD)")
methods.add("ss-vq-vae", f"{_M}.vqvae:SSVQVAE",
            "ss-VQ-VAE (Sharma et al. 2023): VQ-VAE with a bounded negated loss on labelled anomalies")
methods.add("vq-vae", f"{_M}.vqvae:VQVAE", "VQ-VAE (van den Oord et al. 2017), score = ||E(U) - Q(U)||")
methods.add("ss-vae", f"{_M}.vqvae:SSVAE", "ss-VAE: Gaussian VAE with the ss-VQ-VAE negation (no quantisation)")
methods.add("devnet", f"{_M}.devnet:DevNet",
            "DevNet (Pang et al.): deviation loss with a Gaussian prior, top-k MIL over a backbone's feature-map cells")
methods.add("devnet-plain", f"{_M}.devnet:DevNetPlain",
            "DevNet without MIL (the paper's ablation DS): one score of globally averaged features")
methods.add("dpa", f"{_M}.dpa:DPA",
            "Deep perceptual autoencoder (Tuluptceva et al.): relative-perceptual-L1 on VGG features, progressive growing")
methods.add("recode-vae", f"{_M}.rsc_vae:RecodeVAE",
            "Recode-VAE: a VAE (L1 + KL) scored by its recoding's JS divergence and its reconstruction error")
methods.add("rsc-vae-o", f"{_M}.rsc_vae:RSCVAEO",
            "RSC-VAE one-class mode (Zhang & Du): VAE loss plus the recoding's semantic consistency")
methods.add("rsc-vae-d", f"{_M}.rsc_vae:RSCVAED",
            "RSC-VAE distributionally-shifted mode: pseudo-anomalies (flips, rot90, cutout) pushed to N(0, I)")
methods.add("rsc-vae-e", f"{_M}.rsc_vae:RSCVAEE",
            "RSC-VAE extremely-imbalanced mode: labelled anomalies pushed to N(0, I) without reconstruction")
