"""`drugcell tune`: Ray Tune + Optuna search for one predictor, scored honestly by nested scaffold CV."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def tune(
    data: Annotated[Path, typer.Option(help="ExpressionSet cache dir (written by `drugcell load`).")],
    space: Annotated[Path, typer.Option(
        help="Search-space TOML: [tune] kind/name/params, [space] choice/int/float ranges, optional [cv] "
             "(see configs/tune_knn.toml).")],
    out: Annotated[Path, typer.Option(
        help="Run dir to write: best_params.parquet, trials.parquet, nested_score.json, tuned.toml, manifest.json.")],
    trials: Annotated[Optional[int], typer.Option(help="Trials per search (default: [tune] trials, else 20).")] = None,
    inner_folds: Annotated[Optional[int], typer.Option(
        help="Inner scaffold folds per outer training fold (default: [tune] inner_folds, else 3).")] = None,
    folds: Annotated[Optional[int], typer.Option(help="Override cv.folds (outer folds).")] = None,
    seed: Annotated[Optional[int], typer.Option(
        help="Override cv.seed: outer and inner folds, Optuna's sampler, every fit.")] = None,
    workers: Annotated[int, typer.Option(
        min=1, help="Ray CPUs = trials run at once (local Ray on loopback; 1 makes the search repeatable).")] = 1,
    early_stop: Annotated[bool, typer.Option(
        "--early-stop/--no-early-stop", help="ASHA: stop trials that trail after 1, 2, ... inner folds.")] = True,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace an earlier `drugcell tune` run in --out (the whole folder).")] = False,
    plugin: Annotated[Optional[list[str]], typer.Option(
        "--plugin", help="Import this module first (repeatable; a .py file works too) so the predictor kinds it "
                         "registers can be tuned; each Ray worker imports it too.")] = None,
) -> None:
    """Search one predictor's parameters by inner scaffold CV inside each outer fold (nested CV), and write
    the nested outer score, the best parameters per fold, every trial, and tuned.toml (parameters from a
    final search on all compounds) that `cv`, `fit` and `submit --config ... --predictor NAME` accept.
    Needs the optional extra: pip install -e .[ray]."""
    from drugcell.data.expression_set import ExpressionSet
    from drugcell.models.registry import load_plugins
    from drugcell.tuning.nested import run_tune
    from drugcell.tuning.outputs import check_tune_dir
    from drugcell.tuning.search import require_ray
    from drugcell.tuning.space import load_space

    require_ray()
    plugins = tuple(str(Path(p).resolve()) if p.endswith(".py") else p for p in (plugin or ()))
    load_plugins(list(plugins))
    spec = load_space(space).with_overrides(trials=trials, inner_folds=inner_folds, seed=seed, folds=folds)
    check_tune_dir(out, overwrite)  # refuse before loading the data and the search
    es = ExpressionSet.load(data)
    typer.echo(f"tune {spec.name} ({spec.kind}): {spec.run.folds} outer {spec.run.split} folds x "
               f"{spec.trials} trials x {spec.inner_folds} inner folds + a final search on all "
               f"{es.n_compounds:,} compounds, under {spec.metric}, {workers} worker(s)")
    res = run_tune(es, spec, out, workers=workers, early_stop=early_stop, overwrite=overwrite, plugins=plugins,
                   log=lambda line: typer.echo(line, err=True))
    n = res.nested
    typer.echo(f"nested {n['metric']} (outer folds): {n['outer_mean']:.4f} +- {n['outer_sd']:.4f} "
               f"(pooled {n['outer_pooled']:.4f}); mean inner best {n['inner_best_mean']:.4f} "
               f"(the search's optimism: {n['optimism']:+.4f})")
    typer.echo(f"tuned {res.name}: {res.params}")
    typer.echo(f"wrote {res.out_dir}; next: drugcell cv --config {res.out_dir / 'tuned.toml'} --data {data} --out RUN")
