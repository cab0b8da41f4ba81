"""Array-level statistics of (error, predicted std) pairs, and the Gaussian ideals they are judged by.

For a calibrated Gaussian predictive distribution:

* coverage: the fraction of cells with ``|error| <= k * std`` is 0.683 at k = 1 and 0.954 at k = 2;
* reliability: within any group of cells with similar std, ``mean |error| = sqrt(2/pi) * mean std``;
* the predicted std ranks the errors: Pearson r(std, |error|) > 0.

A model that is right about *which* cells are uncertain but wrong about *how much* is fixed by one
global factor ``s = sqrt(mean((error/std)^2))`` (:func:`fit_scale`). No pandas grouping here: these
functions take flat arrays, so grouping and reporting can share them.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from drugcell.errors import DrugcellInputError

#: Gaussian probability mass within k standard deviations: erf(k / sqrt(2)).
GAUSSIAN_COVERAGE = {1: math.erf(1 / math.sqrt(2)), 2: math.erf(2 / math.sqrt(2))}
#: E|X| / sigma for X ~ N(0, sigma^2): the ideal MAE-to-std ratio of the reliability table.
MAE_PER_STD = math.sqrt(2 / math.pi)


def _as_arrays(error, std) -> tuple[np.ndarray, np.ndarray]:
    e = np.asarray(error, dtype=np.float64).ravel()
    s = np.asarray(std, dtype=np.float64).ravel()
    if e.shape != s.shape:
        raise ValueError(f"error and std differ in length: {e.size} vs {s.size}")
    return e, s


def coverage(error, std, k: float = 1.0) -> float:
    """Fraction of cells with ``|error| <= k * std`` (NaN for no cells)."""
    e, s = _as_arrays(error, std)
    if e.size == 0:
        return float("nan")
    return float(np.mean(np.abs(e) <= k * s))


def fit_scale(error, std) -> float:
    """The one factor ``s`` that makes ``mean((error / (s * std))^2) = 1``: sqrt(mean z^2)."""
    e, s = _as_arrays(error, std)
    if e.size == 0:
        return float("nan")
    return float(np.sqrt(np.mean((e / s) ** 2)))


def std_error_pearson(error, std) -> float:
    """Pearson r between predicted std and |error| (NaN when either is constant)."""
    e, s = _as_arrays(error, std)
    a = np.abs(e)
    if e.size < 2 or np.ptp(a) == 0 or np.ptp(s) == 0:
        return float("nan")
    return float(np.corrcoef(s, a)[0, 1])


def std_bins(std, n_bins: int = 10) -> np.ndarray:
    """Quantile bin (0 .. n_bins-1) of each cell by rank of its std.

    Ranks (stable sort), not value cut points, so ties and a constant std still give equal-sized
    bins: cell of rank i goes to bin ``floor(i * n_bins / n)``.
    """
    s = np.asarray(std, dtype=np.float64).ravel()
    order = np.argsort(s, kind="stable")
    bins = np.empty(s.size, dtype=np.int64)
    bins[order] = (np.arange(s.size) * n_bins) // max(s.size, 1)
    return bins


def reliability_table(error, std, n_bins: int = 10) -> pd.DataFrame:
    """MAE per predicted-std quantile bin, next to the Gaussian ideal sqrt(2/pi) * mean std.

    Bins are contiguous runs of the std-sorted cells (see :func:`std_bins`), so every statistic
    is a sum over a slice of the sorted arrays: fast on millions of cells.
    """
    e, s = _as_arrays(error, std)
    if n_bins < 1:
        raise DrugcellInputError(f"number of std bins must be >= 1, got {n_bins}")
    order = np.argsort(s, kind="stable")
    s_sorted, e_sorted = s[order], e[order]
    bins = (np.arange(s.size) * n_bins) // max(s.size, 1)
    n = np.bincount(bins, minlength=n_bins)
    used = np.flatnonzero(n)
    n = n[used]
    ends = np.cumsum(n)
    starts = ends - n
    mean_std = np.add.reduceat(s_sorted, starts) / n if s.size else np.zeros(0)
    mae = np.add.reduceat(np.abs(e_sorted), starts) / n if s.size else np.zeros(0)
    rmse = np.sqrt(np.add.reduceat(e_sorted ** 2, starts) / n) if s.size else np.zeros(0)
    return pd.DataFrame({
        "bin": used + 1,  # 1-based: "decile 1" is the smallest std
        "n": n.astype(np.int64),
        "std_min": s_sorted[starts] if s.size else np.zeros(0),
        "std_max": s_sorted[ends - 1] if s.size else np.zeros(0),
        "mean_std": mean_std, "mae": mae, "ideal_mae": MAE_PER_STD * mean_std, "rmse": rmse,
    })
