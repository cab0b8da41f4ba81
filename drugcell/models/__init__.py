"""Predictors behind one interface (:class:`Predictor`) and a registry of kinds.

Importing this package imports no model module: each built-in kind is registered on its first
lookup (:mod:`drugcell.models.registry`), so torch is imported only when a deep kind is used.
"""

from __future__ import annotations

from drugcell.models.base import Prediction, Predictor
from drugcell.models.registry import available, get_class, load_plugins, make_predictor, register

__all__ = ["Prediction", "Predictor", "available", "get_class", "load_plugins", "make_predictor", "register"]
