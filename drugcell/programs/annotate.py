"""Names a biologist can read: gene symbols for Ensembl ids and compound names, from offline sources.

Why offline: drugcell runs where no annotation service can be reached. Gene symbols come from a
mapping file the user gives (CSV, TSV or parquet) and, for the genes it does not cover, from the
table shipped in ``drugcell/data/gene_symbols.tsv.gz`` (Bioconductor org.Hs.eg.db 3.16.0 as Debian
packages it, Artistic-2.0; symbols from NCBI Gene; built by ``scripts/build_gene_symbols.py``).
Compound names come from a file the user gives or, since the ExpressionSet cache keeps none, from
the ``compound_name`` column of the metadata file the cache was loaded from, when it is still there.
An id listed with several different names keeps them all, joined with "/", and is counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from drugcell.data import vcpi
from drugcell.defaults import GENE_COL
from drugcell.errors import DrugcellInputError

#: Column names accepted in a gene-symbol mapping file (case-insensitive). The id column is the
#: candidate that matches the most of the data's gene ids.
ID_COLUMNS = ("ensembl_id", "ensembl_gene_id", "ensembl", GENE_COL, "gene")
SYMBOL_COLUMNS = ("gene_symbol", "symbol", "gene_name", "pr_gene_symbol", "hgnc_symbol", "name")
#: The same for a compound-name file (VCPI metadata, test_compounds.csv, LINCS tables).
COMPOUND_ID_COLUMNS = (vcpi.COMPOUND_KEY_COL, vcpi.TEST_COMPOUND_COL, "compound_id", "pert_id")
COMPOUND_NAME_COLUMNS = (vcpi.COMPOUND_NAME_COL, "pert_iname", "drug_name", "name")

BUILTIN_SYMBOLS = "gene_symbols.tsv.gz"  # in the drugcell.data package
BUILTIN_SOURCE = ("built-in table (org.Hs.eg.db 3.16.0, Debian r-bioc-org.hs.eg.db 3.16.0-1, Artistic-2.0; "
                  "NCBI Gene 2022-Sep12)")


@dataclass
class Annotation:
    """One name per id ("" where none), where the names came from and how many ids got one."""

    values: np.ndarray  # (n,) object
    source: str
    n_mapped: int
    n_ambiguous: int = 0  # ids given several different names (kept, joined with "/")

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "n_mapped": int(self.n_mapped), "n": len(self.values),
                "n_ambiguous": int(self.n_ambiguous)}


def read_table(path: str | Path, what: str) -> pd.DataFrame:
    """A CSV, TSV (by suffix; ``.gz`` allowed) or parquet file as strings; '#' starts a comment line in text."""
    path = Path(path)
    if not path.is_file():
        raise DrugcellInputError(f"{what} file {path} not found")
    suffixes = [s.lower() for s in path.suffixes if s.lower() != ".gz"]
    kind = suffixes[-1] if suffixes else ""
    try:
        if kind in (".parquet", ".pq"):
            return pd.read_parquet(path).astype("string").astype(object)
        sep = "\t" if kind in (".tsv", ".tab", ".txt") else "," if kind == ".csv" else None
        return pd.read_csv(path, dtype=str, sep=sep, comment="#", engine="python" if sep is None else "c")
    except Exception as exc:  # noqa: BLE001  (pandas and pyarrow raise many types for a bad file)
        raise DrugcellInputError(f"{path}: not a readable CSV, TSV or parquet {what} file ({exc})") from None


def _column(df: pd.DataFrame, candidates: tuple[str, ...], path: Path, what: str) -> str:
    cols = {str(c).lower(): c for c in df.columns}
    found = next((cols[c] for c in candidates if c in cols), None)
    if found is None:
        raise DrugcellInputError(
            f"{path}: no {what} column; expected one of {', '.join(candidates)} (found {list(df.columns)}); "
            "rename the column in the file")
    return found


def _id_column(df: pd.DataFrame, candidates: tuple[str, ...], wanted: set[str], exclude: str,
               strip_version: bool) -> tuple[str | None, pd.Series | None]:
    """The candidate column matching the most of ``wanted`` ids, and its (cleaned) keys."""
    cols = {str(c).lower(): c for c in df.columns}
    best, best_keys, best_hits = None, None, 0
    for c in candidates:
        if c in cols and cols[c] != exclude:
            keys = df[cols[c]].astype(str).str.strip()
            if strip_version:
                keys = keys.str.split(".").str[0]  # Ensembl version suffixes
            hits = len(wanted & set(keys))
            if hits > best_hits:
                best, best_keys, best_hits = cols[c], keys, hits
    return best, best_keys


def _mapping(keys: pd.Series, values: pd.Series) -> tuple[dict[str, str], int]:
    """id -> name; an id with several different names keeps them in file order, joined by "/"."""
    values = values.fillna("").astype(str).str.strip()
    keep = values != ""
    pairs = pd.DataFrame({"k": keys[keep].to_numpy(), "v": values[keep].to_numpy()}).drop_duplicates()
    joined = pairs.groupby("k", sort=False)["v"].agg("/".join)
    n_ambiguous = int((pairs.groupby("k", sort=False).size() > 1).sum())
    return joined.to_dict(), n_ambiguous


def _read_mapping(path: Path, ids: np.ndarray, what: str, name: str, id_cols: tuple[str, ...],
                  name_cols: tuple[str, ...], strip_version: bool) -> tuple[dict[str, str], int]:
    df = read_table(path, what)
    name_col = _column(df, name_cols, path, name)
    col, keys = _id_column(df, id_cols, set(ids.tolist()), name_col, strip_version)
    if col is None:
        raise DrugcellInputError(
            f"{path}: no id column ({', '.join(id_cols)}) matches any id of the data "
            f"(e.g. {ids[0] if len(ids) else '?'}); pass a {what} file keyed by the same ids")
    return _mapping(keys, df[name_col])


@lru_cache(maxsize=1)
def builtin_symbols() -> dict[str, str]:
    """Ensembl gene id -> symbol from the table shipped with drugcell (human genes; read once, do not modify)."""
    ref = resources.files("drugcell.data").joinpath(BUILTIN_SYMBOLS)
    with resources.as_file(ref) as path:
        df = pd.read_csv(path, sep="\t", comment="#", dtype=str)
    return dict(zip(df["ensembl_id"], df["symbol"]))


def gene_symbols(genes, path: str | Path | None = None, *, builtin: bool = True) -> Annotation:
    """A symbol per gene: from ``path`` (CSV/TSV/parquet, an id and a symbol column) first, then
    from the built-in table for the genes still without one; "" where neither has the gene."""
    genes = np.asarray(genes).astype(str)
    out = np.full(len(genes), "", dtype=object)
    sources, n_ambiguous = [], 0
    if path is not None:
        mapping, n_ambiguous = _read_mapping(Path(path), genes, "gene symbol", "symbol", ID_COLUMNS, SYMBOL_COLUMNS,
                                           True)
        out[:] = [mapping.get(g, "") for g in genes]
        sources.append(f"{path} ({int((out != '').sum()):,} genes)")
    if builtin:
        table = builtin_symbols()
        missing = np.flatnonzero(out == "")
        before = int((out != "").sum())
        out[missing] = [table.get(genes[i].split(".")[0], "") for i in missing]
        sources.append(f"{BUILTIN_SOURCE} ({int((out != '').sum()) - before:,} genes)" if sources else BUILTIN_SOURCE)
    return Annotation(values=out, source="; ".join(sources) or "none (gene ids)", n_mapped=int((out != "").sum()),
                      n_ambiguous=n_ambiguous)


def read_gene_symbols(path: str | Path, genes) -> np.ndarray:
    """Symbol per gene from a user's mapping file only; unmapped genes keep their id."""
    genes = np.asarray(genes).astype(str)
    sym = gene_symbols(genes, path, builtin=False).values
    return np.where(sym == "", genes, sym).astype(object)


def _metadata_names(compounds: np.ndarray, cache_inputs: dict[str, Any]) -> Annotation:
    """Names from the ``compound_name`` column of the metadata file the cache was loaded from."""
    import pyarrow.parquet as pq

    empty = np.full(len(compounds), "", dtype=object)
    meta = (cache_inputs.get("metadata") or {}).get("path")
    if not meta:
        return Annotation(empty, "none (the cache names no metadata file; pass --compound-names)", 0)
    if not Path(meta).is_file():
        return Annotation(empty, f"none (the cache's metadata file {meta} is not found; pass --compound-names)", 0)
    try:
        names = set(pq.read_schema(meta).names)
        if not {vcpi.COMPOUND_KEY_COL, vcpi.COMPOUND_NAME_COL} <= names:
            return Annotation(empty, f"none ({meta} has no {vcpi.COMPOUND_NAME_COL} column)", 0)
        df = pd.read_parquet(meta, columns=[vcpi.COMPOUND_KEY_COL, vcpi.COMPOUND_NAME_COL])
    except Exception as exc:  # noqa: BLE001  (a metadata file changed since the load: names are optional)
        return Annotation(empty, f"none ({meta} could not be read: {exc})", 0)
    mapping, n_ambiguous = _mapping(df[vcpi.COMPOUND_KEY_COL].astype(str), df[vcpi.COMPOUND_NAME_COL])
    values = np.array([mapping.get(c, "") for c in compounds], dtype=object)
    return Annotation(values, str(meta), int((values != "").sum()), n_ambiguous)


def compound_names(compounds, path: str | Path | None = None, *,
                   cache_inputs: dict[str, Any] | None = None) -> Annotation:
    """A name per compound ("" where unknown): from ``path`` when given (a compound id column and a
    ``compound_name`` column), else from the metadata file named in ``cache_inputs``."""
    compounds = np.asarray(compounds).astype(str)
    if path is None:
        return _metadata_names(compounds, cache_inputs or {})
    mapping, n_ambiguous = _read_mapping(Path(path), compounds, "compound name", "compound name",
                                         COMPOUND_ID_COLUMNS, COMPOUND_NAME_COLUMNS, False)
    values = np.array([mapping.get(c, "") for c in compounds], dtype=object)
    return Annotation(values, str(path), int((values != "").sum()), n_ambiguous)
