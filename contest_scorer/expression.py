"""Raw counts -> the contest target: per-compound mean of log2(CPM + 1).

CPM uses the library size over *all* genes of ``counts`` (the official recipe); restrict the
result to the scored genes afterwards with ``gene_filter``. Samples with an empty library are
dropped with a warning: they contribute to nothing. Counts must be whole, finite, non-negative
numbers (fractional values are refused, naming the samples: they are not raw UMI counts), and
every metadata sample needs a count column (refused otherwise, naming them: its compound would
silently lose a replicate, or vanish from the truth).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable

import numpy as np
import pandas as pd

from contest_scorer._frames import id_list, numeric_frame, require_columns, show_ids, to_pandas
from contest_scorer.errors import ScoringError
from contest_scorer.metrics import COMPOUND_COL, EXPRESSION_COL, GENE_COL

DEFAULT_SAMPLE_COL = "sequenced_id"
DEFAULT_MIN_MEAN_CPM = 1.0


def log2_cpm(counts_gs: np.ndarray, library: np.ndarray | None = None) -> np.ndarray:
    """log2(1e6 * count / library + 1) for a genes x samples array (float64).

    ``library`` defaults to the column sums of ``counts_gs``; pass the sums over all genes when
    ``counts_gs`` holds only the scored genes.
    """
    counts_gs = np.asarray(counts_gs, dtype=np.float64)
    lib = counts_gs.sum(axis=0) if library is None else np.asarray(library, dtype=np.float64)
    if np.any(lib <= 0):
        raise ScoringError("log2_cpm: a sample has an empty library; drop it first")
    return np.log2(counts_gs * (1e6 / lib)[None, :] + 1.0)


def _wide_counts(
    counts: object, metadata: object, *, sample_col: str, compound_col: str, gene_col: str
) -> tuple[pd.DataFrame, pd.Series]:
    """Validate and align wide counts with metadata; drop empty libraries (warned).

    Count columns absent from the metadata are dropped (warned, counted); a metadata sample
    without a count column is refused, since its compound would silently lose a replicate (or
    vanish from the truth). Counts must be whole, finite and non-negative numbers.
    """
    counts_df = to_pandas(counts, name="counts")
    meta = to_pandas(metadata, name="metadata")
    require_columns(counts_df, [gene_col], name="counts")
    require_columns(meta, [sample_col, compound_col], name="metadata")
    if counts_df[gene_col].duplicated().any():
        dup = counts_df.loc[counts_df[gene_col].duplicated(), gene_col].unique()
        raise ScoringError(f"counts has duplicate {gene_col} rows: {show_ids(dup)}")
    for col in (sample_col, compound_col):
        empty = meta[col].isna() | (meta[col].astype(str).str.strip() == "")
        if empty.any():
            rows = [int(i) for i in np.flatnonzero(empty.to_numpy())]
            raise ScoringError(f"metadata has {len(rows)} row(s) without a {col} (rows {show_ids(rows)}, 0-based); "
                               f"every sample needs its {sample_col} and {compound_col}")
    sample_ids = meta[sample_col].astype(str)
    if sample_ids.duplicated().any():
        raise ScoringError(
            f"metadata has duplicate {sample_col} values: {show_ids(sample_ids[sample_ids.duplicated()].unique())}"
        )
    mat = counts_df.set_index(gene_col)
    mat.columns = mat.columns.astype(str)
    sample_to_compound = pd.Series(meta[compound_col].astype(str).to_numpy(), index=sample_ids.to_numpy())
    absent = sample_ids[~sample_ids.isin(mat.columns)]
    if len(absent):
        raise ScoringError(
            f"metadata lists {len(absent)} sample(s) with no column in counts: {show_ids(absent)}; pass the counts "
            f"that hold them, or restrict metadata to the counts' samples "
            f"(metadata[metadata[{sample_col!r}].isin(counts.columns)])"
        )
    shared = [s for s in mat.columns if s in sample_to_compound.index]
    if not shared:
        raise ScoringError(f"no count columns match metadata[{sample_col!r}]; pass the matching metadata")
    missing = sorted(set(mat.columns) - set(shared))
    if missing:
        warnings.warn(f"dropping {len(missing)} count column(s) absent from metadata: {show_ids(missing)}", stacklevel=3)
    mat = mat[shared]
    values = numeric_frame(mat, name="counts", col_label="sample column")
    _check_counts(values, mat.columns)
    lib = values.sum(axis=0)
    empty = lib <= 0
    if empty.any():
        warnings.warn(
            f"dropping {int(empty.sum())} empty-library sample(s): {show_ids(mat.columns[empty])}", stacklevel=3
        )
        mat = mat.loc[:, ~empty]
    return mat, sample_to_compound.loc[list(mat.columns)]


def _check_counts(values: np.ndarray, samples: pd.Index) -> None:
    """Raw UMI counts: finite, >= 0 and whole; each refusal names the samples."""
    for bad, what, fix in (
        (~np.isfinite(values), "NaN or inf", "fill missing genes with 0"),
        (values < 0, "negative values", "counts are >= 0"),
        (values != np.round(values), "fractional (non-integer) values",
         "pass raw UMI counts, not normalised or averaged values"),
    ):
        cols = bad.any(axis=0)
        if cols.any():
            raise ScoringError(f"counts contain {what} in {int(cols.sum())} sample(s): {show_ids(samples[cols])}; {fix}")


def _restrict_genes(mat: pd.DataFrame, gene_filter: Iterable[str] | None) -> list[str]:
    if gene_filter is None:
        return sorted(mat.index.astype(str))
    genes = sorted(set(id_list(gene_filter, GENE_COL, name="gene_filter")))
    absent = [g for g in genes if g not in mat.index]
    if absent:
        raise ScoringError(f"gene_filter names {len(absent)} gene(s) absent from counts: {show_ids(absent)}")
    return genes


def counts_to_expression(
    counts: object,
    metadata: object,
    *,
    sample_col: str = DEFAULT_SAMPLE_COL,
    compound_col: str = COMPOUND_COL,
    gene_col: str = GENE_COL,
    gene_filter: Iterable[str] | None = None,
) -> pd.DataFrame:
    """Wide counts + metadata -> long ``(compound, gene_id, expression)`` truth.

    Library sizes are over every gene of ``counts``; ``gene_filter`` only restricts the output.
    Genes are sorted, compounds sorted (as strings).
    """
    mat, s2c = _wide_counts(counts, metadata, sample_col=sample_col, compound_col=compound_col, gene_col=gene_col)
    genes = _restrict_genes(mat, gene_filter)
    lib = mat.to_numpy(dtype=np.float64).sum(axis=0)
    sub = mat.loc[genes].to_numpy(dtype=np.float64)
    logcpm = np.log2(sub * (1e6 / lib)[None, :] + 1.0)  # genes x samples
    codes, compounds = pd.factorize(s2c.to_numpy(), sort=True)
    sums = np.zeros((len(compounds), len(genes)))
    np.add.at(sums, codes, logcpm.T)
    n = np.bincount(codes, minlength=len(compounds)).astype(np.float64)
    expr = sums / n[:, None]
    return pd.DataFrame(
        {
            COMPOUND_COL: np.repeat(np.asarray(compounds, dtype=str), len(genes)),
            GENE_COL: np.tile(np.asarray(genes, dtype=str), len(compounds)),
            EXPRESSION_COL: expr.ravel(),
        }
    )


def build_gene_filter(
    counts: object, *, min_mean_cpm: float = DEFAULT_MIN_MEAN_CPM, gene_col: str = GENE_COL
) -> list[str]:
    """Scored genes: mean CPM over the sample columns >= ``min_mean_cpm`` (empty libraries skipped)."""
    df = to_pandas(counts, name="counts")
    require_columns(df, [gene_col], name="counts")
    mat = df.set_index(gene_col)
    values = numeric_frame(mat, name="counts", col_label="sample column")
    _check_counts(values, mat.columns.astype(str))
    lib = values.sum(axis=0)
    keep_s = lib > 0
    cpm = values[:, keep_s] * (1e6 / lib[keep_s])[None, :]
    mean_cpm = cpm.mean(axis=1)
    return sorted(str(g) for g in mat.index[mean_cpm >= min_mean_cpm])
