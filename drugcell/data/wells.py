"""Which metadata rows are contest wells: controls recognised, the condition applied, and every
kept well matched to its counts.

Why apart from the loader: each way a well can be left out (another cell line or timepoint, another
concentration, a concentration that cannot be read, no counts at all) must be counted and named in
the load summary, never silent. A long counts table omits zero counts, so a well without a row is
an all-zero (empty-library) well, dropped with a warning as any empty library; a wide table has a
column per well, so a missing column is an error.

``summary`` is the load's :class:`drugcell.data.loader.LoadSummary` (its fields are set here and
:meth:`warn` records a warning).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from drugcell.data import vcpi
from drugcell.data.counts import _Counts
from drugcell.data.readers import show_ids
from drugcell.errors import DrugcellInputError


def contest_samples(meta: pd.DataFrame, src: _Counts, condition: vcpi.ConditionFilter, summary: Any,
                    meta_path: Path) -> tuple[pd.DataFrame, pd.Series]:
    """The metadata rows in the contest condition, with their control ids (None for library wells).
    Every counts column must have a metadata row, every kept row counts (a column, or in a long
    table possibly no row: all zero)."""
    in_meta = pd.Index(meta[vcpi.SAMPLE_COL])
    counts_ids = pd.Index(src.samples)
    only_counts = counts_ids.difference(in_meta)
    if len(only_counts):
        raise DrugcellInputError(
            f"counts file {src.path} has {len(only_counts)} sample(s) absent from metadata file "
            f"{meta_path} ({vcpi.SAMPLE_COL}): {show_ids(list(only_counts))}; pass the metadata of these counts"
        )
    ctrl = classify(meta, summary)
    reasons = condition.reasons(meta, ctrl == vcpi.DMSO)
    keep = np.ones(len(meta), dtype=bool)
    for r in reasons.values():
        keep &= ~r
    summary.dropped_condition = {k: int(v.sum()) for k, v in reasons.items()}
    summary.n_out_of_condition = int((~keep).sum())
    if "concentration" in reasons:
        _unreadable_concentrations(meta, reasons, ctrl == vcpi.DMSO, summary, meta_path)
    if not keep.any():
        raise DrugcellInputError(
            f"no sample of {meta_path} is in the contest condition {condition.as_dict()}; "
            "check --concentration-nm/--cell-line/--timepoint"
        )
    _match_counts(meta, keep, src, summary, meta_path)
    return meta.loc[keep].reset_index(drop=True), ctrl[keep].reset_index(drop=True)


def _match_counts(meta: pd.DataFrame, keep: np.ndarray, src: _Counts, summary: Any, meta_path: Path) -> None:
    """Metadata samples without counts: outside the condition ignored (counted, named); inside it
    refused for a wide table, read as all-zero wells for a long (sparse) one (counted, named)."""
    ids = meta[vcpi.SAMPLE_COL]
    has_counts = ids.isin(pd.Index(src.samples)).to_numpy()
    outside = ~keep & ~has_counts
    summary.n_metadata_only_out_of_condition = int(outside.sum())
    if outside.any():
        summary.warn(f"metadata file {meta_path}: {int(outside.sum())} sample(s) outside the condition have no counts "
                     f"in {src.path} (ignored): {show_ids(list(ids[outside]))}")
    missing = keep & ~has_counts
    if not missing.any():
        return
    absent = list(ids[missing])
    if not src.absent_means_zero:
        raise DrugcellInputError(
            f"metadata file {meta_path} lists {len(absent)} contest-condition sample(s) with no column "
            f"in counts file {src.path}: {show_ids(absent)}; pass the counts that hold them"
        )
    src.add_empty(absent)
    summary.n_absent_from_long_counts = len(absent)
    summary.warn(f"{len(absent)} contest-condition sample(s) of {meta_path} have no row in the long counts file "
                 f"{src.path} ({show_ids(absent)}): a sparse table omits zero counts, so they are all-zero wells "
                 "(empty libraries, dropped)")


def _unreadable_concentrations(meta: pd.DataFrame, reasons: dict[str, np.ndarray], is_dmso: pd.Series,
                               summary: Any, meta_path: Path) -> None:
    """Wells left out only because their concentration cannot be read in nM: counted and named by
    value (and unit), since "outside the condition" alone would hide a typo such as "10 uM"."""
    other = np.zeros(len(meta), dtype=bool)
    for key, rejected in reasons.items():
        if key != "concentration":
            other |= rejected
    units = meta.get(vcpi.CONCENTRATION_UNIT_COL)
    bad = np.isnan(vcpi.concentration_nm(meta[vcpi.CONCENTRATION_COL], units).to_numpy(dtype=float))
    bad &= ~is_dmso.to_numpy(dtype=bool) & ~other
    if not bad.any():
        return
    shown = meta.loc[bad, vcpi.CONCENTRATION_COL].map(repr)
    if units is not None:
        shown = shown + " " + meta.loc[bad, vcpi.CONCENTRATION_UNIT_COL].map(repr)
    summary.n_unreadable_concentration = int(bad.sum())
    summary.warn(
        f"metadata file {meta_path}: {int(bad.sum())} well(s) of the condition's cell line and timepoint have a "
        f"{vcpi.CONCENTRATION_COL}{' (with its unit)' if units is not None else ''} that cannot be read in nM: "
        f"{show_ids(list(pd.unique(shown)))}; they are left out (counted under 'concentration'). Write a number in "
        f"{vcpi.CONCENTRATION_COL} and its unit (pM, nM, uM, mM or M) in {vcpi.CONCENTRATION_UNIT_COL}")


def classify(meta: pd.DataFrame, summary: Any) -> pd.Series:
    """Canonical control id per sample (None for library wells); warns on unrecognised controls."""
    ctrl = vcpi.control_ids_of(meta[vcpi.COMPOUND_KEY_COL])
    if vcpi.IS_CONTROL_COL in meta:
        flag = meta[vcpi.IS_CONTROL_COL].astype(str).str.strip().str.lower().isin(["true", "1", "yes", "t"])
        odd = flag & ctrl.isna()
        if odd.any():
            ids = meta.loc[odd, vcpi.COMPOUND_KEY_COL].unique()
            summary.n_unrecognised_controls = int(odd.sum())
            summary.warn(
                f"{int(odd.sum())} well(s) have {vcpi.IS_CONTROL_COL}=True but a {vcpi.COMPOUND_KEY_COL} that is not "
                f"DMSO or a known positive control ({show_ids(ids)}); they are treated as library compounds"
            )
    return ctrl
