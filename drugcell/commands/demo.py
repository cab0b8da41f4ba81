"""`drugcell demo`: the whole flow on simulated data (what `make demo` runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def demo(
    out: Annotated[Path, typer.Option(help="Folder for the simulated data, cache, CV run and submission.")] = Path("demo_out"),
    n_compounds: Annotated[int, typer.Option(help="Library compounds to simulate.")] = 1500,
    n_genes: Annotated[int, typer.Option(help="Genes in the simulated counts (about 17% pass the CPM filter).")] = 20000,
    n_test: Annotated[int, typer.Option(help="Held-out test compounds to simulate and submit.")] = 200,
    config: Annotated[Path | None, typer.Option(
        help="CV config: a TOML file or a shipped config's name; default demo.toml.")] = None,
    seed: Annotated[int, typer.Option(help="Seed for simulation, folds and models.")] = 0,
) -> None:
    """Simulate VCPI-layout data, load it, run scaffold CV, submit the winner and score it."""
    from drugcell.demo import run_demo

    run_demo(out, n_compounds=n_compounds, n_genes=n_genes, n_test=n_test, seed=seed, config=config)
