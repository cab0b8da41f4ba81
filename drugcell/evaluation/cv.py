"""The CV runner: folds x predictors x metrics -> per-compound scores, ranking, paired bootstrap.

The runner knows nothing about any one predictor: it builds each from its config entry through
the registry, fits it on the training fold and predicts the held-out compounds *by SMILES only*
(the held-out truth never reaches a predictor). Every fold is leak-audited before anything is fit.
Held-out Mejia weights come from the ExpressionSet (or the official weights file the user passes),
never from predictions; the proxy metric's gene weights come from the training fold's truth.

Run dir layout (``out_dir``)::

    scores.parquet        predictor, fold, compound, metric, wmse  (one row per combination)
    folds.parquet         compound, fold, scaffold, smiles
    diagnostics.parquet   predictor, fold, counter, value  (n_fallback, n_clipped, fit_s, ...)
    audit.json            one leak-audit report per fold
    summary.parquet       per (metric, predictor): mean, fold mean and std, rank
    agreement.parquet     Kendall tau between metric rankings, and the pairs that flip
    comparisons.parquet   paired bootstrap for every pair of predictors per metric
    summary.md            the readable report
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
from tqdm.auto import tqdm

from drugcell.config import RunConfig
from drugcell.defaults import COMPOUND_COL, SMILES_COL
from drugcell.errors import DrugcellInputError
from drugcell.provenance import atomic_path, provenance, write_json, write_text
from drugcell.reporting import frame_table

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
def run_cv(es, config: RunConfig, out_dir: str | Path, *, progress: bool = True) -> CVResult:
    """Cross-validate every predictor of ``config`` on ``es`` and write the run dir.

    Raises :class:`drugcell.splits.audit.LeakError` if a fold leaks, before fitting anything.
    """
    from drugcell.splits.folds import make_folds

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if config.output.weights_file:
        es = es.with_weights_parquet(config.output.weights_file)
    t_start = time.perf_counter()
    stages: dict[str, float] = {}  # wall seconds per stage (manifest), to see where a run spends time

    def lap(name: str, t0: float) -> float:
        now = time.perf_counter()
        stages[name] = stages.get(name, 0.0) + now - t0
        return now

    compounds = np.asarray(es.compounds).astype(str)
    smiles = np.asarray(es.smiles).astype(str)
    n_comp, n_genes = es.expression.shape
    t = time.perf_counter()
    assignment = make_folds(list(smiles), config.split, config.folds, config.seed)
    fold_of = np.asarray(assignment.folds, dtype=np.int32)
    fold_ids = np.unique(fold_of)
    folds_df = pd.DataFrame({  # scaffolds come from make_folds: the SMILES are parsed once
        COMPOUND_COL: compounds, "fold": fold_of, "scaffold": np.asarray(assignment.scaffolds, dtype=object),
        SMILES_COL: smiles,
    })
    with atomic_path(out / "folds.parquet") as tmp:
        folds_df.to_parquet(tmp, index=False)
    t = lap("folds", t)

    # Audit every fold first: a leak refuses the whole run before hours of fitting.
    audits = []
    for k in fold_ids:
        test_idx = np.flatnonzero(fold_of == k)
        train_idx = np.flatnonzero(fold_of != k)
        audits.append(_audit(smiles, compounds, train_idx, test_idx, int(k)))
    write_json(out / "audit.json", {"split": assignment.to_dict(), "folds": audits})
    t = lap("audit", t)

    pred_store = {}
    if config.output.save_predictions:
        (out / "predictions").mkdir(exist_ok=True)
        for spec in config.predictors:
            pred_store[spec.name] = np.lib.format.open_memmap(
                out / "predictions" / f".{spec.name}.npy.tmp", mode="w+", dtype=np.float32,
                shape=(n_comp, n_genes),
            )

    compound_cats = pd.Index(compounds)
    gene_cats = pd.Index(np.asarray(es.genes).astype(str))
    score_parts: list[pd.DataFrame] = []
    diag_rows: list[dict[str, Any]] = []
    unc_parts: list[pd.DataFrame] = []
    rng = np.random.default_rng(config.seed)
    bar = tqdm(total=len(fold_ids) * len(config.predictors), desc="cv", unit="fit", disable=not progress)
    for k in fold_ids:
        test_idx = np.flatnonzero(fold_of == k)
        train_idx = np.flatnonzero(fold_of != k)
        train = es.subset(train_idx)
        scorer = _FoldScorer(es, train.expression, test_idx, config.metrics)
        t = lap("fold_setup", t)
        test_smiles = list(smiles[test_idx])
        test_names = compounds[test_idx]
        for spec in config.predictors:
            bar.set_postfix_str(f"fold {k} {spec.name}")
            t0 = time.perf_counter()
            model = spec.build(metric=config.metrics[0]).fit(train, seed=config.seed)
            t1 = time.perf_counter()
            pred = model.predict(test_smiles)
            t2 = time.perf_counter()
            t = lap("fit_predict", t)
            per_metric = scorer.score(pred.mean)
            for m, vals in per_metric.items():
                score_parts.append(pd.DataFrame({
                    "predictor": spec.name, "fold": np.int32(k), COMPOUND_COL: test_names,
                    "metric": m, "wmse": vals,
                }))
            counters = {"fit_s": t1 - t0, "predict_s": t2 - t1, **{c: float(v) for c, v in pred.info.items()}}
            diag_rows += [{"predictor": spec.name, "fold": int(k), "counter": c, "value": float(v)}
                          for c, v in counters.items()]
            if pred.std is not None and config.output.uncertainty_sample > 0:
                rows, cols, err, std = _uncertainty_sample(pred, scorer.truth, config.output.uncertainty_sample, rng)
                unc_parts.append(pd.DataFrame({  # ids as categoricals: millions of rows, few strings
                    "predictor": spec.name, "fold": np.int32(k),
                    COMPOUND_COL: pd.Categorical.from_codes(test_idx[rows], categories=compound_cats),
                    "gene": pd.Categorical.from_codes(cols, categories=gene_cats), "error": err, "std": std,
                }))
            if spec.name in pred_store:
                pred_store[spec.name][test_idx] = pred.mean
            del model, pred
            bar.update(1)
            t = lap("score_record", t)
        del train, scorer
    bar.close()

    scores = pd.concat(score_parts, ignore_index=True)
    diagnostics = pd.DataFrame(diag_rows, columns=["predictor", "fold", "counter", "value"])
    with atomic_path(out / "scores.parquet") as tmp:
        scores.to_parquet(tmp, index=False)
    with atomic_path(out / "diagnostics.parquet") as tmp:
        diagnostics.to_parquet(tmp, index=False)
    uncertainty = pd.concat(unc_parts, ignore_index=True) if unc_parts else None
    if uncertainty is not None:
        with atomic_path(out / "uncertainty.parquet") as tmp:
            uncertainty.to_parquet(tmp, index=False)
    for name, mm in pred_store.items():
        mm.flush()
        tmp_path = Path(mm.filename)
        del mm
        tmp_path.replace(out / "predictions" / f"{name}.npy")

    from drugcell.evaluation.bootstrap import compare_all
    from drugcell.evaluation.summary import ranking_markdown, summarize

    notes = [assignment.warning] if assignment.warning else []
    t = lap("write_scores", t)
    summary = summarize(scores, notes=notes)
    t = lap("summary", t)
    comparisons = compare_all(scores, n_resamples=config.bootstrap_resamples, seed=config.seed)
    t = lap("bootstrap", t)
    choices = _choose(scores, comparisons, config)
    write_json(out / "choice.json", {m: c.as_dict() for m, c in choices.items()})
    with atomic_path(out / "summary.parquet") as tmp:
        summary.table.to_parquet(tmp, index=False)
    with atomic_path(out / "agreement.parquet") as tmp:
        summary.agreement.to_parquet(tmp, index=False)
    with atomic_path(out / "comparisons.parquet") as tmp:
        comparisons.to_parquet(tmp, index=False)
    elapsed = time.perf_counter() - t_start
    report = render_summary_md(summary, comparisons, diagnostics, config, audits,
                               n_comp, n_genes, elapsed, assignment.describe(), choices=choices)
    if uncertainty is not None:
        from drugcell.calibration.report import calibration_markdown

        report += "\n" + calibration_markdown(uncertainty)
        t = lap("calibration", t)
    write_text(out / "summary.md", report)
    write_json(out / "manifest.json", provenance(
        config=config.to_dict(), seed=config.seed, data_fingerprint=es.fingerprint(),
        command="drugcell cv", n_compounds=n_comp, n_genes=n_genes,
        data_info=getattr(es, "info", {}), elapsed_s=round(elapsed, 1),
        stages_s={k: round(v, 2) for k, v in stages.items()},
        files=sorted(p.name for p in out.iterdir() if not p.name.startswith(".")),
    ))
    return CVResult(out_dir=out, stages=stages, scores=scores, folds=folds_df, summary=summary.table,
                    agreement=summary.agreement,
                    comparisons=comparisons, diagnostics=diagnostics, audits=audits,
                    headline=(choice_markdown(choices) + ranking_markdown(summary)).rstrip(), choices=choices)


# ----------------------------------------------------------------------------- summary
def _choose(scores: pd.DataFrame, comparisons: pd.DataFrame, config: RunConfig) -> dict[str, Any]:
    """The run's selection rule under every metric (simplicity ranks from the predictor classes)."""
    from drugcell.evaluation.selection import choose
    from drugcell.models import get_class

    simplicity = {p.name: get_class(p.kind).simplicity for p in config.predictors}
    return {m: choose(scores, comparisons, m, simplicity, rule=config.select_rule, alpha=config.select_alpha)
            for m in config.metrics}


def choice_markdown(choices: dict[str, Any]) -> str:
    """The first lines of summary.md and of `drugcell cv`'s output: what was chosen and why."""
    if not choices:
        return ""
    first = next(iter(choices.values()))
    lines = ["## Chosen predictor", "", f"**{first.predictor}** under {first.metric} (rule '{first.rule}'). "
             + first.reason, ""]
    others = [f"- under {c.metric}: {c.predictor}" for c in list(choices.values())[1:]]
    return "\n".join(lines + others + ([""] if others else [])) + "\n"


def render_summary_md(summary, comparisons: pd.DataFrame, diagnostics: pd.DataFrame, config: RunConfig,
                      audits: list[dict[str, Any]], n_comp: int, n_genes: int, elapsed: float,
                      split_line: str = "", choices: dict[str, Any] | None = None) -> str:
    """The readable report: ranking per metric, metric agreement, bootstrap, fallbacks, audit."""
    lines = [
        "# drugcell cv",
        "",
        f"{n_comp} compounds x {n_genes} genes; {config.folds}-fold {config.split} split, seed {config.seed}; "
        f"{len(config.predictors)} predictors; metrics {', '.join(config.metrics)}; "
        f"{config.bootstrap_resamples} bootstrap resamples; {elapsed:.0f} s.",
        "",
        split_line,
        "",
        choice_markdown(choices or {}),
        summary.to_markdown(comparisons=comparisons),
    ]
    counters = diagnostics[diagnostics["counter"].isin(["n_fallback", "n_unparsed", "n_clipped"])]
    if not counters.empty:
        tab = counters.pivot_table(index="predictor", columns="counter", values="value", aggfunc="sum",
                                   observed=True).reset_index()
        lines += ["## Fallbacks and clipping (summed over folds)", "", frame_table(tab), ""]
    lines += ["## Leak audit", "", f"{len(audits)} folds audited; no duplicate molecule across "
              "any fold (a leak stops the run).", ""]
    lines += [f"- fold {a['fold']}: {a['n_test_scaffold_in_train']} of {a['n_test']} held-out compounds "
              f"share a scaffold with training; nearest-training Tanimoto median "
              f"{a['nearest_similarity'].get('median', float('nan')):.2f}" for a in audits]
    return "\n".join(lines) + "\n"


