"""The search-space TOML of `drugcell tune`: which predictor, which parameters, which ranges.

Why a file and not flags: a search is part of a result and must be repeatable, so the whole
recipe (outer folds, predictor, fixed parameters, ranges) is one file that goes into the manifest.
Layout (``configs/tune_knn.toml`` is a worked example)::

    [cv]                      # optional, as in a run config: the outer folds and the metric
    folds = 5                 # (default 5 scaffold folds, seed 0; the first metric is the objective)
    metrics = ["mejia"]

    [tune]
    kind = "knn"              # a predictor kind of the registry
    name = "knn_tuned"        # its name in tuned.toml (default "<kind>_tuned")
    trials = 20               # trials per search (--trials)
    inner_folds = 3           # inner scaffold folds per outer training fold (--inner-folds)
    params = {std = false}    # fixed parameters, not searched

    [space]                   # one entry per searched parameter
    kernel = {choice = ["uniform", "tanimoto", "softmax"]}   # one of these values
    k = {int = [3, 60], log = true}                          # an integer in [3, 60], both ends in
    temperature = {float = [0.02, 1.0], log = true}          # a float in [0.02, 1.0]

``log = true`` samples evenly in log space (both ends > 0). Only parameters whose default on the
predictor class is a scalar can be searched (as for sweeps, :mod:`drugcell.sweeps`), and not
``metric`` (the objective's). ``[output]`` and ``[estimate]`` may be given too: they are checked as
in a run config and copied into ``tuned.toml``. Every range end and choice is built once with the
fixed parameters when the file is read, so a value the predictor refuses fails here, named.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drugcell.config import _NAME_RE, RunConfig, config_from_dict
from drugcell.errors import DrugcellInputError
from drugcell.sweeps import is_sweepable

DEFAULT_TRIALS = 20
DEFAULT_INNER_FOLDS = 3
_DIM_TYPES = ("choice", "int", "float")


@dataclass(frozen=True)
class Dim:
    """One searched parameter: a choice among values, or an int/float range (ends included)."""

    param: str
    type: str                         # "choice", "int" or "float"
    choices: tuple[Any, ...] = ()
    low: float = 0.0
    high: float = 0.0
    log: bool = False

    def coerce(self, value: Any) -> Any:
        """A sampled value as the plain Python type the predictor expects (no numpy scalars)."""
        if self.type == "int":
            return int(value)
        if self.type == "float":
            return float(value)
        return next(c for c in self.choices if c == value)

    def probes(self) -> list[Any]:
        """The values checked when the file is read: both range ends, or every choice."""
        if self.type == "choice":
            return list(self.choices)
        return [self.coerce(self.low), self.coerce(self.high)]

    def to_dict(self) -> dict[str, Any]:
        if self.type == "choice":
            return {"choice": list(self.choices)}
        return {self.type: [self.coerce(self.low), self.coerce(self.high)], "log": self.log}


@dataclass(frozen=True)
class TuneSpec:
    """A parsed search-space file: the outer CV config, the predictor and the space."""

    kind: str
    name: str
    fixed: dict[str, Any]
    dims: tuple[Dim, ...]
    run: RunConfig                    # [cv] (+ [output], [estimate]) with the fixed predictor
    trials: int = DEFAULT_TRIALS
    inner_folds: int = DEFAULT_INNER_FOLDS
    source: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def metric(self) -> str:
        """The objective: the first of the run's metrics."""
        return self.run.metrics[0]

    def params(self, sampled: dict[str, Any]) -> dict[str, Any]:
        """Fixed parameters plus one sampled point (coerced to plain types)."""
        dims = {d.param: d for d in self.dims}
        return {**self.fixed, **{k: dims[k].coerce(v) for k, v in sampled.items()}}

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form for the manifest (the file's tables after validation)."""
        run = self.run.to_dict()
        return {"cv": run["cv"], "output": run["output"], "estimate": run["estimate"],
                "tune": {"kind": self.kind, "name": self.name, "trials": self.trials,
                         "inner_folds": self.inner_folds, "params": dict(self.fixed)},
                "space": {d.param: d.to_dict() for d in self.dims}, "source": self.source}

    def with_overrides(self, *, trials: int | None = None, inner_folds: int | None = None,
                       seed: int | None = None, folds: int | None = None) -> TuneSpec:
        """Command-line overrides, checked like the file's values."""
        run = self.run
        if seed is not None or folds is not None:
            raw = run.to_dict()
            raw["cv"].update({k: v for k, v in (("seed", seed), ("folds", folds)) if v is not None})
            run = config_from_dict(raw, source=run.source)
        where = "command line"
        return dataclasses.replace(
            self, run=run,
            trials=self.trials if trials is None else _positive(trials, where, "--trials", 1),
            inner_folds=self.inner_folds if inner_folds is None else _positive(inner_folds, where, "--inner-folds", 2))


def _where(source: str | None, key: str) -> str:
    return f"{source or 'search space'}: key {key!r}"


def _positive(value: Any, source: str | None, key: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise DrugcellInputError(f"{_where(source, key)} must be an integer >= {minimum}, got {value!r}")
    return value


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _parse_range(param: str, table: dict[str, Any], typ: str, where: str) -> Dim:
    ends, log = table[typ], table.get("log", False)
    if not isinstance(ends, list) or len(ends) != 2 or not all(_number(v) for v in ends):
        raise DrugcellInputError(f"{where} {typ} must be [low, high] (two numbers), got {ends!r}")
    if typ == "int" and not all(isinstance(v, int) for v in ends):
        raise DrugcellInputError(f"{where} int range ends must be integers, got {ends!r}")
    if not isinstance(log, bool):
        raise DrugcellInputError(f"{where} log must be true or false, got {log!r}")
    low, high = ends
    if not low < high:
        raise DrugcellInputError(f"{where} needs low < high, got {ends!r}")
    if log and low <= 0:
        raise DrugcellInputError(f"{where} with log = true needs low > 0, got {ends!r}")
    return Dim(param, typ, low=low, high=high, log=log)


def parse_dim(param: str, table: Any, defaults: dict[str, Any], source: str | None) -> Dim:
    """One ``[space]`` entry, checked against the predictor's parameters."""
    where = _where(source, f"space.{param}")
    if param not in defaults:
        known = ", ".join(sorted(p for p, d in defaults.items() if is_sweepable(d) and p != "metric")) or "(none)"
        raise DrugcellInputError(f"{where}: not a parameter of the predictor; searchable: {known}")
    if param == "metric" or not is_sweepable(defaults[param]):
        raise DrugcellInputError(f"{where}: {param} cannot be searched (its value is a list or a table, or it is "
                                 "the objective's metric); set it in [tune] params")
    types = [t for t in _DIM_TYPES if isinstance(table, dict) and t in table]
    if not isinstance(table, dict) or len(types) != 1 or set(table) - {types[0], "log"}:
        raise DrugcellInputError(
            f"{where} must be one of {{choice = [...]}}, {{int = [low, high], log = false}} or "
            f"{{float = [low, high], log = false}}, got {table!r}")
    typ = types[0]
    if typ != "choice":
        return _parse_range(param, table, typ, where)
    if "log" in table:
        raise DrugcellInputError(f"{where}: log applies to int and float ranges, not to a choice")
    choices = table["choice"]
    if (not isinstance(choices, list) or not choices
            or not all(isinstance(c, (bool, int, float, str)) for c in choices)):
        raise DrugcellInputError(f"{where} choice must be a non-empty list of values, got {choices!r}")
    if len({"number" if _number(c) else type(c).__name__ for c in choices}) > 1:
        raise DrugcellInputError(f"{where} choice values must be of one type, got {choices!r}")
    if len({repr(c) for c in choices}) != len(choices):
        raise DrugcellInputError(f"{where} choice lists a value twice: {choices!r}")
    return Dim(param, "choice", choices=tuple(choices))


def _check_points(kind: str, fixed: dict[str, Any], dims: tuple[Dim, ...], source: str | None) -> None:
    """Build the predictor at every range end and choice (the other dims at their first probe)."""
    from drugcell.models import make_predictor

    base = {d.param: d.probes()[0] for d in dims}
    for d in dims:
        for value in d.probes():
            try:
                make_predictor(kind, **{**fixed, **base, d.param: value})
            except DrugcellInputError as exc:
                raise DrugcellInputError(f"{_where(source, 'space.' + d.param)}: value {value!r} is refused by "
                                         f"the predictor: {exc}") from None


def _parse_tune_table(tune: Any, source: str | None) -> tuple[str, str, dict[str, Any], int, int]:
    """[tune]: kind, name, trials, inner_folds and the fixed params (built once to check them)."""
    from drugcell.models import available, get_class, make_predictor

    if not isinstance(tune, dict):
        raise DrugcellInputError(f"{_where(source, 'tune')} must be a table with at least kind = \"...\"")
    bad = sorted(set(tune) - {"kind", "name", "trials", "inner_folds", "params"})
    if bad:
        raise DrugcellInputError(f"{_where(source, 'tune.' + bad[0])} is not a known option "
                                 "(kind, name, trials, inner_folds, params)")
    kind = tune.get("kind")
    if not isinstance(kind, str) or not kind:
        raise DrugcellInputError(f"{_where(source, 'tune.kind')} is missing or not a string (a predictor kind)")
    if kind not in available():
        raise DrugcellInputError(f"{_where(source, 'tune.kind')}: unknown predictor kind {kind!r}; "
                                 f"available: {', '.join(available())}")
    name = tune.get("name", f"{kind}_tuned")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise DrugcellInputError(f"{_where(source, 'tune.name')} must be letters, digits, '_', '-' or '.', "
                                 f"got {name!r}")
    fixed = tune.get("params", {})
    if not isinstance(fixed, dict):
        raise DrugcellInputError(f"{_where(source, 'tune.params')} must be a table of fixed parameters")
    defaults = get_class(kind).defaults
    for p, v in fixed.items():
        if p in defaults and is_sweepable(defaults[p]) and isinstance(v, (list, dict)):
            raise DrugcellInputError(f"{_where(source, 'tune.params.' + p)} holds a list or range (a sweep); "
                                     "search it in [space] instead")
    try:
        make_predictor(kind, **fixed)
    except DrugcellInputError as exc:
        raise DrugcellInputError(f"{_where(source, 'tune.params')}: {exc}") from None
    trials = _positive(tune.get("trials", DEFAULT_TRIALS), source, "tune.trials", 1)
    inner = _positive(tune.get("inner_folds", DEFAULT_INNER_FOLDS), source, "tune.inner_folds", 2)
    return kind, name, dict(fixed), trials, inner


def spec_from_dict(raw: dict[str, Any], source: str | None = None) -> TuneSpec:
    """Validate a parsed search-space document into a :class:`TuneSpec`."""
    from drugcell.models import get_class

    unknown = sorted(set(raw) - {"cv", "output", "estimate", "tune", "space", "source"})
    if unknown:
        raise DrugcellInputError(f"{source or 'search space'}: unknown top-level key(s) {unknown}; expected "
                                 "[cv], [tune] and [space] (and optionally [output], [estimate])")
    kind, name, fixed, trials, inner = _parse_tune_table(raw.get("tune"), source)
    # [cv], [output] and [estimate] checked as in a run config (the predictor itself is checked above)
    run = config_from_dict({**{k: raw[k] for k in ("cv", "output", "estimate") if k in raw},
                            "predictors": [{"name": name, "kind": kind, **fixed}]}, source=source)
    space = raw.get("space")
    if not isinstance(space, dict) or not space:
        raise DrugcellInputError(f"{_where(source, 'space')} must be a table with at least one parameter")
    defaults = get_class(kind).defaults
    dims = tuple(parse_dim(p, t, defaults, source) for p, t in space.items())
    clash = sorted(set(fixed) & set(space))
    if clash:
        raise DrugcellInputError(f"{_where(source, 'tune.params')}: {clash[0]} is both fixed and searched")
    _check_points(kind, fixed, dims, source)
    return TuneSpec(kind=kind, name=name, fixed=fixed, dims=dims, run=run, trials=trials, inner_folds=inner,
                    source=source, raw=raw)


def load_space(path: str | Path) -> TuneSpec:
    """Read and validate a search-space TOML file."""
    path = Path(path)
    if not path.is_file():
        raise DrugcellInputError(f"search-space file {path} not found; see configs/tune_knn.toml for the layout")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise DrugcellInputError(f"{path}: not valid TOML ({exc})") from exc
    return spec_from_dict(raw, source=str(path))
