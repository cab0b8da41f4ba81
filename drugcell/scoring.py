"""Score a submission file against a truth table and a weights file, as the leaderboard does, with
:mod:`contest_scorer`'s refusals (``validate_submission`` + ``score_compounds`` +
``aggregate_leaderboards``): what ``drugcell score`` runs.

Files: the submission (long ``compound, gene_id, predicted_expression``), the truth (long
``compound, gene_id, expression``, e.g. the simulator's ``test_truth.parquet``) and the weights in
the official wide layout (``gene_id`` + one column per compound, e.g. ``weights.parquet`` or the
simulator's ``test_weights.parquet``); parquet or CSV. The scored compounds are the truth's, the
scored genes the gene filter's (default: the truth's genes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from contest_scorer import aggregate_leaderboards, score_compounds, validate_submission
from contest_scorer.errors import ScoringError
from drugcell.defaults import COMPOUND_COL, EXPRESSION_COL, GENE_COL, PRED_COL
from drugcell.errors import DrugcellInputError
from drugcell.provenance import atomic_path, provenance, sha256_file, strict_json

N_WORST = 5
_LAYOUTS = {
    "submission": f"long table {COMPOUND_COL}, {GENE_COL}, {PRED_COL} (what `drugcell submit` writes)",
    "truth": f"long table {COMPOUND_COL}, {GENE_COL}, {EXPRESSION_COL} (e.g. the simulator's test_truth.parquet)",
    "weights": f"wide table: {GENE_COL} + one float column per compound (the official weights.parquet layout)",
    "gene filter": f"CSV with a {GENE_COL} column (the contest's gene_filter.csv)",
}


@dataclass
class ScoreResult:
    per_compound: pd.Series          # wMSE by compound, in the truth's (sorted) compound order
    n_genes: int
    leaderboard: dict[str, Any]      # aggregate_leaderboards: n_compounds, wmse_mean
    weights_max_sum_error: float     # largest |column sum - 1| over the scored compounds' weights

    @property
    def median(self) -> float:
        return float(self.per_compound.median()) if len(self.per_compound) else math.nan

    def worst(self, n: int = N_WORST) -> pd.Series:
        return self.per_compound.sort_values(ascending=False, kind="stable").head(n)


def _read_table(path: Path, what: str, *, str_cols: tuple[str, ...]) -> pd.DataFrame:
    """A parquet or CSV file as pandas; an unreadable or absent file is an input error naming it."""
    if not path.is_file():
        raise DrugcellInputError(f"{what} file {path} does not exist; pass a {_LAYOUTS[what]}")
    try:
        if path.suffix.lower() in (".csv", ".txt"):
            df = pd.read_csv(path, dtype={c: str for c in str_cols})
        else:
            df = pd.read_parquet(path)
    except Exception as exc:  # pyarrow, csv parser and decoding errors all mean: not a readable table
        raise DrugcellInputError(
            f"{what} file {path} cannot be read as {'CSV' if path.suffix.lower() == '.csv' else 'parquet'} "
            f"({type(exc).__name__}: {exc}); pass a {_LAYOUTS[what]}") from None
    if df.index.name == GENE_COL and GENE_COL not in df.columns:  # a pandas-written gene index
        df = df.reset_index()
    return df


def _require(df: pd.DataFrame, path: Path, what: str, cols: list[str]) -> pd.DataFrame:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise DrugcellInputError(
            f"{what} file {path} lacks column(s) {', '.join(missing)} (it has {', '.join(map(str, df.columns[:8]))}"
            f"{', ...' if len(df.columns) > 8 else ''}); pass a {_LAYOUTS[what]}")
    return df


def _ids_as_str(df: pd.DataFrame, cols: tuple[str, ...]) -> pd.DataFrame:
    df = df.copy()
    for c in cols:
        if c in df.columns:
            df[c] = df[c].astype(str)
    return df


def _check_truth_genes(truth_df: pd.DataFrame, truth_path: Path, genes: list[str], gf_path: Path) -> None:
    """The truth must hold exactly the gene filter's genes (checked first, so a wrong gene filter is
    not reported as holes in the submission)."""
    have, want = set(truth_df[GENE_COL].unique()), set(genes)
    if have != want:
        lack, extra = sorted(want - have), sorted(have - want)
        raise DrugcellInputError(
            f"truth file {truth_path} and gene filter {gf_path} disagree: {len(lack)} filter gene(s) absent from "
            f"the truth ({', '.join(lack[:5])}), {len(extra)} truth gene(s) not in the filter ({', '.join(extra[:5])}); "
            "pass the gene filter the truth was built with (or none: the truth's genes are then scored)")


def _blame(exc: ScoringError, files: dict[str, Path]) -> ScoringError:
    """contest_scorer's message, prefixed with the file it is about and what to do."""
    msg = str(exc)
    what = next((w for w in ("truth", "weights") if msg.startswith(w)), "submission")
    return ScoringError(f"{what} file {files[what]}: {msg}\n  expected: {_LAYOUTS[what]}")


def score_files(submission: Path, truth: Path, weights: Path, gene_filter: Path | None = None) -> ScoreResult:
    """Validate the submission against the truth's compounds and the genes, then score it."""
    files = {"submission": Path(submission), "truth": Path(truth), "weights": Path(weights)}
    ids = (COMPOUND_COL, GENE_COL)
    truth_df = _require(_read_table(files["truth"], "truth", str_cols=ids), files["truth"], "truth",
                        [COMPOUND_COL, GENE_COL, EXPRESSION_COL])
    truth_df = _ids_as_str(truth_df[[COMPOUND_COL, GENE_COL, EXPRESSION_COL]], ids)
    if truth_df.empty:
        raise DrugcellInputError(f"truth file {files['truth']} has no rows; pass a {_LAYOUTS['truth']}")
    sub_df = _require(_read_table(files["submission"], "submission", str_cols=ids), files["submission"],
                      "submission", [COMPOUND_COL, GENE_COL, PRED_COL])
    sub_df = _ids_as_str(sub_df[[COMPOUND_COL, GENE_COL, PRED_COL]], ids)
    if gene_filter is not None:
        gf = _require(_read_table(Path(gene_filter), "gene filter", str_cols=(GENE_COL,)), Path(gene_filter),
                      "gene filter", [GENE_COL])
        genes = gf[GENE_COL].astype(str).tolist()
        if len(set(genes)) != len(genes):
            raise DrugcellInputError(f"gene filter {gene_filter} lists a gene more than once; keep one row per gene")
        _check_truth_genes(truth_df, files["truth"], genes, Path(gene_filter))
    else:
        genes = sorted(truth_df[GENE_COL].unique().tolist())
    compounds = sorted(truth_df[COMPOUND_COL].unique().tolist())
    w_df = _require(_read_table(files["weights"], "weights", str_cols=(GENE_COL,)), files["weights"], "weights",
                    [GENE_COL])
    w_df = w_df.assign(**{GENE_COL: w_df[GENE_COL].astype(str)}).set_index(GENE_COL)
    w_df.columns = w_df.columns.astype(str)
    if w_df.index.duplicated().any():
        dup = w_df.index[w_df.index.duplicated()].unique().tolist()
        raise DrugcellInputError(f"weights file {files['weights']} has {len(dup)} gene(s) on more than one row "
                                 f"({', '.join(dup[:5])}); pass a {_LAYOUTS['weights']}")
    try:
        validate_submission(sub_df, test_compounds=compounds, gene_filter=genes)
    except ScoringError as exc:
        raise ScoringError(f"submission file {files['submission']} (scored against the {len(compounds)} "
                           f"compounds of {files['truth']}): {exc}\n  expected: {_LAYOUTS['submission']}") from None
    try:
        per = score_compounds(truth_df, sub_df, gene_filter=genes, weights=w_df)
    except ScoringError as exc:
        raise _blame(exc, files) from None
    used = w_df.loc[w_df.index.isin(genes), [c for c in per.index.astype(str)]]
    sums = used.astype("float64").sum(axis=0)
    return ScoreResult(per_compound=per["wmse"].rename_axis(COMPOUND_COL), n_genes=len(set(genes)),
                       leaderboard=aggregate_leaderboards(per),
                       weights_max_sum_error=float((sums - 1.0).abs().max()) if len(sums) else 0.0)


def _finite_or_none(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def write_report(path: Path, result: ScoreResult, files: dict[str, Path | None]) -> None:
    """Strict JSON (NaN as null): the leaderboard figure, per-compound scores and provenance."""
    report = {
        "wmse_mean": _finite_or_none(result.leaderboard["wmse_mean"]),
        "wmse_median": _finite_or_none(result.median),
        "n_compounds": int(result.leaderboard["n_compounds"]),
        "n_genes": result.n_genes,
        "weights_max_column_sum_error": _finite_or_none(result.weights_max_sum_error),
        "worst": [{"compound": str(c), "wmse": _finite_or_none(v)} for c, v in result.worst().items()],
        "per_compound": [{"compound": str(c), "wmse": _finite_or_none(v)} for c, v in result.per_compound.items()],
        "files": {k: None if p is None else {"path": str(Path(p).resolve()), "sha256": sha256_file(p)}
                  for k, p in files.items()},
        "provenance": provenance(command="drugcell score"),
    }
    with atomic_path(path) as tmp:
        tmp.write_text(strict_json(report, indent=2) + "\n")
