"""Paired bootstrap: known answers, a slow reference loop, and consistency across pairs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from drugcell.errors import DrugcellInputError
from drugcell.evaluation import bootstrap
from drugcell.evaluation.bootstrap import bootstrap_means, compare_all, paired_bootstrap


def slow_paired_bootstrap(a, b, n_resamples, seed, ci):
    """The plain definition, one resample at a time."""
    d = np.asarray(a, float) - np.asarray(b, float)
    rng = np.random.default_rng(seed)
    boot = np.empty(n_resamples)
    for r in range(n_resamples):
        idx = rng.integers(0, len(d), size=len(d))
        boot[r] = d[idx].mean()
    lo, hi = np.quantile(boot, [(1 - ci) / 2, 1 - (1 - ci) / 2])
    below = sum(1 for x in boot if x <= 0) / n_resamples
    above = sum(1 for x in boot if x >= 0) / n_resamples
    return d.mean(), lo, hi, min(1.0, 2 * min(below, above))


def test_constant_difference_gives_point_ci_and_zero_p():
    rng = np.random.default_rng(1)
    b = rng.gamma(2.0, 0.3, size=200)
    a = b + 0.25
    r = paired_bootstrap(a, b, n_resamples=2000, seed=3)
    assert r["diff"] == pytest.approx(0.25, abs=1e-12)
    assert r["ci_low"] == pytest.approx(0.25, abs=1e-12)
    assert r["ci_high"] == pytest.approx(0.25, abs=1e-12)
    assert r["p_value"] == 0.0
    assert r["mean_a"] - r["mean_b"] == pytest.approx(0.25)


def test_symmetric_zero_mean_differences_give_p_near_one():
    half = np.random.default_rng(2).uniform(0.1, 1.0, size=100)
    d = np.concatenate([half, -half])  # exactly symmetric, mean 0
    b = np.full(200, 1.0)
    r = paired_bootstrap(b + d, b, n_resamples=4000, seed=0)
    assert r["diff"] == pytest.approx(0.0, abs=1e-12)
    assert r["ci_low"] < 0 < r["ci_high"]
    assert r["p_value"] > 0.85


def test_two_compound_case_has_exact_answer():
    # d = [0, 1]: a resampled mean is 0, 0.5 or 1 with probability 1/4, 1/2, 1/4, so
    # P*(d<=0) = 1/4, P*(d>=0) = 1 and p = 2 * 1/4 = 0.5; the 95% CI is [0, 1].
    r = paired_bootstrap([0.0, 1.0], [0.0, 0.0], n_resamples=20_000, seed=5)
    assert r["diff"] == 0.5
    assert r["p_value"] == pytest.approx(0.5, abs=0.02)
    assert (r["ci_low"], r["ci_high"]) == (0.0, 1.0)


@pytest.mark.parametrize("max_chunk", [7 * 37, 1 << 22])
def test_matches_slow_loop_with_same_seed(monkeypatch, max_chunk):
    # A tiny chunk limit forces many chunks (and a ragged last one): results must not change.
    monkeypatch.setattr(bootstrap, "_MAX_CHUNK_ELEMENTS", max_chunk)
    rng = np.random.default_rng(7)
    a = rng.normal(1.0, 0.5, size=37)
    b = a + rng.normal(0.1, 0.3, size=37)
    fast = paired_bootstrap(a, b, n_resamples=1500, seed=11, ci=0.9)
    diff, lo, hi, p = slow_paired_bootstrap(a, b, 1500, 11, 0.9)
    assert fast["diff"] == pytest.approx(diff, abs=1e-12)
    assert fast["ci_low"] == pytest.approx(lo, abs=1e-12)
    assert fast["ci_high"] == pytest.approx(hi, abs=1e-12)
    assert fast["p_value"] == pytest.approx(p, abs=1e-12)


def test_bootstrap_means_are_paired_across_columns():
    rng = np.random.default_rng(0)
    s = rng.normal(size=(25, 3))
    boot = bootstrap_means(s, n_resamples=300, seed=4)
    # Means are linear: resampling (s0 - s1) equals the difference of the resampled means.
    d = bootstrap_means(s[:, 0] - s[:, 1], n_resamples=300, seed=4)[:, 0]
    np.testing.assert_allclose(boot[:, 0] - boot[:, 1], d, atol=1e-12)


def _long(scores: dict[str, np.ndarray], metric: str = "mejia") -> pd.DataFrame:
    rows = []
    for pred, v in scores.items():
        for i, x in enumerate(v):
            rows.append({"predictor": pred, "fold": i % 3, "compound": f"c{i}", "metric": metric,
                         "wmse": float(x)})
    return pd.DataFrame(rows)


def test_compare_all_equals_pairwise_bootstrap_with_shared_indices():
    rng = np.random.default_rng(3)
    base = rng.gamma(2.0, 0.3, size=60)
    s = {"mean": base + 0.2 + rng.normal(0, 0.05, 60), "knn": base,
         "ridge": base + 0.05 + rng.normal(0, 0.1, 60)}
    frame = pd.concat([_long(s, "mejia"), _long({k: 2 * v for k, v in s.items()}, "proxy")])
    frame = frame.sample(frac=1.0, random_state=0)  # row order must not matter
    out = compare_all(frame, n_resamples=800, seed=9)
    assert len(out) == 6  # 3 unordered pairs x 2 metrics
    # compare_all resamples compounds in sorted-id order (c0, c1, c10, ...), whatever the row order.
    order = np.argsort([f"c{i}" for i in range(60)])
    for r in out.itertuples(index=False):
        scale = 2.0 if r.metric == "proxy" else 1.0
        ref = paired_bootstrap(scale * s[r.predictor_a][order], scale * s[r.predictor_b][order],
                               n_resamples=800, seed=9)
        assert r.mean_a <= r.mean_b  # better (lower) predictor listed first
        assert r.diff == pytest.approx(ref["diff"], abs=1e-12)
        assert r.ci_low == pytest.approx(ref["ci_low"], abs=1e-9)
        assert r.ci_high == pytest.approx(ref["ci_high"], abs=1e-9)
        assert r.p_value == pytest.approx(ref["p_value"], abs=1e-9)
    ordered = compare_all(frame, n_resamples=800, seed=9, ordered=True)
    assert len(ordered) == 12
    fwd = ordered.set_index(["metric", "predictor_a", "predictor_b"])
    assert fwd.loc[("mejia", "knn", "mean"), "diff"] == pytest.approx(
        -fwd.loc[("mejia", "mean", "knn"), "diff"])


def test_compare_all_refuses_unpaired_or_repeated_scores():
    s = {"a": np.arange(5.0), "b": np.arange(5.0) + 1}
    frame = _long(s)
    with pytest.raises(DrugcellInputError, match="predictor b has no score for compound c4"):
        compare_all(frame.drop(frame.index[-1]), n_resamples=10)
    with pytest.raises(DrugcellInputError, match="repeated"):
        compare_all(pd.concat([frame, frame.iloc[:1]]), n_resamples=10)


def test_paired_bootstrap_refuses_bad_input():
    with pytest.raises(DrugcellInputError, match="equal lengths"):
        paired_bootstrap([1.0, 2.0], [1.0])
    with pytest.raises(DrugcellInputError, match="non-finite"):
        paired_bootstrap([1.0, np.nan], [1.0, 2.0])
    with pytest.raises(DrugcellInputError, match="ci"):
        paired_bootstrap([1.0, 2.0], [1.0, 2.0], ci=95)


def test_compare_all_metrics_on_different_compounds_still_match_pairwise():
    # "proxy" scores only 40 of the 60 compounds: that metric gets its own resamples (same seed).
    rng = np.random.default_rng(8)
    s = {"a": rng.gamma(2.0, 0.3, size=60), "b": rng.gamma(2.0, 0.3, size=60)}
    mejia = _long(s, "mejia")
    proxy = _long(s, "proxy")
    proxy = proxy[proxy["compound"].isin([f"c{i}" for i in range(40)])]
    out = compare_all(pd.concat([mejia, proxy]), n_resamples=500, seed=2)
    for metric, n in (("mejia", 60), ("proxy", 40)):
        r = out[out["metric"] == metric].iloc[0]
        order = np.argsort([f"c{i}" for i in range(n)])
        ref = paired_bootstrap(s[r.predictor_a][:n][order], s[r.predictor_b][:n][order],
                               n_resamples=500, seed=2)
        assert r.n_compounds == n
        assert (r.ci_low, r.ci_high) == pytest.approx((ref["ci_low"], ref["ci_high"]), abs=1e-9)
        assert r.p_value == pytest.approx(ref["p_value"], abs=1e-9)
