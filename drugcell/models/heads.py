"""Heteroscedastic output head, its Gaussian negative log-likelihood, and ensemble combination.

The loss is written out (not torch's ``GaussianNLLLoss``) so that the beta-NLL variant is one
factor away; with ``beta=0`` and mean reduction it equals ``GaussianNLLLoss(full=False,
eps=...)`` exactly: ``0.5 * (log var + (y - mu)^2 / var)`` averaged over elements, without the
constant ``0.5 * log(2 pi)``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


class HeteroscedasticHead(nn.Module):
    """Linear map to a mean and a softplus variance per output.

    ``min_var`` keeps the variance away from zero so the NLL cannot diverge on a training point.
    ``n_var`` (default ``out_dim``) may exceed ``out_dim`` for variances without a mean (fusion
    uses one extra: the per-compound scale of the noise outside its basis).
    """

    def __init__(self, in_dim: int, out_dim: int, min_var: float = 1e-4, n_var: int | None = None):
        super().__init__()
        self.mean = nn.Linear(in_dim, out_dim)
        self.raw_var = nn.Linear(in_dim, out_dim if n_var is None else int(n_var))
        self.min_var = float(min_var)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mean(h), F.softplus(self.raw_var(h)) + self.min_var


def gaussian_nll(
    mean: torch.Tensor, var: torch.Tensor, target: torch.Tensor, *, beta: float = 0.0,
    weight: torch.Tensor | None = None, eps: float = 1e-6,
) -> torch.Tensor:
    """Mean over elements of ``0.5 * (log var + (target - mean)^2 / var)``.

    beta > 0 gives beta-NLL (Seitzer et al. 2022): each element is multiplied by ``var**beta``
    (detached), which stops high-variance points from starving the mean fit; beta=0 is the plain
    NLL. ``weight`` (broadcastable) multiplies each element before averaging.
    """
    var = var.clamp_min(eps)
    loss = 0.5 * (torch.log(var) + (target - mean) ** 2 / var)
    if beta:
        loss = loss * var.detach() ** beta
    if weight is not None:
        loss = loss * weight
    return loss.mean()


def ensemble_moments(means: np.ndarray, variances: np.ndarray | None = None):
    """Combine M members: returns (mean, total var, aleatoric var, epistemic var).

    ``means``/``variances`` are (M, ...) arrays. Total variance of the equal-weight mixture =
    mean aleatoric variance + variance of the members' means (ddof=0, the mixture's own formula).
    """
    means = np.asarray(means, np.float64)
    mu = means.mean(axis=0)
    epi = ((means - mu) ** 2).mean(axis=0)
    ale = np.zeros_like(mu) if variances is None else np.asarray(variances, np.float64).mean(axis=0)
    return mu, ale + epi, ale, epi


class EnsembleAccumulator:
    """Streaming form of :func:`ensemble_moments` so that (M, n, G) never sits in memory.

    Accumulates in float64 around the first member (shifted sums) to avoid cancellation.
    """

    def __init__(self) -> None:
        self.m = 0
        self._ref = self._s1 = self._s2 = self._var = None

    def add(self, mean: np.ndarray, var: np.ndarray | None = None) -> None:
        mean = np.asarray(mean, np.float64)
        if self.m == 0:
            self._ref = mean.copy()
            self._s1 = np.zeros_like(mean)
            self._s2 = np.zeros_like(mean)
            self._var = np.zeros_like(mean)
        d = mean - self._ref
        self._s1 += d
        self._s2 += d * d
        if var is not None:
            self._var += np.asarray(var, np.float64)
        self.m += 1

    def result(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        if self.m == 0:
            raise ValueError("no ensemble member was added")
        d_mean = self._s1 / self.m
        epi = np.maximum(self._s2 / self.m - d_mean**2, 0.0)
        ale = self._var / self.m
        return self._ref + d_mean, ale + epi, ale, epi
