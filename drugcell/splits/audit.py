"""Leak audit of a train/test split, run before any fit.

A molecule on both sides of a split turns a structure-to-response benchmark into a lookup, so such
a split is refused outright (:class:`LeakError`). Otherwise the report says how "unseen" the test
side is: how many test compounds share a scaffold with training, and how close each one's nearest
training neighbour is (Morgan/Tanimoto), which is what retrieval-style predictors live on.

Same molecule = same full InChIKey, same canonical (isomeric) SMILES or same compound id; same
skeleton = same InChIKey first block only (stereoisomers, E/Z isomers). CV folds refuse both. A
fixed test set (``drugcell submit``) may hold a stereoisomer of a training compound, which is a
different compound: ``allow_stereo=True`` lets such pairs through, listed in ``stereo_overlaps``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from drugcell.errors import DrugcellInputError

QUANTILES = (0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0)
QUANTILE_NAMES = ("min", "q05", "q25", "median", "q75", "q95", "max")
SIMILARITY_THRESHOLDS = (0.4, 0.7)


class LeakError(DrugcellInputError):
    """The same molecule (or compound id) sits on both sides of a split."""


@dataclass
class AuditReport:
    """What a split looks like from the test side; JSON-able through :meth:`to_dict`."""

    name: str
    n_train: int
    n_test: int
    n_unparsed_train: int
    n_unparsed_test: int
    n_test_scaffold_in_train: int       # test compounds whose (ring) scaffold is also in train
    frac_test_scaffold_in_train: float  # of all test compounds
    n_test_acyclic: int                 # parsed test compounds without a ring scaffold
    nearest_similarity: dict[str, float]  # quantiles of each test compound's max Tanimoto to train
    frac_nearest_ge: dict[str, float]     # fraction of test compounds with nearest >= threshold
    duplicates: list[dict] = field(default_factory=list)  # only when on_duplicate="report"
    stereo_overlaps: list[dict] = field(default_factory=list)  # first-block-only pairs let through (allow_stereo)

    def to_dict(self) -> dict:
        return {
            "name": self.name, "n_train": self.n_train, "n_test": self.n_test,
            "n_unparsed_train": self.n_unparsed_train, "n_unparsed_test": self.n_unparsed_test,
            "n_test_scaffold_in_train": self.n_test_scaffold_in_train,
            "frac_test_scaffold_in_train": self.frac_test_scaffold_in_train,
            "n_test_acyclic": self.n_test_acyclic,
            "nearest_similarity": dict(self.nearest_similarity),
            "frac_nearest_ge": dict(self.frac_nearest_ge),
            "n_duplicates": len(self.duplicates), "duplicates": list(self.duplicates),
            "n_stereo_overlaps": len(self.stereo_overlaps), "stereo_overlaps": list(self.stereo_overlaps),
        }

    def describe(self) -> str:
        """One line for logs: sizes, scaffold overlap, nearest-neighbour similarity."""
        q = self.nearest_similarity
        ge = ", ".join(f">={t}: {v:.1%}" for t, v in self.frac_nearest_ge.items())
        dup = f"; {len(self.duplicates)} DUPLICATES across the split" if self.duplicates else ""
        if self.stereo_overlaps:
            n_test = len({d["test_id"] for d in self.stereo_overlaps})
            dup += (f"; {n_test} test compound(s) share only the InChIKey first block (stereo/E-Z isomers) with "
                    f"{len(self.stereo_overlaps)} training pair(s), allowed")
        return (f"{self.name}: {self.n_train} train / {self.n_test} test; "
                f"{self.n_test_scaffold_in_train} test compounds "
                f"({self.frac_test_scaffold_in_train:.1%}) share a scaffold with train; "
                f"nearest-train Tanimoto median {q['median']:.2f} "
                f"[q05 {q['q05']:.2f}, q95 {q['q95']:.2f}] ({ge}); "
                f"unparsed {self.n_unparsed_train} train / {self.n_unparsed_test} test{dup}")


@dataclass
class _ChemView:
    """Everything the audit needs about a set of compounds, computed once (subset per fold)."""

    ids: list[str]
    smiles: list[str]
    ok: np.ndarray                 # parsed
    ident: list[list[str]]         # identity keys: full InChIKey, canonical SMILES, InChIKey first block
    scaffold: list[str]            # "" when acyclic or unparsed
    bits: np.ndarray               # Morgan bits (zero rows when unparsed)
    inchikey: list[str]            # full InChIKey ("" when unparsed or InChI failed)

    @classmethod
    def build(cls, smiles: Sequence, ids: Sequence) -> _ChemView:
        """Each distinct SMILES string is parsed once per process (:mod:`drugcell.chem.keys`, shared
        with the scaffold folds made just before; CV audits every fold, and submit audits the same
        training set again) and its Morgan bits come from the feature cache the kNN predictors read."""
        from drugcell.chem.features import featurize
        from drugcell.chem.keys import molecule_facts

        text = [x if isinstance(x, str) else "" for x in smiles]  # None/NaN parse as "empty"
        facts = molecule_facts(text)
        ident = [[*([f"inchikey:{f.inchikey}"] if f.inchikey else []),
                  *([f"canonical:{f.canonical}"] if f.canonical else []),
                  *([f"inchikey-block1:{f.block}"] if f.block else [])] if f.ok else [] for f in facts]
        bits, _ = featurize(text, "morgan_bits")
        return cls([str(x) for x in ids], text, np.array([f.ok for f in facts], dtype=bool), ident,
                   [f.scaffold for f in facts], np.asarray(bits, dtype=np.uint8),
                   [f.inchikey if f.ok else "" for f in facts])

    def subset(self, idx: np.ndarray) -> _ChemView:
        idx = np.asarray(idx)
        pick = idx.tolist()
        return _ChemView([self.ids[i] for i in pick], [self.smiles[i] for i in pick], self.ok[idx],
                         [self.ident[i] for i in pick], [self.scaffold[i] for i in pick],
                         self.bits[idx], [self.inchikey[i] for i in pick])


#: how a pair matched, strongest first; only "inchikey-block1" alone is a stereo overlap
MATCH_KINDS = ("inchikey", "canonical", "compound id", "inchikey-block1")


def find_duplicates(train: _ChemView, test: _ChemView) -> list[dict]:
    """Every (train, test) pair that is one molecule, one skeleton (InChIKey first block), or one
    compound id on both sides; ``stereo_only`` marks pairs that share the first block and nothing else."""
    by_key: dict[str, list[int]] = {}
    for i, ks in enumerate(train.ident):
        for k in ks:
            by_key.setdefault(k, []).append(i)
    found: dict[tuple[int, int], set[str]] = {}
    for j, ks in enumerate(test.ident):
        for k in ks:
            for i in by_key.get(k, ()):
                found.setdefault((i, j), set()).add(k.split(":", 1)[0])
    train_pos: dict[str, list[int]] = {}
    for i, t in enumerate(train.ids):
        train_pos.setdefault(t, []).append(i)
    for j, t in enumerate(test.ids):
        for i in train_pos.get(t, ()):
            found.setdefault((i, j), set()).add("compound id")
    return [{"train_id": train.ids[i], "test_id": test.ids[j],
             "matched_on": min(kinds, key=MATCH_KINDS.index), "stereo_only": kinds == {"inchikey-block1"},
             "train_smiles": train.smiles[i], "test_smiles": test.smiles[j],
             "train_inchikey": train.inchikey[i], "test_inchikey": test.inchikey[j]}
            for (i, j), kinds in sorted(found.items())]


def nearest_train_similarity(train_bits: np.ndarray, test_bits: np.ndarray) -> np.ndarray:
    """Max Tanimoto of each test row to any train row, one bounded block at a time."""
    from drugcell.chem.fingerprints import iter_tanimoto_blocks

    out = np.zeros(len(test_bits), dtype=np.float32)
    if len(train_bits) == 0 or len(test_bits) == 0:
        return out
    for start, stop, sims in iter_tanimoto_blocks(test_bits, train_bits):
        out[start:stop] = sims.max(axis=1)
    return out


def audit_split(
    train_smiles: Sequence[str], test_smiles: Sequence[str],
    train_ids: Sequence[str], test_ids: Sequence[str], *, name: str = "fold 1",
    on_duplicate: Literal["raise", "report"] = "raise", allow_stereo: bool = False, stereo_flag: str | None = None,
) -> AuditReport:
    """Refuse a split with one molecule on both sides; otherwise report how unseen the test side is.

    Same molecule = same full InChIKey or canonical SMILES, or the same compound id; a pair that
    shares only the InChIKey first block (stereoisomers, E/Z isomers) is refused as well unless
    ``allow_stereo`` (then it is listed in ``stereo_overlaps``); ``stereo_flag`` names the option
    that allows it in the refusal. ``on_duplicate="report"`` lists every pair in the report instead
    of raising (for a caller that only wants to show the overlap). Unparseable SMILES cannot be
    compared; they are counted and left out of the similarity figures.
    """
    for side, smi, ids in (("train", train_smiles, train_ids), ("test", test_smiles, test_ids)):
        if len(smi) != len(ids):
            raise DrugcellInputError(
                f"{name}: {len(smi)} {side} SMILES but {len(ids)} {side} compound ids; pass one id "
                f"per SMILES")
    return _audit(_ChemView.build(train_smiles, train_ids), _ChemView.build(test_smiles, test_ids),
                  name=name, on_duplicate=on_duplicate, allow_stereo=allow_stereo, stereo_flag=stereo_flag)


def audit_folds(
    smiles: Sequence[str], ids: Sequence[str], folds: np.ndarray, *,
    on_duplicate: Literal["raise", "report"] = "raise",
) -> list[AuditReport]:
    """:func:`audit_split` for every fold (test = fold k, train = the rest), parsing only once.

    Reports are named "fold 1", "fold 2", ... (1-based, for people); the first fold with a leak
    raises :class:`LeakError` unless ``on_duplicate="report"``.
    """
    folds = np.asarray(folds)
    if len(smiles) != len(ids) or len(ids) != len(folds):
        raise DrugcellInputError(
            f"audit_folds: {len(smiles)} SMILES, {len(ids)} ids and {len(folds)} fold ids; pass "
            f"one of each per compound")
    view = _ChemView.build(smiles, ids)
    reports = []
    for k in np.unique(folds):
        test = folds == k
        reports.append(_audit(view.subset(np.flatnonzero(~test)), view.subset(np.flatnonzero(test)),
                              name=f"fold {int(k) + 1}", on_duplicate=on_duplicate))
    return reports


def _refuse(name: str, dups: list[dict], stereo_flag: str | None) -> None:
    """The LeakError naming every pair (the first 10): molecules first, then stereo overlaps."""
    dups = sorted(dups, key=lambda d: d["stereo_only"])
    shown = "; ".join(
        f"train {d['train_id']} ({d['train_smiles']}, {d['train_inchikey'] or 'no InChIKey'}) and test "
        f"{d['test_id']} ({d['test_smiles']}, {d['test_inchikey'] or 'no InChIKey'}) share the "
        + ("InChIKey first block only (inchikey-block1: stereo/E-Z isomers)" if d["stereo_only"]
           else f"same {d['matched_on']}")
        for d in dups[:10])
    more = f" (+{len(dups) - 10} more)" if len(dups) > 10 else ""
    fix = ("Remove the duplicates from one side, or build folds with drugcell.splits.folds.make_folds, which "
           "keeps identical molecules together")
    n_stereo = sum(d["stereo_only"] for d in dups)
    if stereo_flag:  # a fixed test set (submit): folds are not the remedy
        fix = ("Remove the training molecules from the test set (a model cannot be scored on compounds it was "
               "fitted on); a pair that shares only the compound id names two different molecules: one of the "
               "files has the wrong id, so fix it there")
    if stereo_flag and n_stereo == len(dups):
        fix = (f"These are stereoisomers (or E/Z isomers) of training compounds, not the same molecules: pass "
               f"{stereo_flag} to submit them (counted in the audit and the manifest)")
    elif stereo_flag and n_stereo:
        fix = (f"Remove the same molecules from the test set; the {n_stereo} pair(s) sharing only the InChIKey "
               f"first block are stereoisomers, which {stereo_flag} allows")
    raise LeakError(f"{name}: {len(dups)} compound pair(s) sit on both sides of the split: {shown}{more}. {fix}")


def _audit(tr: _ChemView, te: _ChemView, *, name: str, on_duplicate: str, allow_stereo: bool = False,
           stereo_flag: str | None = None) -> AuditReport:
    if on_duplicate not in ("raise", "report"):
        raise DrugcellInputError(f"on_duplicate must be 'raise' or 'report', got {on_duplicate!r}")
    found = find_duplicates(tr, te)
    stereo = [d for d in found if d["stereo_only"]] if allow_stereo else []
    dups = [d for d in found if not (allow_stereo and d["stereo_only"])]
    if dups and on_duplicate == "raise":
        _refuse(name, dups, stereo_flag)

    train_scaffolds = {s for s in tr.scaffold if s}
    n_in = sum(1 for s in te.scaffold if s and s in train_scaffolds)
    n_acyclic = int(sum(1 for j, s in enumerate(te.scaffold) if te.ok[j] and not s))
    nearest = nearest_train_similarity(tr.bits[tr.ok], te.bits[te.ok])
    if len(nearest):
        qs = np.quantile(nearest.astype(np.float64), QUANTILES)
        quant = {k: float(v) for k, v in zip(QUANTILE_NAMES, qs)}
        frac = {str(t): float(np.mean(nearest >= t)) for t in SIMILARITY_THRESHOLDS}
    else:
        quant = {k: float("nan") for k in QUANTILE_NAMES}
        frac = {str(t): float("nan") for t in SIMILARITY_THRESHOLDS}
    n_test = len(te.ids)
    return AuditReport(
        name=name, n_train=len(tr.ids), n_test=n_test,
        n_unparsed_train=int((~tr.ok).sum()), n_unparsed_test=int((~te.ok).sum()),
        n_test_scaffold_in_train=n_in, frac_test_scaffold_in_train=n_in / n_test if n_test else 0.0,
        n_test_acyclic=n_acyclic, nearest_similarity=quant, frac_nearest_ge=frac,
        duplicates=dups if on_duplicate == "report" else [], stereo_overlaps=stereo,
    )
