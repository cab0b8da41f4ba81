"""The VCPI input tables (metadata, chemistry, gene filter) read and validated, and the input
fingerprints a cache records.

Why apart from the counts: these tables are small and read whole with pandas, and every refusal
here names the file and the column, so a user can fix the input without reading the loader.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from drugcell.data import vcpi
from drugcell.defaults import COMPOUND_COL, SMILES_COL
from drugcell.errors import DrugcellInputError

MAX_SHOW = 5  # ids quoted in a message before "... (n in all)"
_WHOLE_HASH_LIMIT = 64 << 20  # hash files up to 64 MB whole; bigger parquet files by footer
#: the InChIKey column of :func:`read_chemistry`'s frame (drugcell's own; the input spells it ``inchi_key``)
INCHIKEY = "inchikey"


def show_ids(ids: Sequence[object]) -> str:
    """The first few ids of a list for an error message (the count when there are more)."""
    ids = list(ids)
    head = ", ".join(map(str, ids[:MAX_SHOW]))
    return head + (f", ... ({len(ids)} in all)" if len(ids) > MAX_SHOW else "")


def _read_table(path: Path, *, what: str) -> pd.DataFrame:
    """A parquet or CSV table as pandas (ids stay strings in CSV)."""
    if not path.exists():
        raise DrugcellInputError(f"{what} file {path} does not exist")
    try:
        if path.suffix.lower() in (".csv", ".tsv", ".txt"):
            return pd.read_csv(path, sep="\t" if path.suffix.lower() == ".tsv" else ",", dtype=str,
                               keep_default_na=False, na_values=[""])
        return pq.read_table(path).to_pandas()
    except (pa.ArrowException, OSError, ValueError, pd.errors.ParserError) as exc:
        raise DrugcellInputError(f"cannot read {what} file {path}: {exc}") from exc


def _require(df: pd.DataFrame, cols: Sequence[str], *, path: Path, what: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise DrugcellInputError(
            f"{what} file {path} is missing column(s) {missing} (it has {show_ids(list(df.columns))}); "
            f"the VCPI layout needs {list(cols)}"
        )


def as_id(values: pd.Series) -> pd.Series:
    """Ids as clean strings (an integer id read as float 123.0 becomes "123")."""
    if pd.api.types.is_float_dtype(values):
        v = values.to_numpy()
        if np.all(np.isfinite(v)) and np.all(v == np.round(v)):
            return pd.Series(v.astype(np.int64).astype(str), index=values.index)
    return values.astype(str).str.strip()


def read_metadata(path: str | os.PathLike[str]) -> pd.DataFrame:
    """The per-sample metadata, validated: required columns, unique non-empty ``sequenced_id``."""
    path = Path(path)
    meta = _read_table(path, what="metadata")
    _require(meta, vcpi.REQUIRED_METADATA_COLUMNS, path=path, what="metadata")
    if meta[vcpi.SAMPLE_COL].isna().any():
        rows = np.flatnonzero(meta[vcpi.SAMPLE_COL].isna().to_numpy())
        raise DrugcellInputError(f"metadata file {path}: column {vcpi.SAMPLE_COL} is empty in row(s) {show_ids(rows)}")
    meta = meta.copy()
    meta[vcpi.SAMPLE_COL] = as_id(meta[vcpi.SAMPLE_COL])
    dup = meta[vcpi.SAMPLE_COL].duplicated(keep=False)
    if dup.any():
        ids = meta.loc[dup, vcpi.SAMPLE_COL].unique()
        raise DrugcellInputError(
            f"metadata file {path}: duplicate {vcpi.SAMPLE_COL} value(s) {show_ids(ids)}; each sample must "
            "have exactly one row"
        )
    bad_key = meta[vcpi.COMPOUND_KEY_COL].isna() | (meta[vcpi.COMPOUND_KEY_COL].astype(str).str.strip() == "")
    if bad_key.any():
        ids = meta.loc[bad_key, vcpi.SAMPLE_COL]
        raise DrugcellInputError(
            f"metadata file {path}: column {vcpi.COMPOUND_KEY_COL} is empty for sample(s) {show_ids(ids)}"
        )
    meta[vcpi.COMPOUND_KEY_COL] = as_id(meta[vcpi.COMPOUND_KEY_COL])
    meta[vcpi.COMPOUND_UUID_COL] = meta[vcpi.COMPOUND_UUID_COL].astype("string").fillna("").astype(str)
    return meta


def read_chemistry(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Chemistry by compound UUID: ``compound, smiles, inchikey`` (empty strings when unknown)."""
    path = Path(path)
    chem = _read_table(path, what="chemistry")
    _require(chem, vcpi.REQUIRED_CHEMISTRY_COLUMNS, path=path, what="chemistry")
    out = pd.DataFrame({
        COMPOUND_COL: chem[vcpi.CHEM_UUID_COL].astype("string").fillna("").astype(str).str.strip(),
        SMILES_COL: chem[vcpi.SMILES_COL].astype("string").fillna("").astype(str).str.strip(),
        INCHIKEY: (chem[vcpi.INCHIKEY_COL].astype("string").fillna("").astype(str).str.strip()
                   if vcpi.INCHIKEY_COL in chem else ""),
    })
    return out


def read_gene_filter(path: str | os.PathLike[str]) -> np.ndarray:
    """The scored genes (sorted, as the ExpressionSet stores them); duplicates are refused."""
    path = Path(path)
    df = _read_table(path, what="gene filter")
    _require(df, [vcpi.GENE_COL], path=path, what="gene filter")
    genes = df[vcpi.GENE_COL].astype(str).str.strip()
    dup = genes.duplicated(keep=False)
    if dup.any():
        raise DrugcellInputError(f"gene filter file {path}: duplicate {vcpi.GENE_COL} value(s) {show_ids(genes[dup].unique())}")
    if (genes == "").any() or len(genes) == 0:
        raise DrugcellInputError(f"gene filter file {path}: empty {vcpi.GENE_COL} value(s) or no genes at all")
    return np.sort(genes.to_numpy().astype(str))


def fingerprint_input(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Size + sha256 of a file: the whole file up to 64 MB, else the parquet footer (schema and
    every column chunk's offsets, sizes and statistics), which changes whenever the data do."""
    p = Path(path)
    size = p.stat().st_size
    h = hashlib.sha256()
    with open(p, "rb") as f:
        if size <= _WHOLE_HASH_LIMIT:
            while block := f.read(1 << 20):
                h.update(block)
            hashed = "whole file"
        else:
            f.seek(size - 8)
            tail = f.read(8)
            footer_len = int.from_bytes(tail[:4], "little")
            if tail[4:] != b"PAR1" or footer_len + 8 > size:
                f.seek(0)
                while block := f.read(1 << 20):
                    h.update(block)
                hashed = "whole file"
            else:
                f.seek(size - 8 - footer_len)
                h.update(f.read(footer_len))
                hashed = "parquet footer"
    return {"path": str(p.resolve()), "size": size, "sha256": h.hexdigest()[:16], "hashed": hashed}
