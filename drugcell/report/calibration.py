"""Every predictor's std calibration in one figure: observed |error| against the predicted std per
std decile (one line per predictor with a std, the Gaussian ideal dashed) and coverage at 1 and 2
sigma, raw and scaled on held-out folds, with the scale `drugcell calibrate` saved.

The statistics come from :mod:`drugcell.calibration` (``usable_cells``, ``summarize``,
``reliability_of``, the Gaussian ideals) so the page shows the numbers `drugcell calibrate` prints;
this module only draws them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from drugcell.calibration.calibrator import Calibrator, calibrator_path
from drugcell.calibration.grouping import UNCERTAINTY_FILE, load_uncertainty, reliability_of, summarize, usable_cells
from drugcell.calibration.stats import GAUSSIAN_COVERAGE, MAE_PER_STD
from drugcell.errors import DrugcellInputError
from drugcell.provenance import fingerprint_files
from drugcell.report.html import Section, caption, note, table
from drugcell.report.plotting import UNIT, figure_html, new_figure
from drugcell.report.run import Run
from drugcell.reporting import fmt_number

N_BINS = 10


def saved_scales(run: Run, predictors: list[str]) -> dict[str, tuple[float | None, str]]:
    """predictor -> (scale, remark) of the calibrator `drugcell calibrate` saved in the run, if any."""
    out: dict[str, tuple[float | None, str]] = {}
    fingerprint = None
    for p in predictors:
        path = calibrator_path(run.path, p)
        if not path.is_file():
            continue
        try:
            cal = Calibrator.load(path)
        except DrugcellInputError as exc:
            out[p] = (None, f"unreadable ({exc})")
            continue
        if fingerprint is None:
            fingerprint = fingerprint_files([run.path / UNCERTAINTY_FILE])
        current = cal.fitted_on.get("uncertainty_fingerprint") == fingerprint
        out[p] = (cal.scale, "" if current else "fitted on an earlier uncertainty.parquet")
    return out


def _legend(p: str, pooled: float, saved: dict[str, tuple[float | None, str]]) -> str:
    scale, remark = saved.get(p, (None, ""))
    if scale is not None:
        return f"{p} (saved s = {scale:.3f}{'; ' + remark if remark else ''})"
    return f"{p} (no calibrator saved; s = {pooled:.3f})"


def _plot(summary: pd.DataFrame, reliability: pd.DataFrame, saved: dict[str, tuple[float | None, str]]) -> str:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    pooled = summary[summary["fold"] == "all"].reset_index(drop=True)
    names = pooled["predictor"].astype(str).tolist()
    fig = new_figure(12, 4.6)
    ax, bx = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    colours = [f"C{i % 10}" for i in range(len(names))]
    hi = 0.0
    for p, c, s in zip(names, colours, pooled["scale"]):
        t = reliability[(reliability["predictor"] == p) & (reliability["std_kind"] == "raw")]
        ax.plot(t["mean_std"], t["mae"], "o-", color=c, ms=4, label=_legend(p, float(s), saved))
        hi = max(hi, float(t["mean_std"].max()), float(t["mae"].max()) / MAE_PER_STD)
    grid = np.linspace(0, hi if hi > 0 else 1.0, 50)
    ax.plot(grid, MAE_PER_STD * grid, "k--", lw=1, label="calibrated Gaussian: MAE = 0.798 std")
    ax.set_xlabel(f"mean predicted std in the decile, {UNIT}")
    ax.set_ylabel(f"observed mean |pred - truth|, {UNIT}")
    ax.set_title("reliability by predicted-std decile (held-out cells)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    x = np.arange(len(names))
    for lvl, off in ((1, -0.2), (2, 0.2)):
        raw = pooled[f"coverage_{lvl}sigma"].to_numpy(float)
        scaled = pooled[f"coverage_{lvl}sigma_scaled"].to_numpy(float)
        bx.bar(x + off, np.nan_to_num(raw), width=0.38, color=colours, alpha=0.45 if lvl == 1 else 0.85,
               edgecolor="k", linewidth=0.5, hatch="//" if lvl == 1 else None)
        bx.plot(x + off, scaled, "kv", ms=6)
        bx.axhline(GAUSSIAN_COVERAGE[lvl], color="k", ls=":", lw=1)
    bx.set_xticks(x, names, rotation=30, ha="right")
    bx.set_ylim(0, 1.05)
    bx.set_ylabel("coverage: share of cells with |error| <= k std")
    bx.set_title("coverage at 1 and 2 sigma (dotted: 0.683, 0.954)")
    bx.legend(handles=[Patch(facecolor="0.6", alpha=0.45, hatch="//", edgecolor="k", label="1 sigma, raw std"),
                       Patch(facecolor="0.6", alpha=0.85, edgecolor="k", label="2 sigma, raw std"),
                       Line2D([], [], color="k", marker="v", ls="", label="scaled on held-out folds")],
              fontsize=7, loc="lower right")
    fig.tight_layout()
    return figure_html(fig, "calibration of every predictor's std")


def _table(summary: pd.DataFrame, saved: dict[str, tuple[float | None, str]]) -> str:
    rows = []
    for r in summary[summary["fold"] == "all"].itertuples(index=False):
        scale, remark = saved.get(str(r.predictor), (None, ""))
        rows.append([str(r.predictor), fmt_number(int(r.n)), fmt_number(r.mean_std, 3), fmt_number(r.mae, 3),
                     fmt_number(r.pearson_std_abs_error, 3), fmt_number(r.coverage_1sigma, 3),
                     fmt_number(r.coverage_2sigma, 3), fmt_number(r.coverage_1sigma_scaled, 3, missing="-"),
                     fmt_number(r.coverage_2sigma_scaled, 3, missing="-"), fmt_number(r.scale, 3),
                     ("-" if scale is None else fmt_number(scale, 3)) + (f" ({remark})" if remark else "")])
    return table(["predictor", "cells", "mean std", "MAE", "r(std, |error|)", "cov 1σ", "cov 2σ",
                  "cov 1σ scaled", "cov 2σ scaled", "s (all folds)", "s saved by calibrate"], rows)


def calibration_section(run: Run) -> Section:
    """One figure for every predictor that returned a std, and the pooled calibration table."""
    sec = Section("calibration", "Calibration of the predicted std", "")
    path = run.path / UNCERTAINTY_FILE
    if not path.is_file():
        sec.body = note(f"This run has no {UNCERTAINTY_FILE}: no predictor returned a predictive std (or the run "
                        "predates uncertainty sampling), so there is nothing to calibrate.")
        return sec
    try:
        cells = usable_cells(load_uncertainty(run.path), source=str(path))
    except DrugcellInputError as exc:
        sec.body = note(f"No calibration figure: {exc}")
        return sec
    if cells.error.size == 0:
        sec.body = note(f"No calibration figure: every cell of {UNCERTAINTY_FILE} has a non-finite error or std, "
                        "or std <= 0.")
        return sec
    summary, reliability = summarize(cells), reliability_of(cells, N_BINS)
    saved = saved_scales(run, cells.predictors)
    sec.body = "\n".join([
        _plot(summary, reliability, saved),
        caption(f"From {UNCERTAINTY_FILE}: {cells.error.size:,} sampled held-out (compound, gene) cells"
                + (f" ({cells.n_dropped:,} dropped: non-finite or std <= 0)" if cells.n_dropped else "")
                + ". Left: mean |error| per decile of predicted std; on the dashed line the std is right. Right: "
                "coverage with the raw std (bars) and with the std scaled by s fitted on the other folds (triangles). "
                "s = sqrt(mean((error/std)^2)); 'saved' is the calibrator `drugcell calibrate` wrote for submit."),
        _table(summary, saved),
    ])
    return sec
