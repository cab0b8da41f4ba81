"""What the simulator knows about its own wells, gathered gene batch by gene batch during pass 2.

Why apart: the gene filter, the held-out answer, the test compounds' Mejia weights and the QC
columns are all sums over genes; each is accumulated here from one batch of counts at a time, so
the full counts matrix never sits in memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from contest_scorer.weights import minmax_square_normalize, t_vs_rest
from drugcell.data.simulate.world import World


@dataclass(frozen=True)
class WellSets:
    """Index arrays into the world's wells."""

    train: np.ndarray      # training wells, in file order
    test: np.ndarray       # held-out wells
    contest: np.ndarray    # training wells in the contest condition

    @classmethod
    def of(cls, world: World) -> WellSets:
        train = np.flatnonzero(~world.wells.is_test)
        return cls(train=train, test=np.flatnonzero(world.wells.is_test),
                   contest=train[~world.is_off[train]])


@dataclass(frozen=True)
class Truth:
    """Pass 2's results: scored genes, test truth and weights (test compounds x scored genes)."""

    scored: np.ndarray        # indices of the genes with mean CPM >= 1
    test_comp: np.ndarray     # compound index of each test compound (sorted)
    test_expr: np.ndarray     # mean log2(CPM+1) per test compound and scored gene
    test_weights: np.ndarray  # Mejia weights, same shape


class Tally:
    """Per-batch accumulation of the gene filter, test truth, test weights and QC counters.

    Gene filter: mean CPM >= 1 over the contest-condition training wells with a non-empty library.
    Test weights: t of each test compound vs every other contest-condition well, train and test,
    with the library over all genes (pass 1's sizes): the leaderboard's weights for them.
    """

    def __init__(self, world: World, libsize: np.ndarray, sets: WellSets) -> None:
        n_w = len(world.wells.compound)
        self.world = world
        self.test_w = sets.test
        self.ngenes3 = np.zeros(n_w, dtype=np.int64)
        self.mito = np.zeros(n_w, dtype=np.int64)
        self.ribo = np.zeros(n_w, dtype=np.int64)
        self.ok = sets.contest[libsize[sets.contest] > 0]
        self.inv_ok = 1e6 / libsize[self.ok].astype(np.float64)
        self.inv_test = 1e6 / libsize[sets.test].astype(np.float64)
        self.test_codes, self.test_comp = pd.factorize(world.wells.compound[sets.test], sort=True)
        self.test_n = np.bincount(self.test_codes).astype(np.float64)
        self.all_w = np.concatenate([self.ok, sets.test])
        self.inv_all = 1e6 / libsize[self.all_w].astype(np.float64)
        self.keep_genes: list[np.ndarray] = []
        self.test_sums: list[np.ndarray] = []
        self.test_abs_t: list[np.ndarray] = []

    def add(self, cnt: np.ndarray, g0: int, g1: int) -> None:
        """Take one batch of counts (all wells x genes [g0, g1))."""
        genes = self.world.genes
        self.ngenes3 += (cnt >= 3).sum(axis=1)
        self.mito += cnt[:, genes.mito[g0:g1]].sum(axis=1, dtype=np.int64)
        self.ribo += cnt[:, genes.ribo[g0:g1]].sum(axis=1, dtype=np.int64)
        mean_cpm = (cnt[self.ok].T.astype(np.float64) @ self.inv_ok) / len(self.ok)
        passed = mean_cpm >= 1.0
        self.keep_genes.append(g0 + np.flatnonzero(passed))
        lt = np.log2(cnt[self.test_w][:, passed].astype(np.float64) * self.inv_test[:, None] + 1.0)
        sums = np.zeros((len(self.test_comp), int(passed.sum())))
        np.add.at(sums, self.test_codes, lt)
        mean_p = sums / self.test_n[:, None]
        self.test_sums.append(mean_p)
        ss = np.zeros_like(sums)
        np.add.at(ss, self.test_codes, (lt - mean_p[self.test_codes]) ** 2)
        var_p = ss / np.maximum(self.test_n - 1.0, 1.0)[:, None]
        la = np.log2(cnt[self.all_w][:, passed].astype(np.float64) * self.inv_all[:, None] + 1.0)
        t = t_vs_rest(mean_p, var_p, self.test_n, la.sum(0), (la * la).sum(0), len(self.all_w))
        self.test_abs_t.append(np.abs(t))

    def truth(self) -> Truth:
        """The scored genes, test truth and test weights once every batch is in."""
        return Truth(
            scored=np.concatenate(self.keep_genes),
            test_comp=self.test_comp,
            test_expr=np.hstack(self.test_sums),
            test_weights=minmax_square_normalize(np.hstack(self.test_abs_t)),
        )
