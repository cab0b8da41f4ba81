"""Predictor interface, registry and the classical predictors, pinned against hand-computed
numbers and plain slow formulas (explicit hat matrices, scikit-learn's Ridge, RDKit's own
Tanimoto)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from drugcell.data.expression_set import ExpressionSet
from drugcell.errors import DrugcellInputError
from drugcell.models import Prediction, Predictor, available, make_predictor
from drugcell.models.knn import neighbour_weights
from drugcell.models.ridge import gcv_ridge


def make_set(expression, smiles=None, control=None) -> ExpressionSet:
    """A tiny ExpressionSet straight from arrays (uniform weights)."""
    y = np.asarray(expression, dtype=np.float32)
    c, g = y.shape
    return ExpressionSet(
        compounds=[f"c{i}" for i in range(c)],
        genes=[f"ENSG{j:011d}" for j in range(g)],
        expression=y,
        weights=np.full((g, c), 1.0 / g, dtype=np.float32),
        n_replicates=np.full(c, 2),
        control=np.zeros(g) if control is None else control,
        smiles=[""] * c if smiles is None else smiles,
        inchikey=[""] * c,
    )


def rdkit_tanimoto(a: str, b: str) -> float:
    """Independent reference: RDKit's own bit vectors and TanimotoSimilarity."""
    from rdkit import Chem, DataStructs
    from rdkit.Chem import rdFingerprintGenerator

    gen = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048)
    fa, fb = (gen.GetFingerprint(Chem.MolFromSmiles(s)) for s in (a, b))
    return DataStructs.TanimotoSimilarity(fa, fb)


# ------------------------------------------------------------------ registry and interface
def test_registry_lists_builtins_and_rejects_unknowns():
    assert {"control", "mean", "knn", "ridge_fp", "ridge_desc"} <= set(available())
    with pytest.raises(DrugcellInputError, match=r"unknown predictor kind 'knnn'.*available predictor kinds:.*knn"):
        make_predictor("knnn")
    with pytest.raises(DrugcellInputError, match=r"unknown parameter\(s\) kk.*accepted parameters:.*k"):
        make_predictor("knn", kk=5)
    with pytest.raises(DrugcellInputError, match="kernel"):
        make_predictor("knn", kernel="gaussian")
    with pytest.raises(DrugcellInputError, match="JSON"):
        make_predictor("knn", k=np.int64(5))  # numpy scalars are not JSON values


def test_config_rebuilds_an_equal_predictor():
    p = make_predictor("knn", k=5, kernel="softmax")
    cfg = p.get_config()
    assert cfg == {"k": 5, "kernel": "softmax", "temperature": 0.1, "std": True, "std_prior": 1.0,
                   "embedding": "morgan", "embedding_params": {}}
    assert type(p)(**cfg).get_config() == cfg
    assert p.kind == "knn"


def test_baselines_predict_control_and_training_mean():
    y = np.array([[1.0, 2.0, 0.0], [3.0, 6.0, 1.0]])
    train = make_set(y, control=[0.5, 0.25, 4.0])
    m = make_predictor("mean").fit(train).predict(["CCO", "x", ""])
    np.testing.assert_array_equal(m.mean, [[2.0, 4.0, 0.5]] * 3)
    assert m.mean.dtype == np.float32 and m.std is None
    c = make_predictor("control").fit(train).predict(["CCO"])
    np.testing.assert_array_equal(c.mean, [[0.5, 0.25, 4.0]])
    assert make_predictor("mean").fit(train).genes.tolist() == list(train.genes)


def test_predict_clips_at_zero_and_counts():
    class Fixed(Predictor):
        def _fit(self, train, seed):
            pass

        def _predict(self, smiles):
            return Prediction(mean=np.array([[-1.0, 2.0], [0.5, -0.25]])[: len(smiles)])

    p = Fixed().fit(make_set(np.ones((2, 2))))
    out = p.predict(["a", "b"])
    np.testing.assert_array_equal(out.mean, [[0.0, 2.0], [0.5, 0.0]])
    assert out.info["n_clipped"] == 2
    # mean baseline with a negative training mean: every compound clipped on that gene
    neg = make_predictor("mean").fit(make_set([[-1.0, 1.0], [-3.0, 1.0]])).predict(["C"] * 3)
    assert neg.info["n_clipped"] == 3
    np.testing.assert_array_equal(neg.mean, [[0.0, 1.0]] * 3)


def test_predict_before_fit_is_an_error():
    with pytest.raises(RuntimeError, match="fitted"):
        make_predictor("mean").predict(["C"])


# ------------------------------------------------------------------ kNN weights by hand
SIM = np.array([[0.5, 0.25, 0.0], [0.0, 0.0, 0.0], [0.8, 0.4, 0.2]])
Y3 = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 8.0]])


def test_knn_weights_uniform_and_tanimoto_by_hand():
    w, has = neighbour_weights(SIM, k=3, kernel="uniform")
    assert has.tolist() == [True, False, True]
    pred = w @ Y3
    # row 0: only two neighbours have similarity > 0 -> plain mean of rows 0 and 1
    np.testing.assert_allclose(pred[0], [2.0, 3.0], rtol=1e-6)
    np.testing.assert_allclose(pred[1], [0.0, 0.0])
    np.testing.assert_allclose(pred[2], [3.0, 14.0 / 3.0], rtol=1e-6)
    w, _ = neighbour_weights(SIM, k=3, kernel="tanimoto")
    pred = w @ Y3
    np.testing.assert_allclose(pred[0], [1.25 / 0.75, 2.0 / 0.75], rtol=1e-6)
    np.testing.assert_allclose(pred[2], [3.0 / 1.4, 4.8 / 1.4], rtol=1e-6)
    # k=1 keeps only the most similar compound
    w, _ = neighbour_weights(SIM, k=1, kernel="tanimoto")
    np.testing.assert_allclose((w @ Y3)[[0, 2]], [[1.0, 2.0], [1.0, 2.0]])


def test_knn_weights_softmax_by_hand():
    w, _ = neighbour_weights(SIM, k=2, kernel="softmax", temperature=0.25)
    pred = w @ Y3
    w0 = math.exp(2.0) / (math.exp(2.0) + math.exp(1.0))  # exp(0.5/0.25) vs exp(0.25/0.25)
    np.testing.assert_allclose(pred[0], [w0 * 1 + (1 - w0) * 3, w0 * 2 + (1 - w0) * 4], rtol=1e-6)
    e = [math.exp(0.8 / 0.25), math.exp(0.4 / 0.25)]  # k=2 drops the 0.2 neighbour of row 2
    np.testing.assert_allclose(pred[2], [(e[0] * 1 + e[1] * 3) / sum(e), (e[0] * 2 + e[1] * 4) / sum(e)],
                               rtol=1e-6)


# ------------------------------------------------------------------ kNN on real molecules
TRAIN_SMILES = ["CCO", "CCN", "c1ccccc1O"]


def test_knn_predictor_matches_rdkit_tanimoto_average():
    y = np.array([[1.0, 0.0, 4.0], [2.0, 1.0, 0.0], [9.0, 3.0, 1.0]])
    train = make_set(y, smiles=TRAIN_SMILES)
    query = "CCCO"
    s = np.array([rdkit_tanimoto(query, t) for t in TRAIN_SMILES])
    assert (s > 0).sum() >= 2  # the example must exercise a real weighted average
    for kernel, weights in [
        ("uniform", (s > 0).astype(float)),
        ("tanimoto", s),
        ("softmax", np.where(s > 0, np.exp(s / 0.1), 0.0)),
    ]:
        out = make_predictor("knn", k=3, kernel=kernel).fit(train).predict([query])
        wn = weights / weights.sum()
        expect = wn @ y
        np.testing.assert_allclose(out.mean[0], expect, rtol=1e-5)
        spread = wn @ (y - expect) ** 2
        n_eff = 1.0 / (wn @ wn)
        expect_std = np.sqrt((n_eff * spread + 1.0 * y.var(axis=0)) / (n_eff + 1.0))
        np.testing.assert_allclose(out.std[0], expect_std, rtol=1e-4, atol=1e-6)
        raw = make_predictor("knn", k=3, kernel=kernel, std_prior=0).fit(train).predict([query])
        np.testing.assert_allclose(raw.std[0], np.sqrt(spread), rtol=1e-4, atol=1e-6)
        assert out.info["n_fallback"] == 0 and out.info["n_unparsed"] == 0


def test_knn_fallback_counts_unparsed_and_no_neighbour():
    y = np.array([[1.0, 0.0], [2.0, 1.0], [9.0, 3.0]])
    train = make_set(y, smiles=TRAIN_SMILES)
    assert all(rdkit_tanimoto("[Xe]", t) == 0.0 for t in TRAIN_SMILES)
    out = make_predictor("knn", k=2).fit(train).predict(["not a smiles", "", "[Xe]", "CCO"])
    assert out.info["n_unparsed"] == 2
    assert out.info["n_fallback"] == 3
    np.testing.assert_allclose(out.mean[:3], np.tile(y.mean(axis=0), (3, 1)), rtol=1e-6)
    # fallback rows carry the training per-gene std as their uncertainty
    np.testing.assert_allclose(out.std[0], y.std(axis=0), rtol=1e-5)


def test_knn_falls_back_to_the_wmean_profile():
    from drugcell.models.baselines import weighted_mean_profile

    y = np.array([[1.0, 0.0], [2.0, 1.0], [9.0, 3.0]])
    train = make_set(y, smiles=TRAIN_SMILES)
    train.weights = np.array([[0.9, 0.2, 0.1], [0.1, 0.8, 0.9]], dtype=np.float32)  # columns sum to 1
    wmean = [(0.9 * 1 + 0.2 * 2 + 0.1 * 9) / 1.2, (0.1 * 0 + 0.8 * 1 + 0.9 * 3) / 1.8]
    np.testing.assert_allclose(weighted_mean_profile(y, train.weights), wmean, rtol=1e-6)
    out = make_predictor("knn", k=2).fit(train).predict(["not a smiles", "[Xe]", "CCCO"])
    np.testing.assert_allclose(out.mean[:2], [wmean, wmean], rtol=1e-6)
    # rows with neighbours are unchanged: the normalised neighbour average
    s = np.array([rdkit_tanimoto("CCCO", t) for t in TRAIN_SMILES])
    top = np.argsort(-s)[:2]
    np.testing.assert_allclose(out.mean[2], s[top] @ y[top] / s[top].sum(), rtol=1e-5)
    # the std of fallback rows stays the training spread
    np.testing.assert_allclose(out.std[0], y.std(axis=0), rtol=1e-5)


def test_knn_on_an_embedding_uses_centred_cosine_by_hand():
    from drugcell.chem.embeddings import get_embedder

    smiles = RIDGE_SMILES[:12]
    _, y = ridge_train(n_genes=3)
    train = make_set(y[:12], smiles=smiles)
    query = ["CCCCO", "c1ccccc1CC", "not a smiles"]
    p = make_predictor("knn", k=4, kernel="softmax", temperature=0.2, embedding="descriptors",
                       embedding_params={"morgan": "none"}).fit(train)
    out = p.predict(query)
    emb = get_embedder("descriptors", morgan="none").fit(smiles)
    t = emb.transform(smiles).astype(np.float64)
    centre = t.mean(axis=0)
    t -= centre
    for i, q in enumerate(emb.transform(query[:2]).astype(np.float64) - centre):
        sims = t @ q / (np.linalg.norm(t, axis=1) * np.linalg.norm(q))
        top = np.argsort(-sims)[:4]
        top = top[sims[top] > 0]
        w = np.exp(sims[top] / 0.2)
        np.testing.assert_allclose(out.mean[i], w @ y[top] / w.sum(), rtol=1e-4)
    assert out.info["n_fallback"] == 1
    with pytest.raises(DrugcellInputError, match="embedding_params"):
        make_predictor("knn", embedding_params={"morgan": "none"})
    with pytest.raises(DrugcellInputError, match="unknown embedding"):
        make_predictor("knn", embedding="nope")


def test_knn_ignores_unparseable_training_compounds():
    y = np.array([[1.0, 0.0], [2.0, 1.0], [9.0, 3.0], [100.0, 100.0]])
    train = make_set(y, smiles=TRAIN_SMILES + ["bad((("])
    out = make_predictor("knn", k=10, kernel="uniform").fit(train).predict(["CCO"])
    s = np.array([rdkit_tanimoto("CCO", t) for t in TRAIN_SMILES])
    np.testing.assert_allclose(out.mean[0], y[:3][s > 0].mean(axis=0), rtol=1e-6)


# ------------------------------------------------------------------ GCV ridge vs brute force
def brute_gcv(x, y, alpha):
    """GCV from an explicit hat matrix with an unpenalised intercept; per gene.

    H = 11^T/n + Xc (Xc^T Xc + aI)^-1 Xc^T, written in its kernel form Xc Xc^T (Xc Xc^T + aI)^-1
    (the same matrix) so that 2048-bit problems stay small."""
    n = x.shape[0]
    xc = x - x.mean(axis=0)
    k = xc @ xc.T
    h = np.ones((n, n)) / n + k @ np.linalg.inv(k + alpha * np.eye(n))
    resid = (np.eye(n) - h) @ y
    return (resid**2).sum(axis=0) / (n - np.trace(h)) ** 2


@pytest.mark.parametrize("shape,binary", [((40, 7), False), ((30, 60), True), ((12, 5), True)])
def test_gcv_ridge_equals_brute_force_and_sklearn(shape, binary):
    from sklearn.linear_model import Ridge

    rng = np.random.default_rng(3)
    n, p = shape
    x = (rng.random((n, p)) < 0.15).astype(float) if binary else rng.normal(size=(n, p))
    beta = rng.normal(size=(p, 4))
    y = x @ beta + rng.normal(scale=[0.1, 1.0, 3.0, 10.0], size=(n, 4)) + 5.0
    alphas = np.logspace(-3, 3, 13)
    brute = np.array([brute_gcv(x, y, a) for a in alphas])  # (A, G)

    fit = gcv_ridge(x, y.astype(np.float32), alphas)
    np.testing.assert_allclose(fit.gcv, brute.sum(axis=1), rtol=1e-4)
    assert float(fit.alpha) == alphas[np.argmin(brute.sum(axis=1))]
    ref = Ridge(alpha=float(fit.alpha)).fit(x, y)
    np.testing.assert_allclose(fit.coef, ref.coef_.T, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(fit.intercept, ref.intercept_, rtol=1e-4, atol=1e-5)

    per = gcv_ridge(x, y.astype(np.float32), alphas, per_gene=True)
    np.testing.assert_allclose(per.gcv, brute, rtol=1e-4)
    np.testing.assert_array_equal(per.alpha, alphas[np.argmin(brute, axis=0)])
    for g in range(y.shape[1]):
        ref = Ridge(alpha=float(per.alpha[g])).fit(x, y[:, g])
        np.testing.assert_allclose(per.coef[:, g], ref.coef_, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(per.intercept[g], ref.intercept_, rtol=1e-4, atol=1e-5)


def test_gcv_prefers_strong_penalty_for_pure_noise():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 20))
    y = rng.normal(size=(60, 3))
    alphas = np.logspace(-3, 5, 9)
    fit = gcv_ridge(x, y, alphas)
    assert float(fit.alpha) >= 1e3  # nothing to learn: shrink towards the mean
    signal = gcv_ridge(x, x[:, :3] * 10 + 0.01 * y, alphas)
    assert float(signal.alpha) <= 1e-1


# ------------------------------------------------------------------ ridge predictors end to end
RIDGE_SMILES = [
    "CCO", "CCN", "CCC", "CCCC", "CCCO", "CCCN", "c1ccccc1", "c1ccccc1O", "c1ccccc1N", "c1ccccc1C",
    "CC(=O)O", "CC(=O)N", "OCCO", "NCCN", "c1ccncc1", "c1ccoc1", "C1CCCCC1", "C1CCNCC1",
    "CC(C)O", "CC(C)N", "COC", "CSC", "c1ccc2ccccc2c1", "O=C(O)c1ccccc1",
]


def ridge_train(n_genes=6, seed=0):
    from rdkit import Chem
    from rdkit.Chem import rdFingerprintGenerator

    gen = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048)
    x = np.array([gen.GetFingerprintAsNumPy(Chem.MolFromSmiles(s)) for s in RIDGE_SMILES], float)
    rng = np.random.default_rng(seed)
    y = 4.0 + x @ rng.normal(scale=0.3, size=(2048, n_genes)) + rng.normal(scale=0.2, size=(len(x), n_genes))
    return x, np.abs(y)


def test_ridge_fp_predictor_matches_sklearn_at_chosen_alpha():
    from sklearn.linear_model import Ridge

    x, y = ridge_train()
    train = make_set(y, smiles=RIDGE_SMILES)
    alphas = [0.01, 0.1, 1.0, 10.0, 100.0]
    # baseline = "mean" + alpha_selection = "gcv": the behaviour before wmean and grouped CV
    p = make_predictor("ridge_fp", alphas=alphas, baseline="mean", alpha_selection="gcv").fit(train)
    brute = np.array([brute_gcv(x, y, a).sum() for a in alphas])
    assert float(p.alpha_) == alphas[int(np.argmin(brute))]
    query = ["CCCCO", "c1ccccc1CC", "not a smiles"]
    out = p.predict(query)
    ref = Ridge(alpha=float(p.alpha_)).fit(x, y)
    from rdkit import Chem
    from rdkit.Chem import rdFingerprintGenerator

    gen = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048)
    xq = np.array([gen.GetFingerprintAsNumPy(Chem.MolFromSmiles(s)) for s in query[:2]], float)
    np.testing.assert_allclose(out.mean[:2], np.maximum(ref.predict(xq), 0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(out.mean[2], y.mean(axis=0), rtol=1e-5)
    assert out.info["n_unparsed"] == 1 and out.info["n_fallback"] == 1
    assert out.std is not None and out.std.shape == (3, y.shape[1])


def test_ridge_desc_standardises_on_training_rows_only():
    from drugcell.chem.descriptors import DescriptorStandardizer, compute_descriptors

    _, y = ridge_train(n_genes=3)
    train = make_set(y, smiles=RIDGE_SMILES)
    p = make_predictor("ridge_desc", alphas=[0.1, 1.0, 10.0, 100.0], baseline="mean").fit(train)
    raw, _ = compute_descriptors(RIDGE_SMILES)
    std = DescriptorStandardizer().fit(raw)
    np.testing.assert_allclose(p.standardizer_.mean_, std.mean_)
    # a wildly different query set must not move the standardiser (fitted once, on training rows)
    p.predict(["CCCCCCCCCCCCCCCCCCCCCCCCCCCCCC", "O=C(O)CCCCCCCCCCC(=O)O"])
    np.testing.assert_allclose(p.standardizer_.mean_, std.mean_)
    from sklearn.linear_model import Ridge

    z = std.transform(raw).astype(float)
    ref = Ridge(alpha=float(p.alpha_)).fit(z, y)
    zq = std.transform(compute_descriptors(["CCCCO"])[0]).astype(float)
    np.testing.assert_allclose(p.predict(["CCCCO"]).mean, np.maximum(ref.predict(zq), 0), rtol=1e-3, atol=1e-4)


def test_ridge_per_gene_alpha_option():
    x, y = ridge_train(n_genes=4)
    y[:, 0] = np.random.default_rng(1).normal(size=len(y)) + 5  # pure noise gene
    train = make_set(y, smiles=RIDGE_SMILES)
    alphas = [0.01, 0.1, 1.0, 10.0, 100.0, 1e4]
    p = make_predictor("ridge_fp", alphas=alphas, alpha_per_gene=True, alpha_selection="gcv").fit(train)
    brute = np.array([brute_gcv(x, y, a) for a in alphas])
    np.testing.assert_array_equal(p.alpha_, np.asarray(alphas)[np.argmin(brute, axis=0)])


# Numbers printed by the ridge of commit 8f1b38c (before the wmean baseline, grouped-CV alpha and
# duplicate handling) on ridge_train(n_genes=3): the old behaviour, kept bit for bit by
# baseline = "mean" + alpha_selection = "gcv" when no two training rows share a feature vector.
PINNED_BEFORE = {
    ("ridge_fp", "counts"): (1.2142338150669842, [
        [4.478999137878418, 3.8007304668426514, 3.9996631145477295],
        [4.873530864715576, 4.4368743896484375, 5.046526908874512]],
        [0.23777097463607788, 0.2327178567647934, 0.19274719059467316]),
    ("ridge_desc", None): (37.22885454778221, [
        [4.645165920257568, 3.8641669750213623, 4.194411754608154],
        [4.837156295776367, 4.250051498413086, 5.122578144073486]],
        [0.37963923811912537, 0.3902212977409363, 0.2242794632911682]),
}


@pytest.mark.parametrize("kind,fingerprint", list(PINNED_BEFORE))
def test_mean_baseline_with_gcv_reproduces_the_old_ridge(kind, fingerprint):
    _, y = ridge_train(n_genes=3)
    train = make_set(y, smiles=RIDGE_SMILES)
    extra = {} if fingerprint is None else {"fingerprint": fingerprint}
    p = make_predictor(kind, baseline="mean", alpha_selection="gcv", **extra).fit(train)
    alpha, mean, std = PINNED_BEFORE[(kind, fingerprint)]
    out = p.predict(["CCCCO", "c1ccccc1CC", "xx"])
    assert float(p.alpha_) == pytest.approx(alpha, rel=1e-12)
    np.testing.assert_allclose(out.mean[:2], mean, rtol=1e-6)
    np.testing.assert_allclose(out.mean[2], y.mean(axis=0), rtol=1e-6)  # unparsed: the plain mean
    np.testing.assert_allclose(out.std[0], std, rtol=1e-6)
    assert out.info["n_duplicate_rows"] == 0 and out.info["alpha_grouped_cv"] == 0


# ------------------------------------------------------------------ state round trips
@pytest.mark.parametrize(
    "kind,params",
    [
        ("mean", {}),
        ("control", {}),
        ("knn", {"k": 2, "kernel": "softmax"}),
        ("knn", {"k": 3, "embedding": "descriptors"}),
        ("ridge_fp", {"fingerprint": "counts", "n_alphas": 5}),
        ("ridge_fp", {"n_alphas": 5, "alpha_selection": "gcv", "baseline": "mean"}),
        ("ridge_desc", {"n_alphas": 5}),
    ],
)
def test_state_round_trip_gives_identical_predictions(kind, params, tmp_path):
    _, y = ridge_train(n_genes=3)
    train = make_set(y, smiles=RIDGE_SMILES, control=[1.0, 2.0, 3.0])
    p = make_predictor(kind, **params).fit(train)
    state = p.get_state()
    assert all(isinstance(v, np.ndarray) for v in state.values())
    np.savez(tmp_path / "s.npz", **state)  # must be storable without pickle
    with np.load(tmp_path / "s.npz", allow_pickle=False) as z:
        loaded = {k: z[k] for k in z.files}
    q = make_predictor(kind, **p.get_config())
    q.set_state(loaded)
    query = ["CCCCO", "c1ccccc1CC", "", "CCO"]
    a, b = p.predict(query), q.predict(query)
    np.testing.assert_array_equal(a.mean, b.mean)
    assert (a.std is None) == (b.std is None)
    if a.std is not None:
        np.testing.assert_array_equal(a.std, b.std)
    assert a.info == b.info
    assert q.genes.tolist() == list(train.genes)


def test_set_state_rejects_incomplete_state():
    p = make_predictor("mean").fit(make_set(np.ones((2, 2))))
    state = p.get_state()
    del state["profile_"]
    with pytest.raises(DrugcellInputError, match="profile_"):
        make_predictor("mean").set_state(state)


def test_knn_k_larger_than_training_set_and_no_std():
    y = np.array([[1.0, 0.0], [2.0, 1.0], [9.0, 3.0]])
    train = make_set(y, smiles=TRAIN_SMILES)
    out = make_predictor("knn", k=50, kernel="uniform", std=False).fit(train).predict(["CCCO"])
    s = np.array([rdkit_tanimoto("CCCO", t) for t in TRAIN_SMILES])
    np.testing.assert_allclose(out.mean[0], y[s > 0].mean(axis=0), rtol=1e-6)
    assert out.std is None


def test_predict_refuses_non_finite_and_wrong_shapes():
    class Broken(Predictor):
        def _fit(self, train, seed):
            pass

        def _predict(self, smiles):
            return Prediction(mean=np.full((len(smiles), self.width), np.nan))

    p = Broken().fit(make_set(np.ones((2, 2))))
    p.width = 2
    with pytest.raises(RuntimeError, match="non-finite"):
        p.predict(["C"])
    p.width = 3
    with pytest.raises(RuntimeError, match="shape"):
        p.predict(["C"])


def test_ridge_unparseable_training_rows_are_left_out():
    from sklearn.linear_model import Ridge

    x, y = ridge_train(n_genes=2)
    bad_y = np.vstack([y, [[1e3, 1e3]]])
    train = make_set(bad_y, smiles=RIDGE_SMILES + ["C1CC"])  # unclosed ring: does not parse
    p = make_predictor("ridge_fp", alphas=[1.0]).fit(train)
    ref = Ridge(alpha=1.0).fit(x, y)
    np.testing.assert_allclose(p.coef_, ref.coef_.T, rtol=1e-4, atol=1e-5)
    # ...but the fallback profile is the mean over every training compound
    out = p.predict([""])
    np.testing.assert_allclose(out.mean[0], bad_y.mean(axis=0), rtol=1e-5)
