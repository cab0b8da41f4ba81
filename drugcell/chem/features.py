"""``featurize(smiles, kind)``: chemistry features with a process-wide cache.

Why: cross-validation fits every predictor on every fold, and several predictors share a feature
kind; each molecule should be featurised once per process. Rows are cached under
(kind, params, canonical SMILES), so two spellings of one molecule share a row and a fold subset
costs only dictionary look-ups.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from drugcell.chem import descriptors as _desc
from drugcell.chem import fingerprints as _fp
from drugcell.chem.molecules import parse_smiles
from drugcell.defaults import MORGAN_BITS, MORGAN_RADIUS
from drugcell.errors import DrugcellInputError
from drugcell.registry import Registry


@dataclass(frozen=True)
class FeatureKind:
    """How one feature kind is computed: its accepted params (with defaults), dtype, width, fill."""

    defaults: dict[str, Any]
    dtype: type
    compute: Callable[..., np.ndarray]   # (canonical SMILES, n_jobs=, progress=, **params) -> (n, d)
    width: Callable[[dict[str, Any]], int]
    fill: float = 0.0                    # value of rows that did not parse


def _morgan(fn):
    return lambda canon, n_jobs, progress, radius, n_bits: fn(canon, radius=radius, n_bits=n_bits)


def _descriptors(canon, n_jobs, progress):
    return _desc.compute_descriptors(canon, n_jobs=n_jobs, progress=progress)[0]


_MORGAN = {"radius": MORGAN_RADIUS, "n_bits": MORGAN_BITS}
FEATURE_KINDS: Registry[FeatureKind] = Registry("feature kind", field="kind")
FEATURE_KINDS.add("morgan_bits", FeatureKind(_MORGAN, np.uint8, _morgan(_fp.morgan_bits), lambda p: int(p["n_bits"])))
FEATURE_KINDS.add("morgan_counts", FeatureKind(_MORGAN, np.float32, _morgan(_fp.morgan_counts),
                                               lambda p: int(p["n_bits"])))
FEATURE_KINDS.add("descriptors", FeatureKind({}, np.float32, _descriptors,
                                             lambda p: len(_desc.DESCRIPTOR_NAMES), fill=np.nan))
#: kind -> default parameters (the only ones accepted for that kind).
KINDS: dict[str, dict[str, Any]] = {name: fk.defaults for name, fk in FEATURE_KINDS.items()}

_ROWS: dict[tuple, dict[str, np.ndarray]] = {}    # (kind, params) -> canonical -> row
_CANONICAL: dict[str, str] = {}                   # input SMILES -> canonical ("" = failed)
_STATS = {"computed": 0, "cached": 0}


def clear_cache() -> None:
    """Forget every cached feature row and parse (also the per-molecule descriptor cache)."""
    _ROWS.clear()
    _CANONICAL.clear()
    _STATS.update(computed=0, cached=0)
    _desc.clear_descriptor_cache()


def cache_stats() -> dict[str, int]:
    """``computed`` / ``cached`` molecule-row counts since the last :func:`clear_cache`."""
    return {**_STATS, "parsed": len(_CANONICAL), "rows": sum(len(v) for v in _ROWS.values())}


def feature_width(kind: str, **params: Any) -> int:
    """Number of columns :func:`featurize` returns for ``kind``."""
    return FEATURE_KINDS.get(kind).width(_params(kind, params))


def _params(kind: str, params: dict[str, Any]) -> dict[str, Any]:
    FEATURE_KINDS.get(kind)  # unknown kinds: a clear error listing the kinds
    unknown = set(params) - set(KINDS[kind])
    if unknown:
        raise DrugcellInputError(
            f"feature kind {kind!r} takes no parameter(s) {sorted(unknown)}; "
            f"allowed: {sorted(KINDS[kind]) or 'none'}")
    return {**KINDS[kind], **params}


def _canonicalize(smiles: Sequence[Any]) -> list[str]:
    """Canonical SMILES per input ("" for failures), parsing each distinct string once."""
    todo = list(dict.fromkeys(s for s in smiles if isinstance(s, str) and s not in _CANONICAL))
    if todo:
        parsed = parse_smiles(todo, inchikey=False)
        _CANONICAL.update(zip(todo, parsed.canonical))
    return [_CANONICAL[s] if isinstance(s, str) else "" for s in smiles]


def featurize(smiles: Sequence[Any], kind: str, *, n_jobs: int = 1, progress: bool | None = None,
              **params: Any) -> tuple[np.ndarray, np.ndarray]:
    """Features ``(X (n, d), ok bool (n,))`` for ``kind`` in ``morgan_bits`` (uint8),
    ``morgan_counts`` (float32) or ``descriptors`` (float32, raw: standardise with
    :class:`~drugcell.chem.descriptors.DescriptorStandardizer` fitted on training rows).

    Unparseable rows have ``ok`` False and are zeros (fingerprints) or NaN (descriptors); they are
    never dropped. ``params`` override the kind's defaults (``radius``, ``n_bits``).
    ``n_jobs`` parallelises descriptor computation (process pool).
    """
    p = _params(kind, params)
    fk = FEATURE_KINDS.get(kind)
    key = (kind, tuple(sorted(p.items())))
    rows = _ROWS.setdefault(key, {})
    canon = _canonicalize(list(smiles))
    missing = list(dict.fromkeys(c for c in canon if c and c not in rows))
    if missing:
        new = fk.compute(missing, n_jobs, progress, **p)
        for c, row in zip(missing, new):
            rows[c] = np.asarray(row, dtype=fk.dtype)
    ok = np.array([bool(c) for c in canon], dtype=bool)
    _STATS["computed"] += len(missing)
    _STATS["cached"] += int(ok.sum()) - len(missing)
    X = np.full((len(canon), fk.width(p)), fk.fill, dtype=fk.dtype)
    for i, c in enumerate(canon):
        if c:
            X[i] = rows[c]
    return X, ok
