"""Metric registry: each metric is per-compound wMSE under one way of weighting genes.

Like cell-eval's registry, a metric declares its name, which direction is better and where its
weights come from, so the CV runner loops over names and never special-cases one. Weights always
come from the truth side (held-out Mejia weights or training/scored truth), never from predictions,
so a predictor cannot move its own weights. The arithmetic is :mod:`contest_scorer`'s.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from drugcell.errors import DrugcellInputError
from drugcell.registry import Registry

# (truth_cg, test_weights_gc, train_truth_cg) -> weights: (G, C) per compound or (G,) per gene
WeightFn = Callable[[np.ndarray, "np.ndarray | None", "np.ndarray | None"], np.ndarray]


@dataclass(frozen=True)
class Metric:
    name: str
    direction: str          # "lower": smaller wMSE is better
    description: str
    weights: WeightFn


def _check_metric(metric: Metric) -> None:
    if not isinstance(metric, Metric):
        raise TypeError(f"a metric must be a Metric, got {metric!r}")
    if metric.direction not in ("lower", "higher"):
        raise ValueError(f"metric {metric.name}: direction must be 'lower' or 'higher'")


METRICS: Registry[Metric] = Registry("metric", field="metrics", check=_check_metric)


def register(metric: Metric) -> Metric:
    """Add a metric under its name (another metric under a taken name is a bug)."""
    return METRICS.add(metric.name, metric)


def available() -> list[str]:
    """Registered metric names, in registration order (mejia first: it is the leaderboard's)."""
    return METRICS.names()


def get_metric(name: str) -> Metric:
    return METRICS.get(name)


def _mejia(truth_cg, test_weights_gc, train_truth_cg):
    if test_weights_gc is None:
        raise DrugcellInputError(
            "metric 'mejia' needs the held-out compounds' Mejia weights (ExpressionSet.weights "
            "columns of the test compounds, genes x compounds); pass test_weights_gc")
    w = np.asarray(test_weights_gc)
    c, g = truth_cg.shape
    if w.shape != (g, c):
        raise DrugcellInputError(
            f"metric 'mejia': test_weights_gc must be genes x compounds {(g, c)}, got {w.shape}; "
            f"take ExpressionSet.subset(test_idx).weights")
    if not np.isfinite(w).all():
        raise DrugcellInputError("metric 'mejia': the Mejia weights contain NaN/inf")
    return w


def _proxy(truth_cg, test_weights_gc, train_truth_cg):
    if train_truth_cg is None:
        raise DrugcellInputError(
            "metric 'proxy' needs the training truth (compounds x genes) of this fold; pass "
            "train_truth_cg (never the held-out truth: that would tune the weights to the test)")
    t = np.asarray(train_truth_cg)
    if t.ndim != 2 or t.shape[1] != truth_cg.shape[1]:
        raise DrugcellInputError(
            f"metric 'proxy': train_truth_cg must be compounds x {truth_cg.shape[1]} genes, "
            f"got {t.shape}")
    from contest_scorer import proxy_weights  # imported on use: the registry is read by `--help`

    return proxy_weights(t)


def _variance(truth_cg, test_weights_gc, train_truth_cg):
    from contest_scorer import variance_weights

    return variance_weights(truth_cg)


MEJIA = register(Metric(
    "mejia", "lower",
    "contest leaderboard: per-(gene, compound) Mejia weights of the held-out compounds", _mejia))
PROXY = register(Metric(
    "proxy", "lower",
    "per gene 1/variance across training compounds (the paper's proxy), sums to 1", _proxy))
VARIANCE = register(Metric(
    "variance", "lower",
    "per gene variance of the scored truth across compounds, ddof=0 (official no-weights "
    "fallback; not the leaderboard), sums to 1", _variance))


def metric_weights(metric: str | Metric, truth_cg: np.ndarray, *,
                   test_weights_gc: np.ndarray | None = None,
                   train_truth_cg: np.ndarray | None = None) -> np.ndarray:
    """The weights a metric scores with: (G, C) per gene and compound, or (G,) per gene."""
    m = metric if isinstance(metric, Metric) else get_metric(metric)
    truth_cg = np.asarray(truth_cg)
    if truth_cg.ndim != 2:
        raise DrugcellInputError(f"truth must be compounds x genes, got shape {truth_cg.shape}")
    return m.weights(truth_cg, test_weights_gc, train_truth_cg)


def score(metric: str | Metric, truth_cg: np.ndarray, pred_cg: np.ndarray, *,
          test_weights_gc: np.ndarray | None = None,
          train_truth_cg: np.ndarray | None = None) -> np.ndarray:
    """Per-compound wMSE (C,) of ``pred_cg`` against ``truth_cg`` (both compounds x genes)."""
    truth_cg = np.asarray(truth_cg)
    pred_cg = np.asarray(pred_cg)
    if truth_cg.shape != pred_cg.shape:
        raise DrugcellInputError(
            f"prediction shape {pred_cg.shape} differs from truth shape {truth_cg.shape}")
    if not np.isfinite(pred_cg).all():
        raise DrugcellInputError(
            f"prediction has {int((~np.isfinite(pred_cg)).sum())} NaN/inf value(s)")
    w = metric_weights(metric, truth_cg, test_weights_gc=test_weights_gc,
                       train_truth_cg=train_truth_cg)
    # drugcell scores raw model output here (predictors clip at 0; a submission is checked apart)
    from contest_scorer import per_compound_wmse

    return per_compound_wmse(truth_cg, pred_cg, w, allow_negative=True)


def score_all(truth_cg: np.ndarray, pred_cg: np.ndarray, *, metrics: list[str] | None = None,
              test_weights_gc: np.ndarray | None = None,
              train_truth_cg: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """{metric name: per-compound wMSE} for several metrics at once (default: all registered)."""
    return {m: score(m, truth_cg, pred_cg, test_weights_gc=test_weights_gc,
                     train_truth_cg=train_truth_cg) for m in (metrics or available())}
