"""The factorised generalized-Gaussian (GG) of c-ss-ms-gvae.txt Sec. 3.2-3.3.

Parameters are a mean mu, a log-scale alpha and a log-shape beta, regularised by Delta,
epsilon and tau (the paper: "around 0.15"; the ss-gVAE code used 0.1):

    scale s = Delta + exp(alpha),   shape p = tau + exp(beta)
    log G(b; mu, alpha, beta) = log(p / s) - (((b - mu) / s)^2 + eps)^(p/2) - log Gamma(1/p) - log 2

The paper leaves the constant out; -log 2 is the one that makes the density integrate
to 1 when eps = 0 (with eps > 0 the mass is slightly below 1: eps smooths the kink of
|b - mu|^p at the mean, where small shapes have an infinite derivative).

Sampling is the two-level reparameterisation of Eq. (2): Y ~ Gamma(1/p, 1) drawn with
implicit reparameterisation gradients, a sign B = +-1 with probability 1/2 each, and
z = mu + s B Y^(1/p). (The text writes Gamma(1/(tau + beta), 1); the exponent of the
same equation, and |X|^p ~ Gamma(1/p) for a unit GG, say it is tau + exp(beta).)

alpha and beta are clamped to the ranges below before use. Without a cap, a shape near
tau puts Y^(1/p) at 25^10 and squares of samples overflow float32; the ranges still span
scales from Delta to Delta + 148 and shapes from tau + 0.05 to tau + 20.

The power ((b - mu)^2 / s^2 + eps)^(p/2) is capped at exp(POWER_CAP) per element (its
base is capped, so below the cap every value is computed as before). At the largest
shape a residual of about 80 scales overflows float32 to inf. c-ss-ms-gVAE's hinge pushes
a labelled anomaly's image loss up until it passes the normals' (gvae.hinge_push), and a
sharper shape is one way the decoder gets there: once one anomalous pixel's term is
inf, the hinge's forward is 0 but its backward multiplies that 0 by the inf derivative,
every gradient of the decoder's mean turns NaN, Adam writes NaN weights, and the next
step's loss is NaN (3 of 10 five-member ensembles and 1 of 8 BUSI runs on a GPU stopped
so in the semi-supervised or classifier stage). A term of e^50 nats is no model of
anything; summed over a batch of pixels and latent dimensions it stays far from
float32's limit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

ALPHA_RANGE = (-8.0, 5.0)
BETA_RANGE = (-3.0, 3.0)
POWER_CAP = 50.0
_LOG2 = math.log(2.0)


@dataclass(frozen=True)
class Regularisers:
    delta: float = 0.1  # added to the scale
    eps: float = 0.1  # added inside the power
    tau: float = 0.1  # added to the shape

    def scale(self, alpha: torch.Tensor) -> torch.Tensor:
        return self.delta + alpha.float().clamp(*ALPHA_RANGE).exp()

    def shape(self, beta: torch.Tensor) -> torch.Tensor:
        return self.tau + beta.float().clamp(*BETA_RANGE).exp()

    def fixed_alpha(self, scale: float = 1.0) -> float:
        """The alpha giving a scale (1 in the warm-start stages of Sec. 3.7)."""
        return math.log(scale - self.delta)

    def fixed_beta(self, shape: float = 2.0) -> float:
        """The beta giving a shape (2, the Gaussian, in the warm-start stages)."""
        return math.log(shape - self.tau)


def log_density(b: torch.Tensor, mu: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor,
                reg: Regularisers) -> torch.Tensor:
    """Elementwise log G(b; mu, alpha, beta); broadcasting as in torch."""
    s, p = reg.scale(alpha), reg.shape(beta)
    r2 = ((b.float() - mu.float()) / s) ** 2
    cap = torch.exp(POWER_CAP / (0.5 * p)).detach()  # inf for small shapes, whose power cannot overflow
    base = torch.minimum(r2 + reg.eps, cap)  # see POWER_CAP above
    return torch.log(p / s) - base ** (0.5 * p) - torch.lgamma(1.0 / p) - _LOG2


def sample(mu: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor, reg: Regularisers) -> torch.Tensor:
    """One reparameterised draw per element (Eq. 2), differentiable in mu, alpha, beta."""
    mu = mu.float()
    s, p = reg.scale(alpha).expand_as(mu), reg.shape(beta).expand_as(mu)
    # no argument validation: a diverged network's NaN must reach the loss, where the
    # trainer stops the run in one line naming stage and epoch, not raise in here
    y = _gamma_draw(1.0 / p)
    # a draw that underflows to 0 would put an infinite derivative on y^(1/p)
    y = y.clamp_min(torch.finfo(y.dtype).tiny)
    sign = torch.randint(0, 2, mu.shape, device=mu.device, dtype=mu.dtype) * 2 - 1
    return mu + s * sign * y ** (1.0 / p)


@torch.compiler.disable
def _gamma_draw(concentration: torch.Tensor) -> torch.Tensor:
    """Gamma(concentration, 1), reparameterised. Eager under torch.compile (a graph
    break): Inductor lays conv nets' intermediates out channels-last, and the fake kernel
    of aten._standard_gamma then promises strides the CPU kernel does not give (an
    assertion at run time, torch 2.11-2.14)."""
    return torch.distributions.Gamma(concentration, torch.ones_like(concentration), validate_args=False).rsample()
