"""`drugcell report RUN`: one self-contained HTML page of a CV run (figures inline, no network)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def report(
    run_dir: Annotated[Path, typer.Argument(
        help="A run folder written by `drugcell cv` (it is only read, never modified).", show_default=False)],
    out: Annotated[Optional[Path], typer.Option(
        "--out", help="The HTML file to write (default: RUN/report.html).", show_default=False)] = None,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace an existing --out file (never one of the run's own files).")] = False,
) -> None:
    """Write one self-contained HTML page of a CV run: the ranking with bootstrap intervals, how the
    ranking moves between metrics, every predictor's std calibration, the leaderboard estimate
    against the noise floor, the leak audit, the chosen predictor and the provenance. Sections the
    run lacks (older runs, no std) show a note instead."""
    from drugcell.report.page import write_report

    result = write_report(run_dir, out, overwrite=overwrite)
    if result.with_notes:
        typer.echo(f"sections with a note (see the page): {', '.join(result.with_notes)}")
    typer.echo(f"wrote {result.path}")
