"""The SSAD dual (Görnitz et al. 2013, "Toward supervised anomaly detection", the convex
form), solved by ADMM: the kernel machine behind the ``ocsvm-hybrid`` and
``ssad-hybrid`` baselines (c-ss-ms-gvae.txt Sec. 4, ss-vq-vae.txt Sec. IV).

Primal, over the feature map phi of a kernel k, with unlabelled items U and labelled
items L (y = +1 normal, -1 anomalous)::

    min  1/2 ||w||^2 - rho - kappa gamma + sum_i eta_i xi_i
    s.t. <w, phi(x_i)> >= rho - xi_i                   (i in U)
         y_j <w, phi(x_j)> >= y_j rho + gamma - xi_j   (j in L)
         xi >= 0, gamma >= 0

Its dual, with c_i = 1 on U and y_j on L, and l_i = 1 on L only::

    min  1/2 a' (K o c c') a     s.t.  c'a = 1,  l'a >= kappa,  0 <= a <= eta

and the decision function f(x) = sum_i a_i c_i k(x_i, x) - rho (>= 0 inside). Without
labelled items the margin gamma has no constraint and is left out: the problem is then
the nu-one-class SVM (Schölkopf et al.) with eta = 1 / (nu n), which is SVDD for a kernel
with constant k(x, x) such as the RBF. The number of variables is the training set's
(1,500 in the shipped recipes): the kernel matrix is dense and so is its factorisation,
done once per penalty.

With labelled items the solver is ADMM in the form of OSQP (Stellato et al. 2020): the
linear system is factorised by Cholesky, the relaxation is 1.6, and the penalty is
rescaled by the residuals' ratio (refactorising) when they drift apart. Without them
(the OC-SVM, and SSAD at gamma 0) with one bound for every item, the problem is libsvm's
one-class SVM, and libsvm's SMO (scikit-learn's ``OneClassSVM`` on the precomputed
kernel) solves it: 372x faster than the ADMM over the six widths of the hybrids' grid at
3,000 items, 136x at 1,000, and to a lower objective (the ADMM's relative tolerance stops
it up to 0.2% above; benchmarks/results/ssad).
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.linalg import cho_factor, cho_solve
from sklearn.exceptions import ConvergenceWarning
from sklearn.svm import OneClassSVM

from oneclass.errors import OneclassError

_SIGMA = 1e-6  # the proximal term that makes the system positive definite
_RELAX = 1.6
_EQUALITY_SCALE = 1e3  # penalty of the equality rows against the others (OSQP's choice)


def ssad_dual(kernel: np.ndarray, y: np.ndarray, eta: np.ndarray, kappa: float,
              tol: float = 1e-6, max_iter: int | None = None) -> tuple[np.ndarray, float, int]:
    """The dual solution ``a``, the offset ``rho`` and the iterations taken, for items
    with labels ``y`` (0 unlabelled, +1 labelled normal, -1 labelled anomalous), per-item
    bounds ``eta`` and the margin weight ``kappa`` (unused without labelled items). The
    solution is cut to the box and scaled onto c'a = 1. ``tol``: for the ADMM, the primal
    and dual residuals' bound relative to their terms' magnitudes (OSQP's absolute plus
    relative test with both tolerances ``tol``); for libsvm, its KKT-gap tolerance. A
    solve that does not reach it in ``max_iter`` iterations warns; by default 20,000 for
    the ADMM and 10 n (at least 20,000) for libsvm, whose SMO steps are O(n) each and
    whose count grows with n (12,000 at 3,000 items for the narrowest RBF of the grid)."""
    y = np.asarray(y)
    n = len(y)
    c = np.where(y == -1, -1.0, 1.0)
    labelled = (y != 0).astype(np.float64)
    eta = np.broadcast_to(np.asarray(eta, np.float64), (n,))
    if labelled.any() and kappa > eta[y != 0].sum():
        raise OneclassError(f"kappa {kappa:g} exceeds what the {int(labelled.sum())} labelled items can carry "
                            f"({eta[y != 0].sum():g}): the margin would grow without bound")
    if eta[c > 0].sum() < 1:
        raise OneclassError(f"the unlabelled and labelled normal items' bounds sum to {eta[c > 0].sum():g} < 1: "
                            f"no solution (raise eta or lower nu)")
    if not labelled.any() and np.ptp(eta) == 0:
        return _one_class_svm(kernel, float(eta[0]), tol, max(20000, 10 * n) if max_iter is None else max_iter)
    return _admm(kernel, c, labelled, eta, kappa, tol, 20000 if max_iter is None else max_iter)


def _one_class_svm(kernel: np.ndarray, eta: float, tol: float, max_iter: int) -> tuple[np.ndarray, float, int]:
    """The unlabelled problem by libsvm: nu = 1 / (eta n); its coefficients sum to nu n
    and its bounds are 1, so a and rho are its coefficients and offset over nu n."""
    n = len(kernel)
    nu = 1.0 / (eta * n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # said below, in this module's words
        svm = OneClassSVM(kernel="precomputed", nu=nu, tol=tol, max_iter=max_iter).fit(kernel)
    iterations = int(np.ravel(svm.n_iter_)[0])
    if iterations >= max_iter:
        warnings.warn(f"SSAD dual: not converged in {max_iter} iterations (libsvm); the scores may be rough",
                      stacklevel=3)
    a = np.zeros(n)
    a[svm.support_] = svm.dual_coef_[0] / (nu * n)
    return a, float(svm.offset_[0]) / (nu * n), iterations


def _admm(kernel: np.ndarray, c: np.ndarray, labelled: np.ndarray, eta: np.ndarray, kappa: float,
          tol: float, max_iter: int) -> tuple[np.ndarray, float, int]:
    n = len(c)
    # variables scaled by n: they are O(1), the constraints' right-hand sides n
    rows = [c, labelled] if labelled.any() else [c]
    lower = np.r_[np.zeros(n), n, kappa * n][: n + len(rows)]
    upper = np.r_[eta * n, n, np.inf][: n + len(rows)]
    extra = np.stack(rows)  # (1 or 2, n): the rows of A after the identity
    p = kernel * np.outer(c, c)
    equality = np.isclose(lower, upper)
    x = np.full(n, 1.0)
    z = np.r_[x, extra @ x]
    dual = np.zeros(n + len(rows))
    penalty = 0.1
    scale_rows = np.where(equality, _EQUALITY_SCALE, 1.0)

    def factor(penalty):
        r = penalty * scale_rows
        m = p + np.diag(_SIGMA + r[:n]) + (extra.T * r[n:]) @ extra
        return cho_factor(m), r

    chol, r = factor(penalty)
    primal = dual_res = np.inf
    for it in range(max_iter):
        rhs = _SIGMA * x - (dual[:n] - r[:n] * z[:n]) - extra.T @ (dual[n:] - r[n:] * z[n:])
        x_tilde = cho_solve(chol, rhs)
        ax_tilde = np.r_[x_tilde, extra @ x_tilde]
        x = _RELAX * x_tilde + (1 - _RELAX) * x
        blended = _RELAX * ax_tilde + (1 - _RELAX) * z
        z_next = np.clip(blended + dual / r, lower, upper)
        dual = dual + r * (blended - z_next)
        z = z_next
        if it % 25 == 24:
            ax, grad, at_dual = np.r_[x, extra @ x], p @ x, dual[:n] + extra.T @ dual[n:]
            primal_scale = max(np.abs(ax).max(), np.abs(z).max())
            dual_scale = max(np.abs(grad).max(), np.abs(at_dual).max())
            primal, dual_res = np.abs(ax - z).max(), np.abs(grad + at_dual).max()
            if primal <= tol * (1 + primal_scale) and dual_res <= tol * (1 + dual_scale):
                break
            # OSQP's rule: rescale the penalty when the residuals, each relative to its
            # own magnitude, are more than 5x apart
            ratio = np.sqrt((primal / max(primal_scale, 1e-12)) / (dual_res / max(dual_scale, 1e-12) + 1e-30))
            if not 0.2 < ratio < 5:
                penalty = float(np.clip(penalty * ratio, 1e-6, 1e6))
                chol, r = factor(penalty)
    else:
        warnings.warn(f"SSAD dual: not converged in {max_iter} iterations (residuals {primal:.2g} primal, "
                      f"{dual_res:.2g} dual); the scores may be rough", stacklevel=3)
    a = np.clip(x, 0, eta * n)
    scale = c @ a  # n, up to the residuals
    # the equality row's multiplier is -n rho: at an unlabelled item strictly inside the
    # box, stationarity reads n <w, phi(x_i)> + multiplier = 0, and f(x_i) = 0 there
    return a / scale, float(-dual[n] / scale), it + 1
