"""Real VCPI files -> an ExpressionSet in ONE streaming pass over the counts, in bounded memory.

This module is the recipe: read and check the inputs (:mod:`drugcell.data.readers`,
:mod:`drugcell.data.counts`), choose the contest-condition samples and group them by compound,
stream the counts (:mod:`drugcell.data.streaming`; why streaming over sample batches and how the
pass stays exact are told there), then the Mejia weights (the arithmetic of
:mod:`contest_scorer.weights`), the structures and the ExpressionSet (and its cache).
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from drugcell import __version__
from drugcell.data import vcpi
from drugcell.data.counts import _Counts, open_counts
from drugcell.data.expression_set import ExpressionSet, check_replaceable, weights_file
from drugcell.data.memory import _no_numpy_hugepages, _release_map, _system_arrow_pool
from drugcell.data.out_paths import check_out_location
from drugcell.data.pass_plan import _plan
from drugcell.data.plates import ControlAccumulator, PlateLayout, compound_plate_counts
from drugcell.data.readers import (
    fingerprint_input,
    read_chemistry,
    read_gene_filter,
    read_metadata,
    show_ids,
)
from drugcell.data.set_checks import check_values
from drugcell.data.streaming import WeightsLibrary, _finish_weights, _run_pass, _Stats
from drugcell.data.structures import MAX_RECORDED, compound_structures
from drugcell.data.wells import contest_samples
from drugcell.errors import DrugcellInputError

#: the readers are part of the loader's API (``from drugcell.data.loader import read_metadata``)
__all__ = [
    "DEFAULT_BATCH_SIZE", "LoadOptions", "LoadSummary", "WeightsLibrary", "fingerprint_input", "load_to_cache",
    "load_vcpi", "open_counts", "read_chemistry", "read_gene_filter", "read_metadata",
]

DEFAULT_BATCH_SIZE = vcpi.DEFAULT_BATCH_SIZE


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
    n_unparsed_smiles: int = 0
    unparsed_smiles: list[str] = field(default_factory=list)  # the first ids (MAX_RECORDED), for the manifest
    n_ambiguous_structure: int = 0
    n_unreadable_concentration: int = 0
    n_absent_from_long_counts: int = 0
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
            f"{self.n_missing_smiles} without SMILES, {self.n_unparsed_smiles} with a SMILES RDKit cannot parse)",
            f"controls           {ctrl}",
            f"genes              {self.n_genes:,} scored",
            f"weights            {self.weights_source}",
            f"time               {self.seconds:.1f} s in {self.n_batches} batch(es)",
        ]
        return "\n".join(lines)


# ============================================================================ entry points
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
    check_replaceable(out, overwrite)  # before minutes of work, as is the location:
    check_out_location(out, "--out")  # a file in the way or no permission would fail only at the end
    out.resolve().parent.mkdir(parents=True, exist_ok=True)
    es, summary = load_vcpi(counts, metadata, chemistry, gene_filter, options=options, progress=progress,
                            scratch_dir=out.resolve().parent)
    from drugcell.progress import step

    step(f"write the cache {out}")
    t = time.perf_counter()
    if out.exists() and not any(out.iterdir()):
        out.rmdir()
    _release_map(es.expression)
    es.save(out, overwrite=overwrite)  # fingerprint and checksums of the arrays written, in chunks
    summary.seconds += time.perf_counter() - t
    return summary


# ============================================================================ the load, step by step
def _checked_options(options: LoadOptions | None) -> LoadOptions:
    opt = options or LoadOptions()
    if opt.weights_library not in ("scored", "all"):
        raise DrugcellInputError(f"weights library must be 'scored' or 'all', got {opt.weights_library!r}")
    if opt.batch_size < 1:
        raise DrugcellInputError(f"batch size must be >= 1, got {opt.batch_size}")
    if opt.weights_path is not None and opt.weights_library != "scored":
        raise DrugcellInputError(
            f"weights library {opt.weights_library!r} sets how Mejia weights are computed, but --weights "
            f"{opt.weights_path} replaces them: drop one of the two")
    return opt


def _open_inputs(paths: dict[str, Path], summary: LoadSummary) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray, _Counts]:
    """Metadata, chemistry, scored genes and the counts opened, the scored genes bound to their
    counts rows (unique in the counts, every scored gene present)."""
    meta = read_metadata(paths["metadata"])
    chem = read_chemistry(paths["chemistry"])
    genes = read_gene_filter(paths["gene_filter"])
    src = open_counts(paths["counts"])
    summary.counts_layout = src.layout
    summary.n_samples_counts = len(src.samples)
    summary.n_samples_metadata = len(meta)
    summary.n_genes_counts = len(src.genes)
    gidx = pd.Index(src.genes)
    if gidx.has_duplicates:
        raise DrugcellInputError(f"counts file {src.path}: duplicate {vcpi.GENE_COL} row(s) "
                                 f"{show_ids(gidx[gidx.duplicated()].unique())}; each gene must appear once")
    rows = gidx.get_indexer(genes)
    if (rows < 0).any():
        raise DrugcellInputError(
            f"gene filter {paths['gene_filter']} names {int((rows < 0).sum())} gene(s) absent from counts file "
            f"{src.path}: {show_ids(genes[rows < 0])}; use the gene filter that belongs to these counts"
        )
    src.bind(rows.astype(np.int64))
    summary.n_genes = len(genes)
    return meta, chem, genes, src


@dataclass
class _Groups:
    """The kept samples and their groups: library compounds (sorted ids), then the controls
    present (canonical order); ``group`` is each sample's group index."""

    kept: pd.DataFrame
    lib_mask: np.ndarray
    compounds: np.ndarray
    controls: list[str]
    group: np.ndarray

    @property
    def n_lib(self) -> int:
        return len(self.compounds)

    @property
    def n_ctrl(self) -> int:
        return len(self.controls)


def _group_samples(kept: pd.DataFrame, kctrl: pd.Series, meta_path: Path) -> _Groups:
    lib_mask = kctrl.isna().to_numpy()
    keys = kept.loc[lib_mask, vcpi.COMPOUND_KEY_COL]
    compounds = np.sort(keys.unique().astype(str)).astype(object)
    present = [c for c in vcpi.CONTROL_IDS if (kctrl == c).any()]
    if vcpi.DMSO not in present:
        raise DrugcellInputError(
            f"metadata file {meta_path}: no DMSO well ({vcpi.COMPOUND_KEY_COL} == '{vcpi.DMSO}') in the contest "
            "condition; the control profile needs vehicle wells"
        )
    group = np.empty(len(kept), dtype=np.int64)
    group[lib_mask] = np.searchsorted(compounds.astype(str), keys.to_numpy().astype(str))
    cpos = {c: len(compounds) + i for i, c in enumerate(present)}
    group[~lib_mask] = kctrl[~lib_mask].map(cpos).to_numpy()
    return _Groups(kept=kept, lib_mask=lib_mask, compounds=compounds, controls=present, group=group)


def _stream(src: _Counts, groups: _Groups, n_genes: int, opt: LoadOptions, summary: LoadSummary, *,
            progress: bool | None, scratch_dir: str | os.PathLike[str] | None) -> _Stats:
    """The one pass over the counts (replicate statistics only when the weights are computed)."""
    plan = _plan(groups.kept[vcpi.SAMPLE_COL].to_numpy(), groups.group, groups.n_lib + groups.n_ctrl, opt.batch_size)
    summary.n_batches = len(plan.batches)
    stats = _Stats(groups.n_lib, groups.n_ctrl, n_genes, weights=opt.weights_path is None,
                   scratch_dir=None if scratch_dir is None else Path(scratch_dir))
    _run_pass(src, plan, stats, opt.weights_library, progress=progress)
    summary.n_empty_library = stats.n_empty_library
    summary.n_empty_scored_library = stats.n_empty_scored_library
    if summary.n_empty_library:
        summary.warn(f"dropped {summary.n_empty_library} sample(s) with an empty library (no counts on any gene)")
    if summary.n_empty_scored_library:
        summary.warn(f"dropped {summary.n_empty_scored_library} sample(s) with no counts on the scored genes "
                     "(their weights library would be empty)")
    summary.n_samples_used = stats.n_total
    return stats


def _check_replicates(stats: _Stats, groups: _Groups, summary: LoadSummary, counts_path: Path) -> None:
    """Every control kept a well; compounds with one replicate are counted and warned about."""
    n_ctrl = stats.n[groups.n_lib:]
    if n_ctrl.min() == 0:
        lost = [c for c, k in zip(groups.controls, n_ctrl) if k == 0]
        raise DrugcellInputError(f"control(s) {lost} have only empty-library wells in {counts_path}")
    summary.n_single_replicate = int((stats.n[:groups.n_lib] == 1).sum())
    if summary.n_single_replicate:
        summary.warn(f"{summary.n_single_replicate} compound(s) have a single replicate; their variance is the "
                     "gene-wide V_g")


def _weights(stats: _Stats, groups: _Groups, n_genes: int, opt: LoadOptions, summary: LoadSummary,
             progress: bool | None) -> tuple[np.ndarray, np.ndarray]:
    """(library (G, C), controls (G, K)) Mejia weights, or zeros to be replaced by the official file
    (the set is built unchecked then, and checked once the file's weights are in)."""
    if opt.weights_path is None:
        weights, ctrl_w = _finish_weights(stats, progress=progress)
        summary.weights_source = f"computed (Mejia, library over {opt.weights_library} genes)"
        return weights, ctrl_w
    # replaced after assembly; zeros cost untouched pages only
    return (np.zeros((n_genes, groups.n_lib), dtype=np.float32),
            np.zeros((n_genes, groups.n_ctrl), dtype=np.float32))


def _drop_empty_compounds(stats: _Stats, groups: _Groups, weights: np.ndarray,
                          summary: LoadSummary) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(target, weights, compounds, replicate counts) without the compounds whose every well had an
    empty library (rare; costs a copy)."""
    expr, compounds, n_rep = stats.expr, groups.compounds, stats.n[:groups.n_lib]
    gone = n_rep == 0
    if gone.any():
        summary.n_compounds_dropped_empty = int(gone.sum())
        summary.warn(f"{int(gone.sum())} compound(s) lost every well to empty libraries and are dropped: "
                     f"{show_ids(compounds[gone])}")
        expr, weights, compounds, n_rep = expr[~gone], weights[:, ~gone], compounds[~gone], n_rep[~gone]
    return expr, weights, compounds, n_rep


def _plate_layout(src: _Counts, groups: _Groups, compounds: np.ndarray, n_genes: int, batch_size: int,
                  progress: bool | None) -> PlateLayout | None:
    """Plates of the kept wells and the per-plate DMSO profile (a short second read of the DMSO
    columns only); None when the metadata has no plate column."""
    kept = groups.kept
    if vcpi.PLATE_COL not in kept.columns:
        return None
    plate_of_well, plate_ids = pd.factorize(kept[vcpi.PLATE_COL].astype(str), sort=True)
    keys = kept[vcpi.COMPOUND_KEY_COL].astype(str).to_numpy()
    pos = np.searchsorted(compounds.astype(str), keys)
    pos = np.minimum(pos, max(len(compounds) - 1, 0))
    comp_of_well = np.where(groups.lib_mask & (compounds.astype(str)[pos] == keys), pos, -1)
    counts = compound_plate_counts(comp_of_well, plate_of_well, len(compounds), len(plate_ids))
    dmso = np.flatnonzero(groups.group == groups.n_lib + groups.controls.index(vcpi.DMSO))
    names = kept[vcpi.SAMPLE_COL].to_numpy()[dmso].astype(str)
    acc = ControlAccumulator(len(plate_ids), n_genes)
    from drugcell.progress import bar as progress_bar

    for lo in progress_bar(range(0, len(names), batch_size), desc="DMSO per plate", unit="batch",
                           disable=None if progress is None else not progress):
        lib, sub, _ = src.read(list(names[lo:lo + batch_size]))
        ok = lib > 0
        log_expr = np.log2(np.asarray(sub[ok], dtype=np.float64) * (1e6 / lib[ok])[:, None] + 1.0)
        acc.add(plate_of_well[dmso[lo:lo + batch_size]][ok], log_expr)
    mean, var, n = acc.result()
    return PlateLayout(np.asarray(plate_ids), counts, mean, var, n)


def _load_vcpi(counts, metadata, chemistry, gene_filter, *, options, progress, scratch_dir):
    """:func:`load_vcpi` itself, as its recipe."""
    from drugcell.progress import step

    t0 = time.perf_counter()
    opt = _checked_options(options)
    if opt.weights_path is not None:
        _check_weights_file(weights_file(opt.weights_path))  # read only after the pass: checked before it
    paths = {k: Path(v) for k, v in dict(counts=counts, metadata=metadata, chemistry=chemistry,
                                          gene_filter=gene_filter).items()}
    summary = LoadSummary()
    step(f"read the metadata, chemistry and gene filter, and open the counts ({paths['counts'].name})")
    meta, chem, genes, src = _open_inputs(paths, summary)
    kept, kctrl = contest_samples(meta, src, opt.condition, summary, paths["metadata"])
    groups = _group_samples(kept, kctrl, paths["metadata"])
    step(f"stream the counts of {len(kept):,} wells: log2(CPM+1) of {len(genes):,} scored genes per compound")
    stats = _stream(src, groups, len(genes), opt, summary, progress=progress, scratch_dir=scratch_dir)
    _check_replicates(stats, groups, summary, src.path)
    step("Mejia weights" if opt.weights_path is None else "weights from the official file (read after assembly)")
    weights, ctrl_w = _weights(stats, groups, len(genes), opt, summary, progress)
    expr, weights, compounds, n_rep = _drop_empty_compounds(stats, groups, weights, summary)
    step(f"structures of {len(compounds):,} compounds")
    smiles, inchikey = _structures(kept[groups.lib_mask], compounds, chem, summary, paths["chemistry"])
    step("plate layout and per-plate DMSO profiles")
    plates = _plate_layout(src, groups, compounds, len(genes), opt.batch_size, progress)
    summary.n_compounds = len(compounds)
    summary.controls = {c: int(k) for c, k in zip(groups.controls, stats.n[groups.n_lib:])}
    ctrl_expr = stats.ctrl_expr.astype(np.float32)
    info = {
        "source": "vcpi",
        "loader": {"version": __version__, "options": opt.as_dict(), "argv": list(sys.argv)},
        "inputs": {k: fingerprint_input(p) for k, p in paths.items()},
    }
    es = ExpressionSet(
        compounds=compounds, genes=genes, expression=expr, weights=weights, n_replicates=n_rep,
        control=ctrl_expr[0], smiles=smiles, inchikey=inchikey, control_ids=np.array(groups.controls, dtype=object),
        control_expression=ctrl_expr, control_weights=ctrl_w, info=info, plates=plates,
        values_checked=opt.weights_path is not None,  # placeholder weights: checked once the file's are in
    )
    if opt.weights_path is not None:
        es = _official_weights(es, weights_file(opt.weights_path), summary)
        es.info["inputs"]["weights"] = fingerprint_input(weights_file(opt.weights_path))
        check_values(es, weights=False)  # the truth and controls; the file's weights were checked as read
    summary.seconds = time.perf_counter() - t0
    es.info["load_summary"] = summary.as_dict()
    return es, summary


def _check_weights_file(path: Path) -> None:
    """An official weights file that cannot be used is refused before the pass, not after it."""
    if not path.is_file():
        raise DrugcellInputError(f"weights file {path} does not exist; pass the official weights.parquet (--weights)")
    try:
        names = pq.read_schema(path).names
    except Exception as exc:  # pyarrow raises several types for a file that is not parquet
        raise DrugcellInputError(f"weights file {path} cannot be read as parquet ({type(exc).__name__}: {exc}); pass "
                                 "the official weights.parquet (--weights)") from None
    if vcpi.GENE_COL not in names and "__index_level_0__" not in names:
        raise DrugcellInputError(f"weights file {path} has no {vcpi.GENE_COL!r} column; the official layout is "
                                 f"{vcpi.GENE_COL} + one column per compound (genes as rows)")


def _validated(es: ExpressionSet, path: Path) -> None:
    """The file's control weights are Mejia weights: finite, >= 0, each column summing to 1 (within
    contest_scorer's WEIGHT_SUM_TOL); the library columns were checked as they were read
    (``ExpressionSet.with_weights_parquet``)."""
    from contest_scorer import ScoringError, validate_weights

    try:  # the library columns were checked by with_weights_parquet
        validate_weights(es.control_weights, per_compound=True, names=[str(c) for c in es.control_ids])
    except ScoringError as exc:
        raise DrugcellInputError(f"weights file {path}: {exc}") from None


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
    _validated(es, path)
    summary.weights_source = f"official file {path}"
    return es


def _structures(meta: pd.DataFrame, compounds: np.ndarray, chem: pd.DataFrame,
                summary: LoadSummary, chem_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """SMILES/InChIKey per library compound (:func:`compound_structures`), its problems counted in
    the summary and warned about."""
    st = compound_structures(meta, compounds, chem, chem_path)
    summary.n_missing_smiles, summary.n_ambiguous_structure = st.n_missing, st.n_ambiguous
    summary.n_unparsed_smiles, summary.unparsed_smiles = len(st.unparsed), st.unparsed[:MAX_RECORDED]
    for note in st.warnings:
        summary.warn(note)
    return st.smiles, st.inchikey
