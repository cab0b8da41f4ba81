"""`drugcell predict`: profiles for new molecules from a model saved by `drugcell fit`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from drugcell.defaults import COMPOUND_COL


def predict(
    model: Annotated[Path, typer.Option(help="Model dir written by `drugcell fit`.")],
    smiles: Annotated[Optional[list[str]], typer.Option(
        "--smiles", help="A molecule's SMILES (repeat the option for several); its id is the SMILES.")] = None,
    input: Annotated[Optional[Path], typer.Option(
        "--input", help="CSV with a `smiles` column and an optional id column (compound, id, name). Rows whose "
                        "SMILES RDKit cannot parse are left out and listed by row, id and SMILES (see --strict).")] = None,
    id_column: Annotated[Optional[str], typer.Option(help="Id column of --input (default: auto).")] = None,
    out: Annotated[Optional[Path], typer.Option(
        help="Write the long table compound, gene_id, predicted_expression[, predicted_std] here "
             "(.parquet, or .csv); without it a short table is printed.")] = None,
    top: Annotated[int, typer.Option(min=1, help="Genes up and down vs the mean profile in the printed table.")] = 10,
    threshold: Annotated[float, typer.Option(
        min=0.0, max=1.0,
        help="Warn when a molecule's nearest training compound has Tanimoto below this (Morgan r2, 2048 bits).")] = 0.3,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --out file.")] = False,
    gene_symbols: Annotated[Optional[Path], typer.Option(
        help="CSV mapping gene ids to symbols for the printed table "
             "(gene_id/ensembl_id + gene_symbol/symbol).")] = None,
    strict: Annotated[bool, typer.Option(
        "--strict", help="Refuse the whole input (exit code 2, nothing written) when any SMILES cannot be parsed, "
                         "instead of predicting the others.")] = False,
    plugin: Annotated[Optional[list[str]], typer.Option(
        "--plugin", help="Import this module first (repeatable; a .py file works too): needed for a model of a "
                         "predictor kind that a plugin registers.")] = None,
) -> None:
    """Predict the log2(CPM+1) profile of new molecules. Molecules RDKit cannot parse are left out
    and listed on stderr (row, id, SMILES); --strict makes them an error (exit code 2)."""
    from drugcell.models.registry import load_plugins
    from drugcell.outputs import check_file_output
    from drugcell.prediction import predict_molecules, read_molecules, write_predictions

    load_plugins(plugin)
    if out is not None:
        check_file_output(out, overwrite)  # before reading the model and predicting
    ids, smi = read_molecules(input, smiles, id_column)
    source = str(input) if input is not None else "--smiles"
    res = predict_molecules(model, list(smi), list(ids), threshold=threshold, source=source, strict=strict)
    skipped = res.skipped_message(source)
    if skipped:
        typer.secho(f"warning: {skipped}", fg=typer.colors.YELLOW, err=True)
    messages = res.warnings()
    for msg in messages[:20]:
        typer.secho(f"warning: {msg}", fg=typer.colors.YELLOW, err=True)
    if len(messages) > 20:
        typer.secho(f"warning: {len(messages) - 20} more molecule(s) are below Tanimoto {threshold:g} "
                    "to every training compound", fg=typer.colors.YELLOW, err=True)
    if res.calibrator is not None:
        typer.echo(f"std scaled by the model's calibrator: {res.calibrator.describe()}")
    if out is not None:
        path = write_predictions(res, out, overwrite=overwrite)
        left = f" ({len(res.skipped)} left out: unparseable SMILES, listed above)" if res.skipped else ""
        typer.echo(f"{len(res.ids)} molecule(s) x {len(res.genes):,} genes from {res.model_name}{left}; wrote {path}")
        return
    symbols = None
    if gene_symbols is not None:
        from drugcell.programs import read_gene_symbols

        symbols = read_gene_symbols(gene_symbols, res.genes)
    table = res.top_changes(top, symbols)
    for i, cid in enumerate(res.ids):
        typer.echo(f"\n## {cid}  (nearest training Tanimoto {res.nearest_similarity[i]:.2f}: "
                   f"{res.nearest_compound[i]})")
        sub = table[table[COMPOUND_COL] == cid].drop(columns=COMPOUND_COL)
        typer.echo(sub.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
