"""`drugcell programs`: NMF gene programs of the magnitude of the chemistry-driven residual."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def programs(
    out: Annotated[Path, typer.Option(
        help="Folder to write programs_genes.parquet, programs_compounds.parquet, programs.md, "
             "programs_heatmap.png and manifest.json into.")],
    data: Annotated[Optional[Path], typer.Option(
        help="ExpressionSet cache dir: factor the measured truth (with --predictions: where the gene "
             "ids come from; default the cache named in the run's manifest).")] = None,
    predictions: Annotated[Optional[Path], typer.Option(
        help="RUN_DIR/predictions/<name>.npy from `drugcell cv` (output.save_predictions = true): "
             "factor a predictor's held-out predictions instead of the truth.")] = None,
    rank: Annotated[int, typer.Option(min=1, help="Number of programs (NMF rank).")] = 8,
    top: Annotated[int, typer.Option(min=1, help="Genes and compounds listed per program.")] = 20,
    gene_symbols: Annotated[Optional[Path], typer.Option(
        help="CSV mapping gene ids to symbols: an id column (gene_id or ensembl_id) and a symbol "
             "column (gene_symbol or symbol), e.g. landmark_geneinfo.csv. Default: Ensembl ids.")] = None,
    seed: Annotated[int, typer.Option(help="NMF random_state (nndsvda init is deterministic; "
                                           "the seed matters only for ties).")] = 0,
    max_iter: Annotated[int, typer.Option(min=1, help="Maximum NMF iterations.")] = 500,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace an earlier `drugcell programs` output in --out (never another folder).")] = False,
) -> None:
    """Factor |X - mean profile| (compounds x genes; X = truth or held-out predictions) as W H with
    scikit-learn NMF, report the share of the norm captured, the top genes and compounds per
    program, and draw the program heatmap."""
    from drugcell.programs import run_programs

    result = run_programs(out, data=data, predictions=predictions, rank=rank, top=top,
                          gene_symbols=gene_symbols, seed=seed, max_iter=max_iter, overwrite=overwrite)
    typer.echo(result.markdown)
    for path in result.files.values():
        typer.echo(f"wrote {path}")
