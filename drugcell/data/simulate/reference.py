"""The organisers' reference table, recomputed on a simulated set: the simulator's realism check.

Why apart: it reads a finished set back through the contest scorer (not the simulator's own
arrays), so it checks the files a user would hold; it is used by benchmarks and notebooks only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from drugcell.data import vcpi
from drugcell.defaults import COMPOUND_COL, EXPRESSION_COL, GENE_COL

#: The organisers' published figures (mean per-compound weighted MSE of each simple predictor).
ORGANISER_FIGURES = {
    "truth": 0.0, "truth_plus_N(0,0.1)": 0.010, "per_gene_training_mean": 0.507,
    "random_training_compound": 0.701, "truth_plus_N(0,1)": 1.003,
    "global_constant_training_mean": 5.785, "constant_5": 8.345,
}


def _contest_wells(d: Path) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """Contest-condition metadata with a canonical compound key, their counts, the scored genes."""
    meta = pd.read_parquet(d / vcpi.METADATA_FILE)
    counts = pd.read_parquet(d / vcpi.COUNTS_FILE)
    genes = pd.read_csv(d / vcpi.GENE_FILTER_FILE)[vcpi.GENE_COL].astype(str).tolist()
    key = meta[vcpi.COMPOUND_KEY_COL]
    dmso = key == vcpi.DMSO
    contest = (meta[vcpi.TIMEPOINT_COL] == vcpi.CONTEST_TIMEPOINT) & (
        (meta[vcpi.CONCENTRATION_COL] == vcpi.CONTEST_CONCENTRATION_NM) | dmso
    )
    meta = meta.loc[contest].copy()
    meta["key"] = [vcpi.control_id(u) or u for u in meta[vcpi.COMPOUND_KEY_COL]]
    counts = counts[[vcpi.GENE_COL, *meta[vcpi.SAMPLE_COL].tolist()]]
    return meta, counts, genes


def reference_figures(data_dir: str | Path, *, n_holdout: int = 200, seed: int = 0) -> dict[str, float]:
    """The organisers' reference table recomputed on a simulated set (in memory: small sizes only).

    Uses the contest scorer for the target and the official-build Mejia weights (all contest
    training wells, controls as columns), then scores simple predictors on ``n_holdout`` random
    library compounds, as the organisers did with 200 held-out training compounds.
    """
    from contest_scorer import compute_mejia_weights, counts_to_expression, per_compound_wmse

    meta, counts, genes = _contest_wells(Path(data_dir))
    truth = counts_to_expression(counts, meta, compound_col="key", gene_filter=genes)
    mat = truth.pivot(index=COMPOUND_COL, columns=GENE_COL, values=EXPRESSION_COL)
    weights = compute_mejia_weights(counts, meta, compound_col="key", gene_filter=genes)
    weights = weights.loc[mat.columns, mat.index]
    library = np.array([c for c in mat.index if c not in vcpi.CONTROL_IDS])
    rng = np.random.default_rng(seed)
    hold = rng.choice(library, size=min(n_holdout, len(library) // 2), replace=False)
    train = np.setdiff1d(library, hold)
    t = mat.loc[hold].to_numpy()
    tr = mat.loc[train].to_numpy()
    w = weights[hold].to_numpy()
    preds = {
        "truth": t,
        "truth_plus_N(0,0.1)": t + rng.normal(0, 0.1, size=t.shape),
        "per_gene_training_mean": np.broadcast_to(tr.mean(axis=0), t.shape),
        "random_training_compound": tr[rng.integers(0, len(tr), size=len(hold))],
        "truth_plus_N(0,1)": t + rng.normal(0, 1.0, size=t.shape),
        "global_constant_training_mean": np.full(t.shape, tr.mean()),
        "constant_5": np.full(t.shape, 5.0),
    }
    # the organisers' table scores unclipped noise (truth + N(0, 1) can be negative)
    return {k: float(per_compound_wmse(t, p, w, allow_negative=True).mean()) for k, p in preds.items()}
