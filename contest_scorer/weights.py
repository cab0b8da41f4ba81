"""Mejia weights: per-(gene, compound) importance from a Welch t-test of each compound vs the rest.

Arithmetic (``../shared/spec/contest-metric.md``), on replicate-level L = log2(CPM + 1):

    v_p = max(var_p, V_g), v_r = max(var_r, V_g)   (ddof=1; V_g = variance over ALL N samples)
    n_p < 2 -> v_p = V_g (warned)
    t = (mean_p - mean_r) / max(sqrt(v_p/n_p + v_r/n_r), 1e-12)
    w = s^2 / sum_g s^2 with s = min-max scaled |t| per compound; degenerate column -> uniform
    no rest (n_r = N - n_p < 1: one sample in all, or one compound holding every sample) -> the
    t-statistic is undefined -> uniform 1/G (warned), never NaN

Everything needs only per-compound means/variances and per-gene totals, so weights can be built
from accumulated statistics: :func:`weights_from_stats` in float64 (the reference, used on data
held in memory), and :func:`mejia_weight_rows`, the same arithmetic rearranged to stay well
conditioned in float32, which drugcell's streaming loader uses chunk by chunk at full scale.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass
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
    v_all = np.maximum((q - s * s / n) / max(n - 1.0, 1.0), 0.0)  # V_g, ddof=1 (0 for a single sample)
    single = n_p < 2
    var_p = np.where(single, 0.0, np.asarray(var_p, dtype=np.float64))
    alone = (n - n_p) < 1  # no rest to compare with (t undefined): uniform weights downstream
    n_r = np.maximum(n - n_p, 1.0)
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
    # t = 0 where there is no rest: the compound's column is then degenerate, i.e. uniform
    return np.where(alone, 0.0, (mean_p - mean_r) / denom)


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
    _warn_no_rest(n_p, n_total)
    c, g = mean_p.shape
    out = np.empty((g, c), dtype=dtype)
    for start in range(0, c, chunk):
        sl = slice(start, min(start + chunk, c))
        t = t_vs_rest(mean_p[sl], var_p[sl], n_p[sl], total_sum, total_sumsq, n_total, mode=mode)
        out[:, sl] = minmax_square_normalize(np.abs(t)).T
    return out


def _warn_no_rest(n_p: np.ndarray, n_total: int) -> None:
    n_alone = int((int(n_total) - np.asarray(n_p) < 1).sum())
    if n_alone:
        warnings.warn(f"{n_alone} compound(s) have no other samples to be compared with ({int(n_total)} sample(s) in "
                      "all): a t-statistic is undefined, so they get uniform weights 1/G", stacklevel=3)


@dataclass(frozen=True)
class GeneTotals:
    """What every compound's t-test shares, per gene over all N samples: the mean ``mean``, the
    sum of squared deviations ``ss`` = (N - 1) V_g and the variance floor ``var`` = V_g (ddof=1).

    Kept apart from the per-compound rows so that a caller computing weights in compound chunks
    (or from a stream) derives them once.
    """

    mean: np.ndarray
    ss: np.ndarray
    var: np.ndarray
    n: int

    @classmethod
    def from_sums(cls, total_sum: np.ndarray, total_sumsq: np.ndarray, n_total: int) -> GeneTotals:
        """From per-gene sums of L and L^2 (float64) over all ``n_total`` samples.

        The sums may be of a shifted L - c_g (any per-gene constant): ``ss`` and ``var`` are
        unchanged and ``mean`` shifts with it, which keeps the sums free of cancellation.
        """
        n = int(n_total)
        mean = total_sum / n
        ss = np.maximum(total_sumsq - total_sum * mean, 0.0)
        var = ss / (n - 1.0) if n > 1 else np.zeros_like(ss)
        return cls(mean=mean, ss=ss, var=var, n=n)


def mejia_weight_rows(mean_p: np.ndarray, var_p: np.ndarray, n_p: np.ndarray, totals: GeneTotals) -> np.ndarray:
    """Mejia weights (c, G) float32 for c compounds from their means and ddof=1 variances (c, G).

    The arithmetic of :func:`t_vs_rest` + :func:`minmax_square_normalize` (floored variances,
    ``var_p`` ignored where ``n_p < 2``), rewritten around the global mean mu so it is well
    conditioned in float32 (10x faster than float64 temporaries at 14k x 13k): with
    d = mean_p - mu and N = n_p + n_r,

        mean_p - mean_r = N d / n_r
        var_r = (SS_all - (n_p - 1) var_p - n_p N d^2 / n_r) / (n_r - 1),  SS_all = (N - 1) V_g

    Rows are independent, so callers may pass any chunk of compounds (threads may fill disjoint
    rows of one array). ``mean_p`` must carry the same per-gene shift as the sums behind
    ``totals`` (see :meth:`GeneTotals.from_sums`); the weights do not depend on the shift.
    """
    f32 = np.float32
    n_total = totals.n
    n = n_p.astype(np.float64)[:, None]
    alone = (n_total - n[:, 0]) < 1  # no rest to compare with: uniform below
    n_r = np.maximum(n_total - n, 1.0)
    x = np.subtract(mean_p, totals.mean, dtype=np.float64).astype(f32)
    vr = np.square(x)
    vr *= (n * n_total / n_r).astype(f32)
    vp = np.array(var_p, dtype=f32, copy=True)
    single = n_p < 2
    vp[single] = 0.0
    vr += vp * (n - 1.0).astype(f32)
    np.subtract(totals.ss.astype(f32), vr, out=vr)
    vr *= (1.0 / np.maximum(n_r - 1.0, 1.0)).astype(f32)
    v_g = totals.var.astype(f32)
    np.maximum(vr, v_g, out=vr)
    np.maximum(vp, v_g, out=vp)
    vp[single] = v_g
    vp *= (1.0 / n).astype(f32)
    vr *= (1.0 / n_r).astype(f32)
    vr += vp
    np.sqrt(vr, out=vr)
    np.maximum(vr, f32(_EPS), out=vr)
    x *= (n_total / n_r).astype(f32)
    np.divide(x, vr, out=x)
    np.abs(x, out=x)
    lo = x.min(axis=1, keepdims=True)
    span = x.max(axis=1, keepdims=True) - lo
    x -= lo
    x *= 1.0 / np.where(span > 0, span, 1.0)
    np.square(x, out=x)
    total = x.sum(axis=1, keepdims=True, dtype=np.float64)
    x *= (1.0 / np.where(total > 0, total, 1.0)).astype(f32)
    flat = (span[:, 0] <= 0) | (total[:, 0] <= 0) | alone
    x[flat] = 1.0 / x.shape[1]
    return x


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

    A compound with no other samples to be compared with (one sample in all, or every sample
    its own) has no t-statistic: it gets the uniform fallback 1/G per gene, with a warning.

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
