"""The streaming pass: sample batches of counts -> per-compound target, replicate statistics and
per-gene totals, then the Mejia weights, exactly and in bounded memory.

How the pass stays exact: samples are ordered so that all replicates of a compound fall in one
batch (a group larger than a batch is split and merged exactly with Chan's formula), so
per-compound means and within-compound variances of L = log2(CPM+1) are exact inside the
batch. Across batches only per-gene totals (sum and sum of squares of L, shifted by a per-gene
constant to avoid cancellation) are carried. The Welch t-statistics and Mejia weights follow
after the pass in compound chunks (:func:`contest_scorer.weights.mejia_weight_rows`, the
contest arithmetic rearranged to be well conditioned in float32; the tests pin it to the
in-memory recipe).

Memory at full scale (14,031 compounds x 12,995 genes, float32, 730 MB per array): shifted means
(C, G) and variances (C, G) in memory; the target (C, G) optionally in an unlinked file mapping
whose pages are handed back after each batch; one batch of counts as an Arrow table (80 MB at 256
samples x 78,778 int32 genes, read one batch ahead) and its scored genes. The weights overwrite
the means row by row and are exposed as their (G, C) transpose (Fortran order), so no second
730 MB array is ever needed.

Time (2 cores): one worker reads and decodes batch i+1 in Arrow while the main thread computes
batch i on two threads, each taking half of every block's groups (numpy releases the GIL). The
target's L is float32 (error ~2e-7, well inside the float32 it is stored in); the weights' L stays
float64, since float32 replicate variances move the weights by ~4e-4 relative.
"""

from __future__ import annotations

import collections
import concurrent.futures
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import sparse

from contest_scorer.weights import GeneTotals, LibraryMode, mejia_weight_rows
from drugcell.data.counts import _Counts
from drugcell.data.memory import _release_map
from drugcell.data.pass_plan import _Plan
from drugcell.progress import bar as progress_bar

#: which library size the weights' L uses: the scored genes (official build) or all genes
WeightsLibrary = LibraryMode
_READ_AHEAD = 2  # batches in flight (read, then decoded) while one is computed


# ============================================================================ accumulators
class _Stats:
    """Per-group outputs of the pass plus the per-gene totals (see the module docstring).

    Library statistics are (C, G) so each batch writes whole rows; the weights are finally
    written over ``mean_u`` row by row and exposed as its transpose (G, C) (Fortran order)."""

    def __init__(self, n_lib: int, n_ctrl: int, n_genes: int, *, weights: bool,
                 scratch_dir: Path | None = None) -> None:
        g = n_genes
        self.n_lib = n_lib
        self.n = np.zeros(n_lib + n_ctrl, dtype=np.int64)
        if scratch_dir is None:
            self.expr = np.empty((n_lib, g), dtype=np.float32)
        else:
            # the target is final once written: keep it in an unlinked file mapping whose pages
            # are handed back after every batch, so it does not count toward the peak memory
            fd, tmp = tempfile.mkstemp(prefix=".drugcell-expr-", suffix=".npy", dir=scratch_dir)
            os.close(fd)
            try:
                self.expr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n_lib, g))
            finally:
                os.unlink(tmp)
        self.ctrl_expr = np.zeros((n_ctrl, g), dtype=np.float64)
        self.weights = weights
        if weights:
            self.mean_u = np.empty((n_lib, g), dtype=np.float32)   # later overwritten by weights
            self.var = np.empty((n_lib, g), dtype=np.float32)
            self.ctrl_mean_u = np.zeros((n_ctrl, g), dtype=np.float64)
            self.ctrl_var = np.zeros((n_ctrl, g), dtype=np.float64)
        self.shift: np.ndarray | None = None
        self.total_u = np.zeros(g, dtype=np.float64)
        self.total_uu = np.zeros(g, dtype=np.float64)
        self.n_total = 0
        self.n_empty_library = 0          # samples dropped: no counts on any gene
        self.n_empty_scored_library = 0   # samples dropped: no counts on the scored genes ("scored" library)
        # split groups: float64 running (n, sum of target L, mean_u, M2)
        self.acc: dict[int, list[Any]] = {}

    def release(self) -> None:
        """Hand the written target pages back to the page cache (a no-op when in memory)."""
        _release_map(self.expr)

    def emit(self, split: np.ndarray, grp: np.ndarray, n: np.ndarray, sum_t: np.ndarray,
             mean_u: np.ndarray | None, m2: np.ndarray | None) -> None:
        """Route one batch's group statistics: complete groups are stored, split ones merged."""
        part = split[grp]
        if not part.any():
            self.put(grp, n, sum_t, mean_u, m2)
            return
        whole = ~part
        if whole.any():
            self.put(grp[whole], n[whole], sum_t[whole], None if mean_u is None else mean_u[whole],
                     None if m2 is None else m2[whole])
        for j in np.flatnonzero(part):
            self.merge(int(grp[j]), int(n[j]), sum_t[j], None if mean_u is None else mean_u[j],
                       None if m2 is None else m2[j])

    def put(self, grp: np.ndarray, n: np.ndarray, sum_t: np.ndarray, mean_u: np.ndarray | None,
            m2: np.ndarray | None) -> None:
        """Store complete groups (rows of the per-batch arrays, which are scaled in place: no
        float64 temporaries). Threads may call it at once for disjoint groups."""
        self.n[grp] = n
        lib = grp < self.n_lib
        if not lib.all():
            if lib.any():
                self.put(grp[lib], n[lib], sum_t[lib], None if mean_u is None else mean_u[lib],
                         None if m2 is None else m2[lib])
            c = ~lib
            rows = grp[c] - self.n_lib
            nn = n[c][:, None].astype(np.float64)
            self.ctrl_expr[rows] = sum_t[c] / nn
            if self.weights:
                self.ctrl_mean_u[rows] = mean_u[c]
                self.ctrl_var[rows] = m2[c] / np.maximum(nn - 1.0, 1.0)
            return
        if (n == 1).all():
            self.expr[grp] = sum_t
        else:
            sum_t *= (1.0 / n[:, None]).astype(sum_t.dtype)
            self.expr[grp] = sum_t
        if self.weights:
            self.mean_u[grp] = mean_u
            if not (n <= 2).all():
                m2 *= (1.0 / np.maximum(n - 1.0, 1.0))[:, None]
            self.var[grp] = m2

    def merge(self, k: int, n: int, sum_t: np.ndarray, mean_u: np.ndarray | None, m2: np.ndarray | None) -> None:
        """Chan's pairwise update for a group split across batches."""
        if k not in self.acc:
            self.acc[k] = [n, sum_t.astype(np.float64), None if mean_u is None else mean_u.copy(),
                           None if m2 is None else m2.copy()]
            return
        a = self.acc[k]
        na = a[0]
        a[0] = na + n
        a[1] += sum_t
        if mean_u is not None:
            delta = mean_u - a[2]
            a[3] += m2 + delta * delta * (na * n / (na + n))
            a[2] += delta * (n / (na + n))

    def finish_split(self) -> None:
        for k, (n, sum_t, mean_u, m2) in self.acc.items():
            self.put(np.array([k]), np.array([n]), sum_t[None], None if mean_u is None else mean_u[None],
                     None if m2 is None else m2[None])
        self.acc.clear()


class _Work:
    """Reusable work buffers (a fresh array costs about 1 ms per MB in page faults here): the
    target's L (float32 unless it doubles as the weights' L) and the weights' L (float64)."""

    def __init__(self, rows: int, cols: int, *, weights: bool, library: WeightsLibrary) -> None:
        shared = weights and library == "all"
        self.t = np.empty((rows, cols), dtype=np.float64 if shared else np.float32)
        self.w = self.t if shared else (np.empty((rows, cols)) if weights else None)

    def views(self, rows: int) -> tuple[np.ndarray, np.ndarray | None]:
        return self.t[:rows], None if self.w is None else self.w[:rows]


def _log_cpm(counts: np.ndarray, lib: np.ndarray, out: np.ndarray) -> np.ndarray:
    """log2(CPM + 1) in ``out``'s precision; ``lib`` has the shape of ``counts`` minus its last axis.
    float32 is enough for the target (errors ~2e-7); the weights' variances need float64."""
    scale = (1e6 / lib).astype(out.dtype)[..., None]
    np.multiply(counts, scale, out=out, dtype=out.dtype)
    out += 1.0
    return np.log2(out, out=out)


# a piece of a batch: (r0, m, groups of the block, i0, i1) = groups i0:i1 of the block whose
# rows r0 + j*k + i hold replicate j of group i (k = len(groups)); pieces never share a group
_Piece = tuple[int, int, np.ndarray, int, int]


def _pieces_stats(counts: np.ndarray, lib: np.ndarray, lib_s: np.ndarray, lt: np.ndarray,
                  lw: np.ndarray | None, pieces: Sequence[_Piece], library: WeightsLibrary) -> list[tuple]:
    """Per piece (groups, n, sum of target L, mean of weights L, M2 of weights L), the log-CPM
    computed on the piece's rows only (so two threads can share one batch). ``lw`` is used as
    scratch; it may be ``lt`` itself (weights library "all": sums are taken first)."""
    out = []
    g = counts.shape[1]
    same = lw is lt
    for r0, m, grp, i0, i1 in pieces:
        k = len(grp)
        rows = slice(r0, r0 + m * k)
        c = counts[rows].reshape(m, k, g)[:, i0:i1]
        tb = lt[rows].reshape(m, k, g)[:, i0:i1]
        _log_cpm(c, lib[rows].reshape(m, k)[:, i0:i1], tb)
        if m == 1:
            sum_t = tb[0].copy()
        elif m == 2:
            sum_t = np.add(tb[0], tb[1])
        else:  # float64 sums: many replicates (controls) would lose digits in float32
            sum_t = tb.sum(axis=0, dtype=np.float64)
        mean = m2 = None
        if lw is not None:
            wb = lw[rows].reshape(m, k, g)[:, i0:i1]
            if not same:
                _log_cpm(c, (lib_s if library == "scored" else lib)[rows].reshape(m, k)[:, i0:i1], wb)
            if m == 1:
                mean, m2 = wb[0].copy(), np.zeros((i1 - i0, g))
            elif m == 2:  # the common case: mean and M2 of two values without a pass over both
                mean = np.add(wb[0], wb[1])
                m2 = np.subtract(wb[0], wb[1])
                np.square(m2, out=m2)
                m2 *= 0.5
                mean *= 0.5
            else:
                mean = sum_t.copy() if same else wb.sum(axis=0)
                mean /= m
                wb -= mean[None]
                np.square(wb, out=wb)
                m2 = wb.sum(axis=0)
        out.append((grp[i0:i1], np.full(i1 - i0, m), sum_t, mean, m2))
    return out


def _group_stats_generic(lt: np.ndarray, lw: np.ndarray | None, grp: np.ndarray) -> list[tuple]:
    """Same as the piece path for any row order (used when empty libraries broke the layout)."""
    groups, codes = np.unique(grp, return_inverse=True)
    n = np.bincount(codes, minlength=len(groups))
    ind = sparse.csr_matrix((np.ones(len(grp)), (codes, np.arange(len(grp)))), shape=(len(groups), len(grp)))
    sum_t = np.asarray(ind @ lt)
    mean = m2 = None
    if lw is not None:
        mean = np.asarray(ind @ lw) / n[:, None]
        dev = lw - mean[codes]
        np.square(dev, out=dev)
        m2 = np.asarray(ind @ dev)
    return [(groups, n, sum_t, mean, m2)]


def _totals_and_put(stats: _Stats, split: np.ndarray, parts: list[tuple]) -> tuple[np.ndarray, np.ndarray, list]:
    """Shift the means, this share's per-gene totals (sum u, sum u^2), store the complete
    groups; returns the totals and the parts of split groups (merged by the caller, serially)."""
    g = stats.total_u.shape[0]
    tot_u, tot_uu = np.zeros(g), np.zeros(g)
    later = []
    for part in parts:
        grp, n, _, mean, m2 = part
        if mean is not None:
            mean -= stats.shift  # -> mean of u = L - shift
            if (n == n[0]).all():
                tot_u += mean.sum(axis=0) * float(n[0])
                sq = np.square(mean)
                sq *= float(n[0])
                sq += m2
                tot_uu += sq.sum(axis=0)
            else:
                nn = n[:, None].astype(np.float64)
                tot_u += (nn * mean).sum(axis=0)
                tot_uu += (m2 + nn * mean * mean).sum(axis=0)
        if split[grp].any():
            later.append(part)
        else:
            stats.put(*part)
    return tot_u, tot_uu, later


def _nonempty(stats: _Stats, lib: np.ndarray, lib_scored: np.ndarray, library: WeightsLibrary) -> np.ndarray:
    """The batch's samples with a library (and, for the "scored" weights library, counts on the
    scored genes); the others are counted in ``stats`` and dropped."""
    valid = lib > 0
    stats.n_empty_library += int((~valid).sum())
    if library == "scored":
        empty_scored = valid & ~(lib_scored > 0)
        stats.n_empty_scored_library += int(empty_scored.sum())
        valid &= ~empty_scored
    return valid


def _halves(pieces: Sequence[_Piece]) -> list[list[_Piece]]:
    """Each block's groups split in two halves (the first one group larger when odd), one per thread."""
    halves: list[list[_Piece]] = [[], []]
    for r0, m, gs, _, k in pieces:
        h = (k + 1) // 2
        halves[0].append((r0, m, gs, 0, h))
        if h < k:
            halves[1].append((r0, m, gs, h, k))
    return halves


def _process_batch(stats: _Stats, work: _Work, plan: _Plan, batch, lib: np.ndarray,
                   counts: np.ndarray, lib_scored: np.ndarray, library: WeightsLibrary,
                   pool: concurrent.futures.Executor | None = None) -> None:
    """One batch: log-CPM, group statistics, per-gene totals, stores. With ``pool`` (2 threads)
    each block's groups are halved between the threads (numpy releases the GIL); the first
    batch runs alone since it fixes the shift."""
    lo, hi, blocks = batch
    grp = plan.group[lo:hi]
    valid = _nonempty(stats, lib, lib_scored, library)
    intact = bool(valid.all())
    if not intact:
        counts, lib, lib_scored, grp = counts[valid], lib[valid], lib_scored[valid], grp[valid]
    b = len(grp)
    if b == 0:
        return
    lt, lw = work.views(b)
    stats.n_total += b
    if intact:
        pieces = [(r0, m, gs, 0, len(gs)) for r0, m, gs in blocks]
    else:
        _log_cpm(counts, lib, lt)
        if lw is not None and lw is not lt:
            _log_cpm(counts, lib_scored if library == "scored" else lib, lw)
        pieces = None
    if stats.shift is None or pool is None or not intact:
        parts = (_pieces_stats(counts, lib, lib_scored, lt, lw, pieces, library) if intact
                 else _group_stats_generic(lt, lw, grp))
        if lw is not None and stats.shift is None:  # a per-gene constant so the totals do not cancel
            stats.shift = sum((p[1][:, None] * p[3]).sum(axis=0) for p in parts) / b
        shares = [_totals_and_put(stats, plan.split, parts)]
    else:
        def run(half: list[_Piece]) -> tuple:
            return _totals_and_put(stats, plan.split,
                                   _pieces_stats(counts, lib, lib_scored, lt, lw, half, library))

        shares = list(pool.map(run, _halves(pieces)))
    for tot_u, tot_uu, later in shares:
        if lw is not None:
            stats.total_u += tot_u
            stats.total_uu += tot_uu
        for part in later:
            stats.emit(plan.split, *part)


def _run_pass(src: _Counts, plan: _Plan, stats: _Stats, library: WeightsLibrary,
              progress: bool | None = None) -> None:
    """Every batch of ``plan`` through :func:`_process_batch` into ``stats``, three stages at once
    (pyarrow and numpy release the GIL): the parquet read of batch i+2 (on pyarrow's threads), the
    Arrow decode of batch i+1, the compute of batch i (itself on two threads, ``halves``)."""
    largest = max(b[1] - b[0] for b in plan.batches)
    work = _Work(largest, stats.total_u.shape[0], weights=stats.weights, library=library)
    bar = progress_bar(total=len(plan.names), desc="load counts", unit="sample",
                       disable=None if progress is None else not progress)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as reader, \
            concurrent.futures.ThreadPoolExecutor(max_workers=1) as decoder, \
            concurrent.futures.ThreadPoolExecutor(max_workers=2) as halves:
        ahead: collections.deque = collections.deque()
        nxt = 0
        for i, batch in enumerate(plan.batches):
            while nxt < len(plan.batches) and len(ahead) < _READ_AHEAD:
                nlo, nhi, _ = plan.batches[nxt]
                fetched = reader.submit(src.fetch, plan.names[nlo:nhi])
                ahead.append(decoder.submit(lambda f=fetched: src.decode(f.result())))
                nxt += 1
            lib, sub, lib_s = ahead.popleft().result()
            _process_batch(stats, work, plan, batch, lib, sub, lib_s, library, pool=halves)
            if i % 8 == 7:
                stats.release()
            bar.update(batch[1] - batch[0])
    bar.close()
    del work
    stats.finish_split()
    stats.release()


# ============================================================================ after the pass
def _finish_weights(stats: _Stats, chunk: int = 512, progress: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Mejia weights (:func:`contest_scorer.weights.mejia_weight_rows`) in compound chunks on two
    threads, written in place over the shifted means (C, G); returned as (G, C) views."""
    n_all = stats.n
    totals = GeneTotals.from_sums(stats.total_u, stats.total_uu, stats.n_total)
    c = stats.n_lib
    w = stats.mean_u

    def rows(s: int) -> None:  # chunks write disjoint rows: two threads (numpy releases the GIL)
        sl = slice(s, min(s + chunk, c))
        w[sl] = mejia_weight_rows(w[sl], stats.var[sl], n_all[sl], totals)

    starts = range(0, c, chunk)
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        for _ in progress_bar(pool.map(rows, starts), total=len(starts), desc="Mejia weights", unit="chunk",
                              disable=None if progress is None else not progress):
            pass
    del stats.var
    ctrl = mejia_weight_rows(stats.ctrl_mean_u, stats.ctrl_var, n_all[c:], totals)
    return w.T, np.ascontiguousarray(ctrl.T)
