"""Chemistry: parsing verdicts, exact Tanimoto vs RDKit, top-k, scaffolds, descriptors, cache."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from rdkit import Chem, DataStructs

from drugcell.chem import descriptors as desc
from drugcell.chem import features, fingerprints
from drugcell.chem.descriptors import DescriptorStandardizer, compute_descriptors, descriptor_names
from drugcell.chem.features import cache_stats, clear_cache, featurize
from drugcell.chem.fingerprints import (
    morgan_bits,
    morgan_counts,
    morgan_generator,
    rdkit_bitvects,
    tanimoto,
    top_k_similar,
)
from drugcell.chem.molecules import inchikey_first_block, parse_smiles
from drugcell.chem.scaffolds import murcko_scaffold
from drugcell.errors import DrugcellInputError
from tests.conftest import require_shared

# Small drug-like set (no shared data needed); includes a duplicate spelling and a failure.
INLINE = [
    "CC(=O)Oc1ccccc1C(=O)O",                 # aspirin
    "CC(C)Cc1ccc(C(C)C(=O)O)cc1",            # ibuprofen
    "CN1C=NC2=C1C(=O)N(C(=O)N2C)C",          # caffeine
    "CN(C)CCOC(c1ccccc1)c1ccccc1",           # diphenhydramine
    "OC(=O)c1ccccc1O",                       # salicylic acid
    "c1ccc2ccccc2c1",                        # naphthalene
    "CCO",                                   # ethanol
    "OCC",                                   # ethanol, other spelling
    "C[C@H](N)C(=O)O",                       # L-alanine
    "C[C@@H](N)C(=O)O",                      # D-alanine
    "Clc1ccc(cc1)C(c1ccccc1)N1CCN(CC1)CCOCC(=O)O",  # cetirizine
    "not a smiles",                          # failure -> empty fingerprint
    "C",                                     # methane: a 1-bit fingerprint
]


def _rdkit_matrix(a_fps, b_fps) -> np.ndarray:
    return np.array([DataStructs.BulkTanimotoSimilarity(f, b_fps) for f in a_fps], dtype=np.float64)


# ---------------------------------------------------------------- parsing


def test_failures_are_counted_reported_and_never_dropped(capfd):
    smiles = ["CCO", "", None, float("nan"), "C1CC(", "N(C)(C)(C)(C)C", 5, pd.NA, "  c1ccccc1  "]
    capfd.readouterr()
    p = parse_smiles(smiles)
    out, err = capfd.readouterr()
    assert err == "" and out == ""             # RDKit's log was captured, not printed
    assert len(p.mols) == len(p.canonical) == len(p.inchikey) == len(p.ok) == len(smiles)
    assert p.ok.tolist() == [True, False, False, False, False, False, False, False, True]
    assert sorted(p.errors) == [1, 2, 3, 4, 5, 6, 7]
    assert p.n_failed == 7
    assert p.errors[1] == "empty SMILES"
    assert "missing" in p.errors[2] and "missing" in p.errors[3] and "missing" in p.errors[7]
    assert "syntax error" in p.errors[4]
    assert "valence" in p.errors[5].lower()
    assert "not a string" in p.errors[6]
    for i in p.errors:
        assert p.mols[i] is None and p.canonical[i] == "" and p.inchikey[i] == ""
    assert p.canonical[8] == "c1ccccc1"
    ids = [f"cpd{i}" for i in range(len(smiles))]
    line = p.summary(ids=ids, max_listed=3)
    assert line.startswith("7 of 9 SMILES failed to parse: ids cpd1, cpd2, cpd3 (+4 more)")
    assert parse_smiles(["C", "CC"]).summary() == "all 2 SMILES parsed"


def test_canonical_smiles_and_inchikey_match_rdkit():
    p = parse_smiles(["OCC", "CCO", "CC(=O)Oc1ccccc1C(=O)O"])
    assert p.canonical[0] == p.canonical[1] == "CCO"
    # Known InChIKeys (ethanol, aspirin), and RDKit's own function.
    assert p.inchikey[0] == "LFQSCWFLJHTTHZ-UHFFFAOYSA-N"
    assert p.inchikey[2] == "BSYNRYMUTXBXSQ-UHFFFAOYSA-N"
    assert p.inchikey[2] == Chem.MolToInchiKey(Chem.MolFromSmiles("O=C(O)c1ccccc1OC(C)=O"))
    assert inchikey_first_block("BSYNRYMUTXBXSQ-UHFFFAOYSA-N") == "BSYNRYMUTXBXSQ"
    assert inchikey_first_block("") == ""
    # Enantiomers: different full keys, same first block.
    ala = parse_smiles(["C[C@H](N)C(=O)O", "C[C@@H](N)C(=O)O"]).inchikey
    assert ala[0] != ala[1]
    assert inchikey_first_block(ala[0]) == inchikey_first_block(ala[1])


def test_inchikeys_match_contest_file():
    path = require_shared("vcpi_contest_public", "test_compounds.csv")
    df = pd.read_csv(path)
    p = parse_smiles(df["smiles"].tolist())
    assert p.ok.all()
    assert p.inchikey == df["inchi_key"].tolist()


# ---------------------------------------------------------------- fingerprints + Tanimoto


def test_morgan_bits_and_counts_match_rdkit():
    bits = morgan_bits(INLINE)
    counts = morgan_counts(INLINE)
    assert bits.dtype == np.uint8 and bits.shape == (len(INLINE), 2048)
    assert counts.dtype == np.float32 and counts.shape == (len(INLINE), 2048)
    gen = morgan_generator(2, 2048)
    for i, s in enumerate(INLINE):
        mol = Chem.MolFromSmiles(s) if s != "not a smiles" else None
        if mol is None:
            assert not bits[i].any() and not counts[i].any()  # zero row for the failure
            continue
        assert np.flatnonzero(bits[i]).tolist() == sorted(gen.GetFingerprint(mol).GetOnBits())
        nz = gen.GetCountFingerprint(mol).GetNonzeroElements()
        assert {int(j): int(counts[i, j]) for j in np.flatnonzero(counts[i])} == nz


def test_tanimoto_by_hand():
    a = np.array([[1, 1, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1]], dtype=np.uint8)
    b = np.array([[1, 0, 1, 0], [0, 0, 0, 0], [1, 1, 0, 0]], dtype=np.uint8)
    expected = np.array([
        [1 / 3, 0.0, 1.0],     # |{0}| / |{0,1,2}|; vs empty = 0/2; identical
        [0.0, 0.0, 0.0],       # empty vs empty is 0/0, defined as 0 (as RDKit)
        [2 / 4, 0.0, 2 / 4],
    ])
    for method in ("float32", "int8"):
        if method == "int8" and not fingerprints._int8_gemm_works():
            continue
        got = tanimoto(a, b, device="cpu", dtype=np.float64, method=method)
        np.testing.assert_array_equal(got, expected)
        got = tanimoto(a, b, device="cpu", method=method)
        np.testing.assert_array_equal(got, expected.astype(np.float32))
    e = DataStructs.ExplicitBitVect(4)
    assert DataStructs.BulkTanimotoSimilarity(e, [e]) == [0.0]   # RDKit's 0/0 really is 0
    with pytest.raises(ValueError, match="0/1"):
        tanimoto(np.array([[2, 0]]), np.array([[1, 0]]))
    with pytest.raises(ValueError, match="lengths differ"):
        tanimoto(np.zeros((1, 3)), np.zeros((1, 4)))


def _need(method: str) -> None:
    if method == "int8" and not fingerprints._int8_gemm_works():
        pytest.skip("torch._int_mm unavailable: the int8 kernel is not used here")


@pytest.mark.parametrize("method", ["float32", "int8"])
def test_tanimoto_equals_rdkit_bulk_inline(method):
    _need(method)
    bits = morgan_bits(INLINE)
    fps = rdkit_bitvects(INLINE)
    ref = _rdkit_matrix(fps, fps)
    # float64: RDKit's doubles exactly; float32: their float32 rounding exactly.
    kw = dict(device="cpu", method=method)
    np.testing.assert_array_equal(tanimoto(bits, dtype=np.float64, **kw), ref)
    np.testing.assert_array_equal(tanimoto(bits, **kw), ref.astype(np.float32))
    # Rectangular, bool input, tiny blocks: same numbers.
    sub = tanimoto(bits[:5].astype(bool), bits[3:], block_rows=2, **kw)
    np.testing.assert_array_equal(sub, ref[:5, 3:].astype(np.float32))
    assert ref[6, 7] == 1.0 and ref[11, 11] == 0.0   # duplicate spelling; empty fp vs itself


@pytest.mark.parametrize("method", ["float32", "int8"])
def test_tanimoto_equals_rdkit_bulk_real_molecules(method):
    _need(method)
    path = require_shared("vcpi_contest_public", "test_compounds.csv")
    smiles = pd.read_csv(path)["smiles"].tolist()[:600]
    p = parse_smiles(smiles, inchikey=False)
    bits = morgan_bits(p)
    fps = rdkit_bitvects(p)
    ref = _rdkit_matrix(fps[:300], fps)
    got = tanimoto(bits[:300], bits, block_rows=97, device="cpu", dtype=np.float64, method=method)
    np.testing.assert_array_equal(got, ref)
    got32 = tanimoto(bits[:300], bits, device="cpu", method=method)
    assert got32.dtype == np.float32
    np.testing.assert_array_equal(got32, ref.astype(np.float32))


def test_torch_block_path_matches_rdkit():
    """The CUDA code path's arithmetic, run on torch's CPU device (no GPU on the build machine)."""
    pytest.importorskip("torch")
    bits = morgan_bits(INLINE)
    fps = rdkit_bitvects(INLINE)
    ref = _rdkit_matrix(fps, fps)
    for dtype in (np.float32, np.float64):
        blocks = list(fingerprints._blocks_torch(bits, bits, 5, np.dtype(dtype), where="cpu"))
        assert [(s, e) for s, e, _ in blocks] == [(0, 5), (5, 10), (10, 13)]
        got = np.vstack([x for _, _, x in blocks])
        assert got.dtype == dtype
        np.testing.assert_array_equal(got, ref.astype(dtype))


def _slow_top_k(sims: np.ndarray, k: int, exclude_self: bool):
    """Plain per-row sort by (-similarity, index)."""
    idx, val = [], []
    for i, row in enumerate(sims):
        cand = [(-float(s), j) for j, s in enumerate(row) if not (exclude_self and j == i)]
        cand.sort()
        idx.append([j for _, j in cand[:k]])
        val.append([-s for s, _ in cand[:k]])
    return np.array(idx), np.array(val, dtype=np.float32)


@pytest.mark.parametrize("exclude_self", [False, True])
def test_top_k_similar_matches_plain_sort_with_ties(exclude_self):
    # Duplicates (ethanol twice, the failure's zero row and methane-like) make exact ties.
    bits = morgan_bits(INLINE + INLINE[:4])
    sims = tanimoto(bits, device="cpu")
    for k in (1, 3, 7):
        idx, val = top_k_similar(bits, bits, k, exclude_self=exclude_self, block_rows=4, device="cpu",
                                 method="float32" if k == 3 else "auto")
        want_idx, want_val = _slow_top_k(sims, k, exclude_self)
        np.testing.assert_array_equal(idx, want_idx)
        np.testing.assert_array_equal(val, want_val)
    # k larger than the reference set is clamped.
    idx, val = top_k_similar(bits, bits, 100, exclude_self=exclude_self, device="cpu")
    assert idx.shape == (len(bits), len(bits) - int(exclude_self))
    if exclude_self:
        assert not (idx == np.arange(len(bits))[:, None]).any()


def test_top_k_rejects_exclude_self_on_different_sets():
    bits = morgan_bits(INLINE)
    with pytest.raises(ValueError, match="exclude_self"):
        top_k_similar(bits[:3], bits, 2, exclude_self=True)


# ---------------------------------------------------------------- scaffolds


def test_murcko_scaffolds_hand_checked():
    smiles = [
        "CC(C)Cc1ccc(C(C)C(=O)O)cc1",        # ibuprofen -> benzene
        "CN(C)CCOC(c1ccccc1)c1ccccc1",       # diphenhydramine -> diphenylmethane
        "CCO",                               # acyclic -> ""
        "C[C@H](N)c1ccccc1",                 # stereo dropped -> benzene
        "O=C1CCCCC1",                        # exocyclic =O stays on the ring
        "c1ccncc1",                          # pyridine keeps N
        "bad(",                              # failure -> ""
    ]
    assert murcko_scaffold(smiles) == [
        "c1ccccc1", "c1ccc(Cc2ccccc2)cc1", "", "c1ccccc1", "O=C1CCCCC1", "c1ccncc1", "",
    ]
    assert murcko_scaffold(smiles, generic=True) == [
        "C1CCCCC1", "C1CCC(CC2CCCCC2)CC1", "", "C1CCCCC1", "C1CCCCC1", "C1CCCCC1", "",
    ]
    assert murcko_scaffold("CC(=O)Oc1ccccc1C(=O)O") == ["c1ccccc1"]


# ---------------------------------------------------------------- descriptors


def test_descriptors_table_nan_inf_and_absurd_values(monkeypatch):
    X, ok = compute_descriptors(["CCO", "C[Se]C", "", "CCO"])
    names = descriptor_names()
    assert X.shape == (4, len(names)) and ok.tolist() == [True, True, False, True]
    assert np.isnan(X[2]).all()                                  # failure row: NaN, kept
    np.testing.assert_array_equal(X[0], X[3])
    assert X[0, names.index("MolWt")] == pytest.approx(46.069, abs=1e-3)
    # Selenium has no Gasteiger parameters: RDKit gives NaN charges, kept as NaN (not a crash).
    assert np.isnan(X[1, names.index("MaxPartialCharge")])
    assert np.isfinite(X[1, names.index("MolWt")])
    ipc = names.index("Ipc_log10")
    from rdkit.Chem import Descriptors
    assert X[0, ipc] == pytest.approx(math.log10(1 + Descriptors.Ipc(Chem.MolFromSmiles("CCO"))))

    # inf and absurd magnitudes from RDKit become NaN.
    real = desc.Descriptors.CalcMolDescriptors

    def fake(mol, missingVal=None, silent=True):
        d = real(mol, missingVal=missingVal, silent=silent)
        d["MolWt"], d["TPSA"], d["BertzCT"] = float("inf"), 1e30, float("-inf")
        return d

    monkeypatch.setattr(desc.Descriptors, "CalcMolDescriptors", fake)
    desc.clear_descriptor_cache()
    X2, _ = compute_descriptors(["CCCC"])
    for n in ("MolWt", "TPSA", "BertzCT"):
        assert np.isnan(X2[0, names.index(n)])
    assert np.isfinite(X2[0, names.index("NumHDonors")])
    desc.clear_descriptor_cache()


def test_standardizer_uses_training_statistics_only():
    # col0: varied with a NaN; col1: constant in train (varies in test); col2: all NaN in train.
    train = np.array([[1.0, 5.0, np.nan],
                      [2.0, 5.0, np.nan],
                      [3.0, 5.0, np.nan],
                      [4.0, 5.0, np.nan],
                      [np.nan, 5.0, np.nan]])
    test = np.array([[100.0, 7.0, 1.0],
                     [np.inf, 9.0, 2.0],
                     [-3.0, 1.0, 3.0]])
    st = DescriptorStandardizer(clip_quantile=0.0).fit(train, names=["a", "b", "c"])
    assert st.feature_names == ["a"]          # constant and all-missing columns dropped
    # By hand: median 2.5 imputes the NaN; clip [1, 4]; imputed train 1,2,3,4,2.5 has mean 2.5
    # and population std sqrt((2.25+0.25+0.25+2.25+0)/5) = 1.
    np.testing.assert_allclose(st.transform(train)[:, 0], [-1.5, -0.5, 0.5, 1.5, 0.0], atol=1e-7)
    np.testing.assert_allclose(st.transform(test)[:, 0], [1.5, 0.0, -1.5], atol=1e-7)
    # Fitted on train+test the same rows would map elsewhere: the test is sensitive to leakage.
    leaky = DescriptorStandardizer(clip_quantile=0.0).fit(np.vstack([train, test]))
    assert not np.allclose(leaky.transform(test)[:, 0], [1.5, 0.0, -1.5])
    assert st.transform(test).dtype == np.float32

    # Quantile clipping uses training quantiles.
    rng = np.random.default_rng(0)
    tr = rng.normal(size=(200, 3))
    st2 = DescriptorStandardizer(clip_quantile=0.05).fit(tr)
    np.testing.assert_allclose(st2.lo_, np.quantile(tr, 0.05, axis=0))
    np.testing.assert_allclose(st2.hi_, np.quantile(tr, 0.95, axis=0))
    z = st2.transform(np.full((1, 3), 1e6))
    np.testing.assert_allclose(z[0], (st2.hi_ - st2.mean_) / st2.std_, rtol=1e-6)


def test_standardizer_state_round_trips_through_json():
    X, ok = compute_descriptors(INLINE)
    st = DescriptorStandardizer().fit(X[ok], names=descriptor_names())
    blob = json.dumps(st.to_json())
    again = DescriptorStandardizer.from_json(json.loads(blob))
    np.testing.assert_array_equal(again.transform(X), st.transform(X))
    assert again.feature_names == st.feature_names
    assert np.isfinite(st.transform(X)).all()   # failure rows are imputed too
    arrays = st.get_state()
    assert all(isinstance(v, np.ndarray) for v in arrays.values())
    with pytest.raises(RuntimeError):
        DescriptorStandardizer().transform(X)


def test_descriptor_pool_equals_serial():
    # 80 distinct molecules (> the 64 below which the pool is skipped).
    smiles = ["C" * n for n in range(1, 41)] + ["C" * n + "c1ccccc1O" for n in range(1, 41)]
    desc.clear_descriptor_cache()
    serial, _ = compute_descriptors(smiles, n_jobs=1)
    desc.clear_descriptor_cache()
    pooled, ok = compute_descriptors(smiles, n_jobs=2)
    assert ok.all()
    np.testing.assert_array_equal(pooled, serial)


# ---------------------------------------------------------------- featurize + cache


def test_featurize_cache_and_failure_rows():
    clear_cache()
    X, ok = featurize(INLINE, "morgan_bits")
    np.testing.assert_array_equal(X, morgan_bits(INLINE))
    assert ok.tolist() == [s != "not a smiles" for s in INLINE]
    first = cache_stats()
    assert first["computed"] == len(set(parse_smiles(INLINE).canonical) - {""})  # CCO/OCC once
    # A second call, reordered and with a new spelling, recomputes nothing.
    Y, ok2 = featurize(["CCO", "OCC"] + INLINE[::-1], "morgan_bits")
    assert cache_stats()["computed"] == first["computed"]
    np.testing.assert_array_equal(Y[2:], X[::-1])
    np.testing.assert_array_equal(Y[0], Y[1])
    # Other params are another cache entry; counts differ from bits.
    Z, _ = featurize(INLINE, "morgan_bits", radius=1, n_bits=512)
    assert Z.shape == (len(INLINE), 512)
    np.testing.assert_array_equal(Z, morgan_bits(INLINE, radius=1, n_bits=512))
    C, _ = featurize(INLINE, "morgan_counts")
    np.testing.assert_array_equal(C, morgan_counts(INLINE))
    D, okd = featurize(INLINE + [None], "descriptors")
    assert D.dtype == np.float32 and D.shape == (len(INLINE) + 1, len(descriptor_names()))
    assert np.isnan(D[-1]).all() and not okd[-1] and np.isnan(D[INLINE.index("not a smiles")]).all()
    with pytest.raises(DrugcellInputError, match="unknown feature kind"):
        featurize(INLINE, "ecfp")
    with pytest.raises(DrugcellInputError, match="no parameter"):
        featurize(INLINE, "descriptors", radius=2)
    clear_cache()
    assert features.cache_stats()["rows"] == 0
