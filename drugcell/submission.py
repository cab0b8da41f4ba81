"""Refit a chosen predictor on every training compound, predict the test compounds, validate, write.

The contest scores a long table ``compound, gene_id, predicted_expression`` with exactly one row
per (test compound, scored gene), never negative for log2(CPM+1) data (a set on a signed scale,
z-scores or log fold changes, keeps its negative values). The official local scorer silently drops
missing compounds and averages duplicates, so this module refuses to write anything that
:func:`contest_scorer.validate_submission` does not accept. The submission, its std sidecar and
its manifest are one :class:`~drugcell.outputs.FileSet`: they appear together or not at all, an
earlier set is replaced only with ``overwrite`` (checked before any work), and a set written
without a std leaves no older sidecar behind. The 13.8 M-row table is built column-wise with numpy and
dictionary-encoded pyarrow columns, never row by row. The std sidecar is scaled by a fitted
:class:`~drugcell.calibration.calibrator.Calibrator` (never a scale re-derived here), and the same
calibrator is saved with the refitted model, so ``drugcell predict`` reports stds on one scale.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from drugcell.calibration.calibrator import Calibrator
from drugcell.config import PredictorSpec
from drugcell.defaults import COMPOUND_COL, GENE_COL, LOG2CPM
from drugcell.errors import DrugcellInputError
from drugcell.fitting import fit_spec
from drugcell.heldout import TEST_REQUIRED, check_condition, check_parseable, read_test_compounds
from drugcell.outputs import check_out_location, manifest_path, std_path, submission_files
from drugcell.persistence import check_model_dir, save_model
from drugcell.prediction import calibrated
from drugcell.progress import step
from drugcell.provenance import fingerprint_files, provenance, sha256_file, strict_json

__all__ = ["DEFAULT_OUT", "TEST_REQUIRED", "SubmissionResult", "check_outputs", "long_table", "make_submission",
           "read_gene_filter", "read_test_compounds", "std_path", "submission_files"]

DEFAULT_OUT = Path("submissions/predictions.parquet")
STEREO_FLAG = "--allow-stereo-overlap"


@dataclass
class SubmissionResult:
    out: Path
    predictor: PredictorSpec
    n_compounds: int
    n_genes: int
    n_rows: int
    audit: dict[str, Any]
    audit_line: str
    info: dict[str, float]
    std_out: Path | None = None
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # counted, named: e.g. unparseable test SMILES
    notes: list[str] = field(default_factory=list)  # e.g. an interrupted earlier write finished


# ----------------------------------------------------------------------------- the output set
def check_outputs(out: str | Path, save_model_dir: str | Path | None = None, overwrite: bool = False) -> str | None:
    """Before any work: finish or undo an interrupted earlier write of ``out``'s set (a note of it is
    returned), then refuse an existing set or model dir without ``overwrite`` and a model dir
    drugcell did not write even with it."""
    out = Path(out)
    check_out_location(out)
    if out.is_dir():
        raise DrugcellInputError(f"--out {out} is a folder; pass the submission's file name (e.g. {out / 'predictions.parquet'})")
    files = submission_files(out)
    note = files.recover()
    files.check(overwrite, f"--out {out}")
    if save_model_dir is not None:
        check_model_dir(save_model_dir, overwrite, what="--save-model")
    return note


# ----------------------------------------------------------------------------- inputs
def read_gene_filter(path: str | Path) -> np.ndarray:
    """The scored genes (``gene_filter.csv``, one column ``gene_id``), in file order."""
    path = Path(path)
    if not path.is_file():
        raise DrugcellInputError(f"gene filter file {path} not found")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DrugcellInputError(f"{path} is not a readable CSV ({exc}); pass the contest's gene_filter.csv") from None
    if GENE_COL not in df.columns:
        raise DrugcellInputError(f"{path}: no 'gene_id' column (found {', '.join(df.columns)})")
    genes = df[GENE_COL].str.strip().to_numpy(dtype=object).astype(str)
    if len(genes) == 0:
        raise DrugcellInputError(f"{path}: no genes listed")
    if len(np.unique(genes)) != len(genes):
        raise DrugcellInputError(f"{path}: a gene_id is listed twice; the filter must be a set")
    return genes


# ----------------------------------------------------------------------------- the table
def long_table(compound_ids: np.ndarray, genes: np.ndarray, values: np.ndarray,
               value_col: str = "predicted_expression") -> pa.Table:
    """(n, G) values -> long table, compound-major, dictionary-encoded id columns (no Python loop)."""
    n, g = values.shape
    comp_idx = np.repeat(np.arange(n, dtype=np.int32), g)
    gene_idx = np.tile(np.arange(g, dtype=np.int32), n)
    return pa.table({
        COMPOUND_COL: pa.DictionaryArray.from_arrays(pa.array(comp_idx), pa.array(np.asarray(compound_ids).astype(str))),
        GENE_COL: pa.DictionaryArray.from_arrays(pa.array(gene_idx), pa.array(np.asarray(genes).astype(str))),
        value_col: pa.array(np.ascontiguousarray(values, dtype=np.float32).ravel()),
    })


def _validation_frame(table: pa.Table) -> pd.DataFrame:
    """The table as pandas with plain str columns: the scorer's ``astype(str)`` on a categorical
    column materialises 13.8 M strings slowly (about 3x the whole validation), a take does not."""
    cols = {}
    for name in (COMPOUND_COL, GENE_COL):
        col = table.column(name).combine_chunks()
        labels = np.asarray(col.dictionary.to_pylist(), dtype=object)
        cols[name] = labels[col.indices.to_numpy()]
    cols["predicted_expression"] = table.column("predicted_expression").to_numpy()
    return pd.DataFrame(cols, copy=False)


def _gene_columns(train_genes: np.ndarray, genes: np.ndarray, gene_filter_path) -> np.ndarray:
    """Column index into the model's genes for each scored gene; refuse a gene the model lacks."""
    pos = pd.Index(np.asarray(train_genes).astype(str)).get_indexer(genes)
    missing = genes[pos < 0]
    if len(missing):
        raise DrugcellInputError(
            f"{gene_filter_path}: {len(missing)} scored gene(s) are not in the training data "
            f"(first: {', '.join(missing[:5])}); load the training set with this gene filter"
        )
    return pos


def _file_entry(path: Path) -> dict[str, Any]:
    return {"name": path.name, "bytes": path.stat().st_size, "sha256": sha256_file(path)}


def make_submission(
    es, spec: PredictorSpec, test_compounds: str | Path, gene_filter: str | Path,
    out: str | Path = DEFAULT_OUT, *, seed: int = 0, write_std: bool = True, progress: bool = True,
    calibrator: Calibrator | None = None, save_model_dir: str | Path | None = None, metric: str | None = None,
    overwrite: bool = False, allow_stereo_overlap: bool = False,
) -> SubmissionResult:
    """Refit ``spec`` on all of ``es``, audit against the test set, predict, validate, write.

    ``calibrator`` (fitted for ``spec.name`` on a CV run's held-out errors, see
    :func:`~drugcell.calibration.calibrator.calibrator_for_run`) scales the std in the sidecar;
    ``save_model_dir`` also saves the refitted model with that calibrator (``drugcell predict``).
    ``metric``: what predictors that select under a metric (ridge's alpha, blend's weights) fit under,
    as in the CV run that chose them. ``overwrite`` replaces an earlier submission set and saved
    model; ``allow_stereo_overlap`` lets through test compounds that share only the InChIKey first
    block with a training compound (reported in the audit and the manifest).
    """
    from contest_scorer import ScoringError, validate_submission
    from drugcell.splits.audit import audit_split

    if calibrator is not None and calibrator.predictor != spec.name:
        raise ValueError(f"the calibrator was fitted for {calibrator.predictor!r}, not for {spec.name!r}")
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    out = Path(out)
    notes = [n for n in [check_outputs(out, save_model_dir, overwrite)] if n]
    step(f"read and check the test compounds ({Path(test_compounds).name}) and audit them against training")
    test = read_test_compounds(test_compounds)
    condition = check_condition(test, test_compounds, es.info)
    parse = check_parseable(test, test_compounds)
    genes = read_gene_filter(gene_filter)
    test_ids = test[COMPOUND_COL].to_numpy(dtype=object).astype(str)
    test_smiles = test["smiles"].tolist()
    cols = _gene_columns(es.genes, genes, gene_filter)

    # Refuses (LeakError) when a test molecule or id is in training; reports how unseen the test is.
    report = audit_split(list(np.asarray(es.smiles).astype(str)), test_smiles,
                         list(np.asarray(es.compounds).astype(str)), list(test_ids),
                         name=f"training set vs {Path(test_compounds).name}",
                         allow_stereo=allow_stereo_overlap, stereo_flag=STEREO_FLAG)
    timings["audit_s"] = time.perf_counter() - t0

    t1 = time.perf_counter()
    step(f"fit {spec.name} ({spec.kind}) on {es.n_compounds:,} compounds x {es.n_genes:,} genes")
    model = fit_spec(es, spec, seed, metric=metric)
    timings["fit_s"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    step(f"predict {len(test_ids):,} test compounds")
    pred = calibrated(model.predict(test_smiles), calibrator)
    timings["predict_s"] = time.perf_counter() - t2

    t3 = time.perf_counter()
    step(f"validate the {len(test_ids):,} x {len(genes):,} submission grid")
    values = pred.mean[:, cols] if not np.array_equal(cols, np.arange(pred.mean.shape[1])) else pred.mean
    table = long_table(test_ids, genes, values)
    try:
        counts = validate_submission(_validation_frame(table), test_compounds=list(test_ids),
                                     gene_filter=list(genes), allow_negative=es.value_scale != LOG2CPM)
    except ScoringError as exc:
        raise DrugcellInputError(f"the predicted grid failed validation; nothing written to {out}: {exc}") from None
    if counts.get("rows") != len(test_ids) * len(genes):
        raise DrugcellInputError(f"the predicted grid has {counts.get('rows')} rows, expected "
                                 f"{len(test_ids) * len(genes)}; nothing written to {out}")
    timings["validate_s"] = time.perf_counter() - t3
    if save_model_dir is not None:  # only a model whose submission validated replaces an earlier one
        step(f"save the model to {save_model_dir}")
        save_model(model, save_model_dir, train_info=es, name=spec.name, seed=seed, overwrite=overwrite,
                   calibrator=calibrator)

    t4 = time.perf_counter()
    step(f"write {out}" + (" and its std sidecar" if write_std and pred.std is not None else ""))
    info = {k: float(v) for k, v in pred.info.items()}
    audit = report.to_dict()
    std_out = std_path(out) if (write_std and pred.std is not None) else None
    with submission_files(out).write() as stage:
        pq.write_table(table, stage.path(out.name), compression="zstd")
        if std_out is not None:
            pq.write_table(long_table(test_ids, genes, pred.std[:, cols], "predicted_std"),
                           stage.path(std_out.name), compression="zstd")
        timings["write_s"] = time.perf_counter() - t4
        timings["total_s"] = time.perf_counter() - t0
        manifest = provenance(
            config={"predictor": spec.to_dict(), "seed": seed}, seed=seed, data_fingerprint=es.fingerprint(),
            command="drugcell submit", predictor=spec.name, n_compounds=len(test_ids), n_genes=len(genes),
            n_rows=table.num_rows, value_scale=es.value_scale, test_compounds_file=str(test_compounds),
            test_compounds_fingerprint=fingerprint_files([test_compounds]),
            gene_filter_fingerprint=fingerprint_files([gene_filter]), prediction_info=info, audit=audit,
            allow_stereo_overlap=allow_stereo_overlap, condition=condition, unparsed_test_compounds=parse.unparsed,
            files={"submission": _file_entry(stage.path(out.name)),
                   "std": None if std_out is None else _file_entry(stage.path(std_out.name))},
            std_file=str(std_out) if std_out else None, std_scale=None if calibrator is None else calibrator.scale,
            calibrator=None if calibrator is None else calibrator.to_dict(),
            saved_model=str(save_model_dir) if save_model_dir else None,
            timings_s={k: round(v, 2) for k, v in timings.items()},
        )
        stage.path(manifest_path(out).name).write_text(strict_json(manifest, indent=2, sort_keys=True) + "\n")
    warnings = [w for w in [parse.warning()] if w]
    return SubmissionResult(out=out, predictor=spec, n_compounds=len(test_ids), n_genes=len(genes),
                            n_rows=table.num_rows, audit=audit, audit_line=report.describe(), info=info,
                            std_out=std_out, timings=timings, warnings=warnings, notes=notes)
