"""The CV runner: folds x predictors x metrics -> per-compound scores, ranking, paired bootstrap.

The runner knows nothing about any one predictor: it builds each from its config entry through
the registry, fits it on the training fold and predicts the held-out compounds *by SMILES only*
(the held-out truth never reaches a predictor). Every fold is leak-audited before anything is fit.
Held-out Mejia weights come from the ExpressionSet (or the official weights file the user passes),
never from predictions; the proxy metric's gene weights come from the training fold's truth.

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
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from drugcell.config import RunConfig
from drugcell.defaults import COMPOUND_COL, SMILES_COL
from drugcell.errors import DrugcellInputError
from drugcell.progress import bar as progress_bar
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


# ----------------------------------------------------------------------------- scoring
class _FoldScorer:
    """Per-fold scoring state computed once and shared by every predictor of the fold.

    The weights come from the metric registry (held-out Mejia weights from the ExpressionSet;
    proxy from the training fold's truth; never from predictions). Scoring squares the error once
    in float32 and reduces it per metric: a row-wise dot with the compound-major Mejia weights,
    a matrix-vector product for per-gene weights (the arithmetic of
    ``contest_scorer.per_compound_wmse``, without recomputing the error per metric).
    """

    def __init__(self, es, train_expr: np.ndarray, test_idx: np.ndarray, metrics: tuple[str, ...]):
        from drugcell.metrics import metric_weights

        self.truth = np.asarray(es.expression[test_idx], dtype=np.float32)
        weights_cg = np.ascontiguousarray(np.asarray(es.weights, dtype=np.float32)[:, test_idx].T)
        self.weights: dict[str, np.ndarray] = {}
        for m in metrics:
            w = np.asarray(metric_weights(m, self.truth, test_weights_gc=weights_cg.T, train_truth_cg=train_expr))
            # (G, n) per compound -> store compound-major (n, G); (G,) per gene -> float32 vector
            self.weights[m] = weights_cg if w.ndim == 2 else w.astype(np.float32)

    def score(self, pred: np.ndarray) -> dict[str, np.ndarray]:
        sq = np.subtract(pred, self.truth, dtype=np.float32)
        np.square(sq, out=sq)
        out = {}
        for m, w in self.weights.items():
            if w.ndim == 2:
                out[m] = np.einsum("cg,cg->c", sq, w, dtype=np.float64)
            else:
                out[m] = (sq @ w).astype(np.float64)
        return out


def _uncertainty_sample(pred, truth, n_max: int, rng: np.random.Generator):
    """A uniform sample of (row, gene) cells without replacement, flat indices sorted."""
    n_cells = truth.size
    k = min(n_max, n_cells)
    flat = np.sort(rng.choice(n_cells, size=k, replace=False)) if k < n_cells else np.arange(n_cells)
    rows, cols = np.divmod(flat, truth.shape[1])
    err = pred.mean.ravel()[flat] - truth.ravel()[flat]
    std = pred.std.ravel()[flat]
    return rows, cols, err.astype(np.float32), std.astype(np.float32)


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


class _Recorder:
    """Everything a run keeps per (fold, predictor): scores, counters, uncertainty samples, saved
    predictions and the leaderboard estimate's terms."""

    def __init__(self, es, config: RunConfig, out: Path) -> None:
        self.config = config
        self.compounds = np.asarray(es.compounds).astype(str)
        self.compound_cats = pd.Index(self.compounds)
        self.gene_cats = pd.Index(np.asarray(es.genes).astype(str))
        self.scores: list[pd.DataFrame] = []
        self.diag: list[dict[str, Any]] = []
        self.unc: list[pd.DataFrame] = []
        self.rng = np.random.default_rng(config.seed)
        self.estimator = _estimator(es, config)
        self.pred_store: dict[str, np.ndarray] = {}
        if config.output.save_predictions:
            (out / "predictions").mkdir(exist_ok=True)
            for spec in config.predictors:
                self.pred_store[spec.name] = np.lib.format.open_memmap(
                    out / "predictions" / f".{spec.name}.npy.tmp", mode="w+", dtype=np.float32,
                    shape=es.expression.shape)

    def record(self, name: str, k: int, test_idx: np.ndarray, pred, scorer: _FoldScorer,
               seconds: dict[str, float]) -> None:
        per_metric = scorer.score(pred.mean)
        # the residual matrix feeds only the plate-aware estimate: skip it when the data have no plates
        resid = (np.subtract(pred.mean, scorer.truth, dtype=np.float32)
                 if self.estimator.model is not None else None)
        for m, vals in per_metric.items():
            self.estimator.add(name, m, test_idx, resid, scorer.weights[m], vals)
            self.scores.append(pd.DataFrame({"predictor": name, "fold": np.int32(k),
                                             COMPOUND_COL: self.compounds[test_idx], "metric": m, "wmse": vals}))
        del resid
        counters = {**seconds, **{c: float(v) for c, v in pred.info.items()}}
        self.diag += [{"predictor": name, "fold": int(k), "counter": c, "value": float(v)}
                      for c, v in counters.items()]
        if pred.std is not None and self.config.output.uncertainty_sample > 0:
            rows, cols, err, std = _uncertainty_sample(pred, scorer.truth, self.config.output.uncertainty_sample,
                                                       self.rng)
            self.unc.append(pd.DataFrame({  # ids as categoricals: millions of rows, few strings
                "predictor": name, "fold": np.int32(k),
                COMPOUND_COL: pd.Categorical.from_codes(test_idx[rows], categories=self.compound_cats),
                "gene": pd.Categorical.from_codes(cols, categories=self.gene_cats), "error": err, "std": std,
            }))
        if name in self.pred_store:
            self.pred_store[name][test_idx] = pred.mean

    def write(self, out: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame | None]:
        """scores, diagnostics, uncertainty and saved predictions, each written atomically."""
        scores = pd.concat(self.scores, ignore_index=True)
        diagnostics = pd.DataFrame(self.diag, columns=["predictor", "fold", "counter", "value"])
        uncertainty = pd.concat(self.unc, ignore_index=True) if self.unc else None
        for name, frame in (("scores", scores), ("diagnostics", diagnostics), ("uncertainty", uncertainty)):
            if frame is not None:
                with atomic_path(out / f"{name}.parquet") as tmp:
                    frame.to_parquet(tmp, index=False)
        for name, mm in self.pred_store.items():
            mm.flush()
            tmp_path = Path(mm.filename)
            del mm
            tmp_path.replace(out / "predictions" / f"{name}.npy")
        return scores, diagnostics, uncertainty


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


def _run_folds(es, config: RunConfig, fold_of: np.ndarray, rec: _Recorder, stages: _Stages,
               progress: bool) -> None:
    """Fit every predictor on every training fold; score and record its held-out predictions."""
    smiles = np.asarray(es.smiles).astype(str)
    fold_ids = np.unique(fold_of)
    bar = progress_bar(total=len(fold_ids) * len(config.predictors), desc="cv", unit="fit", disable=not progress)
    for k in fold_ids:
        test_idx = np.flatnonzero(fold_of == k)
        train = es.subset(np.flatnonzero(fold_of != k))
        scorer = _FoldScorer(es, train.expression, test_idx, config.metrics)
        for m, w in scorer.weights.items():
            rec.estimator.add_fold_weights(m, test_idx, w)
        test_smiles = list(smiles[test_idx])
        stages.lap("fold_setup")
        for spec in config.predictors:
            bar.set_postfix_str(f"fold {k} {spec.name}")
            t0 = time.perf_counter()
            model = spec.build(metric=config.metrics[0]).fit(train, seed=config.seed)
            t1 = time.perf_counter()
            pred = model.predict(test_smiles)
            seconds = {"fit_s": t1 - t0, "predict_s": time.perf_counter() - t1}
            stages.lap("fit_predict")
            rec.record(spec.name, int(k), test_idx, pred, scorer, seconds)
            del model, pred
            bar.update(1)
            stages.lap("score_record")
        del train, scorer
    bar.close()


def run_cv(es, config: RunConfig, out_dir: str | Path, *, progress: bool = True, overwrite: bool = False) -> CVResult:
    """Cross-validate every predictor of ``config`` on ``es`` and write the run dir.

    ``out_dir`` must be new or empty, or an earlier run with ``overwrite`` (checked first,
    :func:`~drugcell.evaluation.run_dir.check_run_dir`). The run is written into a staging folder
    and appears at ``out_dir`` only when complete (:func:`~drugcell.evaluation.run_dir.staged_run`).
    Raises :class:`drugcell.splits.audit.LeakError` if a fold leaks, before fitting anything.
    """
    from drugcell.evaluation.run_dir import check_run_dir, staged_run

    out = Path(out_dir)
    check_run_dir(out, overwrite)
    if config.output.weights_file:  # checked before any folder is made
        es = es.with_weights_parquet(config.output.weights_file)
    with staged_run(out, overwrite) as stage:
        result = _run(es, config, stage, progress)
    result.out_dir = out
    return result


def _run(es, config: RunConfig, out: Path, progress: bool) -> CVResult:
    """The run itself, every file written into ``out`` (the staging folder)."""
    from drugcell.evaluation.bootstrap import compare_all
    from drugcell.evaluation.run_report import choice_markdown, estimate_markdown, render_summary_md
    from drugcell.evaluation.summary import ranking_markdown, summarize

    stages = _Stages()
    t_start = stages.t
    assignment, fold_of, folds_df, audits = _folds_and_audit(es, config, out)
    stages.lap("folds_audit")
    rec = _Recorder(es, config, out)
    _run_folds(es, config, fold_of, rec, stages, progress)
    scores, diagnostics, uncertainty = rec.write(out)
    stages.lap("write_scores")

    summary = summarize(scores, notes=[assignment.warning] if assignment.warning else [])
    comparisons = compare_all(scores, n_resamples=config.bootstrap_resamples, seed=config.seed)
    stages.lap("summary_bootstrap")
    choices = _choose(scores, comparisons, config)
    write_json(out / "choice.json", {m: c.as_dict() for m, c in choices.items()})
    names = [p.name for p in config.predictors]
    estimate = rec.estimator.finish(reference=next((r for r in ("wmean", "mean") if r in names), None))
    stages.lap("leaderboard_estimate")
    for name, frame in (("summary", summary.table), ("agreement", summary.agreement),
                        ("comparisons", comparisons), ("leaderboard_estimate", estimate)):
        with atomic_path(out / f"{name}.parquet") as tmp:
            frame.to_parquet(tmp, index=False)
    elapsed = time.perf_counter() - t_start
    no_plates = _no_plates(es, rec.estimator.model)
    report = render_summary_md(summary, comparisons, diagnostics, config, audits, es.n_compounds, es.n_genes,
                               elapsed, assignment.describe(), choices=choices, estimate=estimate,
                               uncertainty=uncertainty, scores=scores,
                               has_plates=not no_plates, no_plates_reason=no_plates, split=assignment.split)
    write_text(out / "summary.md", report)
    write_json(out / "manifest.json", provenance(
        config=config.to_dict(), seed=config.seed, data_fingerprint=es.fingerprint(),
        command="drugcell cv", split=assignment.split, n_compounds=es.n_compounds, n_genes=es.n_genes,
        data_info=getattr(es, "info", {}), elapsed_s=round(elapsed, 1),
        stages_s={k: round(v, 2) for k, v in stages.seconds.items()},
        files=sorted(p.name for p in out.iterdir() if not p.name.startswith(".")),
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
