"""Counts tables opened for batch reads of samples: the wide parquet of the contest and a long
``(sample, gene_id, count)`` table.

Why a class per layout: the streaming pass asks only for ``genes``, ``samples`` and batches of
(library, scored counts, scored library), so the layout and its value checks (whole, finite,
non-negative counts, each refusal naming the sample) stay out of the arithmetic.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from drugcell.data import vcpi
from drugcell.data.readers import MAX_SHOW, as_id, show_ids
from drugcell.errors import DrugcellInputError

_READ_BUFFER = 1 << 18  # parquet read buffer (bytes)
_PANDAS_INDEX = "__index_level_0__"  # the column pandas writes for a named or non-range index


class _Counts:
    """A counts table opened for batch reads: ``genes``, ``samples`` and ``read(names)``."""

    layout: str
    path: Path
    genes: np.ndarray
    samples: list[str]
    #: whether a sample without data is an all-zero sample (a sparse long table) or absent (wide)
    absent_means_zero = False

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
                                     f"{vcpi.GENE_COL} + one column per sample)")
        self.samples = [n for n in names if n != vcpi.GENE_COL and n != _PANDAS_INDEX]
        seen = pd.Index(self.samples)
        if seen.has_duplicates:
            raise DrugcellInputError(f"counts file {path}: duplicate sample column(s) {show_ids(seen[seen.duplicated()].unique())}")
        bad = [n for n in self.samples if not (pa.types.is_integer(schema.field(n).type)
                                               or pa.types.is_floating(schema.field(n).type))]
        if bad:
            raise DrugcellInputError(
                f"counts file {path}: sample column(s) {show_ids(bad)} are not numeric "
                f"(type {schema.field(bad[0]).type}); counts must be integers"
            )
        genes = self.pf.read(columns=[vcpi.GENE_COL]).column(0)
        if genes.null_count:
            raise DrugcellInputError(f"counts file {path}: {genes.null_count} row(s) have no {vcpi.GENE_COL}")
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
    grouped by sample once so each batch is a few slices. Sparse: a missing (sample, gene) pair
    is a zero count, and a sample with no row at all an all-zero one (:meth:`add_empty`)."""

    absent_means_zero = True

    def __init__(self, path: Path, table: pa.Table, sample_col: str) -> None:
        self.path = path
        self.layout = "long " + ("csv" if path.suffix.lower() == ".csv" else "parquet")
        df = pd.DataFrame({
            "sample": as_id(table.column(sample_col).to_pandas()),
            "gene": table.column(vcpi.GENE_COL).to_pandas().astype(str),
        })
        cnt = table.column(vcpi.LONG_COUNT_COL)
        if not (pa.types.is_integer(cnt.type) or pa.types.is_floating(cnt.type)):
            raise DrugcellInputError(f"counts file {path}: column {vcpi.LONG_COUNT_COL!r} has type {cnt.type}; "
                                     "counts must be integers")
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
            pairs = df[dup].drop_duplicates().head(MAX_SHOW).itertuples(index=False)
            raise DrugcellInputError(f"counts file {path}: duplicate (sample, {vcpi.GENE_COL}) row(s) "
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

    def add_empty(self, samples: list[str]) -> None:
        """Samples with no row: all-zero counts (an empty library, which the pass drops)."""
        for name in samples:
            if name not in self._start:
                self._start[name] = (0, 0)
                self.samples.append(name)

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
                f"counts file {path}: a CSV counts table must be long with columns {vcpi.LONG_SAMPLE_COLS[0]} (or {vcpi.LONG_SAMPLE_COLS[1]}), "
                f"{vcpi.GENE_COL}, {vcpi.LONG_COUNT_COL}; it has {show_ids(table.column_names)}. Write wide counts as parquet."
            )
        return _LongTable(path, table, sample_col)
    try:
        pf = _open_parquet(path)
        schema = pf.schema_arrow
    except (pa.ArrowException, OSError) as exc:
        raise DrugcellInputError(f"cannot read counts file {path} as parquet: {exc}") from exc
    names = set(schema.names)
    sample_col = next((c for c in vcpi.LONG_SAMPLE_COLS if c in names), None)
    if sample_col is not None and long_cols <= names and len(names - {_PANDAS_INDEX}) == 3:
        return _LongTable(path, pf.read(), sample_col)
    return _WideParquet(path, pf)


def _open_parquet(path: Path) -> pq.ParquetFile:
    """Buffered reads (~30 % less CPU than unbuffered reads of many small column chunks), no
    memory map (its pages would count toward the peak RSS)."""
    return pq.ParquetFile(path, memory_map=False, pre_buffer=False, buffer_size=_READ_BUFFER)
