"""`drugcell programs`: signed NMF gene programs (up genes and down genes) of the chemistry-driven residual."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def programs(
    out: Annotated[Path, typer.Option(
        help="New or empty folder to write programs_genes.parquet, programs_compounds.parquet, programs.md, "
             "programs_heatmap.png and manifest.json into.")],
    data: Annotated[Optional[Path], typer.Option(
        help="ExpressionSet cache dir: factor the measured truth (with --predictions: where the gene "
             "ids come from; default the cache named in the run's manifest).")] = None,
    predictions: Annotated[Optional[Path], typer.Option(
        help="RUN_DIR/predictions/<name>.npy from `drugcell cv` (output.save_predictions = true): "
             "factor a predictor's held-out predictions instead of the truth.")] = None,
    rank: Annotated[int, typer.Option(min=1, help="Number of programs (NMF rank).")] = 8,
    top: Annotated[int, typer.Option(min=1, help="Up genes, down genes and compounds listed per program.")] = 20,
    gene_symbols: Annotated[Optional[Path], typer.Option(
        help="CSV, TSV or parquet mapping gene ids to symbols: an id column (ensembl_id, gene_id, ...) and a "
             "symbol column (gene_symbol, symbol, ...), e.g. landmark_geneinfo.csv. Genes it lacks get the "
             "built-in table's symbol.")] = None,
    builtin_symbols: Annotated[bool, typer.Option(
        "--builtin-symbols/--no-builtin-symbols",
        help="Name Ensembl ids with the built-in human table (org.Hs.eg.db 3.16.0).")] = True,
    compound_names: Annotated[Optional[Path], typer.Option(
        help="CSV, TSV or parquet with a compound id column (user_compound_id or compound) and compound_name, "
             "e.g. test_compounds.csv. Default: the compound_name column of the metadata file the cache "
             "was loaded from, when it is still there.")] = None,
    seed: Annotated[int, typer.Option(help="NMF random_state (nndsvda init is deterministic; "
                                           "the seed matters only for ties).")] = 0,
    max_iter: Annotated[int, typer.Option(min=1, help="Maximum NMF iterations; raise it when the "
                                                      "report says the fit did not converge.")] = 500,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace earlier `drugcell programs` output in --out.")] = False,
) -> None:
    """Factor the residual R = X - mean profile (compounds x genes; X = truth or held-out predictions)
    by NMF of its up part max(R, 0) and its down part max(-R, 0) side by side, so each program has up
    genes and down genes; report whether the fit converged, the share of the norm captured, and each
    program's up genes, down genes and compounds, and draw the program heatmap."""
    from drugcell.programs import run_programs
    from drugcell.programs.factorise import not_converged_message

    result = run_programs(out, data=data, predictions=predictions, rank=rank, top=top, gene_symbols=gene_symbols,
                          builtin_symbols=builtin_symbols, compound_names=compound_names, seed=seed,
                          max_iter=max_iter, overwrite=overwrite)
    typer.echo(result.markdown)
    for path in result.files.values():
        typer.echo(f"wrote {path}")
    if not result.programs.converged:
        typer.echo(f"warning: {not_converged_message(result.programs)}", err=True)
