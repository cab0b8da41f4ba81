"""The few library entry points that take plain paths and names where the layers below take
objects: load the VCPI files, cross-validate, submit. The rest of the public API
(``drugcell.__init__``) re-exports functions of the layers as they are.

Why a module of its own: the commands do the same resolution (a cache path or an ExpressionSet,
a config file or a shipped config's name, a predictor name or kind) with typer options; these
functions are that resolution for Python callers, with the same checks and errors.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from drugcell.config import PredictorSpec, RunConfig, load_config, with_overrides
from drugcell.data.expression_set import ExpressionSet
from drugcell.data.loader import LoadOptions, load_to_cache
from drugcell.data.loader import load_vcpi as _load_vcpi
from drugcell.data.vcpi import CHEMISTRY_FILE, COUNTS_FILE, GENE_FILTER_FILE, METADATA_FILE
from drugcell.errors import DrugcellInputError
from drugcell.evaluation.cv import CVResult
from drugcell.evaluation.cv import run_cv as _run_cv
from drugcell.fitting import resolve_predictor
from drugcell.submission import DEFAULT_OUT, SubmissionResult
from drugcell.submission import make_submission as _make_submission

PathLike = str | os.PathLike[str]


def _data(data: ExpressionSet | PathLike) -> ExpressionSet:
    return data if isinstance(data, ExpressionSet) else ExpressionSet.load(data)


def load_vcpi(data: PathLike | None = None, *, out: PathLike | None = None, counts: PathLike | None = None,
              metadata: PathLike | None = None, chemistry: PathLike | None = None,
              gene_filter: PathLike | None = None, options: LoadOptions | None = None, overwrite: bool = False,
              progress: bool | None = None) -> ExpressionSet:
    """The VCPI training files as an :class:`ExpressionSet` (what ``drugcell load`` does).

    ``data``: a folder holding the four files under their contest names; ``counts`` ...
    ``gene_filter`` override one each. With ``out`` the cache is written there (replaced only with
    ``overwrite``) and read back memory-mapped; without it the set stays in memory.
    """
    names = {"counts": (counts, COUNTS_FILE), "metadata": (metadata, METADATA_FILE),
             "chemistry": (chemistry, CHEMISTRY_FILE), "gene_filter": (gene_filter, GENE_FILTER_FILE)}
    files: dict[str, Path] = {}
    for key, (given, default) in names.items():
        if given is None and data is None:
            raise DrugcellInputError(f"load_vcpi: pass data=FOLDER (holding {default}) or {key}=FILE")
        files[key] = Path(given) if given is not None else Path(data) / default
    if out is None:
        es, _ = _load_vcpi(files["counts"], files["metadata"], files["chemistry"], files["gene_filter"],
                           options=options, progress=progress)
        return es
    load_to_cache(out, files["counts"], files["metadata"], files["chemistry"], files["gene_filter"],
                  options=options, overwrite=overwrite, progress=progress)
    return ExpressionSet.load(out, mmap=True)


def _config(config: RunConfig | PathLike) -> RunConfig:
    return config if isinstance(config, RunConfig) else load_config(config)


def run_cv(data: ExpressionSet | PathLike, config: RunConfig | PathLike = "default.toml",
           out: PathLike = "runs/cv", *, predictors: list[str] | None = None, overwrite: bool = False,
           progress: bool = True, resume: bool = False, engine: str = "local", workers: int | None = None,
           address: str | None = None, threads: int = 1, **overrides: Any) -> CVResult:
    """Cross-validate a config's predictors on ``data`` and write the run folder ``out``.

    ``data``: an ExpressionSet or a cache folder. ``config``: a RunConfig, a TOML file, or the name
    of a shipped config (``"default.toml"``, ``"demo.toml"``, ...). ``predictors``: run only these
    names of the config. ``resume``, ``engine``, ``workers``, ``address``, ``threads``: as the
    ``drugcell cv`` options. ``overrides``: as the other ``drugcell cv`` options (``folds``,
    ``split``, ``seed``, ``metrics``, ``bootstrap_resamples``, ``select``, ``save_predictions``, ``sets``).
    """
    from drugcell.evaluation.engines import make_engine

    runner = make_engine(engine, workers=workers, address=address, threads=threads)
    cfg = with_overrides(_config(config), predictors=predictors, **overrides)
    return _run_cv(_data(data), cfg, out, progress=progress, overwrite=overwrite, resume=resume,
                   engine=runner)  # it checks `out` first


def make_submission(data: ExpressionSet | PathLike, predictor: str | PredictorSpec | None,
                    test_compounds: PathLike, gene_filter: PathLike, out: PathLike = DEFAULT_OUT, *,
                    config: PathLike | None = None, from_run: PathLike | None = None, metric: str = "mejia",
                    seed: int | None = None, **kwargs: Any) -> SubmissionResult:
    """Refit a predictor on every compound of ``data``, predict the test compounds, validate and
    write the submission set (what ``drugcell submit`` does, without a calibrator unless given).

    ``predictor``: a PredictorSpec, a name in ``config`` (or in ``from_run``'s config), or a kind
    with its default parameters; ``None`` with ``from_run`` takes the run's choice under ``metric``.
    Other keyword arguments go to :func:`drugcell.submission.make_submission` (``write_std``,
    ``calibrator``, ``save_model_dir``, ``overwrite``, ``allow_stereo_overlap``).
    """
    if isinstance(predictor, PredictorSpec):
        spec, cfg_seed = predictor, 0
    else:
        spec, cfg_seed = resolve_predictor(predictor, config=config, from_run=from_run, metric=metric)
    if from_run is not None:
        from drugcell.fitting import run_config

        kwargs.setdefault("metric", run_config(from_run).metrics[0])  # refit as the run's CV fitted it
    else:
        kwargs.setdefault("metric", metric)
    return _make_submission(_data(data), spec, test_compounds, gene_filter, out,
                            seed=cfg_seed if seed is None else seed, **kwargs)
