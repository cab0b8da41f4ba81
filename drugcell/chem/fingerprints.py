"""Morgan fingerprints as numpy arrays and a fast, exact all-pairs Tanimoto.

Why: kNN retrieval, the leak audit and the retrieval-support features all need Tanimoto over
~14,000 x 14,000 pairs. RDKit's ``BulkTanimotoSimilarity`` does one query at a time; here the
intersection counts of *all* pairs come from one matrix product of 0/1 matrices, which is exact
and runs at GEMM speed: int8 x int8 -> int32 (torch, VNNI/AMX on CPU) or float32 (BLAS; every
partial sum is an integer <= n_bits < 2**24), or float32 on CUDA. The quotient
``c / (a + b - c)`` of exact integers is correctly rounded by IEEE division, so the float32
result equals ``float32(RDKit's double)`` bit for bit, and with ``dtype=np.float64`` it equals
RDKit's double exactly. 0/0 (two empty fingerprints, e.g. two unparseable molecules) is 0.0,
which is what RDKit returns.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from rdkit import Chem
from rdkit.Chem import rdFingerprintGenerator

from drugcell.chem.molecules import ParsedMolecules, parse_smiles
from drugcell.defaults import MORGAN_BITS, MORGAN_RADIUS

# Elements per (rows x n_ref) block temporary: 2**24 float32 = 64 MiB, a few alive at once.
_BLOCK_ELEMS = 1 << 24


@functools.lru_cache(maxsize=16)
def morgan_generator(radius: int = MORGAN_RADIUS, n_bits: int = MORGAN_BITS):
    """RDKit's Morgan generator (cached: building one per molecule is needlessly slow)."""
    return rdFingerprintGenerator.GetMorganGenerator(radius=int(radius), fpSize=int(n_bits))


def as_mols(smiles_or_mols: Sequence[Any] | ParsedMolecules) -> list[Chem.Mol | None]:
    """Molecules from SMILES strings, RDKit Mols, None, or a :class:`ParsedMolecules`.

    Strings are parsed with :func:`parse_smiles` (silently; failures become None).
    """
    if isinstance(smiles_or_mols, ParsedMolecules):
        return list(smiles_or_mols.mols)
    items = list(smiles_or_mols)
    if all(isinstance(x, Chem.Mol) or x is None for x in items):
        return items
    mols: list[Chem.Mol | None] = [x if isinstance(x, Chem.Mol) else None for x in items]
    todo = [i for i, x in enumerate(items) if not isinstance(x, Chem.Mol)]
    parsed = parse_smiles([items[i] for i in todo], inchikey=False)
    for j, i in enumerate(todo):
        mols[i] = parsed.mols[j]
    return mols


def _morgan(smiles_or_mols, radius: int, n_bits: int, method: str, dtype) -> np.ndarray:
    """One row per molecule from the generator's ``method``; all-zero rows for failures."""
    fingerprint = getattr(morgan_generator(radius, n_bits), method)
    mols = as_mols(smiles_or_mols)
    out = np.zeros((len(mols), n_bits), dtype=dtype)
    for i, mol in enumerate(mols):
        if mol is not None:
            out[i] = fingerprint(mol)
    return out


def morgan_bits(smiles_or_mols: Sequence[Any] | ParsedMolecules, radius: int = MORGAN_RADIUS,
                n_bits: int = MORGAN_BITS) -> np.ndarray:
    """Morgan (ECFP-like) bit vectors, uint8 (n, n_bits); all-zero rows for unparseable input."""
    return _morgan(smiles_or_mols, radius, n_bits, "GetFingerprintAsNumPy", np.uint8)


def morgan_counts(smiles_or_mols: Sequence[Any] | ParsedMolecules, radius: int = MORGAN_RADIUS,
                  n_bits: int = MORGAN_BITS) -> np.ndarray:
    """Morgan count vectors (how often each hashed environment occurs), float32 (n, n_bits)."""
    return _morgan(smiles_or_mols, radius, n_bits, "GetCountFingerprintAsNumPy", np.float32)


def rdkit_bitvects(smiles_or_mols: Sequence[Any] | ParsedMolecules, radius: int = MORGAN_RADIUS,
                   n_bits: int = MORGAN_BITS) -> list:
    """RDKit ``ExplicitBitVect`` fingerprints (empty ones for failures): the reference for tests
    and benchmarks against ``DataStructs.BulkTanimotoSimilarity``."""
    from rdkit import DataStructs

    gen = morgan_generator(radius, n_bits)
    return [gen.GetFingerprint(m) if m is not None else DataStructs.ExplicitBitVect(n_bits)
            for m in as_mols(smiles_or_mols)]


def _check_bits(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (n, n_bits) fingerprint matrix, got shape {x.shape}")
    if x.dtype != np.bool_ and x.size and (x.min() < 0 or x.max() > 1):
        raise ValueError(f"{name} must hold 0/1 bits (use morgan_bits, not morgan_counts)")
    return x


# Below this many pair-bit operations, importing torch costs more than it saves.
_TORCH_WORTH_IT = 1 << 30


def _torch_if_cheap(work: int):
    """torch if it is already imported or the job is big enough to pay for the import."""
    if "torch" not in sys.modules and work < _TORCH_WORTH_IT:
        return None
    try:
        import torch
    except ImportError:
        return None
    return torch


@functools.lru_cache(maxsize=1)
def _int8_gemm_works() -> bool:
    """Whether ``torch._int_mm`` (int8 x int8 -> int32 GEMM, VNNI/AMX on CPU) exists and is
    exact here; it is a private torch API, so probe it once instead of trusting it."""
    try:
        import torch

        a = torch.tensor([[1, 0, 1], [1, 1, 1]], dtype=torch.int8)
        out = torch._int_mm(a, a.T)
        return out.dtype == torch.int32 and out.tolist() == [[2, 2], [2, 3]]
    except Exception:
        return False


def _plan(device: str, method: str, work: int) -> tuple[str, str]:
    """(device, method): 'cuda' + float32 GEMM when asked/available; on CPU the int8 GEMM
    (about 2.5x the float32 one on VNNI CPUs) when torch provides it, else numpy float32."""
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    if method not in ("auto", "int8", "float32"):
        raise ValueError(f"method must be 'auto', 'int8' or 'float32', got {method!r}")
    torch = None
    if device == "cuda":
        import torch
        if not torch.cuda.is_available():
            raise ValueError("device='cuda' requested but torch sees no CUDA device")
        return "cuda", "float32"
    if device == "auto":
        torch = _torch_if_cheap(work)
        if torch is not None and torch.cuda.is_available():
            return "cuda", "float32"
    if method == "int8" and not _int8_gemm_works():
        raise ValueError("method='int8' needs torch with torch._int_mm; use method='float32'")
    if method == "auto":
        cheap = torch is not None or _torch_if_cheap(work) is not None
        method = "int8" if cheap and _int8_gemm_works() else "float32"
    return "cpu", method


def _block_rows(n_ref: int, block_rows: int | None) -> int:
    if block_rows is not None:
        return max(1, int(block_rows))
    return max(1, min(4096, _BLOCK_ELEMS // max(1, n_ref)))


def iter_tanimoto_blocks(a_bits: np.ndarray, b_bits: np.ndarray, *, block_rows: int | None = None,
                         device: str = "auto", dtype=np.float32, method: str = "auto"
                         ) -> Iterator[tuple[int, int, np.ndarray]]:
    """Yield ``(start, stop, sims)`` with ``sims = tanimoto(a_bits[start:stop], b_bits)``.

    Memory stays bounded by the block (``block_rows x len(b_bits)``), so callers that reduce each
    block (top-k, max similarity) never hold the full matrix. ``method`` picks the CPU kernel for
    the intersection counts: ``int8`` (torch int8 GEMM, int32 counts), ``float32`` (numpy BLAS),
    or ``auto``; both are exact, so results are identical.
    """
    a = _check_bits(a_bits, "a_bits")
    b = _check_bits(b_bits, "b_bits")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"fingerprint lengths differ: {a.shape[1]} vs {b.shape[1]} bits")
    dtype = np.dtype(dtype)
    rows = _block_rows(b.shape[0], block_rows)
    dev, method = _plan(device, method, a.shape[0] * b.shape[0] * a.shape[1])
    if dev == "cuda":
        yield from _blocks_torch(a, b, rows, dtype)
        return
    if method == "int8":
        import torch

        a_mat = torch.from_numpy(np.ascontiguousarray(a, dtype=np.int8))
        b_mat = torch.from_numpy(np.ascontiguousarray(b, dtype=np.int8)).T

        def counts(start: int, stop: int) -> np.ndarray:
            return torch._int_mm(a_mat[start:stop], b_mat).numpy()
        pa = a.sum(axis=1, dtype=np.int32)
        pb = b.sum(axis=1, dtype=np.int32)
    else:
        af = a.astype(np.float32, copy=False)
        bt = np.ascontiguousarray(b.astype(np.float32, copy=False).T)

        def counts(start: int, stop: int) -> np.ndarray:
            return af[start:stop] @ bt                  # exact integer counts in float32
        pa = af.sum(axis=1, dtype=np.float32)
        pb = bt.sum(axis=0, dtype=np.float32)
    for start in range(0, a.shape[0], rows):
        stop = min(start + rows, a.shape[0])
        inter = counts(start, stop)
        denom = pa[start:stop, None] + pb[None, :]
        denom -= inter                                  # |A u B|, exact
        np.maximum(denom, 1, out=denom)                 # 0/0 -> 0/1 = 0 (intersection is 0 there)
        if dtype == np.float32 and inter.dtype == np.float32:
            yield start, stop, np.divide(inter, denom, out=inter)
        else:  # integers are cast exactly, then one correctly rounded division
            yield start, stop, np.divide(inter, denom, dtype=dtype)


def _blocks_torch(a: np.ndarray, b: np.ndarray, rows: int, dtype: np.dtype, where: str = "cuda"
                  ) -> Iterator[tuple[int, int, np.ndarray]]:
    """The same arithmetic in torch on CUDA (float32 matmul of 0/1 inputs is exact even under
    TF32, since 0 and 1 are exact in every format and accumulation is float32). ``where`` exists
    so tests can run this path on the CPU of a machine without a GPU."""
    import torch

    dev = torch.device(where)
    tdtype = torch.float64 if dtype == np.float64 else torch.float32
    af = torch.from_numpy(np.ascontiguousarray(a, dtype=np.uint8)).to(dev).float()
    bf = torch.from_numpy(np.ascontiguousarray(b, dtype=np.uint8)).to(dev).float()
    pa = af.sum(dim=1)
    pb = bf.sum(dim=1)
    bt = bf.T.contiguous()
    for start in range(0, a.shape[0], rows):
        stop = min(start + rows, a.shape[0])
        inter = af[start:stop] @ bt
        denom = (pa[start:stop, None] + pb[None, :] - inter).clamp_min_(1.0)
        sims = inter.to(tdtype) / denom.to(tdtype)
        yield start, stop, sims.cpu().numpy()


def tanimoto(a_bits: np.ndarray, b_bits: np.ndarray | None = None, *, block_rows: int | None = None,
             device: str = "auto", dtype=np.float32, method: str = "auto") -> np.ndarray:
    """All-pairs Tanimoto similarity, (na, nb) float32, equal to RDKit's BulkTanimotoSimilarity.

    ``b_bits=None`` compares ``a_bits`` with itself. Inputs are 0/1 matrices (uint8 or bool) from
    :func:`morgan_bits`. Computed in row blocks; on CUDA when torch sees a GPU (``device``).
    """
    b = a_bits if b_bits is None else b_bits
    na, nb = np.asarray(a_bits).shape[0], np.asarray(b).shape[0]
    out = np.empty((na, nb), dtype=np.dtype(dtype))
    for start, stop, sims in iter_tanimoto_blocks(a_bits, b, block_rows=block_rows, device=device,
                                                  dtype=dtype, method=method):
        out[start:stop] = sims
    return out


@dataclass(frozen=True)
class Neighbours:
    """What one pass of :func:`search_similar` keeps of each query's similarity row."""

    indices: np.ndarray                  # (nq, k) int64, most similar first
    similarities: np.ndarray             # (nq, k) float32, same order
    n_at_least: np.ndarray | None = None  # (nq,) int64: references with similarity >= threshold


def search_similar(query_bits: np.ndarray, ref_bits: np.ndarray, k: int, *, exclude_self: bool = False,
                   count_at_least: float | None = None, block_rows: int | None = None,
                   device: str = "auto", method: str = "auto") -> Neighbours:
    """The one Tanimoto top-k search: retrieval support and the predict-time warning use it.

    Per query row: the ``k`` most similar reference rows (ties to the lower reference index, so
    deterministic) and, with ``count_at_least``, how many references reach that similarity (in
    the same pass, so the block is never revisited). ``exclude_self=True`` is for querying a set
    against itself (leave-one-out): it requires ``nq == nref`` and drops pair ``(i, i)`` from
    both. ``k`` larger than the available references is clamped (fewer columns). Memory is
    bounded by one block of ``block_rows x nref``, or by the shared memo of whole matrices
    (:mod:`drugcell.chem.search_cache`), which serves a matrix a kNN predictor already computed
    for the same queries and references (the values are the same either way).
    """
    q = np.asarray(query_bits)
    r = np.asarray(ref_bits)
    if exclude_self and q.shape[0] != r.shape[0]:
        raise ValueError(
            f"exclude_self=True needs the query set to be the reference set "
            f"(got {q.shape[0]} query rows vs {r.shape[0]} reference rows)")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    k_eff = min(int(k), r.shape[0] - (1 if exclude_self else 0))
    idx = np.zeros((q.shape[0], max(k_eff, 0)), dtype=np.int64)
    sim = np.zeros((q.shape[0], max(k_eff, 0)), dtype=np.float32)
    counts = None if count_at_least is None else np.zeros(q.shape[0], dtype=np.int64)
    if k_eff <= 0 or q.shape[0] == 0:
        return Neighbours(idx, sim, counts)
    def compute():
        return iter_tanimoto_blocks(q, r, block_rows=block_rows, device=device, method=method)

    if exclude_self:  # a self-search changes its blocks and serves nobody else: not shared
        blocks = compute()
    else:  # the kNN variants of a fold may have computed this very matrix already
        from drugcell.chem.search_cache import similarity_blocks

        blocks = similarity_blocks("tanimoto", q, r, _block_rows(r.shape[0], block_rows), compute)
    for start, stop, s in blocks:
        if exclude_self:
            rows = np.arange(stop - start)
            s[rows, rows + start] = -1.0   # below every real similarity (>= 0): never kept or counted
        idx[start:stop], sim[start:stop] = _top_k_rows(s, k_eff)
        if counts is not None:
            counts[start:stop] = (s >= count_at_least).sum(axis=1)
    return Neighbours(idx, sim, counts)


def top_k_similar(query_bits: np.ndarray, ref_bits: np.ndarray, k: int, *, exclude_self: bool = False,
                  block_rows: int | None = None, device: str = "auto", method: str = "auto"
                  ) -> tuple[np.ndarray, np.ndarray]:
    """``(indices int64 (nq, k), similarities float32 (nq, k))`` of :func:`search_similar`."""
    found = search_similar(query_bits, ref_bits, k, exclude_self=exclude_self, block_rows=block_rows,
                           device=device, method=method)
    return found.indices, found.similarities


def _top_k_rows(s: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-row top-k of a block with ties broken by lower column index (vectorised)."""
    n_rows, n_cols = s.shape
    if k == n_cols:
        order = np.argsort(-s, axis=1, kind="stable")
        return order, np.take_along_axis(s, order, axis=1)
    # The k-th largest value per row; everything strictly above it is in, then the
    # lowest-index ties at exactly that value fill the remaining slots.
    kth = -np.partition(-s, k - 1, axis=1)[:, k - 1]
    above = s > kth[:, None]
    n_above = above.sum(axis=1)
    ties = s == kth[:, None]
    ties &= np.cumsum(ties, axis=1) <= (k - n_above)[:, None]
    chosen = above | ties
    cols = np.nonzero(chosen)[1].reshape(n_rows, k)       # ascending column order per row
    vals = np.take_along_axis(s, cols, axis=1)
    order = np.argsort(-vals, axis=1, kind="stable")      # stable: equal values keep index order
    return np.take_along_axis(cols, order, axis=1), np.take_along_axis(vals, order, axis=1)
