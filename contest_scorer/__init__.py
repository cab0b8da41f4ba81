"""The VCPI contest arithmetic, and nothing else.

Names and parameter names follow the official ``vcpi_prediction_contest`` package so that either
can be swapped in; unlike the official local scorer this one *refuses* incomplete, duplicated or
non-finite input instead of silently dropping or averaging it, pairs truth, prediction and weights
by compound and gene label wherever they carry labels, validates weights wherever they enter
(finite, >= 0, each compound's column summing to 1 within ``WEIGHT_SUM_TOL``), refuses text or
booleans where numbers belong, and never falls back to another weighting without being asked.

Importing the package is cheap: each public name is imported from its module on first use (PEP
562), so code that needs only the column names (``contest_scorer.columns``) or the error type
never loads pandas.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: public name -> the module that defines it
_WHERE: dict[str, str] = {
    "COMPOUND_COL": "columns", "EXPRESSION_COL": "columns", "GENE_COL": "columns", "PRED_COL": "columns",
    "ScoringError": "errors",
    "DEFAULT_SAMPLE_COL": "expression", "build_gene_filter": "expression", "counts_to_expression": "expression",
    "log2_cpm": "expression",
    "WEIGHT_SUM_TOL": "metrics", "aggregate_leaderboards": "metrics", "compute_proxy_weights": "metrics",
    "compute_variance_weights": "metrics", "per_compound_wmse": "metrics", "proxy_weights": "metrics",
    "score_compounds": "metrics", "validate_weights": "metrics", "variance_weights": "metrics", "wmse": "metrics",
    "validate_submission": "validation",
    "GeneTotals": "weights", "compute_mejia_weights": "weights", "compute_pooled_weights": "weights",
    "mejia_weight_rows": "weights", "minmax_square_normalize": "weights", "t_vs_rest": "weights",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'contest_scorer' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"contest_scorer.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))


if TYPE_CHECKING:  # what static tools see (the names above, eagerly)
    from contest_scorer.columns import COMPOUND_COL, EXPRESSION_COL, GENE_COL, PRED_COL  # noqa: F401
    from contest_scorer.errors import ScoringError  # noqa: F401
    from contest_scorer.expression import (  # noqa: F401
        DEFAULT_SAMPLE_COL,
        build_gene_filter,
        counts_to_expression,
        log2_cpm,
    )
    from contest_scorer.metrics import (  # noqa: F401
        WEIGHT_SUM_TOL,
        aggregate_leaderboards,
        compute_proxy_weights,
        compute_variance_weights,
        per_compound_wmse,
        proxy_weights,
        score_compounds,
        validate_weights,
        variance_weights,
        wmse,
    )
    from contest_scorer.validation import validate_submission  # noqa: F401
    from contest_scorer.weights import (  # noqa: F401
        GeneTotals,
        compute_mejia_weights,
        compute_pooled_weights,
        mejia_weight_rows,
        minmax_square_normalize,
        t_vs_rest,
    )
