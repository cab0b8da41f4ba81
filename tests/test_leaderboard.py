"""The leaderboard estimate: plate statistics by hand, the expectation formula, the fallback without
plates, and coverage of the held-out test score on a small simulated set with its own test plates."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from contest_scorer import score_compounds
from drugcell.config import PredictorSpec, config_from_dict
from drugcell.data.expression_set import ExpressionSet
from drugcell.data.plates import ControlAccumulator, PlateLayout, compound_plate_counts
from drugcell.evaluation.leaderboard import LeaderboardEstimator, PlateModel, TestLayout


def _layout(rng, n_comp=30, n_plates=5, n_genes=4):
    plate_of = rng.integers(0, n_plates, size=(n_comp, 2))
    counts = compound_plate_counts(np.repeat(np.arange(n_comp), 2), plate_of.ravel(), n_comp, n_plates)
    mean = rng.normal(0, 0.3, size=(n_plates, n_genes))
    var = rng.uniform(0.01, 0.05, size=(n_plates, n_genes))
    return PlateLayout([f"P{i}" for i in range(n_plates)], counts, mean, var, np.full(n_plates, 8))


def test_plate_statistics_by_hand():
    rng = np.random.default_rng(0)
    lay = _layout(rng)
    # a compound with two wells on one plate has f = 1, on two plates f = 1/2
    c = lay.compound_counts
    f = lay.plate_fraction()
    for i in range(len(c)):
        assert f[i] == pytest.approx(1.0 if c[i].max() == 2 else 0.5)
    d = lay.control_mean - lay.control_mean.mean(axis=0)
    raw = (d.astype(np.float64) ** 2).sum(axis=0) / (lay.n_plates - 1)
    noise = (lay.control_var / 8).mean(axis=0)
    np.testing.assert_allclose(lay.plate_variance(), np.maximum(raw - noise, 0), rtol=1e-6)
    sub = lay.subset(np.array([3, 1]))
    np.testing.assert_array_equal(sub.compound_counts, c[[3, 1]])


def test_control_accumulator_matches_numpy():
    rng = np.random.default_rng(1)
    x = rng.normal(5, 1, size=(40, 6))
    plate = rng.integers(0, 3, size=40)
    acc = ControlAccumulator(3, 6)
    acc.add(plate[:17], x[:17])
    acc.add(plate[17:], x[17:])
    mean, var, n = acc.result()
    for p in range(3):
        np.testing.assert_allclose(mean[p], x[plate == p].mean(axis=0), rtol=1e-6)
        np.testing.assert_allclose(var[p], x[plate == p].var(axis=0, ddof=1), rtol=1e-5)
        assert n[p] == (plate == p).sum()


def test_test_layout_plate_fraction_by_simulation():
    rng = np.random.default_rng(2)
    lay = TestLayout(plates=6, replicates=2)
    slots = rng.integers(0, 6, size=(200_000, 2))
    sim = np.where(slots[:, 0] == slots[:, 1], 1.0, 0.5).mean()
    assert lay.plate_fraction() == pytest.approx(sim, abs=3e-3)
    assert TestLayout(plates=1, replicates=2).plate_fraction() == 1.0


def test_expectation_formula_by_hand():
    rng = np.random.default_rng(3)
    lay = _layout(rng)
    model = PlateModel.from_layout(lay, TestLayout(plates=2, replicates=2))
    est = LeaderboardEstimator(30, model, resamples=50)
    w = rng.dirichlet(np.ones(4), size=30)
    resid = rng.normal(0, 0.5, size=(30, 4)).astype(np.float32)
    wmse = (w * resid ** 2).sum(axis=1)
    idx = np.arange(30)
    est.add_fold_weights("mejia", idx, w.astype(np.float32))
    est.add("p", "mejia", idx, resid, w.astype(np.float32), wmse)
    # base by hand: the error against the plate-free profile, less the noise o_c adds
    a = model.A
    o = a @ model.D
    base = (w * ((resid + o) ** 2 - (a ** 2) @ model.N)).sum(axis=1)
    np.testing.assert_allclose(est._terms[("p", "mejia")].base, base, rtol=1e-4, atol=1e-6)
    row = est.finish().iloc[0]
    f_c = (a ** 2).sum(axis=1)  # this layout has too few one-plate compounds: the rescaled form
    expected = np.mean(base + (model.layout.plate_fraction() / f_c) * (wmse - base))
    assert row.estimate == pytest.approx(expected, rel=1e-6)


def test_plate_excess_recovers_planted_plate_effects_and_widens_the_interval():
    rng = np.random.default_rng(7)
    n_comp, n_plates = 3000, 12
    plate_of = rng.integers(0, n_plates, size=(n_comp, 2))
    counts = compound_plate_counts(np.repeat(np.arange(n_comp), 2), plate_of.ravel(), n_comp, n_plates)
    lay = PlateLayout([f"P{i}" for i in range(n_plates)], counts, rng.normal(0, 0.3, (n_plates, 3)),
                      np.full((n_plates, 3), 0.02), np.full(n_plates, 8))
    model = PlateModel.from_layout(lay, TestLayout(plates=2, replicates=2, compounds=1000))
    planted = rng.normal(0, 0.1, n_plates)
    planted -= planted.mean()
    base = rng.gamma(4.0, 0.1, n_comp)
    cv = base + model.A @ planted
    est = LeaderboardEstimator(n_comp, model, resamples=400)
    got = est.plate_excess(cv)
    assert np.corrcoef(got, planted)[0, 1] > 0.95
    assert np.std(got) == pytest.approx(np.std(planted), rel=0.2)
    flat = est.plate_excess(base)  # no plate effect: the excesses shrink to (nearly) nothing
    assert np.std(flat) < 0.2 * np.std(planted)
    # the interval with plate effects is wider than without
    for name, scores in (("plates", cv), ("flat", base)):
        est.add(name, "mejia", np.arange(n_comp), np.zeros((n_comp, 3), np.float32), np.ones(3, np.float32) / 3,
                scores)
        est._terms[(name, "mejia")].base[:] = scores  # isolate the interval: no own-plate term
    est._well["mejia"] = np.zeros(n_comp)
    est._sig["mejia"] = np.zeros(n_comp)
    est._own["mejia"] = np.zeros(n_comp)
    t = est.finish().set_index("predictor")
    assert (t.loc["plates", "ci_high"] - t.loc["plates", "ci_low"]) > 1.5 * (t.loc["flat", "ci_high"] - t.loc["flat", "ci_low"])


def test_without_plates_the_estimate_is_the_cv_mean():
    est = LeaderboardEstimator(50, None, resamples=200, seed=1)
    vals = np.random.default_rng(4).gamma(2.0, 0.2, size=50)
    est.add("mean", "mejia", np.arange(50), np.zeros((50, 3), np.float32), np.ones(3, np.float32) / 3, vals)
    row = est.finish().iloc[0]
    assert row.estimate == pytest.approx(vals.mean()) and np.isnan(row.floor)
    assert row.ci_low < vals.mean() < row.ci_high


@pytest.mark.slow
def test_interval_covers_the_held_out_test_plates_on_a_simulated_set(tmp_path):
    """A small simulated set whose test compounds sit on their own plates, as in the contest: the
    estimate's 95% interval covers the official score of the refitted model on those plates."""
    from drugcell.data.loader import load_to_cache
    from drugcell.data.simulate import simulate_vcpi
    from drugcell.evaluation.cv import run_cv
    from drugcell.submission import make_submission

    files = simulate_vcpi(tmp_path / "sim", n_compounds=1500, n_genes=2000, n_test=150, seed=0)
    with pytest.warns(UserWarning):
        load_to_cache(tmp_path / "cache", files["train_counts"], files["train_metadata"],
                      files["train_chemistry"], files["gene_filter"], progress=False)
    es = ExpressionSet.load(tmp_path / "cache")
    assert es.plates is not None and es.plates.usable().sum() >= 3
    n_test_plates = max(1, math.ceil(150 * 2 / 332))  # what the user knows: how many plates the test set has
    preds = [{"name": "mean", "kind": "mean"}, {"name": "wmean", "kind": "wmean"}]
    cfg = config_from_dict({"cv": {"folds": 3, "bootstrap_resamples": 200, "metrics": ["mejia"]},
                            "estimate": {"test_plates": n_test_plates, "test_compounds": 150, "resamples": 300},
                            "predictors": preds})
    res = run_cv(es, cfg, tmp_path / "run", progress=False)
    est = pd.read_parquet(tmp_path / "run" / "leaderboard_estimate.parquet").set_index("predictor")
    assert list(est.columns[:4]) == ["metric", "estimate", "ci_low", "ci_high"]
    truth = pd.read_parquet(files["test_truth"])
    weights = pd.read_parquet(files["test_weights"]).set_index("gene_id")
    for p in preds:
        out = tmp_path / f"{p['name']}.parquet"
        make_submission(es, PredictorSpec(p["name"], p["kind"]), files["test_compounds"], files["gene_filter"],
                        out, write_std=False)
        test = float(score_compounds(truth, pd.read_parquet(out), weights=weights)["wmse"].mean())
        row = est.loc[p["name"]]
        assert row.ci_low <= test <= row.ci_high, (p["name"], row.to_dict(), test)
        assert row.estimate > row.cv_mean  # new plates cost: CV alone is optimistic
        assert row.floor < row.estimate
    assert "## Leaderboard estimate" in (tmp_path / "run" / "summary.md").read_text()
    assert res.estimate is not None


def test_plate_excess_survives_an_empty_plate_and_twin_plates():
    """A usable plate with no library compound, or two plates that always hold the same compounds,
    must not wipe out the plate term (a singular A'A used to)."""
    rng = np.random.default_rng(11)
    n_comp, n_plates = 2000, 12
    plate_of = rng.integers(0, n_plates, size=(n_comp, 2))
    plate_of[:, 1] = np.where(plate_of[:, 0] == 10, 11, plate_of[:, 1])   # plates 10 and 11: twins
    plate_of[:, 1] = np.where(plate_of[:, 1] == 10, plate_of[:, 0], plate_of[:, 1])
    plate_of[:, 0] = np.where(plate_of[:, 0] == 11, 0, plate_of[:, 0])
    counts = compound_plate_counts(np.repeat(np.arange(n_comp), 2), plate_of.ravel(), n_comp, n_plates + 1)
    lay = PlateLayout([f"P{i}" for i in range(n_plates + 1)], counts, rng.normal(0, 0.3, (n_plates + 1, 3)),
                      np.full((n_plates + 1, 3), 0.02), np.full(n_plates + 1, 8))   # plate 12: DMSO only
    model = PlateModel.from_layout(lay, TestLayout(plates=2, replicates=2, compounds=500))
    assert not model.estimable()[-1]
    planted = rng.normal(0, 0.1, n_plates + 1)
    cv = rng.gamma(4.0, 0.1, n_comp) + model.A @ planted
    got = LeaderboardEstimator(n_comp, model, resamples=10).plate_excess(cv)
    assert len(got) == int(model.estimable().sum()) and np.std(got) > 0.5 * np.std(planted[:n_plates])
