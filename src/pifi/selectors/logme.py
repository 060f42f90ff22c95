"""logme: LogME evidence per sample (You et al., ICML 2021), the mean over one-vs-rest targets."""

from __future__ import annotations

import math

import numpy as np

from pifi.selectors._declaration import STATES, Result, Selector


def _logme_evidence(x: np.ndarray, target: np.ndarray, *, max_iter: int,
                    tol: float) -> tuple[float, float, float, bool]:
    """Log evidence per sample of Bayesian ridge regression target ~ N(x w, 1/beta), w ~ N(0, I/alpha), at
    the alpha, beta that maximise it (You et al.'s fixed point, computed in the SVD basis of x).

    The log-determinant counts every one of the D eigenvalues of alpha I + beta x'x, the D - k zero ones
    (k = min(N, D)) included: the paper's reference code drops those, which only matters when D > N.
    With D > N the evidence keeps growing towards beta -> inf (the targets can be interpolated); the
    fixed point is its interior stationary point, as in the paper. Returns (evidence / N, alpha, beta,
    converged).
    """
    n, d = x.shape
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    sigma = s ** 2
    projected = u.T @ target
    projected2 = projected ** 2
    outside = float(target @ target - projected2.sum())  # the part of the target outside x's column space
    alpha, beta, converged = 1.0, 1.0, False
    for _ in range(max_iter):
        t = alpha / beta
        gamma = float((sigma / (sigma + t)).sum())
        weight_norm2 = float((sigma * projected2 / (sigma + t) ** 2).sum())
        residual2 = float((projected2 / (1 + sigma / t) ** 2).sum()) + outside
        alpha = gamma / (weight_norm2 + 1e-5)
        beta = (n - gamma) / (residual2 + 1e-5)
        if abs(alpha / beta - t) / t <= tol:
            converged = True
            break
    t = alpha / beta
    weight_norm2 = float((sigma * projected2 / (sigma + t) ** 2).sum())
    residual2 = float((projected2 / (1 + sigma / t) ** 2).sum()) + outside
    log_det = float(np.log(alpha + beta * sigma).sum()) + (d - sigma.size) * math.log(alpha)
    evidence = (d / 2 * math.log(alpha) + n / 2 * math.log(beta) - log_det / 2 - beta / 2 * residual2
                - alpha / 2 * weight_norm2 - n / 2 * math.log(2 * math.pi))
    return evidence / n, alpha, beta, converged


def logme(layers: list[np.ndarray], labels: np.ndarray, *, max_iter: int, tol: float) -> Result:
    classes = np.unique(labels)
    scores, converged = [], []
    for x in layers:
        x = np.asarray(x, dtype=np.float64)
        per_class = [_logme_evidence(x, (labels == k).astype(np.float64), max_iter=max_iter, tol=tol)
                     for k in classes]
        scores.append(float(np.mean([evidence for evidence, *_ in per_class])))
        converged.append(all(ok for *_, ok in per_class))
    # The reference stops after 11 rounds whether or not the fixed point settled (on noise, alpha grows
    # without bound): recorded, but not reported as a probe's failure to converge.
    return scores, None, {"fixed_point_converged": converged}


# LogME's fixed point as in the paper's reference code (at most 11 rounds, relative tolerance 1e-3).
SELECTOR = Selector("logme", STATES, logme, {"max_iter": 11, "tol": 1e-3},
                    "LogME evidence per sample, mean over one-vs-rest targets")
