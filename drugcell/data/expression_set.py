"""ExpressionSet: the per-compound training truth every model and evaluation step takes.

A cache directory of plain ``.npy`` arrays and small parquet tables, so it loads in a second
(memory-mapped on request) and needs no pickle. Layout and fields: docs/architecture.md.

The cache is versioned (``format`` and ``format_version`` in ``manifest.json``) so that a cache
written by another drugcell is read correctly or refused with a message, never misread.
Version 1 is the layout written before the version fields existed (the same files; read as is);
version 2 adds the fields; version 3 adds the optional ``plates.npz`` (the plate layout and the
per-plate DMSO profile, :mod:`drugcell.data.plates`), absent from sets that have no plates.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from drugcell.data.plates import PlateLayout
from drugcell.defaults import COMPOUND_COL, EXPRESSION_COL, GENE_COL, SMILES_COL
from drugcell.errors import DrugcellInputError
from drugcell.provenance import atomic_dir, atomic_path, fingerprint_arrays, provenance, strict_json

#: what ``manifest.json`` says a cache is, and the newest layout this code reads and writes
FORMAT = "drugcell.expression_set"
FORMAT_VERSION = 3
MANIFEST = "manifest.json"
_KIND = "drugcell.ExpressionSet"  # the version-1 manifest's only mark (still written, for older readers)
_ARRAYS = ("expression", "weights", "control", "control_expression", "control_weights")
_COMPOUNDS, _GENES, _CONTROLS = "compounds.parquet", "genes.parquet", "controls.parquet"
_INCHIKEY_COL, _N_REPLICATES_COL = "inchi_key", "n_replicates"  # compounds.parquet's own columns
_PANDAS_INDEX = "__index_level_0__"
#: info keys that describe one loaded copy, not the data (left out when the set is saved again)
_LOAD_ONLY_INFO = ("cache_format_version",)
_REBUILD = "re-run `drugcell load` (or `drugcell synth`) to rebuild it"


def _str_array(x: Any) -> np.ndarray:
    return np.asarray([("" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)) for v in x], dtype=object)


@dataclass
class ExpressionSet:
    """Per-compound mean log2(CPM+1) on the scored genes, with Mejia weights and controls."""

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
    values_checked: bool = field(default=False, repr=False, compare=False)  # a subset of a checked set

    def __post_init__(self) -> None:
        self.compounds = _str_array(self.compounds)
        self.genes = _str_array(self.genes)
        self.smiles = _str_array(self.smiles)
        self.inchikey = _str_array(self.inchikey)
        self.control_ids = _str_array(self.control_ids)
        self.expression = np.asarray(self.expression, dtype=np.float32)
        self.weights = np.asarray(self.weights, dtype=np.float32)
        self.control = np.asarray(self.control, dtype=np.float32)
        self.n_replicates = np.asarray(self.n_replicates, dtype=np.int32)
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
        if len(set(self.compounds.tolist())) != c:
            dup = pd.Index(self.compounds).duplicated()
            raise DrugcellInputError(f"ExpressionSet has duplicate compound ids: {list(self.compounds[dup][:5])}")
        if len(set(self.genes.tolist())) != g:
            raise DrugcellInputError("ExpressionSet has duplicate gene ids")
        if self.plates is not None:
            self.plates.check(c, g)
        if not self.values_checked:
            self._check_values()
            self.values_checked = True

    def _check_values(self) -> None:
        """NaN/inf in the truth or weights, negative weights and replicate counts below 1 would make
        every score downstream silently wrong: refuse them, naming a compound."""
        for name, arr, per_row in (("expression", self.expression, True), ("weights", self.weights, False)):
            bad_rows = _rows_with(arr, lambda b: ~np.isfinite(b), per_row)
            if len(bad_rows):
                raise DrugcellInputError(
                    f"ExpressionSet.{name} has NaN/inf for {len(bad_rows)} compound(s), e.g. "
                    f"{self.compounds[bad_rows[0]]}; rebuild the set (`drugcell load`) or drop those compounds")
        neg = _rows_with(self.weights, lambda b: b < 0, False)
        if len(neg):
            raise DrugcellInputError(f"ExpressionSet.weights are negative for {len(neg)} compound(s), e.g. "
                                     f"{self.compounds[neg[0]]}; Mejia weights are >= 0")
        if len(self.n_replicates) and self.n_replicates.min() < 1:
            i = int(np.argmin(self.n_replicates))
            raise DrugcellInputError(f"ExpressionSet.n_replicates is {int(self.n_replicates[i])} for compound "
                                     f"{self.compounds[i]}; every compound needs at least one well")

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
            info=dict(self.info),
            plates=None if self.plates is None else self.plates.subset(idx),
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
        """A short hash of the ids and arrays: the data fingerprint every result carries."""
        if "fingerprint" not in self.info:
            self.info["fingerprint"] = fingerprint_arrays(
                self.compounds, self.genes, self.expression, self.weights, self.smiles
            )
        return self.info["fingerprint"]

    def truth_long(self) -> pd.DataFrame:
        """Long ``compound, gene_id, expression`` table (the official truth layout)."""
        return pd.DataFrame(
            {
                COMPOUND_COL: np.repeat(self.compounds.astype(str), self.n_genes),
                GENE_COL: np.tile(self.genes.astype(str), self.n_compounds),
                EXPRESSION_COL: self.expression.ravel(),
            }
        )

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write the cache dir atomically (build in a temp dir, then rename into place). An existing
        cache is replaced only with ``overwrite``; anything else at ``path`` never is."""
        final = Path(path)
        check_replaceable(final, overwrite)
        with atomic_dir(final) as tmp:
            for name in _ARRAYS:
                np.save(tmp / f"{name}.npy", getattr(self, name))
            pd.DataFrame(
                {
                    COMPOUND_COL: self.compounds.astype(str),
                    SMILES_COL: self.smiles.astype(str),
                    _INCHIKEY_COL: self.inchikey.astype(str),
                    _N_REPLICATES_COL: self.n_replicates,
                }
            ).to_parquet(tmp / _COMPOUNDS, index=False)
            pd.DataFrame({GENE_COL: self.genes.astype(str)}).to_parquet(tmp / _GENES, index=False)
            pd.DataFrame({COMPOUND_COL: self.control_ids.astype(str)}).to_parquet(tmp / _CONTROLS, index=False)
            if self.plates is not None:
                self.plates.save(tmp)
            manifest = {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "kind": _KIND,
                "n_compounds": self.n_compounds,
                "n_genes": self.n_genes,
                "n_controls": len(self.control_ids),
                "data_fingerprint": self.fingerprint(),
                "info": {k: v for k, v in self.info.items() if k not in _LOAD_ONLY_INFO},
                "provenance": provenance(data_fingerprint=self.fingerprint()),
            }
            (tmp / MANIFEST).write_text(strict_json(manifest, indent=2) + "\n")
        return final

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, mmap: bool = False) -> ExpressionSet:
        """Read a cache dir written by :meth:`save`, any format version up to :data:`FORMAT_VERSION`
        (``mmap=True`` maps the big arrays lazily); ``info["cache_format_version"]`` says which."""
        root = Path(path)
        manifest, version = _read_manifest(root)
        for name in (*(f"{a}.npy" for a in _ARRAYS), _COMPOUNDS, _GENES, _CONTROLS):
            if not (root / name).is_file():
                raise DrugcellInputError(f"ExpressionSet cache {root} is incomplete: {root / name} is missing; {_REBUILD}")
        mode = "r" if mmap else None
        arrays = {name: _read(root / f"{name}.npy", lambda p: np.load(p, mmap_mode=mode, allow_pickle=False))
                  for name in _ARRAYS}
        comp = _read(root / _COMPOUNDS, pd.read_parquet, (COMPOUND_COL, SMILES_COL, _INCHIKEY_COL, _N_REPLICATES_COL))
        genes = _read(root / _GENES, pd.read_parquet, (GENE_COL,))[GENE_COL].to_numpy()
        controls = _read(root / _CONTROLS, pd.read_parquet, (COMPOUND_COL,))[COMPOUND_COL].to_numpy()
        info = dict(manifest.get("info", {}))
        info["fingerprint"] = manifest.get("data_fingerprint", info.get("fingerprint"))
        info["path"] = str(root.resolve())
        info["cache_format_version"] = version
        return cls(
            compounds=comp[COMPOUND_COL].to_numpy(),
            genes=genes,
            smiles=comp[SMILES_COL].to_numpy(),
            inchikey=comp[_INCHIKEY_COL].to_numpy(),
            n_replicates=comp[_N_REPLICATES_COL].to_numpy(),
            control_ids=controls,
            info=info,
            plates=PlateLayout.load(root),
            **arrays,
        )

    # ------------------------------------------------------------------ official weights file
    def write_weights_parquet(self, path: str | os.PathLike[str], *, dtype: str = "float16") -> None:
        """The official ``weights.parquet`` layout: ``gene_id`` + one column per compound (controls too)."""
        cols: dict[str, Any] = {GENE_COL: pa.array(self.genes.astype(str))}
        for j, c in enumerate(self.compounds):
            cols[str(c)] = pa.array(np.asarray(self.weights[:, j]).astype(dtype))
        for j, c in enumerate(self.control_ids):
            cols[str(c)] = pa.array(np.asarray(self.control_weights[:, j]).astype(dtype))
        with atomic_path(path) as tmp:
            pq.write_table(pa.table(cols), tmp)

    def with_weights_parquet(self, path: str | os.PathLike[str]) -> ExpressionSet:
        """A copy whose weights come from an official ``weights.parquet`` (genes x compounds).

        The file may index genes by a ``gene_id`` column or by a pandas index; every compound and
        gene of this set must be present. Values are used as stored (as the leaderboard does); the
        largest deviation of a column sum from 1 (float16 rounding) is recorded in ``info``.
        """
        path = Path(path)
        if not path.exists():
            raise DrugcellInputError(f"weights file {path} does not exist")
        table = pq.read_table(path)
        names = table.column_names
        gene_col = GENE_COL if GENE_COL in names else (_PANDAS_INDEX if _PANDAS_INDEX in names else None)
        if gene_col is None:
            raise DrugcellInputError(f"{path}: no `{GENE_COL}` column (the official layout has genes as rows)")
        file_genes = [str(g) for g in table.column(gene_col).to_pylist()]
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
            w[:, j] = table.column(c).to_numpy().astype(np.float32)[rows]
        if not np.all(np.isfinite(w)):
            raise DrugcellInputError(f"{path}: weights contain NaN/inf")
        sums = w.sum(axis=0)
        info = dict(self.info)
        info["weights_source"] = str(path)
        info["weights_max_column_sum_error"] = float(np.max(np.abs(sums - 1.0))) if len(sums) else 0.0
        info.pop("fingerprint", None)
        return replace(self, weights=w, info=info)


def _rows_with(arr: np.ndarray, test, per_row: bool, chunk: int = 1024) -> np.ndarray:
    """Compound indices where ``test`` is true anywhere: rows of (C, G) or columns of (G, C),
    checked in chunks so a memory-mapped 14k x 13k array is never copied whole."""
    n = arr.shape[0] if per_row else arr.shape[1]
    found = []
    for lo in range(0, n, chunk):
        block = np.asarray(arr[lo:lo + chunk] if per_row else arr[:, lo:lo + chunk])
        hit = test(block).any(axis=1 if per_row else 0)
        found.extend((np.flatnonzero(hit) + lo).tolist())
    return np.asarray(found, dtype=np.int64)


def _read(path: Path, reader, columns: tuple[str, ...] = ()):
    """One cache file; a truncated or damaged file, or a missing column, is a clear error naming it."""
    try:
        out = reader(path)
    except Exception as exc:  # numpy/pyarrow raise many types (ValueError, EOFError, ArrowInvalid, OSError)
        raise DrugcellInputError(f"ExpressionSet cache file {path} is damaged ({type(exc).__name__}: {exc}); "
                                 f"{_REBUILD}") from None
    lacking = [c for c in columns if c not in out.columns]
    if lacking:
        raise DrugcellInputError(f"ExpressionSet cache file {path} lacks column(s) {', '.join(lacking)}; {_REBUILD}")
    return out


def check_replaceable(path: Path, overwrite: bool) -> None:
    """Refuse to write a cache over a file, over a folder drugcell did not write as a cache (a run,
    a model, the user's files: never, even with ``overwrite``), or over a cache without ``overwrite``."""
    if not path.exists():
        return
    if not path.is_dir():
        raise DrugcellInputError(f"{path} exists and is a file; choose another folder for the ExpressionSet cache")
    if not any(path.iterdir()):
        return
    try:
        _read_manifest(path)
    except DrugcellInputError:
        raise DrugcellInputError(
            f"{path} is not empty and is not an ExpressionSet cache; drugcell never replaces it (even with "
            "--overwrite): choose another folder") from None
    if not overwrite:
        raise DrugcellInputError(f"{path} already holds an ExpressionSet cache; pass --overwrite to replace it")


def _read_manifest(root: Path) -> tuple[dict[str, Any], int]:
    """The cache's manifest and its format version; anything this code cannot read is refused
    with a message that names the folder and says what to do."""
    manifest_path = root / MANIFEST
    if not manifest_path.exists():
        raise DrugcellInputError(
            f"{root} is not an ExpressionSet cache (no {MANIFEST}); create one with `drugcell load` or `drugcell synth`"
        )
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DrugcellInputError(f"ExpressionSet cache {root}: cannot read {manifest_path} ({exc}); {_REBUILD}") from exc
    if not isinstance(manifest, dict):
        raise DrugcellInputError(f"ExpressionSet cache {root}: {manifest_path} is not a JSON object; {_REBUILD}")
    fmt, version = manifest.get("format"), manifest.get("format_version")
    if fmt is None and version is None:  # version 1: written before the fields existed
        if manifest.get("kind") != _KIND:
            raise DrugcellInputError(
                f"{root} is not an ExpressionSet cache: {manifest_path} has no format {FORMAT!r} (nor the version-1 "
                f"kind {_KIND!r}); pass a folder written by `drugcell load` or `drugcell synth`"
            )
        return manifest, 1
    if fmt != FORMAT:
        raise DrugcellInputError(
            f"{root} is not an ExpressionSet cache: {manifest_path} says format {fmt!r}, expected {FORMAT!r}; "
            "pass a folder written by `drugcell load` or `drugcell synth`"
        )
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise DrugcellInputError(
            f"ExpressionSet cache {root}: {manifest_path} has format_version {version!r}, not a positive integer; "
            f"{_REBUILD}"
        )
    if version > FORMAT_VERSION:
        raise DrugcellInputError(
            f"ExpressionSet cache {root} has format version {version}, newer than this drugcell reads (up to "
            f"{FORMAT_VERSION}); upgrade drugcell, or {_REBUILD} with this one"
        )
    return manifest, version
