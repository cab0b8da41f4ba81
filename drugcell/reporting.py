"""How numbers and tables are written in every report (summary.md, calibration.md, CLI echoes).

One helper so that a number reads the same in every file: fixed decimals for scores, thousands
separators for counts, one spelling for a missing value, and GitHub markdown tables.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

MISSING = "nan"


def fmt_number(x: object, digits: int = 4, *, missing: str = MISSING) -> str:
    """A score with ``digits`` decimals; integers with thousands separators; ``missing`` for
    None, NaN and inf."""
    if x is None:
        return missing
    if isinstance(x, (bool, np.bool_)):
        return str(bool(x))
    if isinstance(x, (int, np.integer)):
        return f"{int(x):,}"
    x = float(x)  # type: ignore[arg-type]
    return missing if not np.isfinite(x) else f"{x:.{digits}f}"


def fmt_sig(x: object, digits: int = 4, *, missing: str = "") -> str:
    """``digits`` significant digits (for tables whose columns span orders of magnitude)."""
    if isinstance(x, (float, np.floating)):
        return missing if np.isnan(x) else f"{x:.{digits}g}"
    return str(x)


def fmt_p(p: float, n_resamples: int) -> str:
    """A bootstrap p-value: ``< 1/n`` when no resample crossed zero."""
    return f"< {1.0 / n_resamples:.0e}" if p == 0 else f"{p:.3g}"


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]], align: Sequence[str] | None = None) -> str:
    """A GitHub markdown table; ``align`` is "l" or "r" per column (default: first left, rest right)."""
    align = list(align or ["l"] + ["r"] * (len(header) - 1))
    sep = ["---:" if a == "r" else ":---" for a in align]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(sep) + " |"]
    lines += ["| " + " | ".join(str(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def frame_table(df: pd.DataFrame, digits: int = 4) -> str:
    """A DataFrame as a markdown table, floats to ``digits`` significant digits."""
    rows = [[fmt_sig(v, digits) for v in rec] for rec in df.itertuples(index=False)]
    return md_table([str(c) for c in df.columns], rows)
