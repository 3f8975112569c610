"""The generalized-Gaussian module against closed forms (c-ss-ms-gvae.txt Sec. 3.2-3.3)."""

from __future__ import annotations

import math

import pytest
import torch

from oneclass.methods import gg

EXACT = gg.Regularisers(delta=0.1, eps=0.0, tau=0.1)  # eps = 0: a proper density


def closed_form_variance(alpha: torch.Tensor, beta: torch.Tensor, reg: gg.Regularisers) -> torch.Tensor:
    """scale^2 Gamma(3/p) / Gamma(1/p)."""
    s, p = reg.scale(alpha.double()), reg.shape(beta.double())
    return s ** 2 * torch.exp(torch.lgamma(3 / p) - torch.lgamma(1 / p))


def test_log_density_matches_a_hand_computation():
    reg = gg.Regularisers(delta=0.1, eps=0.1, tau=0.1)
    value = gg.log_density(torch.tensor(1.0), torch.tensor(0.5), torch.tensor(0.0), torch.tensor(0.0), reg)
    s = p = 1.1  # 0.1 + e^0
    expected = math.log(p / s) - ((0.5 / s) ** 2 + 0.1) ** (p / 2) - math.lgamma(1 / p) - math.log(2)
    assert value.item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("alpha,beta", [(0.0, 0.0), (-1.0, 1.0), (0.5, -0.5), (1.0, 2.5)])
def test_density_integrates_to_one(alpha, beta):
    b = torch.linspace(-300, 300, 1_200_001, dtype=torch.float64)
    density = gg.log_density(b, torch.tensor(0.3), torch.tensor(alpha), torch.tensor(beta), EXACT).double().exp()
    assert torch.trapezoid(density, b).item() == pytest.approx(1.0, abs=1e-4)
    # eps > 0 smooths the peak and can only lower the mass
    smoothed = gg.log_density(b, torch.tensor(0.3), torch.tensor(alpha), torch.tensor(beta),
                              gg.Regularisers(0.1, 0.1, 0.1)).double().exp()
    assert 0.5 < torch.trapezoid(smoothed, b).item() < 1.0


def test_shape_two_is_a_gaussian():
    b = torch.linspace(-4, 4, 33)
    alpha = torch.tensor(math.log(1.5 - EXACT.delta))  # scale 1.5
    beta = torch.tensor(EXACT.fixed_beta(2.0))
    expected = torch.distributions.Normal(0.25, 1.5 / math.sqrt(2)).log_prob(b)
    assert torch.allclose(gg.log_density(b, torch.tensor(0.25), alpha, beta, EXACT), expected, atol=1e-5)


@pytest.mark.parametrize("alpha,beta", [(0.0, 0.0), (-1.0, 1.0), (0.5, -1.0)])
def test_samples_have_the_closed_form_mean_and_variance_on_both_sides(alpha, beta):
    torch.manual_seed(0)
    mu = torch.full((400_000,), 0.2)
    z = gg.sample(mu, torch.tensor(alpha), torch.tensor(beta), EXACT)
    variance = closed_form_variance(torch.tensor(alpha), torch.tensor(beta), EXACT).item()
    assert z.var().item() == pytest.approx(variance, rel=0.05)
    assert z.mean().item() == pytest.approx(0.2, abs=4 * math.sqrt(variance / len(z)))
    assert (z > 0.2).float().mean().item() == pytest.approx(0.5, abs=0.005)  # B = +-1, not a constant


@pytest.mark.parametrize("alpha,beta", [(0.0, 0.0), (-1.0, 1.0)])
def test_reparameterised_gradients_match_finite_differences(alpha, beta):
    """d/d(mu, alpha, beta) of the Monte-Carlo second moment against the closed form."""
    torch.manual_seed(1)
    mu = torch.tensor(0.2, requires_grad=True)
    a = torch.tensor(alpha, requires_grad=True)
    b = torch.tensor(beta, requires_grad=True)
    z = gg.sample(mu.expand(400_000), a, b, EXACT)
    ((z - 0.2) ** 2).mean().backward()
    h = 1e-4
    d_alpha = (closed_form_variance(torch.tensor(alpha + h), torch.tensor(beta), EXACT)
               - closed_form_variance(torch.tensor(alpha - h), torch.tensor(beta), EXACT)) / (2 * h)
    d_beta = (closed_form_variance(torch.tensor(alpha), torch.tensor(beta + h), EXACT)
              - closed_form_variance(torch.tensor(alpha), torch.tensor(beta - h), EXACT)) / (2 * h)
    assert a.grad.item() == pytest.approx(d_alpha.item(), rel=0.05)
    assert b.grad.item() == pytest.approx(d_beta.item(), rel=0.05)
    mean_mu = torch.tensor(0.2, requires_grad=True)
    gg.sample(mean_mu.expand(1000), a.detach(), b.detach(), EXACT).mean().backward()
    assert mean_mu.grad.item() == pytest.approx(1.0)


def test_extreme_parameters_stay_finite():
    torch.manual_seed(0)
    reg = gg.Regularisers()
    extreme = torch.tensor([-60.0, -10.0, 0.0, 10.0, 60.0])
    alpha, beta = torch.meshgrid(extreme, extreme, indexing="ij")
    alpha = alpha.reshape(-1, 1).expand(-1, 2000).clone().requires_grad_(True)
    beta = beta.reshape(-1, 1).expand(-1, 2000).clone().requires_grad_(True)
    mu = torch.zeros_like(alpha, requires_grad=True)
    z = gg.sample(mu, alpha, beta, reg)
    loss = (0.5 * z ** 2 + gg.log_density(z, mu, alpha, beta, reg)).sum(1)
    assert torch.isfinite(z).all() and torch.isfinite(loss).all()
    loss.sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in (mu, alpha, beta))


def test_a_diverged_networks_nan_reaches_the_loss_instead_of_raising():
    """NaN parameters (a diverged run) give NaN draws, which the trainer's guard turns
    into one line; the Gamma constructor's validation raised a page-long ValueError."""
    reg = gg.Regularisers(0.1, 0.1, 0.1)
    mu = torch.zeros(2, 3)
    z = gg.sample(mu, torch.full_like(mu, float("nan")), torch.zeros_like(mu), reg)
    assert z.shape == mu.shape and torch.isnan(z).all()


def test_a_labelled_anomalys_overflowing_image_term_leaves_the_gradients_finite():
    """An anomaly reconstructed 30 scales away at shape 20 overflowed the power to inf;
    the hinge's forward was 0 and its backward NaN (0 * inf) in the decoder's mean, which
    Adam turned into NaN weights (GPU runs stopped with 'the loss became nan'). The power
    is capped at exp(POWER_CAP); below the cap the density is the closed form's."""
    from oneclass.methods.gvae import hinge_push

    reg = gg.Regularisers()
    mu = torch.zeros(4, 16, requires_grad=True)
    alpha = torch.full((4, 16), gg.ALPHA_RANGE[0], requires_grad=True)  # scale 0.1003
    beta = torch.full((4, 16), gg.BETA_RANGE[1], requires_grad=True)  # shape 20.2
    x = torch.zeros(4, 16)
    x[3] = 30.0
    image = -gg.log_density(x, mu, alpha, beta, reg).sum(1)
    assert torch.isfinite(image).all()
    assert image[3].item() == pytest.approx(16 * math.exp(gg.POWER_CAP), rel=1e-3)
    push = hinge_push(image, torch.tensor([False, False, False, True]), 8.0)
    (image[:3].mean() + push.mean()).backward()
    assert all(torch.isfinite(t.grad).all() for t in (mu, alpha, beta))
    s, p = 0.1 + math.exp(gg.ALPHA_RANGE[0]), 0.1 + math.exp(gg.BETA_RANGE[1])
    closed = -(math.log(p / s) - reg.eps ** (p / 2) - math.lgamma(1 / p) - math.log(2))
    assert image[0].item() == pytest.approx(16 * closed, rel=1e-5)
