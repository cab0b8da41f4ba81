"""K-fold splits over compounds: scaffold-grouped (the honest default) or random.

A scaffold split keeps every Bemis-Murcko scaffold on one side, so a model is scored on chemotypes
it never saw, as it will be on the contest's unseen compounds. Identical molecules (same InChIKey
first block or canonical SMILES) are always kept in one group as well, so no split made here can
put one molecule on both sides (which :func:`drugcell.splits.audit.audit_split` would refuse).
"""

from __future__ import annotations

import heapq
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from drugcell.errors import DrugcellInputError

SplitKind = Literal["scaffold", "random"]


def _check_n_folds(n_folds: int, n_items: int, what: str) -> None:
    if int(n_folds) != n_folds or n_folds < 2:
        raise DrugcellInputError(f"n_folds must be an integer >= 2, got {n_folds!r}")
    if n_items < n_folds:
        raise DrugcellInputError(
            f"cannot make {n_folds} folds from {n_items} {what}: use fewer folds or more compounds"
        )


def group_kfold(groups: Sequence[object], n_folds: int = 5, seed: int = 0) -> np.ndarray:
    """Fold id per item with whole groups in one fold and fold sizes as even as the groups allow.

    Groups are shuffled by ``seed`` (so ties between equal-size groups are broken at random), then
    stably sorted by size, largest first, and each is placed into the currently smallest fold
    (ties: lowest fold id). Placing large groups first is the classic greedy that keeps folds
    balanced; the shuffle makes which small groups land together depend on the seed.
    """
    keys, inverse, sizes = np.unique(np.asarray(groups, dtype=object).astype(str),
                                     return_inverse=True, return_counts=True)
    _check_n_folds(n_folds, len(keys), "groups")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(keys))
    order = order[np.argsort(-sizes[order], kind="stable")]
    heap = [(0, f) for f in range(n_folds)]  # (current size, fold id): smallest fold on top
    fold_of_group = np.empty(len(keys), dtype=np.int64)
    for g in order:
        size, f = heapq.heappop(heap)
        fold_of_group[g] = f
        heapq.heappush(heap, (size + int(sizes[g]), f))
    return fold_of_group[inverse.ravel()]


def scaffold_kfold(scaffolds: Sequence[str], n_folds: int = 5, seed: int = 0) -> np.ndarray:
    """Fold id per compound, whole scaffold groups in one fold, balanced sizes, seed-deterministic.

    An empty scaffold ("" : acyclic molecule, or no structure) is not a shared chemotype, so each
    such compound forms its own group.
    """
    keys = [s if s else f"\x00single:{i}" for i, s in enumerate(scaffolds)]
    return group_kfold(keys, n_folds=n_folds, seed=seed)


def random_kfold(n: int, n_folds: int = 5, seed: int = 0) -> np.ndarray:
    """Fold id per item from a seeded permutation; fold sizes differ by at most one."""
    _check_n_folds(n_folds, n, "compounds")
    perm = np.random.default_rng(seed).permutation(n)
    folds = np.empty(n, dtype=np.int64)
    folds[perm] = np.arange(n) % n_folds
    return folds


@dataclass
class FoldAssignment:
    """Fold ids plus what was actually done, so the CV summary can say it plainly."""

    folds: np.ndarray                 # (C,) int64 fold id in [0, n_folds)
    split_requested: str              # "scaffold" or "random"
    split_used: str                   # differs from requested when scaffold had to fall back
    n_folds: int
    seed: int
    n_groups: int                     # groups the split respected (scaffolds + singletons)
    n_scaffolds: int                  # distinct non-empty scaffolds
    n_acyclic: int                    # parsed molecules with an empty scaffold
    n_unparsed: int                   # SMILES RDKit could not read (each its own group)
    warning: str | None = None        # set when the requested split could not be honoured
    fold_sizes: list[int] = field(default_factory=list)
    scaffolds: list[str] = field(default_factory=list, repr=False)  # per compound, "" if none
    fallback_reason: str | None = None  # why split_used differs from split_requested

    @property
    def split(self) -> str:
        """The split actually used, as every record states it: "scaffold", "random", or e.g.
        "random (fallback from scaffold: only 3 scaffold groups for 5 folds)", never the request."""
        if self.split_used == self.split_requested:
            return self.split_used
        return f"{self.split_used} (fallback from {self.split_requested}: {self.fallback_reason})"

    def to_dict(self) -> dict:
        """JSON-able summary (fold ids left out: they go to a table, not a manifest)."""
        return {
            "split": self.split, "split_requested": self.split_requested, "split_used": self.split_used,
            "n_folds": self.n_folds, "seed": self.seed, "n_groups": self.n_groups,
            "n_scaffolds": self.n_scaffolds, "n_acyclic": self.n_acyclic,
            "n_unparsed": self.n_unparsed, "fold_sizes": list(self.fold_sizes),
            "warning": self.warning,
        }

    def describe(self) -> str:
        """One line for logs and the CV summary."""
        line = (f"{self.n_folds}-fold {self.split} split (seed {self.seed}): fold sizes "
                f"{self.fold_sizes}; {self.n_scaffolds} scaffolds, {self.n_acyclic} acyclic, "
                f"{self.n_unparsed} unparsed")
        return line + (f". WARNING: {self.warning}" if self.warning else "")


def molecule_keys(smiles: Sequence[str]) -> tuple[list[str], list[str], np.ndarray]:
    """(identity key, scaffold, parsed-ok mask) per SMILES.

    The identity key is the InChIKey first block (connectivity), else the canonical SMILES; an
    unparseable entry gets a unique key so it never groups with anything. Keys are computed once
    per SMILES per process (:func:`drugcell.chem.keys.identity_keys`): blend's inner folds ask
    again for the compounds of every outer fold.
    """
    from drugcell.chem.keys import identity_keys

    keys, scaf, ok = identity_keys(smiles)
    ident = [k if ok[i] else f"\x00unparsed:{i}" for i, k in enumerate(keys)]
    return ident, scaf, ok


def _connected_groups(*labelings: Sequence[str]) -> list[str]:
    """Group id per item: items sharing a label in any labeling end in one group (union-find)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(labelings[0])
    rows, cols, offset = [], [], n
    for labels in labelings:
        _, inv = np.unique(np.asarray(labels, dtype=str), return_inverse=True)
        rows.append(np.arange(n))
        cols.append(offset + inv.ravel())
        offset += int(inv.max()) + 1 if n else 0
    r, c = np.concatenate(rows), np.concatenate(cols)
    graph = coo_matrix((np.ones(len(r), dtype=np.int8), (r, c)), shape=(offset, offset))
    _, comp = connected_components(graph, directed=False)
    return [f"g{k}" for k in comp[:n]]


def make_folds(
    smiles: Sequence[str], split: SplitKind = "scaffold", n_folds: int = 5, seed: int = 0,
) -> FoldAssignment:
    """Assign compounds to folds by scaffold (default) or at random, never splitting a molecule.

    Fewer scaffold groups than folds cannot make a scaffold split: random folds are used instead,
    with a :func:`warnings.warn`, the ``warning`` field set so the CV summary prints it, and
    :attr:`FoldAssignment.split` saying "random (fallback from scaffold: ...)" wherever the run
    records its split (summary.md, audit.json, manifest.json, ``CVResult.split``).
    """
    if split not in ("scaffold", "random"):
        raise DrugcellInputError(f"split must be 'scaffold' or 'random', got {split!r}")
    n = len(smiles)
    _check_n_folds(n_folds, n, "compounds")
    ident, scaf, ok = molecule_keys(smiles)
    n_scaffolds = len({s for s in scaf if s})
    n_acyclic = int(sum(1 for i, s in enumerate(scaf) if ok[i] and not s))
    n_unparsed = int((~ok).sum())
    # A scaffold group is its scaffold; a compound without one groups only with its own duplicates.
    # Stereoisomers share an InChIKey first block but may differ in scaffold stereo: merge both.
    by_scaffold = [f"scaf:{s}" if s else ident[i] for i, s in enumerate(scaf)]
    scaffold_groups = _connected_groups(by_scaffold, ident)
    n_scaffold_groups = len(set(scaffold_groups))
    warning = reason = None
    used: str = split
    if split == "scaffold" and n_scaffold_groups < n_folds:
        used = "random"
        reason = f"only {n_scaffold_groups} scaffold groups for {n_folds} folds"
        warning = (f"{reason}: fell back to a RANDOM split, so scores measure near-neighbour interpolation, "
                   f"not unseen scaffolds")
        warnings.warn(warning, stacklevel=2)
    groups = scaffold_groups if used == "scaffold" else ident
    n_groups = len(set(groups))
    if n_groups < n_folds:
        raise DrugcellInputError(
            f"only {n_groups} distinct molecules for {n_folds} folds: use fewer folds"
        )
    folds = group_kfold(groups, n_folds=n_folds, seed=seed)
    return FoldAssignment(
        folds=folds, split_requested=split, split_used=used, n_folds=int(n_folds), seed=int(seed),
        n_groups=n_groups, n_scaffolds=n_scaffolds, n_acyclic=n_acyclic, n_unparsed=n_unparsed,
        warning=warning, fold_sizes=np.bincount(folds, minlength=n_folds).tolist(),
        scaffolds=scaf, fallback_reason=reason,
    )
