"""Sweeps in a run config: a list or a range for a scalar predictor parameter expands into variants.

Why: a config that compares 12 kNN variants should say so in two lines, not list them by hand, and
every variant must still be an ordinary named predictor (the CV runner, `--predictors NAME`, the
manifest and `submit --predictor NAME` see only the expanded list). Syntax, in a ``[[predictors]]``
entry::

    name = "knn"
    kind = "knn"
    k = [5, 10, 20, 50]                                # a list: these values
    kernel = ["uniform", "tanimoto", "softmax"]
    temperature = {range = [0.05, 0.5], num = 3, log = true}   # a range: num values, ends included

gives the cross product over every swept parameter, in the entry's key order, the first key
varying slowest: ``knn_k5_uniform``, ``knn_k5_tanimoto``, ... ``knn_k50_softmax`` (12 x 3 names
here). **Naming:** ``<name>_<part>_<part>...``, one part per swept parameter in key order; a
string value appears bare (``softmax``), a number as ``<param><value>`` (``k20``, ``alpha0.3162``,
``lr1e-05``; floats in ``%.12g`` without ``+``), a boolean as ``<param>true``/``<param>false``.

**What is swept:** only a parameter whose default on the predictor class is a scalar (bool, int,
float, str). A parameter whose default is a list or a table (blend's ``members``, knn's
``embedding_params``, the deep models' ``hidden``) or ``None`` (ridge's ``alphas``: its value is a
list) takes a list or table as its value and is never expanded. A range gives ``num`` (>= 2) values
evenly spaced (``log = true``: evenly in log space, both ends > 0), rounded to 4 significant digits
so that names and values agree; an int parameter's values are rounded to integers. An empty list, a
range that repeats a value, or two variants with the same name are refused naming the entry; a value
the predictor refuses is reported by the config with the variant's name and the swept value.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from drugcell.errors import DrugcellInputError

MAX_VARIANTS = 1000  # a cross product beyond this is a typo, not a plan
_RANGE_KEYS = {"range", "num", "log"}
_PART_RE = re.compile(r"^[A-Za-z0-9_.\-]+$")


@dataclass(frozen=True)
class Variant:
    """One expanded predictor: its name, its params (scalars where the entry had sweeps), and
    the swept values that made it (empty for an entry without a sweep)."""

    name: str
    params: dict[str, Any]
    swept: dict[str, Any] = field(default_factory=dict)


def is_sweepable(default: Any) -> bool:
    """A parameter can be swept only when its default is a scalar (a list/table/None default means
    the parameter's own value may be a list or a table)."""
    return isinstance(default, (bool, int, float, str))


def value_part(param: str, value: Any) -> str:
    """The name part of one swept value: strings bare, numbers and booleans as ``<param><value>``."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return f"{param}{'true' if value else 'false'}"
    if isinstance(value, int):
        return f"{param}{value}"
    return f"{param}{format(float(value), '.12g').replace('+', '')}"


def _range_values(param: str, spec: dict[str, Any], default: Any, where: str) -> list[Any]:
    """The values of ``{range = [lo, hi], num = N, log = false}`` for a numeric parameter."""
    bad = sorted(set(spec) - _RANGE_KEYS)
    if bad or "range" not in spec or "num" not in spec:
        raise DrugcellInputError(
            f"{where}: {param} = {spec!r} is not a range; write {param} = {{range = [low, high], num = N}} "
            "(optional log = true) or a list of values")
    if isinstance(default, (bool, str)):
        raise DrugcellInputError(f"{where}: {param} takes a {type(default).__name__}, not a range; "
                                 f"list the values instead ({param} = [...])")
    ends, num, log = spec["range"], spec["num"], spec.get("log", False)
    if (not isinstance(ends, list) or len(ends) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in ends)):
        raise DrugcellInputError(f"{where}: {param}.range must be [low, high] (two finite numbers), got {ends!r}")
    if isinstance(num, bool) or not isinstance(num, int) or num < 2:
        raise DrugcellInputError(f"{where}: {param}.num must be an integer >= 2, got {num!r}")
    if not isinstance(log, bool):
        raise DrugcellInputError(f"{where}: {param}.log must be true or false, got {log!r}")
    lo, hi = (float(v) for v in ends)
    if not lo < hi:
        raise DrugcellInputError(f"{where}: {param}.range must have low < high, got {ends!r}")
    if log and lo <= 0:
        raise DrugcellInputError(f"{where}: {param}.range must be > 0 with log = true, got {ends!r}")
    grid = np.geomspace(lo, hi, num) if log else np.linspace(lo, hi, num)
    if isinstance(default, int):
        values: list[Any] = [int(round(v)) for v in grid]
    else:
        values = [float(f"{v:.4g}") for v in grid]
    if len(set(values)) < len(values):
        raise DrugcellInputError(f"{where}: {param} = {spec!r} repeats a value after rounding ({values}); "
                                 "lower num or widen the range")
    return values


def sweep_values(param: str, value: Any, default: Any, where: str) -> list[Any] | None:
    """The values a swept parameter takes, or None when ``value`` is a plain value (no sweep)."""
    if not is_sweepable(default):
        return None
    if isinstance(value, list):
        if not value:
            raise DrugcellInputError(f"{where}: {param} = [] sweeps over nothing; give at least one value")
        for v in value:
            if isinstance(v, (list, dict)):
                raise DrugcellInputError(f"{where}: {param} takes one {type(default).__name__}; a sweep lists "
                                         f"such values, got {v!r} inside {value!r}")
        return list(value)
    if isinstance(value, dict):
        return _range_values(param, value, default, where)
    return None


def expand_entry(name: str, params: dict[str, Any], defaults: dict[str, Any], where: str) -> list[Variant]:
    """Every variant of one ``[[predictors]]`` entry (the entry itself when nothing is swept).

    ``defaults`` are the predictor class's; a key it does not have is left for the predictor to
    refuse. ``where`` names the entry in messages (``my.toml: key 'predictors[3]'``).
    """
    swept = [(p, vals) for p, v in params.items() if p in defaults
             and (vals := sweep_values(p, v, defaults[p], where)) is not None]
    if not swept:
        return [Variant(name, dict(params))]
    total = math.prod(len(vals) for _, vals in swept)
    if total > MAX_VARIANTS:
        raise DrugcellInputError(f"{where} ({name}): the sweep gives {total:,} variants (over {MAX_VARIANTS:,}); "
                                 "sweep fewer values")
    variants: list[Variant] = []
    seen: dict[str, dict[str, Any]] = {}
    for combo in itertools.product(*(vals for _, vals in swept)):
        chosen = {p: v for (p, _), v in zip(swept, combo)}
        parts = [value_part(p, v) for p, v in chosen.items()]
        bad = next((part for part in parts if not _PART_RE.match(part)), None)
        if bad is not None:
            raise DrugcellInputError(f"{where} ({name}): swept value {bad!r} cannot be part of a predictor name "
                                     "(letters, digits, '_', '-' or '.')")
        full = "_".join([name, *parts])
        if full in seen:
            raise DrugcellInputError(f"{where} ({name}): the sweep gives the name {full!r} twice ({seen[full]} and "
                                     f"{chosen}); remove the repeated value")
        seen[full] = chosen
        variants.append(Variant(full, {**params, **chosen}, chosen))
    return variants
