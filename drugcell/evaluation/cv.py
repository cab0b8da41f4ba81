"""The CV runner: folds x predictors x metrics -> per-compound scores, ranking, paired bootstrap.

The runner knows nothing about any one predictor: it builds each from its config entry through
the registry, fits it on the training fold and predicts the held-out compounds *by SMILES only*
(the held-out truth never reaches a predictor). Every fold is leak-audited before anything is fit.
Held-out Mejia weights come from the ExpressionSet (or the official weights file the user passes),
never from predictions; the proxy metric's gene weights come from the training fold's truth.

The (fold, predictor) grid runs on an engine (:mod:`drugcell.evaluation.engines`: local or Ray),
each cell by :func:`~drugcell.evaluation.fold_task.run_part`; every finished part is written to the
staging folder as it arrives (:mod:`drugcell.evaluation.parts`), so an interrupted run can be
resumed, and all parts are then read back and recorded in (fold, predictor) order
(:mod:`drugcell.evaluation.recorder`), so neither the engine nor an interruption changes a file.

Run dir layout (``out_dir``; written into a staging folder beside it and swapped into place when
complete, :mod:`drugcell.evaluation.run_dir`)::

    scores.parquet        predictor, fold, compound, metric, wmse  (one row per combination)
    folds.parquet         compound, fold, scaffold, smiles
    diagnostics.parquet   predictor, fold, counter, value  (n_fallback, n_clipped, fit_s, ...)
    audit.json            one leak-audit report per fold
    summary.parquet       per (metric, predictor): mean, fold mean and std, rank
    agreement.parquet     Kendall tau between metric rankings, and the pairs that flip
    comparisons.parquet   paired bootstrap for every pair of predictors per metric
    summary.md            the readable report (chosen predictor and leaderboard estimate first)
    choice.json           the chosen predictor per metric, the rule and why
    leaderboard_estimate.parquet  predictor, metric, estimate, ci_low, ci_high (+ cv_mean, plate_term,
                          floor, gap_closed): the expected score on new compounds on new plates
    uncertainty.parquet   sampled (error, std) cells, for predictors with a predictive std
    predictions/<name>.npy  optional: held-out predictions (compounds x genes, ExpressionSet order)
    manifest.json         config, seed, data fingerprint, version, git commit
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from drugcell.config import RunConfig
from drugcell.defaults import COMPOUND_COL, SMILES_COL
from drugcell.errors import DrugcellInputError
from drugcell.evaluation.parts import PARTS
from drugcell.progress import step
from drugcell.provenance import atomic_path, provenance, write_json, write_text

SCORE_COLUMNS = ["predictor", "fold", COMPOUND_COL, "metric", "wmse"]


@dataclass
class CVResult:
    """What a CV run produced (the same tables are on disk under ``out_dir``)."""

    out_dir: Path
    scores: pd.DataFrame
    folds: pd.DataFrame
    summary: pd.DataFrame
    agreement: pd.DataFrame
    comparisons: pd.DataFrame
    diagnostics: pd.DataFrame
    audits: list[dict[str, Any]] = field(default_factory=list)
    stages: dict[str, float] = field(default_factory=dict)  # wall seconds per stage
    headline: str = ""  # the ranking and metric agreement (markdown), what `drugcell cv` prints

    choices: dict[str, Any] = field(default_factory=dict)  # metric -> selection.Choice
    estimate: pd.DataFrame | None = None  # leaderboard_estimate.parquet
    split: str = ""  # the split actually used, e.g. "random (fallback from scaffold: ...)" (FoldAssignment.split)

    def best(self, metric: str = "mejia") -> str:
        """The chosen predictor under ``metric`` (the run's selection rule; see choice.json)."""
        if metric in self.choices:
            return self.choices[metric].predictor
        return best_predictor(self.scores, metric)


def best_predictor(scores: pd.DataFrame, metric: str = "mejia") -> str:
    """Lowest mean over compounds (all folds pooled) under ``metric``."""
    sub = scores[scores["metric"] == metric]
    if sub.empty:
        known = ", ".join(sorted(scores["metric"].unique()))
        raise DrugcellInputError(f"no scores for metric {metric!r}; the run has: {known}")
    return str(sub.groupby("predictor", observed=True)["wmse"].mean().idxmin())


# ----------------------------------------------------------------------------- folds and audit
def _audit(smiles: np.ndarray, compounds: np.ndarray, train_idx: np.ndarray, test_idx: np.ndarray,
           fold: int) -> dict[str, Any]:
    """Refuse a fold whose held-out compounds duplicate training ones (raises LeakError)."""
    from drugcell.splits.audit import audit_split

    report = audit_split(list(smiles[train_idx]), list(smiles[test_idx]),
                         list(compounds[train_idx]), list(compounds[test_idx]), name=f"fold {fold}")
    return {"fold": fold, **report.to_dict()}


# ----------------------------------------------------------------------------- the runner
class _Stages:
    """Wall seconds per stage (written to the manifest), to see where a run spends its time; the
    stages outside the fits' progress bar are announced as steps (:func:`drugcell.progress.step`)."""

    #: the step that starts when a stage ends
    NEXT = {"write_scores": "paired bootstrap and model choice",
            "summary_bootstrap": "leaderboard estimate", "leaderboard_estimate": "write summary.md and the manifest"}

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.t = time.perf_counter()
        step("folds and leak audit")

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = self.seconds.get(name, 0.0) + now - self.t
        self.t = now
        if name in self.NEXT:
            step(self.NEXT[name])


def _folds_and_audit(es, config: RunConfig, out: Path):
    """Fold assignment (folds.parquet) and the leak audit of every fold (audit.json), before any fit."""
    from drugcell.splits.folds import make_folds

    compounds = np.asarray(es.compounds).astype(str)
    smiles = np.asarray(es.smiles).astype(str)
    assignment = make_folds(list(smiles), config.split, config.folds, config.seed)
    fold_of = np.asarray(assignment.folds, dtype=np.int32)
    folds_df = pd.DataFrame({  # scaffolds come from make_folds: the SMILES are parsed once
        COMPOUND_COL: compounds, "fold": fold_of, "scaffold": np.asarray(assignment.scaffolds, dtype=object),
        SMILES_COL: smiles,
    })
    with atomic_path(out / "folds.parquet") as tmp:
        folds_df.to_parquet(tmp, index=False)
    # Audit every fold first: a leak refuses the whole run before hours of fitting.
    audits = [_audit(smiles, compounds, np.flatnonzero(fold_of != k), np.flatnonzero(fold_of == k), int(k))
              for k in np.unique(fold_of)]
    write_json(out / "audit.json", {"split": assignment.to_dict(), "folds": audits})
    return assignment, fold_of, folds_df, audits


def _run_folds(es, config: RunConfig, fold_of: np.ndarray, stage, engine, estimator, progress: bool) -> int:
    """Every (fold, predictor) fit that has no finished part yet, on ``engine``, each part written
    to the staging folder as it arrives; returns how many parts were already there (resumed)."""
    from drugcell.evaluation.engines import FitProgress
    from drugcell.evaluation.parts import PredictionStore, read_part, write_part

    specs = {p.name: p for p in config.predictors}
    grid = [(int(k), p.name) for k in np.unique(fold_of) for p in config.predictors]
    store = None
    if config.output.save_predictions:
        store = PredictionStore(stage.path, list(specs), es.expression.shape, stage.resumed)
    done = set()
    if stage.resumed:
        done = {(k, n) for k, n in grid if read_part(stage.path, k, n, specs[n].to_dict()) is not None}
    bar = FitProgress(len(grid), len(done), progress)

    def on_part(part) -> None:
        if store is not None:
            store.put(part.predictor, np.flatnonzero(fold_of == part.fold), part.predictions)
        write_part(stage.path, part, specs[part.predictor].to_dict())
        bar.update(part)

    try:
        engine.run(es, config, fold_of, estimator.model, [(k, specs[n]) for k, n in grid if (k, n) not in done],
                   on_part)
    finally:
        bar.close()
    if store is not None:
        store.finish()
    return len(done)


def _record(es, config: RunConfig, fold_of: np.ndarray, stage, estimator):
    """Every part, read back from the staging folder, in (fold, predictor) order."""
    from drugcell.evaluation.parts import read_part
    from drugcell.evaluation.recorder import Recorder

    rec = Recorder(es, estimator)
    for k in np.unique(fold_of):
        test_idx = np.flatnonzero(fold_of == k)
        for spec in config.predictors:
            part = read_part(stage.path, int(k), spec.name, spec.to_dict())
            if part is None:
                raise RuntimeError(f"the part of fold {k}, {spec.name} is missing from {stage.path}")
            rec.add(part, test_idx)
    return rec.write(stage.path)


def run_state(es, config: RunConfig, threads: int) -> dict[str, Any]:
    """What a resumed run must share with the run it finishes (:data:`~drugcell.evaluation.parts.STATE_KEYS`)."""
    from drugcell import __version__

    cfg = config.to_dict()
    cfg.pop("source", None)  # where the TOML came from: the same settings may come by another path
    return {"config": cfg, "data_fingerprint": es.fingerprint(), "threads": int(threads),
            "drugcell_version": __version__, "started_utc": datetime.now(UTC).isoformat(timespec="seconds")}


def run_cv(es, config: RunConfig, out_dir: str | Path, *, progress: bool = True, overwrite: bool = False,
           resume: bool = False, engine=None) -> CVResult:
    """Cross-validate every predictor of ``config`` on ``es`` and write the run dir.

    ``out_dir`` must be new or empty, or an earlier run with ``overwrite`` (checked first,
    :func:`~drugcell.evaluation.run_dir.check_run_dir`); ``resume`` finishes the interrupted run
    of ``out_dir`` (same config, data, threads and drugcell version, else refused naming what
    differs) from its finished parts. ``engine`` runs the fits
    (:func:`~drugcell.evaluation.engines.make_engine`; default: local, one BLAS thread per fit);
    the result files do not depend on it. The run is written into a staging folder and appears at
    ``out_dir`` only when complete (:func:`~drugcell.evaluation.run_dir.staged_run`); an interrupted
    or failed run keeps it for ``resume``.
    Raises :class:`drugcell.splits.audit.LeakError` if a fold leaks, before fitting anything.
    """
    from drugcell.evaluation.engines import LocalEngine
    from drugcell.evaluation.run_dir import check_run_dir, staged_run

    out = Path(out_dir)
    engine = engine or LocalEngine()
    check_run_dir(out, overwrite, resume)
    if config.output.weights_file:  # checked before any folder is made
        es = es.with_weights_parquet(config.output.weights_file)
    with staged_run(out, overwrite, resume=resume, state=run_state(es, config, engine.threads)) as stage:
        result = _run(es, config, stage, progress, engine)
    result.out_dir = out
    return result


def _run(es, config: RunConfig, stage, progress: bool, engine) -> CVResult:
    """The run itself, every file written into ``stage.path`` (the staging folder)."""
    from drugcell.evaluation.bootstrap import compare_all
    from drugcell.evaluation.run_report import choice_markdown, estimate_markdown, render_summary_md
    from drugcell.evaluation.summary import ranking_markdown, summarize

    out = stage.path
    stages = _Stages()
    t_start = stages.t
    assignment, fold_of, folds_df, audits = _folds_and_audit(es, config, out)
    stages.lap("folds_audit")
    estimator = _estimator(es, config)
    reused = _run_folds(es, config, fold_of, stage, engine, estimator, progress)
    stages.lap("fits")
    scores, diagnostics, uncertainty = _record(es, config, fold_of, stage, estimator)
    stages.lap("write_scores")

    summary = summarize(scores, notes=[assignment.warning] if assignment.warning else [])
    comparisons = compare_all(scores, n_resamples=config.bootstrap_resamples, seed=config.seed)
    stages.lap("summary_bootstrap")
    choices = _choose(scores, comparisons, config)
    write_json(out / "choice.json", {m: c.as_dict() for m, c in choices.items()})
    names = [p.name for p in config.predictors]
    estimate = estimator.finish(reference=next((r for r in ("wmean", "mean") if r in names), None))
    stages.lap("leaderboard_estimate")
    for name, frame in (("summary", summary.table), ("agreement", summary.agreement),
                        ("comparisons", comparisons), ("leaderboard_estimate", estimate)):
        with atomic_path(out / f"{name}.parquet") as tmp:
            frame.to_parquet(tmp, index=False)
    elapsed = time.perf_counter() - t_start
    no_plates = _no_plates(es, estimator.model)
    report = render_summary_md(summary, comparisons, diagnostics, config, audits, es.n_compounds, es.n_genes,
                               elapsed, assignment.describe(), choices=choices, estimate=estimate,
                               uncertainty=uncertainty, scores=scores,
                               has_plates=not no_plates, no_plates_reason=no_plates, split=assignment.split)
    write_text(out / "summary.md", report)
    resumed = {"resumed": {"started_utc": stage.recorded.get("started_utc"), "fits_reused": reused}} \
        if stage.resumed else {}
    write_json(out / "manifest.json", provenance(
        config=config.to_dict(), seed=config.seed, data_fingerprint=es.fingerprint(),
        command="drugcell cv", split=assignment.split, n_compounds=es.n_compounds, n_genes=es.n_genes,
        data_info=getattr(es, "info", {}), elapsed_s=round(elapsed, 1),
        stages_s={k: round(v, 2) for k, v in stages.seconds.items()}, engine=engine.describe(), **resumed,
        files=sorted(p.name for p in out.iterdir() if not p.name.startswith(".") and p.name != PARTS),
    ))
    return CVResult(out_dir=out, stages=stages.seconds, scores=scores, folds=folds_df, summary=summary.table,
                    agreement=summary.agreement, comparisons=comparisons, diagnostics=diagnostics, audits=audits,
                    headline=(_fallback_note(assignment) + choice_markdown(choices) + estimate_markdown(
                        estimate, config, scores, not no_plates, no_plates)
                        + ranking_markdown(summary)).rstrip(),
                    choices=choices,
                    estimate=estimate, split=assignment.split)


def _fallback_note(assignment) -> str:
    """A first line of the printed headline when the requested split could not be made."""
    return "" if assignment.warning is None else f"**Split: {assignment.split}.** {assignment.warning}\n\n"


# ----------------------------------------------------------------------------- summary
def _estimator(es, config: RunConfig):
    """The leaderboard estimator: with the data's plate layout when it has one."""
    from drugcell.evaluation.leaderboard import LeaderboardEstimator, PlateModel, TestLayout

    reps = config.estimate.test_replicates or max(1, int(np.median(es.n_replicates)))
    layout = TestLayout(plates=config.estimate.test_plates, replicates=reps, compounds=config.estimate.test_compounds)
    model = None if es.plates is None else PlateModel.from_layout(es.plates, layout)
    return LeaderboardEstimator(es.n_compounds, model, resamples=config.estimate.resamples, seed=config.seed,
                                test_compounds=config.estimate.test_compounds)


def _no_plates(es, model) -> str:
    """Why a run has no plate-aware estimate (empty when it has one, i.e. ``model`` is not None)."""
    if es.plates is None:
        if int(es.info.get("cache_format_version", 3)) < 3:
            return "the cache predates plate layouts: re-run `drugcell load` to record them"
        return "the data set records no plates (e.g. L1000 adapters)"
    n = int(es.plates.usable().sum())
    if n < 3:
        return f"only {n} plate(s) with two or more DMSO wells; 3 are needed"
    return "" if model is not None else "fewer than 3 plates hold enough library compounds"


def _choose(scores: pd.DataFrame, comparisons: pd.DataFrame, config: RunConfig) -> dict[str, Any]:
    """The run's selection rule under every metric (simplicity ranks from the predictor classes)."""
    from drugcell.evaluation.selection import choose
    from drugcell.models import get_class

    simplicity = {p.name: get_class(p.kind).simplicity for p in config.predictors}
    return {m: choose(scores, comparisons, m, simplicity, rule=config.select_rule, alpha=config.select_alpha)
            for m in config.metrics}
