"""Ridge's alpha: GCV with duplicate rows collapsed, grouped inner CV under the run's metric, and
the wmean baseline. Pinned against slow independent formulas (explicit weighted hat matrices,
scikit-learn's Ridge per alpha per fold, scored by drugcell.metrics.score)."""

from __future__ import annotations

import numpy as np
import pytest

from drugcell.data.expression_set import ExpressionSet
from drugcell.errors import DrugcellInputError
from drugcell.metrics import score
from drugcell.models import make_predictor
from drugcell.models.baselines import weighted_mean_profile
from drugcell.models.ridge_alpha import (
    duplicate_labels,
    gcv_ridge,
    grouped_cv_curve,
    inner_folds,
    within_duplicate_scatter,
)

# 40 molecules over a dozen scaffolds (benzene, pyridine, naphthalene, cyclohexane, ...) plus
# acyclic ones, and two stereoisomer pairs (same Morgan bits, same InChIKey first block).
SMILES = [
    "c1ccccc1O", "c1ccccc1N", "c1ccccc1C", "c1ccccc1CC", "c1ccccc1CO", "c1ccccc1Cl",
    "c1ccncc1", "Cc1ccncc1", "Oc1ccncc1", "Nc1ccncc1",
    "c1ccc2ccccc2c1", "Cc1ccc2ccccc2c1", "Oc1ccc2ccccc2c1",
    "C1CCCCC1", "CC1CCCCC1", "OC1CCCCC1", "NC1CCCCC1",
    "C1CCNCC1", "CC1CCNCC1", "OC1CCNCC1",
    "c1ccoc1", "Cc1ccoc1", "c1ccsc1", "Cc1ccsc1",
    "O=C(O)c1ccccc1", "O=C(N)c1ccccc1",
    "CCO", "CCN", "CCC", "CCCC", "CCCO", "CCCN", "CC(=O)O", "OCCO",
    "C[C@H](N)C(=O)O", "C[C@@H](N)C(=O)O", "N[C@@H](CO)C(=O)O", "N[C@H](CO)C(=O)O",
    "C1CC1", "CC1CC1",
]


def bits(smiles):
    from rdkit import Chem
    from rdkit.Chem import rdFingerprintGenerator

    gen = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048)
    return np.array([gen.GetFingerprintAsNumPy(Chem.MolFromSmiles(s)) for s in smiles], float)


def mejia_like(rng, n_genes, n_comp):
    w = rng.random((n_genes, n_comp)) ** 4  # peaked, columns sum to 1
    return (w / w.sum(axis=0, keepdims=True)).astype(np.float32)


def toy_set(n_genes=5, seed=0, noise=0.3):
    rng = np.random.default_rng(seed)
    x = bits(SMILES)
    y = 4.0 + x @ rng.normal(scale=0.25, size=(2048, n_genes)) + rng.normal(scale=noise, size=(len(x), n_genes))
    y = np.abs(y).astype(np.float32)
    c = len(SMILES)
    es = ExpressionSet(
        compounds=[f"c{i}" for i in range(c)], genes=[f"ENSG{j:011d}" for j in range(n_genes)],
        expression=y, weights=mejia_like(rng, n_genes, c), n_replicates=np.full(c, 2),
        control=np.zeros(n_genes), smiles=SMILES, inchikey=[""] * c,
    )
    return x, es


# ------------------------------------------------------------------ duplicates and GCV
def test_duplicate_labels_and_within_scatter_by_hand():
    x = np.array([[1, 0, 1], [0, 0, 0], [1, 0, 1], [0, 1, 0], [0, 0, 0]], dtype=np.uint8)
    lab = duplicate_labels(x)
    assert lab[0] == lab[2] and lab[1] == lab[4] and len(set(lab.tolist())) == 3
    assert duplicate_labels(np.array([[0.0, 1.0], [-0.0, 1.0]])).tolist() == [0, 0]  # -0.0 == 0.0
    y = np.array([[1.0, 2.0], [5.0, 0.0], [3.0, 2.0], [9.0, 9.0], [7.0, 4.0]])
    # group {0,2}: (1-2)^2+(3-2)^2 = 2, 0 ; group {1,4}: (5-6)^2+(7-6)^2 = 2, (0-2)^2+(4-2)^2 = 8
    np.testing.assert_allclose(within_duplicate_scatter(y, lab), [4.0, 8.0])


def weighted_gcv_brute(x, y, alpha):
    """GCV of the collapsed problem from an explicit hat matrix: distinct rows, mean targets, row
    weights = counts, intercept unpenalised (all in sqrt(weight)-scaled coordinates)."""
    uniq, inv, counts = np.unique(x, axis=0, return_inverse=True, return_counts=True)
    inv = inv.ravel()
    ybar = np.array([y[inv == u].mean(axis=0) for u in range(len(uniq))])
    m = counts.astype(float)
    xbar = (m[:, None] * uniq).sum(axis=0) / m.sum()
    sw = np.sqrt(m)[:, None]
    xt = sw * (uniq - xbar)
    k = xt @ xt.T
    h = sw @ sw.T / m.sum() + k @ np.linalg.inv(k + alpha * np.eye(len(uniq)))
    resid = (np.eye(len(uniq)) - h) @ (sw * ybar)
    return (resid**2).sum() / (len(uniq) - np.trace(h)) ** 2


def test_dedupe_gcv_equals_the_collapsed_weighted_problem_and_keeps_the_fit():
    from sklearn.linear_model import Ridge

    rng = np.random.default_rng(5)
    base = (rng.random((25, 40)) < 0.15).astype(float)
    x = np.vstack([base, base[:8], base[:3]])  # 11 duplicated rows (3 of them three times)
    y = x @ rng.normal(size=(40, 3)) + rng.normal(size=(len(x), 3)) + 5.0
    alphas = np.logspace(-2, 3, 11)
    fit = gcv_ridge(x, y.astype(np.float32), alphas, dedupe=True)
    brute = np.array([weighted_gcv_brute(x, y, a) for a in alphas])
    np.testing.assert_allclose(fit.gcv, brute, rtol=1e-4)
    assert fit.n_unique == len(np.unique(x, axis=0)) and fit.info["n_duplicate_rows"] == len(x) - fit.n_unique
    ref = Ridge(alpha=float(fit.alpha)).fit(x, y)  # the fit itself is the full-data ridge
    np.testing.assert_allclose(fit.coef, ref.coef_.T, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(fit.intercept, ref.intercept_, rtol=1e-4, atol=1e-5)


def test_plain_gcv_is_fooled_by_duplicates_and_dedupe_is_not():
    # Each molecule appears twice with nearly the same (pure-noise) response: leave-one-out sees
    # the twin and rewards fitting noise; the collapsed GCV sees there is nothing to learn.
    rng = np.random.default_rng(0)
    base = (rng.random((60, 200)) < 0.1).astype(float)
    x = np.vstack([base, base])
    y0 = rng.normal(size=(60, 4))
    y = np.vstack([y0, y0 + 0.05 * rng.normal(size=y0.shape)]) + 3.0
    alphas = np.logspace(-3, 4, 15)
    plain = gcv_ridge(x, y, alphas)
    dedup = gcv_ridge(x, y, alphas, dedupe=True)
    assert float(plain.alpha) <= 1e-1
    assert float(dedup.alpha) >= 1e3
    np.testing.assert_array_equal(plain.coef, gcv_ridge(x, y, [float(plain.alpha)], dedupe=True).coef)


# ------------------------------------------------------------------ inner folds
def test_inner_folds_never_split_a_scaffold_or_a_duplicated_input():
    from drugcell.chem.molecules import parse_smiles
    from drugcell.chem.scaffolds import murcko_scaffold

    x = bits(SMILES)
    # plant feature duplicates across scaffolds: a benzene row copies a cyclohexane row, etc.
    x[0] = x[13]
    x[26] = x[20]
    folds, info = inner_folds(SMILES, x, n_folds=3, seed=1)
    assert info["cv_scaffold_split"] == 1.0 and info["cv_folds"] == 3
    lab = duplicate_labels(x)
    scaf = murcko_scaffold(parse_smiles(SMILES))
    for i in range(len(SMILES)):
        for j in range(len(SMILES)):
            if lab[i] == lab[j] or (scaf[i] and scaf[i] == scaf[j]):
                assert folds[i] == folds[j], (SMILES[i], SMILES[j])
    assert folds[0] == folds[13] and folds[26] == folds[20]
    assert folds[34] == folds[35]  # stereoisomers: one identity, one bit vector
    assert len(set(folds.tolist())) == 3


def test_inner_folds_fall_back_when_groups_are_few():
    smi = ["c1ccccc1O", "c1ccccc1N", "c1ccccc1C", "c1ccccc1CC"]  # one scaffold
    folds, info = inner_folds(smi, bits(smi), n_folds=3, seed=0)
    assert info["cv_scaffold_split"] == 0.0 and info["cv_folds"] == 3 and len(set(folds.tolist())) == 3
    two = ["C[C@H](N)C(=O)O", "C[C@@H](N)C(=O)O"]  # one molecule (and one bit vector): no CV
    assert inner_folds(two, bits(two), n_folds=3) is None


# ------------------------------------------------------------------ grouped CV = brute force
def brute_force_curve(x, es, alphas, metric, folds, baseline="wmean", score_weights=None):
    """Fit scikit-learn's Ridge per alpha per inner fold, move the intercept to the baseline,
    clip at 0 and score the held-out rows with drugcell.metrics.score; mean over compounds."""
    from sklearn.linear_model import Ridge

    y = np.asarray(es.expression, dtype=np.float64)
    sw = es.weights if score_weights is None else score_weights
    curve = np.zeros(len(alphas))
    for k in np.unique(folds):
        tr, te = folds != k, folds == k
        shift = 0.0
        if baseline == "wmean":
            shift = weighted_mean_profile(y[tr], es.weights[:, tr]) - y[tr].mean(axis=0)
        for i, a in enumerate(alphas):
            pred = np.maximum(Ridge(alpha=a).fit(x[tr], y[tr]).predict(x[te]) + shift, 0.0)
            wmse = score(metric, y[te], pred, test_weights_gc=sw[:, te], train_truth_cg=y[tr])
            curve[i] += wmse.sum()
    return curve / len(folds)


@pytest.mark.parametrize("metric,baseline", [("mejia", "wmean"), ("mejia", "mean"), ("proxy", "wmean")])
def test_grouped_cv_alpha_equals_a_brute_force_loop(metric, baseline):
    from sklearn.linear_model import Ridge

    x, es = toy_set(n_genes=5)
    alphas = [0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 1000.0]
    p = make_predictor("ridge_fp", alphas=alphas, metric=metric, baseline=baseline, inner_folds=3).fit(es, seed=2)
    folds, _ = inner_folds(SMILES, x, n_folds=3, seed=2)
    brute = brute_force_curve(x, es, alphas, metric, folds, baseline)
    np.testing.assert_allclose(p.fit_.cv, brute, rtol=2e-4)
    assert float(p.alpha_) == alphas[int(np.argmin(brute))]
    assert 0 < np.argmin(brute) < len(alphas) - 1  # the example has an interior optimum
    # then refitted on all rows at that alpha, intercept moved to the baseline
    ref = Ridge(alpha=float(p.alpha_)).fit(x, es.expression.astype(float))
    np.testing.assert_allclose(p.coef_, ref.coef_.T, rtol=1e-4, atol=1e-5)
    info = p.predict(["CCCCO"]).info
    assert info["alpha"] == float(p.alpha_) and info["alpha_grouped_cv"] == 1.0
    assert info["cv_wmse"] == pytest.approx(brute.min(), rel=2e-4)
    assert info[f"cv_wmse[03:{alphas[3]:.3g}]"] == pytest.approx(brute[3], rel=2e-4)


def test_grouped_cv_on_a_gene_subset_rescales_mejia_weights_per_compound():
    x, es = toy_set(n_genes=12, seed=3)
    alphas = np.array([0.3, 3.0, 30.0])
    curve, info = grouped_cv_curve(x, es.expression, alphas, smiles=SMILES, weights_gc=es.weights,
                                   metric="mejia", n_folds=3, cv_genes=5, seed=7)
    assert info["cv_genes"] == 5
    genes = np.sort(np.random.default_rng(7).choice(12, size=5, replace=False))
    sub = es.subset(np.arange(len(SMILES)))
    sub.expression, sub.weights = es.expression[:, genes], es.weights[genes]  # the baseline: raw weights
    scored = es.weights[genes] / es.weights[genes].sum(axis=0)  # scoring: columns sum to 1 again
    folds, _ = inner_folds(SMILES, x, n_folds=3, seed=7)
    brute = brute_force_curve(x, sub, alphas, "mejia", folds, score_weights=scored)
    np.testing.assert_allclose(curve, brute, rtol=2e-4)


# ------------------------------------------------------------------ the wmean baseline
def test_wmean_baseline_moves_only_the_intercept_and_the_fallback():
    _, es = toy_set(n_genes=4, seed=1)
    es.expression[:] += 2.0  # keep every prediction away from the clip at 0
    common = {"alphas": [3.0], "alpha_selection": "gcv"}
    w = make_predictor("ridge_fp", baseline="wmean", **common).fit(es)
    m = make_predictor("ridge_fp", baseline="mean", **common).fit(es)
    np.testing.assert_array_equal(w.coef_, m.coef_)
    query = ["CCCCO", "c1ccccc1CCC", "Cc1ccc2ccccc2c1C", "not a smiles"]
    pw, pm = w.predict(query).mean, m.predict(query).mean
    shift = weighted_mean_profile(es.expression, es.weights) - es.expression.mean(axis=0)
    np.testing.assert_allclose(pw[:3] - pm[:3], np.tile(shift, (3, 1)), atol=1e-5)
    np.testing.assert_allclose(pw[3], weighted_mean_profile(es.expression, es.weights), rtol=1e-6)
    assert not np.allclose(shift, 0.0, atol=1e-3)  # the weights really are not uniform
    # a query whose features equal the training mean gets the baseline itself: the intercept
    xbar = bits(SMILES).mean(axis=0)
    np.testing.assert_allclose(xbar @ w.coef_ + w.intercept_, weighted_mean_profile(es.expression, es.weights),
                               rtol=1e-5)


def test_ridge_params_are_checked():
    with pytest.raises(DrugcellInputError, match="alpha_per_gene.*gcv"):
        make_predictor("ridge_fp", alpha_per_gene=True)
    with pytest.raises(DrugcellInputError, match="baseline"):
        make_predictor("ridge_desc", baseline="median")
    with pytest.raises(DrugcellInputError, match="alpha_selection"):
        make_predictor("ridge_fp", alpha_selection="loo")
    with pytest.raises(DrugcellInputError, match="unknown metric"):
        make_predictor("ridge_fp", metric="mse")
    with pytest.raises(DrugcellInputError, match="inner_folds"):
        make_predictor("ridge_fp", inner_folds=1)
    with pytest.raises(DrugcellInputError, match="cv_genes"):
        make_predictor("ridge_fp", cv_genes=0)
    assert make_predictor("ridge_fp", alpha_per_gene=True, alpha_selection="gcv").params["alpha_per_gene"]


def test_grouped_cv_falls_back_to_gcv_without_two_groups():
    smi = ["C[C@H](N)C(=O)O", "C[C@@H](N)C(=O)O", "C[C@H](N)C(=O)O"]
    es = ExpressionSet(compounds=["a", "b", "c"], genes=["g0", "g1"],
                       expression=np.array([[1.0, 2.0], [2.0, 3.0], [4.0, 1.0]], np.float32),
                       weights=np.full((2, 3), 0.5, np.float32), n_replicates=np.full(3, 2),
                       control=np.zeros(2), smiles=smi, inchikey=[""] * 3)
    p = make_predictor("ridge_fp").fit(es)
    out = p.predict(["CCO"])
    assert out.info["alpha_grouped_cv"] == 0.0 and out.info["n_duplicate_rows"] == 2
    np.testing.assert_allclose(out.mean[0], es.expression.mean(axis=0), rtol=1e-6)  # nothing to learn


def test_grouped_cv_state_round_trip_keeps_the_diagnostics(tmp_path):
    _, es = toy_set(n_genes=3)
    p = make_predictor("ridge_desc", n_alphas=6).fit(es)
    state = p.get_state()
    np.savez(tmp_path / "s.npz", **state)
    with np.load(tmp_path / "s.npz", allow_pickle=False) as z:
        loaded = {k: z[k] for k in z.files}
    q = make_predictor("ridge_desc", **p.get_config())
    q.set_state(loaded)
    a, b = p.predict(["CCCCO", ""]), q.predict(["CCCCO", ""])
    np.testing.assert_array_equal(a.mean, b.mean)
    assert a.info == b.info and sum(k.startswith("cv_wmse[") for k in a.info) == 6
    # a state saved before the diagnostics existed still loads
    old = {k: v for k, v in loaded.items() if k not in ("info_keys_", "info_values_")}
    r = make_predictor("ridge_desc", **p.get_config())
    r.set_state(old)
    np.testing.assert_array_equal(r.predict(["CCCCO"]).mean, a.mean[:1])


def test_a_flat_inner_cv_curve_leaves_the_choice_to_gcv():
    x, es = toy_set(n_genes=3)
    es.weights[:] = 0.0  # nothing is scored: every alpha looks the same
    alphas = [0.1, 1.0, 10.0, 100.0]
    p = make_predictor("ridge_fp", alphas=alphas).fit(es)
    g = make_predictor("ridge_fp", alphas=alphas, alpha_selection="gcv").fit(es)
    assert p.fit_info_["alpha_grouped_cv"] == 0.0 and np.ptp(p.fit_.cv) == 0
    assert float(p.alpha_) == float(g.alpha_)
