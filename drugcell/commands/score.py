"""`drugcell score`: score a submission file against a truth table and a weights file, as the
leaderboard does (the work is :mod:`drugcell.scoring`'s)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def score(
    submission: Annotated[Path, typer.Option(
        help="Submission: long compound, gene_id, predicted_expression (parquet or CSV).")],
    truth: Annotated[Path, typer.Option(
        help="Truth: long compound, gene_id, expression (parquet or CSV; e.g. the simulator's test_truth.parquet).")],
    weights: Annotated[Path, typer.Option(
        help="Mejia weights, official wide layout: gene_id + one column per compound (e.g. test_weights.parquet).")],
    gene_filter: Annotated[Optional[Path], typer.Option(
        help="gene_filter.csv (column gene_id): the scored genes. Default: the truth's genes.")] = None,
    out: Annotated[Optional[Path], typer.Option(
        help="Also write the per-compound scores and provenance here (JSON).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --out file.")] = False,
) -> None:
    """Score a submission as the leaderboard does: mean over compounds of the Mejia-weighted MSE."""
    from drugcell.outputs import check_file_output, submission_files
    from drugcell.scoring import N_WORST, score_files, write_report

    if out is not None:
        check_file_output(out, overwrite)  # before reading and scoring
    note = submission_files(submission).recover()  # finish a submit that was killed while writing the set
    if note:
        typer.echo(f"note: {note}")
    result = score_files(submission, truth, weights, gene_filter)
    lb = result.leaderboard
    typer.echo(f"leaderboard wMSE: {lb['wmse_mean']:.6f}  (mean over {lb['n_compounds']} compounds x "
               f"{result.n_genes} genes; median compound {result.median:.6f})")
    worst = ", ".join(f"{c} {v:.4f}" for c, v in result.worst().items())
    typer.echo(f"worst {min(N_WORST, len(result.per_compound))} compounds: {worst}")
    if result.weights_max_sum_error > 1e-2:
        typer.secho(f"note: the weights of some scored compounds do not sum to 1 over the scored genes "
                    f"(largest deviation {result.weights_max_sum_error:.3g}); check the weights file and the "
                    "gene filter", fg=typer.colors.YELLOW, err=True)
    if out is not None:
        write_report(out, result, {"submission": submission, "truth": truth, "weights": weights,
                                   "gene_filter": gene_filter})
        typer.echo(f"wrote {out}")
