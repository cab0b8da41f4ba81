"""`drugcell fit`: fit one predictor on every training compound and save it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def fit(
    data: Annotated[Path, typer.Option(help="ExpressionSet cache dir: the model is fitted on all its compounds.")],
    predictor: Annotated[str, typer.Option(
        help="Predictor name in the config's [[predictors]] list, or a registry kind "
             "(control, mean, knn, ridge_fp, ...) with default parameters.")],
    out: Annotated[Path, typer.Option(help="Model dir to write (model.json, arrays.npz, training files).")],
    config: Annotated[Optional[Path], typer.Option(
        help="TOML config holding the predictor entry (default: configs/default.toml, or the kind).")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Fit seed (default: the config's cv.seed).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing model dir.")] = False,
) -> None:
    """Fit one predictor on every training compound and save it (no pickle: JSON + npz)."""
    from drugcell.persistence import fit_model

    res = fit_model(data, predictor, out, config=config, seed=seed, overwrite=overwrite)
    typer.echo(f"{res.name} ({res.kind}) fitted on {res.n_compounds:,} compounds x {res.n_genes:,} genes "
               f"in {res.seconds:.1f} s; saved to {res.model_dir}")
