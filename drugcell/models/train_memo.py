"""Statistics of a training set computed once per set, not once per predictor.

Why: a CV fold fits some twenty predictors on one training set, and most start from the same
per-gene statistics of it: the Mejia-weighted mean profile (``wmean`` itself, kNN's fallback,
ridge's intercept, the deep models' centre) and kNN's per-gene spread. At full scale each is a
pass over an 11,000 x 13,000 matrix (and its weights in float64), seconds per predictor.

Entries are keyed by the identity of the arrays (the CV runner hands every predictor of a fold
the same training set) and live exactly as long as those arrays (``weakref.finalize``), so a new
fold or an inner fold of blend is a new key and nothing outlives its data. Identity is the
contract: an array changed in place after a statistic was taken would not be seen, so each
entry also checks a probe of the array (its buffer address and a few of its values) and is
recomputed when that changed; nothing in drugcell edits a training set in place. Results are the
function's own: the memo stores what ``compute`` returned and hands out copies.

Fitted predictors too (:func:`remember_fit`, :func:`fitted_twin`): blend refits its members on the
training set the runner just fitted the same predictors on (``ridge_fp``, ``knn`` k=20 softmax in
``configs/default.toml``); a kind that declares ``reuse_fit`` (its fit is a deterministic function
of the training set, params and seed) is kept, per training set and while that set lives, and the
blend takes the fitted twin instead of fitting it again.
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np

_MEMO: dict[tuple, tuple[tuple, Any]] = {}
_STATS = {"computed": 0, "served": 0, "fits_served": 0}
_MIN_SIZE = 1 << 16  # smaller arrays are recomputed (cheap), not memoised
_PROBES = 64


def _probe(a: np.ndarray) -> tuple:
    """Buffer address, shape, strides, dtype and a spread of values: what a stale entry changes."""
    flat = a.reshape(-1) if a.flags.c_contiguous else None
    pick = np.linspace(0, a.size - 1, _PROBES).astype(np.int64)
    values = (flat[pick] if flat is not None else a.flat[pick]).tobytes()
    return (a.__array_interface__["data"][0], a.shape, a.strides, a.dtype.str, values)


def _copy(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, tuple):
        return tuple(_copy(v) for v in value)
    return value


def memoized(name: str, arrays: tuple[np.ndarray, ...], compute: Callable[[], Any], *, copy: bool = True) -> Any:
    """``compute()`` once per (``name``, the identities of ``arrays``) while the arrays live.

    Arrays that are not numpy arrays, or small ones, are not memoised (``compute()`` each call).
    Returns a copy of the stored arrays, so callers may change what they get; ``copy=False`` (for
    a large array result) stores it read-only and returns it as it is.
    """
    if not all(isinstance(a, np.ndarray) for a in arrays) or max(a.size for a in arrays) < _MIN_SIZE:
        return compute()
    key = (name, *(id(a) for a in arrays))
    probe = tuple(_probe(a) for a in arrays)
    hit = _MEMO.get(key)
    if hit is not None and hit[0] == probe:
        _STATS["served"] += 1
        return _copy(hit[1]) if copy else hit[1]
    value = compute()
    if not copy and isinstance(value, np.ndarray):
        value.setflags(write=False)
    if hit is None:
        for a in arrays:  # the entry dies with the first of its arrays
            weakref.finalize(a, _MEMO.pop, key, None)
    _MEMO[key] = (probe, value)
    _STATS["computed"] += 1
    return _copy(value) if copy else value


# ----------------------------------------------------------------- fitted predictors
_FITS: dict[int, dict[str, Any]] = {}   # id(training set) -> fit key -> fitted predictor


def _fit_key(kind: str, params: dict[str, Any], seed: int) -> str:
    return json.dumps([kind, params, int(seed)], sort_keys=True)


def remember_fit(model: Any, train: Any, seed: int) -> None:
    """Keep ``model`` (just fitted on ``train`` with ``seed``) while ``train`` lives."""
    entry = _FITS.get(id(train))
    if entry is None:
        entry = _FITS[id(train)] = {}
        weakref.finalize(train, _FITS.pop, id(train), None)
    entry[_fit_key(model.kind, model.params, seed)] = model


def fitted_twin(kind: str, params: dict[str, Any], train: Any, seed: int) -> Any | None:
    """A predictor of ``kind`` with exactly ``params`` already fitted on this ``train`` with
    ``seed``, or None. It is the same object: use it as it is, do not fit it again."""
    found = _FITS.get(id(train), {}).get(_fit_key(kind, params, seed))
    if found is not None:
        _STATS["fits_served"] += 1
    return found


def stats() -> dict[str, int]:
    """``computed`` / ``served`` statistics and ``fits_served`` twins since the last :func:`clear`,
    live ``entries`` and remembered ``fits``."""
    return {**_STATS, "entries": len(_MEMO), "fits": sum(len(v) for v in _FITS.values())}


def clear() -> None:
    """Forget every entry and fitted predictor and reset the counters."""
    _MEMO.clear()
    _FITS.clear()
    _STATS.update(computed=0, served=0, fits_served=0)
