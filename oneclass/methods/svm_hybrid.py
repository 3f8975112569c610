"""OC-SVM-Hybrid and SSAD-Hybrid: kernel machines on autoencoder features, the
c-ss-ms-gVAE paper's baselines (ii) and (iv) (c-ss-ms-gvae.txt Sec. 4, after Erfani et
al. 2016), as the ss-VQ-VAE paper builds them (ss-vq-vae.txt Sec. IV-A): "OC-SVM and
SSAD on the bottleneck representations from the converged autoencoder in DeepSVDD",
with the RBF kernel.

1. Deep SVDD's autoencoder (oneclass.methods.nets.lenet, bias-free, ``rep_dim``) is
   trained by the squared reconstruction error on the training items that are not
   labelled anomalies -- Deep SVDD's training set, the same for both methods, so they
   differ in the kernel machine alone;
2. the encoder's outputs are the features; the RBF width is gamma = g / (d Var(F))
   (scikit-learn's 'scale' rule times g, so that one grid carries across data sets of
   other feature scales), g from ``kernel_gammas``, and the g of best validation AUROC
   is kept (the papers tune free parameters on validation), the middle one without a
   validation set. Ruff et al. searched 2^-7 .. 2^2 for their features' absolute gamma;
   relative to 'scale' the best lay far higher here (64 on the MNIST digits, 0.99 test
   AUROC against 0.81 at 1: an item's neighbours are much closer than the average
   pair), hence 4^-1 .. 4^4;
3. ``ocsvm-hybrid``: the nu-one-class SVM on the unlabelled and labelled-normal items;
   ``ssad-hybrid``: SSAD (oneclass.ssad) with the labelled items' labels, its per-item
   bound the OC-SVM's, 1 / (nu n), times ``eta_labeled`` for labelled items, and its
   margin weight ``kappa`` in units of one labelled item's bound (the convex SSAD's
   usual kappa = 1 with bounds of 1). Without labelled items SSAD is the OC-SVM.

The score is -f(x) = rho - sum_i a_i c_i k(x_i, x): positive outside the description.
Neither paper gives nu; we take 0.1, the share of anomalies the recipes pollute the
training set with.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.metrics.pairwise import euclidean_distances
from torch import nn

from oneclass.data.items import LABELED_ANOMALY, LABELED_NORMAL, UNLABELED, PatchData
from oneclass.errors import OneclassError
from oneclass.maps import gradient_maps
from oneclass.methods.base import Method
from oneclass.methods.nets.lenet import AutoEncoder, Encoder, check_shape
from oneclass.ssad import ssad_dual

#: the RBF widths tried, in units of scikit-learn's gamma='scale' (see above)
KERNEL_GAMMAS = (0.25, 1.0, 4.0, 16.0, 64.0, 256.0)
#: the dual is dense: n items take about 5 n^2 doubles at the peak with labelled items (the
#: distances, the kernel, the ADMM's matrices and their Cholesky factor; 3 n^2 without,
#: libsvm's path) and an n^3 factorisation (1,500: 90 MB, a second; 12,000: 5.8 GB, minutes)
MAX_ITEMS = 12_000
#: a support vector carries weight above this share of the largest
SUPPORT_CUTOFF = 1e-6


class _KernelDescription(nn.Module):
    """The kernel machine's solution: support vectors, their signed weights a_i c_i, the
    RBF gamma and the offset rho. Its sizes follow the training set, so loading takes
    the saved shapes."""

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("support", torch.zeros(0, dim))
        self.register_buffer("weight", torch.zeros(0))
        self.register_buffer("gamma", torch.zeros((), dtype=torch.float64))
        self.register_buffer("rho", torch.zeros((), dtype=torch.float64))

    def _load_from_state_dict(self, state, prefix, *args, **kwargs):
        for name in ("support", "weight"):
            if prefix + name in state:
                setattr(self, name, torch.empty_like(state[prefix + name], device=getattr(self, name).device))
        super()._load_from_state_dict(state, prefix, *args, **kwargs)

    def set(self, support: np.ndarray, weight: np.ndarray, gamma: float, rho: float) -> None:
        device = self.weight.device
        self.support = torch.as_tensor(support, dtype=torch.float32, device=device)
        self.weight = torch.as_tensor(weight, dtype=torch.float32, device=device)
        self.gamma.fill_(gamma)
        self.rho.fill_(rho)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """-f(x) for rows of features: positive outside the description."""
        # without the matrix-product shortcut, which cdist takes for some sizes only: an
        # item's distances must not depend on the batch it is scored in
        with torch.autocast(features.device.type, enabled=False):  # float16 would zero small kernel values
            sq = torch.cdist(features.float(), self.support, compute_mode="donot_use_mm_for_euclid_dist").square()
            return self.rho.float() - torch.exp(-self.gamma.float() * sq) @ self.weight


def _check_size(method: Method, n: int) -> None:
    if n > MAX_ITEMS:
        method._fail(f"the kernel machine's dual is dense in the training items: {n} would need about "
                     f"{40 * n ** 2 / 2 ** 30:.0f} GiB; at most {MAX_ITEMS} (set split.train_size)")


class OCSVMHybrid(Method):
    """OC-SVM-Hybrid: the nu-one-class SVM (RBF) on Deep SVDD autoencoder features."""

    name = "ocsvm-hybrid"
    supervision = "unsupervised"
    uses_validation = "the RBF width: the kernel_gammas point of best validation AUROC"

    @dataclass
    class Params:
        rep_dim: int = 128  # the autoencoder's bottleneck: the features' dimension
        ae_epochs: int | None = None  # autoencoder training; null: train.epochs
        nu: float = 0.1  # at most this share of the training items lies outside (the recipes' pollution)
        kernel_gammas: list[float] = field(default_factory=lambda: list(KERNEL_GAMMAS))  # x 'scale'; best on validation

    def __init__(self, params, in_shape):
        super().__init__(params, in_shape)
        check_shape(self.name, self.in_shape)
        if not 0 < params.nu <= 1:
            self._fail(f"nu must lie in (0, 1], got {params.nu}")
        if not params.kernel_gammas or any(not g > 0 for g in params.kernel_gammas):
            self._fail(f"kernel_gammas must be positive numbers, got {params.kernel_gammas}")
        if params.ae_epochs is not None and params.ae_epochs < 1:
            self._fail(f"ae_epochs must be >= 1 (or null: train.epochs), got {params.ae_epochs}")
        channels, size, _ = self.in_shape
        self.encoder = self.add("encoder", Encoder(channels, size, params.rep_dim, bias=False))
        self.svm = self.add("svm", _KernelDescription(params.rep_dim))
        self.kernel_gamma: float | None = None  # the grid's g the fit kept

    def _fail(self, message: str) -> None:
        raise OneclassError(f"method.{self.name}: {message}")

    def machine_items(self, train: PatchData) -> PatchData:
        """The items the kernel machine learns from, roles as its labels come."""
        kept = train.subset(train.roles != LABELED_ANOMALY)
        kept.roles = np.zeros_like(kept.roles)
        return kept

    def bounds(self, roles: np.ndarray) -> tuple[np.ndarray, float]:
        """Per-item upper bounds eta and the margin weight kappa."""
        return np.full(len(roles), 1.0 / (self.params.nu * len(roles))), 0.0

    def fit(self, train: PatchData, val: PatchData | None = None) -> None:
        p, trainer = self.params, self.prepare(val)
        if train.roles is None:
            train = PatchData(train.images, train.rows, roles=np.zeros(len(train), np.int8))
        _check_size(self, len(self.machine_items(train)))  # before the autoencoder trains
        normal = train.subset(train.roles != LABELED_ANOMALY)
        channels, size, _ = self.in_shape
        ae = self.add("ae", AutoEncoder(channels, size, p.rep_dim, bias=False))
        ae.encoder = self.encoder  # the features are the trained encoder's

        def reconstruction(batch):
            return ((ae(batch["x"]) - batch["x"]) ** 2).flatten(1).sum(1).mean()

        epochs = {} if p.ae_epochs is None else {"epochs": p.ae_epochs}
        trainer.stage(trainer.spec("autoencoder", ae.parameters(), **epochs), normal, reconstruction)
        del self.modules["ae"]  # the decoder is not part of the model
        self._fit_machine(self.machine_items(train), trainer)

    def _fit_machine(self, items: PatchData, trainer) -> None:
        p = self.params
        _check_size(self, len(items))
        features = self.map(self.encoder, items).astype(np.float64)
        roles = np.asarray(items.roles)
        labels = np.where(roles == LABELED_ANOMALY, -1, np.where(roles == LABELED_NORMAL, 1, 0))
        eta, kappa = self.bounds(roles)
        distances = euclidean_distances(features, squared=True)
        unit = 1.0 / (features.shape[1] * max(features.var(), 1e-12))  # scikit-learn's gamma='scale'
        signs = np.where(labels == -1, -1.0, 1.0)  # c_i of oneclass.ssad
        grid = sorted(p.kernel_gammas)
        choose = len(grid) > 1 and trainer.val is not None and len(np.unique(trainer.val.labels)) == 2
        best = None  # (validation AUROC, g, the machine's set() arguments)
        for g in grid if choose else [grid[len(grid) // 2]]:
            gamma = g * unit
            a, rho, iterations = ssad_dual(np.exp(-gamma * distances), labels, eta, kappa)
            keep = a > SUPPORT_CUTOFF * a.max()
            machine = (features[keep], (a * signs)[keep], gamma, rho)
            self.svm.set(*machine)
            self.kernel_gamma = g
            auroc = trainer.val_auroc(self._score) if choose else None
            trainer.log({"stage": "kernel", "kernel_gamma": g, "rbf_gamma": gamma, "support_vectors": int(keep.sum()),
                         "iterations": iterations, **({"val_auroc": auroc} if choose else {})})
            if choose and (best is None or auroc > best[0] or np.isnan(best[0])):
                best = (auroc, g, machine)
        if choose:
            auroc, self.kernel_gamma, machine = best
            self.svm.set(*machine)
            trainer.log({"stage": "kernel", "chosen": {"kernel_gamma": self.kernel_gamma}, "val_auroc": auroc})

    def _score(self, x: torch.Tensor) -> torch.Tensor:
        return self.svm(self.encoder(x))

    def score(self, data: PatchData) -> np.ndarray:
        return self.map(self._score, data)

    def embed(self, data: PatchData) -> np.ndarray:
        return self.map(self.encoder, data)

    def explain(self, data: PatchData) -> np.ndarray:
        """The gradient map of the score (oneclass.maps, DevNet's recipe)."""
        return gradient_maps(self, self._score, data)

    def run_info(self) -> dict:
        return {"kernel_gamma": self.kernel_gamma, "rbf_gamma": float(self.svm.gamma),
                "support_vectors": len(self.svm.weight)}


class SSADHybrid(OCSVMHybrid):
    """SSAD-Hybrid: semi-supervised SSAD (RBF) on Deep SVDD autoencoder features."""

    name = "ssad-hybrid"
    supervision = "semi-supervised"

    @dataclass
    class Params(OCSVMHybrid.Params):
        eta_labeled: float = 1.0  # a labelled item's bound against an unlabelled one's
        # the margin's weight, in units of one labelled item's bound: the kappa/C ratio of
        # Goernitz et al. (C = 1 / (nu n_u) here), not its size against rho's coefficient,
        # which Ruff's kappa = C = 1 sets about n_u nu times larger
        kappa: float = 1.0

    def __init__(self, params, in_shape):
        super().__init__(params, in_shape)
        if not params.eta_labeled > 0 or params.kappa < 0:
            self._fail(f"eta_labeled must be positive and kappa not negative, got {params.eta_labeled}, "
                       f"{params.kappa}")

    def machine_items(self, train: PatchData) -> PatchData:
        return train

    def bounds(self, roles: np.ndarray) -> tuple[np.ndarray, float]:
        p = self.params
        unlabelled = 1.0 / (p.nu * max(int((roles == UNLABELED).sum()), 1))
        eta = np.where(roles == UNLABELED, unlabelled, p.eta_labeled * unlabelled)
        labelled = int((roles != UNLABELED).sum())
        if labelled and p.kappa >= labelled:
            self._fail(f"kappa ({p.kappa:g}) must be below the number of labelled training items ({labelled})")
        return eta, p.kappa * p.eta_labeled * unlabelled
