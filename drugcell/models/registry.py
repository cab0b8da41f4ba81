"""Predictor kinds: the shared :class:`~drugcell.registry.Registry` holding Predictor classes, so
configs name predictors by ``kind`` and the CV runner never imports a model module itself.

Importing :mod:`drugcell.models` (which importing this module does) registers every built-in.
Capabilities (``returns_std``, ``needs_torch``, ``simplicity``) are declared on each class, so no
list elsewhere has to be kept in step with the models.
"""

from __future__ import annotations

from typing import Any, TypeVar

from drugcell.models.base import Predictor
from drugcell.registry import Registry

P = TypeVar("P", bound=type[Predictor])


def _check_predictor(cls: object) -> None:
    if not (isinstance(cls, type) and issubclass(cls, Predictor)):
        raise TypeError(f"a predictor kind needs a Predictor subclass, got {cls!r}")


PREDICTORS: Registry[type[Predictor]] = Registry("predictor kind", field="kind", check=_check_predictor)


def register(kind: str):
    """Class decorator: register a :class:`Predictor` subclass under ``kind`` (sets ``cls.kind``)."""

    def decorate(cls: P) -> P:
        PREDICTORS.add(kind, cls)
        cls.kind = kind
        return cls

    return decorate


def available() -> list[str]:
    """Registered predictor kinds, sorted."""
    return sorted(PREDICTORS.names())


def get_class(kind: str) -> type[Predictor]:
    """The class registered under ``kind``; a clear error listing the kinds otherwise."""
    return PREDICTORS.get(kind)


def kinds_with(capability: str) -> list[str]:
    """Registered kinds whose class declares ``capability`` true (e.g. ``"returns_std"``)."""
    return [k for k in available() if getattr(PREDICTORS.get(k), capability, False)]


def make_predictor(kind: str, **params: Any) -> Predictor:
    """Build an unfitted predictor; unknown kinds or parameters raise DrugcellInputError."""
    return get_class(kind)(**params)
