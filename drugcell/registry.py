"""One small name -> object registry, used for predictors, embeddings, metrics and feature kinds.

Why one type: configs name everything by a string (``kind = "knn"``, ``embedding = "minimol"``,
``metrics = ["mejia"]``), and a user should meet the same rules everywhere: registering the same
object twice is harmless (a module imported again), a *different* object under a taken name is a
bug that names both places, and an unknown name is a :class:`DrugcellInputError` that lists the
names on offer and says which config field to fix.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from drugcell.errors import DrugcellInputError

T = TypeVar("T")


def _origin(obj: object) -> str:
    """``module.qualname`` of a class or function, else the instance's repr."""
    if hasattr(obj, "__qualname__"):
        return f"{getattr(obj, '__module__', '?')}.{obj.__qualname__}"
    return repr(obj)


def _same(old: object, new: object) -> bool:
    """The same entry again: the object itself, an equal instance, or one class re-imported."""
    if old is new or (not isinstance(old, type) and old == new):
        return True
    return hasattr(old, "__qualname__") and _origin(old) == _origin(new)


class Registry(Generic[T]):
    """Names -> objects of one sort (``what``), kept in registration order.

    ``field`` is the config field that names an entry (used in the error for an unknown name);
    ``check`` validates an object before it is added (raise ``TypeError`` for the wrong sort).
    """

    def __init__(self, what: str, *, field: str, check: Callable[[T], None] | None = None) -> None:
        self.what = what
        self.field = field
        self._check = check
        self._entries: dict[str, T] = {}

    def add(self, name: str, obj: T) -> T:
        """Register ``obj`` under ``name``; a different object under a taken name raises."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.what} names must be non-empty strings, got {name!r}")
        if self._check is not None:
            self._check(obj)
        old = self._entries.get(name)
        if old is not None and not _same(old, obj):
            raise ValueError(f"{self.what} {name!r} is already registered by {_origin(old)}; "
                             f"{_origin(obj)} cannot take the same name")
        self._entries[name] = obj
        return obj

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of :meth:`add` (for classes)."""

        def decorate(obj: T) -> T:
            return self.add(name, obj)

        return decorate

    def get(self, name: str) -> T:
        """The entry under ``name``; an unknown name is a clear input error."""
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise DrugcellInputError(
                f"unknown {self.what} {name!r}; available {self.what}s: "
                f"{', '.join(sorted(self.names())) or '(none)'}. "
                f"Fix the `{self.field}` in the config or on the command line."
            ) from None

    def names(self) -> list[str]:
        """Registered names in registration order."""
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def items(self) -> list[tuple[str, T]]:
        return list(self._entries.items())
