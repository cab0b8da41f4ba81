"""Name -> predictor class, so configs name predictors by ``kind`` and the CV runner never
imports a model module itself (a tiny chemprop-style registry).

Importing :mod:`drugcell.models` (which importing this module does) registers every built-in.
"""

from __future__ import annotations

from typing import Any, TypeVar

from drugcell.errors import DrugcellInputError
from drugcell.models.base import Predictor

_REGISTRY: dict[str, type[Predictor]] = {}

P = TypeVar("P", bound=type[Predictor])


def register(kind: str):
    """Class decorator: register a :class:`Predictor` subclass under ``kind`` (sets ``cls.kind``)."""

    def decorate(cls: P) -> P:
        if not (isinstance(cls, type) and issubclass(cls, Predictor)):
            raise TypeError(f"@register({kind!r}) needs a Predictor subclass, got {cls!r}")
        old = _REGISTRY.get(kind)
        if old is not None and old.__qualname__ != cls.__qualname__:
            raise ValueError(f"predictor kind {kind!r} is already registered by {old.__module__}.{old.__qualname__}")
        cls.kind = kind
        _REGISTRY[kind] = cls
        return cls

    return decorate


def available() -> list[str]:
    """Registered predictor kinds, sorted."""
    return sorted(_REGISTRY)


def get_class(kind: str) -> type[Predictor]:
    """The class registered under ``kind``; a clear error listing the kinds otherwise."""
    try:
        return _REGISTRY[kind]
    except KeyError:
        raise DrugcellInputError(
            f"unknown predictor kind {kind!r}; available kinds: {', '.join(available())}. "
            "Fix the `kind` of this predictor in the config."
        ) from None


def make_predictor(kind: str, **params: Any) -> Predictor:
    """Build an unfitted predictor; unknown kinds or parameters raise DrugcellInputError."""
    return get_class(kind)(**params)
