"""The leaderboard estimate against the noise floor: per predictor the expected score on new
compounds on new plates with its 95% interval, the CV mean beside it, and the replicate-noise floor
as a line (leaderboard_estimate.parquet, headline metric).

Why it says so plainly when a run has no plate layout: its "estimate" is then only the CV mean with a
compound-bootstrap interval, optimistic for a test set on new plates, and there is no floor.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from drugcell.report.html import Section, caption, note, table
from drugcell.report.plotting import figure_html, new_figure, predictor_colour, tick_label, wmse_label
from drugcell.report.run import Run
from drugcell.reporting import fmt_number


def _plot(t: pd.DataFrame, metric: str, floor: float, chosen: str | None, reference: str | None) -> str:
    fig = new_figure(8, 1.3 + 0.4 * len(t))
    ax = fig.subplots()
    y = np.arange(len(t))[::-1]
    plates = math.isfinite(floor)  # without plates the estimate is the CV mean: one marker
    for yi, r in zip(y, t.itertuples(index=False)):
        c = predictor_colour(r.predictor, chosen, reference)
        ax.errorbar(r.estimate, yi + 0.12 * plates, xerr=[[r.estimate - r.ci_low], [r.ci_high - r.estimate]],
                    fmt="o", color=c, capsize=3)
        if plates:
            ax.plot(r.cv_mean, yi - 0.12, "D", mfc="white", color=c)
    # legend entries in neutral black: the colours mark the chosen and the reference predictor
    ax.errorbar([], [], xerr=[], fmt="o", color="k", capsize=3, label="leaderboard estimate, 95% interval"
                if plates else "CV mean, compound-bootstrap 95% interval (no plate term)")
    if plates:
        ax.plot([], [], "D", mfc="white", color="k", label="CV mean")
    if plates:
        ax.axvline(floor, color="k", ls="--", lw=1.2, label=f"replicate-noise floor ({floor:.4f})")
        ax.axvspan(0, floor, color="k", alpha=0.06)
        ax.set_xlim(left=0)
    ax.set_yticks(y, [tick_label(p, chosen, reference) for p in t["predictor"]])
    ax.set_xlabel(wmse_label(metric, "expected on the leaderboard (lower is better)"))
    ax.legend(fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, frameon=False)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return figure_html(fig, f"leaderboard estimate under {metric} against the noise floor")


def _table(t: pd.DataFrame, chosen: str | None) -> str:
    rows = []
    for r in t.itertuples(index=False):
        gap = getattr(r, "gap_closed", float("nan"))
        rows.append([r.predictor, fmt_number(r.estimate), f"[{fmt_number(r.ci_low)}, {fmt_number(r.ci_high)}]",
                     fmt_number(r.cv_mean), fmt_number(getattr(r, "plate_term", float("nan")), missing=""),
                     "" if not np.isfinite(gap) else f"{100 * gap:.1f}%"])
    return table(["predictor", "estimate", "95% interval", "CV mean", "plate term", "gap to floor closed"], rows,
                 row_classes=["chosen" if p == chosen else "" for p in t["predictor"]])


def estimate_section(run: Run) -> Section:
    """The estimate of every predictor under the headline metric, against the floor."""
    sec = Section("estimate", "Leaderboard estimate against the noise floor", "")
    est, metric = run.table("leaderboard_estimate"), run.headline_metric
    if est is None:
        sec.body = note(f"No leaderboard estimate: {run.missing('leaderboard_estimate.parquet')} (runs before the "
                        "estimate existed have none; rerun `drugcell cv`).")
        return sec
    t = est[est["metric"].astype(str) == metric].sort_values("estimate", kind="stable")
    if t.empty:
        sec.body = note(f"leaderboard_estimate.parquet has no rows for the headline metric {metric}.")
        return sec
    chosen, reference = (run.chosen(metric) or {}).get("predictor"), run.reference
    floor = float(t["floor"].iloc[0]) if t["floor"].notna().any() else float("nan")
    parts = []
    if not math.isfinite(floor):
        reason = run.no_plates_reason()
        parts.append(note("This run has no plate layout" + (f" ({reason})" if reason else "")
                          + ": the estimate is the CV mean with a compound-bootstrap interval; it leaves out the "
                          "effect of new test plates, so it is optimistic for a test set on new plates, and there is "
                          "no replicate-noise floor to draw."))
    parts.append(_plot(t, metric, floor, chosen, reference))
    plates = run.config.get("estimate", {}) if isinstance(run.config.get("estimate"), dict) else {}
    how = (f"Expected {metric} wMSE on new compounds on {plates.get('test_plates', '?')} new plate(s) (circles, "
           "95% interval over the compounds drawn and the plates' random offsets) next to the CV mean (diamonds). "
           if math.isfinite(floor) else "")
    floor_txt = (f"Dashed line: the replicate-noise floor, {fmt_number(floor)}, what a perfect predictor of each "
                 "compound's expected profile would still score. " if math.isfinite(floor) else "")
    parts.append(caption(how + floor_txt + "From leaderboard_estimate.parquet."))
    parts.append(_table(t, chosen))
    sec.body = "\n".join(parts)
    return sec
