"""Small helpers shared by the scorer modules: pandas coercion, id lists, strict numeric values,
id lists in messages.

Why strict: a score is only as right as its pairing and its numbers, so ids are taken as lists
(never a string iterated by character) and values must already be numbers (text or True/False
is refused, never coerced).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from contest_scorer.errors import ScoringError

_MAX_IDS = 5
#: what ``pandas.api.types.infer_dtype`` calls an object column that holds only numbers
_NUMBER_KINDS = frozenset({"floating", "integer", "mixed-integer-float", "decimal", "empty"})


def to_pandas(df: object, *, name: str) -> pd.DataFrame:
    """Accept pandas, polars or pyarrow tables (anything with ``to_pandas``)."""
    if isinstance(df, pd.DataFrame):
        return df
    if hasattr(df, "to_pandas"):
        return df.to_pandas()
    raise TypeError(f"{name} must be a pandas/polars/pyarrow table (got {type(df).__name__})")


def require_columns(df: pd.DataFrame, cols: Iterable[str], *, name: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ScoringError(f"{name} is missing required column(s) {missing}; it has {list(df.columns)[:10]}")


def show_ids(ids: Iterable[object]) -> str:
    """At most a few ids for an error message, with the total count."""
    ids = list(ids)
    head = ", ".join(map(str, ids[:_MAX_IDS]))
    more = f", ... ({len(ids)} in all)" if len(ids) > _MAX_IDS else ""
    return head + more


def read_table(path: str | os.PathLike[str], *, name: str) -> pd.DataFrame:
    """A CSV (ids kept as text) or parquet file; an absent or unreadable file is a ScoringError."""
    p = Path(path)
    if not p.is_file():
        raise ScoringError(f"{name} file {p} does not exist")
    try:
        if p.suffix.lower() in (".csv", ".txt"):
            return pd.read_csv(p, dtype=str)
        return pd.read_parquet(p)
    except Exception as exc:  # pyarrow and the CSV parser raise many types; all mean: unreadable
        raise ScoringError(f"{name} file {p} cannot be read ({type(exc).__name__}: {exc})") from None


def id_list(x: object, col: str, *, name: str) -> list[str]:
    """Ids as strings from a list/array/Series, a frame's ``col`` column, or the path of a CSV or
    parquet file holding ``col``. A bare string that names no file is refused: iterating it would
    give one id per character."""
    if isinstance(x, (str, bytes, os.PathLike)):
        path = os.fsdecode(x)
        if not Path(path).is_file():
            raise ScoringError(f"{name} is the string {path!r}, not a list of ids, and no such file exists; pass "
                               f"a list of ids or the path of a CSV/parquet file with a {col!r} column")
        x = read_table(path, name=name)
    if not isinstance(x, (pd.DataFrame, pd.Series, pd.Index, np.ndarray, list, tuple)) and hasattr(x, "to_pandas"):
        x = x.to_pandas()  # polars / pyarrow
    if isinstance(x, pd.DataFrame):
        require_columns(x, [col], name=name)
        x = x[col]
    if not isinstance(x, Iterable):
        raise ScoringError(f"{name} must be a list of ids (got {type(x).__name__})")
    return [str(v) for v in x]


def _is_number_dtype(dtype: object) -> bool:
    return (pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype)
            and not pd.api.types.is_complex_dtype(dtype))


def _is_number_column(s: pd.Series) -> bool:
    if _is_number_dtype(s.dtype):
        return True
    return s.dtype == object and pd.api.types.infer_dtype(s, skipna=True) in _NUMBER_KINDS


def numeric_frame(df: pd.DataFrame, *, name: str, col_label: str) -> np.ndarray:
    """The frame's values as float64; a column of text or booleans is refused, naming it (the
    official scorer would coerce "1.5" or True to a number and score it). Only object columns
    are inspected value by value."""
    dtypes = df.dtypes.to_numpy()
    odd = [i for i, dt in enumerate(dtypes) if not _is_number_dtype(dt)]
    bad = [df.columns[i] for i in odd if not _is_number_column(df.iloc[:, i])]
    if bad:
        raise ScoringError(f"{name} has text or boolean values in {len(bad)} {col_label}(s): {show_ids(bad)}; "
                           "pass numbers (float), not strings or True/False")
    return df.to_numpy(dtype=np.float64, na_value=np.nan)


def numeric_column(s: pd.Series, *, name: str, where: pd.DataFrame | None = None) -> np.ndarray:
    """A long table's value column as float64, refusing text or booleans and naming the column and
    the first offending row (with its ``compound``/``gene_id`` when ``where`` has them)."""
    if _is_number_column(s):
        return s.to_numpy(dtype=np.float64, na_value=np.nan)
    odd = s.map(lambda v: isinstance(v, (str, bytes, bool, np.bool_)) or not np.isscalar(v)).to_numpy(dtype=bool)
    i = int(np.flatnonzero(odd)[0]) if odd.any() else 0
    at = f"row {i}"
    if where is not None:
        ids = [f"{c} {where[c].iloc[i]}" for c in ("compound", "gene_id") if c in where.columns]
        at += f" ({', '.join(ids)})" if ids else ""
    raise ScoringError(f"{name} column {s.name!r} holds text or booleans (dtype {s.dtype}; {int(odd.sum())} such "
                       f"value(s), first at {at}: {s.iloc[i]!r}); pass numbers (float), not strings or True/False")


def numeric_array(x: object, *, name: str) -> np.ndarray:
    """An array of numbers as is (ints/floats); booleans, text or objects are refused."""
    a = np.asarray(x)
    if a.dtype.kind in "iuf":
        return a
    if a.dtype.kind == "O" and a.size and pd.api.types.infer_dtype(a.ravel(), skipna=True) in _NUMBER_KINDS:
        return a.astype(np.float64)
    raise ScoringError(f"{name} must hold numbers (got dtype {a.dtype}); booleans and text are refused, not coerced")
