"""The order of the streaming pass: which samples go together in a batch, and in which rows.

Why a plan: per-compound means and variances are exact only when all replicates of a compound
are in one batch, and vectorised only when equal-sized groups sit in a regular layout; both are
decided here, once, from the group of every sample (a group larger than a batch is split over
several, and merged exactly by the accumulators).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class _Plan:
    """The pass order: batches of whole groups (a group larger than a batch is split over
    several). Inside a batch, groups of equal size m form a block laid out replicate-major
    (row ``r0 + j*k + i`` is replicate j of the block's group i), so every group statistic is
    a ``reshape(m, k, G).sum(0)``: contiguous, vectorised, exact."""

    names: list[str]                 # sample ids in pass order
    group: np.ndarray                # group index per sample (pass order)
    batches: list[tuple[int, int, list[tuple[int, int, np.ndarray]]]]  # (lo, hi, blocks (r0, m, groups))
    split: np.ndarray                # bool per group: spans several batches


def _plan(sample_names: np.ndarray, group: np.ndarray, n_groups: int, batch_size: int) -> _Plan:
    order = np.argsort(group, kind="stable")
    sizes = np.bincount(group, minlength=n_groups)
    ends = np.cumsum(sizes)
    split = sizes > batch_size
    # consecutive runs of groups, each run at most batch_size samples (split groups alone)
    runs: list[list[int]] = []
    cur: list[int] = []
    total = 0
    for k in np.flatnonzero(sizes):
        if split[k]:
            if cur:
                runs.append(cur)
            runs.append([int(k)])
            cur, total = [], 0
            continue
        if total + sizes[k] > batch_size and cur:
            runs.append(cur)
            cur, total = [], 0
        cur.append(int(k))
        total += int(sizes[k])
    if cur:
        runs.append(cur)
    names_out: list[np.ndarray] = []
    group_out: list[np.ndarray] = []
    batches = []
    pos = 0
    for run in runs:
        if split[run[0]]:
            k = run[0]
            idx = order[ends[k] - sizes[k]:ends[k]]
            for a in range(0, len(idx), batch_size):
                part = idx[a:a + batch_size]
                names_out.append(sample_names[part])
                group_out.append(np.full(len(part), k))
                batches.append((pos, pos + len(part), [(0, len(part), np.array([k]))]))
                pos += len(part)
            continue
        run_arr = np.array(run)
        blocks = []
        r0 = 0
        lo = pos
        for m in np.unique(sizes[run_arr]):
            gs = run_arr[sizes[run_arr] == m]
            # replicate-major: (m, k) sample positions -> rows r0 + j*k + i
            first = ends[gs] - m
            idx = order[first[None, :] + np.arange(m)[:, None]].ravel()
            names_out.append(sample_names[idx])
            group_out.append(np.tile(gs, m))
            blocks.append((r0, int(m), gs))
            r0 += int(m) * len(gs)
        pos += r0
        batches.append((lo, pos, blocks))
    names = [str(s) for s in np.concatenate(names_out)] if names_out else []
    g = np.concatenate(group_out) if group_out else np.zeros(0, dtype=np.int64)
    return _Plan(names=names, group=g, batches=batches, split=split)
