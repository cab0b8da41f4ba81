"""Predictors behind one interface (:class:`Predictor`) and a registry of kinds.

Importing this package registers every built-in predictor.
"""

from __future__ import annotations

import importlib
import importlib.util

from drugcell.models.base import Prediction, Predictor
from drugcell.models.registry import available, get_class, make_predictor, register
from drugcell.models import baselines, knn, ridge  # noqa: F401  (registering imports)

# The one optional guard: the deep models (mlp, fusion) are written separately and may not
# exist yet in a checkout; register them when their modules are present.
for _name in ("mlp", "fusion"):
    if importlib.util.find_spec(f"drugcell.models.{_name}") is not None:
        importlib.import_module(f"drugcell.models.{_name}")

__all__ = ["Prediction", "Predictor", "available", "get_class", "make_predictor", "register"]
