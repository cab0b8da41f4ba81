"""ExpressionSet: the per-compound training truth every model and evaluation step takes.

A cache directory of plain ``.npy`` arrays and small parquet tables, so it loads in seconds
(memory-mapped on request) and needs no pickle. Layout and fields: docs/architecture.md.

The cache is versioned (``format`` and ``format_version`` in ``manifest.json``) so that a cache
written by another drugcell is read correctly or refused with a message, never misread.
Version 1 is the layout written before the version fields existed (the same files; read as is);
version 2 adds the fields; version 3 adds the optional ``plates.npz`` (the plate layout and the
per-plate DMSO profile, :mod:`drugcell.data.plates`), absent from sets that have no plates;
version 4 adds the sha256 of every file (:mod:`drugcell.data.cache_format`), verified on load;
version 5 records the value scale (``log2cpm`` or ``signed``: whether predictions are clipped at 0),
and is written only for a scale other than log2cpm (see :mod:`drugcell.data.cache_format`).
Compound metadata (``compound_meta``: names, targets, ...) are extra columns of compounds.parquet.
On every load the data fingerprint is recomputed from the arrays and must equal the one the
manifest records: a cache edited after it was written is refused, never reported under the
fingerprint of the data it used to hold.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from drugcell.data.cache_format import (
    ARRAYS,
    COMPOUNDS,
    CONTROLS,
    FORMAT,
    FORMAT_VERSION,
    GENES,
    KIND,
    MANIFEST,
    REBUILD,
    check_replaceable,
    file_checksums,
    manifest_scale,
    read_file,
    read_manifest,
    verify_checksums,
    version_for,
)
from drugcell.data.memory import _release_map
from drugcell.data.plates import PlateLayout
from drugcell.data.set_checks import (
    check_compound_meta,
    check_ids,
    check_values,
    check_weights,
    str_array,
    whole_counts,
)
from drugcell.defaults import COMPOUND_COL, EXPRESSION_COL, GENE_COL, LOG2CPM, SMILES_COL, VALUE_SCALES
from drugcell.errors import DrugcellInputError
from drugcell.outputs import check_file_output
from drugcell.provenance import atomic_dir, atomic_path, fingerprint_arrays, provenance, strict_json

__all__ = ["FORMAT", "FORMAT_VERSION", "MANIFEST", "ExpressionSet", "check_replaceable", "weights_file"]

_INCHIKEY_COL, _N_REPLICATES_COL = "inchi_key", "n_replicates"  # compounds.parquet's own columns
_OWN_COLS = (COMPOUND_COL, SMILES_COL, _INCHIKEY_COL, _N_REPLICATES_COL)
#: names compound metadata columns may not take (the cache's own columns and AnnData's obs columns)
META_RESERVED = (*_OWN_COLS, "inchikey")
_PANDAS_INDEX = "__index_level_0__"
#: info keys that describe one loaded copy, not the data (left out when the set is saved again)
_LOAD_ONLY_INFO = ("cache_format_version", "fingerprint")
_WEIGHTS_FIX = ("pass the official weights.parquet: genes x compounds, each compound's column summing to 1 "
                "over the scored genes")


@dataclass
class ExpressionSet:
    """Per-compound mean log2(CPM+1) on the scored genes (or, with ``value_scale = "signed"``,
    z-scores / log fold changes), with Mejia weights and controls."""

    compounds: np.ndarray
    genes: np.ndarray
    expression: np.ndarray
    weights: np.ndarray
    n_replicates: np.ndarray
    control: np.ndarray
    smiles: np.ndarray
    inchikey: np.ndarray
    control_ids: np.ndarray = field(default_factory=lambda: np.array([], dtype=object))
    control_expression: np.ndarray | None = None
    control_weights: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)
    plates: PlateLayout | None = None   # plate layout and per-plate DMSO profile (VCPI-layout data)
    value_scale: str = LOG2CPM          # log2cpm (clipped at 0 when predicted) or signed (not clipped)
    compound_meta: pd.DataFrame | None = field(default=None, compare=False)  # per-compound columns (names, ...)
    values_checked: bool = field(default=False, repr=False, compare=False)  # a subset of a checked set

    def __post_init__(self) -> None:
        self.compounds = str_array(self.compounds)
        self.genes = str_array(self.genes)
        self.smiles = str_array(self.smiles)
        self.inchikey = str_array(self.inchikey)
        self.control_ids = str_array(self.control_ids)
        for ids, what in ((self.compounds, "compound"), (self.genes, "gene"), (self.control_ids, "control")):
            check_ids(ids, what)
        both = sorted(set(self.compounds.tolist()) & set(self.control_ids.tolist()))
        if both:
            raise DrugcellInputError(f"ExpressionSet: id(s) {both[:5]} are both a compound and a control; "
                                     "each id names one column of the weights")
        self.expression = np.asarray(self.expression, dtype=np.float32)
        self.weights = np.asarray(self.weights, dtype=np.float32)
        self.control = np.asarray(self.control, dtype=np.float32)
        self.n_replicates = whole_counts(self.n_replicates, self.compounds)
        c, g = len(self.compounds), len(self.genes)
        k = len(self.control_ids)
        if self.control_expression is None:
            self.control_expression = np.zeros((k, g), dtype=np.float32)
        if self.control_weights is None:
            self.control_weights = np.zeros((g, k), dtype=np.float32)
        self.control_expression = np.asarray(self.control_expression, dtype=np.float32)
        self.control_weights = np.asarray(self.control_weights, dtype=np.float32)
        expected = {
            "expression": (self.expression.shape, (c, g)),
            "weights": (self.weights.shape, (g, c)),
            "control": (self.control.shape, (g,)),
            "n_replicates": (self.n_replicates.shape, (c,)),
            "smiles": (self.smiles.shape, (c,)),
            "inchikey": (self.inchikey.shape, (c,)),
            "control_expression": (self.control_expression.shape, (k, g)),
            "control_weights": (self.control_weights.shape, (g, k)),
        }
        for name, (got, want) in expected.items():
            if got != want:
                raise DrugcellInputError(f"ExpressionSet.{name} has shape {got}, expected {want}")
        if self.plates is not None:
            self.plates.check(c, g)
        if self.value_scale not in VALUE_SCALES:
            raise DrugcellInputError(f"ExpressionSet.value_scale {self.value_scale!r} is not one of "
                                     f"{', '.join(VALUE_SCALES)} (log2cpm: log2(CPM+1); signed: z-scores, log fold changes)")
        self.compound_meta = check_compound_meta(self.compound_meta, c, META_RESERVED)
        if not self.values_checked:
            check_values(self)
            self.values_checked = True

    # ------------------------------------------------------------------ shape and slicing
    @property
    def n_compounds(self) -> int:
        return len(self.compounds)

    @property
    def n_genes(self) -> int:
        return len(self.genes)

    def subset(self, idx: np.ndarray | list[int] | slice) -> ExpressionSet:
        """Compound rows ``idx`` (indices or boolean mask) with their weight columns; genes unchanged."""
        idx = np.arange(self.n_compounds)[idx]
        return replace(
            self,
            compounds=self.compounds[idx],
            expression=self.expression[idx],
            weights=self.weights[:, idx],
            n_replicates=self.n_replicates[idx],
            smiles=self.smiles[idx],
            inchikey=self.inchikey[idx],
            info={k: v for k, v in self.info.items() if k != "fingerprint"},  # other rows, other data
            plates=None if self.plates is None else self.plates.subset(idx),
            compound_meta=None if self.compound_meta is None else self.compound_meta.iloc[idx],
            values_checked=self.values_checked,
        )

    def index_of(self, compounds: list[str] | np.ndarray) -> np.ndarray:
        """Row indices of compound ids; a clear error names the ones that are absent."""
        pos = {c: i for i, c in enumerate(self.compounds.tolist())}
        missing = [str(c) for c in compounds if str(c) not in pos]
        if missing:
            raise DrugcellInputError(f"{len(missing)} compound(s) not in the ExpressionSet: {missing[:5]}")
        return np.array([pos[str(c)] for c in compounds], dtype=np.int64)

    # ------------------------------------------------------------------ identity
    def fingerprint(self) -> str:
        """A short hash of the ids and arrays: the data fingerprint every result carries (computed
        once per set; a loaded cache's is recomputed from its arrays, never copied)."""
        if "fingerprint" not in self.info:
            self.info["fingerprint"] = self._hash()
        return self.info["fingerprint"]

    def _hash(self) -> str:
        """The fingerprint computed from the arrays now (file-mapped pages handed back as it goes); a
        scale other than log2cpm is part of it (the same values are predicted differently)."""
        def release() -> None:
            _release_map(self.expression)
            _release_map(self.weights)
        scale = () if self.value_scale == LOG2CPM else (np.array([f"value_scale={self.value_scale}"], dtype=object),)
        return fingerprint_arrays(self.compounds, self.genes, self.expression, self.weights, self.smiles, *scale,
                                  release=release)

    def truth_long(self) -> pd.DataFrame:
        """Long ``compound, gene_id, expression`` table (the official truth layout)."""
        return pd.DataFrame(
            {
                COMPOUND_COL: np.repeat(self.compounds.astype(str), self.n_genes),
                GENE_COL: np.tile(self.genes.astype(str), self.n_compounds),
                EXPRESSION_COL: self.expression.ravel(),
            }
        )

    # ------------------------------------------------------------------ AnnData
    def to_anndata(self):
        """The set as an ``anndata.AnnData`` (compounds x genes; weights in ``layers["mejia_weights"]``,
        controls in ``varm``, provenance and the value scale in ``uns["drugcell"]``; layout:
        :mod:`drugcell.data.anndata_io`). ``from_anndata`` reads it back unchanged, also via .h5ad."""
        from drugcell.data.anndata_io import to_anndata

        return to_anndata(self)

    @classmethod
    def from_anndata(cls, adata) -> ExpressionSet:
        """The set an AnnData from :meth:`to_anndata` holds (perhaps subset since: its fingerprint is
        recomputed). An AnnData of your own goes through :func:`drugcell.data.anndata_load.load_anndata`."""
        from drugcell.data.anndata_io import from_anndata

        return from_anndata(cls, adata)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write the cache dir atomically (build in a temp dir, then rename into place). An existing
        cache is replaced only with ``overwrite``; anything else at ``path`` never is. The manifest
        records the fingerprint of the arrays written (computed afresh) and every file's sha256."""
        final = Path(path)
        check_replaceable(final, overwrite)
        self.info["fingerprint"] = fingerprint = self._hash()
        with atomic_dir(final) as tmp:
            for name in ARRAYS:
                np.save(tmp / f"{name}.npy", getattr(self, name))
            comp = pd.DataFrame(
                {
                    COMPOUND_COL: self.compounds.astype(str),
                    SMILES_COL: self.smiles.astype(str),
                    _INCHIKEY_COL: self.inchikey.astype(str),
                    _N_REPLICATES_COL: self.n_replicates,
                }
            )
            if self.compound_meta is not None:
                comp = pd.concat([comp, self.compound_meta.reset_index(drop=True)], axis=1)
            comp.to_parquet(tmp / COMPOUNDS, index=False)
            pd.DataFrame({GENE_COL: self.genes.astype(str)}).to_parquet(tmp / GENES, index=False)
            pd.DataFrame({COMPOUND_COL: self.control_ids.astype(str)}).to_parquet(tmp / CONTROLS, index=False)
            if self.plates is not None:
                self.plates.save(tmp)
            manifest = {
                "format": FORMAT,
                "format_version": version_for(self.value_scale),
                "kind": KIND,
                "value_scale": self.value_scale,
                "n_compounds": self.n_compounds,
                "n_genes": self.n_genes,
                "n_controls": len(self.control_ids),
                "data_fingerprint": fingerprint,
                "checksums": file_checksums(tmp),
                "info": {k: v for k, v in self.info.items() if k not in _LOAD_ONLY_INFO},
                "provenance": provenance(data_fingerprint=fingerprint),
            }
            (tmp / MANIFEST).write_text(strict_json(manifest, indent=2) + "\n")
        return final

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, mmap: bool = False) -> ExpressionSet:
        """Read a cache dir written by :meth:`save`, any format version up to :data:`FORMAT_VERSION`
        (``mmap=True`` maps the big arrays lazily); ``info["cache_format_version"]`` says which.

        Checked on every load, mapped or not: the files' sha256 (version 4), the values (NaN/inf,
        weights the metric cannot use, replicate counts; named by file and compound) and the data
        fingerprint, recomputed from the arrays and compared with the manifest's. At full scale
        (14,026 x 13,078 float32 truth and weights) this adds ~3 s of CPU to the ~3 s read (measured:
        checksums 1.0 s, fingerprint 0.85 s, value checks 1.1 s, mostly the scorer's weight rule)."""
        root = Path(path)
        manifest, version = read_manifest(root)
        verify_checksums(root, manifest, version)
        for name in (*(f"{a}.npy" for a in ARRAYS), COMPOUNDS, GENES, CONTROLS):
            if not (root / name).is_file():
                raise DrugcellInputError(f"ExpressionSet cache {root} is incomplete: {root / name} is missing; {REBUILD}")
        mode = "r" if mmap else None
        arrays = {name: read_file(root / f"{name}.npy", lambda p: np.load(p, mmap_mode=mode, allow_pickle=False))
                  for name in ARRAYS}
        comp = read_file(root / COMPOUNDS, pd.read_parquet, _OWN_COLS)
        meta_cols = [c for c in comp.columns if c not in _OWN_COLS]
        genes = read_file(root / GENES, pd.read_parquet, (GENE_COL,))[GENE_COL].to_numpy()
        controls = read_file(root / CONTROLS, pd.read_parquet, (COMPOUND_COL,))[COMPOUND_COL].to_numpy()
        info = {k: v for k, v in dict(manifest.get("info", {})).items() if k not in _LOAD_ONLY_INFO}
        info["path"] = str(root.resolve())
        info["cache_format_version"] = version
        try:
            es = cls(compounds=comp[COMPOUND_COL].to_numpy(), genes=genes, smiles=comp[SMILES_COL].to_numpy(),
                     inchikey=comp[_INCHIKEY_COL].to_numpy(), n_replicates=comp[_N_REPLICATES_COL].to_numpy(),
                     control_ids=controls, info=info, plates=PlateLayout.load(root), values_checked=True,
                     value_scale=manifest_scale(root, manifest, version),
                     compound_meta=comp[meta_cols] if meta_cols else None, **arrays)
        except DrugcellInputError as exc:
            raise DrugcellInputError(f"ExpressionSet cache {root}: {exc}; {REBUILD}") from None
        where = {name: f"ExpressionSet cache file {root / (name + '.npy')}" for name in ARRAYS}
        where["n_replicates"] = f"ExpressionSet cache file {root / COMPOUNDS} (column {_N_REPLICATES_COL})"
        check_values(es, where, fix=REBUILD)
        recorded, es.info["fingerprint"] = manifest.get("data_fingerprint"), es._hash()
        if recorded is not None and recorded != es.info["fingerprint"]:
            raise DrugcellInputError(
                f"ExpressionSet cache {root}: its arrays hash to data fingerprint {es.info['fingerprint']}, but "
                f"{root / MANIFEST} records {recorded}: the cache is damaged or was modified after it was written "
                f"(values edited, rows reordered); {REBUILD}")
        return es

    # ------------------------------------------------------------------ official weights file
    def write_weights_parquet(self, path: str | os.PathLike[str], *, dtype: str = "float16",
                              overwrite: bool = False) -> None:
        """The official ``weights.parquet`` layout: ``gene_id`` + one column per compound (controls too).
        ``dtype`` must be a float type: Mejia weights are fractions, an integer type would store zeros.
        An existing file at ``path`` is replaced only with ``overwrite``; a folder never is."""
        check_file_output(path, overwrite)
        try:
            kind = np.dtype(dtype).kind
        except TypeError:
            kind = ""
        if kind != "f":
            raise DrugcellInputError(f"weights dtype {dtype!r} is not a float type: Mejia weights are fractions of 1 "
                                     "and would be stored as zeros; use float16 (the official file) or float32")
        cols: dict[str, Any] = {GENE_COL: pa.array(self.genes.astype(str))}
        for j, c in enumerate(self.compounds):
            cols[str(c)] = pa.array(np.asarray(self.weights[:, j]).astype(dtype))
        for j, c in enumerate(self.control_ids):
            cols[str(c)] = pa.array(np.asarray(self.control_weights[:, j]).astype(dtype))
        with atomic_path(path) as tmp:
            pq.write_table(pa.table(cols), tmp)

    def with_weights_parquet(self, path: str | os.PathLike[str]) -> ExpressionSet:
        """A copy whose weights come from an official ``weights.parquet`` (genes x compounds).

        ``path`` is the file, or a folder holding ``weights.parquet`` (:func:`weights_file`). The
        file may index genes by a ``gene_id`` column or by a pandas index; every compound and gene
        of this set must be present, once. The weights are checked as the scorer checks them
        (finite, >= 0, each compound's column summing to 1 within ``WEIGHT_SUM_TOL``), naming the
        compounds; the largest deviation of a column sum from 1 (float16 rounding) goes to ``info``.
        """
        path = weights_file(path)
        table = read_weights_table(path)
        names = table.column_names
        gene_col = GENE_COL if GENE_COL in names else (_PANDAS_INDEX if _PANDAS_INDEX in names else None)
        if gene_col is None:
            raise DrugcellInputError(f"{path}: no `{GENE_COL}` column (the official layout has genes as rows)")
        file_genes = [str(g) for g in table.column(gene_col).to_pylist()]
        twice = sorted({n for n in names if names.count(n) > 1} | set(pd.Index(file_genes)[pd.Index(file_genes)
                                                                                          .duplicated()]))
        if twice:
            raise DrugcellInputError(f"{path}: gene row(s) or compound column(s) occur more than once: {twice[:5]}; "
                                     "each must appear once")
        gpos = {g: i for i, g in enumerate(file_genes)}
        missing_g = [g for g in self.genes if g not in gpos]
        if missing_g:
            raise DrugcellInputError(f"{path}: {len(missing_g)} scored gene(s) missing, e.g. {missing_g[:5]}")
        wanted = [str(c) for c in self.compounds]
        missing_c = [c for c in wanted if c not in names]
        if missing_c:
            raise DrugcellInputError(
                f"{path}: no weight column for {len(missing_c)} compound(s), e.g. {missing_c[:5]}; "
                "weights must cover every training compound"
            )
        rows = np.array([gpos[g] for g in self.genes])
        w = np.empty((self.n_genes, self.n_compounds), dtype=np.float32)
        for j, c in enumerate(wanted):
            w[:, j] = table.column(c).to_numpy(zero_copy_only=False).astype(np.float32)[rows]
        check_weights(w, self.compounds, f"weights file {path}", _WEIGHTS_FIX)
        sums = w.sum(axis=0, dtype=np.float64)
        info = {k: v for k, v in self.info.items() if k != "fingerprint"}
        info["weights_source"] = str(path)
        info["weights_max_column_sum_error"] = float(np.max(np.abs(sums - 1.0))) if len(sums) else 0.0
        return replace(self, weights=w, info=info)  # the truth was checked with this set; the weights just now


def weights_file(path: str | os.PathLike[str]) -> Path:
    """The official weights file ``path`` names: a file, or a folder holding ``weights.parquet``.
    Any other folder is refused naming what it holds: pyarrow would read every parquet file in it
    as one table, and the last column of each name would silently win."""
    p = Path(path)
    if not p.exists():
        raise DrugcellInputError(f"weights file {p} does not exist")
    if p.is_dir():
        if (p / "weights.parquet").is_file():
            return p / "weights.parquet"
        found = sorted(x.name for x in p.iterdir())
        raise DrugcellInputError(f"weights {p} is a folder without a weights.parquet (it holds "
                                 f"{found[:10] if found else 'nothing'}); pass the weights file itself")
    return p


def read_weights_table(path: Path) -> pa.Table:
    """The weights file as an Arrow table; a file that is not parquet is a clear error naming it."""
    try:
        return pq.read_table(path)
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ...
        raise DrugcellInputError(f"weights file {path} cannot be read as parquet ({type(exc).__name__}: {exc}); "
                                 f"{_WEIGHTS_FIX}") from None
