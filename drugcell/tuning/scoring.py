"""Fit one parameter set on some compounds and score it on others, in memory, as `drugcell cv` does.

Why here and not in the CV runner: the search scores thousands of (parameters, fold) pairs and
writes no run folder for any of them. The scoring is the CV runner's: the predictor sees the
held-out compounds by SMILES only, the held-out Mejia weights come from the ExpressionSet, the
proxy metric's weights from the training compounds' truth (:func:`drugcell.metrics.score`), and a
predictor that selects under a metric gets the objective's.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from drugcell.config import PredictorSpec


def fold_scores(es, kind: str, params: dict[str, Any], train_idx: np.ndarray, test_idx: np.ndarray,
                metric: str, seed: int) -> np.ndarray:
    """Per-compound wMSE (len(test_idx),) under ``metric`` of ``kind(**params)`` fitted on
    ``train_idx`` and predicting ``test_idx`` (row indices into ``es``)."""
    from drugcell.metrics import score

    train_idx = np.asarray(train_idx)
    test_idx = np.asarray(test_idx)
    train = es.subset(train_idx)
    model = PredictorSpec(name=kind, kind=kind, params=dict(params)).build(metric=metric).fit(train, seed=seed)
    pred = model.predict([str(s) for s in np.asarray(es.smiles)[test_idx]])
    return score(metric, np.asarray(es.expression[test_idx], dtype=np.float32), pred.mean,
                 test_weights_gc=np.asarray(es.weights[:, test_idx]), train_truth_cg=train.expression)


def inner_folds(smiles: list[str], split: str, n_folds: int, seed: int):
    """Inner folds of one training set (:func:`drugcell.splits.folds.make_folds` with the outer
    split); a fallback to random folds is in the assignment's ``warning``, not shouted per search."""
    import warnings

    from drugcell.splits.folds import make_folds

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return make_folds(smiles, split, n_folds, seed)
