"""What ``drugcell calibrate`` writes into a CV run: summary tables, markdown, plots, calibrators.

The statistics live in :mod:`~drugcell.calibration.stats` and the out-of-fold grouping in
:mod:`~drugcell.calibration.grouping`; this module only lays their results out for a reader and
saves one :class:`~drugcell.calibration.calibrator.Calibrator` per predictor for ``submit``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from drugcell.calibration.calibrator import Calibrator, calibrator_path, safe_name
from drugcell.calibration.grouping import (
    UNCERTAINTY_FILE,
    calibration_summary,
    load_uncertainty,
    reliability_of,
    summarize,
    usable_cells,
)
from drugcell.calibration.stats import GAUSSIAN_COVERAGE, MAE_PER_STD
from drugcell.errors import DrugcellInputError
from drugcell.outputs import FileSet, check_out_location
from drugcell.progress import step
from drugcell.provenance import atomic_path, fingerprint_files, provenance, strict_json
from drugcell.reporting import fmt_number, md_table

#: Scaled 1-sigma coverage this far above 0.683 is flagged as heavier-than-Gaussian tails.
HEAVY_TAIL_MARGIN = 0.03


def _fmt(x, digits: int = 3) -> str:
    return fmt_number(x, digits, missing="-")


def _notes(summary: pd.DataFrame) -> str:
    """The single-fold and heavy-tail remarks under the summary table."""
    c1 = GAUSSIAN_COVERAGE[1]
    note = ""
    if summary["coverage_1sigma_scaled"].isna().any():
        note = "\n\n`-` in the scaled columns: a predictor with a single fold has no other fold to fit `s` on."
    pooled = summary[summary["fold"] == "all"]
    heavy = pooled.loc[pooled["coverage_1sigma_scaled"] > c1 + HEAVY_TAIL_MARGIN, "predictor"].tolist()
    if heavy:
        note += (
            f"\n\nHeavy tails ({', '.join(map(str, heavy))}): after scaling, 1-sigma coverage exceeds "
            f"{c1:.3f} by more than {HEAVY_TAIL_MARGIN}: error/std is heavier-tailed than a Gaussian, so "
            "the variance-matching `s` over-covers most cells while a few large misses carry the variance."
        )
    return note


def calibration_markdown(df: pd.DataFrame, *, heading: str = "## Calibration of the predicted std") -> str:
    """A markdown section for a run summary.

    ``df`` is either the uncertainty samples (columns ``error``, ``std``, ...) as the CV runner
    holds them, or a frame from :func:`~drugcell.calibration.grouping.calibration_summary`.
    """
    summary = calibration_summary(df) if {"error", "std"} <= set(df.columns) else df
    c1, c2 = GAUSSIAN_COVERAGE[1], GAUSSIAN_COVERAGE[2]
    intro = (
        f"Coverage = fraction of sampled (compound, gene) cells with |pred - truth| <= k * std; a "
        f"calibrated Gaussian gives {c1:.3f} at 1 sigma and {c2:.3f} at 2 sigma. "
        "`s` = sqrt(mean((error/std)^2)) fitted on the *other* folds and applied to the held-out "
        "fold (pooled row: `s` fitted on all folds, the factor to use at submission; its scaled "
        "coverage pools the held-out folds). r = Pearson(std, |error|)."
    )
    if summary.empty:
        return f"{heading}\n\nNo uncertainty samples (no predictor in this run predicts a std).\n"
    header = ["predictor", "fold", "cells", "mean std", "MAE", "r", "cov 1σ", "cov 2σ",
              "s", "cov 1σ scaled", "cov 2σ scaled"]
    rows = []
    for r in summary.itertuples(index=False):
        fold = "**all**" if r.fold == "all" else str(r.fold)
        rows.append([str(r.predictor), fold, _fmt(int(r.n)), _fmt(r.mean_std), _fmt(r.mae),
                     _fmt(r.pearson_std_abs_error), _fmt(r.coverage_1sigma), _fmt(r.coverage_2sigma),
                     _fmt(r.scale), _fmt(r.coverage_1sigma_scaled), _fmt(r.coverage_2sigma_scaled)])
    return f"{heading}\n\n{intro}\n\n{md_table(header, rows)}{_notes(summary)}\n"


def reliability_markdown(reliability: pd.DataFrame) -> str:
    """Decile tables (raw std) as markdown, one per predictor."""
    out = []
    for predictor, t in reliability[reliability["std_kind"] == "raw"].groupby("predictor", sort=True):
        rows = [[str(int(r.bin)), _fmt(int(r.n)), _fmt(r.mean_std), _fmt(r.mae), _fmt(r.ideal_mae),
                 _fmt(r.mae / r.ideal_mae if r.ideal_mae > 0 else float("nan"), 2)]
                for r in t.itertuples(index=False)]
        out.append(f"### {predictor}: MAE by predicted-std decile\n\n" + md_table(
            ["decile", "cells", "mean std", "MAE", "ideal sqrt(2/pi)*std", "MAE / ideal"], rows))
    return "\n\n".join(out) + ("\n" if out else "")


def _coverage_bars(bx, summary_row: pd.Series | dict) -> None:
    r = dict(summary_row)
    xs = np.arange(2)
    before = [r.get("coverage_1sigma", np.nan), r.get("coverage_2sigma", np.nan)]
    after = [r.get("coverage_1sigma_scaled", np.nan), r.get("coverage_2sigma_scaled", np.nan)]
    bx.bar(xs - 0.2, np.nan_to_num(before), width=0.4, label="raw")
    bx.bar(xs + 0.2, np.nan_to_num(after), width=0.4, label="scaled (held-out)")
    for x, ideal in zip(xs, (GAUSSIAN_COVERAGE[1], GAUSSIAN_COVERAGE[2])):
        bx.hlines(ideal, x - 0.45, x + 0.45, colors="k", linestyles=":")
    bx.set_xticks(xs, ["1 sigma", "2 sigma"])
    bx.set_ylim(0, 1.05)
    bx.set_ylabel("coverage")
    bx.set_title("coverage (dotted: Gaussian)")
    bx.legend(fontsize=8, loc="lower right")


def reliability_plot(reliability: pd.DataFrame, summary_row: pd.Series | dict | None,
                     path: str | os.PathLike[str], *, title: str = "") -> Path:
    """PNG: MAE vs mean predicted std per decile (raw and scaled) with the Gaussian ideal line,
    and coverage before/after scaling against 0.683 / 0.954. Written atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax, bx = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    hi = 0.0
    for kind, style in (("raw", "o-"), ("scaled", "s--")):
        t = reliability[reliability["std_kind"] == kind]
        if t.empty:
            continue
        label = "predicted std" if kind == "raw" else "std x s (other folds)"
        ax.plot(t["mean_std"], t["mae"], style, label=label)
        hi = max(hi, float(t["mean_std"].max()), float(t["mae"].max() / MAE_PER_STD))
    grid = np.linspace(0, hi if hi > 0 else 1.0, 50)
    ax.plot(grid, MAE_PER_STD * grid, "k:", label="ideal: MAE = sqrt(2/pi) std")
    ax.set_xlabel("mean predicted std in decile")
    ax.set_ylabel("mean |pred - truth|")
    ax.set_title("reliability by std decile")
    ax.legend(fontsize=8)
    if summary_row is not None:
        _coverage_bars(bx, summary_row)
    else:
        bx.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return Path(path)


# --------------------------------------------------------------------------- run-level
@dataclass
class CalibrationReport:
    """What :func:`calibrate_run` computed and wrote."""

    summary: pd.DataFrame
    reliability: pd.DataFrame
    markdown: str
    n_samples: int
    n_dropped: int
    files: dict[str, Path] = field(default_factory=dict)
    calibrators: dict[str, Calibrator] = field(default_factory=dict)


def calibration_files(run_dir: str | os.PathLike[str]) -> FileSet:
    """What ``drugcell calibrate`` writes into a run, as one set (replaced whole, manifest last)."""
    return FileSet(Path(run_dir), "calibration", (
        "calibrators/*.json", "calibration.parquet", "calibration_reliability.parquet", "calibration_*.png",
        "calibration.md", "calibration_manifest.json"))


def _save_calibrators(run_dir: Path, raw: pd.DataFrame, summary: pd.DataFrame,
                      fingerprint: str, stage) -> dict[str, Calibrator]:
    """Fit and save (into ``stage``) one calibrator per predictor whose pooled scale is a positive number."""
    pooled = summary[summary["fold"] == "all"]
    out: dict[str, Calibrator] = {}
    for predictor, scale in zip(pooled["predictor"], pooled["scale"]):
        if not (math.isfinite(scale) and scale > 0):
            continue
        cal = Calibrator.from_samples(raw, predictor, source=str(run_dir / UNCERTAINTY_FILE),
                                      fitted_on={"run": str(run_dir), "uncertainty_fingerprint": fingerprint})
        cal.save(stage.path(calibrator_path(run_dir, predictor).relative_to(run_dir).as_posix()))
        out[predictor] = cal
    return out


def calibrate_run(run_dir: str | os.PathLike[str], *, n_bins: int = 10, overwrite: bool = False) -> CalibrationReport:
    """Calibrate every std-predicting predictor of a CV run and write the results into the run.

    Writes ``calibration.parquet`` (summary), ``calibration_reliability.parquet`` (decile tables),
    ``calibration.md``, ``calibration_<predictor>.png``, ``calibrators/<predictor>.json`` (the
    fitted :class:`Calibrator` that ``submit --from-run`` applies) and ``calibration_manifest.json``,
    as one set (:func:`calibration_files`): an earlier calibration is replaced whole, and only with
    ``overwrite`` (checked before the work).
    """
    run_dir = Path(run_dir)
    check_out_location(run_dir / "calibration.md", "drugcell calibrate writes")
    outputs = calibration_files(run_dir)
    outputs.recover()
    outputs.check(overwrite, f"drugcell calibrate {run_dir}")
    step(f"read the held-out errors and stds ({run_dir / UNCERTAINTY_FILE})")
    raw = load_uncertainty(run_dir)
    cells = usable_cells(raw, source=str(run_dir / UNCERTAINTY_FILE))
    n_samples, n_dropped = int(cells.error.size), cells.n_dropped
    if n_samples == 0:
        raise DrugcellInputError(
            f"{run_dir / UNCERTAINTY_FILE}: all {len(raw):,} rows have a non-finite error/std or "
            "std <= 0; the predictor's std output is broken, check it before calibrating."
        )
    step(f"coverage, reliability and std scales of {n_samples:,} cells, per predictor and fold")
    summary = summarize(cells)
    reliability = reliability_of(cells, n_bins)
    md = calibration_markdown(summary, heading="# Calibration of the predicted std")
    md += f"\n{n_samples:,} cells"
    md += f" ({n_dropped:,} dropped: non-finite or std <= 0)" if n_dropped else ""
    md += f"; std bins: {n_bins} quantiles by predicted std.\n\n" + reliability_markdown(reliability)

    fingerprint = fingerprint_files([run_dir / UNCERTAINTY_FILE])
    files: dict[str, Path] = {}
    step(f"write the tables, {summary['predictor'].nunique()} reliability plot(s) and calibrators into {run_dir}")
    with outputs.write() as stage:
        files["summary"] = run_dir / "calibration.parquet"
        summary.to_parquet(stage.path(files["summary"].name), index=False)
        files["reliability"] = run_dir / "calibration_reliability.parquet"
        reliability.to_parquet(stage.path(files["reliability"].name), index=False)
        for predictor in summary["predictor"].unique():
            pooled = summary[(summary["predictor"] == predictor) & (summary["fold"] == "all")].iloc[0]
            path = run_dir / f"calibration_{safe_name(predictor)}.png"
            reliability_plot(reliability[reliability["predictor"] == predictor], pooled, stage.path(path.name),
                             title=f"{predictor}: calibration of the predicted std")
            files[f"plot:{predictor}"] = path
        calibrators = _save_calibrators(run_dir, raw, summary, fingerprint, stage)
        files.update({f"calibrator:{p}": calibrator_path(run_dir, p) for p in calibrators})
        files["markdown"] = run_dir / "calibration.md"
        stage.path(files["markdown"].name).write_text(md)
        files["manifest"] = run_dir / "calibration_manifest.json"
        stage.path(files["manifest"].name).write_text(strict_json(provenance(
            command="calibrate", config={"n_bins": n_bins}, data_fingerprint=fingerprint,
            n_samples=n_samples, n_dropped=n_dropped,
            outputs=sorted(p.relative_to(run_dir).as_posix() for p in files.values()),
        ), indent=2, sort_keys=True) + "\n")
    return CalibrationReport(summary=summary, reliability=reliability, markdown=md, n_samples=n_samples,
                             n_dropped=n_dropped, files=files, calibrators=calibrators)
