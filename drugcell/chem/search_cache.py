"""One similarity matrix per (query set, reference set), computed once and read by every caller.

Why: a CV fold fits a dozen kNN variants (k x kernel) and fusion's retrieval support over the same
training compounds and predicts the same held-out compounds; each used to recompute the same
Tanimoto (or cosine) matrix, the largest part of a kNN prediction. Here the first caller computes
the whole matrix and it stays in a small process-level memo, keyed by content hashes of the two
matrices (a new fold, a refit on other compounds or other queries is a new key, never a stale
hit). Every caller then reads the same row blocks it would have computed itself and keeps its own
neighbour selection (kNN's kernels, the search's tie rule), so results are identical whether the
memo served them or not: Tanimoto values are exact whatever the blocking (integer counts, one
correctly rounded division), and cosine blocks are computed with the callers' own blocking.

Bounded: a matrix over ``MAX_ELEMENTS`` is never stored (its blocks stream as before, memory
bounded by one block); the memo holds at most ``BUDGET_BYTES``, dropping entries that were never
read again first (e.g. blend's held-out chunks), then the least recently used. Stored matrices are
read-only, so no caller can alter what the next one reads.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Iterator

import numpy as np

Blocks = Iterator[tuple[int, int, np.ndarray]]

#: Largest matrix kept (elements): 2**26 float32 = 256 MiB; a full-scale fold is 2,805 x 11,221.
MAX_ELEMENTS = 1 << 26
#: All matrices kept together, bytes.
BUDGET_BYTES = 1 << 29  # 512 MiB

_MEMO: OrderedDict[tuple, list] = OrderedDict()   # key -> [matrix, times read after computed]
_STATS = {"computed": 0, "served": 0, "streamed": 0}


def digest(a: np.ndarray) -> str:
    """Content hash of an array (shape, dtype and bytes): the memo's key part for one matrix."""
    a = np.ascontiguousarray(a)
    h = hashlib.blake2b(digest_size=16)
    h.update(repr((a.shape, a.dtype.str)).encode())
    h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def clear() -> None:
    """Forget every stored matrix and reset the counters."""
    _MEMO.clear()
    _STATS.update(computed=0, served=0, streamed=0)


def stats() -> dict[str, int]:
    """``computed`` (matrices computed and stored), ``served`` (requests answered from the memo),
    ``streamed`` (requests too large to store, computed block by block), ``entries``, ``bytes``."""
    return {**_STATS, "entries": len(_MEMO), "bytes": sum(v[0].nbytes for v in _MEMO.values())}


def _evict(incoming: int) -> None:
    """Make room for ``incoming`` bytes: unread entries first (oldest first), then least recent."""
    def used() -> int:
        return sum(v[0].nbytes for v in _MEMO.values())

    for key in [k for k, v in _MEMO.items() if v[1] == 0]:
        if used() + incoming <= BUDGET_BYTES:
            return
        del _MEMO[key]
    while _MEMO and used() + incoming > BUDGET_BYTES:
        _MEMO.popitem(last=False)


def similarity_blocks(kind: str, query: np.ndarray, ref: np.ndarray, block_rows: int,
                      compute: Callable[[], Blocks]) -> Blocks:
    """Yield ``(start, stop, sims)`` row blocks of the ``kind`` similarity of ``query`` to ``ref``.

    ``compute()`` yields the caller's own blocks (covering every query row in order); it runs at
    most once per key while the key is stored. Blocks served from the memo are read-only views:
    copy one before changing it.
    """
    nq, nref = len(query), len(ref)
    if nq * nref > MAX_ELEMENTS or nq * nref == 0:
        _STATS["streamed"] += 1
        yield from compute()
        return
    key = (kind, digest(query), digest(ref))
    entry = _MEMO.get(key)
    if entry is None:
        full = None
        for start, stop, sims in compute():
            if full is None:
                full = np.empty((nq, nref), dtype=sims.dtype)
            full[start:stop] = sims
        full.setflags(write=False)
        _evict(full.nbytes)
        entry = _MEMO[key] = [full, 0]
        _STATS["computed"] += 1
    else:
        entry[1] += 1
        _MEMO.move_to_end(key)
        _STATS["served"] += 1
    full = entry[0]
    for start in range(0, nq, max(1, int(block_rows))):
        stop = min(start + int(block_rows), nq)
        yield start, stop, full[start:stop]
