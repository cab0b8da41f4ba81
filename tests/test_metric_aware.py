"""Metric-aware baseline and model choice: wmean, Holm-corrected comparisons, the choice rule."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import minimize

from drugcell.errors import DrugcellInputError
from drugcell.evaluation.bootstrap import compare_all, holm
from drugcell.evaluation.selection import choose
from drugcell.models import get_class, make_predictor
from drugcell.models.baselines import weighted_mean_profile


def _weights(rng, n_genes, n_comp):
    w = rng.random((n_genes, n_comp)) ** 4  # peaked, like Mejia weights
    return (w / w.sum(axis=0, keepdims=True)).astype(np.float32)


def test_wmean_equals_a_brute_force_minimiser_of_the_training_wmse():
    rng = np.random.default_rng(3)
    n_comp, n_genes = 40, 6
    y = (rng.normal(2.0, 1.0, size=(n_comp, n_genes)) + rng.exponential(1.0, size=(n_comp, n_genes))).astype(np.float32)
    w = _weights(rng, n_genes, n_comp)

    y64, w64 = y.astype(np.float64), w.astype(np.float64)

    def training_wmse(p):
        return float(np.mean(np.sum(w64.T * (p[None, :] - y64) ** 2, axis=1)))

    brute = minimize(training_wmse, x0=y64.mean(axis=0), method="Nelder-Mead",
                     options={"xatol": 1e-9, "fatol": 1e-14, "maxiter": 40_000, "maxfev": 40_000}).x
    got = weighted_mean_profile(y, w)
    np.testing.assert_allclose(got, brute, atol=1e-5)
    assert training_wmse(got) <= training_wmse(y.mean(axis=0)) + 1e-12
    # by hand for gene 0
    assert got[0] == pytest.approx(float((w[0] * y[:, 0]).sum() / w[0].sum()), rel=1e-6)


def test_wmean_predictor_predicts_the_weighted_profile():
    rng = np.random.default_rng(0)
    from drugcell.data.expression_set import ExpressionSet

    n, g = 8, 5
    es = ExpressionSet(
        compounds=np.array([f"c{i}" for i in range(n)]), genes=np.array([f"g{j}" for j in range(g)]),
        expression=rng.random((n, g)).astype(np.float32) + 1, weights=_weights(rng, g, n),
        n_replicates=np.full(n, 2, np.int32), control=np.ones(g, np.float32),
        smiles=np.array(["CCO"] * n), inchikey=np.array([""] * n),
    )
    pred = make_predictor("wmean").fit(es).predict(["CCN", "c1ccccc1"])
    np.testing.assert_allclose(pred.mean, np.vstack([weighted_mean_profile(es.expression, es.weights)] * 2))
    assert pred.std is None and get_class("wmean").simplicity < get_class("knn").simplicity


def test_holm_by_hand():
    p = [0.01, 0.04, 0.03, 0.005]
    # sorted: 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> running max 0.02, 0.03, 0.06, 0.06
    np.testing.assert_allclose(holm(p), [0.03, 0.06, 0.06, 0.02])
    assert holm([]).size == 0
    assert holm([0.9, 0.8]).max() <= 1.0


def _scores(means: dict[str, float], n: int = 200, noise: float = 0.05, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    base = rng.normal(0.5, 0.2, n)
    rows = []
    for name, m in means.items():
        vals = base + m + rng.normal(0, noise, n)
        rows.append(pd.DataFrame({"predictor": name, "fold": 0, "compound": [f"c{i}" for i in range(n)],
                                  "metric": "mejia", "wmse": vals}))
    return pd.concat(rows, ignore_index=True)


def test_compare_all_adds_holm_within_each_metric():
    scores = _scores({"a": 0.0, "b": 0.001, "c": 0.1})
    comp = compare_all(scores, n_resamples=500, seed=1)
    np.testing.assert_allclose(comp["p_holm"], holm(np.maximum(comp["p_value"], 1 / 500)))
    assert (comp["p_holm"] >= comp["p_value"]).all()


def test_choice_rule_on_a_hand_made_table():
    # hand-made comparisons: 'fusion' has the lowest mean but is not significantly better than 'ridge'
    # or 'knn'; 'knn' is simpler than 'ridge'; 'mean' is beaten by all three.
    scores = pd.DataFrame({
        "predictor": ["fusion", "ridge", "knn", "mean"], "fold": 0, "compound": "c1", "metric": "mejia",
        "wmse": [0.50, 0.505, 0.51, 0.57]})
    comp = pd.DataFrame([
        ("mejia", "fusion", "ridge", -0.005, 0.40), ("mejia", "fusion", "knn", -0.010, 0.20),
        ("mejia", "ridge", "knn", -0.005, 0.50), ("mejia", "fusion", "mean", -0.07, 0.001),
        ("mejia", "ridge", "mean", -0.065, 0.001), ("mejia", "knn", "mean", -0.06, 0.004),
    ], columns=["metric", "predictor_a", "predictor_b", "diff", "p_holm"])
    simplicity = {"mean": 1, "knn": 20, "ridge": 30, "fusion": 50}
    c = choose(scores, comp, "mejia", simplicity)
    assert c.predictor == "knn" and c.lowest == "fusion"
    assert set(c.unbeaten) == {"fusion", "ridge", "knn"} and c.beaten_by["mean"] in {"fusion", "ridge", "knn"}
    assert "not significantly better" in c.reason and "Holm p = 0.2" in c.reason
    # with knn beaten significantly, ridge is the simplest unbeaten
    comp2 = comp.copy()
    comp2.loc[(comp2.predictor_a == "fusion") & (comp2.predictor_b == "knn"), "p_holm"] = 0.01
    assert choose(scores, comp2, "mejia", simplicity).predictor == "ridge"
    # the old rule
    assert choose(scores, comp, "mejia", simplicity, rule="lowest").predictor == "fusion"
    # a stricter alpha makes 'mean' unbeaten too, and it is the simplest
    assert choose(scores, comp, "mejia", simplicity, alpha=0.0005).predictor == "mean"
    with pytest.raises(DrugcellInputError, match="unknown selection rule"):
        choose(scores, comp, "mejia", simplicity, rule="best")
    with pytest.raises(DrugcellInputError, match="no scores for metric"):
        choose(scores, comp, "proxy", simplicity)


def test_choice_ties_in_simplicity_break_by_mean():
    scores = pd.DataFrame({"predictor": ["knn_a", "knn_b"], "fold": 0, "compound": "c", "metric": "m",
                           "wmse": [0.52, 0.51]})
    comp = pd.DataFrame([("m", "knn_b", "knn_a", -0.01, 0.7)],
                        columns=["metric", "predictor_a", "predictor_b", "diff", "p_holm"])
    assert choose(scores, comp, "m", {"knn_a": 20, "knn_b": 20}).predictor == "knn_b"


def test_choice_refuses_to_call_everything_tied_when_resamples_are_too_few():
    # 3 predictors, 3 pairs, 20 resamples: the smallest Holm p is 3/20 = 0.15 >= 0.05, so the rule
    # could never find a difference and would always pick the simplest (control): it takes the lowest
    scores = pd.DataFrame({"predictor": ["good", "mid", "control"], "fold": 0, "compound": "c", "metric": "m",
                           "wmse": [0.3, 0.5, 1.4]})
    comp = pd.DataFrame([("m", "good", "mid", -0.2, 0.15, 20), ("m", "good", "control", -1.1, 0.15, 20),
                         ("m", "mid", "control", -0.9, 0.15, 20)],
                        columns=["metric", "predictor_a", "predictor_b", "diff", "p_holm", "n_resamples"])
    c = choose(scores, comp, "m", {"control": 0, "mid": 20, "good": 30})
    assert c.predictor == "good" and c.rule == "lowest" and "no difference could be significant" in c.reason
    comp["n_resamples"] = 10_000
    assert choose(scores, comp, "m", {"control": 0, "mid": 20, "good": 30}).predictor == "control"  # p_holm 0.15


def test_predictors_that_select_under_a_metric_get_the_runs_metric():
    from drugcell.config import PredictorSpec
    from drugcell.fitting import fit_spec

    ridge = PredictorSpec("r", "ridge_fp", {})
    assert ridge.build(metric="proxy").params["metric"] == "proxy"
    assert PredictorSpec("r", "ridge_fp", {"metric": "variance"}).build(metric="proxy").params["metric"] == "variance"
    assert "metric" not in PredictorSpec("m", "mean", {}).build(metric="proxy").params  # takes none
    rng = np.random.default_rng(0)
    from drugcell.data.expression_set import ExpressionSet

    smiles = ["CCO", "CCN", "CCC", "c1ccccc1", "CC(=O)O", "CCCl", "CCBr", "c1ccncc1", "CCCO", "CCCN"]
    n, g = len(smiles), 4
    es = ExpressionSet(
        compounds=np.array([f"c{i}" for i in range(n)]), genes=np.array([f"g{j}" for j in range(g)]),
        expression=rng.random((n, g)).astype(np.float32) + 1, weights=_weights(rng, g, n),
        n_replicates=np.full(n, 2, np.int32), control=np.ones(g, np.float32),
        smiles=np.array(smiles), inchikey=np.array([""] * n))
    model = fit_spec(es, PredictorSpec("r", "ridge_fp", {"alpha_selection": "gcv"}), seed=0, metric="proxy")
    assert model.params["metric"] == "proxy"
