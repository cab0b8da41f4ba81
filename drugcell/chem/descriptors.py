"""RDKit 2-D descriptors as a numeric table, and a standardiser fitted on training compounds only.

Why: the descriptor embedding feeds ridge_desc and the deep models; raw RDKit descriptors contain
NaN/inf (failed sub-calculations) and heavy tails (``Ipc`` reaches 1e30 for large molecules), and
the standardisation must use training statistics only, or CV leaks test chemistry into the fit.

Descriptors cost ~6 ms per molecule (~90 s for 14,000), so values are cached per canonical SMILES
for the whole process and can be computed by a process pool (``n_jobs=2``). RDKit runs each
descriptor under a bare ``except:``, which would swallow the KeyboardInterrupt of a Ctrl-C (and
drugcell's ``Terminated``): a signal during that call is held and delivered after it
(:func:`_signals_held`), so the loop stops within one molecule.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np
from rdkit import Chem, rdBase
from rdkit.Chem import Descriptors

from drugcell.chem.molecules import ParsedMolecules, parse_smiles

#: Values whose magnitude exceeds this are treated as missing (numerical blow-ups, not chemistry).
MAX_ABS = 1e10

_RDKIT_NAMES: tuple[str, ...] = tuple(name for name, _ in Descriptors._descList)
#: ``Ipc`` is replaced by log10(1 + Ipc): its raw value spans 1 .. 1e30+ and overflows float32.
DESCRIPTOR_NAMES: tuple[str, ...] = tuple("Ipc_log10" if n == "Ipc" else n for n in _RDKIT_NAMES)
_IPC = _RDKIT_NAMES.index("Ipc") if "Ipc" in _RDKIT_NAMES else -1

# canonical SMILES -> float64 row (len(DESCRIPTOR_NAMES)); process-wide.
_CACHE: dict[str, np.ndarray] = {}


def descriptor_names() -> list[str]:
    """Column names of :func:`compute_descriptors` (RDKit's ``Descriptors._descList`` order)."""
    return list(DESCRIPTOR_NAMES)


def clear_descriptor_cache() -> None:
    _CACHE.clear()


_HELD = tuple(s for s in (signal.SIGINT, getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)) if s)


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Inside the block a signal with a Python handler is only noted; the handler the process had
    runs when the block ends (raising KeyboardInterrupt or Terminated outside RDKit's bare except)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    old = {s: h for s in _HELD if callable(h := signal.getsignal(s))}
    for s in old:
        signal.signal(s, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        if caught:
            old[caught[0]](caught[0], None)


def _row_for_canonical(canonical: str) -> np.ndarray:
    """Descriptors of one molecule, rebuilt from its canonical SMILES so cached and fresh rows
    are identical whatever SMILES spelling the caller used."""
    with rdBase.CaptureErrorLog():
        mol = Chem.MolFromSmiles(canonical)
        if mol is None:
            return np.full(len(DESCRIPTOR_NAMES), np.nan)
        with _signals_held():
            values = Descriptors.CalcMolDescriptors(mol, missingVal=math.nan, silent=True)
    row = np.array([_to_float(values.get(n, math.nan)) for n in _RDKIT_NAMES], dtype=np.float64)
    if _IPC >= 0 and np.isfinite(row[_IPC]) and row[_IPC] >= 0:
        row[_IPC] = np.log10(1.0 + row[_IPC])
    row[~np.isfinite(row)] = np.nan
    row[np.abs(row) > MAX_ABS] = np.nan
    return row


def _to_float(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError, OverflowError):
        return math.nan


def _compute_chunk(canonicals: list[str]) -> np.ndarray:
    """Worker entry point for the process pool (module-level so ``spawn`` can import it)."""
    return np.stack([_row_for_canonical(c) for c in canonicals]) if canonicals else \
        np.zeros((0, len(DESCRIPTOR_NAMES)))


def _fill_cache(canonicals: list[str], n_jobs: int, progress: bool | None) -> None:
    from drugcell.progress import bar as tqdm  # a bar on a terminal, plain lines in a log

    todo = list(dict.fromkeys(c for c in canonicals if c and c not in _CACHE))
    if not todo:
        return
    disable = (not progress) if progress is not None else None  # None: tqdm hides off a TTY
    if n_jobs <= 1 or len(todo) < 64:
        for c in tqdm(todo, desc="RDKit descriptors", unit="mol", disable=disable):
            _CACHE[c] = _row_for_canonical(c)
        return
    import multiprocessing as mp
    from concurrent.futures.process import BrokenProcessPool

    chunk = 64
    chunks = [todo[i:i + chunk] for i in range(0, len(todo), chunk)]
    # fork where available: it works from notebooks, stdin and unguarded scripts (spawn re-imports
    # __main__); the workers only run RDKit, never torch/BLAS, so inherited threads do not matter.
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    with tqdm(total=len(todo), desc="RDKit descriptors", unit="mol", disable=disable) as bar:
        try:
            with ProcessPoolExecutor(max_workers=n_jobs, mp_context=mp.get_context(method)) as pool:
                for names, rows in zip(chunks, pool.map(_compute_chunk, chunks)):
                    for c, row in zip(names, rows):
                        _CACHE[c] = row
                    bar.update(len(names))
        except (BrokenProcessPool, OSError):
            # A pool that cannot start is no reason to fail: finish the rest in this process.
            for c in todo:
                if c not in _CACHE:
                    _CACHE[c] = _row_for_canonical(c)
                    bar.update(1)


def compute_descriptors(smiles: Sequence[Any] | ParsedMolecules, *, n_jobs: int = 1,
                        progress: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Raw descriptor table ``(X float64 (n, d), ok bool (n,))`` in :func:`descriptor_names` order.

    Unparseable rows are all-NaN with ``ok`` False; inf and ``|x| > MAX_ABS`` become NaN (impute
    them with :class:`DescriptorStandardizer`). Rows are cached per canonical SMILES.
    ``n_jobs=2`` computes uncached molecules in a spawn process pool.
    """
    parsed = smiles if isinstance(smiles, ParsedMolecules) else parse_smiles(smiles, inchikey=False)
    _fill_cache([c for c, ok in zip(parsed.canonical, parsed.ok) if ok], n_jobs, progress)
    X = np.full((len(parsed), len(DESCRIPTOR_NAMES)), np.nan, dtype=np.float64)
    for i, (c, ok) in enumerate(zip(parsed.canonical, parsed.ok)):
        if ok:
            X[i] = _CACHE[c]
    return X, parsed.ok.copy()


class DescriptorStandardizer:
    """Median-impute, clip to training quantiles, then z-score; constant columns dropped.

    Fit it on training compounds only: every statistic (median, clip bounds, mean, std, which
    columns are kept) comes from ``fit``'s rows, and ``transform`` never looks at its input's
    statistics. State is plain arrays (:meth:`get_state`) or JSON (:meth:`to_json`).
    """

    def __init__(self, clip_quantile: float = 0.001):
        if not 0.0 <= clip_quantile < 0.5:
            raise ValueError(f"clip_quantile must be in [0, 0.5), got {clip_quantile}")
        self.clip_quantile = float(clip_quantile)
        self.names: list[str] | None = None
        self.median_: np.ndarray | None = None
        self.lo_: np.ndarray | None = None
        self.hi_: np.ndarray | None = None
        self.mean_: np.ndarray | None = None
        self.std_: np.ndarray | None = None
        self.keep_: np.ndarray | None = None

    @property
    def feature_names(self) -> list[str] | None:
        """Names of the kept columns (``None`` if fitted without names)."""
        if self.names is None or self.keep_ is None:
            return None
        return [n for n, k in zip(self.names, self.keep_) if k]

    def fit(self, X: np.ndarray, names: Sequence[str] | None = None) -> DescriptorStandardizer:
        X = np.array(X, dtype=np.float64)  # a copy: we impute in place
        if X.ndim != 2 or X.shape[0] == 0:
            raise ValueError(f"fit needs a non-empty (n, d) table, got shape {X.shape}")
        if names is not None and len(names) != X.shape[1]:
            raise ValueError(f"{len(names)} names for {X.shape[1]} columns")
        X[~np.isfinite(X)] = np.nan
        has_data = ~np.all(np.isnan(X), axis=0)
        median = np.zeros(X.shape[1])
        median[has_data] = np.nanmedian(X[:, has_data], axis=0)
        X = np.where(np.isnan(X), median[None, :], X)
        lo = np.quantile(X, self.clip_quantile, axis=0)
        hi = np.quantile(X, 1.0 - self.clip_quantile, axis=0)
        Xc = np.clip(X, lo, hi)
        mean = Xc.mean(axis=0)
        std = Xc.std(axis=0)
        keep = has_data & (Xc.max(axis=0) > Xc.min(axis=0))
        std[~keep] = 1.0
        self.names = list(names) if names is not None else None
        self.median_, self.lo_, self.hi_, self.mean_, self.std_, self.keep_ = median, lo, hi, mean, std, keep
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Standardised features, float32 (n, n_kept); NaN/inf in the input get the training median."""
        if self.keep_ is None:
            raise RuntimeError("DescriptorStandardizer.transform called before fit")
        X = np.array(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.keep_.shape[0]:
            raise ValueError(f"expected (n, {self.keep_.shape[0]}) descriptors, got shape {X.shape}")
        X = np.where(np.isfinite(X), X, self.median_[None, :])
        Z = (np.clip(X, self.lo_, self.hi_) - self.mean_) / self.std_
        return Z[:, self.keep_].astype(np.float32)

    def fit_transform(self, X: np.ndarray, names: Sequence[str] | None = None) -> np.ndarray:
        return self.fit(X, names).transform(X)

    # --- persistence: arrays only, no pickle ---
    def get_state(self) -> dict[str, np.ndarray]:
        if self.keep_ is None:
            raise RuntimeError("DescriptorStandardizer is not fitted")
        state = {"median": self.median_, "lo": self.lo_, "hi": self.hi_, "mean": self.mean_,
                 "std": self.std_, "keep": self.keep_,
                 "clip_quantile": np.array(self.clip_quantile)}
        if self.names is not None:
            state["names"] = np.array(self.names, dtype=str)
        return state

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        self.clip_quantile = float(np.asarray(state["clip_quantile"]))
        self.median_ = np.asarray(state["median"], dtype=np.float64)
        self.lo_ = np.asarray(state["lo"], dtype=np.float64)
        self.hi_ = np.asarray(state["hi"], dtype=np.float64)
        self.mean_ = np.asarray(state["mean"], dtype=np.float64)
        self.std_ = np.asarray(state["std"], dtype=np.float64)
        self.keep_ = np.asarray(state["keep"], dtype=bool)
        self.names = [str(n) for n in state["names"]] if "names" in state else None

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray]) -> DescriptorStandardizer:
        obj = cls()
        obj.set_state(state)
        return obj

    def to_json(self) -> dict[str, Any]:
        """JSON-able dict (lists of floats; float64 round-trips exactly through JSON)."""
        return {k: v.tolist() for k, v in self.get_state().items()}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> DescriptorStandardizer:
        return cls.from_state({k: np.asarray(v) for k, v in obj.items()})
