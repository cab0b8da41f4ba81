"""The VCPI contest arithmetic, and nothing else.

Names and parameter names follow the official ``vcpi_prediction_contest`` package so that either
can be swapped in; unlike the official local scorer this one *refuses* incomplete, duplicated or
non-finite input instead of silently dropping or averaging it, pairs truth, prediction and weights
by compound and gene label wherever they carry labels, validates weights wherever they enter
(finite, >= 0, each compound's column summing to 1 within ``WEIGHT_SUM_TOL``), refuses text or
booleans where numbers belong, and never falls back to another weighting without being asked.
"""

from contest_scorer.errors import ScoringError
from contest_scorer.expression import (
    DEFAULT_SAMPLE_COL,
    build_gene_filter,
    counts_to_expression,
    log2_cpm,
)
from contest_scorer.metrics import (
    COMPOUND_COL,
    EXPRESSION_COL,
    GENE_COL,
    PRED_COL,
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
from contest_scorer.validation import validate_submission
from contest_scorer.weights import (
    GeneTotals,
    compute_mejia_weights,
    compute_pooled_weights,
    mejia_weight_rows,
    minmax_square_normalize,
    t_vs_rest,
)

__all__ = [
    "COMPOUND_COL",
    "DEFAULT_SAMPLE_COL",
    "EXPRESSION_COL",
    "GENE_COL",
    "GeneTotals",
    "PRED_COL",
    "ScoringError",
    "WEIGHT_SUM_TOL",
    "aggregate_leaderboards",
    "build_gene_filter",
    "compute_mejia_weights",
    "compute_pooled_weights",
    "compute_proxy_weights",
    "compute_variance_weights",
    "counts_to_expression",
    "log2_cpm",
    "mejia_weight_rows",
    "minmax_square_normalize",
    "per_compound_wmse",
    "proxy_weights",
    "score_compounds",
    "t_vs_rest",
    "validate_submission",
    "validate_weights",
    "variance_weights",
    "wmse",
]
