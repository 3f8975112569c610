"""RSC-VAE (Zhang & Du, recoding semantic consistency VAE; rsc-vae.txt, NOTES.md) in its
three training modes, and the Recode-VAE baseline it is compared with.

An encoder F gives q(z|x) = N(mu, diag sigma^2), a decoder G the reconstruction
x^ = G(z), and F recodes it: q(z^|x^) = N(mu^, diag sigma^^2). Per item (Eqs. 4-9):

    l_recon = ||x - x^||_1                 l_enc1 = KL(q(z|x) || N(0, I))
    l_enc2 = KL(q(z^|x^) || N(0, I))       l_mut = JS(q(z|x) || q(z^|x^))
    l_vae = l_recon + l_enc1               l_consist = l_enc2 + l_mut

- ``recode-vae`` trains l_vae alone (the recoding enters only the score);
- ``rsc-vae-o`` (one-class, Eq. 10): l_normal = l_vae + lambda l_consist;
- ``rsc-vae-d`` (distributionally shifted, Eqs. 11-12): each training item becomes a
  pseudo-anomaly ds(x) with probability ``dsa_p`` (flips / rot90 for digits, cutout for
  textures) and is trained with beta (l_enc1 + lambda l_consist)(ds(x)), no reconstruction;
- ``rsc-vae-e`` (extremely imbalanced, Eqs. 13-14): the same term, weighted by beta, on
  the labelled anomalies (DSA optional, off by default); it refuses to train without them.

Score (Eq. 15): s = alpha l_mut(x) / E[l_mut] + (1 - alpha) l_recon(x) / E[l_recon], with
z = mu at inference. Choices where the paper is silent or ambiguous:

- Eq. 7 prints N(mu^, Sigma); we read the recoding's own Sigma^ (a typo: the KL of the
  recoding's posterior).
- l_mut: the JS divergence of two diagonal Gaussians has no closed form and does not add
  over dimensions. ``js: gauss-hermite`` (default) sums the per-dimension JS, each by
  ``js_nodes``-point Gauss-Hermite quadrature: a surrogate of the joint JS (it can exceed
  ln 2), but deterministic and smooth, so scores are exactly reproducible and training
  gradients noise-free. ``js: monte-carlo`` estimates the joint JS from ``js_samples``
  reparameterised draws of each distribution (unbiased; noisy; at scoring the same fixed
  draws serve every item, from a private generator, so scores repeat whatever the batch).
- E[.] in Eq. 15: over the training normals (labelled anomalies and pseudo-anomalies left
  out), computed when training ends (and after every epoch when a validation set is
  scored, at the cost of a forward pass over them) and kept in the model: the paper leaves the set
  unstated, and a user scoring one image has no test set to average over. Eq. 16's min-max
  over the test set is monotone (no AUROC changes) and is left out.
- l_recon is the L1 norm (a sum over pixels), the KL terms sums over latent dimensions, as
  written; the batch loss is their mean over items (the paper's sum only rescales the lr).
- the decoder ends in a sigmoid (images in [0, 1]); log-variances are clamped to
  [-10, 10] so that exp() cannot overflow at lr 0.01.
- the networks (``network``): ``conv``, the paper's four 3x3 convolutions (stride 2,
  batch norm, LeakyReLU 0.2) then a dense layer to (mu, log sigma^2), for square items
  whose side is a multiple of 16 (MNIST: 28 resized to 32, as in the paper); ``resnet``,
  ResNet-18's layout with every width 64 for 256 px images (side a multiple of 32). The
  paper does not describe its decoders: ours mirror the encoders (4x4 transposed
  convolutions; nearest upsampling and blocks).
- the paper picks the epoch with the best *test* AUROC (and on MVTec the best beta on
  test); here the epoch is the last, or the best on validation (``train.keep: best``), and
  beta can be chosen on validation with a ``select:`` grid: honest figures, which may sit
  below the paper's.
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from torch import nn

from oneclass.augment import cutout
from oneclass.data.items import LABELED_ANOMALY, PatchData
from oneclass.errors import OneclassError
from oneclass.methods.base import Method

DSA_OPS = ("hflip", "vflip", "rot90", "cutout:FRAC")
LOGVAR_LIMIT = 10.0
_LOG2 = math.log(2.0)
_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def kl_to_standard(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag e^logvar) || N(0, I)) per row (Eqs. 5, 7)."""
    return 0.5 * (mu * mu + logvar.exp() - 1 - logvar).sum(1)


def _log_normal(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    return -0.5 * ((z - mu) ** 2 / logvar.exp() + logvar) - _HALF_LOG_2PI


@functools.lru_cache(maxsize=4)
def _hermite(nodes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Gauss-Hermite nodes and weights / sqrt(pi), once per node count (float64, CPU)."""
    t, w = np.polynomial.hermite.hermgauss(nodes)
    return torch.from_numpy(t), torch.from_numpy(w / math.sqrt(math.pi))


def js_gauss_hermite(mu1, logvar1, mu2, logvar2, nodes: int = 20) -> torch.Tensor:
    """Sum over dimensions of the per-dimension JS divergence of two diagonal Gaussians
    (rows of (N, D) means and log-variances), each by Gauss-Hermite quadrature:
    E_P[f] = pi^-1/2 sum_i w_i f(mu + sqrt(2) sigma t_i)."""
    t, w = _hermite(nodes)
    t, w = t.to(mu1.device, mu1.dtype), w.to(mu1.device, mu1.dtype)

    def half(mu_a, logvar_a, mu_b, logvar_b):  # KL(A || M) per dimension, M = (A + B) / 2
        z = mu_a[..., None] + math.sqrt(2) * (0.5 * logvar_a).exp()[..., None] * t
        log_a = _log_normal(z, mu_a[..., None], logvar_a[..., None])
        log_b = _log_normal(z, mu_b[..., None], logvar_b[..., None])
        log_m = torch.logaddexp(log_a, log_b) - _LOG2
        return ((log_a - log_m) * w).sum(-1)

    per_dim = 0.5 * (half(mu1, logvar1, mu2, logvar2) + half(mu2, logvar2, mu1, logvar1))
    return per_dim.sum(1)


def js_monte_carlo(mu1, logvar1, mu2, logvar2, samples: int = 16,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """The joint JS divergence of two diagonal Gaussians per row, from ``samples``
    reparameterised draws of each, drawn on the CPU: from torch's global generator, a
    fresh draw per row (training); from ``generator`` (scoring), the same standard-normal
    draws for every row, so an item's score does not depend on its place in a batch."""

    def draws(mu, logvar):
        rows = 1 if generator is not None else len(mu)
        eps = torch.randn((samples, rows, mu.shape[1]), generator=generator, dtype=mu.dtype).to(mu.device)
        return mu + (0.5 * logvar).exp() * eps  # (S, N, D)

    def half(z, mu_a, logvar_a, mu_b, logvar_b):
        log_a = _log_normal(z, mu_a, logvar_a).sum(-1)
        log_b = _log_normal(z, mu_b, logvar_b).sum(-1)
        return (log_a - (torch.logaddexp(log_a, log_b) - _LOG2)).mean(0)

    js = 0.5 * (half(draws(mu1, logvar1), mu1, logvar1, mu2, logvar2)
                + half(draws(mu2, logvar2), mu2, logvar2, mu1, logvar1))
    # a finite sample can put the estimate below 0 where the JS is near 0: clamped when
    # scoring, as the JS is never negative (a mean below 0 over the normals would make Eq. 15
    # divide by it); not in training, where the clamp would bias the term and stop its gradient
    return js if generator is None else js.clamp_min(0)


def parse_dsa(specs: list[str], key: str) -> list[tuple[str, float | None]]:
    """DSA transforms: hflip, vflip, rot90 (90 degrees), cutout:FRAC (FRAC in (0, 1))."""
    ops = []
    for item in specs if isinstance(specs, list) else [specs]:
        name, sep, text = str(item).partition(":")
        if name in ("hflip", "vflip", "rot90") and not sep:
            ops.append((name, None))
            continue
        if name == "cutout" and sep:
            try:
                frac = float(text)
            except ValueError:
                frac = math.nan
            if 0 < frac < 1:
                ops.append((name, frac))
                continue
        raise OneclassError(f"{key}: unknown DSA transform {item!r}; valid: {', '.join(DSA_OPS)} "
                            f"(FRAC in (0, 1))")
    if not ops:
        raise OneclassError(f"{key}: empty; give at least one of {', '.join(DSA_OPS)}")
    return ops


def shift(x: torch.Tensor, ops: list[tuple[str, float | None]]) -> torch.Tensor:
    """ds(x) (Sec. 3.4): each item gets a random non-empty subset of ``ops`` (1 to all of
    them, uniformly; the paper's digits: 1-3 of hflip, vflip, rot90), applied in list
    order. Draws from torch's global generator (seeded and checkpointed by the trainer)."""
    n = len(x)
    count = torch.randint(1, len(ops) + 1, (n,))
    order = torch.rand(n, len(ops)).argsort(1)
    chosen = order < count[:, None]  # the first `count` of a random order of the ops
    out = x
    for j, (name, value) in enumerate(ops):
        use = chosen[:, j].to(x.device).view(-1, 1, 1, 1)
        if name == "hflip":
            changed = out.flip(3)
        elif name == "vflip":
            changed = out.flip(2)
        elif name == "rot90":
            changed = out.rot90(1, (2, 3))
        else:
            changed = cutout(out, value)
        out = torch.where(use, changed, out)
    return out


class _ConvEncoder(nn.Module):
    def __init__(self, channels: int, side: int, width: int, latent: int):
        super().__init__()
        layers, c = [], channels
        for i in range(4):
            layers += [nn.Conv2d(c, width << i, 3, stride=2, padding=1), nn.BatchNorm2d(width << i),
                       nn.LeakyReLU(0.2)]
            c = width << i
        self.body = nn.Sequential(*layers, nn.Flatten())
        self.head = nn.Linear(c * (side // 16) ** 2, 2 * latent)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.head(self.body(x)).chunk(2, dim=1)
        return mu, logvar.clamp(-LOGVAR_LIMIT, LOGVAR_LIMIT)


class _ConvDecoder(nn.Module):
    def __init__(self, channels: int, side: int, width: int, latent: int):
        super().__init__()
        self.shape = (width << 3, side // 16, side // 16)
        self.head = nn.Linear(latent, int(np.prod(self.shape)))
        layers = []
        for i in (3, 2, 1):
            layers += [nn.ConvTranspose2d(width << i, width << (i - 1), 4, stride=2, padding=1),
                       nn.BatchNorm2d(width << (i - 1)), nn.LeakyReLU(0.2)]
        self.body = nn.Sequential(*layers, nn.ConvTranspose2d(width, channels, 4, stride=2, padding=1), nn.Sigmoid())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.body(self.head(z).view(-1, *self.shape))


class _Block(nn.Module):
    """ResNet-18's basic block (two 3x3 convolutions with batch norm, identity or strided
    1x1 shortcut) at one width, LeakyReLU 0.2."""

    def __init__(self, width: int, stride: int = 1):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width),
                                  nn.LeakyReLU(0.2), nn.Conv2d(width, width, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(width))
        self.shortcut = (nn.Identity() if stride == 1 else
                         nn.Sequential(nn.Conv2d(width, width, 1, stride, bias=False), nn.BatchNorm2d(width)))
        self.act = nn.LeakyReLU(0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.shortcut(x))


class _ResNetEncoder(nn.Module):
    """ResNet-18's layout with every width ``width`` (the paper's 64 for 256 px images):
    a 7x7 stride-2 stem and max pooling, four stages of two blocks (strides 1, 2, 2, 2),
    then a dense layer to (mu, log sigma^2); a side / 32 feature map."""

    def __init__(self, channels: int, side: int, width: int, latent: int):
        super().__init__()
        stages = [_Block(width, stride) for first in (1, 2, 2, 2) for stride in (first, 1)]
        self.body = nn.Sequential(nn.Conv2d(channels, width, 7, 2, 3, bias=False), nn.BatchNorm2d(width),
                                  nn.LeakyReLU(0.2), nn.MaxPool2d(3, 2, 1), *stages, nn.Flatten())
        self.head = nn.Linear(width * (side // 32) ** 2, 2 * latent)

    forward = _ConvEncoder.forward


class _ResNetDecoder(nn.Module):
    """The encoder mirrored (the paper does not describe its decoder): a dense layer to a
    side / 32 map, five x2 nearest upsamplings each followed by a block, a 3x3 convolution
    to the image channels and a sigmoid."""

    def __init__(self, channels: int, side: int, width: int, latent: int):
        super().__init__()
        self.shape = (width, side // 32, side // 32)
        self.head = nn.Linear(latent, int(np.prod(self.shape)))
        ups = [m for _ in range(5) for m in (nn.Upsample(scale_factor=2, mode="nearest"), _Block(width))]
        self.body = nn.Sequential(*ups, nn.Conv2d(width, channels, 3, 1, 1), nn.Sigmoid())

    forward = _ConvDecoder.forward


NETWORKS = {"conv": (_ConvEncoder, _ConvDecoder, 16), "resnet": (_ResNetEncoder, _ResNetDecoder, 32)}


class _Expectations(nn.Module):
    """E[l_mut] and E[l_recon] over the training normals, for the score (Eq. 15)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mut", torch.ones(()))
        self.register_buffer("recon", torch.ones(()))


@dataclass
class _Params:
    network: Literal["conv", "resnet"] = "conv"  # conv: 28/32 px digits (the paper); resnet: 256 px images
    latent: int = 32  # latent dimensions (the paper does not say)
    width: int = 32  # conv: the first convolution's channels, doubled at each of the four; resnet: all (64)
    lam: float = 0.1  # lambda: the weight of l_consist (fixed in the paper)
    alpha: float = 0.5  # the score's weight of l_mut against l_recon (Eq. 15)
    js: Literal["gauss-hermite", "monte-carlo"] = "gauss-hermite"  # the l_mut estimator
    js_nodes: int = 20  # Gauss-Hermite nodes per dimension
    js_samples: int = 16  # Monte-Carlo draws of each distribution
    beta: float = 1.0  # weight of the pseudo-anomalies' / labelled anomalies' term (1, 5 or 10)
    dsa: list[str] = field(default_factory=lambda: ["hflip", "vflip", "rot90"])  # pseudo-anomaly ops, 1 to all at random; textures: [cutout:0.25]
    dsa_p: float = 0.01  # share of training items turned into pseudo-anomalies (digits 1%, textures 5%)
    lr: float | None = 0.01  # Adam, cosine annealing
    t_max: int = 50  # epochs of the cosine schedule's half period
    epochs: int | None = 500  # the paper's; recipes train shorter
    batch_size: int | None = 32  # the paper: 32 for digits, 8 for 256 px images
    augment: list[str] = field(default_factory=list)  # e.g. [hflip, vflip, rotate:5] (the paper's MVTec)


def _warn_if_kept_at_a_peak(epochs: int, t_max: int, keep: str) -> None:
    """PyTorch's cosine annealing, the paper's, rises again after each t_max epochs; the
    paper's 500 epochs at t_max 50 end at the full learning rate, and it reports the epoch
    of best test AUROC. Kept last, such a run ends on its noisiest epochs."""
    share = 0.5 * (1 + math.cos(math.pi * (epochs - 1) / t_max))  # of the peak, in the last epoch
    if keep == "last" and epochs > t_max and share > 0.5:  # it has come back up
        warnings.warn(f"rsc-vae: the last of {epochs} epochs trains at {share:.0%} of the peak learning rate "
                      f"(cosine, t_max {t_max}), and the last epoch is kept; end in a trough (epochs an odd "
                      f"multiple of t_max, e.g. {(2 * (epochs // (2 * t_max)) + 1) * t_max}) or keep the best "
                      f"on validation (train.keep: best)", stacklevel=3)


class RecodeVAE(Method):
    """Recode-VAE: a VAE (L1 + KL) scored by its recoding's JS and its reconstruction error."""

    name = "recode-vae"
    supervision = "unsupervised"
    consistency = False  # trains lambda l_consist on normal items
    shifted = False  # turns items into pseudo-anomalies (DSA)

    @dataclass
    class Params(_Params):
        pass

    @classmethod
    def ignored_params(cls) -> tuple[str, ...]:
        unused = () if cls.consistency else ("lam",)
        return unused + (() if cls.shifted or cls.supervision == "supervised" else ("beta", "dsa", "dsa_p"))

    @classmethod
    def ignored_at(cls, params) -> dict[str, str]:
        if params.dsa_p != 0 or not (cls.shifted or cls.supervision == "supervised"):
            return {}
        # at dsa_p 0 no pseudo-anomalies are made; rsc-vae-d has no other use for beta
        return {"dsa": "dsa_p is 0", **({} if cls.supervision == "supervised" else {"beta": "dsa_p is 0"})}

    def __init__(self, params, in_shape):
        super().__init__(params, in_shape)
        self._check_params()
        channels, side, _ = self.in_shape
        p = self.params
        encoder, decoder, _ = NETWORKS[p.network]
        self.encoder = self.add("encoder", encoder(channels, side, p.width, p.latent))
        self.decoder = self.add("decoder", decoder(channels, side, p.width, p.latent))
        self.expect = self.add("expect", _Expectations())
        self.dsa_ops = parse_dsa(p.dsa, f"method.{self.name}.dsa")
        self.pseudo_count = 0  # pseudo-anomalies made in the current epoch

    def _fail(self, message: str) -> None:
        raise OneclassError(f"method {self.name}: {message}")

    def _check_params(self) -> None:
        p, (_, height, width) = self.params, self.in_shape
        from oneclass.augment import parse_augment

        multiple = NETWORKS[p.network][2]
        if height != width or height % multiple or height < multiple:
            self._fail(f"the {p.network} networks take square items whose side is a multiple of {multiple} "
                       f"(MNIST: patches.resize: 32, as the paper; MVTec: 256 with network: resnet), "
                       f"got {height}x{width}")
        parse_augment(p.augment, f"method.{self.name}.augment")
        for key in ("lam", "beta"):
            if getattr(p, key) < 0:
                self._fail(f"{key} must not be negative, got {getattr(p, key)}")
        if not 0 <= p.alpha <= 1:
            self._fail(f"alpha must lie in [0, 1], got {p.alpha}")
        if not 0 <= p.dsa_p <= 1:
            self._fail(f"dsa_p must lie in [0, 1] (a probability), got {p.dsa_p}")
        for key in ("latent", "width", "js_nodes", "js_samples", "t_max", "epochs", "batch_size"):
            value = getattr(p, key)
            if value is not None and value < 1:
                self._fail(f"{key} must be at least 1, got {value}")
        if p.lr is not None and not p.lr > 0:
            self._fail(f"lr must be positive, got {p.lr}")

    # -- the terms --------------------------------------------------------------------

    def _mut(self, mu, logvar, mu2, logvar2, generator=None) -> torch.Tensor:
        p = self.params
        if p.js == "monte-carlo":
            return js_monte_carlo(mu, logvar, mu2, logvar2, p.js_samples, generator)
        return js_gauss_hermite(mu, logvar, mu2, logvar2, p.js_nodes)

    def _terms(self, x: torch.Tensor, sample: bool, recode: bool = True) -> dict[str, torch.Tensor]:
        """Every per-item term of x: recon, enc1, and with ``recode`` (the encoder run again
        on the reconstruction) enc2 and mut; z sampled in training, mu else."""
        mu, logvar = self.encoder(x)
        z = mu + (0.5 * logvar).exp() * torch.randn_like(mu) if sample else mu
        x_hat = self.decoder(z)
        mu, logvar = mu.float(), logvar.float()  # AMP: no fp16 overflow
        terms = {"recon": (x - x_hat).abs().flatten(1).sum(1), "enc1": kl_to_standard(mu, logvar), "x_hat": x_hat}
        if recode:
            mu2, logvar2 = (t.float() for t in self.encoder(x_hat))
            # scoring draws Monte-Carlo samples from a private generator seeded afresh for each
            # batch: scores repeat, and the global generator is left alone
            generator = None if sample or self.params.js != "monte-carlo" else torch.Generator().manual_seed(0)
            terms.update(enc2=kl_to_standard(mu2, logvar2), mut=self._mut(mu, logvar, mu2, logvar2, generator))
        return terms

    def _score(self, x: torch.Tensor) -> torch.Tensor:
        t = self._terms(x, sample=False)
        a = self.params.alpha
        return a * t["mut"] / self.expect.mut + (1 - a) * t["recon"] / self.expect.recon

    # -- training ---------------------------------------------------------------------

    def training_items(self, train: PatchData) -> PatchData:
        if train.roles is None or self.supervision == "supervised":
            return train
        kept = train.subset(train.roles != LABELED_ANOMALY)
        kept.roles = np.zeros_like(kept.roles)
        return kept

    def _objective(self, batch: dict) -> torch.Tensor:
        p = self.params
        x = batch["x"]
        anomalous = batch["roles"] == LABELED_ANOMALY if "roles" in batch else torch.zeros(len(x), dtype=torch.bool,
                                                                                          device=x.device)
        pseudo = torch.zeros_like(anomalous)
        if (self.shifted or self.supervision == "supervised") and p.dsa_p > 0:
            pseudo = (torch.rand(len(x)) < p.dsa_p).to(x.device) & ~anomalous
            if pseudo.any():
                x = torch.where(pseudo.view(-1, 1, 1, 1), shift(x, self.dsa_ops), x)
            self.pseudo_count += int(pseudo.sum())
        if not (self.consistency or self.shifted or self.supervision == "supervised"):
            # Recode-VAE trains l_vae alone (Sec. 4.2); a recoding pass would only move the
            # encoder's batch-norm statistics
            t = self._terms(x, sample=True, recode=False)
            return (t["recon"] + t["enc1"]).mean()
        t = self._terms(x, sample=True)
        consist = t["enc2"] + t["mut"]
        normal = t["recon"] + t["enc1"] + (p.lam * consist if self.consistency else 0)
        deviated = t["enc1"] + p.lam * consist  # Eqs. 11, 13: no reconstruction term
        return torch.where(pseudo | anomalous, p.beta * deviated, normal).mean()

    def _epoch_stats(self, normals: PatchData) -> dict:
        if self.trainer.val is not None:  # the validation AUROC that follows scores with them
            self.fit_expectations(normals)
        made, self.pseudo_count = self.pseudo_count, 0
        return {"pseudo": made} if self.shifted or self.params.dsa_p > 0 and self.supervision == "supervised" else {}

    @torch.no_grad()
    def fit_expectations(self, normals: PatchData) -> None:
        """E[l_mut] and E[l_recon] of Eq. 15 over ``normals`` (the training normals)."""
        for module in self.modules.values():
            module.eval()
        mut, recon = self.map(lambda x: torch.stack([(t := self._terms(x, False))["mut"], t["recon"]], 1),
                              normals).mean(0)
        self.expect.mut.fill_(max(float(mut), 1e-12))
        self.expect.recon.fill_(max(float(recon), 1e-12))

    def fit(self, train: PatchData, val: PatchData | None = None) -> None:
        p = self.params
        items = self.training_items(train)
        anomalous = items.roles == LABELED_ANOMALY if items.roles is not None else np.zeros(len(items), bool)
        if self.supervision == "supervised" and not anomalous.any():
            self._fail("needs labelled anomalies (the extremely-imbalanced mode); set split.gamma > 0 "
                       "or split.labeled_anomalies, or use rsc-vae-o / rsc-vae-d")
        if anomalous.all():
            self._fail("needs normal items to train on besides the labelled anomalies")
        trainer = self.prepare(val)
        epochs = p.epochs or trainer.cfg.epochs
        _warn_if_kept_at_a_peak(epochs, p.t_max, trainer.cfg.keep)
        spec = trainer.spec("train", [*self.encoder.parameters(), *self.decoder.parameters()], optimizer="adam",
                            lr=p.lr if p.lr is not None else trainer.cfg.lr, epochs=epochs, weight_decay=0.0,
                            schedule="cosine", t_max=p.t_max, batch_size=p.batch_size or trainer.cfg.batch_size,
                            augment=tuple(p.augment))
        normals = items.subset(np.flatnonzero(~anomalous))
        trainer.stage(spec, items, self._objective, scorer=self._score,
                      epoch_stats=lambda: self._epoch_stats(normals))
        self.fit_expectations(normals)

    # -- inference --------------------------------------------------------------------

    def score(self, data: PatchData) -> np.ndarray:
        return self.map(self._score, data)

    def embed(self, data: PatchData) -> np.ndarray:
        return self.map(lambda x: self.encoder(x)[0], data)

    def explain(self, data: PatchData) -> np.ndarray:
        """|x - x^| summed over channels: where the reconstruction term comes from."""
        return self.map(lambda x: (x - self.decoder(self.encoder(x)[0])).abs().sum(1), data)


class RSCVAEO(RecodeVAE):
    """RSC-VAE one-class mode: the VAE loss plus lambda x the recoding's consistency."""

    name = "rsc-vae-o"
    consistency = True

    @dataclass
    class Params(_Params):
        pass


class RSCVAED(RSCVAEO):
    """RSC-VAE distributionally-shifted mode: pseudo-anomalies (DSA) pushed out of both semantic regions."""

    name = "rsc-vae-d"
    shifted = True

    @dataclass
    class Params(_Params):
        pass


class RSCVAEE(RSCVAEO):
    """RSC-VAE extremely-imbalanced mode: labelled anomalies pushed out of both semantic regions."""

    name = "rsc-vae-e"
    supervision = "supervised"

    @dataclass
    class Params(_Params):
        dsa_p: float = 0.0  # pseudo-anomalies besides the labelled ones (off: the paper's -e)
