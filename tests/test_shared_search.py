"""Work shared within a fold: one similarity matrix for every kNN variant and fusion's support
features, training-set statistics once per set, blend's refits taken from the runner's fits.

Pinned: the shared path equals an independent brute-force computation (plain numpy Tanimoto, a
stable argsort) on a set with exact ties; shared and unshared results are identical to the bit;
the search runs once for N kNN variants (counted by the memo, not timed); a blend with fitted
twins predicts exactly what a blend fitted alone does."""

from __future__ import annotations

import numpy as np
import pytest

from drugcell.chem import search_cache
from drugcell.chem.fingerprints import morgan_bits, search_similar
from drugcell.data.expression_set import ExpressionSet
from drugcell.models import make_predictor, train_memo
from drugcell.models.deep.retrieval import support_scalars

# Duplicated and near-duplicated molecules: many exact Tanimoto ties, also at the k-th place.
TRAIN = ["CCO", "CCN", "CCCO", "CCCN", "c1ccccc1O", "c1ccccc1N", "c1ccccc1C", "c1ccccc1CC", "CCO",
         "c1ccccc1O", "CC(=O)O", "CC(=O)N", "c1ccncc1", "c1ccncc1C", "C1CCCCC1", "C1CCCCC1O",
         "CCCCCCO", "OCCO", "NCCN", "c1ccc2ccccc2c1"]
QUERY = ["CCCCO", "c1ccccc1CO", "CC(=O)OC", "c1ccncc1O", "CCO", "[Xe]", "not a smiles", "C1CCCCC1N"]


def train_set(n_genes: int = 7, seed: int = 0) -> ExpressionSet:
    rng = np.random.default_rng(seed)
    c = len(TRAIN)
    w = rng.random((n_genes, c)) ** 2
    w /= w.sum(axis=0)
    return ExpressionSet(
        compounds=[f"c{i:02d}" for i in range(c)], genes=[f"g{j}" for j in range(n_genes)],
        expression=rng.gamma(2.0, 1.0, (c, n_genes)).astype(np.float32), weights=w.astype(np.float32),
        n_replicates=np.full(c, 2), control=np.ones(n_genes, np.float32), smiles=TRAIN, inchikey=[""] * c)


@pytest.fixture(autouse=True)
def fresh(monkeypatch):
    """Empty memos, and training-set statistics memoised even for these tiny arrays."""
    search_cache.clear()
    train_memo.clear()
    monkeypatch.setattr(train_memo, "_MIN_SIZE", 0)
    yield
    search_cache.clear()
    train_memo.clear()


def brute_tanimoto(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Plain numpy: |A & B| / |A | B| (0 for two empty rows), float64."""
    a, b = a.astype(bool), b.astype(bool)
    inter = (a[:, None, :] & b[None, :, :]).sum(axis=2)
    union = (a[:, None, :] | b[None, :, :]).sum(axis=2)
    return np.divide(inter, union, out=np.zeros(inter.shape), where=union > 0)


def brute_knn(sim: np.ndarray, y: np.ndarray, fallback: np.ndarray, k: int, kernel: str, temperature: float = 0.1):
    """Mean of each query's top-k neighbours with similarity > 0 (stable argsort: lower index first
    among ties), in float64."""
    out = np.empty((len(sim), y.shape[1]))
    for i, row in enumerate(sim):
        top = np.argsort(-row, kind="stable")[:k]
        top = top[row[top] > 0]
        if not top.size:
            out[i] = fallback
            continue
        s = row[top]
        w = {"uniform": np.ones_like(s), "tanimoto": s, "softmax": np.exp((s - s.max()) / temperature)}[kernel]
        out[i] = (w / w.sum()) @ y[top]
    return out


def _boundary_tie(row: np.ndarray, k: int) -> bool:
    """Whether the k-th largest positive similarity is tied with one just outside the top k."""
    s = np.sort(row[row > 0])[::-1]
    return len(s) > k and s[k - 1] == s[k]


@pytest.mark.parametrize("kernel", ["uniform", "tanimoto", "softmax"])
def test_knn_on_the_shared_matrix_matches_brute_force_with_ties(kernel):
    es = train_set()
    y = es.expression.astype(np.float64)
    sim = brute_tanimoto(morgan_bits(QUERY), morgan_bits(TRAIN))
    assert len(np.unique(sim)) < sim.size / 3  # the set really is full of exact ties
    fallback = make_predictor("wmean").fit(es).predict(["C"]).mean[0]
    checked = tied = 0
    for k in (1, 2, 3, 5, 8):
        got = make_predictor("knn", k=k, kernel=kernel).fit(es).predict(QUERY).mean
        want = brute_knn(sim, y, fallback, k, kernel)
        for i in range(len(QUERY)):
            if _boundary_tie(sim[i], k):
                # which of the tied candidates fills the k-th place is numpy's argpartition order,
                # as before this change; the neighbours' similarities are the brute-force top k
                tied += 1
                continue
            np.testing.assert_allclose(got[i], np.maximum(want[i], 0), rtol=2e-6, atol=1e-6)
            checked += 1
    assert checked >= 25 and tied >= 3
    assert search_cache.stats()["computed"] == 1   # 5 variants, one matrix
    assert search_cache.stats()["served"] == 4


def test_knn_neighbours_at_a_tied_kth_place_have_the_brute_force_similarities():
    from drugcell.models.knn import neighbour_weights

    sim = brute_tanimoto(morgan_bits(QUERY), morgan_bits(TRAIN)).astype(np.float32)
    shared = np.concatenate([s for _, _, s in search_cache.similarity_blocks(
        "tanimoto", morgan_bits(QUERY), morgan_bits(TRAIN), 3,
        lambda: iter([(0, len(QUERY), sim)]))])
    for k in (2, 3, 5):
        weights, _ = neighbour_weights(shared, k, "uniform")
        for i, row in enumerate(sim):
            chosen = np.sort(row[weights[i].indices])[::-1]
            top = np.sort(row[row > 0])[::-1][:k]
            np.testing.assert_array_equal(chosen, top)


def test_the_shared_path_is_identical_to_the_unshared_one(monkeypatch):
    from drugcell.models import knn

    es = train_set(n_genes=11, seed=3)
    variants = [dict(k=k, kernel=kern) for k in (2, 5, 50) for kern in ("uniform", "tanimoto", "softmax")]
    monkeypatch.setattr(knn, "_ALL_SQUARES_ABOVE", 0.0)    # the std from Y^2 squared once per set
    shared = [make_predictor("knn", **v).fit(es).predict(QUERY) for v in variants]
    assert train_memo.stats()["computed"] == 3           # wmean, the per-gene spread, Y^2
    assert (search_cache.stats()["computed"], search_cache.stats()["served"]) == (1, len(variants) - 1)
    monkeypatch.setattr(search_cache, "MAX_ELEMENTS", 0)   # every request streams its own blocks
    monkeypatch.setattr(train_memo, "_MIN_SIZE", 1 << 62)  # and every fit computes its own statistics
    monkeypatch.setattr(knn, "_ALL_SQUARES_ABOVE", 2.0)    # and squares its neighbours' rows per block
    search_cache.clear()
    train_memo.clear()
    alone = [make_predictor("knn", **v).fit(es).predict(QUERY) for v in variants]
    assert search_cache.stats()["computed"] == 0 and search_cache.stats()["streamed"] == len(variants)
    for a, b in zip(shared, alone, strict=True):
        np.testing.assert_array_equal(a.mean, b.mean)
        np.testing.assert_array_equal(a.std, b.std)
        assert a.info == b.info


def test_one_search_per_fold_serves_every_knn_variant_and_the_support_features():
    es = train_set()
    for k in (5, 10, 20, 50):
        for kernel in ("uniform", "tanimoto", "softmax"):
            make_predictor("knn", k=k, kernel=kernel).fit(es).predict(QUERY)
    assert search_cache.stats()["computed"] == 1 and search_cache.stats()["served"] == 11
    # fusion's support features of the same queries read the same matrix ...
    q, r = morgan_bits(QUERY), morgan_bits(TRAIN)
    got = support_scalars(q, r, k=3, threshold=0.5)
    assert search_cache.stats()["computed"] == 1 and search_cache.stats()["served"] == 12
    # ... and equal the brute force: max, mean of the top 3, log1p(count >= 0.5)
    sim = brute_tanimoto(q, r)
    top3 = -np.sort(-sim, axis=1)[:, :3]
    want = np.stack([top3[:, 0], top3.mean(axis=1), np.log1p((sim >= 0.5).sum(axis=1))], axis=1)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    # other queries (a new fold) are a new key: one more search
    make_predictor("knn", k=5).fit(es).predict(QUERY[:3])
    assert search_cache.stats()["computed"] == 2


def test_search_similar_from_the_memo_matches_a_stable_argsort_with_ties():
    q, r = morgan_bits(QUERY + TRAIN[:4]), morgan_bits(TRAIN)
    sim = brute_tanimoto(q, r)
    for _ in range(2):   # computed, then served: the same answer
        found = search_similar(q, r, 4, count_at_least=0.3, block_rows=3)
        order = np.argsort(-sim, axis=1, kind="stable")[:, :4]
        np.testing.assert_array_equal(found.indices, order)
        np.testing.assert_allclose(found.similarities, np.take_along_axis(sim, order, axis=1), rtol=1e-7)
        np.testing.assert_array_equal(found.n_at_least, (sim >= 0.3).sum(axis=1))
    assert search_cache.stats()["computed"] == 1 and search_cache.stats()["served"] == 1


def test_memo_blocks_are_read_only_and_the_memo_is_bounded(monkeypatch):
    a = (np.random.default_rng(0).random((30, 64)) < 0.3).astype(np.uint8)
    blocks = list(search_cache.similarity_blocks("tanimoto", a, a, 7, lambda: iter([(0, 30, brute_tanimoto(a, a))])))
    assert [b[:2] for b in blocks] == [(0, 7), (7, 14), (14, 21), (21, 28), (28, 30)]
    with pytest.raises(ValueError, match="read-only"):
        blocks[0][2][0, 0] = 5.0
    monkeypatch.setattr(search_cache, "BUDGET_BYTES", 2 * 30 * 30 * 8)   # room for two matrices
    for i in range(4):
        b = a.copy()
        b[0, i] ^= 1
        list(search_cache.similarity_blocks("tanimoto", b, a, 30, lambda b=b: iter([(0, 30, brute_tanimoto(b, a))])))
    assert search_cache.stats()["entries"] == 2 and search_cache.stats()["computed"] == 5


# ----------------------------------------------------------------- training-set statistics
def test_training_statistics_are_computed_once_per_set_and_equal_the_plain_formula():
    es = train_set(n_genes=9, seed=5)
    y, w = es.expression.astype(np.float64), es.weights.astype(np.float64)
    want = (w * y.T).sum(axis=1) / w.sum(axis=1)      # p_g = sum_c W_gc y_cg / sum_c W_gc
    profiles = [make_predictor("wmean").fit(es).predict(["C"]).mean[0]]
    knns = [make_predictor("knn", k=k).fit(es) for k in (2, 3, 4)]
    profiles += [m.mean_ for m in knns]
    profiles.append(make_predictor("ridge_fp", alpha_selection="gcv").fit(es).intercept_)
    for p in profiles[:4]:
        np.testing.assert_allclose(p, want, rtol=1e-6)
        np.testing.assert_array_equal(p, profiles[0])
    for m in knns:   # kNN's fallback spread: the population std of each gene
        np.testing.assert_allclose(m.sd_, y.std(axis=0), rtol=1e-6)
    st = train_memo.stats()
    assert st["computed"] == 2   # wmean and kNN's per-gene spread, once each for the set
    assert st["served"] >= 2 + 2 + 1
    # a new training set (another fold) is a new key
    make_predictor("wmean").fit(es.subset(np.arange(10)))
    assert train_memo.stats()["computed"] == 3


def test_an_array_changed_in_place_is_noticed():
    es = train_set()
    first = make_predictor("wmean").fit(es).profile_
    es.expression *= 2.0
    second = make_predictor("wmean").fit(es).profile_
    np.testing.assert_allclose(second, 2.0 * first, rtol=1e-6)
    assert train_memo.stats()["computed"] == 2


def test_entries_die_with_their_training_set():
    import gc

    es = train_set()
    make_predictor("knn", k=3).fit(es)
    assert train_memo.stats()["entries"] == 2 and train_memo.stats()["fits"] == 1
    del es
    gc.collect()
    assert train_memo.stats()["entries"] == 0 and train_memo.stats()["fits"] == 0


def test_blend_refits_are_the_runners_fits_and_predict_the_same():
    es = train_set(n_genes=6, seed=2)
    members = [{"kind": "ridge_fp", "alpha_selection": "gcv"}, {"kind": "knn", "k": 3, "kernel": "uniform"}]
    alone = make_predictor("blend", members=members).fit(es, seed=1)
    assert train_memo.stats()["fits_served"] == 0
    want = alone.predict(QUERY)
    train_memo.clear()
    search_cache.clear()
    # the runner fits the same members (same params, seed) on the same set first
    runner = [make_predictor("ridge_fp", alpha_selection="gcv", metric="mejia").fit(es, seed=1),
              make_predictor("knn", k=3, kernel="uniform").fit(es, seed=1),
              make_predictor("wmean").fit(es, seed=1)]
    blend = make_predictor("blend", members=members).fit(es, seed=1)
    used = [m for m, w in zip(blend.models_, blend.weights_, strict=True) if w > 0]
    assert train_memo.stats()["fits_served"] == len(used) >= 2
    assert all(any(m is r for r in runner) for m in used)
    got = blend.predict(QUERY)
    np.testing.assert_array_equal(got.mean, want.mean)
    np.testing.assert_array_equal(blend.weights_, alone.weights_)
    # another seed is another fit: nothing served
    train_memo.clear()
    make_predictor("knn", k=3, kernel="uniform").fit(es, seed=1)
    assert train_memo.fitted_twin("knn", make_predictor("knn", k=3, kernel="uniform").params, es, 2) is None


# ----------------------------------------------------------------- molecule keys
def test_molecule_keys_are_parsed_once_for_folds_and_audit_and_equal_the_plain_definition(monkeypatch):
    from drugcell.chem import keys as keys_module
    from drugcell.chem import molecules
    from drugcell.chem.scaffolds import murcko_scaffold
    from drugcell.splits.audit import audit_folds
    from drugcell.splits.folds import make_folds, molecule_keys

    keys_module.clear_keys()
    calls = []
    real = molecules.parse_smiles
    monkeypatch.setattr(molecules, "parse_smiles",   # count the expensive parses: with InChI
                        lambda s, **kw: (kw.get("inchikey", True) and calls.append(len(s))) or real(s, **kw))
    smiles = TRAIN + ["not a smiles", "", "C[C@H](N)c1ccccc1", "C[C@@H](N)c1ccccc1"]
    ident, scaf, ok = molecule_keys(smiles)
    folds = make_folds(smiles, "scaffold", 3, 0).folds
    molecule_keys(smiles[::-1])
    audit_folds(smiles, [f"id{i}" for i in range(len(smiles))], folds, on_duplicate="report")
    assert calls == [len(set(smiles))]          # one parse of each distinct string, then look-ups
    parsed = real(smiles)
    want_scaf = murcko_scaffold(parsed)
    for i in range(len(smiles)):
        if not parsed.ok[i]:
            assert not ok[i] and ident[i] == f"\x00unparsed:{i}" and scaf[i] == ""
            continue
        assert ident[i] == "ik:" + parsed.inchikey[i].split("-")[0] and scaf[i] == want_scaf[i]
    assert ident[-1] == ident[-2]               # stereoisomers are one molecule
    assert ident[0] == ident[8]                 # "CCO" twice
