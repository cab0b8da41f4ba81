"""Any AnnData (.h5ad) -> an ExpressionSet: the generic adapter behind ``drugcell load --anndata``.

Two levels, because public perturbation data come both ways:

* ``well``: rows are wells or samples. The target is each compound's mean over its rows; the
  weights are Mejia's, as for VCPI: a Welch t of each compound's rows against every other row
  (controls included), min-max scaled and squared (:mod:`contest_scorer.weights`:
  ``replicate_stats``, ``weights_from_stats``), or read from a weights file.
* ``profile``: one row per compound (consensus signatures, z-scores, log fold changes). No
  replicates, so no t-test: ``zscore`` weights take the values as z-scores already, |z| normalised
  per compound to sum 1 (a compound's weight goes to the genes it moves most), or a weights file.

Controls are the rows whose compound equals a ``control_values`` entry (the first is the vehicle:
the control profile). Without one the control profile is 0 for signed values (already relative to
control) and the per-gene mean of all rows for log2cpm. The value scale (``log2cpm``: predictions
clipped at 0; ``signed``: not) is given, or ``auto``: signed when a value is negative or the
weights are ``zscore``. The whole matrix is held in memory in float64 (8 bytes x rows x genes, about
three copies at the peak): pseudo-bulk sizes, not millions of cells.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from contest_scorer.weights import replicate_stats, weights_from_stats
from drugcell import __version__
from drugcell.data.anndata_io import anndata_module, dense
from drugcell.data.expression_set import META_RESERVED, ExpressionSet, check_replaceable, weights_file
from drugcell.data.out_paths import check_out_location
from drugcell.data.readers import fingerprint_input, show_ids
from drugcell.data.set_checks import check_weights
from drugcell.defaults import LOG2CPM, SIGNED
from drugcell.errors import DrugcellInputError

LEVELS = ("well", "profile")
WEIGHT_MODES = ("ttest", "zscore")
SCALES = ("auto", LOG2CPM, SIGNED)
MAX_RECORDED = 20


@dataclass(frozen=True)
class AnnDataOptions:
    """How to read an AnnData (recorded in the set's info)."""

    compound_col: str
    smiles_col: str
    control_values: tuple[str, ...] = ()
    weights: str | None = None  # ttest | zscore | a weights.parquet; None: ttest (well), zscore (profile)
    level: str = "well"
    scale: str = "auto"
    layer: str | None = None  # None: X

    def __post_init__(self) -> None:
        if self.level not in LEVELS:
            raise DrugcellInputError(f"--level {self.level!r}: use one of {', '.join(LEVELS)}")
        if self.scale not in SCALES:
            raise DrugcellInputError(f"--scale {self.scale!r}: use one of {', '.join(SCALES)}")
        object.__setattr__(self, "control_values", tuple(str(v) for v in self.control_values))
        if len(set(self.control_values)) != len(self.control_values):
            raise DrugcellInputError(f"--control-value given twice: {list(self.control_values)}")
        mode = self.weight_mode
        if self.level == "well" and mode == "zscore":
            raise DrugcellInputError("--weights zscore needs --level profile (one z-score profile per compound); at "
                                     "--level well use ttest (Mejia's t-vs-rest recipe) or a weights file")
        if self.level == "profile" and mode == "ttest":
            raise DrugcellInputError("--weights ttest needs replicate rows (--level well); at --level profile use "
                                     "zscore (|z| per compound) or a weights file")
        if mode == "zscore" and self.scale == LOG2CPM:
            raise DrugcellInputError("--weights zscore reads the values as z-scores, which are signed; pass "
                                     f"--scale {SIGNED} (or auto), or other weights")

    @property
    def weight_mode(self) -> str:
        """ttest, zscore or file."""
        w = self.weights if self.weights is not None else ("ttest" if self.level == "well" else "zscore")
        return w if w in WEIGHT_MODES else "file"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "control_values": list(self.control_values), "weight_mode": self.weight_mode}


@dataclass
class AnnDataSummary:
    """What the adapter kept and why (printed by ``drugcell load --anndata``)."""

    source: str = ""
    level: str = "well"
    n_rows: int = 0
    n_genes: int = 0
    n_compounds: int = 0
    n_single_replicate: int = 0
    controls: dict[str, int] = field(default_factory=dict)
    control_profile: str = ""
    weights_source: str = ""
    value_scale: str = ""
    scale_reason: str = ""
    n_unparsed_smiles: int = 0
    unparsed_smiles: list[str] = field(default_factory=list)
    metadata_columns: list[str] = field(default_factory=list)
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)

    def warn(self, msg: str) -> None:
        self.warnings.append(msg)
        warnings.warn(msg, stacklevel=3)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def format(self) -> str:
        ctrl = ", ".join(f"{k} {v}" for k, v in self.controls.items()) or "none"
        meta = ", ".join(self.metadata_columns[:8]) + (" ..." if len(self.metadata_columns) > 8 else "")
        return "\n".join([
            f"anndata            {self.source}: {self.n_rows:,} rows x {self.n_genes:,} genes, level {self.level}",
            f"compounds          {self.n_compounds:,} ({self.n_single_replicate} with 1 row, "
            f"{self.n_unparsed_smiles} with a SMILES RDKit cannot parse)",
            f"controls           {ctrl}; control profile: {self.control_profile}",
            f"weights            {self.weights_source}",
            f"value scale        {self.value_scale} ({self.scale_reason})",
            f"compound metadata  {meta or 'none'}",
            f"time               {self.seconds:.1f} s",
        ])


# ============================================================================ entry points
def read_h5ad(path: str | Path):
    """An .h5ad file as an AnnData; a missing or unreadable file is a clear error naming it."""
    ad = anndata_module()

    p = Path(path)
    if not p.is_file():
        raise DrugcellInputError(f"--anndata {p}: no such file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # anndata's notes on old layouts and index dtypes
            return ad.read_h5ad(p)
    except Exception as exc:  # h5py/anndata raise OSError, KeyError, ValueError, ...
        raise DrugcellInputError(f"--anndata {p} cannot be read as .h5ad ({type(exc).__name__}: {exc})") from None


def load_anndata(source, options: AnnDataOptions, *, info: dict[str, Any] | None = None
                 ) -> tuple[ExpressionSet, AnnDataSummary]:
    """``source`` (an .h5ad path or an AnnData) -> (ExpressionSet, summary). ``info`` replaces the
    recorded info (the L1000 adapters keep their own)."""
    t0 = time.perf_counter()
    path = None if hasattr(source, "obs") else Path(source)
    wfile = weights_file(options.weights) if options.weight_mode == "file" else None  # checked before the read
    adata = read_h5ad(path) if path is not None else source
    label = f"--anndata {path}" if path is not None else "AnnData"
    summary = AnnDataSummary(source=str(path) if path is not None else "AnnData (in memory)", level=options.level)
    obs = adata.obs
    for opt, col in (("--compound-col", options.compound_col), ("--smiles-col", options.smiles_col)):
        if col not in obs.columns:
            raise DrugcellInputError(f"{label}: obs has no column {col!r} ({opt}); its columns are "
                                     f"{show_ids(list(obs.columns))}")
    values, genes = _matrix(adata, options.layer, label)
    row_comp = _compounds(obs, options.compound_col, label)
    summary.n_rows, summary.n_genes = values.shape
    is_ctl = _control_rows(row_comp, options, label)
    smiles_of = _smiles(obs, row_comp, ~is_ctl, options.smiles_col, label)
    if options.level == "profile":
        _one_row_each(row_comp, label, options.compound_col)
    scale, summary.scale_reason = _scale(values, options, label, obs.index, genes)
    groups, mean, var, n = replicate_stats(values.T, row_comp)
    weights = _weights(options, values, mean, var, n, summary)
    ctl = np.isin(groups, list(options.control_values))
    lib = np.flatnonzero(~ctl)
    if not len(lib):
        raise DrugcellInputError(f"{label}: every row is a control (--control-value); no compound is left to learn from")
    summary.value_scale, summary.n_compounds = scale, len(lib)
    summary.n_single_replicate = int((n[lib] < 2).sum())
    summary.controls = {str(g): int(k) for g, k in zip(groups[ctl], n[ctl])}
    control = _control_profile(groups, mean, values, options, scale, summary)
    compounds = groups[lib]
    smiles = np.array([smiles_of[c] for c in compounds], dtype=object)
    _unparsed(compounds, smiles, summary, label)
    meta = _compound_meta(obs[~is_ctl], row_comp[~is_ctl], compounds,
                          (options.compound_col, options.smiles_col)) if info is None else None
    summary.metadata_columns = [] if meta is None else [str(c) for c in meta.columns]
    own_info = info is None
    if own_info:
        info = _info(path, options, summary)
    es = ExpressionSet(
        compounds=compounds, genes=genes, expression=mean[lib], weights=weights[:, lib], n_replicates=n[lib],
        control=control, smiles=smiles, inchikey=[""] * len(lib), control_ids=groups[ctl],
        control_expression=mean[ctl], control_weights=weights[:, ctl], info=info, value_scale=scale,
        compound_meta=meta)
    if wfile is not None:
        es = _file_weights(es, wfile, summary)
    summary.seconds = time.perf_counter() - t0
    if own_info:
        es.info["load_summary"] = summary.as_dict()
    return es, summary


def load_anndata_to_cache(out: str | Path, path: str | Path, options: AnnDataOptions, *,
                          overwrite: bool = False) -> AnnDataSummary:
    """:func:`load_anndata` then write the cache (an existing cache is replaced only with ``overwrite``)."""
    out = Path(out)
    check_replaceable(out, overwrite)  # before the work, as the VCPI load does
    check_out_location(out, "--out")
    es, summary = load_anndata(path, options)
    if out.exists() and not any(out.iterdir()):
        out.rmdir()
    es.save(out, overwrite=overwrite)
    return summary


# ============================================================================ the steps
def _matrix(adata, layer: str | None, label: str) -> tuple[np.ndarray, np.ndarray]:
    """(rows x genes float64, gene ids); NaN/inf and repeated gene ids refused, named."""
    if layer is not None and layer not in adata.layers:
        raise DrugcellInputError(f"{label}: no layer {layer!r} (--layer); its layers are "
                                 f"{show_ids(list(adata.layers.keys())) or 'none'}")
    values = dense(adata.X if layer is None else adata.layers[layer]).astype(np.float64)
    where = "X" if layer is None else f"layer {layer!r}"
    if values.ndim != 2 or values.shape[0] == 0 or values.shape[1] == 0:
        raise DrugcellInputError(f"{label}: {where} has shape {values.shape}; it needs rows and genes")
    bad = np.flatnonzero(~np.isfinite(values).all(axis=1))
    if len(bad):
        g = int(np.flatnonzero(~np.isfinite(values[bad[0]]))[0])
        raise DrugcellInputError(f"{label}: {where} has NaN/inf in {len(bad)} row(s), first row "
                                 f"{adata.obs_names[bad[0]]!r} at gene {adata.var_names[g]!r}; drop or impute them")
    genes = adata.var_names.to_numpy().astype(str)
    dup = pd.Index(genes).duplicated()
    if dup.any():
        raise DrugcellInputError(f"{label}: gene id(s) repeated in var_names: {show_ids(genes[dup])}; make them unique")
    return values, genes


def _compounds(obs: pd.DataFrame, col: str, label: str) -> np.ndarray:
    col_values = obs[col]
    text = col_values.astype(object).to_numpy()
    missing = np.array([v is None or (isinstance(v, float) and np.isnan(v)) or not str(v).strip() for v in text])
    if missing.any():
        raise DrugcellInputError(f"{label}: {int(missing.sum())} row(s) have no compound in column {col!r} "
                                 f"(--compound-col), e.g. {show_ids(list(obs.index[missing]))}; fill or drop them")
    return np.array([str(v).strip() for v in text], dtype=object)


def _control_rows(row_comp: np.ndarray, options: AnnDataOptions, label: str) -> np.ndarray:
    present = set(row_comp.tolist())
    absent = [v for v in options.control_values if v not in present]
    if absent:
        raise DrugcellInputError(f"{label}: no row has compound {absent[0]!r} (--control-value) in column "
                                 f"{options.compound_col!r}; values there include {show_ids(sorted(present))}")
    return np.isin(row_comp, list(options.control_values))


def _smiles(obs: pd.DataFrame, row_comp: np.ndarray, treated: np.ndarray, col: str, label: str) -> dict[str, str]:
    """One SMILES per treated compound; a compound without one, or with two, is named."""
    raw = obs[col].astype(object).to_numpy()[treated]
    text = np.array(["" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v).strip() for v in raw],
                    dtype=object)
    frame = pd.DataFrame({"c": row_comp[treated], "s": text})
    none = sorted(set(frame.loc[frame["s"] == "", "c"]))
    if none:
        raise DrugcellInputError(f"{label}: {len(none)} compound(s) have no SMILES in column {col!r} (--smiles-col): "
                                 f"{show_ids(none)}; add them, drop those rows, or mark them as controls "
                                 "(--control-value)")
    per = frame.drop_duplicates().groupby("c")["s"]
    twice = per.nunique()
    twice = sorted(twice[twice > 1].index)
    if twice:
        raise DrugcellInputError(f"{label}: {len(twice)} compound(s) have different SMILES in column {col!r} on "
                                 f"different rows: {show_ids(twice)}; one compound id must name one structure")
    return per.first().to_dict()


def _one_row_each(row_comp: np.ndarray, label: str, col: str) -> None:
    dup = pd.Index(row_comp).duplicated()
    if dup.any():
        names = sorted(set(row_comp[dup].tolist()))
        raise DrugcellInputError(f"{label}: --level profile takes one row per compound, but {len(names)} compound(s) "
                                 f"in column {col!r} have several: {show_ids(names)}; use --level well to average "
                                 "replicate rows")


def _scale(values: np.ndarray, options: AnnDataOptions, label: str, rows: pd.Index, genes: np.ndarray
           ) -> tuple[str, str]:
    """The value scale and why; log2cpm data with a negative value are refused, named."""
    negative = values < 0
    if options.scale == LOG2CPM:
        if negative.any():
            r, g = (int(i[0]) for i in np.nonzero(negative))
            raise DrugcellInputError(f"{label}: value {values[r, g]:g} at row {rows[r]!r}, gene {genes[g]!r} is "
                                     f"negative, but --scale {LOG2CPM} holds log2(CPM+1) >= 0; pass --scale {SIGNED} "
                                     "for z-scores or log fold changes")
        return LOG2CPM, "given"
    if options.scale == SIGNED:
        return SIGNED, "given"
    if options.weight_mode == "zscore":
        return SIGNED, "auto: zscore weights read the values as z-scores"
    if negative.any():
        return SIGNED, f"auto: {int(negative.sum()):,} negative value(s)"
    return LOG2CPM, "auto: no negative value"


def zscore_weights(profiles_cg: np.ndarray) -> np.ndarray:
    """|z| normalised per compound to sum 1, genes x compounds; an all-zero profile gets 1/G."""
    a = np.abs(np.asarray(profiles_cg, dtype=np.float64))
    total = a.sum(axis=1, keepdims=True)
    out = np.divide(a, total, out=np.full_like(a, 1.0 / a.shape[1]), where=total > 0)
    return out.T


def _weights(options: AnnDataOptions, values: np.ndarray, mean: np.ndarray, var: np.ndarray, n: np.ndarray,
             summary: AnnDataSummary) -> np.ndarray:
    """Genes x groups: Mejia's t-vs-rest (well), |z| (profile), or uniform until a file's are read."""
    mode = options.weight_mode
    if mode == "ttest":
        summary.weights_source = "Mejia t-vs-rest over all rows (contest_scorer.weights)"
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            w = weights_from_stats(mean, var, n, values.sum(axis=0), (values * values).sum(axis=0), values.shape[0])
        for c in caught:
            summary.warn(str(c.message))
        return w
    if mode == "zscore":
        summary.weights_source = "zscore: |value| per compound, normalised to sum 1"
        return zscore_weights(mean)
    return np.full((mean.shape[1], mean.shape[0]), 1.0 / mean.shape[1])  # replaced by the file's


def _control_profile(groups: np.ndarray, mean: np.ndarray, values: np.ndarray, options: AnnDataOptions,
                     scale: str, summary: AnnDataSummary) -> np.ndarray:
    if options.control_values:
        vehicle = options.control_values[0]
        summary.control_profile = f"mean of the {vehicle!r} rows"
        return mean[int(np.flatnonzero(groups == vehicle)[0])]
    if scale == SIGNED:
        summary.control_profile = "0 (no --control-value; signed values are relative to control)"
        return np.zeros(values.shape[1])
    summary.control_profile = "per-gene mean of all rows (no --control-value)"
    return values.mean(axis=0)


def _unparsed(compounds: np.ndarray, smiles: np.ndarray, summary: AnnDataSummary, label: str) -> None:
    from drugcell.chem.molecules import parse_smiles

    parsed = parse_smiles(list(smiles), inchikey=False, progress=False)
    bad = [str(compounds[i]) for i in sorted(parsed.errors)]
    summary.n_unparsed_smiles, summary.unparsed_smiles = len(bad), bad[:MAX_RECORDED]
    if bad:
        summary.warn(f"{label}: {len(bad)} compound(s) have a SMILES RDKit cannot parse ({show_ids(bad)}); they are "
                     "kept, and predictors give them their fallback profile")


def _plain(col: pd.Series) -> pd.Series:
    """A metadata column as numbers or text (h5ad categoricals and mixed objects made plain)."""
    if pd.api.types.is_bool_dtype(col) or pd.api.types.is_numeric_dtype(col):
        return col
    return col.astype(object).map(lambda v: "" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v))


def _compound_meta(obs: pd.DataFrame, row_comp: np.ndarray, compounds: np.ndarray,
                   skip: tuple[str, ...]) -> pd.DataFrame | None:
    """The obs columns that hold one value per compound (names, targets, ...), one row per compound."""
    keep = {}
    codes = pd.Index(compounds).get_indexer(row_comp)
    for col in obs.columns:
        if col in skip or not isinstance(col, str):
            continue
        plain = _plain(obs[col]).reset_index(drop=True)
        per = plain.groupby(codes).nunique(dropna=False)
        if (per <= 1).all():
            keep[col] = plain.groupby(codes).first().reindex(range(len(compounds))).to_numpy()
    keep = {k: v for k, v in keep.items() if k not in META_RESERVED}
    return pd.DataFrame(keep) if keep else None


def _info(path: Path | None, options: AnnDataOptions, summary: AnnDataSummary) -> dict[str, Any]:
    no_condition = {"concentration_nm": None, "cell_line": None, "timepoint": None}  # nothing filtered
    return {
        "source": "anndata",
        "loader": {"version": __version__, "options": {**options.as_dict(), "condition": no_condition}},
        "inputs": {} if path is None else {"anndata": fingerprint_input(path)},
        "control_profile": summary.control_profile,
        "value_scale_reason": summary.scale_reason,
    }


def _file_weights(es: ExpressionSet, path: Path, summary: AnnDataSummary) -> ExpressionSet:
    """Library weights from an official-layout file; a control column of the same id is used, an
    absent one gets uniform weights (warned)."""
    import pyarrow.parquet as pq

    es = es.with_weights_parquet(path)
    names = set(pq.read_schema(path).names)
    absent = [c for c in es.control_ids if c not in names]
    if len(es.control_ids) > len(absent):
        genes = pq.read_table(path, columns=["gene_id"]).column(0).to_pandas().astype(str)
        rows = pd.Index(genes).get_indexer(es.genes)
        for j, c in enumerate(es.control_ids):
            if c in names:
                es.control_weights[:, j] = pq.read_table(path, columns=[c]).column(0).to_numpy().astype(
                    np.float32)[rows]
    if absent:
        summary.warn(f"weights file {path} has no column for control(s) {absent}; they get uniform weights")
    check_weights(es.control_weights, es.control_ids, f"weights file {path}",
                  "pass Mejia weights: each column summing to 1 over the genes")
    summary.weights_source = f"file {path}"
    es.info.setdefault("inputs", {})["weights"] = fingerprint_input(path)
    return es
