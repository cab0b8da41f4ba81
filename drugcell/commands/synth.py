"""`drugcell synth`: write a simulated DRUG-seq data set in the exact VCPI contest layout."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal, Optional

import typer

#: the simulator's size presets (``drugcell.data.simulate.PRESETS``; a test keeps the two equal), named
#: here so that `--help` does not import the simulator
PRESET_NAMES = ("tiny", "small", "full")


def synth(
    out: Annotated[Path, typer.Option(
        "--out", help="Folder to write (created if missing). Files of the same names are replaced only in an "
        "earlier `drugcell synth` output and only with --overwrite.",
    )],
    preset: Annotated[Optional[Literal[PRESET_NAMES]], typer.Option(
        "--preset",
        help="Size preset: tiny (150 compounds x 1,500 genes), small (1,500 x 8,000) or full "
             "(14,026 x 78,778, the real VCPI size). Explicit size options override it.",
    )] = None,
    n_compounds: Annotated[Optional[int], typer.Option(
        "--n-compounds", min=10, help="Training library compounds (default 1,500 without a preset).",
    )] = None,
    n_genes: Annotated[Optional[int], typer.Option(
        "--n-genes", min=200,
        help="Genes in the counts file (about 16.5 % pass mean CPM >= 1 at full size; default 8,000).",
    )] = None,
    replicates: Annotated[Optional[int], typer.Option(
        "--replicates", min=1, help="Wells per compound (a few compounds get one more or one fewer; default 2).",
    )] = None,
    n_test: Annotated[Optional[int], typer.Option(
        "--n-test", min=1, help="Held-out test compounds written to test_compounds.csv with their truth (default 150).",
    )] = None,
    seed: Annotated[int, typer.Option("--seed", help="Random seed; the same seed gives byte-identical data files.")] = 0,
    smiles_file: Annotated[Optional[Path], typer.Option(
        "--smiles-file",
        help="Take molecules from this file (CSV with a 'smiles' column, or one SMILES per line) "
             "instead of the built-in scaffold x substituent library.",
    )] = None,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace an earlier `drugcell synth` output in --out (never other files).",
    )] = False,
) -> None:
    """Simulate train_counts/metadata/chemistry parquet files, gene_filter.csv, test_compounds.csv
    and the held-out answer test_truth.parquet, with chemistry-driven responses, plates and
    library-size variation; prints the files written and a summary."""
    from drugcell.data.simulate import simulate_vcpi

    paths = simulate_vcpi(
        out, preset=preset, n_compounds=n_compounds, n_genes=n_genes, replicates=replicates,
        n_test=n_test, seed=seed, smiles_file=str(smiles_file) if smiles_file else None,
        progress=True, overwrite=overwrite,
    )
    summary = json.loads(paths["manifest"].read_text())["summary"]
    for name, path in paths.items():
        typer.echo(f"wrote {path}  ({name})")
    typer.echo(
        f"{summary['n_train_wells']:,} training wells on {summary['n_plates_train']} plates, "
        f"{summary['n_scored_genes']:,} of {summary['n_genes']:,} genes scored "
        f"({100 * summary['fraction_scored']:.1f} %), median {summary['median_umis']:,.0f} UMIs/well, "
        f"{summary['n_active_compounds']} clearly active compounds, {summary['n_test_wells']} test wells"
    )
