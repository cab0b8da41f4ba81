"""The contest metric: per-compound weighted MSE, and the per-gene weightings used to compare.

    wMSE_c = sum_g W[g, c] * (pred[c, g] - truth[c, g])^2 ;  leaderboard = mean_c wMSE_c

Matrices follow the official orientation at the pandas level (genes x compounds); the numpy fast
paths take compounds x genes truth/predictions (rows = compounds, as models produce them) and
genes x compounds weights (as the official ``weights.parquet``).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable

import numpy as np
import pandas as pd

from contest_scorer._frames import (
    id_list,
    numeric_array,
    numeric_column,
    numeric_frame,
    read_table,
    require_columns,
    show_ids,
    to_pandas,
)
from contest_scorer.columns import COMPOUND_COL, EXPRESSION_COL, GENE_COL, PRED_COL
from contest_scorer.errors import ScoringError

#: how far a compound's weights may sum from 1 (the official file is float16: sums drift ~1e-3)
WEIGHT_SUM_TOL = 1e-2


def validate_weights(w: object, *, per_compound: bool, names: object = None, tol: float = WEIGHT_SUM_TOL,
                     chunk: int = 1024) -> None:
    """Refuse weights that cannot be Mejia (or per-gene) weights: text/booleans, NaN/inf, negative
    values, or a compound's column (per-gene weights: the vector) not summing to 1 within ``tol``.
    The message counts every offence and names the first compound (``names[j]``, else column j).
    2-D weights are checked in compound chunks, so a 14k x 13k float32 array is never copied whole."""
    w = numeric_array(w, name="weights")
    per_compound = per_compound and w.ndim == 2
    mat = w if per_compound else np.asarray(w).reshape(-1, 1)
    counts = {"NaN/inf": 0, "negative": 0, "sum": 0}
    first: dict[str, tuple[int, float]] = {}
    for lo in range(0, mat.shape[1], chunk):
        b = np.asarray(mat[:, lo:lo + chunk], dtype=np.float64)
        finite = np.isfinite(b)
        sums = np.where(finite, b, 0.0).sum(axis=0)
        for key, bad in (("NaN/inf", ~finite), ("negative", b < 0), ("sum", np.abs(sums - 1.0) > tol)):
            if bad.any():
                counts[key] += int(bad.sum())
                j = int(np.flatnonzero(bad.any(axis=0) if bad.ndim == 2 else bad)[0])
                first.setdefault(key, (lo + j, float(sums[j])))
    if not first:
        return

    def label(j: int) -> str:
        if not per_compound:
            return "the per-gene weights"
        return f"compound {names[j]}" if names is not None else f"compound column {j}"

    for key in ("NaN/inf", "negative"):
        if key in first:
            raise ScoringError(f"weights contain {counts[key]} {key} value(s), first in {label(first[key][0])}; every "
                               "scored (gene, compound) needs a finite weight >= 0 (Mejia weights are)")
    j, total = first["sum"]
    raise ScoringError(
        f"weights of {counts['sum']} compound(s) do not sum to 1 over the scored genes (within {tol:g}), e.g. "
        f"{label(j)}: {total:.6g}; pass the official weights restricted to the gene filter, or renormalise")


# --------------------------------------------------------------------------- numpy fast paths
def per_compound_wmse(
    truth_cg: object, pred_cg: object, weights: object, *, chunk: int = 512, allow_negative: bool = False
) -> np.ndarray | pd.Series:
    """wMSE per compound: truth/pred (C, G); weights (G, C) per compound or (G,) per gene.

    Arrays pair by position; DataFrames (compounds as rows, genes as columns) pair by label: the
    prediction is reordered to the truth's labels, labelled weights (genes x compounds frame or a
    per-gene Series) likewise, and a Series indexed by compound is returned. Refuses differing or
    repeated labels, a labelled and an unlabelled side, text or booleans, NaN/inf, negative
    predictions (``allow_negative=True`` for reference figures of unclipped noise) and weights that
    :func:`validate_weights` refuses. Accumulates in float64 over compound chunks (checks
    included) so 14k x 13k inputs need no big temporaries.
    """
    labels = None
    if any(isinstance(x, (pd.DataFrame, pd.Series)) for x in (truth_cg, pred_cg, weights)):
        truth_cg, pred_cg, weights, labels = _align_compound_major(truth_cg, pred_cg, weights)
    t = numeric_array(truth_cg, name="truth")
    p = numeric_array(pred_cg, name="prediction")
    w = numeric_array(weights, name="weights")
    if t.ndim != 2 or t.shape != p.shape:
        raise ScoringError(f"shape mismatch: truth {t.shape} vs prediction {p.shape} (both compounds x genes)")
    c, g = t.shape
    if w.ndim == 1 and w.shape != (g,):
        raise ScoringError(f"per-gene weights must have length {g}, got {w.shape}")
    if w.ndim == 2 and w.shape != (g, c):
        raise ScoringError(f"weights must be genes x compounds {(g, c)}, got {w.shape}")
    if w.ndim not in (1, 2):
        raise ScoringError(f"weights must be (genes,) or (genes, compounds), got {w.shape}")
    if w.ndim == 1:
        w = w.astype(np.float64)
    validate_weights(w, per_compound=w.ndim == 2, names=labels)
    out = np.empty(c, dtype=np.float64)
    for start in range(0, c, chunk):
        sl = slice(start, min(start + chunk, c))
        tc = np.asarray(t[sl], dtype=np.float64)
        d = np.array(p[sl], dtype=np.float64)  # a copy: the caller's prediction is never modified
        _check_rows(tc, d, labels, start, allow_negative=allow_negative)
        d -= tc
        d *= d
        if w.ndim == 1:
            out[sl] = d @ w
        else:
            out[sl] = np.einsum("cg,gc->c", d, np.asarray(w[:, sl], dtype=np.float64))
    return out if labels is None else pd.Series(out, index=pd.Index(labels, name=COMPOUND_COL), name="wmse")


def _check_rows(truth: np.ndarray, pred: np.ndarray, labels: list[str] | None, start: int, *,
                allow_negative: bool) -> None:
    """NaN/inf anywhere, or a negative prediction, refused naming the first compound (its label,
    else its row)."""
    def name(i: int) -> str:
        return f"compound {labels[start + i]}" if labels is not None else f"compound row {start + i}"

    for what, v in (("truth", truth), ("prediction", pred)):
        bad = ~np.isfinite(v)
        if bad.any():
            raise ScoringError(f"{what} has NaN/inf value(s), first in {name(int(np.flatnonzero(bad.any(axis=1))[0]))}; "
                               "every scored (compound, gene) needs a finite value")
    if not allow_negative and (pred < 0).any():
        raise ScoringError(f"prediction has negative value(s), first in {name(int(np.flatnonzero((pred < 0).any(axis=1))[0]))}; "
                           "log2(CPM+1) is >= 0, clip at 0")


def variance_weights(truth_cg: np.ndarray) -> np.ndarray:
    """Official fallback weighting: across-compound variance of the truth (ddof=0), sums to 1.

    Degenerate (all variances zero) -> uniform, as the official package does.
    """
    var = _finite(truth_cg, "truth").var(axis=0, ddof=0)
    total = var.sum()
    if total <= 0:
        return np.full(var.shape, 1.0 / var.size)
    return var / total


def proxy_weights(train_truth_cg: np.ndarray) -> np.ndarray:
    """The paper's proxy: w_g proportional to 1 / across-compound variance of the training truth.

    Genes with zero training variance cannot be weighted by their inverse: they get weight 0 and
    a warning says how many.
    """
    var = _finite(train_truth_cg, "training truth").var(axis=0, ddof=0)
    ok = var > 0
    if not ok.any():
        raise ScoringError("proxy weights: every gene has zero variance across training compounds")
    if (~ok).any():
        warnings.warn(f"proxy weights: {int((~ok).sum())} gene(s) with zero training variance get weight 0", stacklevel=2)
    inv = np.zeros_like(var)
    inv[ok] = 1.0 / var[ok]
    return inv / inv.sum()


def _finite(x: object, name: str) -> np.ndarray:
    a = numeric_array(x, name=name).astype(np.float64)
    if not np.isfinite(a).all():
        raise ScoringError(f"{name} has {int((~np.isfinite(a)).sum())} NaN/inf value(s); weights built from it "
                           "would be NaN")
    return a


# --------------------------------------------------------------------------- pandas level
def _gene_by_compound(x: object, *, name: str) -> pd.DataFrame:
    """A truth table in long form or genes x compounds form -> genes x compounds float DataFrame."""
    if not isinstance(x, np.ndarray):
        x = to_pandas(x, name=name)
    if isinstance(x, pd.DataFrame) and EXPRESSION_COL in x.columns and GENE_COL in x.columns:
        return _strict_pivot(x, EXPRESSION_COL, name=name)
    mat = pd.DataFrame(x)
    return pd.DataFrame(numeric_frame(mat, name=name, col_label="compound column"), index=mat.index.astype(str),
                        columns=mat.columns)


def compute_variance_weights(truth_train: object, *, gene_filter: Iterable[str] | None = None) -> pd.Series:
    """Official-compatible: per-gene variance weights (long or genes x compounds input)."""
    mat = _gene_by_compound(truth_train, name="truth_train")
    if gene_filter is not None:
        mat = _reindex_genes(mat, gene_filter, name="truth_train")
    return pd.Series(variance_weights(mat.to_numpy().T), index=mat.index, name="weight")


def compute_proxy_weights(truth_train: object, *, gene_filter: Iterable[str] | None = None) -> pd.Series:
    """Per-gene inverse-variance (proxy) weights from the *training* truth."""
    mat = _gene_by_compound(truth_train, name="truth_train")
    if gene_filter is not None:
        mat = _reindex_genes(mat, gene_filter, name="truth_train")
    return pd.Series(proxy_weights(mat.to_numpy().T), index=mat.index, name="weight")


def _reindex_genes(mat: pd.DataFrame, gene_filter: Iterable[str], *, name: str) -> pd.DataFrame:
    genes = sorted(set(id_list(gene_filter, GENE_COL, name="gene_filter")))
    absent = [g for g in genes if g not in mat.index]
    if absent:
        raise ScoringError(f"{name} lacks {len(absent)} gene(s) of the gene filter: {show_ids(absent)}")
    return mat.loc[genes]


def _strict_pivot(df: pd.DataFrame, value_col: str, *, name: str) -> pd.DataFrame:
    """Long -> genes x compounds, refusing duplicates, holes, text/booleans and non-finite values."""
    require_columns(df, [COMPOUND_COL, GENE_COL, value_col], name=name)
    comp = df[COMPOUND_COL].astype(str).to_numpy()
    gene = df[GENE_COL].astype(str).to_numpy()
    values = numeric_column(df[value_col], name=name, where=df)
    bad = ~np.isfinite(values)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ScoringError(
            f"{name} has {int(bad.sum())} NaN/inf/missing {value_col} value(s); first at row {i} "
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
    return pd.DataFrame(mat, index=pd.Index(genes, name=GENE_COL), columns=pd.Index(compounds, name=COMPOUND_COL))


def wmse(truth: object, prediction: object, weights: object) -> pd.Series:
    """Per-compound wMSE of genes x compounds matrices, paired by label (gene ids as rows, compound
    ids as columns; the prediction is reordered to the truth's labels). ``weights``: a genes x
    compounds frame or a per-gene Series (paired by label), an array in the truth's order, or the
    path of an official weights file; validated (:func:`validate_weights`). Refuses differing or
    repeated labels, text or booleans, NaN/inf and negative predictions."""
    t, p = pd.DataFrame(truth), pd.DataFrame(prediction)
    if t.shape != p.shape:
        raise ScoringError(f"shape mismatch: truth {t.shape} vs prediction {p.shape} (genes x compounds)")
    t = pd.DataFrame(numeric_frame(t, name="truth", col_label="compound column"), index=t.index, columns=t.columns)
    p = pd.DataFrame(numeric_frame(p, name="prediction", col_label="compound column"), index=p.index,
                     columns=p.columns)
    return per_compound_wmse(t.T, p.T, _weights_input(weights))


def _weights_input(weights: object) -> object:
    """A path is read as the official layout (``gene_id`` + one column per compound)."""
    if isinstance(weights, (str, os.PathLike)):
        frame = read_table(weights, name="weights")
        return frame.set_index(GENE_COL) if GENE_COL in frame.columns else frame
    if not isinstance(weights, (pd.DataFrame, pd.Series, np.ndarray)) and hasattr(weights, "to_pandas"):
        return to_pandas(weights, name="weights")
    return weights


def _same_labels(a: pd.Index, b: pd.Index, axis: str) -> None:
    """Truth labels ``a`` and prediction labels ``b`` (as strings): unique, and the same set."""
    for side, s in (("truth", a), ("prediction", b)):
        if s.has_duplicates:
            raise ScoringError(f"{side} repeats {axis} label(s) {show_ids(s[s.duplicated()].unique())}; each {axis} "
                               "must appear once")
    if set(a) != set(b):
        lack, extra = sorted(set(a) - set(b)), sorted(set(b) - set(a))
        raise ScoringError(f"prediction and truth {axis} labels differ: {len(lack)} truth {axis}(s) not in the "
                           f"prediction ({show_ids(lack)}), {len(extra)} prediction {axis}(s) not in the truth "
                           f"({show_ids(extra)}); pair them by the same ids")


def _align_compound_major(truth: object, pred: object, weights: object) -> tuple[object, object, object, list[str]]:
    """Labelled compounds x genes truth and prediction (+ weights) in the truth's order."""
    if not (isinstance(truth, pd.DataFrame) and isinstance(pred, pd.DataFrame)):
        raise ScoringError("truth and prediction: pass both as DataFrames (compounds as rows, genes as columns) to "
                           "pair them by label, or both as arrays (paired by position)")
    t = pd.DataFrame(numeric_frame(truth, name="truth", col_label="gene column"),
                     index=truth.index.astype(str), columns=truth.columns.astype(str))
    p = pd.DataFrame(numeric_frame(pred, name="prediction", col_label="gene column"),
                     index=pred.index.astype(str), columns=pred.columns.astype(str))
    _same_labels(t.columns, p.columns, "gene")
    _same_labels(t.index, p.index, "compound")
    p = p.loc[t.index, t.columns]
    weights = _weights_input(weights)
    if isinstance(weights, pd.DataFrame):
        weights = _align_weight_frame(weights, t.columns, t.index)
    elif isinstance(weights, pd.Series):
        weights = _align_weight_series(weights, t.columns)
    return t.to_numpy(), p.to_numpy(), weights, list(t.index)


def _align_weight_frame(w: pd.DataFrame, genes: pd.Index, compounds: pd.Index) -> np.ndarray:
    """Official genes x compounds weights -> (G, C) in the given order; every pair present."""
    if GENE_COL in w.columns:
        w = w.set_index(GENE_COL)
    w = w.set_axis(w.index.astype(str), axis=0).set_axis(w.columns.astype(str), axis=1)
    for axis, idx in (("gene row", w.index), ("compound column", w.columns)):
        if idx.has_duplicates:
            raise ScoringError(f"weights repeat {axis}(s) {show_ids(idx[idx.duplicated()].unique())}; each must "
                               "appear once")
    missing_c = [c for c in compounds if c not in w.columns]
    if missing_c:
        raise ScoringError(f"weights have no column for {len(missing_c)} scored compound(s): {show_ids(missing_c)}")
    missing_g = [g for g in genes if g not in w.index]
    if missing_g:
        raise ScoringError(f"weights have no row for {len(missing_g)} scored gene(s): {show_ids(missing_g)}")
    sub = w.loc[list(genes), list(compounds)]
    return numeric_frame(sub, name="weights", col_label="compound column")


def _align_weight_series(w: pd.Series, genes: pd.Index) -> np.ndarray:
    w = w.set_axis(w.index.astype(str))
    if w.index.has_duplicates:
        raise ScoringError(f"per-gene weights repeat gene(s) {show_ids(w.index[w.index.duplicated()].unique())}")
    missing = [g for g in genes if g not in w.index]
    if missing:
        raise ScoringError(f"per-gene weights lack {len(missing)} scored gene(s): {show_ids(missing)}")
    return numeric_column(w.loc[list(genes)], name="per-gene weights")


def score_compounds(
    truth: object,
    prediction: object,
    *,
    gene_filter: Iterable[str] | str | os.PathLike[str] | None = None,
    weights: pd.Series | pd.DataFrame | np.ndarray | str | os.PathLike[str] | None = None,
    weighting: str | None = None,
    truth_train: object | None = None,
) -> pd.DataFrame:
    """Per-compound table (index ``compound``, column ``wmse``) for a long truth and prediction.

    Refuses (``ScoringError``): a truth compound missing from the prediction, duplicate or missing
    (compound, gene) rows, text/booleans, NaN/inf, negative predictions, prediction genes that
    differ from the gene filter, and weights missing for a scored compound or gene or failing
    :func:`validate_weights`. Extra predicted compounds (not in the truth) are ignored. Pairs by
    label: row order never matters. ``weights``: an official genes x compounds frame (or its
    path), a per-gene Series, or an array in sorted gene x sorted truth-compound order. Never
    falls back silently: without ``weights`` you must name ``weighting="variance"`` (official
    fallback, from this truth) or ``"proxy"`` (needs ``truth_train``); both at once are refused.
    ``gene_filter``: ids, the official frame, or its CSV path.
    """
    if weights is not None and weighting is not None:
        raise ScoringError(f"both weights and weighting={weighting!r} given; pass one (weights are the official "
                           "Mejia weights, weighting a named per-gene alternative)")
    truth_df = to_pandas(truth, name="truth")
    pred_df = to_pandas(prediction, name="prediction")
    require_columns(truth_df, [COMPOUND_COL, GENE_COL, EXPRESSION_COL], name="truth")
    require_columns(pred_df, [COMPOUND_COL, GENE_COL, PRED_COL], name="prediction")
    truth_mat = _strict_pivot(truth_df, EXPRESSION_COL, name="truth")
    pred_comp = set(pred_df[COMPOUND_COL].astype(str).unique())
    missing = [c for c in truth_mat.columns if c not in pred_comp]
    if missing:
        raise ScoringError(
            f"prediction lacks {len(missing)} compound(s) of the truth: {show_ids(missing)}; "
            "a submission must cover every scored compound"
        )
    pred_mat = _strict_pivot(pred_df, PRED_COL, name="prediction")
    expected_genes = (sorted(set(id_list(gene_filter, GENE_COL, name="gene_filter"))) if gene_filter is not None
                      else list(truth_mat.index))
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
    if weights is not None:
        w: object = weights
    elif weighting == "variance":
        w = pd.Series(variance_weights(truth_mat.to_numpy().T), index=truth_mat.index)
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
    return pd.DataFrame({"wmse": wmse(truth_mat, pred_mat, w)})


def aggregate_leaderboards(per_compound: pd.DataFrame | pd.Series) -> dict[str, object]:
    """Leaderboard summary: compound count and the plain mean of per-compound wMSE.

    Refuses an empty table, a repeated compound, and a wMSE that is missing, NaN/inf, negative or
    not a number: a mean over fewer (or doubled) compounds would be silently wrong.
    """
    col = per_compound if isinstance(per_compound, pd.Series) else to_pandas(per_compound, name="per_compound")
    if isinstance(col, pd.DataFrame):
        require_columns(col, ["wmse"], name="per_compound")
        col = col["wmse"]
    if len(col) == 0:
        raise ScoringError("per_compound is empty: no compound to average; score at least one compound")
    if col.index.has_duplicates:
        raise ScoringError(f"per_compound repeats compound(s) {show_ids(col.index[col.index.duplicated()].unique())}; "
                           "each compound counts once in the leaderboard")
    values = numeric_column(col, name="per_compound")
    if not np.isfinite(values).all():
        bad = list(col.index[~np.isfinite(values)])
        raise ScoringError(f"{len(bad)} compound(s) have no finite wMSE (e.g. {show_ids(bad)}); a leaderboard "
                           "over the others would silently average fewer compounds")
    if (values < 0).any():
        bad = list(col.index[values < 0])
        raise ScoringError(f"{len(bad)} compound(s) have a negative wMSE (e.g. {show_ids(bad)}); a weighted squared "
                           "error is >= 0, so these did not come from the metric")
    return {"n_compounds": len(col), "wmse_mean": float(values.mean())}
