"""The contest metric: per-compound weighted MSE, and the per-gene weightings used to compare.

    wMSE_c = sum_g W[g, c] * (pred[c, g] - truth[c, g])^2 ;  leaderboard = mean_c wMSE_c

Matrices follow the official orientation at the pandas level (genes x compounds); the numpy fast
paths take compounds x genes truth/predictions (rows = compounds, as models produce them) and
genes x compounds weights (as the official ``weights.parquet``).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable

import numpy as np
import pandas as pd

from contest_scorer._frames import require_columns, show_ids, to_pandas
from contest_scorer.errors import ScoringError

COMPOUND_COL = "compound"
GENE_COL = "gene_id"
EXPRESSION_COL = "expression"
PRED_COL = "predicted_expression"
#: how far a compound's weights may sum from 1 (the official file is float16: sums drift ~1e-3)
WEIGHT_SUM_TOL = 1e-2


def validate_weights(w: np.ndarray, *, per_compound: bool, names: object = None, tol: float = WEIGHT_SUM_TOL) -> None:
    """Refuse weights that cannot be Mejia (or per-gene) weights: NaN/inf, negative values, or a
    compound's column (per-gene weights: the vector) not summing to 1 within ``tol``."""
    w = np.asarray(w, dtype=np.float64)
    if not np.isfinite(w).all():
        raise ScoringError(f"weights contain {int((~np.isfinite(w)).sum())} NaN/inf value(s); every scored "
                           "(gene, compound) needs a finite weight")
    if (w < 0).any():
        raise ScoringError(f"weights contain {int((w < 0).sum())} negative value(s); Mejia weights are >= 0")
    sums = w.sum(axis=0) if per_compound else np.atleast_1d(w.sum())
    off = np.abs(sums - 1.0) > tol
    if off.any():
        i = int(np.flatnonzero(off)[0])
        label = names[i] if names is not None and per_compound else ("the per-gene weights" if not per_compound else i)
        raise ScoringError(
            f"weights of {int(off.sum())} compound(s) do not sum to 1 over the scored genes (within {tol:g}), e.g. "
            f"{label}: {sums[i]:.6g}; pass the official weights restricted to the gene filter, or renormalise")


# --------------------------------------------------------------------------- numpy fast paths
def per_compound_wmse(
    truth_cg: np.ndarray, pred_cg: np.ndarray, weights: np.ndarray, *, chunk: int = 512
) -> np.ndarray:
    """wMSE per compound: truth/pred (C, G); weights (G, C) per compound or (G,) per gene.

    Accumulates in float64 over compound chunks so 14k x 13k inputs need no big temporaries.
    """
    truth_cg = np.asarray(truth_cg)
    pred_cg = np.asarray(pred_cg)
    w = np.asarray(weights)
    if truth_cg.shape != pred_cg.shape:
        raise ScoringError(f"shape mismatch: truth {truth_cg.shape} vs prediction {pred_cg.shape}")
    c, g = truth_cg.shape
    if w.ndim == 1 and w.shape != (g,):
        raise ScoringError(f"per-gene weights must have length {g}, got {w.shape}")
    if w.ndim == 2 and w.shape != (g, c):
        raise ScoringError(f"weights must be genes x compounds {(g, c)}, got {w.shape}")
    out = np.empty(c, dtype=np.float64)
    for start in range(0, c, chunk):
        sl = slice(start, min(start + chunk, c))
        d = pred_cg[sl].astype(np.float64) - truth_cg[sl]
        d *= d
        if w.ndim == 1:
            out[sl] = d @ w.astype(np.float64)
        else:
            out[sl] = np.einsum("cg,gc->c", d, w[:, sl].astype(np.float64))
    return out


def variance_weights(truth_cg: np.ndarray) -> np.ndarray:
    """Official fallback weighting: across-compound variance of the truth (ddof=0), sums to 1.

    Degenerate (all variances zero) -> uniform, as the official package does.
    """
    var = np.asarray(truth_cg, dtype=np.float64).var(axis=0, ddof=0)
    total = var.sum()
    if total <= 0:
        return np.full(var.shape, 1.0 / var.size)
    return var / total


def proxy_weights(train_truth_cg: np.ndarray) -> np.ndarray:
    """The paper's proxy: w_g proportional to 1 / across-compound variance of the training truth.

    Genes with zero training variance cannot be weighted by their inverse: they get weight 0 and
    a warning says how many.
    """
    var = np.asarray(train_truth_cg, dtype=np.float64).var(axis=0, ddof=0)
    ok = var > 0
    if not ok.any():
        raise ScoringError("proxy weights: every gene has zero variance across training compounds")
    if (~ok).any():
        warnings.warn(f"proxy weights: {int((~ok).sum())} gene(s) with zero training variance get weight 0", stacklevel=2)
    inv = np.zeros_like(var)
    inv[ok] = 1.0 / var[ok]
    return inv / inv.sum()


# --------------------------------------------------------------------------- pandas level
def _gene_by_compound(x: object, *, name: str) -> pd.DataFrame:
    """A truth table in long form or genes x compounds form -> genes x compounds DataFrame."""
    if isinstance(x, pd.DataFrame) and EXPRESSION_COL in x.columns and GENE_COL in x.columns:
        mat, _ = _strict_pivot(x, EXPRESSION_COL, name=name)
        return mat
    return pd.DataFrame(x)


def compute_variance_weights(truth_train: object, *, gene_filter: Iterable[str] | None = None) -> pd.Series:
    """Official-compatible: per-gene variance weights (long or genes x compounds input)."""
    mat = _gene_by_compound(to_pandas(truth_train, name="truth_train") if not isinstance(truth_train, np.ndarray) else truth_train, name="truth_train")
    if gene_filter is not None:
        mat = _reindex_genes(mat, gene_filter, name="truth_train")
    return pd.Series(variance_weights(mat.to_numpy().T), index=mat.index, name="weight")


def compute_proxy_weights(truth_train: object, *, gene_filter: Iterable[str] | None = None) -> pd.Series:
    """Per-gene inverse-variance (proxy) weights from the *training* truth."""
    mat = _gene_by_compound(to_pandas(truth_train, name="truth_train") if not isinstance(truth_train, np.ndarray) else truth_train, name="truth_train")
    if gene_filter is not None:
        mat = _reindex_genes(mat, gene_filter, name="truth_train")
    return pd.Series(proxy_weights(mat.to_numpy().T), index=mat.index, name="weight")


def _reindex_genes(mat: pd.DataFrame, gene_filter: Iterable[str], *, name: str) -> pd.DataFrame:
    genes = sorted({str(g) for g in gene_filter})
    absent = [g for g in genes if g not in mat.index]
    if absent:
        raise ScoringError(f"{name} lacks {len(absent)} gene(s) of the gene filter: {show_ids(absent)}")
    return mat.loc[genes]


def _strict_pivot(df: pd.DataFrame, value_col: str, *, name: str) -> tuple[pd.DataFrame, None]:
    """Long -> genes x compounds, refusing duplicates, holes and non-finite values."""
    require_columns(df, [COMPOUND_COL, GENE_COL, value_col], name=name)
    comp = df[COMPOUND_COL].astype(str).to_numpy()
    gene = df[GENE_COL].astype(str).to_numpy()
    values = pd.to_numeric(df[value_col], errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ScoringError(
            f"{name} has {int(bad.sum())} NaN/inf/non-numeric {value_col} value(s); first at row {i} "
            f"(compound {comp[i]}, gene {gene[i]})"
        )
    c_codes, compounds = pd.factorize(comp, sort=True)
    g_codes, genes = pd.factorize(gene, sort=True)
    flat = c_codes.astype(np.int64) * len(genes) + g_codes
    counts = np.bincount(flat, minlength=len(compounds) * len(genes))
    if (counts > 1).any():
        k = int(np.flatnonzero(counts > 1)[0])
        raise ScoringError(
            f"{name} has {int((counts > 1).sum())} duplicate (compound, gene) pair(s), e.g. "
            f"({compounds[k // len(genes)]}, {genes[k % len(genes)]}); keep exactly one row per pair"
        )
    if (counts == 0).any():
        k = int(np.flatnonzero(counts == 0)[0])
        raise ScoringError(
            f"{name} is missing {int((counts == 0).sum())} (compound, gene) pair(s), e.g. "
            f"({compounds[k // len(genes)]}, {genes[k % len(genes)]})"
        )
    mat = np.empty((len(genes), len(compounds)))
    mat[g_codes, c_codes] = values
    return pd.DataFrame(mat, index=pd.Index(genes, name=GENE_COL), columns=pd.Index(compounds, name=COMPOUND_COL)), None


def wmse(truth: object, prediction: object, weights: object) -> pd.Series:
    """Per-compound wMSE of genes x compounds matrices, paired by label (gene ids as rows, compound
    ids as columns; the prediction is reordered to the truth's labels); weights per gene or per
    compound, validated (:func:`validate_weights`). Refuses differing labels, NaN/inf and negative
    predictions."""
    t = pd.DataFrame(truth)
    p = pd.DataFrame(prediction)
    if t.shape != p.shape:
        raise ScoringError(f"shape mismatch: truth {t.shape} vs prediction {p.shape}")
    for axis, (a, b) in (("gene", (t.index, p.index)), ("compound", (t.columns, p.columns))):
        if set(map(str, a)) != set(map(str, b)) or len(set(map(str, a))) != len(a):
            lack = sorted(set(map(str, a)) - set(map(str, b)))
            raise ScoringError(f"prediction and truth {axis} labels differ (or repeat): {len(lack)} truth "
                               f"{axis}(s) not in the prediction, e.g. {show_ids(lack)}")
    t.index, t.columns = t.index.astype(str), t.columns.astype(str)
    p.index, p.columns = p.index.astype(str), p.columns.astype(str)
    p = p.loc[t.index, t.columns]
    tv = pd.DataFrame(t).apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    pv = pd.DataFrame(p).apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    for name, v in (("truth", tv), ("prediction", pv)):
        if not np.isfinite(v).all():
            raise ScoringError(f"{name} has {int((~np.isfinite(v)).sum())} NaN/inf/non-numeric value(s)")
    if (pv < 0).any():
        raise ScoringError(f"prediction has {int((pv < 0).sum())} negative value(s); log2(CPM+1) is >= 0, clip at 0")
    if isinstance(weights, pd.DataFrame):
        w = _align_weight_frame(weights, t.index, t.columns).to_numpy()
    elif isinstance(weights, pd.Series):
        w = _align_weight_series(weights, t.index).to_numpy()
    else:
        w = np.asarray(weights, dtype=np.float64)
    validate_weights(w, per_compound=w.ndim == 2, names=list(t.columns))
    out = per_compound_wmse(tv.T, pv.T, w)
    return pd.Series(out, index=t.columns, name="wmse")


def _align_weight_frame(w: pd.DataFrame, genes: pd.Index, compounds: pd.Index) -> pd.DataFrame:
    w = w.copy()
    if GENE_COL in w.columns:
        w = w.set_index(GENE_COL)
    w.index = w.index.astype(str)
    w.columns = w.columns.astype(str)
    missing_c = [c for c in compounds if c not in w.columns]
    if missing_c:
        raise ScoringError(f"weights have no column for {len(missing_c)} scored compound(s): {show_ids(missing_c)}")
    missing_g = [g for g in genes if g not in w.index]
    if missing_g:
        raise ScoringError(f"weights have no row for {len(missing_g)} scored gene(s): {show_ids(missing_g)}")
    out = w.loc[list(genes), list(compounds)].astype(np.float64)
    if not np.all(np.isfinite(out.to_numpy())):
        raise ScoringError("weights contain NaN/inf for scored (gene, compound) pairs")
    return out


def _align_weight_series(w: pd.Series, genes: pd.Index) -> pd.Series:
    w = w.copy()
    w.index = w.index.astype(str)
    missing = [g for g in genes if g not in w.index]
    if missing:
        raise ScoringError(f"per-gene weights lack {len(missing)} scored gene(s): {show_ids(missing)}")
    return w.loc[list(genes)].astype(np.float64)


def score_compounds(
    truth: object,
    prediction: object,
    *,
    gene_filter: Iterable[str] | None = None,
    weights: pd.Series | pd.DataFrame | np.ndarray | None = None,
    weighting: str | None = None,
    truth_train: object | None = None,
) -> pd.DataFrame:
    """Per-compound table (index ``compound``, column ``wmse``) for a long truth and prediction.

    Refuses (``ScoringError``): a truth compound missing from the prediction, duplicate or missing
    (compound, gene) rows, NaN/inf, negative predictions, prediction genes that differ from the
    gene filter, and weights missing for a scored compound or gene. Extra predicted compounds
    (not in the truth) are ignored. Never falls back silently: without ``weights`` you must name
    ``weighting="variance"`` (official fallback, from this truth) or ``"proxy"`` (needs
    ``truth_train``).
    """
    truth_df = to_pandas(truth, name="truth")
    pred_df = to_pandas(prediction, name="prediction")
    require_columns(truth_df, [COMPOUND_COL, GENE_COL, EXPRESSION_COL], name="truth")
    require_columns(pred_df, [COMPOUND_COL, GENE_COL, PRED_COL], name="prediction")
    truth_mat, _ = _strict_pivot(truth_df, EXPRESSION_COL, name="truth")
    pred_comp = set(pred_df[COMPOUND_COL].astype(str).unique())
    missing = [c for c in truth_mat.columns if c not in pred_comp]
    if missing:
        raise ScoringError(
            f"prediction lacks {len(missing)} compound(s) of the truth: {show_ids(missing)}; "
            "a submission must cover every scored compound"
        )
    pred_mat, _ = _strict_pivot(pred_df, PRED_COL, name="prediction")
    if (pred_mat.to_numpy() < 0).any():
        n_neg = int((pred_mat.to_numpy() < 0).sum())
        raise ScoringError(f"prediction has {n_neg} negative value(s); log2(CPM+1) is >= 0, clip at 0")
    expected_genes = sorted({str(g) for g in gene_filter}) if gene_filter is not None else list(truth_mat.index)
    for name, mat in (("prediction", pred_mat), ("truth", truth_mat)):
        got = set(mat.index)
        if got != set(expected_genes):
            extra = sorted(got - set(expected_genes))
            lack = sorted(set(expected_genes) - got)
            raise ScoringError(
                f"{name} genes differ from the gene filter: {len(lack)} missing ({show_ids(lack)}), "
                f"{len(extra)} extra ({show_ids(extra)})"
            )
    truth_mat = truth_mat.loc[expected_genes]
    pred_mat = pred_mat.loc[expected_genes, list(truth_mat.columns)]
    if weights is None:
        if weighting == "variance":
            w: object = pd.Series(variance_weights(truth_mat.to_numpy().T), index=truth_mat.index)
        elif weighting == "proxy":
            if truth_train is None:
                raise ScoringError("weighting='proxy' needs truth_train (the training truth)")
            w = compute_proxy_weights(truth_train, gene_filter=expected_genes)
        elif weighting is None:
            raise ScoringError(
                "no weights given: pass the official Mejia weights (weights.parquet), or ask for "
                "weighting='variance' or 'proxy' explicitly (this scorer never falls back silently)"
            )
        else:
            raise ScoringError(f"unknown weighting {weighting!r}; use 'variance' or 'proxy', or pass weights")
    elif isinstance(weights, np.ndarray):
        w = weights
    else:
        w = weights
    return pd.DataFrame({"wmse": wmse(truth_mat, pred_mat, w)})


def aggregate_leaderboards(per_compound: pd.DataFrame) -> dict[str, object]:
    """Leaderboard summary: compound count and the plain mean of per-compound wMSE."""
    values = pd.to_numeric(per_compound["wmse"], errors="coerce").to_numpy(dtype=np.float64)
    if len(values) and not np.isfinite(values).all():
        bad = list(per_compound.index[~np.isfinite(values)])
        raise ScoringError(f"{len(bad)} compound(s) have no finite wMSE (e.g. {show_ids(bad)}); a leaderboard "
                           "over the others would silently average fewer compounds")
    return {"n_compounds": len(per_compound), "wmse_mean": float(values.mean()) if len(values) else float("nan")}
