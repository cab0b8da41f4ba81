"""drugcell: predict transcriptome responses to unseen molecules, and benchmark honestly.

The public API, for ``import drugcell as dc``::

    es = dc.ExpressionSet.load("cache/sim")                  # or dc.load_vcpi("data/vcpi", out="cache/vcpi")
    result = dc.run_cv(es, "default.toml", "runs/api", predictors=["wmean", "ridge_fp"])
    model = dc.make_predictor("ridge_fp").fit(es)
    profile = model.predict(["CC(=O)Oc1ccccc1C(=O)O"]).mean   # (1, genes), log2(CPM+1)

Every name is imported on first use (PEP 562), so ``import drugcell`` costs almost nothing and
torch is imported only when a deep predictor is built. The names and where they live are in
:data:`_API`; ``dir(drugcell)`` lists them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: public name -> "module:attribute"
_API: dict[str, str] = {
    # data
    "ExpressionSet": "drugcell.data.expression_set:ExpressionSet",
    "load_vcpi": "drugcell.api:load_vcpi",
    # predictors and their registry
    "Predictor": "drugcell.models.base:Predictor",
    "Prediction": "drugcell.models.base:Prediction",
    "register": "drugcell.models.registry:register",
    "make_predictor": "drugcell.models.registry:make_predictor",
    "available_predictors": "drugcell.models.registry:available",
    "get_predictor_class": "drugcell.models.registry:get_class",
    "load_plugins": "drugcell.models.registry:load_plugins",
    # run configs and cross-validation
    "RunConfig": "drugcell.config:RunConfig",
    "PredictorSpec": "drugcell.config:PredictorSpec",
    "load_config": "drugcell.config:load_config",
    "config_path": "drugcell.paths:config_path",
    "run_cv": "drugcell.api:run_cv",
    "CVResult": "drugcell.evaluation.cv:CVResult",
    # scoring
    "score": "drugcell.metrics:score",
    "available_metrics": "drugcell.metrics:available",
    "score_compounds": "contest_scorer.metrics:score_compounds",
    "validate_submission": "contest_scorer.validation:validate_submission",
    # fitted models, submission, calibration
    "save_model": "drugcell.persistence:save_model",
    "load_model": "drugcell.persistence:load_model",
    "predict_molecules": "drugcell.prediction:predict_molecules",
    "make_submission": "drugcell.api:make_submission",
    "calibrate_run": "drugcell.calibration.report:calibrate_run",
    "write_report": "drugcell.report.page:write_report",
    # gene programs
    "run_programs": "drugcell.programs.report:run_programs",
    "gene_programs": "drugcell.programs.factorise:gene_programs",
    # errors
    "DrugcellInputError": "drugcell.errors:DrugcellInputError",
}

__all__ = ["__version__", *sorted(_API)]


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("drugcell")
    except PackageNotFoundError:  # running from a source tree without install
        return "0.0.0+unknown"


def __getattr__(name: str) -> Any:
    if name == "__version__":
        value: Any = _version()
    elif name in _API:
        module, _, attr = _API[name].partition(":")
        value = getattr(importlib.import_module(module), attr)
    else:
        raise AttributeError(f"module 'drugcell' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # what static tools see
    __version__: str
