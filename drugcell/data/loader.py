"""Real VCPI files -> an ExpressionSet in ONE streaming pass over the counts, in bounded memory.

Why streaming over *sample* (column) batches: the official ``train_counts.parquet`` is one row
group of 78,778 genes x 32,501 columns (10 GB once decoded), so row batches would decode every
sample at once; each sample's library size needs only its own column.

How the pass stays exact: samples are ordered so that all replicates of a compound fall in one
batch (a group larger than a batch is split and merged exactly with Chan's formula), so
per-compound means and within-compound variances of L = log2(CPM+1) are exact inside the
batch. Across batches only per-gene totals (sum and sum of squares of L, shifted by a per-gene
constant to avoid cancellation) are carried. The Welch t-statistics and Mejia weights follow
after the pass in compound chunks (the arithmetic of ``contest_scorer.weights``, rearranged to be
well conditioned in float32; the tests pin it to the in-memory recipe).

Memory at full scale (14,031 compounds x 12,995 genes, float32, 730 MB per array): shifted means
(C, G) and variances (C, G) in memory; the target (C, G) in an unlinked file mapping whose pages
are handed back after each batch (``load_to_cache``); one batch of counts as an Arrow table (80 MB
at 256 samples x 78,778 int32 genes, read one batch ahead) and its scored genes. The weights
overwrite the means row by row and are exposed as their (G, C) transpose (Fortran order), so no
second 730 MB array is ever needed.

Time (2 cores): one worker reads and decodes batch i+1 in Arrow (the parquet read on pyarrow's own
threads: snappy decompression is most of it) while the main thread computes batch i on two
threads, each taking half of every block's groups (numpy releases the GIL). The target's L is
float32 (error ~2e-7, well inside the float32 it is stored in); the weights' L stays float64,
since float32 replicate variances move the weights by ~4e-4 relative.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import hashlib
import mmap
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from scipy import sparse
from tqdm.auto import tqdm

from drugcell import __version__
from drugcell.data import vcpi
from drugcell.data.expression_set import ExpressionSet
from drugcell.errors import DrugcellInputError
from drugcell.provenance import fingerprint_arrays

WeightsLibrary = Literal["scored", "all"]
DEFAULT_BATCH_SIZE = vcpi.DEFAULT_BATCH_SIZE
_MAX_SHOW = 5
_WHOLE_HASH_LIMIT = 64 << 20  # hash files up to 64 MB whole; bigger parquet files by footer
_READ_BUFFER = 1 << 18  # parquet read buffer (bytes)
_READ_AHEAD = 2  # batches in flight (read, then decoded) while one is computed


def _show(ids: Sequence[object]) -> str:
    ids = list(ids)
    head = ", ".join(map(str, ids[:_MAX_SHOW]))
    return head + (f", ... ({len(ids)} in all)" if len(ids) > _MAX_SHOW else "")


# ============================================================================ options and report
@dataclass(frozen=True)
class LoadOptions:
    """Everything that changes the result of a load (recorded in the cache's manifest)."""

    condition: vcpi.ConditionFilter = field(default_factory=vcpi.ConditionFilter)
    weights_library: WeightsLibrary = "scored"
    batch_size: int = DEFAULT_BATCH_SIZE
    weights_path: str | None = None  # an official weights.parquet to use instead of computing

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["condition"] = self.condition.as_dict()
        return d


@dataclass
class LoadSummary:
    """Counts of what the load kept, dropped and warned about (printed by the CLI)."""

    counts_layout: str = ""
    n_samples_counts: int = 0
    n_samples_metadata: int = 0
    dropped_condition: dict[str, int] = field(default_factory=dict)
    n_out_of_condition: int = 0
    n_metadata_only_out_of_condition: int = 0
    n_empty_library: int = 0
    n_empty_scored_library: int = 0
    n_samples_used: int = 0
    n_compounds: int = 0
    n_compounds_dropped_empty: int = 0
    n_genes_counts: int = 0
    n_genes: int = 0
    controls: dict[str, int] = field(default_factory=dict)
    n_single_replicate: int = 0
    n_missing_smiles: int = 0
    n_ambiguous_structure: int = 0
    n_unrecognised_controls: int = 0
    n_batches: int = 0
    weights_source: str = ""
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)

    def warn(self, msg: str) -> None:
        self.warnings.append(msg)
        warnings.warn(msg, stacklevel=3)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def format(self) -> str:
        dropped = ", ".join(f"{k} {v}" for k, v in self.dropped_condition.items() if v) or "none"
        ctrl = ", ".join(f"{k} {v}" for k, v in self.controls.items()) or "none"
        lines = [
            f"counts layout      {self.counts_layout}: {self.n_genes_counts:,} genes x "
            f"{self.n_samples_counts:,} samples",
            f"samples            {self.n_samples_used:,} used; {self.n_out_of_condition:,} outside the "
            f"condition ({dropped}); {self.n_empty_library} empty librar"
            f"{'y' if self.n_empty_library == 1 else 'ies'}; {self.n_empty_scored_library} empty on the "
            "scored genes",
            f"compounds          {self.n_compounds:,} library ({self.n_single_replicate} with 1 replicate, "
            f"{self.n_missing_smiles} without SMILES)",
            f"controls           {ctrl}",
            f"genes              {self.n_genes:,} scored",
            f"weights            {self.weights_source}",
            f"time               {self.seconds:.1f} s in {self.n_batches} batch(es)",
        ]
        return "\n".join(lines)


# ============================================================================ small readers
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
            f"{what} file {path} is missing column(s) {missing} (it has {_show(list(df.columns))}); "
            f"the VCPI layout needs {list(cols)}"
        )


def _as_id(values: pd.Series) -> pd.Series:
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
        raise DrugcellInputError(f"metadata file {path}: column {vcpi.SAMPLE_COL} is empty in row(s) {_show(rows)}")
    meta = meta.copy()
    meta[vcpi.SAMPLE_COL] = _as_id(meta[vcpi.SAMPLE_COL])
    dup = meta[vcpi.SAMPLE_COL].duplicated(keep=False)
    if dup.any():
        ids = meta.loc[dup, vcpi.SAMPLE_COL].unique()
        raise DrugcellInputError(
            f"metadata file {path}: duplicate {vcpi.SAMPLE_COL} value(s) {_show(ids)}; each sample must "
            "have exactly one row"
        )
    bad_key = meta[vcpi.COMPOUND_KEY_COL].isna() | (meta[vcpi.COMPOUND_KEY_COL].astype(str).str.strip() == "")
    if bad_key.any():
        ids = meta.loc[bad_key, vcpi.SAMPLE_COL]
        raise DrugcellInputError(
            f"metadata file {path}: column {vcpi.COMPOUND_KEY_COL} is empty for sample(s) {_show(ids)}"
        )
    meta[vcpi.COMPOUND_KEY_COL] = _as_id(meta[vcpi.COMPOUND_KEY_COL])
    meta[vcpi.COMPOUND_UUID_COL] = meta[vcpi.COMPOUND_UUID_COL].astype("string").fillna("").astype(str)
    return meta


def read_chemistry(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Chemistry by compound UUID: ``compound, smiles, inchi_key`` (empty strings when unknown)."""
    path = Path(path)
    chem = _read_table(path, what="chemistry")
    _require(chem, vcpi.REQUIRED_CHEMISTRY_COLUMNS, path=path, what="chemistry")
    out = pd.DataFrame({
        "compound": chem[vcpi.CHEM_UUID_COL].astype("string").fillna("").astype(str).str.strip(),
        "smiles": chem[vcpi.SMILES_COL].astype("string").fillna("").astype(str).str.strip(),
        "inchikey": (chem[vcpi.INCHIKEY_COL].astype("string").fillna("").astype(str).str.strip()
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
        raise DrugcellInputError(f"gene filter file {path}: duplicate gene_id value(s) {_show(genes[dup].unique())}")
    if (genes == "").any() or len(genes) == 0:
        raise DrugcellInputError(f"gene filter file {path}: empty gene_id value(s) or no genes at all")
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


# ============================================================================ counts sources
class _Counts:
    """A counts table opened for batch reads: ``genes``, ``samples`` and ``read(names)``."""

    layout: str
    path: Path
    genes: np.ndarray
    samples: list[str]

    def bind(self, scored_rows: np.ndarray) -> None:
        self.scored_rows = scored_rows

    def fetch(self, names: list[str]) -> Any:
        """The expensive, GIL-free part of a read (run one batch ahead in a thread)."""
        return names

    def decode(self, fetched: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """-> (library over all genes (b,) float64, scored counts (b, Gs), library over scored (b,))."""
        raise NotImplementedError

    def read(self, names: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.decode(self.fetch(names))


def _check_values(a: np.ndarray, *, path: Path, sample: str) -> None:
    """Counts must be finite, non-negative integers; the message names the sample (column)."""
    if a.dtype.kind == "f":
        if not np.all(np.isfinite(a)):
            raise DrugcellInputError(
                f"counts file {path}: sample {sample!r} has NaN/missing or infinite counts; counts must be "
                "whole numbers (fill missing genes with 0)"
            )
        if np.any(a != np.floor(a)):
            raise DrugcellInputError(
                f"counts file {path}: sample {sample!r} has non-integer counts (e.g. {a[a != np.floor(a)][0]}); "
                "the loader needs raw UMI counts, not normalised values"
            )
    if a.size and a.min() < 0:
        raise DrugcellInputError(
            f"counts file {path}: sample {sample!r} has negative counts (min {a.min()}); counts must be >= 0"
        )


class _WideParquet(_Counts):
    """``gene_id`` + one numeric column per sample; read in column batches, footer parsed once."""

    layout = "wide parquet"

    def __init__(self, path: Path, pf: pq.ParquetFile | None = None) -> None:
        self.path = path
        # no memory map: mapped pages of the 2.4 GB file would count toward the peak RSS; the
        # footer of a 32,000-column file takes ~0.5 s to parse, so an open file is reused
        self.pf = pf if pf is not None else _open_parquet(path)
        schema = self.pf.schema_arrow
        names = list(schema.names)
        if vcpi.GENE_COL not in names:
            raise DrugcellInputError(f"counts file {path} has no {vcpi.GENE_COL!r} column (the wide layout is "
                                     "gene_id + one column per sample)")
        self.samples = [n for n in names if n != vcpi.GENE_COL and n != "__index_level_0__"]
        seen = pd.Index(self.samples)
        if seen.has_duplicates:
            raise DrugcellInputError(f"counts file {path}: duplicate sample column(s) {_show(seen[seen.duplicated()].unique())}")
        bad = [n for n in self.samples if not (pa.types.is_integer(schema.field(n).type)
                                               or pa.types.is_floating(schema.field(n).type))]
        if bad:
            raise DrugcellInputError(
                f"counts file {path}: sample column(s) {_show(bad)} are not numeric "
                f"(type {schema.field(bad[0]).type}); counts must be integers"
            )
        genes = self.pf.read(columns=[vcpi.GENE_COL]).column(0)
        if genes.null_count:
            raise DrugcellInputError(f"counts file {path}: {genes.null_count} row(s) have no gene_id")
        self.genes = np.asarray(genes.to_pandas().astype(str).to_numpy(), dtype=object)

    def bind(self, scored_rows: np.ndarray) -> None:
        super().bind(scored_rows)
        self._scored_arrow = pa.array(scored_rows, type=pa.int64())

    def fetch(self, names: list[str]) -> pa.Table:
        """The parquet read, on pyarrow's threads (measured less CPU and memory than two
        single-threaded readers at once); only one reader thread uses ``self.pf``."""
        return self.pf.read(columns=names, use_threads=True)

    def decode(self, table: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        types = set(table.schema.types)
        if (len(types) == 1 and pa.types.is_integer(next(iter(types))) and table.num_columns
                and not any(c.null_count for c in table.columns)):
            return self._decode_block(table)
        return self._decode_columns(table)

    def _decode_block(self, table: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Null-free integer columns of one type, all in Arrow's C++: per-column min and sum over
        the row-group chunks (no concatenation), then one ``take`` of the scored rows and one
        consolidated (b, scored genes) block; no whole-table numpy copy (80 MB a batch)."""
        if table.schema.types[0].bit_width > 32 or pa.types.is_signed_integer(table.schema.types[0]):
            for i, col in enumerate(table.columns):
                low = pc.min(col).as_py()
                if low is not None and low < 0:
                    raise DrugcellInputError(
                        f"counts file {self.path}: sample {table.column_names[i]!r} has negative counts (min {low}); "
                        "counts must be >= 0"
                    )
        lib = np.array([pc.sum(col).as_py() or 0 for col in table.columns], dtype=np.float64)
        taken = table.take(self._scored_arrow).replace_schema_metadata(None)  # no pandas index rules
        out = taken.to_pandas(split_blocks=False, use_threads=False).to_numpy().T
        if not out.flags.c_contiguous:
            out = np.ascontiguousarray(out)
        return lib, out, out.sum(axis=1, dtype=np.int64).astype(np.float64)

    def _decode_columns(self, table: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Any numeric columns (floats, nulls, mixed widths): one column at a time."""
        b, gs = table.num_columns, len(self.scored_rows)
        lib = np.empty(b, dtype=np.float64)
        types = table.schema.types
        if any(pa.types.is_floating(t) for t in types):
            dtype = np.float64
        elif all(t.bit_width <= 32 and (pa.types.is_signed_integer(t) or t.bit_width < 32) for t in types):
            dtype = np.int32
        else:
            dtype = np.int64
        out = np.empty((b, gs), dtype=dtype)
        for i, name in enumerate(table.column_names):
            col = table.column(i)
            if col.null_count:
                raise DrugcellInputError(
                    f"counts file {self.path}: sample {name!r} has {col.null_count} missing (null/NaN) count(s); "
                    "fill missing genes with 0"
                )
            a = col.to_numpy()
            _check_values(a, path=self.path, sample=name)
            lib[i] = a.sum(dtype=np.float64 if a.dtype.kind == "f" else np.int64)
            out[i] = a[self.scored_rows]
        return lib, out, out.sum(axis=1, dtype=np.float64)


class _LongTable(_Counts):
    """``(sample, gene_id, count)`` rows; held in memory (meant for small or sparse tables),
    grouped by sample once so each batch is a few slices."""

    def __init__(self, path: Path, table: pa.Table, sample_col: str) -> None:
        self.path = path
        self.layout = "long " + ("csv" if path.suffix.lower() == ".csv" else "parquet")
        df = pd.DataFrame({
            "sample": _as_id(table.column(sample_col).to_pandas()),
            "gene": table.column(vcpi.GENE_COL).to_pandas().astype(str),
        })
        cnt = table.column(vcpi.LONG_COUNT_COL)
        if not (pa.types.is_integer(cnt.type) or pa.types.is_floating(cnt.type)):
            raise DrugcellInputError(f"counts file {path}: column 'count' has type {cnt.type}; counts must be integers")
        values = cnt.to_numpy(zero_copy_only=False).astype(np.float64)
        bad = ~np.isfinite(values)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DrugcellInputError(f"counts file {path}: row {i} (sample {df['sample'][i]!r}, gene "
                                     f"{df['gene'][i]!r}) has a missing/NaN count; counts must be whole numbers")
        for cond, what in ((values != np.floor(values), "a non-integer"), (values < 0, "a negative")):
            if cond.any():
                i = int(np.flatnonzero(cond)[0])
                raise DrugcellInputError(f"counts file {path}: row {i} (sample {df['sample'][i]!r}, gene "
                                         f"{df['gene'][i]!r}) has {what} count {values[i]}; counts must be >= 0 integers")
        dup = df.duplicated(keep=False)
        if dup.any():
            pairs = df[dup].drop_duplicates().head(_MAX_SHOW).itertuples(index=False)
            raise DrugcellInputError(f"counts file {path}: duplicate (sample, gene_id) row(s) "
                                     f"{[tuple(p) for p in pairs]}; each pair must appear once")
        gcode, genes = pd.factorize(df["gene"], sort=True)
        scode, samples = pd.factorize(df["sample"], sort=False)
        order = np.argsort(scode, kind="stable")
        self._gene = gcode[order]
        self._count = values[order]
        bounds = np.searchsorted(scode[order], np.arange(len(samples) + 1))
        self._start = {s: (int(bounds[i]), int(bounds[i + 1])) for i, s in enumerate(samples)}
        self.samples = list(samples)
        self.genes = np.asarray(genes, dtype=object)

    def bind(self, scored_rows: np.ndarray) -> None:
        super().bind(scored_rows)
        self._scored_pos = np.full(len(self.genes), -1, dtype=np.int64)
        self._scored_pos[scored_rows] = np.arange(len(scored_rows))

    def decode(self, names: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        out = np.zeros((len(names), len(self.scored_rows)), dtype=np.float64)
        lib = np.empty(len(names), dtype=np.float64)
        for i, name in enumerate(names):
            a, b = self._start[name]
            lib[i] = self._count[a:b].sum()
            pos = self._scored_pos[self._gene[a:b]]
            keep = pos >= 0
            out[i, pos[keep]] = self._count[a:b][keep]
        return lib, out, out.sum(axis=1)


def open_counts(path: str | os.PathLike[str]) -> _Counts:
    """Open a counts table, detecting the layout: wide parquet (``gene_id`` + sample columns) or
    long ``(sample|sequenced_id, gene_id, count)`` parquet/CSV."""
    path = Path(path)
    if not path.exists():
        raise DrugcellInputError(f"counts file {path} does not exist")
    long_cols = {vcpi.GENE_COL, vcpi.LONG_COUNT_COL}
    if path.suffix.lower() in (".csv", ".tsv"):
        try:
            table = pacsv.read_csv(path, parse_options=pacsv.ParseOptions(delimiter="\t" if path.suffix.lower() == ".tsv" else ","),
                                   convert_options=pacsv.ConvertOptions(
                                       column_types={c: pa.string() for c in (*vcpi.LONG_SAMPLE_COLS, vcpi.GENE_COL)}))
        except pa.ArrowInvalid as exc:
            raise DrugcellInputError(f"cannot read counts file {path}: {exc}") from exc
        names = set(table.column_names)
        sample_col = next((c for c in vcpi.LONG_SAMPLE_COLS if c in names), None)
        if sample_col is None or not long_cols <= names:
            raise DrugcellInputError(
                f"counts file {path}: a CSV counts table must be long with columns sample (or sequenced_id), "
                f"gene_id, count; it has {_show(table.column_names)}. Write wide counts as parquet."
            )
        return _LongTable(path, table, sample_col)
    try:
        pf = _open_parquet(path)
        schema = pf.schema_arrow
    except (pa.ArrowException, OSError) as exc:
        raise DrugcellInputError(f"cannot read counts file {path} as parquet: {exc}") from exc
    names = set(schema.names)
    sample_col = next((c for c in vcpi.LONG_SAMPLE_COLS if c in names), None)
    if sample_col is not None and long_cols <= names and len(names - {"__index_level_0__"}) == 3:
        return _LongTable(path, pf.read(), sample_col)
    return _WideParquet(path, pf)


def _open_parquet(path: Path) -> pq.ParquetFile:
    """Buffered reads (~30 % less CPU than unbuffered reads of many small column chunks), no
    memory map (its pages would count toward the peak RSS)."""
    return pq.ParquetFile(path, memory_map=False, pre_buffer=False, buffer_size=_READ_BUFFER)


# ============================================================================ the plan
@dataclass
class _Plan:
    """The pass order: batches of whole groups (a group larger than a batch is split over
    several). Inside a batch, groups of equal size m form a block laid out replicate-major
    (row ``r0 + j*k + i`` is replicate j of the block's group i), so every group statistic is
    a ``reshape(m, k, G).sum(0)``: contiguous, vectorised, exact."""

    names: list[str]                 # sample ids in pass order
    group: np.ndarray                # group index per sample (pass order)
    batches: list[tuple[int, int, list[tuple[int, int, np.ndarray]]]]  # (lo, hi, blocks (r0, m, groups))
    split: np.ndarray                # bool per group: spans several batches


def _plan(sample_names: np.ndarray, group: np.ndarray, n_groups: int, batch_size: int) -> _Plan:
    order = np.argsort(group, kind="stable")
    sizes = np.bincount(group, minlength=n_groups)
    ends = np.cumsum(sizes)
    split = sizes > batch_size
    # consecutive runs of groups, each run at most batch_size samples (split groups alone)
    runs: list[list[int]] = []
    cur: list[int] = []
    total = 0
    for k in np.flatnonzero(sizes):
        if split[k]:
            if cur:
                runs.append(cur)
            runs.append([int(k)])
            cur, total = [], 0
            continue
        if total + sizes[k] > batch_size and cur:
            runs.append(cur)
            cur, total = [], 0
        cur.append(int(k))
        total += int(sizes[k])
    if cur:
        runs.append(cur)
    names_out: list[np.ndarray] = []
    group_out: list[np.ndarray] = []
    batches = []
    pos = 0
    for run in runs:
        if split[run[0]]:
            k = run[0]
            idx = order[ends[k] - sizes[k]:ends[k]]
            for a in range(0, len(idx), batch_size):
                part = idx[a:a + batch_size]
                names_out.append(sample_names[part])
                group_out.append(np.full(len(part), k))
                batches.append((pos, pos + len(part), [(0, len(part), np.array([k]))]))
                pos += len(part)
            continue
        run_arr = np.array(run)
        blocks = []
        r0 = 0
        lo = pos
        for m in np.unique(sizes[run_arr]):
            gs = run_arr[sizes[run_arr] == m]
            # replicate-major: (m, k) sample positions -> rows r0 + j*k + i
            first = ends[gs] - m
            idx = order[first[None, :] + np.arange(m)[:, None]].ravel()
            names_out.append(sample_names[idx])
            group_out.append(np.tile(gs, m))
            blocks.append((r0, int(m), gs))
            r0 += int(m) * len(gs)
        pos += r0
        batches.append((lo, pos, blocks))
    names = [str(s) for s in np.concatenate(names_out)] if names_out else []
    g = np.concatenate(group_out) if group_out else np.zeros(0, dtype=np.int64)
    return _Plan(names=names, group=g, batches=batches, split=split)


# ============================================================================ accumulators
class _Stats:
    """Per-group outputs of the pass plus the per-gene totals (see the module docstring).

    Library statistics are (C, G) so each batch writes whole rows; the weights are finally
    written over ``mean_u`` row by row and exposed as its transpose (G, C) (Fortran order)."""

    def __init__(self, n_lib: int, n_ctrl: int, n_genes: int, *, weights: bool,
                 scratch_dir: Path | None = None) -> None:
        g = n_genes
        self.n_lib = n_lib
        self.n = np.zeros(n_lib + n_ctrl, dtype=np.int64)
        if scratch_dir is None:
            self.expr = np.empty((n_lib, g), dtype=np.float32)
        else:
            # the target is final once written: keep it in an unlinked file mapping whose pages
            # are handed back after every batch, so it does not count toward the peak memory
            fd, tmp = tempfile.mkstemp(prefix=".drugcell-expr-", suffix=".npy", dir=scratch_dir)
            os.close(fd)
            try:
                self.expr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n_lib, g))
            finally:
                os.unlink(tmp)
        self.ctrl_expr = np.zeros((n_ctrl, g), dtype=np.float64)
        self.weights = weights
        if weights:
            self.mean_u = np.empty((n_lib, g), dtype=np.float32)   # later overwritten by weights
            self.var = np.empty((n_lib, g), dtype=np.float32)
            self.ctrl_mean_u = np.zeros((n_ctrl, g), dtype=np.float64)
            self.ctrl_var = np.zeros((n_ctrl, g), dtype=np.float64)
        self.shift: np.ndarray | None = None
        self.total_u = np.zeros(g, dtype=np.float64)
        self.total_uu = np.zeros(g, dtype=np.float64)
        self.n_total = 0
        # split groups: float64 running (n, sum of target L, mean_u, M2)
        self.acc: dict[int, list[Any]] = {}

    def release(self) -> None:
        """Hand the written target pages back to the page cache (a no-op when in memory)."""
        _release_map(self.expr)

    def emit(self, split: np.ndarray, grp: np.ndarray, n: np.ndarray, sum_t: np.ndarray,
             mean_u: np.ndarray | None, m2: np.ndarray | None) -> None:
        """Route one batch's group statistics: complete groups are stored, split ones merged."""
        part = split[grp]
        if not part.any():
            self.put(grp, n, sum_t, mean_u, m2)
            return
        whole = ~part
        if whole.any():
            self.put(grp[whole], n[whole], sum_t[whole], None if mean_u is None else mean_u[whole],
                     None if m2 is None else m2[whole])
        for j in np.flatnonzero(part):
            self.merge(int(grp[j]), int(n[j]), sum_t[j], None if mean_u is None else mean_u[j],
                       None if m2 is None else m2[j])

    def put(self, grp: np.ndarray, n: np.ndarray, sum_t: np.ndarray, mean_u: np.ndarray | None,
            m2: np.ndarray | None) -> None:
        """Store complete groups (rows of the per-batch arrays, which are scaled in place: no
        float64 temporaries). Threads may call it at once for disjoint groups."""
        self.n[grp] = n
        lib = grp < self.n_lib
        if not lib.all():
            if lib.any():
                self.put(grp[lib], n[lib], sum_t[lib], None if mean_u is None else mean_u[lib],
                         None if m2 is None else m2[lib])
            c = ~lib
            rows = grp[c] - self.n_lib
            nn = n[c][:, None].astype(np.float64)
            self.ctrl_expr[rows] = sum_t[c] / nn
            if self.weights:
                self.ctrl_mean_u[rows] = mean_u[c]
                self.ctrl_var[rows] = m2[c] / np.maximum(nn - 1.0, 1.0)
            return
        if (n == 1).all():
            self.expr[grp] = sum_t
        else:
            sum_t *= (1.0 / n[:, None]).astype(sum_t.dtype)
            self.expr[grp] = sum_t
        if self.weights:
            self.mean_u[grp] = mean_u
            if not (n <= 2).all():
                m2 *= (1.0 / np.maximum(n - 1.0, 1.0))[:, None]
            self.var[grp] = m2

    def merge(self, k: int, n: int, sum_t: np.ndarray, mean_u: np.ndarray | None, m2: np.ndarray | None) -> None:
        """Chan's pairwise update for a group split across batches."""
        if k not in self.acc:
            self.acc[k] = [n, sum_t.astype(np.float64), None if mean_u is None else mean_u.copy(),
                           None if m2 is None else m2.copy()]
            return
        a = self.acc[k]
        na = a[0]
        a[0] = na + n
        a[1] += sum_t
        if mean_u is not None:
            delta = mean_u - a[2]
            a[3] += m2 + delta * delta * (na * n / (na + n))
            a[2] += delta * (n / (na + n))

    def finish_split(self) -> None:
        for k, (n, sum_t, mean_u, m2) in self.acc.items():
            self.put(np.array([k]), np.array([n]), sum_t[None], None if mean_u is None else mean_u[None],
                     None if m2 is None else m2[None])
        self.acc.clear()


class _Work:
    """Reusable work buffers (a fresh array costs about 1 ms per MB in page faults here): the
    target's L (float32 unless it doubles as the weights' L) and the weights' L (float64)."""

    def __init__(self, rows: int, cols: int, *, weights: bool, library: WeightsLibrary) -> None:
        shared = weights and library == "all"
        self.t = np.empty((rows, cols), dtype=np.float64 if shared else np.float32)
        self.w = self.t if shared else (np.empty((rows, cols)) if weights else None)

    def views(self, rows: int) -> tuple[np.ndarray, np.ndarray | None]:
        return self.t[:rows], None if self.w is None else self.w[:rows]


def _log_cpm(counts: np.ndarray, lib: np.ndarray, out: np.ndarray) -> np.ndarray:
    """log2(CPM + 1) in ``out``'s precision; ``lib`` has the shape of ``counts`` minus its last axis.
    float32 is enough for the target (errors ~2e-7); the weights' variances need float64."""
    scale = (1e6 / lib).astype(out.dtype)[..., None]
    np.multiply(counts, scale, out=out, dtype=out.dtype)
    out += 1.0
    return np.log2(out, out=out)


# a piece of a batch: (r0, m, groups of the block, i0, i1) = groups i0:i1 of the block whose
# rows r0 + j*k + i hold replicate j of group i (k = len(groups)); pieces never share a group
_Piece = tuple[int, int, np.ndarray, int, int]


def _pieces_stats(counts: np.ndarray, lib: np.ndarray, lib_s: np.ndarray, lt: np.ndarray,
                  lw: np.ndarray | None, pieces: Sequence[_Piece], library: WeightsLibrary) -> list[tuple]:
    """Per piece (groups, n, sum of target L, mean of weights L, M2 of weights L), the log-CPM
    computed on the piece's rows only (so two threads can share one batch). ``lw`` is used as
    scratch; it may be ``lt`` itself (weights library "all": sums are taken first)."""
    out = []
    g = counts.shape[1]
    same = lw is lt
    for r0, m, grp, i0, i1 in pieces:
        k = len(grp)
        rows = slice(r0, r0 + m * k)
        c = counts[rows].reshape(m, k, g)[:, i0:i1]
        tb = lt[rows].reshape(m, k, g)[:, i0:i1]
        _log_cpm(c, lib[rows].reshape(m, k)[:, i0:i1], tb)
        if m == 1:
            sum_t = tb[0].copy()
        elif m == 2:
            sum_t = np.add(tb[0], tb[1])
        else:  # float64 sums: many replicates (controls) would lose digits in float32
            sum_t = tb.sum(axis=0, dtype=np.float64)
        mean = m2 = None
        if lw is not None:
            wb = lw[rows].reshape(m, k, g)[:, i0:i1]
            if not same:
                _log_cpm(c, (lib_s if library == "scored" else lib)[rows].reshape(m, k)[:, i0:i1], wb)
            if m == 1:
                mean, m2 = wb[0].copy(), np.zeros((i1 - i0, g))
            elif m == 2:  # the common case: mean and M2 of two values without a pass over both
                mean = np.add(wb[0], wb[1])
                m2 = np.subtract(wb[0], wb[1])
                np.square(m2, out=m2)
                m2 *= 0.5
                mean *= 0.5
            else:
                mean = sum_t.copy() if same else wb.sum(axis=0)
                mean /= m
                wb -= mean[None]
                np.square(wb, out=wb)
                m2 = wb.sum(axis=0)
        out.append((grp[i0:i1], np.full(i1 - i0, m), sum_t, mean, m2))
    return out


def _group_stats_generic(lt: np.ndarray, lw: np.ndarray | None, grp: np.ndarray) -> list[tuple]:
    """Same as the piece path for any row order (used when empty libraries broke the layout)."""
    groups, codes = np.unique(grp, return_inverse=True)
    n = np.bincount(codes, minlength=len(groups))
    ind = sparse.csr_matrix((np.ones(len(grp)), (codes, np.arange(len(grp)))), shape=(len(groups), len(grp)))
    sum_t = np.asarray(ind @ lt)
    mean = m2 = None
    if lw is not None:
        mean = np.asarray(ind @ lw) / n[:, None]
        dev = lw - mean[codes]
        np.square(dev, out=dev)
        m2 = np.asarray(ind @ dev)
    return [(groups, n, sum_t, mean, m2)]


def _totals_and_put(stats: _Stats, split: np.ndarray, parts: list[tuple]) -> tuple[np.ndarray, np.ndarray, list]:
    """Shift the means, this share's per-gene totals (sum u, sum u^2), store the complete
    groups; returns the totals and the parts of split groups (merged by the caller, serially)."""
    g = stats.total_u.shape[0]
    tot_u, tot_uu = np.zeros(g), np.zeros(g)
    later = []
    for part in parts:
        grp, n, _, mean, m2 = part
        if mean is not None:
            mean -= stats.shift  # -> mean of u = L - shift
            if (n == n[0]).all():
                tot_u += mean.sum(axis=0) * float(n[0])
                sq = np.square(mean)
                sq *= float(n[0])
                sq += m2
                tot_uu += sq.sum(axis=0)
            else:
                nn = n[:, None].astype(np.float64)
                tot_u += (nn * mean).sum(axis=0)
                tot_uu += (m2 + nn * mean * mean).sum(axis=0)
        if split[grp].any():
            later.append(part)
        else:
            stats.put(*part)
    return tot_u, tot_uu, later


def _process_batch(stats: _Stats, work: _Work, plan: _Plan, batch, lib: np.ndarray,
                   counts: np.ndarray, lib_scored: np.ndarray, library: WeightsLibrary,
                   summary: LoadSummary, pool: concurrent.futures.Executor | None = None) -> None:
    """One batch: log-CPM, group statistics, per-gene totals, stores. With ``pool`` (2 threads)
    each block's groups are halved between the threads (numpy releases the GIL); the first
    batch runs alone since it fixes the shift."""
    lo, hi, blocks = batch
    grp = plan.group[lo:hi]
    valid = lib > 0
    summary.n_empty_library += int((~valid).sum())
    if library == "scored":
        empty_scored = valid & ~(lib_scored > 0)
        summary.n_empty_scored_library += int(empty_scored.sum())
        valid &= ~empty_scored
    intact = bool(valid.all())
    if not intact:
        counts, lib, lib_scored, grp = counts[valid], lib[valid], lib_scored[valid], grp[valid]
    b = len(grp)
    if b == 0:
        return
    lt, lw = work.views(b)
    stats.n_total += b
    if intact:
        pieces = [(r0, m, gs, 0, len(gs)) for r0, m, gs in blocks]
    else:
        _log_cpm(counts, lib, lt)
        if lw is not None and lw is not lt:
            _log_cpm(counts, lib_scored if library == "scored" else lib, lw)
        pieces = None
    if stats.shift is None or pool is None or not intact:
        parts = (_pieces_stats(counts, lib, lib_scored, lt, lw, pieces, library) if intact
                 else _group_stats_generic(lt, lw, grp))
        if lw is not None and stats.shift is None:  # a per-gene constant so the totals do not cancel
            stats.shift = sum((p[1][:, None] * p[3]).sum(axis=0) for p in parts) / b
        shares = [_totals_and_put(stats, plan.split, parts)]
    else:
        halves: list[list[_Piece]] = [[], []]
        for r0, m, gs, _, k in pieces:
            h = (k + 1) // 2
            halves[0].append((r0, m, gs, 0, h))
            if h < k:
                halves[1].append((r0, m, gs, h, k))

        def run(half: list[_Piece]) -> tuple:
            return _totals_and_put(stats, plan.split,
                                   _pieces_stats(counts, lib, lib_scored, lt, lw, half, library))

        shares = list(pool.map(run, halves))
    for tot_u, tot_uu, later in shares:
        if lw is not None:
            stats.total_u += tot_u
            stats.total_uu += tot_uu
        for part in later:
            stats.emit(plan.split, *part)


def _mejia_rows(mean_u: np.ndarray, var: np.ndarray, n_p: np.ndarray, mu: np.ndarray, ss_all: np.ndarray,
                v_all: np.ndarray, n_total: int) -> np.ndarray:
    """Mejia weights (c, G) float32 for c compounds from their (shifted) means and variances.

    The spec's arithmetic (as ``contest_scorer.weights.t_vs_rest`` + ``minmax_square_normalize``)
    rewritten around the global mean mu so it is well conditioned in float32 (10x faster than
    float64 temporaries at 14k x 13k): with d = mean_p - mu and N = n_p + n_r,
        mean_p - mean_r = N d / n_r
        var_r = (SS_all - (n_p - 1) var_p - n_p N d^2 / n_r) / (n_r - 1),  SS_all = (N - 1) V_g
    """
    f32 = np.float32
    n = n_p.astype(np.float64)[:, None]
    n_r = n_total - n
    x = np.subtract(mean_u, mu, dtype=np.float64).astype(f32)
    vr = np.square(x)
    vr *= (n * n_total / n_r).astype(f32)
    vp = np.array(var, dtype=f32, copy=True)
    single = n_p < 2
    vp[single] = 0.0
    vr += vp * (n - 1.0).astype(f32)
    np.subtract(ss_all.astype(f32), vr, out=vr)
    vr *= (1.0 / np.maximum(n_r - 1.0, 1.0)).astype(f32)
    v_g = v_all.astype(f32)
    np.maximum(vr, v_g, out=vr)
    np.maximum(vp, v_g, out=vp)
    vp[single] = v_g
    vp *= (1.0 / n).astype(f32)
    vr *= (1.0 / n_r).astype(f32)
    vr += vp
    np.sqrt(vr, out=vr)
    np.maximum(vr, f32(1e-12), out=vr)
    x *= (n_total / n_r).astype(f32)
    np.divide(x, vr, out=x)
    np.abs(x, out=x)
    lo = x.min(axis=1, keepdims=True)
    span = x.max(axis=1, keepdims=True) - lo
    x -= lo
    x *= 1.0 / np.where(span > 0, span, 1.0)
    np.square(x, out=x)
    total = x.sum(axis=1, keepdims=True, dtype=np.float64)
    x *= (1.0 / np.where(total > 0, total, 1.0)).astype(f32)
    flat = (span[:, 0] <= 0) | (total[:, 0] <= 0)
    x[flat] = 1.0 / x.shape[1]
    return x


def _finish_weights(stats: _Stats, chunk: int = 512, progress: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Mejia weights in compound chunks, written in place over the shifted means (C, G);
    returned as (G, C) views."""
    n_all = stats.n
    n = stats.n_total
    mu = stats.total_u / n
    ss_all = np.maximum(stats.total_uu - stats.total_u * mu, 0.0)   # sum of squared deviations
    v_all = ss_all / (n - 1.0) if n > 1 else np.zeros_like(ss_all)
    args = (mu, ss_all, v_all, n)
    c = stats.n_lib
    w = stats.mean_u

    def rows(s: int) -> None:  # chunks write disjoint rows: two threads (numpy releases the GIL)
        sl = slice(s, min(s + chunk, c))
        w[sl] = _mejia_rows(w[sl], stats.var[sl], n_all[sl], *args)

    starts = range(0, c, chunk)
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        for _ in tqdm(pool.map(rows, starts), total=len(starts), desc="Mejia weights", unit="chunk",
                      disable=None if progress is None else not progress):
            pass
    del stats.var
    ctrl = _mejia_rows(stats.ctrl_mean_u, stats.ctrl_var, n_all[c:], *args)
    return w.T, np.ascontiguousarray(ctrl.T)


# ============================================================================ the load
def _classify(meta: pd.DataFrame, summary: LoadSummary) -> pd.Series:
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
                f"DMSO or a known positive control ({_show(ids)}); they are treated as library compounds"
            )
    return ctrl


def _structures(meta: pd.DataFrame, compounds: np.ndarray, chem: pd.DataFrame,
                summary: LoadSummary, chem_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """SMILES/InChIKey per library compound, through the metadata's compound UUID."""
    dup = chem["compound"].duplicated(keep=False)
    if dup.any():
        clash = chem[dup].groupby("compound")["smiles"].nunique()
        clash = clash[clash > 1]
        if len(clash):
            summary.warn(f"chemistry file {chem_path}: {len(clash)} compound UUID(s) have conflicting SMILES "
                         f"({_show(clash.index)}); the first row is used")
    chem = chem.drop_duplicates("compound").set_index("compound")
    pairs = meta[[vcpi.COMPOUND_KEY_COL, vcpi.COMPOUND_UUID_COL]].drop_duplicates()
    pairs = pairs.join(chem, on=vcpi.COMPOUND_UUID_COL)
    pairs["smiles"] = pairs["smiles"].fillna("")
    pairs["inchikey"] = pairs["inchikey"].fillna("")
    pairs["has"] = pairs["smiles"] != ""
    pairs = pairs.sort_values([vcpi.COMPOUND_KEY_COL, "has"], ascending=[True, False], kind="stable")
    n_uuid = pairs.groupby(vcpi.COMPOUND_KEY_COL)[vcpi.COMPOUND_UUID_COL].nunique()
    multi = n_uuid[n_uuid > 1]
    if len(multi):
        summary.n_ambiguous_structure = len(multi)
        summary.warn(f"{len(multi)} compound id(s) map to several compound UUIDs ({_show(multi.index)}); "
                     "the first with a SMILES is used")
    first = pairs.drop_duplicates(vcpi.COMPOUND_KEY_COL).set_index(vcpi.COMPOUND_KEY_COL)
    first = first.reindex(compounds)
    smiles = first["smiles"].fillna("").to_numpy(dtype=object)
    inchikey = first["inchikey"].fillna("").to_numpy(dtype=object)
    missing = compounds[smiles == ""]
    if len(missing):
        summary.n_missing_smiles = len(missing)
        summary.warn(f"{len(missing)} compound(s) have no SMILES in {chem_path} ({_show(missing)}); they are kept "
                     "with an empty SMILES (predictors count them as unparsed)")
    return smiles, inchikey


def load_vcpi(
    counts: str | os.PathLike[str],
    metadata: str | os.PathLike[str],
    chemistry: str | os.PathLike[str],
    gene_filter: str | os.PathLike[str],
    *,
    options: LoadOptions | None = None,
    progress: bool | None = None,
    scratch_dir: str | os.PathLike[str] | None = None,
) -> tuple[ExpressionSet, LoadSummary]:
    """Stream the VCPI files into an :class:`ExpressionSet` (target, replicate counts, controls,
    Mejia weights for every compound and control) plus a :class:`LoadSummary`.

    ``scratch_dir``: keep the target in a file mapping there during the pass (saves its 730 MB
    from the peak at full scale; the ExpressionSet then holds a memory map)."""
    with _no_numpy_hugepages(), _system_arrow_pool():
        return _load_vcpi(counts, metadata, chemistry, gene_filter, options=options, progress=progress,
                          scratch_dir=scratch_dir)


@contextlib.contextmanager
def _system_arrow_pool() -> Any:
    """Decode with Arrow's system-allocator pool for the load, restored after.

    Each batch decodes ~80 MB of columns and frees them; Arrow's default mimalloc pool hands that
    memory back to the kernel and faults it in again every batch. Measured at full scale (78,778
    genes x 32,601 samples, 2 cores): 55.6 s wall (53 s user + 31 s system) with mimalloc against
    32.4 s (44 s user + 9 s system) with the system pool, peak RSS unchanged (2.4 GB).
    """
    before = pa.default_memory_pool()
    pa.set_memory_pool(pa.system_memory_pool())
    try:
        yield
    finally:
        pa.set_memory_pool(before)


@contextlib.contextmanager
def _no_numpy_hugepages() -> Any:
    """Turn off numpy's madvise(MADV_HUGEPAGE) of arrays >= 4 MB for the load, restored after.
    Every batch makes a few 10-30 MB temporaries; as transparent huge pages each first touch
    zeroes (and may compact memory for) whole 2 MB pages: measured 40 % less system time and
    ~20 % less wall time for the load without them (private numpy switch; a no-op if absent)."""
    core = getattr(np, "_core", None) or getattr(np, "core", None)
    switch = getattr(getattr(core, "multiarray", None), "_set_madvise_hugepage", None)
    if switch is None:
        yield
        return
    before = switch(False)
    try:
        yield
    finally:
        switch(before)


def _load_vcpi(counts, metadata, chemistry, gene_filter, *, options, progress, scratch_dir):
    """:func:`load_vcpi` itself."""
    t0 = time.perf_counter()
    opt = options or LoadOptions()
    if opt.weights_library not in ("scored", "all"):
        raise DrugcellInputError(f"weights library must be 'scored' or 'all', got {opt.weights_library!r}")
    if opt.batch_size < 1:
        raise DrugcellInputError(f"batch size must be >= 1, got {opt.batch_size}")
    paths = {k: Path(v) for k, v in dict(counts=counts, metadata=metadata, chemistry=chemistry,
                                          gene_filter=gene_filter).items()}
    summary = LoadSummary()

    meta = read_metadata(paths["metadata"])
    chem = read_chemistry(paths["chemistry"])
    genes = read_gene_filter(paths["gene_filter"])
    src = open_counts(paths["counts"])
    summary.counts_layout = src.layout
    summary.n_samples_counts = len(src.samples)
    summary.n_samples_metadata = len(meta)
    summary.n_genes_counts = len(src.genes)

    # genes: unique in the counts; every scored gene present
    gidx = pd.Index(src.genes)
    if gidx.has_duplicates:
        raise DrugcellInputError(f"counts file {src.path}: duplicate gene_id row(s) {_show(gidx[gidx.duplicated()].unique())}; "
                                 "each gene must appear once")
    rows = gidx.get_indexer(genes)
    if (rows < 0).any():
        raise DrugcellInputError(
            f"gene filter {paths['gene_filter']} names {int((rows < 0).sum())} gene(s) absent from counts file "
            f"{src.path}: {_show(genes[rows < 0])}; use the gene filter that belongs to these counts"
        )
    src.bind(rows.astype(np.int64))
    summary.n_genes = len(genes)

    # samples: counts <-> metadata, then the contest condition
    in_meta = pd.Index(meta[vcpi.SAMPLE_COL])
    counts_ids = pd.Index(src.samples)
    only_counts = counts_ids.difference(in_meta)
    if len(only_counts):
        raise DrugcellInputError(
            f"counts file {src.path} has {len(only_counts)} sample(s) absent from metadata file "
            f"{paths['metadata']} ({vcpi.SAMPLE_COL}): {_show(list(only_counts))}; pass the metadata of these counts"
        )
    ctrl = _classify(meta, summary)
    is_dmso = ctrl == vcpi.DMSO
    reasons = opt.condition.reasons(meta, is_dmso)
    keep = np.ones(len(meta), dtype=bool)
    for r in reasons.values():
        keep &= ~r
    summary.dropped_condition = {k: int(v.sum()) for k, v in reasons.items()}
    summary.n_out_of_condition = int((~keep).sum())
    has_counts = in_meta.isin(counts_ids)
    missing = keep & ~has_counts
    if missing.any():
        ids = meta.loc[missing, vcpi.SAMPLE_COL]
        raise DrugcellInputError(
            f"metadata file {paths['metadata']} lists {int(missing.sum())} contest-condition sample(s) with no column "
            f"in counts file {src.path}: {_show(list(ids))}; pass the counts that hold them"
        )
    summary.n_metadata_only_out_of_condition = int((~keep & ~has_counts).sum())
    kept = meta.loc[keep].reset_index(drop=True)
    kctrl = ctrl[keep].reset_index(drop=True)
    if len(kept) == 0:
        raise DrugcellInputError(
            f"no sample of {paths['metadata']} is in the contest condition {opt.condition.as_dict()}; "
            "check --concentration-nm/--cell-line/--timepoint"
        )

    # groups: library compounds (sorted ids) then controls (canonical order)
    lib_mask = kctrl.isna().to_numpy()
    compounds = np.sort(kept.loc[lib_mask, vcpi.COMPOUND_KEY_COL].unique().astype(str)).astype(object)
    present_ctrl = [c for c in vcpi.CONTROL_IDS if (kctrl == c).any()]
    if vcpi.DMSO not in present_ctrl:
        raise DrugcellInputError(
            f"metadata file {paths['metadata']}: no DMSO well ({vcpi.COMPOUND_KEY_COL} == 'DMSO') in the contest "
            "condition; the control profile needs vehicle wells"
        )
    n_lib, n_ctrl = len(compounds), len(present_ctrl)
    group = np.empty(len(kept), dtype=np.int64)
    group[lib_mask] = np.searchsorted(compounds.astype(str), kept.loc[lib_mask, vcpi.COMPOUND_KEY_COL].to_numpy().astype(str))
    cpos = {c: n_lib + i for i, c in enumerate(present_ctrl)}
    group[~lib_mask] = kctrl[~lib_mask].map(cpos).to_numpy()
    plan = _plan(kept[vcpi.SAMPLE_COL].to_numpy(), group, n_lib + n_ctrl, opt.batch_size)
    summary.n_batches = len(plan.batches)

    compute_w = opt.weights_path is None
    stats = _Stats(n_lib, n_ctrl, len(genes), weights=compute_w,
                   scratch_dir=None if scratch_dir is None else Path(scratch_dir))
    largest = max(b[1] - b[0] for b in plan.batches)
    work = _Work(largest, len(genes), weights=compute_w, library=opt.weights_library)
    bar = tqdm(total=len(plan.names), desc="load counts", unit="sample",
               disable=None if progress is None else not progress)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as reader, \
            concurrent.futures.ThreadPoolExecutor(max_workers=1) as decoder, \
            concurrent.futures.ThreadPoolExecutor(max_workers=2) as halves:
        # three stages at once (pyarrow and numpy release the GIL): the parquet read of batch i+2
        # (on pyarrow's threads), the Arrow decode of batch i+1, the compute of batch i (itself on
        # two threads, ``halves``)
        ahead: collections.deque = collections.deque()
        nxt = 0
        for i, batch in enumerate(plan.batches):
            while nxt < len(plan.batches) and len(ahead) < _READ_AHEAD:
                nlo, nhi, _ = plan.batches[nxt]
                fetched = reader.submit(src.fetch, plan.names[nlo:nhi])
                ahead.append(decoder.submit(lambda f=fetched: src.decode(f.result())))
                nxt += 1
            lib, sub, lib_s = ahead.popleft().result()
            _process_batch(stats, work, plan, batch, lib, sub, lib_s, opt.weights_library, summary,
                           pool=halves)
            if i % 8 == 7:
                stats.release()
            bar.update(batch[1] - batch[0])
    bar.close()
    del work
    stats.finish_split()
    stats.release()
    if summary.n_empty_library:
        summary.warn(f"dropped {summary.n_empty_library} sample(s) with an empty library (no counts on any gene)")
    if summary.n_empty_scored_library:
        summary.warn(f"dropped {summary.n_empty_scored_library} sample(s) with no counts on the scored genes "
                     "(their weights library would be empty)")
    summary.n_samples_used = stats.n_total

    n_rep = stats.n[:n_lib]
    gone = n_rep == 0
    if stats.n[n_lib:].min() == 0:
        lost = [c for c, k in zip(present_ctrl, stats.n[n_lib:]) if k == 0]
        raise DrugcellInputError(f"control(s) {lost} have only empty-library wells in {src.path}")
    summary.n_single_replicate = int((n_rep == 1).sum())
    if summary.n_single_replicate:
        summary.warn(f"{summary.n_single_replicate} compound(s) have a single replicate; their variance is the "
                     "gene-wide V_g")

    if compute_w:
        weights, ctrl_w = _finish_weights(stats, progress=progress)
        summary.weights_source = f"computed (Mejia, library over {opt.weights_library} genes)"
    else:
        weights = np.zeros((len(genes), n_lib), dtype=np.float32)  # replaced below; untouched pages
        ctrl_w = np.zeros((len(genes), n_ctrl), dtype=np.float32)
    expr = stats.expr
    if gone.any():  # a compound whose every well was empty: compact (rare; costs a copy)
        summary.n_compounds_dropped_empty = int(gone.sum())
        summary.warn(f"{int(gone.sum())} compound(s) lost every well to empty libraries and are dropped: "
                     f"{_show(compounds[gone])}")
        expr, weights, compounds, n_rep = expr[~gone], weights[:, ~gone], compounds[~gone], n_rep[~gone]
    smiles, inchikey = _structures(kept[lib_mask], compounds, chem, summary, paths["chemistry"])
    summary.n_compounds = len(compounds)
    summary.controls = {c: int(k) for c, k in zip(present_ctrl, stats.n[n_lib:])}
    ctrl_expr = stats.ctrl_expr.astype(np.float32)
    info = {
        "source": "vcpi",
        "loader": {"version": __version__, "options": opt.as_dict(), "argv": list(sys.argv)},
        "inputs": {k: fingerprint_input(p) for k, p in paths.items()},
    }
    es = ExpressionSet(
        compounds=compounds, genes=genes, expression=expr, weights=weights, n_replicates=n_rep,
        control=ctrl_expr[0], smiles=smiles, inchikey=inchikey, control_ids=np.array(present_ctrl, dtype=object),
        control_expression=ctrl_expr, control_weights=ctrl_w, info=info,
    )
    if not compute_w:
        es = _official_weights(es, Path(opt.weights_path), summary)
        es.info["inputs"]["weights"] = fingerprint_input(opt.weights_path)
    summary.seconds = time.perf_counter() - t0
    es.info["load_summary"] = summary.as_dict()
    return es, summary


def _official_weights(es: ExpressionSet, path: Path, summary: LoadSummary) -> ExpressionSet:
    """Library weights via ``ExpressionSet.with_weights_parquet``; control columns matched by
    normalised spelling (a control absent from the file gets uniform weights, with a warning)."""
    es = es.with_weights_parquet(path)
    names = pq.read_schema(path).names
    by_ctrl: dict[str, str] = {}
    for n in names:
        cid = vcpi.control_id(n)
        if cid is not None and cid not in by_ctrl:
            by_ctrl[cid] = n
    genes_in_file = pq.read_table(path, columns=[vcpi.GENE_COL]).column(0).to_pandas().astype(str)
    rows = pd.Index(genes_in_file).get_indexer(es.genes.astype(str))
    cw = np.full((es.n_genes, len(es.control_ids)), 1.0 / es.n_genes, dtype=np.float32)
    absent = []
    for j, c in enumerate(es.control_ids):
        if c in by_ctrl:
            cw[:, j] = pq.read_table(path, columns=[by_ctrl[c]]).column(0).to_numpy().astype(np.float32)[rows]
        else:
            absent.append(c)
    if absent:
        summary.warn(f"weights file {path} has no column for control(s) {absent}; they get uniform weights")
    es.control_weights = cw
    summary.weights_source = f"official file {path}"
    return es


def _release_map(arr: Any) -> None:
    """madvise(DONTNEED) the file mapping behind ``arr`` (or behind a view of it); else nothing."""
    while arr is not None and not isinstance(arr, mmap.mmap):
        mm = getattr(arr, "_mmap", None)
        if mm is not None:
            if hasattr(mmap, "MADV_DONTNEED"):
                mm.madvise(mmap.MADV_DONTNEED)
            return
        arr = getattr(arr, "base", None)


def load_to_cache(
    out: str | os.PathLike[str],
    counts: str | os.PathLike[str],
    metadata: str | os.PathLike[str],
    chemistry: str | os.PathLike[str],
    gene_filter: str | os.PathLike[str],
    *,
    options: LoadOptions | None = None,
    overwrite: bool = False,
    progress: bool | None = None,
) -> LoadSummary:
    """:func:`load_vcpi` then write the cache dir atomically (temp dir, then rename)."""
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise DrugcellInputError(f"output directory {out} exists and is not empty; pass --overwrite to replace it")
    if out.exists() and any(out.iterdir()) and not (out / "manifest.json").exists():
        raise DrugcellInputError(f"output directory {out} is not an ExpressionSet cache; refusing to replace it")
    out.resolve().parent.mkdir(parents=True, exist_ok=True)
    es, summary = load_vcpi(counts, metadata, chemistry, gene_filter, options=options, progress=progress,
                            scratch_dir=out.resolve().parent)
    t = time.perf_counter()
    if out.exists() and not any(out.iterdir()):
        out.rmdir()
    # the digest ExpressionSet.save would compute, without its whole-array copies (3 GiB budget)
    es.info["fingerprint"] = fingerprint_arrays(
        es.compounds, es.genes, es.expression, es.weights, es.smiles, release=lambda: _release_map(es.expression))
    _release_map(es.expression)
    es.save(out)
    summary.seconds += time.perf_counter() - t
    return summary
