"""The two floors every learned predictor must beat: the DMSO profile and the training mean."""

from __future__ import annotations

import numpy as np

from drugcell.models.base import Prediction, Predictor
from drugcell.models.registry import register


@register("control")
class ControlPredictor(Predictor):
    """Predicts the DMSO control profile for every compound: "the drug does nothing"."""

    simplicity = 0

    reuse_fit = True
    state_fields = ("profile_",)

    def _fit(self, train, seed):
        profile = np.asarray(train.control, dtype=np.float32)
        if profile.shape != (train.expression.shape[1],):
            raise ValueError(f"control profile has shape {profile.shape}, expected ({train.expression.shape[1]},)")
        self.profile_ = profile

    def _predict(self, smiles):
        mean = np.broadcast_to(self.profile_, (len(smiles), self.profile_.shape[0])).copy()
        return Prediction(mean=mean, std=None, info={"n_fallback": 0.0, "n_unparsed": 0.0})


@register("mean")
class MeanPredictor(Predictor):
    """Per-gene mean over training compounds: the average drug response, ignoring structure."""

    simplicity = 1

    reuse_fit = True
    state_fields = ("profile_",)

    def _fit(self, train, seed):
        self.profile_ = np.asarray(train.expression, dtype=np.float64).mean(axis=0).astype(np.float32)

    def _predict(self, smiles):
        mean = np.broadcast_to(self.profile_, (len(smiles), self.profile_.shape[0])).copy()
        return Prediction(mean=mean, std=None, info={"n_fallback": 0.0, "n_unparsed": 0.0})


def weighted_mean_profile(expression: np.ndarray, weights_gc: np.ndarray) -> np.ndarray:
    """The metric-optimal constant: p_g = sum_c W[g,c] y[c,g] / sum_c W[g,c].

    Setting the derivative of sum_c sum_g W[g,c] (p_g - y[c,g])^2 to zero gives it, so no other
    structure-free prediction has a lower training wMSE under per-(gene, compound) weights. Genes
    that no compound weights (sum 0) fall back to the plain mean. Computed once per training set
    and shared by every predictor fitted on it (:mod:`drugcell.models.train_memo`).
    """
    from drugcell.models.train_memo import memoized

    y = np.asarray(expression)
    w = np.asarray(weights_gc)
    if w.shape != (y.shape[1], y.shape[0]):
        raise ValueError(f"weights must be genes x compounds {(y.shape[1], y.shape[0])}, got {w.shape}")
    return memoized("wmean", (y, w), lambda: _weighted_mean(y, w))


def _weighted_mean(y: np.ndarray, w: np.ndarray) -> np.ndarray:
    num = np.zeros(y.shape[1])
    den = np.zeros(y.shape[1])
    for lo in range(0, y.shape[0], 2048):  # row chunks: no full float64 copy of a 14k x 13k array
        yb = np.asarray(y[lo: lo + 2048], dtype=np.float64)
        wb = np.asarray(w[:, lo: lo + 2048], dtype=np.float64)
        num += np.einsum("gc,cg->g", wb, yb)
        den += wb.sum(axis=1)
    plain = y.mean(axis=0, dtype=np.float64)
    ok = den > 0
    return np.where(ok, num / np.where(ok, den, 1.0), plain).astype(np.float32)


@register("wmean")
class WeightedMeanPredictor(Predictor):
    """The metric-optimal structure-free prediction under Mejia weights: each gene's mean over the
    training compounds weighted by their own weights (leans toward the usual strong response).
    The bar every chemistry model must clear."""

    simplicity = 2

    reuse_fit = True
    state_fields = ("profile_",)

    def _fit(self, train, seed):
        self.profile_ = weighted_mean_profile(train.expression, train.weights)

    def _predict(self, smiles):
        mean = np.broadcast_to(self.profile_, (len(smiles), self.profile_.shape[0])).copy()
        return Prediction(mean=mean, std=None, info={"n_fallback": 0.0, "n_unparsed": 0.0})
