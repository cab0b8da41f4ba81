"""`drugcell fit`: fit one predictor on every training compound and save it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Optional

import typer

from drugcell.config import SELECT_RULES
from drugcell.metrics import available as metric_names
from drugcell.models.registry import builtin_kinds


def fit(
    data: Annotated[Path, typer.Option(help="ExpressionSet cache dir: the model is fitted on all its compounds.")],
    out: Annotated[Path, typer.Option(help="Model dir to write (model.json, arrays.npz, training files).")],
    predictor: Annotated[Optional[str], typer.Option(
        help="Predictor name among the config's predictors, or a predictor kind with default parameters (built in: "
             f"{', '.join(builtin_kinds())}; plugins add more); with --from-run and without it, the predictor the "
             "run chose.")] = None,
    config: Annotated[Optional[Path], typer.Option(
        help="TOML config holding the predictor entry, or a shipped config's name (default: default.toml, or "
             "the kind).")] = None,
    from_run: Annotated[Optional[Path], typer.Option(
        help="A `drugcell cv` run dir: take the predictor from its config and save the std calibrator "
             "fitted on its held-out folds with the model.")] = None,
    metric: Annotated[Literal[tuple(metric_names())], typer.Option(
        help="Metric under which --from-run's choice is read (predictors that select under a metric refit "
             "under the run's first metric, as in its CV).")] = "mejia",
    select: Annotated[Optional[Literal[SELECT_RULES]], typer.Option(
        help="Override the run's choice rule: 'simplest' (the simplest predictor no other beats significantly) or "
             "'lowest' (lowest mean, the old rule).")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Fit seed (default: the config's cv.seed).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing model dir.")] = False,
    calibrate_std: Annotated[bool, typer.Option(
        "--calibrate-std/--raw-std", help="With --from-run: save the run's std calibrator with the model.")] = True,
    plugin: Annotated[Optional[list[str]], typer.Option(
        "--plugin", help="Import this module first (repeatable; a .py file works too) so the predictor kinds it "
                         "registers can be fitted.")] = None,
) -> None:
    """Fit one predictor on every training compound and save it (no pickle: JSON + npz)."""
    from drugcell.errors import DrugcellInputError
    from drugcell.fitting import chosen_from_run, fit_model, run_config
    from drugcell.models.registry import load_plugins

    load_plugins(plugin)

    if select is not None and from_run is None:
        raise DrugcellInputError("--select applies to --from-run's choice; pass --from-run RUN_DIR (or drop --select)")
    if from_run is not None and predictor is None:
        choice = chosen_from_run(Path(from_run), run_config(from_run), metric, select)
        typer.echo(f"chosen from {from_run}: {choice.predictor} (rule '{choice.rule}'). {choice.reason}")
        predictor = choice.predictor
    res = fit_model(data, predictor, out, config=config, from_run=from_run, metric=metric, seed=seed,
                    overwrite=overwrite, calibrate_std=calibrate_std)
    typer.echo(f"{res.name} ({res.kind}) fitted on {res.n_compounds:,} compounds x {res.n_genes:,} genes "
               f"in {res.seconds:.1f} s; saved to {res.model_dir}")
    if res.calibrator is not None:
        typer.echo(f"with its {res.calibrator.describe()}")
