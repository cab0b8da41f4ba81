"""Metric registry (weights by hand) and the CV summary (ranks, fold std, Kendall tau, flips)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from drugcell.errors import DrugcellInputError
from drugcell.evaluation.summary import summarize
from drugcell.metrics import available, get_metric, metric_weights, score, score_all


def _case(seed=0, c=6, g=5):
    rng = np.random.default_rng(seed)
    truth = rng.gamma(2.0, 1.0, size=(c, g))
    train = rng.gamma(2.0, 1.0, size=(3 * c, g))
    w = rng.uniform(0, 1, size=(g, c))
    return truth, train, w / w.sum(axis=0, keepdims=True)


def test_registry_lists_the_three_metrics_lower_is_better():
    assert available()[:3] == ["mejia", "proxy", "variance"]
    assert all(get_metric(m).direction == "lower" for m in available())
    with pytest.raises(DrugcellInputError, match="unknown metric 'mse'.*mejia"):
        get_metric("mse")


@pytest.mark.parametrize("metric", ["mejia", "proxy", "variance"])
def test_truth_vs_truth_is_zero_and_constant_shift_gives_d_squared(metric):
    truth, train, w = _case()
    zero = score(metric, truth, truth.copy(), test_weights_gc=w, train_truth_cg=train)
    np.testing.assert_array_equal(zero, np.zeros(len(truth)))
    shifted = score(metric, truth, truth + 0.3, test_weights_gc=w, train_truth_cg=train)
    np.testing.assert_allclose(shifted, np.full(len(truth), 0.09), rtol=1e-12)


def test_tiny_case_by_hand():
    # truth: gene 0 takes values 0, 2 (variance 1); gene 1 takes 0, 1 (variance 0.25).
    truth = np.array([[0.0, 0.0], [2.0, 1.0]])
    pred = np.array([[1.0, 0.0], [2.0, 0.0]])  # squared errors: c0 (1, 0), c1 (0, 1)
    # variance weights (1, 0.25) / 1.25 = (0.8, 0.2) -> wMSE c0 = 0.8, c1 = 0.2
    np.testing.assert_allclose(score("variance", truth, pred), [0.8, 0.2])
    # proxy from the same truth used as training: 1/var = (1, 4) / 5 = (0.2, 0.8)
    np.testing.assert_allclose(score("proxy", truth, pred, train_truth_cg=truth), [0.2, 0.8])
    # mejia: weights genes x compounds given; c0 uses column 0 (0.7, 0.3), c1 column 1 (0.4, 0.6)
    w = np.array([[0.7, 0.4], [0.3, 0.6]])
    np.testing.assert_allclose(score("mejia", truth, pred, test_weights_gc=w), [0.7, 0.6])


def test_weights_match_plain_formulas():
    truth, train, w = _case(seed=3, c=7, g=4)
    c, g = truth.shape
    var_plain = []
    for j in range(g):
        m = sum(truth[i, j] for i in range(c)) / c
        var_plain.append(sum((truth[i, j] - m) ** 2 for i in range(c)) / c)  # ddof=0
    np.testing.assert_allclose(metric_weights("variance", truth),
                               np.array(var_plain) / sum(var_plain), rtol=1e-12)
    inv_plain = []
    for j in range(g):
        col = [train[i, j] for i in range(len(train))]
        m = sum(col) / len(col)
        inv_plain.append(1.0 / (sum((x - m) ** 2 for x in col) / len(col)))
    pw = metric_weights("proxy", truth, train_truth_cg=train)
    np.testing.assert_allclose(pw, np.array(inv_plain) / sum(inv_plain), rtol=1e-12)
    assert pw.sum() == pytest.approx(1.0)
    # mejia: per compound sum_g W[g, c] * err^2 with a plain loop
    pred = truth + np.random.default_rng(1).normal(size=truth.shape)
    plain = [sum(w[j, i] * (pred[i, j] - truth[i, j]) ** 2 for j in range(g)) for i in range(c)]
    np.testing.assert_allclose(score("mejia", truth, pred, test_weights_gc=w), plain, rtol=1e-12)


def test_proxy_ignores_held_out_truth_and_mejia_needs_weights():
    truth, train, w = _case(seed=4)
    pred = truth + 0.5 * np.random.default_rng(0).normal(size=truth.shape)
    a = score("proxy", truth, pred, train_truth_cg=train)
    b = score("proxy", truth * 3.0, pred - truth + truth * 3.0, train_truth_cg=train)
    np.testing.assert_allclose(a, b, rtol=1e-10)  # same errors, other truth: same weights
    with pytest.raises(DrugcellInputError, match="test_weights_gc"):
        score("mejia", truth, pred)
    with pytest.raises(DrugcellInputError, match="genes x compounds"):
        score("mejia", truth, pred, test_weights_gc=w.T)
    with pytest.raises(DrugcellInputError, match="train_truth_cg"):
        score("proxy", truth, pred)
    with pytest.raises(DrugcellInputError, match="NaN"):
        score("variance", truth, np.full_like(truth, np.nan))
    all3 = score_all(truth, pred, test_weights_gc=w, train_truth_cg=train)
    assert set(all3) == {"mejia", "proxy", "variance"}
    np.testing.assert_allclose(all3["proxy"], a)


def _scores_frame():
    # 3 predictors x 2 metrics x 4 compounds in 2 folds (c0, c1 in fold 0; c2, c3 in fold 1).
    vals = {
        ("mejia", "mean"): [1.0, 1.0, 2.0, 2.0],   # mean 1.5, fold means 1, 2
        ("mejia", "knn"): [0.5, 0.5, 1.5, 1.5],    # mean 1.0
        ("mejia", "ridge"): [1.0, 1.0, 1.0, 1.0],  # mean 1.0 (tie with knn)
        ("proxy", "mean"): [3.0, 3.0, 3.0, 3.0],   # 3.0
        ("proxy", "knn"): [1.0, 2.0, 1.0, 2.0],    # 1.5
        ("proxy", "ridge"): [1.0, 1.0, 1.0, 1.0],  # 1.0
        ("variance", "mean"): [0.1] * 4,            # best under variance: order reversed
        ("variance", "knn"): [0.3] * 4,
        ("variance", "ridge"): [0.2] * 4,
    }
    rows = [{"predictor": p, "fold": i // 2, "compound": f"c{i}", "metric": m, "wmse": v}
            for (m, p), vs in vals.items() for i, v in enumerate(vs)]
    return pd.DataFrame(rows)


def test_summary_means_fold_std_ranks_by_hand():
    s = summarize(_scores_frame(), notes=["fell back to random"])
    t = s.table.set_index(["metric", "predictor"])
    assert t.loc[("mejia", "mean"), "mean"] == pytest.approx(1.5)
    assert t.loc[("mejia", "mean"), "fold_mean"] == pytest.approx(1.5)
    # fold means 1 and 2: sample std (ddof=1) = sqrt(0.5)
    assert t.loc[("mejia", "mean"), "fold_std"] == pytest.approx(np.sqrt(0.5))
    assert t.loc[("proxy", "knn"), "fold_std"] == pytest.approx(0.0)
    assert int(t.loc[("mejia", "mean"), "n_compounds"]) == 4
    assert int(t.loc[("mejia", "mean"), "n_folds"]) == 2
    ranks = s.ranks()
    assert ranks.loc["knn", "mejia"] == 1 and ranks.loc["ridge", "mejia"] == 1  # tie shares 1
    assert ranks.loc["mean", "mejia"] == 3
    assert list(ranks["proxy"].loc[["ridge", "knn", "mean"]]) == [1, 2, 3]
    assert list(ranks["variance"].loc[["mean", "ridge", "knn"]]) == [1, 2, 3]


def test_summary_rank_agreement_tau_and_flips_by_hand():
    ag = summarize(_scores_frame()).agreement.set_index(["metric_a", "metric_b"])
    # proxy order ridge < knn < mean; variance order mean < ridge < knn.
    # Pairs: (ridge, knn) concordant; (ridge, mean) and (knn, mean) discordant -> tau = (1-2)/3.
    assert ag.loc[("proxy", "variance"), "kendall_tau"] == pytest.approx(-1 / 3)
    assert ag.loc[("proxy", "variance"), "n_flips"] == 2
    flips = ag.loc[("proxy", "variance"), "flips"]
    assert "knn beats mean under proxy, reversed under variance" in flips
    assert "ridge beats mean under proxy, reversed under variance" in flips
    # mejia has a tie (knn = ridge): ties are not flips; knn/mean and ridge/mean agree with proxy.
    assert ag.loc[("mejia", "proxy"), "n_flips"] == 0
    # tau-b with one tied pair in x: concordant 2, discordant 0, tau = 2 / sqrt(2 * 3)
    assert ag.loc[("mejia", "proxy"), "kendall_tau"] == pytest.approx(2 / np.sqrt(6))


def test_summary_markdown_is_readable_and_carries_notes():
    from drugcell.evaluation.bootstrap import compare_all

    frame = _scores_frame()
    s = summarize(frame, notes=["only 2 scaffold groups: fell back to a RANDOM split"])
    md = s.to_markdown(comparisons=compare_all(frame, n_resamples=200, seed=0))
    assert "| predictor | mejia wMSE (fold std) [rank] |" in md
    assert "| knn | 1.0000 (0.7071) [1] | 1.5000 (0.0000) [2] | 0.3000 (0.0000) [3] |" in md
    assert "| mean | 1.5000 (0.7071) [3] |" in md
    assert "> **Note:** only 2 scaffold groups" in md
    assert "Kendall tau" in md and "reversed under variance" in md
    assert "Paired bootstrap" in md


def test_summary_refuses_missing_columns():
    with pytest.raises(DrugcellInputError, match="fold"):
        summarize(_scores_frame().drop(columns=["fold"]))
