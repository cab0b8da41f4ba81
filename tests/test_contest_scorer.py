"""The contest arithmetic, pinned on examples worked by hand (see comments for the working)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import contest_scorer as cs
from contest_scorer import ScoringError

# Two compounds (A, B) x two replicates; library exactly 1e6 so CPM == count and
# L = log2(count + 1) is an integer. A filler gene outside the gene filter completes the library.
L = {  # gene -> [A1, A2, B1, B2]
    "g1": [1, 3, 5, 7],
    "g2": [2, 2, 2, 4],
    "g3": [0, 1, 0, 1],
}
SAMPLES = ["s1", "s2", "s3", "s4"]


def _hand_counts() -> tuple[pd.DataFrame, pd.DataFrame]:
    rows = {g: [2**v - 1 for v in vals] for g, vals in L.items()}
    filler = [1_000_000 - sum(rows[g][i] for g in rows) for i in range(4)]
    counts = pd.DataFrame({"gene_id": [*rows, "filler"]})
    for i, s in enumerate(SAMPLES):
        counts[s] = [rows[g][i] for g in rows] + [filler[i]]
    meta = pd.DataFrame({"sequenced_id": SAMPLES, "compound": ["A", "A", "B", "B"]})
    return counts, meta


def test_t_statistic_by_hand():
    # g1: A mean 2 var 2, B (rest) mean 6 var 2; V_g = var(1,3,5,7) = 20/3 floors both.
    #     t_A = (2 - 6) / sqrt(20/3/2 + 20/3/2) = -4 / sqrt(20/3) = -1.5491933
    # g2: A mean 2 var 0, B mean 3 var 2; V_g = var(2,2,2,4) = 1
    #     t_A = (2 - 3) / sqrt(max(0,1)/2 + max(2,1)/2) = -1 / sqrt(1.5) = -0.8164966
    # g3: equal means -> t = 0
    x = np.array([L[g] for g in ("g1", "g2", "g3")], dtype=float)  # genes x samples
    mean_p = np.stack([x[:, :2].mean(1), x[:, 2:].mean(1)])
    var_p = np.stack([x[:, :2].var(1, ddof=1), x[:, 2:].var(1, ddof=1)])
    t = cs.t_vs_rest(mean_p, var_p, np.array([2, 2]), x.sum(1), (x * x).sum(1), 4)
    np.testing.assert_allclose(t[0], [-4 / np.sqrt(20 / 3), -1 / np.sqrt(1.5), 0.0], rtol=1e-12)
    np.testing.assert_allclose(t[1], -t[0], rtol=1e-12)


def test_mejia_weights_by_hand():
    # |t|_A = [1.5492, 0.8165, 0]: min-max -> [1, 0.52705, 0]; squared -> [1, 5/18, 0];
    # normalised -> [18/23, 5/23, 0]. B is the mirror image, so the same.
    counts, meta = _hand_counts()
    w = cs.compute_mejia_weights(counts, meta, gene_filter=["g1", "g2", "g3"], library="all")
    assert list(w.index) == ["g1", "g2", "g3"] and list(w.columns) == ["A", "B"]
    np.testing.assert_allclose(w["A"], [18 / 23, 5 / 23, 0.0], rtol=1e-12)
    np.testing.assert_allclose(w["B"], [18 / 23, 5 / 23, 0.0], rtol=1e-12)


def test_library_modes_differ_and_scored_equals_restricted_counts():
    counts, meta = _hand_counts()
    genes = ["g1", "g2", "g3"]
    scored = cs.compute_mejia_weights(counts, meta, gene_filter=genes, library="scored")
    restricted = cs.compute_mejia_weights(counts[counts.gene_id != "filler"], meta, library="all")
    pd.testing.assert_frame_equal(scored, restricted)
    every = cs.compute_mejia_weights(counts, meta, gene_filter=genes, library="all")
    assert not np.allclose(scored.to_numpy(), every.to_numpy())
    np.testing.assert_allclose(scored.sum(axis=0), 1.0)


def test_weights_match_plain_loop_formula():
    rng = np.random.default_rng(0)
    n_genes, comps = 7, ["a", "b", "c", "d", "e"]
    reps = [3, 2, 1, 2, 4]  # "c" is a singleton: v_p = V_g
    sample_comp = np.repeat(comps, reps)
    counts = rng.negative_binomial(5, 0.01, size=(n_genes, len(sample_comp)))
    cols = [f"s{i}" for i in range(len(sample_comp))]
    df = pd.DataFrame(counts, columns=cols)
    df.insert(0, "gene_id", [f"G{i}" for i in range(n_genes)])
    meta = pd.DataFrame({"sequenced_id": cols, "compound": sample_comp})
    with pytest.warns(UserWarning, match="<2 replicates"):
        fast = cs.compute_mejia_weights(df, meta)
    lib = counts.sum(0)
    x = np.log2(counts / lib * 1e6 + 1)
    expected = np.zeros((n_genes, len(comps)))
    for j, c in enumerate(comps):
        own, rest = x[:, sample_comp == c], x[:, sample_comp != c]
        for g in range(n_genes):
            v_all = np.var(x[g], ddof=1)
            v_p = v_all if own.shape[1] < 2 else max(np.var(own[g], ddof=1), v_all)
            v_r = max(np.var(rest[g], ddof=1), v_all)
            se = max(np.sqrt(v_p / own.shape[1] + v_r / rest.shape[1]), 1e-12)
            expected[g, j] = abs(own[g].mean() - rest[g].mean()) / se
        a = expected[:, j]
        s = (a - a.min()) / (a.max() - a.min())
        expected[:, j] = s**2 / np.sum(s**2)
    np.testing.assert_allclose(fast.to_numpy(), expected, rtol=1e-10, atol=1e-14)


def test_degenerate_column_is_uniform():
    w = cs.minmax_square_normalize(np.array([[2.0, 2.0, 2.0], [0.0, 1.0, 2.0]]))
    np.testing.assert_allclose(w[0], [1 / 3] * 3)
    np.testing.assert_allclose(w[1], [0, 0.2, 0.8])


def test_counts_to_expression_by_hand():
    counts, meta = _hand_counts()
    long = cs.counts_to_expression(counts, meta, gene_filter=["g1", "g2", "g3"])
    got = long.set_index(["compound", "gene_id"])["expression"]
    assert got[("A", "g1")] == pytest.approx(2.0, abs=1e-12)  # mean(1, 3)
    assert got[("B", "g2")] == pytest.approx(3.0, abs=1e-12)  # mean(2, 4)
    assert len(long) == 6


def test_empty_library_sample_is_dropped_with_warning():
    counts, meta = _hand_counts()
    counts["s5"] = 0
    meta = pd.concat([meta, pd.DataFrame({"sequenced_id": ["s5"], "compound": ["A"]})])
    with pytest.warns(UserWarning, match="empty-library"):
        long = cs.counts_to_expression(counts, meta, gene_filter=["g1"])
    assert long.set_index("compound").loc["A", "expression"] == pytest.approx(2.0)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda c, m: (c.assign(s1=-c.s1), m), "negative"),
        (lambda c, m: (c, pd.concat([m, m.iloc[:1]])), "duplicate sequenced_id"),
        (lambda c, m: (c, m.drop(columns="compound")), "missing required column"),
    ],
)
def test_counts_bad_input(mutate, message):
    counts, meta = _hand_counts()
    c, m = mutate(counts, meta)
    with pytest.raises(ScoringError, match=message):
        cs.counts_to_expression(c, m)


def test_gene_filter_naming_absent_gene_is_refused():
    counts, meta = _hand_counts()
    with pytest.raises(ScoringError, match="absent from counts"):
        cs.counts_to_expression(counts, meta, gene_filter=["g1", "nope"])


# ----------------------------------------------------------------------------- metric
def _truth_long(n_comp=4, n_genes=6, seed=1):
    rng = np.random.default_rng(seed)
    t = rng.uniform(1, 8, size=(n_comp, n_genes))
    comps = [f"c{i}" for i in range(n_comp)]
    genes = [f"ENSG{i:05d}" for i in range(n_genes)]
    long = pd.DataFrame(
        {"compound": np.repeat(comps, n_genes), "gene_id": np.tile(genes, n_comp), "expression": t.ravel()}
    )
    return long, t, comps, genes


def _as_pred(long, values):
    return pd.DataFrame({"compound": long.compound, "gene_id": long.gene_id, "predicted_expression": values})


@pytest.mark.parametrize("weighting", ["mejia", "variance", "proxy"])
def test_truth_scores_zero_and_constant_offset_scores_d_squared(weighting):
    long, t, comps, genes = _truth_long()
    rng = np.random.default_rng(2)
    if weighting == "mejia":
        w = rng.uniform(size=(len(genes), len(comps)))
        kwargs = {"weights": pd.DataFrame(w / w.sum(0), index=genes, columns=comps)}
    else:
        kwargs = {"weighting": weighting, "truth_train": _truth_long(seed=5)[0]}
    zero = cs.score_compounds(long, _as_pred(long, long.expression), **kwargs)
    np.testing.assert_allclose(zero["wmse"], 0.0, atol=1e-15)
    d = 0.37
    shifted = cs.score_compounds(long, _as_pred(long, long.expression + d), **kwargs)
    np.testing.assert_allclose(shifted["wmse"], d * d, rtol=1e-12)


def test_wmse_by_hand():
    # one compound, two genes, weights (0.25, 0.75), errors (2, -1): 0.25*4 + 0.75*1 = 1.75
    out = cs.per_compound_wmse(np.array([[1.0, 3.0]]), np.array([[3.0, 2.0]]), np.array([[0.25], [0.75]]))
    assert out[0] == pytest.approx(1.75)
    out1d = cs.per_compound_wmse(np.array([[1.0, 3.0]]), np.array([[3.0, 2.0]]), np.array([0.25, 0.75]))
    assert out1d[0] == pytest.approx(1.75)


def test_variance_and_proxy_weights_by_hand():
    truth = np.array([[0.0, 1.0], [2.0, 1.0], [4.0, 4.0]])  # var (ddof 0): 8/3 and 2
    np.testing.assert_allclose(cs.variance_weights(truth), [8 / 3 / (8 / 3 + 2), 2 / (8 / 3 + 2)])
    inv = np.array([3 / 8, 1 / 2])
    np.testing.assert_allclose(cs.proxy_weights(truth), inv / inv.sum())


def test_scorer_refusals():
    long, t, comps, genes = _truth_long()
    w = pd.DataFrame(np.full((len(genes), len(comps)), 1 / len(genes)), index=genes, columns=comps)
    good = _as_pred(long, long.expression)
    with pytest.raises(ScoringError, match="lacks 1 compound"):
        cs.score_compounds(long, good[good.compound != "c2"], weights=w)
    with pytest.raises(ScoringError, match="duplicate"):
        cs.score_compounds(long, pd.concat([good, good.iloc[:1]]), weights=w)
    bad = good.copy()
    bad.loc[3, "predicted_expression"] = np.nan
    with pytest.raises(ScoringError, match="NaN"):
        cs.score_compounds(long, bad, weights=w)
    bad = good.copy()
    bad.loc[3, "predicted_expression"] = -0.1
    with pytest.raises(ScoringError, match="negative"):
        cs.score_compounds(long, bad, weights=w)
    with pytest.raises(ScoringError, match="differ from the gene filter"):
        cs.score_compounds(long, good, weights=w, gene_filter=[*genes, "ENSG99999"])
    with pytest.raises(ScoringError, match="no column for 1 scored compound"):
        cs.score_compounds(long, good, weights=w.drop(columns="c1"))
    with pytest.raises(ScoringError, match="never falls back"):
        cs.score_compounds(long, good)


def test_validate_submission():
    long, t, comps, genes = _truth_long()
    good = _as_pred(long, long.expression)
    assert cs.validate_submission(good, test_compounds=comps, gene_filter=genes)["rows"] == len(good)
    cases = {
        "missing": good.iloc[1:],
        "duplicate": pd.concat([good, good.iloc[:1]]),
        "not among the test compounds": good.assign(compound=good.compound.replace("c0", "zz")),
        "not in the gene filter": good.assign(gene_id=good.gene_id.replace(genes[0], "X")),
        "negative": good.assign(predicted_expression=-good.predicted_expression),
        "NaN": good.assign(predicted_expression=np.where(good.index == 2, np.nan, good.predicted_expression)),
    }
    for message, frame in cases.items():
        with pytest.raises(ScoringError, match=message):
            cs.validate_submission(frame, test_compounds=comps, gene_filter=genes)


# ----------------------------------------------------------------------------- label alignment and weights
def _frames(seed: int = 0, n_genes: int = 6, n_comp: int = 4):
    rng = np.random.default_rng(seed)
    genes = [f"g{i}" for i in range(n_genes)]
    comps = [f"c{j}" for j in range(n_comp)]
    truth = pd.DataFrame(rng.uniform(0, 8, (n_genes, n_comp)), index=genes, columns=comps)
    pred = truth + rng.normal(0, 0.5, truth.shape)
    pred = pred.clip(lower=0)
    w = rng.random((n_genes, n_comp))
    weights = pd.DataFrame(w / w.sum(axis=0), index=genes, columns=comps)
    return truth, pred, weights


def test_wmse_pairs_by_label_not_by_position():
    truth, pred, weights = _frames()
    base = cs.wmse(truth, pred, weights)
    shuffled = pred.iloc[::-1, ::-1]
    pd.testing.assert_series_equal(cs.wmse(truth, shuffled, weights), base)
    by_hand = ((pred - truth) ** 2 * weights).sum(axis=0)
    np.testing.assert_allclose(base.to_numpy(), by_hand.to_numpy(), rtol=1e-12)


@pytest.mark.parametrize("damage, match", [
    (lambda p: p.rename(index={"g0": "gX"}), "gene labels differ"),
    (lambda p: p.rename(columns={"c0": "cX"}), "compound labels differ"),
    (lambda p: p.mask(p.index.to_series().eq("g1"), np.nan, axis=0), "NaN"),
    (lambda p: p - 100.0, "negative"),
])
def test_wmse_refuses_misaligned_nan_or_negative_predictions(damage, match):
    truth, pred, weights = _frames(1)
    with pytest.raises(cs.ScoringError, match=match):
        cs.wmse(truth, damage(pred), weights)


@pytest.mark.parametrize("damage, match", [
    (lambda w: w.mask(w.index.to_series().eq("g2"), np.nan, axis=0), "NaN"),
    (lambda w: w - 0.5, "negative"),
    (lambda w: w * 0, "do not sum to 1"),
    (lambda w: w * 1.5, "do not sum to 1"),
])
def test_weights_are_validated(damage, match):
    truth, pred, weights = _frames(2)
    with pytest.raises(cs.ScoringError, match=match):
        cs.wmse(truth, pred, damage(weights))
    with pytest.raises(cs.ScoringError, match=match):  # the ndarray path too
        cs.wmse(truth, pred, damage(weights).to_numpy())


def test_leaderboard_refuses_a_nan_compound():
    per = pd.DataFrame({"wmse": [0.5, np.nan, 0.7]}, index=pd.Index(["a", "b", "c"], name="compound"))
    with pytest.raises(cs.ScoringError, match="no finite wMSE"):
        cs.aggregate_leaderboards(per)
    assert cs.aggregate_leaderboards(per.dropna())["wmse_mean"] == pytest.approx(0.6)


def test_manifests_are_strict_json(tmp_path):
    import json

    from drugcell.provenance import write_json

    write_json(tmp_path / "m.json", {"a": float("nan"), "b": [1.0, float("inf")], "c": np.float32(2.5)})
    text = (tmp_path / "m.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    back = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict constant {c}"))
    assert back == {"a": None, "b": [1.0, None], "c": 2.5}
