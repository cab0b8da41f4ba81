"""Scaffold/random folds and the leak audit, checked against plain RDKit and hand counts."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
from rdkit import Chem, DataStructs
from rdkit.Chem import rdFingerprintGenerator
from rdkit.Chem.Scaffolds import MurckoScaffold

from drugcell.errors import DrugcellInputError
from drugcell.splits.audit import LeakError, audit_folds, audit_split
from drugcell.splits.folds import group_kfold, make_folds, random_kfold, scaffold_kfold

RINGS = ["c1ccccc1", "c1ccncc1", "C1CCCCC1", "c1ccc2ccccc2c1", "C1CCNCC1", "c1ccoc1", "c1ccsc1",
         "C1CCOC1", "c1cnccn1", "C1CCC1", "c1ccc2[nH]ccc2c1", "C1CC1"]
SUBS = ["C", "CC", "O", "N", "Cl", "F", "Br", "CCC", "OC", "C(=O)O", "N#C", "CO"]


def _library(n_per_ring: list[int]) -> list[str]:
    """Substituted ring systems: ring i gets n_per_ring[i] different substituents."""
    out = []
    for ring, k in zip(RINGS, n_per_ring):
        out += [sub + ring for sub in SUBS[:k]]
    return out


def _rdkit_scaffold(smi: str) -> str:
    mol = Chem.MolFromSmiles(smi)
    core = MurckoScaffold.GetScaffoldForMol(mol)
    return Chem.MolToSmiles(core, isomericSmiles=False) if core.GetNumAtoms() else ""


# ------------------------------------------------------------------ pure fold arithmetic
def test_greedy_balancing_by_hand():
    # Groups of 5, 3, 2, 2, 1, 1 into 3 folds, largest first into the smallest fold:
    # 5 -> A, 3 -> B, 2 -> C, 2 -> C (4), 1 -> B (4), 1 -> B or C (5): sizes {4, 5, 5}.
    groups = ["a"] * 5 + ["b"] * 3 + ["c"] * 2 + ["d"] * 2 + ["e"] + ["f"]
    for seed in range(5):
        folds = group_kfold(groups, n_folds=3, seed=seed)
        assert sorted(np.bincount(folds, minlength=3)) == [4, 5, 5]
        for g in set(groups):
            assert len({folds[i] for i, x in enumerate(groups) if x == g}) == 1
    # The 5-group sits alone with... nothing else: it is placed first into an empty fold and no
    # other group can join it while another fold is smaller.
    f = group_kfold(groups, n_folds=3, seed=0)
    assert np.sum(f == f[0]) == 5


def test_scaffold_kfold_groups_balance_and_determinism():
    rng = np.random.default_rng(0)
    sizes = rng.integers(1, 15, size=60)
    scaffolds = [f"S{i}" for i, s in enumerate(sizes) for _ in range(s)] + [""] * 40
    order = rng.permutation(len(scaffolds))
    scaffolds = [scaffolds[i] for i in order]
    folds = scaffold_kfold(scaffolds, n_folds=5, seed=1)
    for s in set(scaffolds) - {""}:
        assert len({folds[i] for i, x in enumerate(scaffolds) if x == s}) == 1
    counts = np.bincount(folds, minlength=5)
    assert counts.max() - counts.min() <= sizes.max()  # greedy guarantee
    assert counts.max() - counts.min() <= 1  # here: 40 singletons fill the gaps exactly
    # acyclic ("" scaffold) compounds are singletons, spread over folds, not one giant group
    acyclic = [folds[i] for i, x in enumerate(scaffolds) if x == ""]
    assert len(set(acyclic)) > 1
    np.testing.assert_array_equal(folds, scaffold_kfold(scaffolds, n_folds=5, seed=1))
    assert not np.array_equal(folds, scaffold_kfold(scaffolds, n_folds=5, seed=2))


def test_random_kfold_sizes_and_seed():
    f = random_kfold(23, n_folds=5, seed=3)
    assert sorted(np.bincount(f)) == [4, 4, 5, 5, 5]
    np.testing.assert_array_equal(f, random_kfold(23, n_folds=5, seed=3))
    assert not np.array_equal(f, random_kfold(23, n_folds=5, seed=4))
    with pytest.raises(DrugcellInputError, match="cannot make 5 folds from 3"):
        random_kfold(3, n_folds=5)
    with pytest.raises(DrugcellInputError, match="n_folds"):
        random_kfold(10, n_folds=1)


# ------------------------------------------------------------------ make_folds with chemistry
def test_make_folds_scaffold_split_never_shares_a_scaffold():
    smiles = _library([12, 9, 7, 6, 5, 4, 4, 3, 2, 2, 1, 1]) + ["CCCC", "CCOCC", "NCCO"]
    fa = make_folds(smiles, split="scaffold", n_folds=4, seed=0)
    assert fa.split_used == "scaffold" and fa.warning is None
    assert fa.n_scaffolds == 12 and fa.n_acyclic == 3 and fa.n_unparsed == 0
    scaf = [_rdkit_scaffold(s) for s in smiles]
    assert fa.scaffolds == scaf
    for a, b in itertools.combinations(range(4), 2):
        sa = {scaf[i] for i in np.flatnonzero(fa.folds == a)} - {""}
        sb = {scaf[i] for i in np.flatnonzero(fa.folds == b)} - {""}
        assert not sa & sb
    assert fa.fold_sizes == np.bincount(fa.folds).tolist()
    assert max(fa.fold_sizes) - min(fa.fold_sizes) <= 12
    np.testing.assert_array_equal(fa.folds, make_folds(smiles, "scaffold", 4, seed=0).folds)
    # the split is clean: the audit finds no duplicates, and no test scaffold is seen in train
    for rep in audit_folds(smiles, [f"id{i}" for i in range(len(smiles))], fa.folds):
        assert rep.n_test_scaffold_in_train == 0


def test_too_few_scaffolds_falls_back_to_random_loudly():
    smiles = _library([6, 6])  # two scaffolds (benzene, pyridine), 12 compounds, 5 folds
    with pytest.warns(UserWarning, match="RANDOM split"):
        fa = make_folds(smiles, split="scaffold", n_folds=5, seed=0)
    assert fa.split_requested == "scaffold" and fa.split_used == "random"
    assert "only 2 scaffold groups for 5 folds" in fa.warning
    assert "WARNING" in fa.describe()
    assert sorted(fa.fold_sizes) == [2, 2, 2, 3, 3]
    assert fa.to_dict()["warning"] == fa.warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a random split asked for is not a fallback: no warning
        assert make_folds(smiles, split="random", n_folds=5, seed=0).warning is None


def test_duplicates_unparsed_and_tautomers_are_grouped_correctly():
    smiles = (_library([3, 3, 3, 3, 3, 3])
              + ["CCO", "OCC",                      # one acyclic molecule written two ways
                 "C[C@H](N)C(=O)O", "C[C@@H](N)C(=O)O",  # enantiomers: same InChIKey block 1
                 "Oc1ccccn1", "O=c1cccc[nH]1"]       # tautomers: one InChIKey, two scaffolds
              + ["not a smiles", "C1CC", "", "xx"])  # four unparseable, each its own group
    n = len(smiles)
    for split in ("scaffold", "random"):
        for seed in range(4):
            fa = make_folds(smiles, split=split, n_folds=5, seed=seed)
            f = fa.folds
            assert f[n - 10] == f[n - 9] and f[n - 8] == f[n - 7] and f[n - 6] == f[n - 5]
            assert fa.n_unparsed == 4
            audit_folds(smiles, [f"id{i}" for i in range(n)], f)  # must not raise
    # unparseable entries are singletons: with 4 of them alone in 4 folds they spread out
    f = group_kfold([f"u{i}" for i in range(4)], n_folds=4, seed=0)
    assert sorted(f) == [0, 1, 2, 3]


# ------------------------------------------------------------------ audit
def test_audit_refuses_a_planted_duplicate_and_names_both_ids():
    train = ["CC(=O)Oc1ccccc1C(=O)O", "c1ccccc1CCO", "CCCCCC(=O)O"]
    test = ["Cc1ccncc1", "OC(=O)c1ccccc1OC(C)=O"]  # aspirin again, written differently
    assert train[0] != test[1]
    with pytest.raises(LeakError) as exc:
        audit_split(train, test, ["ASP-1", "PEA", "HEX"], ["PIC", "ASP-2"], name="fold 3")
    msg = str(exc.value)
    assert "fold 3" in msg and "ASP-1" in msg and "ASP-2" in msg
    assert isinstance(exc.value, DrugcellInputError)
    # stereoisomers share the InChIKey first block: also refused
    with pytest.raises(LeakError, match="L-ALA.*D-ALA.*inchikey"):
        audit_split(["C[C@H](N)C(=O)O"], ["C[C@@H](N)C(=O)O"], ["L-ALA"], ["D-ALA"])
    # the same compound id on both sides is a leak whatever the SMILES say
    with pytest.raises(LeakError, match="compound id"):
        audit_split(["CCO"], ["c1ccccc1"], ["X7"], ["X7"])
    rep = audit_split(train, test, ["ASP-1", "PEA", "HEX"], ["PIC", "ASP-2"],
                      on_duplicate="report")
    assert [(d["train_id"], d["test_id"]) for d in rep.duplicates] == [("ASP-1", "ASP-2")]
    assert rep.to_dict()["n_duplicates"] == 1


def test_audit_report_scaffold_overlap_and_similarity_by_hand():
    train = ["c1ccccc1CCO", "Cc1ccncc1", "CCCCCC(=O)O", "O=C(O)C1CCCCC1"]
    test = ["Oc1ccccc1",        # benzene scaffold: in train
            "c1ccc2ccccc2c1",   # naphthalene: not in train
            "CCCCO",            # acyclic
            "C1CCNCC1",         # piperidine: not in train
            "not_a_smiles"]     # unparsed
    rep = audit_split(train, test, list("ABCD"), list("VWXYZ"))
    assert rep.n_test_scaffold_in_train == 1
    assert rep.frac_test_scaffold_in_train == pytest.approx(1 / 5)
    assert rep.n_test_acyclic == 1
    assert (rep.n_unparsed_train, rep.n_unparsed_test) == (0, 1)
    # nearest-train Tanimoto with plain RDKit (radius 2, 2048 bits), parsed test compounds only
    gen = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048)
    fp_tr = [gen.GetFingerprint(Chem.MolFromSmiles(s)) for s in train]
    nearest = [max(DataStructs.BulkTanimotoSimilarity(gen.GetFingerprint(Chem.MolFromSmiles(s)),
                                                      fp_tr)) for s in test[:4]]
    q = np.quantile(nearest, [0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0])
    got = [rep.nearest_similarity[k] for k in ("min", "q05", "q25", "median", "q75", "q95", "max")]
    np.testing.assert_allclose(got, q, atol=1e-6)
    assert rep.frac_nearest_ge["0.4"] == pytest.approx(np.mean(np.array(nearest) >= 0.4))
    assert rep.frac_nearest_ge["0.7"] == pytest.approx(np.mean(np.array(nearest) >= 0.7))
    d = rep.to_dict()
    assert d["n_test"] == 5 and d["n_duplicates"] == 0
    line = rep.describe()
    assert "fold 1" in line and "1 test compounds (20.0%) share a scaffold" in line
    assert "\n" not in line


def test_audit_refuses_mismatched_ids():
    with pytest.raises(DrugcellInputError, match="2 train SMILES but 1 train compound ids"):
        audit_split(["CCO", "CCC"], ["CCN"], ["a"], ["b"])
