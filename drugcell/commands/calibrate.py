"""`drugcell calibrate RUN_DIR`: is the predicted std of a CV run trustworthy, and by what factor?"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def calibrate(
    run_dir: Annotated[Path, typer.Argument(
        help="A run folder written by `drugcell cv` that holds uncertainty.parquet "
             "(sampled errors and predicted stds of the predictors that return a std).",
        show_default=False,
    )],
    bins: Annotated[int, typer.Option(
        "--bins", min=1,
        help="Number of predicted-std quantile bins in the reliability table (10 = deciles).",
    )] = 10,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace an earlier calibration of the run (all its files, as one set).")] = False,
) -> None:
    """Coverage at 1 and 2 sigma, MAE per predicted-std decile, and one std scale fitted on the
    other folds and tested on each held-out fold. Writes calibration.parquet,
    calibration_reliability.parquet, calibration.md, calibration_<predictor>.png,
    calibrators/<predictor>.json (the fitted scale `submit --from-run` applies) and
    calibration_manifest.json into RUN_DIR (all of them or none; an earlier calibration is replaced only
    with --overwrite) and prints the summary table."""
    from drugcell.calibration.report import calibrate_run, calibration_markdown

    report = calibrate_run(run_dir, n_bins=bins, overwrite=overwrite)
    typer.echo(calibration_markdown(report.summary))
    if report.n_dropped:
        typer.echo(f"{report.n_dropped:,} cells dropped (non-finite error/std or std <= 0).")
    for path in report.files.values():
        typer.echo(f"wrote {path}")
