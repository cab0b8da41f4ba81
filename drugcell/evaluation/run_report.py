"""summary.md of a `drugcell cv` run: what was chosen and why, the leaderboard estimate, then the
ranking, the metric agreement, the bootstrap, fallbacks, the leak audit and calibration.

Why the order: a contest team reads the top of the file. The first thing it must see is which
predictor to submit, what score to expect on the leaderboard (new compounds on new plates, with an
interval) and how far that is from the structure-free bar and from the replicate-noise floor.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from drugcell.config import RunConfig
from drugcell.reporting import fmt_number, frame_table, md_table


def choice_markdown(choices: dict[str, Any]) -> str:
    """The first lines of summary.md and of `drugcell cv`'s output: what was chosen and why."""
    if not choices:
        return ""
    first = next(iter(choices.values()))
    lines = ["## Chosen predictor", "", f"**{first.predictor}** under {first.metric} (rule '{first.rule}'). "
             + first.reason, ""]
    others = [f"- under {c.metric}: {c.predictor}" for c in list(choices.values())[1:]]
    return "\n".join(lines + others + ([""] if others else [])) + "\n"


def _median_change(scores: pd.DataFrame, metric: str, reference: str) -> dict[str, float]:
    """Median over compounds of each predictor's per-compound relative change vs the reference."""
    sub = scores[scores["metric"] == metric]
    wide = sub.pivot_table(index="compound", columns="predictor", values="wmse", observed=True)
    if reference not in wide.columns:
        return {}
    ref = wide[reference].to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        return {p: float(np.nanmedian(wide[p].to_numpy() / ref - 1.0)) for p in wide.columns}


def estimate_markdown(estimate: pd.DataFrame | None, config: RunConfig, scores: pd.DataFrame | None = None,
                      has_plates: bool = True, no_plates_reason: str = "") -> str:
    """The leaderboard estimate of the first metric, every predictor, against the noise floor."""
    if estimate is None or estimate.empty:
        return ""
    metric = config.metrics[0]
    t = estimate[estimate["metric"] == metric].sort_values("estimate", kind="stable")
    if t.empty:
        return ""
    ref = str(t["reference"].iloc[0]) or None
    ref_est = float(t.loc[t.predictor == ref, "estimate"].iloc[0]) if ref in set(t.predictor) else np.nan
    med = _median_change(scores, metric, ref) if (scores is not None and ref) else {}
    header = ["predictor", "estimate", "95% interval", "CV mean", f"vs {ref or 'reference'}",
              f"median compound vs {ref or 'reference'}", "gap to floor closed"]
    rows = []
    for r in t.itertuples(index=False):
        rel = (r.estimate / ref_est - 1.0) if np.isfinite(ref_est) else np.nan
        rows.append([r.predictor, fmt_number(r.estimate), f"[{fmt_number(r.ci_low)}, {fmt_number(r.ci_high)}]",
                     fmt_number(r.cv_mean), "" if not np.isfinite(rel) else f"{100 * rel:+.1f}%",
                     "" if r.predictor not in med else f"{100 * med[r.predictor]:+.1f}%",
                     "" if not np.isfinite(r.gap_closed) else f"{100 * r.gap_closed:.1f}%"])
    e = config.estimate
    floor = float(t["floor"].iloc[0])
    if has_plates:
        how = (f"Expected {metric} wMSE on new compounds on {e.test_plates} new plates "
               f"({e.test_replicates or 'median training'} wells each), from CV residuals and the DMSO wells of "
               f"the training plates (plate effects on compounds assumed equal to those on DMSO); the interval "
               f"covers the compounds drawn and the plates' random offsets. Replicate-noise floor (a perfect "
               f"predictor of each compound's expected profile on new plates): {fmt_number(floor)}.")
    else:
        how = (f"No usable plate information ({no_plates_reason or 'none in this data set'}): the estimate is the CV "
               "mean with its compound-bootstrap interval; new-plate effects are not included, so it is optimistic "
               "for a test set on new plates.")
    lines = ["## Leaderboard estimate", "", how, "",
             md_table(header, rows, align=["l", "r", "r", "r", "r", "r", "r"]), ""]
    if med:
        lines += ["The median compound can move the other way from the mean: the metric's gain is often carried "
                  "by a few strongly responding compounds.", ""]
    return "\n".join(lines) + "\n"


def render_summary_md(summary, comparisons: pd.DataFrame, diagnostics: pd.DataFrame, config: RunConfig,
                      audits: list[dict[str, Any]], n_comp: int, n_genes: int, elapsed: float,
                      split_line: str = "", choices: dict[str, Any] | None = None,
                      estimate: pd.DataFrame | None = None, uncertainty: pd.DataFrame | None = None,
                      scores: pd.DataFrame | None = None, has_plates: bool = True, no_plates_reason: str = "",
                      split: str | None = None) -> str:
    """The readable report: choice, estimate, ranking per metric, agreement, bootstrap, fallbacks, audit.
    ``split``: the split actually used (``FoldAssignment.split``; a fallback says so), not the request."""
    lines = [
        "# drugcell cv",
        "",
        f"{n_comp} compounds x {n_genes} genes; {config.folds}-fold {split or config.split} split, seed {config.seed}; "
        f"{len(config.predictors)} predictors; metrics {', '.join(config.metrics)}; "
        f"{config.bootstrap_resamples} bootstrap resamples; {elapsed:.0f} s.",
        "",
        split_line,
        "",
        choice_markdown(choices or {}),
        estimate_markdown(estimate, config, scores, has_plates, no_plates_reason),
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
    report = "\n".join(lines) + "\n"
    if uncertainty is not None:
        from drugcell.calibration.report import calibration_markdown

        report += "\n" + calibration_markdown(uncertainty)
    return report
