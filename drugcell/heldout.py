"""The contest's held-out test compounds (``test_compounds.csv``): read, checked, parsed.

Why apart from :mod:`drugcell.submission`: which compounds a submission covers, whether they were
measured in the condition of the training data (THP-1, 24 h, 10 uM) and which SMILES RDKit cannot
read are questions about the input file, answered before anything is fitted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from drugcell.data import vcpi
from drugcell.defaults import COMPOUND_COL, SMILES_COL
from drugcell.errors import DrugcellInputError

TEST_REQUIRED = (COMPOUND_COL, SMILES_COL)
SHOWN = 10  # compounds named in one message
_PARQUET = (".parquet", ".pq")


def _shown(items: list[str]) -> str:
    more = f" (+{len(items) - SHOWN} more)" if len(items) > SHOWN else ""
    return "; ".join(items[:SHOWN]) + more


def _as_text(df: pd.DataFrame) -> pd.DataFrame:
    """Every column as str ("" for missing); integral float ids lose their ".0"."""
    out = {}
    for c in df.columns:
        col = df[c]
        if pd.api.types.is_float_dtype(col) and col.notna().all() and np.all(np.mod(col, 1) == 0):
            col = col.astype("int64")
        out[str(c)] = col.astype(object).where(col.notna(), "").astype(str)
    return pd.DataFrame(out)


def _read_table(path: Path) -> pd.DataFrame:
    parquet = path.suffix.lower() in _PARQUET
    try:
        if parquet:
            return _as_text(pd.read_parquet(path))
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError, OSError, ValueError) as exc:
        kind, other = ("parquet", ".csv") if parquet else ("CSV", ".parquet")
        raise DrugcellInputError(f"{path} is not a readable {kind} file ({type(exc).__name__}: {exc}); pass the "
                                 f"contest's test_compounds.csv (or the same columns as {other})") from None


def read_test_compounds(path: str | Path) -> pd.DataFrame:
    """The contest's ``test_compounds.csv`` (or the same table as ``.parquet``, by suffix): ids kept
    as strings, one row per compound; a file without rows, ids or SMILES column is refused."""
    path = Path(path)
    if not path.is_file():
        raise DrugcellInputError(f"test compounds file {path} not found")
    df = _read_table(path)
    missing = [c for c in TEST_REQUIRED if c not in df.columns]
    if missing:
        raise DrugcellInputError(
            f"{path}: missing column(s) {', '.join(missing)}; expected the contest layout "
            f"{','.join(vcpi.TEST_COMPOUNDS_COLUMNS)}")
    if df.empty:
        raise DrugcellInputError(f"{path} has a header but no compound rows; a submission needs the test compounds")
    df[COMPOUND_COL] = df[COMPOUND_COL].str.strip()
    empty = np.flatnonzero(df[COMPOUND_COL].eq("").to_numpy())
    if len(empty):
        raise DrugcellInputError(f"{path}: column 'compound' is empty on row(s) {(empty + 2).tolist()[:10]} "
                                 "(1-based file lines); every test compound needs its id")
    dup = df[COMPOUND_COL][df[COMPOUND_COL].duplicated()].unique()
    if len(dup):
        raise DrugcellInputError(f"{path}: compound id(s) listed twice: {', '.join(dup[:10])}; remove the duplicates")
    return df.reset_index(drop=True)


# ----------------------------------------------------------------------------- the condition
def training_condition(info: dict[str, Any] | None) -> tuple[dict[str, Any], str]:
    """The condition the training wells were kept in (the loader's record in ``es.info``), else the
    contest's (THP-1, 24h, 10000 nM); and where it came from. A None criterion was not applied."""
    cond = (((info or {}).get("loader") or {}).get("options") or {}).get("condition")
    if isinstance(cond, dict) and {"concentration_nm", "cell_line", "timepoint"} <= set(cond):
        return ({k: cond[k] for k in ("concentration_nm", "cell_line", "timepoint")},
                "recorded when the training data were loaded")
    return vcpi.ConditionFilter().as_dict(), "the contest's, as the training set records none"


def _label_problems(test: pd.DataFrame, col: str, want: str | None) -> list[str]:
    if want is None or col not in test.columns:
        return []
    vals = test[col].astype(str).str.strip()
    bad = (vals != "") & (vals.map(vcpi.normalise_name) != vcpi.normalise_name(want))
    return [f"{cid}: {col} {v!r} (training: {want!r})" for cid, v in zip(test[COMPOUND_COL][bad], vals[bad])]


def _concentration_problems(test: pd.DataFrame, want_nm: float | None) -> list[str]:
    if want_nm is None or vcpi.CONCENTRATION_COL not in test.columns:
        return []
    raw = test[vcpi.CONCENTRATION_COL].astype(str).str.strip()
    if vcpi.CONCENTRATION_UNIT_COL in test.columns:
        unit = test[vcpi.CONCENTRATION_UNIT_COL].astype(str).str.strip()
    else:
        unit = pd.Series("", index=test.index)
    unit = unit.where(unit != "", vcpi.TEST_CONCENTRATION_UNIT)  # the file states 10 uM as "10.0", "uM"
    num = pd.to_numeric(raw, errors="coerce")
    nm = vcpi.concentration_nm(num, unit)
    out = []
    for cid, r, u, x, v in zip(test[COMPOUND_COL], raw, unit, num, nm):
        if r == "":
            continue  # not stated
        if not np.isfinite(x):
            out.append(f"{cid}: {vcpi.CONCENTRATION_COL} {r!r} is not a number")
        elif not np.isfinite(v):
            out.append(f"{cid}: {vcpi.CONCENTRATION_UNIT_COL} {u!r} is not a unit drugcell reads (nM, uM, mM, ...)")
        elif not np.isclose(v, want_nm, rtol=1e-6, atol=1e-9):
            out.append(f"{cid}: {vcpi.CONCENTRATION_COL} {r} {u} = {v:g} nM (training: {want_nm:g} nM)")
    return out


def check_condition(test: pd.DataFrame, path: str | Path, info: dict[str, Any] | None) -> dict[str, Any]:
    """Refuse test compounds whose stated concentration, cell line or timepoint (where the file has
    those columns; an empty cell states nothing) differ from the training condition; the
    condition checked is returned for the manifest."""
    cond, source = training_condition(info)
    problems = (_concentration_problems(test, cond["concentration_nm"])
                + _label_problems(test, vcpi.CELL_LINE_COL, cond["cell_line"])
                + _label_problems(test, vcpi.TIMEPOINT_COL, cond["timepoint"]))
    if problems:
        raise DrugcellInputError(
            f"{path}: {len(problems)} value(s) outside the training condition (cell line {cond['cell_line']}, "
            f"timepoint {cond['timepoint']}, {cond['concentration_nm']:g} nM: {source}): {_shown(problems)}. "
            "A model fitted on these "
            "training data predicts that condition only; fix the values or remove these compounds")
    return {**cond, "source": source}


# ----------------------------------------------------------------------------- parsing
@dataclass
class ParseCheck:
    """Which test compounds RDKit cannot read (their rows hold the predictor's fallback profile)."""

    n: int
    unparsed: list[dict[str, str]] = field(default_factory=list)  # compound, smiles, reason

    def warning(self) -> str | None:
        if not self.unparsed:
            return None
        shown = [f"{u['compound']} ({u['smiles']!r}: {u['reason']})" for u in self.unparsed]
        return (f"{len(self.unparsed)} of {self.n} test compound(s) have a SMILES RDKit cannot parse: "
                f"{_shown(shown)}; their rows hold the predictor's fallback profile (no structure)")


def check_parseable(test: pd.DataFrame, path: str | Path) -> ParseCheck:
    """Refuse a test set none of whose SMILES parse (it would get one profile for every compound);
    otherwise list the ones that do not."""
    from drugcell.chem.molecules import parse_smiles

    smiles = test[SMILES_COL].tolist()
    parsed = parse_smiles(smiles, inchikey=False)
    ids = test[COMPOUND_COL].tolist()
    bad = [{"compound": ids[i], "smiles": str(smiles[i]), "reason": parsed.errors[i]} for i in sorted(parsed.errors)]
    if len(bad) == len(ids):
        shown = [f"{b['compound']} ({b['smiles']!r}: {b['reason']})" for b in bad]
        raise DrugcellInputError(
            f"{path}: none of the {len(ids)} test compounds has a SMILES RDKit can parse: {_shown(shown)}. Every "
            "row would get the same fallback profile; check the smiles column (is it the right file?)")
    return ParseCheck(n=len(ids), unparsed=bad)
