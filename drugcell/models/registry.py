"""Predictor kinds: the shared :class:`~drugcell.registry.Registry` holding Predictor classes, so
configs name predictors by ``kind`` and the CV runner never imports a model module itself.

Why lazy: a model module may pull in heavy libraries (torch for ``mlp`` and ``fusion``, RDKit and
SciPy for the rest), and ``import drugcell.models`` or ``drugcell --help`` should not pay for
models nobody uses. So the built-in kinds are declared here by name, module and capabilities
(:data:`BUILTIN_KINDS`), and a module is imported (its ``@register`` runs) on the first lookup of
one of its kinds. Capabilities (``returns_std``, ``needs_torch``, ``simplicity``) are declared on
each class; the table repeats them for kinds not imported yet, and a test keeps the two equal.

Kinds from other packages arrive two ways: the ``drugcell.predictors`` entry-point group (each
entry point names a module whose ``@register`` runs, or a Predictor class, registered under the
entry point's name unless it registered itself), read once, on the first lookup that needs it;
and :func:`load_plugins` (``--plugin MODULE`` on the commands), which imports modules by name.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

from drugcell.errors import DrugcellInputError
from drugcell.models.base import Predictor
from drugcell.registry import Registry

P = TypeVar("P", bound=type[Predictor])

#: The entry-point group other packages use to offer predictor kinds.
ENTRY_POINT_GROUP = "drugcell.predictors"


@dataclass(frozen=True)
class Builtin:
    """Where a built-in kind lives and what its class declares (so no import is needed to know)."""

    module: str
    simplicity: int
    returns_std: bool = False
    needs_torch: bool = False


#: Built-in kinds -> their module and capabilities (tests check these against the classes).
BUILTIN_KINDS: dict[str, Builtin] = {
    "control": Builtin("drugcell.models.baselines", simplicity=0),
    "mean": Builtin("drugcell.models.baselines", simplicity=1),
    "wmean": Builtin("drugcell.models.baselines", simplicity=2),
    "knn": Builtin("drugcell.models.knn", simplicity=20, returns_std=True),
    "ridge_fp": Builtin("drugcell.models.ridge", simplicity=30, returns_std=True),
    "ridge_desc": Builtin("drugcell.models.ridge", simplicity=30, returns_std=True),
    "ridge_emb": Builtin("drugcell.models.ridge", simplicity=30, returns_std=True),
    "mlp": Builtin("drugcell.models.mlp", simplicity=40, needs_torch=True),
    "fusion": Builtin("drugcell.models.fusion", simplicity=50, returns_std=True, needs_torch=True),
    "blend": Builtin("drugcell.models.blend", simplicity=60),
}
_CAPABILITIES = ("returns_std", "needs_torch", "simplicity")


def _check_predictor(cls: object) -> None:
    if not (isinstance(cls, type) and issubclass(cls, Predictor)):
        raise TypeError(f"a predictor kind needs a Predictor subclass, got {cls!r}")


PREDICTORS: Registry[type[Predictor]] = Registry("predictor kind", field="kind", check=_check_predictor)


class _Plugins:
    """The entry-point plugins: read once; a broken one is remembered and named, never fatal."""

    def __init__(self) -> None:
        self.loaded = False
        self.broken: dict[str, str] = {}   # entry point name -> why it failed

    def load(self) -> None:
        if self.loaded:
            return
        self.loaded = True
        from importlib.metadata import entry_points

        for ep in entry_points(group=ENTRY_POINT_GROUP):
            where = f"entry point {ep.name!r} = {ep.value!r}" + (
                f" of the package {ep.dist.name} {ep.dist.version}" if ep.dist is not None else "")
            try:
                obj = ep.load()
                _adopt(obj, ep.name)
            except Exception as exc:  # a plugin's own bug or a missing dependency of it
                self.broken[ep.name] = f"{where}: {type(exc).__name__}: {exc}"
                warnings.warn(f"drugcell predictor plugin {ep.name!r} failed to load ({self.broken[ep.name]}); "
                              f"its kinds are unavailable. Fix or uninstall that package.", RuntimeWarning,
                              stacklevel=3)

    def note(self) -> str:
        if not self.broken:
            return ""
        return " Predictor plugins that failed to load: " + "; ".join(self.broken.values()) + "."


_PLUGINS = _Plugins()


def _adopt(obj: object, name: str) -> None:
    """An entry point's target: a module (its ``@register`` ran on import) or a Predictor class
    (registered under the entry point's name unless it registered itself)."""
    if isinstance(obj, ModuleType):
        return
    if isinstance(obj, type) and issubclass(obj, Predictor):
        if not any(cls is obj for _, cls in PREDICTORS.items()):
            register(name)(obj)
        return
    raise TypeError(f"it names {obj!r}, neither a module nor a drugcell Predictor subclass")


def register(kind: str):
    """Class decorator: register a :class:`Predictor` subclass under ``kind`` (sets ``cls.kind``)."""

    def decorate(cls: P) -> P:
        builtin = BUILTIN_KINDS.get(kind)
        if builtin is not None and getattr(cls, "__module__", None) != builtin.module:
            raise ValueError(f"predictor kind {kind!r} is built in ({builtin.module}); "
                             f"{cls.__module__}.{cls.__qualname__} needs another name")
        PREDICTORS.add(kind, cls)
        cls.kind = kind
        return cls

    return decorate


def load_plugins(modules: list[str] | tuple[str, ...] | None) -> list[str]:
    """Import each module (``--plugin``) so its ``@register`` runs; a ``.py`` file path works too.
    Returns the kinds they added; a module that cannot be imported is an input error naming it."""
    before = set(PREDICTORS.names())
    for name in modules or ():
        try:
            if name.endswith(".py") and Path(name).is_file():
                _import_file(Path(name))
            else:
                importlib.import_module(name)
        except DrugcellInputError:
            raise
        except Exception as exc:
            raise DrugcellInputError(
                f"--plugin {name}: cannot import it ({type(exc).__name__}: {exc}). Pass an importable module name "
                "(a package installed in this environment or on PYTHONPATH) or a .py file that registers its "
                "predictors with @drugcell.register(\"kind\")") from None
    return [k for k in PREDICTORS.names() if k not in before]


def _import_file(path: Path) -> ModuleType:
    name = f"drugcell_plugin_{path.stem}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"{path} is not a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def builtin_kinds() -> list[str]:
    """The built-in kinds, sorted, without importing any model module or plugin (for help texts)."""
    return sorted(BUILTIN_KINDS)


def available() -> list[str]:
    """Every predictor kind, sorted: built-in, registered, and those of the entry-point plugins."""
    _PLUGINS.load()
    return sorted(set(BUILTIN_KINDS) | set(PREDICTORS.names()))


def get_class(kind: str) -> type[Predictor]:
    """The class registered under ``kind`` (its module imported on first use); a clear error
    listing the kinds otherwise."""
    if isinstance(kind, str) and kind not in PREDICTORS:
        if kind in BUILTIN_KINDS:
            _import_builtin(kind)
        else:
            _PLUGINS.load()
    if kind not in PREDICTORS:
        raise DrugcellInputError(
            f"unknown predictor kind {kind!r}; available predictor kinds: {', '.join(available())}. Fix the `kind` "
            "in the config or on the command line; a kind from another package needs that package installed "
            f"(entry point group {ENTRY_POINT_GROUP!r}) or --plugin MODULE.{_PLUGINS.note()}")
    return PREDICTORS.get(kind)


def _import_builtin(kind: str) -> None:
    module = BUILTIN_KINDS[kind].module
    try:
        importlib.import_module(module)
    except ImportError as exc:  # e.g. torch missing where a deep kind is asked for
        raise DrugcellInputError(f"predictor kind {kind!r} cannot be loaded: its module {module} needs "
                                 f"{exc.name or exc} ({exc}); install it or use another kind") from exc


def capability(kind: str, name: str) -> Any:
    """A class-declared capability of ``kind``, without importing a built-in that is not loaded yet."""
    if name not in _CAPABILITIES:
        raise ValueError(f"unknown capability {name!r}; known: {', '.join(_CAPABILITIES)}")
    if kind not in PREDICTORS and kind in BUILTIN_KINDS:
        return getattr(BUILTIN_KINDS[kind], name)
    return getattr(get_class(kind), name)


def kinds_with(capability_name: str) -> list[str]:
    """Kinds whose class declares ``capability_name`` true (e.g. ``"returns_std"``)."""
    return [k for k in available() if capability(k, capability_name)]


def make_predictor(kind: str, **params: Any) -> Predictor:
    """Build an unfitted predictor; unknown kinds or parameters raise DrugcellInputError."""
    return get_class(kind)(**params)
