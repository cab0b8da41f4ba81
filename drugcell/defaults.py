"""One home for the names and defaults that several modules share.

Why: a column name or a fingerprint size spelled in six places drifts. Contest table columns are
:mod:`contest_scorer`'s (the official names); the VCPI input layout is :mod:`drugcell.data.vcpi`'s;
everything drugcell itself chooses a default for lives here.
"""

from __future__ import annotations

from contest_scorer.columns import COMPOUND_COL, EXPRESSION_COL, GENE_COL, PRED_COL

__all__ = [
    "COMPOUND_COL", "EXPRESSION_COL", "GENE_COL", "PRED_COL", "SMILES_COL",
    "MORGAN_RADIUS", "MORGAN_BITS", "DEFAULT_SEED", "DEFAULT_FOLDS", "DEFAULT_SPLIT",
    "DEFAULT_METRIC", "DEFAULT_BOOTSTRAP", "DEFAULT_CONFIG_NAME", "LOG2CPM", "SIGNED", "VALUE_SCALES",
]

#: SMILES column of drugcell's own tables (test compounds, predict input, ExpressionSet frames).
SMILES_COL = "smiles"

#: Morgan fingerprint used for retrieval, ridge_fp, the leak audit and saved models' "nearest" check.
MORGAN_RADIUS = 2
MORGAN_BITS = 2048

#: Run defaults (a config file or CLI flag overrides them).
DEFAULT_SEED = 0
DEFAULT_FOLDS = 5
DEFAULT_SPLIT = "scaffold"
DEFAULT_METRIC = "mejia"
DEFAULT_BOOTSTRAP = 10_000
DEFAULT_CONFIG_NAME = "default.toml"

#: The value scale an ExpressionSet holds. ``log2cpm``: log2(CPM+1) (VCPI, L1000 log2 levels), never
#: negative, so predictions are clipped at 0; ``signed``: z-scores or log fold changes, predicted as
#: they are. Caches written before the scale was recorded hold log2cpm.
LOG2CPM = "log2cpm"
SIGNED = "signed"
VALUE_SCALES = (LOG2CPM, SIGNED)
