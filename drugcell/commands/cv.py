"""`drugcell cv`: cross-validate every predictor of a config on an ExpressionSet cache."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Optional

import typer

from drugcell.config import SELECT_RULES, SPLITS
from drugcell.metrics import available as metric_names
from drugcell.paths import shipped_configs


def _split_list(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def _metric_list(value: str | None) -> list[str] | None:
    """`all` means every registered metric, Mejia (the leaderboard's) first."""
    names = _split_list(value)
    if names == ["all"]:
        from drugcell.metrics import available

        return ["mejia", *[m for m in available() if m != "mejia"]]
    return names


def cv(
    data: Annotated[Path, typer.Option(help="ExpressionSet cache dir (written by `drugcell load`).")],
    out: Annotated[Path, typer.Option(help="Run dir to write (scores, folds, summary, bootstrap, manifest).")],
    config: Annotated[Optional[Path], typer.Option(
        help="TOML run config (predictors, folds, split, metrics), or the name of a shipped one "
             f"({', '.join(shipped_configs())}); default: default.toml.")] = None,
    folds: Annotated[Optional[int], typer.Option(help="Override cv.folds (number of folds).")] = None,
    split: Annotated[Optional[Literal[SPLITS]], typer.Option(help="Override cv.split.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Override cv.seed (folds, fits, bootstrap).")] = None,
    metrics: Annotated[Optional[str], typer.Option(
        "--metric", "--metrics",
        help=f"Metrics to score: one of {', '.join(metric_names())}, a comma list (the first one picks the best), "
             "or all.")] = None,
    bootstrap: Annotated[Optional[int], typer.Option(help="Override cv.bootstrap_resamples (paired bootstrap).")] = None,
    predictors: Annotated[Optional[str], typer.Option(help="Run only these predictor names, comma-separated.")] = None,
    save_predictions: Annotated[Optional[bool], typer.Option(
        "--save-predictions/--no-save-predictions", help="Write RUN/predictions/<name>.npy (held-out rows).")] = None,
    weights: Annotated[Optional[Path], typer.Option(
        help="Official weights.parquet for the held-out Mejia weights (default: the ExpressionSet's); a file, or "
             "a folder holding weights.parquet.")] = None,
    set_: Annotated[Optional[list[str]], typer.Option(
        "--set", help="Any config override as section.key=TOML value, e.g. --set cv.folds=3 (repeatable).")] = None,
    select: Annotated[Optional[Literal[SELECT_RULES]], typer.Option(
        help="Model choice: 'simplest' (the simplest predictor no other beats significantly, Holm-corrected "
             "paired bootstrap; the default) or 'lowest' (lowest mean, the old rule).")] = None,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace an earlier `drugcell cv` run in --out (it stays intact until the new run is "
        "complete), or start over from an interrupted one (its finished fits are removed first).")] = False,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
    plugin: Annotated[Optional[list[str]], typer.Option(
        "--plugin", help="Import this module first (repeatable; a .py file works too) so the predictor kinds it "
                         "registers can be named in the config.")] = None,
    resume: Annotated[bool, typer.Option(
        "--resume", help="Finish the interrupted run of --out from its finished fits (same config, data and "
        "--threads; refused, naming what differs, otherwise). The engine and --workers may change.")] = False,
    engine: Annotated[Literal["local", "ray"], typer.Option(
        help="Where the (fold, predictor) fits run: 'local' (one after another in this process) or 'ray' "
             "(Ray tasks; needs the ray extra). Results are byte-identical either way.")] = "local",
    workers: Annotated[Optional[int], typer.Option(
        help="--engine ray: fits at a time (default: the CPUs Ray sees / --threads).")] = None,
    address: Annotated[Optional[str], typer.Option(
        help="--engine ray: join this Ray cluster ('auto', 'ray://HEAD:10001', ...) instead of starting a local "
             "one on loopback.")] = None,
    threads: Annotated[int, typer.Option(
        help="BLAS/OpenMP threads per fit (part of the result: runs to compare must use the same).")] = 1,
) -> None:
    """Scaffold-split CV of every predictor under every metric, with a paired bootstrap ranking."""
    from drugcell.config import load_config, with_overrides
    from drugcell.data.expression_set import ExpressionSet
    from drugcell.evaluation.cv import run_cv
    from drugcell.models.registry import load_plugins
    from drugcell.paths import config_path

    load_plugins(plugin)

    cfg = with_overrides(
        load_config(config or config_path()), folds=folds, split=split, seed=seed, metrics=_metric_list(metrics),
        bootstrap_resamples=bootstrap, predictors=_split_list(predictors),
        save_predictions=save_predictions, weights_file=str(weights) if weights else None, sets=set_, select=select,
    )
    from drugcell.data.expression_set import weights_file
    from drugcell.evaluation.engines import make_engine
    from drugcell.evaluation.run_dir import check_run_dir, clear_stale_staging, resume_hint

    runner = make_engine(engine, workers=workers, address=address, threads=threads,
                         plugins=plugin)  # ray missing: said now
    check_run_dir(out, overwrite, resume)  # refuse before loading the data and minutes of work
    if cfg.output.weights_file:
        weights_file(cfg.output.weights_file)  # a missing file or an unrecognised folder, before the load
    note = clear_stale_staging(out, keep_resumable=resume)
    if note:
        typer.secho(f"note: {note}", fg=typer.colors.YELLOW, err=True)
    if resume and resume_hint(out) is None:
        typer.secho(f"note: --out {out} has no interrupted run to resume: starting the run", fg=typer.colors.YELLOW,
                    err=True)
    es = ExpressionSet.load(data)
    try:
        result = run_cv(es, cfg, out, progress=progress, overwrite=overwrite, resume=resume, engine=runner)
    except BaseException as exc:
        hint = resume_hint(out)
        if hint and "--resume" not in str(exc):
            typer.secho(f"stopped: {hint}", fg=typer.colors.RED, err=True)
        raise
    typer.echo(result.headline)
    typer.echo(f"the full report (bootstrap, fallbacks, leak audit): {result.out_dir / 'summary.md'}")
    typer.echo(f"wrote {result.out_dir} (chosen under {cfg.metrics[0]}: {result.best(cfg.metrics[0])}, "
               f"rule '{cfg.select_rule}')")
