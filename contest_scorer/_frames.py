"""Small helpers shared by the scorer modules (pandas coercion, id lists in messages)."""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

from contest_scorer.errors import ScoringError

_MAX_IDS = 5


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
