"""The two floors every learned predictor must beat: the DMSO profile and the training mean."""

from __future__ import annotations

import numpy as np

from drugcell.models.base import Prediction, Predictor
from drugcell.models.registry import register


@register("control")
class ControlPredictor(Predictor):
    """Predicts the DMSO control profile for every compound: "the drug does nothing"."""

    simplicity = 0

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

    state_fields = ("profile_",)

    def _fit(self, train, seed):
        self.profile_ = np.asarray(train.expression, dtype=np.float64).mean(axis=0).astype(np.float32)

    def _predict(self, smiles):
        mean = np.broadcast_to(self.profile_, (len(smiles), self.profile_.shape[0])).copy()
        return Prediction(mean=mean, std=None, info={"n_fallback": 0.0, "n_unparsed": 0.0})
