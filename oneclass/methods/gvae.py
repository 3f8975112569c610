"""c-ss-ms-gVAE (Sharma & Awate) and its family: ms-gVAE, ss-ms-gVAE, ss-gVAE, A0-A4.

One model, configured per variant by five switches (an ablation is a configuration):

- ``multiscale``: latent maps at every scale, or the coarsest only (ss-gVAE, A0-A4);
- ``latent_model``: "gg" -- variational GG latent, the Monte-Carlo KL term of Eq. (1),
  0.5||z||^2 + log G(z; E(X)); "norm" -- z = E^mu(X) and the squared norm 0.5||z||^2
  (A1, A2, A4); "none" -- no latent loss (A3);
- ``image_model``: "gg" -- -log G(X; D(z)) (Eq. 1); "squared" -- ||X - D^mu(z)||^2
  (A2-A4); "none" -- no decoder at all (A4);
- ``semi``: the semi-supervised term L2 of Eq. (3);
- ``classifier``: the latent classifier term L3 of Eq. (4).

Per item, loss = latent term + image term, summed over latent dimensions and pixels.
Objective (Eq. 5): L1 (mean over unlabelled items) + lambda2 L2 + lambda3 L3, with
L2 = mean over labelled normals of the same per-item loss + mean over labelled anomalies
of the *negated* per-item loss.

Bounding the negated term. For a labelled anomaly, -(0.5||z||^2 + ...) and +log G(Y; D(z))
are unbounded below: the encoder can send the anomaly's mean to infinity, the decoder
can make its reconstruction arbitrarily bad, and the loss runs away. We replace the
negated latent part l_lat(Y) and image part l_img(Y) by hinges measured against the
batch's normal items (unlabelled and labelled normal, held constant in the gradient):

    max(0, mean_normal(l_lat) + margin * D - l_lat(Y)) + max(0, mean_normal(l_img) + margin * P - l_img(Y))

with D latent dimensions and P pixel values: an anomaly must cost ``margin`` nats per
dimension more than a normal item, after which it stops pulling. Separate hinges keep
the latent push, which the score reads, from being satisfied by the decoder alone. They
do not keep it from being overruled: in ablation A1 (plain 0.5||z||^2 latent loss, no
classifier) the image push, 8x the latent one at 32 x 32 and D = 128, moves labelled
anomalies towards small codes on some nanofibre splits and its latent score turns over
(benchmarks/results/gvae-a1-push). Nor, with a GG posterior, from being met without
moving E^mu at all: 0.5 E z^2 + E log q(z) rises as the posterior narrows or sharpens
(a review measured +1.1 nats a dimension at scale 0.1 against -1.0 at the prior, more
than the margin's 0.5), and a toy met the hinge with about three quarters of it from
scale and shape. The paper's unbounded term keeps pushing the mean; hinging 0.5 ||E^mu||^2,
the score's own quantity, would too. Left as the benchmarks' rows were made (untried).

Classifier (Eq. 4). The text calls C(z) the probability of the normal class, but Eq. (4)
trains C towards 1 on labelled anomalies and towards 0 on the unlabelled items
(NOTES.md). We implement Eq. (4) as written -- C(z) is the probability of *anomaly* --
each class averaged on its own as in the equation; labelled normals, named among the
arguments of L3 but absent from its sums, join the class-0 side.

Staged warm start (Sec. 3.7, Algorithm 1): "mean" -- non-variational (z = E^mu, the
mode), scales fixed to 1 and shapes to 2, log-scale/log-shape branches frozen and not
run; "scale" -- log-scale branches join, variational from here on; "shape" -- log-shape
branches join (this is ms-gVAE); "semi" -- the L2 term (ss-ms-gVAE); "classifier" --
the classifier joins with L3 (c-ss-ms-gVAE). The first three stages see inliers only
(unlabelled and labelled normal items); the paper names the unlabelled ones for stage 1
and "inlier data" for stages 2-3, and a labelled normal is an inlier. Ablations without
GG parts skip the stages that would train nothing. Without labelled items (gamma = 0,
no labelled normals) the semi-supervised stage is skipped, so ss-ms-gvae equals ms-gvae
there; without labelled anomalies the classifier stage is skipped.

Score (Sec. 3.6): S(U) = ||E^mu(U)||_2 over all latent scales, for every variant but A3.
The paper gives no score for A3, and this one would read a latent nothing trains: A3 has
no latent loss, so ||E^mu|| of a normal item is not pulled small: on the tests' easy set
(3 seeds, 3 epochs) it gave AUROC 0.82, 0.51, 0.57, and the reconstruction error 1.0
each time. A3 is scored by its own
likelihood instead, the squared reconstruction error ||U - D^mu(E^mu(U))||^2 of its image
model at the latent mean -- ss-DCAE's score, which A3 is close to.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import numpy as np
import torch
from torch.nn import functional as F

from oneclass.data.items import LABELED_ANOMALY, LABELED_NORMAL, UNLABELED
from oneclass.data.items import PatchData
from oneclass.engine import TrainingDiverged
from oneclass.errors import OneclassError
from oneclass.maps import gradient_maps
from oneclass.methods import gg
from oneclass.methods.base import Method, masked_mean
from oneclass.methods.nets.multiscale import LatentClassifier, MultiscaleDecoder, MultiscaleEncoder

STAGES = ("mean", "scale", "shape", "semi", "classifier")


@dataclass
class StageEpochs:
    """Epochs per warm-start stage; unset stages train for ``train.epochs``."""

    mean: int | None = None
    scale: int | None = None
    shape: int | None = None
    semi: int | None = None
    classifier: int | None = None


@dataclass(frozen=True)
class Mode:
    """What a forward pass computes in a stage."""

    scale: bool  # log-scale branches run (else every scale is 1)
    shape: bool  # log-shape branches run (else every shape is 2)
    variational: bool  # latent sampled (else z = the mean, the mode)
    classifier: bool


def hinge_push(values: torch.Tensor, anomalous: torch.Tensor, floor: float) -> torch.Tensor:
    """Per-item max(0, mean of the normal items' values + floor - value), held constant
    in the gradient; the bounded stand-in for a negated loss on labelled anomalies."""
    reference = values[~anomalous] if (~anomalous).any() else values
    return torch.clamp(reference.detach().mean() + floor - values, min=0)


def classifier_loss(logits: torch.Tensor, anomalous: torch.Tensor) -> torch.Tensor:
    """L3 of Eq. (4): -mean log C over anomalies - mean log(1 - C) over the rest."""
    return masked_mean(F.softplus(-logits), anomalous) + masked_mean(F.softplus(logits), ~anomalous)


class GVAE(Method):
    """c-ss-ms-gVAE: multiscale GG VAE, semi-supervised, with a latent classifier."""

    name = "c-ss-ms-gvae"
    uses_validation = ("early stopping on validation (train.early_stopping, train.monitor) and the choice of "
                       "lambda2/lambda3 from tune_lambda2/tune_lambda3")
    multiscale: ClassVar[bool] = True
    latent_model: ClassVar[str] = "gg"
    image_model: ClassVar[str] = "gg"
    semi: ClassVar[bool] = True
    classifier: ClassVar[bool] = True

    @dataclass
    class Params:
        scales: int = 4  # S; patches shrink by 2 per scale
        width: int = 16  # channels of the finest encoder block, doubling per scale
        latent_channels: int = 4  # latent channels at the finest scale, doubling per scale
        classifier_hidden: int = 64
        delta: float = 0.1  # GG regularisers (Sec. 3.2; "around 0.15")
        eps: float = 0.1
        tau: float = 0.1
        lambda2: float = 1.0  # weight of L2, the semi-supervised term
        lambda3: float = 1.0  # weight of L3, the classifier term
        margin: float = 0.5  # nats per dimension an anomaly must exceed normals by (see above)
        epochs: StageEpochs = field(default_factory=StageEpochs)
        lr: float | None = None  # Adam's learning rate in every stage; unset: train.lr
        # each stage's epoch kept: last, or best (highest validation AUROC); unset: train.keep
        keep: Literal["last", "best"] | None = None
        tune_lambda2: list[float] = field(default_factory=list)  # grid tried on validation
        tune_lambda3: list[float] = field(default_factory=list)

    @classmethod
    def ignored_params(cls) -> tuple[str, ...]:
        ignored = []
        if not cls.classifier:
            ignored += ["classifier_hidden", "lambda3", "tune_lambda3"]
        if not cls.semi:
            ignored += ["lambda2", "margin", "tune_lambda2"]
        if "gg" not in (cls.latent_model, cls.image_model):
            ignored += ["delta", "eps", "tau"]  # the GG models' regularisers
        return tuple(dict.fromkeys(ignored))

    def __init__(self, params, in_shape):
        super().__init__(params, in_shape)
        channels, size, width = self.in_shape
        p = params
        if size != width or size % 2 ** p.scales or channels not in (1, 3):
            raise OneclassError(f"method {self.name}: needs square 1- or 3-channel patches whose side is a "
                                f"multiple of 2^scales = {2 ** p.scales}, got {channels}x{size}x{width}")
        if not (0 < p.delta < 1 and 0 < p.tau < 2 and p.eps >= 0):
            raise OneclassError(f"method {self.name}: needs 0 < delta < 1, 0 < tau < 2 and eps >= 0 "
                                "(scale 1 and shape 2 must be reachable)")
        self.reg = gg.Regularisers(p.delta, p.eps, p.tau)
        # without a decoder (A4) the loss pulls every normal encoding to the origin and
        # nothing asks the encoder to keep information: as in Deep SVDD (Ruff et al. 2018,
        # Prop. 2), biases would let it output a constant. A4's encoder has none.
        self.encoder = self.add("encoder", MultiscaleEncoder(
            channels, p.scales, p.width, p.latent_channels, self.multiscale, self.latent_model == "gg",
            bias=self.image_model != "none"))
        self.decoder = None
        if self.image_model != "none":
            self.decoder = self.add("decoder", MultiscaleDecoder(
                channels, p.scales, p.width, self.encoder.latent_channels, self.image_model == "gg"))
        for head in [*self.encoder.heads.values(), *([self.decoder.head] if self.decoder else [])]:
            head.start_at(self.reg.fixed_alpha(), self.reg.fixed_beta())
        self.latent_dims = self.encoder.dims(size)
        self.net_classifier = None
        if self.classifier:
            # drawn from a forked generator: the variants share every other draw, so
            # c-ss-ms-gvae without labelled anomalies trains exactly as ms-gvae does
            with torch.random.fork_rng(devices=[]):
                classifier = LatentClassifier(self.latent_dims, p.classifier_hidden)
            self.net_classifier = self.add("classifier", classifier)
        self.lambda2, self.lambda3 = p.lambda2, p.lambda3
        self.chosen: dict | None = None  # what a lambda grid chose (run_info)

    # -- stages ----------------------------------------------------------------------

    @classmethod
    def stages(cls) -> list[str]:
        has_gg = "gg" in (cls.latent_model, cls.image_model)
        return ["mean", *(["scale", "shape"] if has_gg else []), *(["semi"] if cls.semi else []),
                *(["classifier"] if cls.classifier else [])]

    def mode(self, stage: str) -> Mode:
        index = STAGES.index(stage)
        return Mode(scale=index >= 1, shape=index >= 2,
                    variational=self.latent_model == "gg" and index >= 1, classifier=stage == "classifier")

    def trainable(self, mode: Mode) -> list[torch.nn.Parameter]:
        """Set ``requires_grad`` for a stage; returns the parameters the stage trains."""
        for name, param in self.named_parameters():
            frozen = (("log_scale" in name and not mode.scale) or ("log_shape" in name and not mode.shape)
                      or (name.startswith("classifier.") and not mode.classifier))
            param.requires_grad_(not frozen)
        return [param for _, param in self.named_parameters() if param.requires_grad]

    def named_parameters(self):
        for key, module in self.modules.items():
            for name, param in module.named_parameters():
                yield f"{key}.{name}", param

    # -- losses ----------------------------------------------------------------------

    def _fixed(self, value: torch.Tensor | None, like: torch.Tensor, constant: float) -> torch.Tensor:
        return value if value is not None else torch.full((), constant, device=like.device)

    def per_item(self, x: torch.Tensor, mode: Mode) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """Per-item latent and image terms of Eq. (1), and the latent samples."""
        reg = self.reg
        latent = x.new_zeros(len(x))
        zs = []
        for mu, alpha, beta in self.encoder(x, mode.scale, mode.shape):
            if mode.variational:
                alpha = self._fixed(alpha, mu, reg.fixed_alpha())
                beta = self._fixed(beta, mu, reg.fixed_beta())
                z = gg.sample(mu, alpha, beta, reg)
                kl = 0.5 * z ** 2 + gg.log_density(z, mu, alpha, beta, reg)
            else:  # the mode: log G(mu; mu, 1, 2) is a constant and left out
                z = mu.float()
                kl = 0.5 * z ** 2
            if self.latent_model != "none":
                latent = latent + kl.flatten(1).sum(1)
            zs.append(z)
        image = x.new_zeros(len(x))
        if self.decoder is not None:
            mean, alpha, beta = self.decoder(dict(zip(self.encoder.latent_scales, zs)), mode.scale, mode.shape)
            if self.image_model == "gg":
                alpha = self._fixed(alpha, mean, reg.fixed_alpha())
                beta = self._fixed(beta, mean, reg.fixed_beta())
                image = -gg.log_density(x, mean, alpha, beta, reg).flatten(1).sum(1)
            else:
                image = ((x - mean.float()) ** 2).flatten(1).sum(1)
        return latent, image, zs

    def objective(self, batch: dict, mode: Mode, semi: bool) -> torch.Tensor:
        x, roles = batch["x"], batch["roles"]
        latent, image, zs = self.per_item(x, mode)
        loss = latent + image
        if not semi:
            return loss.mean()
        anomalous = roles == LABELED_ANOMALY
        margin = self.params.margin
        push = latent.new_zeros(len(x))
        if self.latent_model != "none":
            push = push + hinge_push(latent, anomalous, margin * self.latent_dims)
        if self.decoder is not None:
            push = push + hinge_push(image, anomalous, margin * x[0].numel())
        l1 = masked_mean(loss, roles == UNLABELED)
        l2 = masked_mean(loss, roles == LABELED_NORMAL) + masked_mean(push, anomalous)
        total = l1 + self.lambda2 * l2
        if mode.classifier:
            logits = self.net_classifier(torch.cat([z.flatten(1) for z in zs], 1))
            total = total + self.lambda3 * classifier_loss(logits, anomalous)
        return total

    # -- training ----------------------------------------------------------------------

    def fit(self, train: PatchData, val: PatchData | None = None) -> None:
        trainer = self.prepare(val)
        inliers = train.subset(train.roles != LABELED_ANOMALY)
        stages = self.stages()
        for stage in (s for s in stages if s in ("mean", "scale", "shape")):
            self._stage(stage, inliers, semi=False)
        supervised = [s for s in stages if s in ("semi", "classifier")]
        if not supervised:
            return
        if not (train.roles != UNLABELED).any():
            trainer.log({"stage": "semi", "skipped": "no labelled items (gamma 0): the model stays ms-gVAE"})
            return
        if "classifier" in supervised and not (train.roles == LABELED_ANOMALY).any():
            trainer.log({"stage": "classifier", "skipped": "no labelled anomalies"})
            supervised.remove("classifier")
        grid = self._grid()
        if len(grid) == 1:
            self.lambda2, self.lambda3 = grid[0]
            for stage in supervised:
                self._stage(stage, train, semi=True)
            return
        self._tune(grid, supervised, train)

    def _grid(self) -> list[tuple[float, float]]:
        p = self.params
        lambda3 = (p.tune_lambda3 or [p.lambda3]) if self.classifier else [p.lambda3]
        return list(itertools.product(p.tune_lambda2 or [p.lambda2], lambda3))

    def _tune(self, grid, stages: list[str], train: PatchData) -> None:
        """Sec. 3.7: lambda2/lambda3 chosen by validation AUROC, each grid point trained
        from the same ms-gVAE warm start; the best point's weights are kept."""
        trainer = self.trainer
        if trainer.val is None:
            raise OneclassError(f"method {self.name}: tune_lambda2/tune_lambda3 need a validation set "
                                "(split.val_fraction > 0)")
        if trainer.resuming:
            raise OneclassError(f"method {self.name}: a run with a lambda grid cannot be resumed; "
                                "train it again")
        warm, best, diverged = self.snapshot(), None, None
        for lambda2, lambda3 in grid:
            self.restore(warm)
            self.lambda2, self.lambda3 = lambda2, lambda3
            try:
                for stage in stages:
                    self._stage(stage, train, semi=True, label=f"{stage}[l2={lambda2:g},l3={lambda3:g}]")
            except TrainingDiverged as error:  # this point cannot be chosen; the others still can
                diverged = error
                trainer.log({"stage": "tune", "lambda2": lambda2, "lambda3": lambda3, "diverged": str(error)})
                continue
            auroc = trainer.val_auroc(self._score)
            trainer.log({"stage": "tune", "lambda2": lambda2, "lambda3": lambda3, "val_auroc": auroc})
            if best is None or auroc > best[0]:
                best = (auroc, (lambda2, lambda3), self.snapshot())
        if best is None:
            raise TrainingDiverged(f"method {self.name}: every lambda2/lambda3 point diverged; the last: {diverged}")
        auroc, (self.lambda2, self.lambda3), state = best
        self.restore(state)
        self.chosen = {"lambda2": self.lambda2, "lambda3": self.lambda3}
        trainer.log({"stage": "tune", "chosen": self.chosen, "val_auroc": auroc})

    def run_info(self) -> dict:
        return {"tuned": self.chosen} if self.chosen else {}

    def _stage(self, stage: str, data: PatchData, semi: bool, label: str | None = None) -> None:
        trainer, epochs = self.trainer, getattr(self.params.epochs, stage)
        mode = self.mode(stage)
        spec = trainer.spec(label or stage, self.trainable(mode), lr=self.params.lr or trainer.cfg.lr,
                            epochs=trainer.cfg.epochs if epochs is None else epochs, keep=self.params.keep)
        trainer.stage(spec, data, lambda batch: self.objective(batch, mode, semi), scorer=self._score)

    # -- inference ---------------------------------------------------------------------

    def _means(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([mu.flatten(1).float() for mu, _, _ in self.encoder(x, False, False)], 1)

    def _score(self, x: torch.Tensor) -> torch.Tensor:
        return self._means(x).norm(dim=1)

    def score(self, data: PatchData) -> np.ndarray:
        return self.map(self._score, data)

    def embed(self, data: PatchData) -> np.ndarray:
        return self.map(self._means, data)

    def explain(self, data: PatchData) -> np.ndarray:
        """|d S(U) / d U| summed over channels, clipped and smoothed (oneclass.maps, DevNet's
        recipe): which pixels move the score."""
        return gradient_maps(self, self._score, data)


class SSMSGVAE(GVAE):
    """ss-ms-gVAE: c-ss-ms-gVAE without the latent classifier."""

    name = "ss-ms-gvae"
    classifier = False


class MSGVAE(SSMSGVAE):
    """ms-gVAE: the unsupervised multiscale GG VAE (stages mean, scale, shape)."""

    name = "ms-gvae"
    supervision = "unsupervised"
    semi = False


class SSGVAE(SSMSGVAE):
    """ss-gVAE (Sharma & Awate, WACV 2022): one coarsest-scale GG latent, no classifier."""

    name = "ss-gvae"
    multiscale = False


class A0(GVAE):
    """A0: c-ss-ms-gVAE with a single coarsest-scale latent."""

    name = "gvae-a0"
    multiscale = False


class A1(A0):
    """A1: A0 without classifier, latent GG model and variational learning; latent loss 0.5||z||^2."""

    name = "gvae-a1"
    classifier = False
    latent_model = "norm"


class A2(A1):
    """A2: A1 with a squared reconstruction error in place of the image GG model."""

    name = "gvae-a2"
    image_model = "squared"


class A3(A2):
    """A3: A2 without the latent loss (close to ss-DCAE); scored by its reconstruction error."""

    name = "gvae-a3"
    latent_model = "none"

    def _score(self, x: torch.Tensor) -> torch.Tensor:
        """The squared reconstruction error at the latent mean (see the module's notes)."""
        return self.per_item(x, Mode(scale=False, shape=False, variational=False, classifier=False))[1]


class A4(A2):
    """A4: A2 without the decoder and its loss (close to Deep SAD); its encoder is bias-free,
    as Deep SAD's is, or it could map everything to the origin."""

    name = "gvae-a4"
    image_model = "none"
