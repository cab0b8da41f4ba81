"""`drugcell submit`: refit a predictor on all training compounds and write a validated submission."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def submit(
    data: Annotated[Path, typer.Option(help="ExpressionSet cache dir of the training compounds.")],
    test_compounds: Annotated[Path, typer.Option(
        help="The contest's test_compounds.csv (compound,compound_name,...,smiles,inchi_key).")],
    gene_filter: Annotated[Path, typer.Option(help="The contest's gene_filter.csv (column gene_id).")],
    out: Annotated[Path, typer.Option(help="Submission parquet to write (atomically).")] = Path(
        "submissions/predictions.parquet"),
    predictor: Annotated[Optional[str], typer.Option(
        help="Predictor name in the config (or a registry kind with default params).")] = None,
    config: Annotated[Optional[Path], typer.Option(help="TOML config holding the predictor entry.")] = None,
    from_run: Annotated[Optional[Path], typer.Option(
        help="A `drugcell cv` run dir: take its config, and without --predictor its best predictor.")] = None,
    metric: Annotated[str, typer.Option(help="Metric that picks the best predictor of --from-run.")] = "mejia",
    seed: Annotated[Optional[int], typer.Option(help="Fit seed (default: the config's cv.seed).")] = None,
    std: Annotated[bool, typer.Option(
        "--std/--no-std", help="Also write <out stem>.std.parquet when the model predicts a std.")] = True,
    calibrate_std: Annotated[bool, typer.Option(
        "--calibrate-std/--raw-std",
        help="With --from-run: scale the std sidecar by the factor fitted on the run's held-out folds.")] = True,
    save_model: Annotated[Optional[Path], typer.Option(
        help="Also save the refitted model here (for `drugcell predict --model`).")] = None,
) -> None:
    """Refit on every training compound, audit against the test set, predict, validate, write."""
    from drugcell.data.expression_set import ExpressionSet
    from drugcell.submission import calibrated_std_scale, make_submission, resolve_predictor

    spec, cfg_seed = resolve_predictor(predictor, config=config, from_run=from_run, metric=metric)
    es = ExpressionSet.load(data)
    scale = calibrated_std_scale(from_run, spec.name) if (from_run and std and calibrate_std) else None
    if scale is not None:
        typer.echo(f"std sidecar scaled by s = {scale:.3f} (fitted on the held-out folds of {from_run})")
    result = make_submission(es, spec, test_compounds, gene_filter, out,
                             seed=cfg_seed if seed is None else seed, write_std=std, std_scale=scale,
                             save_model_dir=save_model)
    typer.echo(result.audit_line)
    typer.echo(f"{spec.name}: {result.n_compounds} compounds x {result.n_genes} genes = {result.n_rows} rows "
               f"validated; fallbacks {result.info.get('n_fallback', 0):.0f}, clipped cells "
               f"{result.info.get('n_clipped', 0):.0f}; {result.timings['total_s']:.1f} s")
    typer.echo(f"wrote {result.out}" + (f" and {result.std_out}" if result.std_out else ""))
