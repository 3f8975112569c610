"""The kernel machine of OC-SVM-Hybrid (and SSAD-Hybrid at gamma 0): libsvm's SMO, which
oneclass.ssad uses for the unlabelled problem, against the ADMM it used before (and still
uses with labelled items), on the same kernels in one run.

    python benchmarks/ssad.py [--sizes 1000,3000] [--repeats 1]

The features are synthetic, 128-dimensional like the hybrids' autoencoder bottleneck: a
Gaussian cloud whose items' scales are Gamma(2)-distributed (a heavy tail of far items,
as autoencoder features have). For each size and each RBF width of the hybrids' grid
(KERNEL_GAMMAS x scikit-learn's 'scale'), nu = 0.1: seconds of each solver (best of
--repeats), their ratio, the objective 1/2 a'Ka of each (lower is better: both solve the
same problem), and the largest difference of the decision values over the training items
relative to their range. Run with OMP_NUM_THREADS=1 for one core's figures.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.metrics.pairwise import euclidean_distances

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from oneclass.methods.svm_hybrid import KERNEL_GAMMAS  # noqa: E402
from oneclass.ssad import _admm, ssad_dual  # noqa: E402

NU = 0.1


def timed(solve, repeats: int):
    best, result = np.inf, None
    for _ in range(repeats):
        start = time.perf_counter()
        result = solve()
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,3000")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    print(f"{platform.processor() or platform.machine()}, numpy {np.__version__}; nu = {NU}\n")
    print("| items | width (x scale) | ADMM s | libsvm s | ADMM / libsvm | objective ADMM / libsvm | "
          "max decision difference / range |")
    print("|---|---|---|---|---|---|---|")
    for n in map(int, args.sizes.split(",")):
        rng = np.random.default_rng(0)
        features = rng.normal(size=(n, 128)) * rng.gamma(2.0, 1.0, size=(n, 1))
        distances = euclidean_distances(features, squared=True)
        unit = 1.0 / (features.shape[1] * features.var())
        eta, labels = np.full(n, 1.0 / (NU * n)), np.zeros(n, int)
        totals = [0.0, 0.0]
        for g in KERNEL_GAMMAS:
            kernel = np.exp(-g * unit * distances)
            t_admm, (a, rho_a, _) = timed(lambda: _admm(kernel, np.ones(n), np.zeros(n), eta, 0.0, 1e-6, 20000),
                                          args.repeats)
            t_svm, (b, rho_b, _) = timed(lambda: ssad_dual(kernel, labels, eta, 0.0), args.repeats)
            totals[0] += t_admm
            totals[1] += t_svm
            f_a, f_b = kernel @ a - rho_a, kernel @ b - rho_b
            print(f"| {n} | {g:g} | {t_admm:.2f} | {t_svm:.3f} | {t_admm / t_svm:.0f} | "
                  f"{(a @ kernel @ a) / (b @ kernel @ b):.7f} | {np.abs(f_a - f_b).max() / np.ptp(f_a):.1e} |")
        print(f"| {n} | all six | {totals[0]:.1f} | {totals[1]:.2f} | {totals[0] / totals[1]:.0f} | | |")


if __name__ == "__main__":
    main()
