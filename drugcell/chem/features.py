"""``featurize(smiles, kind)``: chemistry features with a process-wide cache.

Why: cross-validation fits every predictor on every fold, and several predictors share a feature
kind; each molecule should be featurised once per process. Rows are cached under
(kind, params, canonical SMILES), so two spellings of one molecule share a row and a fold subset
costs only dictionary look-ups.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from drugcell.chem import descriptors as _desc
from drugcell.chem import fingerprints as _fp
from drugcell.chem.molecules import parse_smiles
from drugcell.errors import DrugcellInputError

#: kind -> default parameters (the only ones accepted for that kind).
KINDS: dict[str, dict[str, Any]] = {
    "morgan_bits": {"radius": 2, "n_bits": 2048},
    "morgan_counts": {"radius": 2, "n_bits": 2048},
    "descriptors": {},
}
_DTYPES = {"morgan_bits": np.uint8, "morgan_counts": np.float32, "descriptors": np.float32}

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
    p = _params(kind, params)
    return len(_desc.DESCRIPTOR_NAMES) if kind == "descriptors" else int(p["n_bits"])


def _params(kind: str, params: dict[str, Any]) -> dict[str, Any]:
    if kind not in KINDS:
        raise DrugcellInputError(
            f"unknown feature kind {kind!r}; choose one of {', '.join(KINDS)}")
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


def _compute(kind: str, p: dict[str, Any], canonicals: list[str], n_jobs: int,
             progress: bool | None) -> np.ndarray:
    if kind == "morgan_bits":
        return _fp.morgan_bits(canonicals, radius=p["radius"], n_bits=p["n_bits"])
    if kind == "morgan_counts":
        return _fp.morgan_counts(canonicals, radius=p["radius"], n_bits=p["n_bits"])
    X, _ = _desc.compute_descriptors(canonicals, n_jobs=n_jobs, progress=progress)
    return X


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
    key = (kind, tuple(sorted(p.items())))
    rows = _ROWS.setdefault(key, {})
    canon = _canonicalize(list(smiles))
    missing = list(dict.fromkeys(c for c in canon if c and c not in rows))
    if missing:
        new = _compute(kind, p, missing, n_jobs, progress)
        for c, row in zip(missing, new):
            rows[c] = np.asarray(row, dtype=_DTYPES[kind])
    ok = np.array([bool(c) for c in canon], dtype=bool)
    _STATS["computed"] += len(missing)
    _STATS["cached"] += int(ok.sum()) - len(missing)
    width = feature_width(kind, **params)
    fill = np.nan if kind == "descriptors" else 0
    X = np.full((len(canon), width), fill, dtype=_DTYPES[kind])
    for i, c in enumerate(canon):
        if c:
            X[i] = rows[c]
    return X, ok
