"""One (fold, predictor) of a CV run: fit, predict the held-out compounds, score, and return a
compact :class:`Part`.

Why a function of its own: every engine runs exactly this (the local engine in the driver, the Ray
engine in a worker process, maybe on another machine), so a run's numbers cannot depend on the
engine. Everything seeded is seeded by (run seed, fold, predictor name), never by what ran before
(the uncertainty sample's generator included), and the whole task runs with a fixed number of
BLAS/OpenMP threads (``threads``, default 1): OpenBLAS's results change in the last bits with its
thread count, so that count is part of what makes two runs byte-identical, and one thread per
task keeps two tasks on two cores from fighting.

The held-out truth never reaches a predictor (it predicts by SMILES only). Held-out Mejia weights
come from the ExpressionSet (or the official weights file), the proxy metric's gene weights from
the training fold's truth, never from predictions.
"""

from __future__ import annotations

import contextlib
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: the BLAS/OpenMP threads of one task unless the run says otherwise (``cv --threads``)
DEFAULT_THREADS = 1


@dataclass
class Part:
    """What one (fold, predictor) fit leaves for the run: small arrays, placed by the driver."""

    fold: int
    predictor: str
    scores: dict[str, np.ndarray]                       # metric -> (n,) float64 per held-out compound
    counters: dict[str, float]                          # fit_s, predict_s, the prediction's counters
    base: dict[str, np.ndarray] | None = None           # metric -> (n,) leaderboard base terms (with plates)
    fold_terms: dict[str, np.ndarray] | None = None     # metric -> (3, n) the fold's plate terms (with plates)
    unc_rows: np.ndarray | None = None                  # uncertainty sample: rows into the fold's test_idx
    unc_cols: np.ndarray | None = None                  # ... gene columns
    unc_err: np.ndarray | None = None                   # ... pred - truth, float32
    unc_std: np.ndarray | None = None                   # ... predicted std, float32
    predictions: np.ndarray | None = field(default=None, repr=False)  # (n, G) float32, only when saved


def part_seed(seed: int, fold: int, predictor: str) -> np.random.SeedSequence:
    """The seed of what a part draws (its uncertainty sample): the same whichever part ran first."""
    return np.random.SeedSequence([int(seed), int(fold), zlib.crc32(predictor.encode())])


class FoldScorer:
    """Per-fold scoring state computed once and shared by every predictor of the fold.

    The weights come from the metric registry (held-out Mejia weights from the ExpressionSet;
    proxy from the training fold's truth; never from predictions). Scoring squares the error once
    in float32 and reduces it per metric: a row-wise dot with the compound-major Mejia weights,
    a matrix-vector product for per-gene weights (the arithmetic of
    ``contest_scorer.per_compound_wmse``, without recomputing the error per metric).
    """

    def __init__(self, es, train_expr: np.ndarray, test_idx: np.ndarray, metrics: tuple[str, ...]):
        from drugcell.metrics import metric_weights

        self.truth = np.asarray(es.expression[test_idx], dtype=np.float32)
        weights_cg = np.ascontiguousarray(np.asarray(es.weights, dtype=np.float32)[:, test_idx].T)
        self.weights: dict[str, np.ndarray] = {}
        for m in metrics:
            w = np.asarray(metric_weights(m, self.truth, test_weights_gc=weights_cg.T, train_truth_cg=train_expr))
            # (G, n) per compound -> store compound-major (n, G); (G,) per gene -> float32 vector
            self.weights[m] = weights_cg if w.ndim == 2 else w.astype(np.float32)

    def score(self, pred: np.ndarray) -> dict[str, np.ndarray]:
        sq = np.subtract(pred, self.truth, dtype=np.float32)
        np.square(sq, out=sq)
        out = {}
        for m, w in self.weights.items():
            if w.ndim == 2:
                out[m] = np.einsum("cg,cg->c", sq, w, dtype=np.float64)
            else:
                out[m] = (sq @ w).astype(np.float64)
        return out


def uncertainty_sample(pred, truth: np.ndarray, n_max: int, rng: np.random.Generator):
    """A uniform sample of (row, gene) cells without replacement, flat indices sorted."""
    n_cells = truth.size
    k = min(n_max, n_cells)
    flat = np.sort(rng.choice(n_cells, size=k, replace=False)) if k < n_cells else np.arange(n_cells)
    rows, cols = np.divmod(flat, truth.shape[1])
    err = pred.mean.ravel()[flat] - truth.ravel()[flat]
    std = pred.std.ravel()[flat]
    return rows.astype(np.int32), cols.astype(np.int32), err.astype(np.float32), std.astype(np.float32)


@dataclass
class _FoldContext:
    """A fold's training set, scorer and plate terms: built by the first task of the fold in a
    process and reused by the next ones there (the training set is then the same object for every
    predictor of the fold, so per-training-set memos hit in a Ray worker as in the local loop)."""

    key: tuple
    test_idx: np.ndarray
    train: Any
    scorer: FoldScorer
    test_smiles: list[str]
    own: tuple[np.ndarray, np.ndarray] | None
    fold_terms: dict[str, np.ndarray] | None


_CONTEXT: list[_FoldContext] = []  # at most one: the fold this process worked on last


def clear_fold_context() -> None:
    """Drop the cached fold (its training set is the size of the data): at the end of the fits."""
    _CONTEXT.clear()


def _fold_context(es, fold_of: np.ndarray, fold: int, metrics: tuple[str, ...], plate_model) -> _FoldContext:
    key = (es.fingerprint(), zlib.crc32(np.ascontiguousarray(fold_of).tobytes()), int(fold), tuple(metrics))
    if _CONTEXT and _CONTEXT[0].key == key:
        return _CONTEXT[0]
    _CONTEXT.clear()  # free the previous fold before building the next
    test_idx = np.flatnonzero(fold_of == fold)
    train = es.subset(np.flatnonzero(fold_of != fold))
    scorer = FoldScorer(es, train.expression, test_idx, metrics)
    own = terms = None
    if plate_model is not None:
        own = plate_model.own_part(test_idx)
        terms = {m: plate_model.fold_terms(own, w) for m, w in scorer.weights.items()}
    smiles = np.asarray(es.smiles).astype(str)
    _CONTEXT.append(_FoldContext(key, test_idx, train, scorer, list(smiles[test_idx]), own, terms))
    return _CONTEXT[0]


@contextlib.contextmanager
def thread_limit(threads: int) -> Iterator[None]:
    """BLAS and OpenMP pools at ``threads`` for the block (threadpoolctl; torch's own pool too when
    torch is loaded), restored after."""
    import sys

    from threadpoolctl import threadpool_limits

    torch = sys.modules.get("torch")
    prev = torch.get_num_threads() if torch is not None else None
    with threadpool_limits(limits=int(threads)):
        if torch is not None:
            torch.set_num_threads(int(threads))
        try:
            yield
        finally:
            if torch is not None:
                torch.set_num_threads(prev)


def run_part(es, spec, fold: int, fold_of: np.ndarray, config, plate_model=None,
             threads: int = DEFAULT_THREADS) -> Part:
    """Fit ``spec`` on every compound outside ``fold``, predict the fold's compounds by SMILES,
    score them under every metric of ``config`` and keep what the run records."""
    with thread_limit(threads):
        return _run_part(es, spec, int(fold), fold_of, config, plate_model)


def _run_part(es, spec, fold: int, fold_of: np.ndarray, config, plate_model) -> Part:
    ctx = _fold_context(es, fold_of, fold, config.metrics, plate_model)
    t0 = time.perf_counter()
    model = spec.build(metric=config.metrics[0]).fit(ctx.train, seed=config.seed)
    t1 = time.perf_counter()
    pred = model.predict(ctx.test_smiles)
    del model
    counters = {"fit_s": t1 - t0, "predict_s": time.perf_counter() - t1,
                **{c: float(v) for c, v in pred.info.items()}}
    scores = ctx.scorer.score(pred.mean)
    part = Part(fold, spec.name, scores, counters, fold_terms=ctx.fold_terms)
    if ctx.own is not None:
        resid = np.subtract(pred.mean, ctx.scorer.truth, dtype=np.float32)
        part.base = {m: plate_model.base_terms(ctx.own, resid, ctx.scorer.weights[m]) for m in scores}
        del resid
    n_unc = config.output.uncertainty_sample
    if pred.std is not None and n_unc > 0:
        rng = np.random.default_rng(part_seed(config.seed, fold, spec.name))
        part.unc_rows, part.unc_cols, part.unc_err, part.unc_std = uncertainty_sample(
            pred, ctx.scorer.truth, n_unc, rng)
    if config.output.save_predictions:
        part.predictions = np.asarray(pred.mean, dtype=np.float32)
    return part
