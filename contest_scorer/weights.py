"""Mejia weights: per-(gene, compound) importance from a Welch t-test of each compound vs the rest.

Arithmetic (``../shared/spec/contest-metric.md``), on replicate-level L = log2(CPM + 1):

    v_p = max(var_p, V_g), v_r = max(var_r, V_g)   (ddof=1; V_g = variance over ALL N samples)
    n_p < 2 -> v_p = V_g (warned)
    t = (mean_p - mean_r) / max(sqrt(v_p/n_p + v_r/n_r), 1e-12)
    w = s^2 / sum_g s^2 with s = min-max scaled |t| per compound; degenerate column -> uniform

Everything needs only per-compound means/variances and per-gene totals, so the streaming loader
computes the same weights from accumulated statistics through :func:`weights_from_stats`.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import Literal

import numpy as np
import pandas as pd

from contest_scorer.errors import ScoringError
from contest_scorer.expression import DEFAULT_SAMPLE_COL, _restrict_genes, _wide_counts
from contest_scorer.metrics import COMPOUND_COL, GENE_COL

VarianceMode = Literal["per_compound_floored", "pooled"]
LibraryMode = Literal["scored", "all"]
_EPS = 1e-12


def t_vs_rest(
    mean_p: np.ndarray,
    var_p: np.ndarray,
    n_p: np.ndarray,
    total_sum: np.ndarray,
    total_sumsq: np.ndarray,
    n_total: int,
    *,
    mode: VarianceMode = "per_compound_floored",
) -> np.ndarray:
    """Welch t of each compound vs the rest, from sufficient statistics (compounds x genes).

    ``mean_p``/``var_p`` are (C, G) within-compound means and ddof=1 variances (``var_p`` is
    ignored where ``n_p < 2``); ``total_sum``/``total_sumsq`` are (G,) sums of L and L^2 over all
    ``n_total`` samples. Computed in float64.
    """
    mean_p = np.asarray(mean_p, dtype=np.float64)
    n_p = np.asarray(n_p, dtype=np.float64)[:, None]
    s = np.asarray(total_sum, dtype=np.float64)[None, :]
    q = np.asarray(total_sumsq, dtype=np.float64)[None, :]
    n = float(n_total)
    v_all = np.maximum((q - s * s / n) / (n - 1.0), 0.0)  # V_g, ddof=1
    single = n_p < 2
    var_p = np.where(single, 0.0, np.asarray(var_p, dtype=np.float64))
    n_r = n - n_p
    sum_r = s - n_p * mean_p
    sumsq_r = q - (var_p * (n_p - 1.0) + n_p * mean_p * mean_p)
    mean_r = sum_r / n_r
    var_r = np.maximum((sumsq_r - n_r * mean_r * mean_r) / np.maximum(n_r - 1.0, 1.0), 0.0)
    if mode == "per_compound_floored":
        v_p = np.where(single, v_all, np.maximum(var_p, v_all))
        v_r = np.maximum(var_r, v_all)
    elif mode == "pooled":
        v_p = np.broadcast_to(v_all, mean_p.shape)
        v_r = v_p
    else:
        raise ScoringError(f"unknown variance mode {mode!r}; use 'per_compound_floored' or 'pooled'")
    denom = np.maximum(np.sqrt(v_p / n_p + v_r / n_r), _EPS)
    return (mean_p - mean_r) / denom


def minmax_square_normalize(abs_t: np.ndarray) -> np.ndarray:
    """|t| (C, G) -> weights (C, G): per-compound min-max, square, normalise to sum 1.

    A degenerate compound (max == min, or zero sum) gets uniform weights 1/G.
    """
    a = np.asarray(abs_t, dtype=np.float64)
    lo = a.min(axis=1, keepdims=True)
    span = a.max(axis=1, keepdims=True) - lo
    degenerate = span[:, 0] <= 0
    s = (a - lo) / np.where(span > 0, span, 1.0)
    s *= s
    total = s.sum(axis=1, keepdims=True)
    out = s / np.where(total > 0, total, 1.0)
    fallback = degenerate | (total[:, 0] <= 0)
    if fallback.any():
        out[fallback] = 1.0 / a.shape[1]
    return out


def weights_from_stats(
    mean_p: np.ndarray,
    var_p: np.ndarray,
    n_p: np.ndarray,
    total_sum: np.ndarray,
    total_sumsq: np.ndarray,
    n_total: int,
    *,
    mode: VarianceMode = "per_compound_floored",
    chunk: int = 1024,
    dtype: type = np.float64,
) -> np.ndarray:
    """Weights (G, C) from per-compound stats (C, G), in compound chunks to bound memory."""
    n_p = np.asarray(n_p)
    n_single = int((n_p < 2).sum())
    if n_single:
        warnings.warn(f"{n_single} compound(s) have <2 replicates; their variance is the gene-wide V_g", stacklevel=2)
    c, g = mean_p.shape
    out = np.empty((g, c), dtype=dtype)
    for start in range(0, c, chunk):
        sl = slice(start, min(start + chunk, c))
        t = t_vs_rest(mean_p[sl], var_p[sl], n_p[sl], total_sum, total_sumsq, n_total, mode=mode)
        out[:, sl] = minmax_square_normalize(np.abs(t)).T
    return out


def replicate_stats(
    logcpm_gs: np.ndarray, sample_compounds: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-compound (sorted) mean, ddof=1 variance (NaN for n<2) and n, from L (genes x samples)."""
    codes, compounds = pd.factorize(np.asarray(sample_compounds, dtype=str), sort=True)
    x = np.asarray(logcpm_gs, dtype=np.float64).T  # samples x genes
    n = np.bincount(codes, minlength=len(compounds))
    sums = np.zeros((len(compounds), x.shape[1]))
    np.add.at(sums, codes, x)
    mean = sums / n[:, None]
    dev = x - mean[codes]
    ss = np.zeros_like(sums)
    np.add.at(ss, codes, dev * dev)
    with np.errstate(invalid="ignore", divide="ignore"):
        var = np.where(n[:, None] >= 2, ss / np.maximum(n[:, None] - 1, 1), np.nan)
    return np.asarray(compounds, dtype=str), mean, var, n


def _weights_frame(
    counts: object,
    metadata: object,
    *,
    sample_col: str,
    compound_col: str,
    gene_col: str,
    gene_filter: Iterable[str] | None,
    library: LibraryMode,
    mode: VarianceMode,
) -> pd.DataFrame:
    mat, s2c = _wide_counts(counts, metadata, sample_col=sample_col, compound_col=compound_col, gene_col=gene_col)
    genes = _restrict_genes(mat, gene_filter)
    sub = mat.loc[genes].to_numpy(dtype=np.float64)
    if library == "scored":
        lib = sub.sum(axis=0)
    elif library == "all":
        lib = mat.to_numpy(dtype=np.float64).sum(axis=0)
    else:
        raise ScoringError(f"library must be 'scored' or 'all', got {library!r}")
    if np.any(lib <= 0):
        keep = lib > 0
        warnings.warn(f"dropping {int((~keep).sum())} sample(s) with no counts on the scored genes", stacklevel=3)
        sub, lib, s2c = sub[:, keep], lib[keep], s2c[keep]
    logcpm = np.log2(sub * (1e6 / lib)[None, :] + 1.0)
    compounds, mean, var, n = replicate_stats(logcpm, s2c.to_numpy())
    w = weights_from_stats(
        mean, var, n, logcpm.sum(axis=1), (logcpm * logcpm).sum(axis=1), logcpm.shape[1], mode=mode
    )
    frame = pd.DataFrame(w, index=pd.Index(genes, name=gene_col), columns=pd.Index(compounds, name=COMPOUND_COL))
    return frame


def compute_mejia_weights(
    counts: object,
    metadata: object,
    *,
    sample_col: str = DEFAULT_SAMPLE_COL,
    compound_col: str = COMPOUND_COL,
    gene_col: str = GENE_COL,
    gene_filter: Iterable[str] | None = None,
    library: LibraryMode = "scored",
) -> pd.DataFrame:
    """Mejia weights, genes (sorted) x compounds (sorted); each column sums to 1.

    ``library="scored"`` (the official build) takes each sample's library size after restricting
    the counts to ``gene_filter``; ``library="all"`` uses every gene of ``counts`` (as the target
    does). Every compound in ``metadata`` (library and controls) becomes a column.
    """
    return _weights_frame(
        counts, metadata, sample_col=sample_col, compound_col=compound_col, gene_col=gene_col,
        gene_filter=gene_filter, library=library, mode="per_compound_floored",
    )


def compute_pooled_weights(
    counts: object,
    metadata: object,
    *,
    sample_col: str = DEFAULT_SAMPLE_COL,
    compound_col: str = COMPOUND_COL,
    gene_col: str = GENE_COL,
    gene_filter: Iterable[str] | None = None,
    library: LibraryMode = "scored",
) -> pd.DataFrame:
    """Like :func:`compute_mejia_weights` but with V_g as both variances (a moderated t)."""
    return _weights_frame(
        counts, metadata, sample_col=sample_col, compound_col=compound_col, gene_col=gene_col,
        gene_filter=gene_filter, library=library, mode="pooled",
    )
