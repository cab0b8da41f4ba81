"""`drugcell submit`: refit a predictor on all training compounds and write a validated submission."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Optional

import typer

from drugcell.config import SELECT_RULES
from drugcell.metrics import available as metric_names
from drugcell.models.registry import builtin_kinds


def submit(
    data: Annotated[Path, typer.Option(help="ExpressionSet cache dir of the training compounds.")],
    test_compounds: Annotated[Path, typer.Option(
        help="The contest's test_compounds.csv (compound,compound_name,...,smiles,inchi_key), or the same "
             "table as .parquet.")],
    gene_filter: Annotated[Path, typer.Option(help="The contest's gene_filter.csv (column gene_id).")],
    out: Annotated[Path, typer.Option(
        help="Submission parquet to write; with <stem>.std.parquet and <out>.manifest.json it is written as one "
             "set (all three or none).")] = Path("submissions/predictions.parquet"),
    predictor: Annotated[Optional[str], typer.Option(
        help="Predictor name in the config, or a predictor kind with default parameters (built in: "
             f"{', '.join(builtin_kinds())}; plugins add more).")] = None,
    config: Annotated[Optional[Path], typer.Option(
        help="TOML config holding the predictor entry, or a shipped config's name (default.toml, ...).")] = None,
    from_run: Annotated[Optional[Path], typer.Option(
        help="A `drugcell cv` run dir: take its config, and without --predictor the predictor it chose.")] = None,
    metric: Annotated[Literal[tuple(metric_names())], typer.Option(
        help="Metric under which --from-run's choice is read.")] = "mejia",
    select: Annotated[Optional[Literal[SELECT_RULES]], typer.Option(
        help="Override the run's choice rule: 'simplest' (the simplest predictor no other beats significantly, "
             "Holm-corrected) or 'lowest' (lowest mean, the old rule).")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Fit seed (default: the config's cv.seed).")] = None,
    std: Annotated[bool, typer.Option(
        "--std/--no-std", help="Also write <out stem>.std.parquet when the model predicts a std.")] = True,
    calibrate_std: Annotated[bool, typer.Option(
        "--calibrate-std/--raw-std",
        help="With --from-run: scale the std sidecar by the calibrator fitted on the run's held-out folds "
             "(the one `drugcell calibrate` saved in the run, else fitted from its uncertainty samples).")] = True,
    save_model: Annotated[Optional[Path], typer.Option(
        help="Also save the refitted model here, with its std calibrator (for `drugcell predict --model`).")] = None,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace an earlier submission set at --out (and a model at --save-model that drugcell "
                            "saved); a sidecar the new set lacks is removed.")] = False,
    allow_stereo_overlap: Annotated[bool, typer.Option(
        "--allow-stereo-overlap",
        help="Submit test compounds that share only the InChIKey first block with a training compound "
             "(stereoisomers, E/Z isomers); they are counted in the audit and the manifest. The same molecule "
             "(full InChIKey, canonical SMILES or id) is always refused.")] = False,
    plugin: Annotated[Optional[list[str]], typer.Option(
        "--plugin", help="Import this module first (repeatable; a .py file works too) so the predictor kinds it "
                         "registers can be submitted.")] = None,
) -> None:
    """Refit on every training compound, audit against the test set, predict, validate, write."""
    from drugcell.calibration.calibrator import calibrator_for_run
    from drugcell.data.expression_set import ExpressionSet
    from drugcell.errors import DrugcellInputError
    from drugcell.fitting import resolve_predictor, run_config
    from drugcell.models.registry import load_plugins
    from drugcell.progress import step
    from drugcell.submission import check_outputs, make_submission

    load_plugins(plugin)

    if select is not None and from_run is None:
        raise DrugcellInputError("--select applies to --from-run's choice; pass --from-run RUN_DIR (or drop --select)")
    note = check_outputs(out, save_model, overwrite)  # before reading the run, loading data or fitting
    if note:
        typer.echo(f"note: {note}")
    if from_run is not None and predictor is None:
        from drugcell.fitting import chosen_from_run, run_config

        choice = chosen_from_run(Path(from_run), run_config(from_run), metric, select)
        typer.echo(f"chosen from {from_run}: {choice.predictor} (rule '{choice.rule}'). {choice.reason}")
        predictor = choice.predictor
    spec, cfg_seed = resolve_predictor(predictor, config=config, from_run=from_run, metric=metric)
    # predictors that select under a metric refit under the one their CV run used
    fit_metric = run_config(from_run).metrics[0] if from_run is not None else metric
    step(f"load the training data from {data}")
    es = ExpressionSet.load(data)
    calibrator = calibrator_for_run(from_run, spec.name) if (from_run and calibrate_std) else None
    if calibrator is not None:
        typer.echo(calibrator.describe())
    result = make_submission(es, spec, test_compounds, gene_filter, out,
                             seed=cfg_seed if seed is None else seed, write_std=std, calibrator=calibrator,
                             save_model_dir=save_model, metric=fit_metric, overwrite=overwrite,
                             allow_stereo_overlap=allow_stereo_overlap)
    for w in result.warnings:
        typer.secho(f"warning: {w}", fg=typer.colors.YELLOW, err=True)
    typer.echo(result.audit_line)
    typer.echo(f"{spec.name}: {result.n_compounds} compounds x {result.n_genes} genes = {result.n_rows} rows "
               f"validated; fallbacks {result.info.get('n_fallback', 0):.0f}, clipped cells "
               f"{result.info.get('n_clipped', 0):.0f}; {result.timings['total_s']:.1f} s")
    typer.echo(f"wrote {result.out}" + (f" and {result.std_out}" if result.std_out else "")
               + (f" (std scaled by s = {calibrator.scale:.3f})" if calibrator is not None and result.std_out else ""))
    if save_model is not None:
        typer.echo(f"saved the model to {save_model}" + (" with its std calibrator" if calibrator else ""))
