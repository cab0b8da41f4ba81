"""The ranking figure: every predictor's mean wMSE under the headline metric with a 95% interval,
and its paired difference from the reference (wmean, else mean), chosen and reference marked.

The interval of a mean resamples compounds (``evaluation.bootstrap.bootstrap_means``, compounds in
id order, the run's seed and resample count: the same draws as the paired bootstrap in
comparisons.parquet). The difference from the reference and its Holm p are read from
comparisons.parquet as `drugcell cv` computed them. A run without scores.parquet falls back to a
normal interval over the fold means of summary.parquet.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from drugcell.evaluation.bootstrap import bootstrap_means
from drugcell.report.html import Section, caption, note, table
from drugcell.report.plotting import (
    figure_html,
    new_figure,
    predictor_colour,
    tick_label,
    wmse_label,
)
from drugcell.report.run import Run
from drugcell.reporting import fmt_number

DEFAULT_ALPHA = 0.05
DEFAULT_RESAMPLES = 10_000
#: Resamples for the interval of each mean: the first draws of the run's paired bootstrap. 2,000 pin a
#: 95% percentile interval to about 1% of its width and take ~3 s at contest scale (14,000 compounds x
#: 18 predictors; the run's 10,000 took 16 s on the project's 2-core box).
MAX_INTERVAL_RESAMPLES = 2_000


def bootstrap_settings(run: Run) -> tuple[int, int]:
    """(resamples, seed) of the run's paired bootstrap: comparisons.parquet, else the config."""
    comp = run.table("comparisons")
    if comp is not None and {"n_resamples", "seed"} <= set(comp.columns) and len(comp):
        return int(comp["n_resamples"].iloc[0]), int(comp["seed"].iloc[0])
    cv = run.config.get("cv", {}) if isinstance(run.config.get("cv"), dict) else {}
    return int(cv.get("bootstrap_resamples", DEFAULT_RESAMPLES)), int(cv.get("seed", 0))


def compound_intervals(scores: pd.DataFrame, metric: str, n_resamples: int, seed: int,
                       ci: float = 0.95) -> pd.DataFrame:
    """Per predictor: mean over compounds and its percentile interval from resampled compounds.

    Compounds are taken in id order and resampled together for all predictors (paired), so the
    draws are those of ``compare_all`` with the same seed. Columns: predictor, mean, ci_low,
    ci_high, n_compounds.
    """
    sub = scores[scores["metric"].astype(str) == metric]
    wide = sub.pivot_table(index="compound", columns="predictor", values="wmse", aggfunc="mean",
                           observed=True).sort_index()
    rows = []
    lo_q, hi_q = (1 - ci) / 2, 1 - (1 - ci) / 2
    if len(wide) and not wide.isna().any().any():
        boot = bootstrap_means(wide.to_numpy(np.float64), n_resamples, seed)
        lo, hi = np.quantile(boot, [lo_q, hi_q], axis=0)
        for j, p in enumerate(wide.columns):
            rows.append((str(p), float(wide[p].mean()), float(lo[j]), float(hi[j]), len(wide)))
    else:  # holes: each predictor on its own compounds
        for p in wide.columns:
            v = wide[p].dropna().to_numpy(np.float64)
            if v.size == 0:
                continue
            b = bootstrap_means(v, n_resamples, seed)[:, 0]
            rows.append((str(p), float(v.mean()), *map(float, np.quantile(b, [lo_q, hi_q])), v.size))
    return pd.DataFrame(rows, columns=["predictor", "mean", "ci_low", "ci_high", "n_compounds"])


def fold_intervals(summary: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The fallback without scores: mean +- 1.96 fold std / sqrt(folds) (NaN with one fold)."""
    sub = summary[summary["metric"].astype(str) == metric]
    half = pd.Series(np.nan, index=sub.index)
    if {"fold_std", "n_folds"} <= set(sub.columns):
        half = 1.96 * sub["fold_std"].astype(float) / np.sqrt(sub["n_folds"].astype(float).clip(lower=1))
    return pd.DataFrame({"predictor": sub["predictor"].astype(str), "mean": sub["mean"].astype(float),
                         "ci_low": sub["mean"] - half, "ci_high": sub["mean"] + half,
                         "n_compounds": sub.get("n_compounds", np.nan)}).reset_index(drop=True)


def vs_reference(comparisons: pd.DataFrame | None, metric: str, reference: str | None) -> pd.DataFrame:
    """Each predictor's paired difference from the reference (predictor - reference): diff,
    ci_low, ci_high and Holm p, read from comparisons.parquet (either orientation of the pair)."""
    cols = ["predictor", "diff", "ci_low", "ci_high", "p_holm"]
    if comparisons is None or reference is None:
        return pd.DataFrame(columns=cols)
    comp = comparisons[comparisons["metric"].astype(str) == metric]
    rows = [(reference, 0.0, 0.0, 0.0, float("nan"))]
    for r in comp.itertuples(index=False):
        p = float(getattr(r, "p_holm", float("nan")))
        if r.predictor_b == reference:
            rows.append((str(r.predictor_a), float(r.diff), float(r.ci_low), float(r.ci_high), p))
        elif r.predictor_a == reference:
            rows.append((str(r.predictor_b), -float(r.diff), -float(r.ci_high), -float(r.ci_low), p))
    return pd.DataFrame(rows, columns=cols).drop_duplicates("predictor")


def _intervals(run: Run, metric: str) -> tuple[pd.DataFrame | None, str]:
    scores, summary = run.table("scores"), run.table("summary")
    if scores is not None and (scores["metric"].astype(str) == metric).any():
        n_run, seed = bootstrap_settings(run)
        n = min(n_run, MAX_INTERVAL_RESAMPLES)
        return compound_intervals(scores, metric, n, seed), (
            f"95% percentile interval of the mean over {n:,} resamples of the compounds (seed {seed}; "
            + ("the draws" if n == n_run else f"the first {n:,} of the {n_run:,} draws") + " of the run's paired "
            "bootstrap)")
    if summary is not None and (summary["metric"].astype(str) == metric).any():
        return fold_intervals(summary, metric), (
            f"interval: mean +- 1.96 x fold std / sqrt(folds) from summary.parquet ({run.missing('scores.parquet')})")
    return None, ""


def _plot(iv: pd.DataFrame, diffs: pd.DataFrame, metric: str, chosen: str | None, reference: str | None,
          alpha: float) -> str:
    two = len(diffs) > 1
    fig = new_figure(11 if two else 7, 1.2 + 0.38 * len(iv))
    axes = fig.subplots(1, 2, sharey=True, gridspec_kw={"width_ratios": [3, 2]}) if two else [fig.subplots()]
    y = np.arange(len(iv))[::-1]
    ax = axes[0]
    for yi, r in zip(y, iv.itertuples(index=False)):
        c = predictor_colour(r.predictor, chosen, reference)
        err = [[r.mean - r.ci_low], [r.ci_high - r.mean]] if math.isfinite(r.ci_low) else None
        ax.errorbar(r.mean, yi, xerr=err, fmt="*" if r.predictor == chosen else "o", color=c, capsize=3,
                    markersize=11 if r.predictor == chosen else 6)
    ax.set_yticks(y, [tick_label(p, chosen, reference) for p in iv["predictor"]])
    ax.set_xlabel(wmse_label(metric))
    ax.set_title(f"mean wMSE under {metric}, 95% interval (lower is better)", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    if two:
        bx = axes[1]
        pos = dict(zip(iv["predictor"], y))
        for r in diffs.itertuples(index=False):
            if r.predictor not in pos or r.predictor == reference:
                continue
            sig = math.isfinite(r.p_holm) and r.p_holm < alpha
            c = predictor_colour(r.predictor, chosen, reference)
            bx.errorbar(r.diff, pos[r.predictor], xerr=[[r.diff - r.ci_low], [r.ci_high - r.diff]], fmt="o",
                        color=c, mfc=c if sig else "white", capsize=3)
        bx.axvline(0, color="k", lw=0.8, ls="--")
        bx.set_xlabel(f"{metric} wMSE of log2(CPM+1): predictor - {reference} (paired)")
        bx.set_title(f"difference from {reference}; filled: Holm p < {alpha:g}", fontsize=10)
        bx.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return figure_html(fig, f"ranking under {metric} with 95% intervals")


def _table(iv: pd.DataFrame, diffs: pd.DataFrame, summary: pd.DataFrame | None, metric: str,
           chosen: str | None, reference: str | None) -> str:
    d = diffs.set_index("predictor") if len(diffs) else None
    fs = {}
    if summary is not None and "fold_std" in summary.columns:
        sub = summary[summary["metric"].astype(str) == metric]
        fs = dict(zip(sub["predictor"].astype(str), sub["fold_std"]))
    rows, classes = [], []
    for rank, r in enumerate(iv.itertuples(index=False), start=1):
        role = ", ".join(m for m, hit in (("chosen", r.predictor == chosen), ("reference", r.predictor == reference))
                         if hit)
        vs, p = "", ""
        if d is not None and r.predictor in d.index and r.predictor != reference:
            x = d.loc[r.predictor]
            vs = f"{x['diff']:+.4f} [{x['ci_low']:+.4f}, {x['ci_high']:+.4f}]"
            p = fmt_number(x["p_holm"], 3, missing="")
        rows.append([str(rank), r.predictor, fmt_number(r.mean), f"[{fmt_number(r.ci_low)}, {fmt_number(r.ci_high)}]",
                     fmt_number(fs.get(r.predictor), missing=""), vs, p, role])
        classes.append("chosen" if r.predictor == chosen else "")
    header = ["#", "predictor", f"mean {metric} wMSE of log2(CPM+1)", "95% interval", "fold std",
              f"minus {reference or 'reference'} [95% CI]", "p (Holm)", ""]
    return table(header, rows, numeric_from=2, row_classes=classes)


def ranking_section(run: Run) -> Section:
    """The ranking under the headline metric as a plot with intervals, and as a table."""
    sec = Section("ranking", "Ranking with bootstrap intervals", "")
    metric = run.headline_metric
    if metric is None:
        sec.body = note("The run names no metric and has no summary.parquet: there is no ranking to show.")
        return sec
    iv, how = _intervals(run, metric)
    if iv is None or iv.empty:
        sec.body = note(f"No ranking: {run.missing('scores.parquet')} and {run.missing('summary.parquet')}.")
        return sec
    iv = iv.sort_values(["mean", "predictor"], kind="stable").reset_index(drop=True)
    choice = run.chosen(metric) or {}
    chosen, reference = choice.get("predictor"), run.reference
    alpha = float(choice.get("alpha", DEFAULT_ALPHA))
    diffs = vs_reference(run.table("comparisons"), metric, reference)
    parts = [_plot(iv, diffs, metric, chosen, reference, alpha)]
    notes = [f"Headline metric: {metric} (the run's first). {how}."]
    if chosen:
        notes.append(f"Chosen ({choice.get('rule', '?')} rule): {chosen}, marked with a red star.")
    else:
        notes.append(f"No chosen predictor to mark: {run.missing('choice.json')}.")
    if len(diffs) <= 1:
        notes.append(f"No paired differences from the reference: {run.missing('comparisons.parquet')}"
                     if run.table("comparisons") is None else "No reference predictor (wmean or mean) in this run.")
    parts.append(caption(" ".join(notes)))
    parts.append(_table(iv, diffs, run.table("summary"), metric, chosen, reference))
    sec.body = "\n".join(parts)
    return sec
