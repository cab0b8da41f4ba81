"""Predictors behind one interface (:class:`Predictor`) and a registry of kinds.

Importing this package registers every built-in predictor.
"""

from __future__ import annotations

from drugcell.models import baselines, blend, fusion, knn, mlp, ridge  # noqa: F401  (importing registers each kind)
from drugcell.models.base import Prediction, Predictor
from drugcell.models.registry import available, get_class, make_predictor, register

__all__ = ["Prediction", "Predictor", "available", "get_class", "make_predictor", "register"]
