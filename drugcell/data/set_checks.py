"""The checks every ExpressionSet passes, wherever it comes from (the loader, a cache, an official
weights file, the Python API): ids, replicate counts, finite truth, and weights the contest metric
can use (the scorer's own :func:`contest_scorer.validate_weights`). Each refusal names a compound
and says what to do. Kept apart so the container reads plainly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from contest_scorer import ScoringError, validate_weights
from drugcell.errors import DrugcellInputError


def _show(names: Any, idx: list[int] | np.ndarray, k: int = 5) -> str:
    shown = ", ".join(str(names[i]) for i in list(idx)[:k])
    return shown + (f" (and {len(idx) - k} more)" if len(idx) > k else "")


def str_array(x: Any) -> np.ndarray:
    """Strings, with None and NaN as "" (SMILES and InChIKeys may be unknown; ids are checked apart)."""
    return np.asarray([("" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)) for v in x], dtype=object)


def check_ids(ids: np.ndarray, what: str) -> None:
    """Compound, gene and control ids (``what``: "compound", "gene", "control"): none empty (None,
    NaN, "" or blank) and none repeated."""
    empty = np.flatnonzero([not str(v).strip() for v in ids.tolist()])
    if len(empty):
        raise DrugcellInputError(f"ExpressionSet has {len(empty)} empty or missing {what} id(s) (None, NaN or blank) "
                                 f"at position(s) {_show(list(range(len(ids))), empty)}; every {what} needs an id")
    dup = pd.Index(ids).duplicated()
    if dup.any():
        raise DrugcellInputError(f"ExpressionSet has duplicate {what} ids: {_show(ids[dup], range(int(dup.sum())))}")


def whole_counts(n: Any, compounds: np.ndarray) -> np.ndarray:
    """Replicate counts as int32; NaN or a fractional count (a mean, not a count of wells) is refused."""
    arr = np.asarray(n)
    if arr.dtype.kind == "f":
        bad = np.flatnonzero(~np.isfinite(arr) | (arr != np.round(arr)))
        if len(bad):
            names = compounds if len(compounds) == len(arr) else np.arange(len(arr))
            raise DrugcellInputError(
                f"ExpressionSet.n_replicates is not a whole number for {len(bad)} compound(s), e.g. "
                f"{names[bad[0]]}: {float(arr[bad[0]])}; it counts wells, so pass whole numbers")
    elif arr.dtype.kind not in "iub":
        raise DrugcellInputError(f"ExpressionSet.n_replicates must hold whole numbers, got dtype {arr.dtype}")
    return arr.astype(np.int32)


def rows_with(arr: np.ndarray, test: Callable[[np.ndarray], np.ndarray], per_row: bool,
              chunk: int = 1024) -> np.ndarray:
    """Compound indices where ``test`` is true anywhere: rows of (C, G) or columns of (G, C),
    checked in chunks so a memory-mapped 14k x 13k array is never copied whole."""
    n = arr.shape[0] if per_row else arr.shape[1]
    found = []
    for lo in range(0, n, chunk):
        block = np.asarray(arr[lo:lo + chunk] if per_row else arr[:, lo:lo + chunk])
        hit = test(block).any(axis=1 if per_row else 0)
        found.extend((np.flatnonzero(hit) + lo).tolist())
    return np.asarray(found, dtype=np.int64)


def check_weights(w: np.ndarray, compounds: np.ndarray, label: str, fix: str) -> None:
    """Mejia weights (genes x compounds) the metric can use, by the scorer's own rule
    (:func:`contest_scorer.validate_weights`: finite, >= 0, each compound's column summing to 1
    within ``WEIGHT_SUM_TOL``, in column chunks); ``label`` names where they came from."""
    try:
        validate_weights(w, per_compound=True, names=compounds)
    except ScoringError as exc:
        raise DrugcellInputError(f"{label}: {exc}; {fix}") from None


def check_values(es: Any, where: dict[str, str] | None = None, fix: str = "", *, weights: bool = True) -> None:
    """NaN/inf in the truth or controls, weights the metric cannot use and replicate counts below 1
    would make every score downstream silently wrong: refuse them, naming a compound. ``where``
    names the file each array came from (a cache), ``fix`` what to do; ``weights=False`` skips
    the library weights (already checked where they were read)."""
    where = where or {}
    fix = fix or "rebuild the set (`drugcell load`) or drop those compounds"
    label = {n: where.get(n, f"ExpressionSet.{n}") for n in ("expression", "weights", "n_replicates", "control")}
    bad_rows = rows_with(es.expression, lambda b: ~np.isfinite(b), True)
    if len(bad_rows):
        raise DrugcellInputError(f"{label['expression']} has NaN/inf for {len(bad_rows)} compound(s), e.g. "
                                 f"{_show(es.compounds, bad_rows)}; {fix}")
    if weights:
        check_weights(es.weights, es.compounds, label["weights"], fix)
    if len(es.n_replicates) and es.n_replicates.min() < 1:
        i = int(np.argmin(es.n_replicates))
        raise DrugcellInputError(f"{label['n_replicates']} is {int(es.n_replicates[i])} for compound "
                                 f"{es.compounds[i]}; every compound needs at least one well; {fix}")
    for name, arr, names, test in (
            ("control", es.control[None, :], ["DMSO"], lambda b: ~np.isfinite(b)),
            ("control_expression", es.control_expression, es.control_ids, lambda b: ~np.isfinite(b)),
            ("control_weights", es.control_weights.T, es.control_ids, lambda b: ~np.isfinite(b) | (b < 0))):
        rows = rows_with(arr, test, True)
        if len(rows):
            what = "NaN/inf or negative values" if name == "control_weights" else "NaN/inf"
            raise DrugcellInputError(f"{where.get(name, f'ExpressionSet.{name}')} has {what} for control "
                                     f"{names[rows[0]]}; {fix}")


def check_compound_meta(meta: Any, n_compounds: int, reserved: tuple[str, ...]) -> pd.DataFrame | None:
    """Per-compound metadata (names, targets, ...): one row per compound in compound order, string
    column names that differ from each other and from the set's own columns (``reserved``); an
    empty frame is None. Rows are positional: the index is dropped."""
    if meta is None:
        return None
    if not isinstance(meta, pd.DataFrame):
        raise DrugcellInputError(f"ExpressionSet.compound_meta must be a pandas DataFrame, got {type(meta).__name__}")
    if meta.shape[1] == 0:
        return None
    if len(meta) != n_compounds:
        raise DrugcellInputError(f"ExpressionSet.compound_meta has {len(meta)} rows, expected one per compound "
                                 f"({n_compounds}), in compound order")
    names = [str(c) for c in meta.columns]
    taken = sorted({n for n in names if names.count(n) > 1} | (set(names) & set(reserved)))
    if taken or not all(isinstance(c, str) for c in meta.columns):
        raise DrugcellInputError(f"ExpressionSet.compound_meta column(s) {taken or names} clash: metadata columns "
                                 f"need distinct string names other than {', '.join(reserved)}; rename them")
    return meta.reset_index(drop=True)
