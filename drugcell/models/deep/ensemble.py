"""Combining ensemble members: the mixture's mean and its variance (aleatoric + epistemic).

Why its own module: the arithmetic is pinned by hand in the tests and used by whatever head the
members carry; a head without a variance contributes only the spread of the members' means.
"""

from __future__ import annotations

import numpy as np


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
