"""Which predictor to fit (by name, config or the best of a CV run), and fitting it on every compound.

Why its own module: ``drugcell fit`` and ``drugcell submit`` both choose a predictor and refit it
on all training compounds; keeping that here lets :mod:`drugcell.persistence` stay save/load only
and :mod:`drugcell.submission` import it one way (submission -> fitting -> persistence).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from drugcell.calibration.calibrator import Calibrator, calibrator_for_run
from drugcell.config import PredictorSpec, RunConfig, config_from_dict, load_config
from drugcell.errors import DrugcellInputError
from drugcell.models.base import Predictor
from drugcell.persistence import TrainInfo, check_model_dir, save_model
from drugcell.progress import step
from drugcell.provenance import read_json_object


def resolve_predictor(
    name: str | None = None, *, config: str | Path | None = None,
    from_run: str | Path | None = None, metric: str = "mejia", select: str | None = None,
) -> tuple[PredictorSpec, int]:
    """Which predictor to refit, and the seed, from a name, a config, or the choice of a CV run.

    ``from_run`` reads the run's manifest (its config) and, without ``name``, takes the predictor
    the run chose under ``metric`` (:func:`chosen_from_run`; ``select="lowest"`` takes the lowest
    mean instead). Without a config, ``name`` may be a registry kind (its default params) or a
    name in ``configs/default.toml``.
    """
    if from_run is not None:
        run = Path(from_run)
        cfg = run_config(run)
        if name is None:
            name = chosen_from_run(run, cfg, metric, select).predictor
        return cfg.predictor(name), cfg.seed
    if name is None:
        raise DrugcellInputError("name a predictor (--predictor NAME) or a CV run (--from-run RUN_DIR)")
    if config is not None:
        cfg = load_config(config)
        return cfg.predictor(name), cfg.seed
    from drugcell.models import available

    if name in available():
        return PredictorSpec(name=name, kind=name, params={}), 0
    from drugcell.paths import config_path

    default = config_path()
    if default.is_file():
        cfg: RunConfig = load_config(default)
        return cfg.predictor(name), cfg.seed
    raise DrugcellInputError(f"unknown predictor {name!r}: pass --config with a [[predictors]] entry named so")


def run_config(run: str | Path) -> RunConfig:
    """The config a `drugcell cv` run recorded in its manifest."""
    man = Path(run) / "manifest.json"
    if not man.is_file():
        raise DrugcellInputError(f"{run}: no manifest.json; pass the directory a `drugcell cv` run wrote")
    raw = read_json_object(man, what="`drugcell cv` manifest", fix="re-run `drugcell cv`").get("config")
    if not isinstance(raw, dict):
        raise DrugcellInputError(f"{man} is not a `drugcell cv` manifest (no config table); re-run `drugcell cv`")
    return config_from_dict(raw, source=str(man))


def chosen_from_run(run: Path, cfg: RunConfig, metric: str = "mejia", select: str | None = None):
    """The run's model choice under ``metric`` (a :class:`~drugcell.evaluation.selection.Choice`).

    The rule is the run's own (``cv.select``) unless ``select`` names another; the choice is
    recomputed from the run's scores and bootstrap table, so it is the same as in summary.md.
    """
    from drugcell.evaluation.selection import choose
    from drugcell.models import get_class

    scores_path = run / "scores.parquet"
    if not scores_path.is_file():
        raise DrugcellInputError(f"{run}: no scores.parquet; the CV run did not finish")
    scores = pd.read_parquet(scores_path, columns=["predictor", "metric", "wmse"])
    rule = select or cfg.select_rule
    comp_path = run / "comparisons.parquet"
    comparisons = pd.read_parquet(comp_path) if comp_path.is_file() else None
    simplicity = {p.name: get_class(p.kind).simplicity for p in cfg.predictors}
    return choose(scores, comparisons, metric, simplicity, rule=rule, alpha=cfg.select_alpha)


def fit_spec(es, spec: PredictorSpec, seed: int, metric: str | None = None) -> Predictor:
    """A fresh predictor built from ``spec`` (``metric`` for predictors that select under one) and
    fitted on every compound of ``es``."""
    return spec.build(metric=metric).fit(es, seed=seed)


@dataclass
class FitResult:
    model_dir: Path
    name: str
    kind: str
    n_compounds: int
    n_genes: int
    seconds: float
    calibrator: Calibrator | None = None


def fit_model(data: str | Path, predictor: str | None, out: str | Path, *, config: str | Path | None = None,
              from_run: str | Path | None = None, metric: str = "mejia", seed: int | None = None,
              overwrite: bool = False, calibrate_std: bool = True) -> FitResult:
    """What ``drugcell fit`` does: resolve the predictor, fit it on every compound, save it.

    With ``from_run`` (and ``calibrate_std``) the saved model also carries the std calibrator
    fitted on that run's held-out errors for the predictor, when the run has samples for it.
    """
    from drugcell.data.expression_set import ExpressionSet

    out = Path(out)
    check_model_dir(out, overwrite, what="--out")  # fail before loading the data and an hour of fitting
    spec, cfg_seed = resolve_predictor(predictor, config=config, from_run=from_run, metric=metric)
    calibrator = calibrator_for_run(from_run, spec.name) if (from_run is not None and calibrate_std) else None
    seed = cfg_seed if seed is None else int(seed)
    step(f"load the training data from {data}")
    es = ExpressionSet.load(data)
    t0 = time.perf_counter()
    fit_metric = run_config(from_run).metrics[0] if from_run is not None else metric  # as the CV run fitted it
    step(f"fit {spec.name} ({spec.kind}) on {es.n_compounds:,} compounds x {es.n_genes:,} genes")
    model = fit_spec(es, spec, seed, metric=fit_metric)
    seconds = time.perf_counter() - t0
    source = None if config is None else str(config)
    info = TrainInfo.from_expression_set(es, seed=seed, fit_s=round(seconds, 2), config_source=source,
                                         from_run=None if from_run is None else str(from_run))
    step(f"save the model to {out}")
    save_model(model, out, train_info=info, name=spec.name, seed=seed, overwrite=overwrite, calibrator=calibrator)
    return FitResult(model_dir=out, name=spec.name, kind=spec.kind, n_compounds=es.n_compounds,
                     n_genes=es.n_genes, seconds=seconds, calibrator=calibrator)
