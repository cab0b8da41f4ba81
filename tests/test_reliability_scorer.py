"""Reliability of contest_scorer (issue #10, scorer side): every public function that takes truth
and prediction (or weights) pairs them by compound/gene label, validates weights where they enter,
refuses text/booleans, NaN/inf and negative predictions, never iterates a path string by character;
regression tests for defects 3-5 and the scorer's "Also" items; property-based tests (Hypothesis).

Expected numbers are computed independently (plain loops over labels) or by hand in comments.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import contest_scorer as cs
from contest_scorer import ScoringError

PROPS = settings(max_examples=50, deadline=None)


# ----------------------------------------------------------------------------- helpers
def _frames(seed: int = 0, n_genes: int = 6, n_comp: int = 4):
    """genes x compounds truth, prediction and Mejia-like weights (columns sum to 1)."""
    rng = np.random.default_rng(seed)
    genes = [f"g{i}" for i in range(n_genes)]
    comps = [f"c{j}" for j in range(n_comp)]
    truth = pd.DataFrame(rng.uniform(0, 8, (n_genes, n_comp)), index=genes, columns=comps)
    pred = (truth + rng.normal(0, 0.5, truth.shape)).clip(lower=0)
    w = rng.random((n_genes, n_comp))
    return truth, pred, pd.DataFrame(w / w.sum(axis=0), index=genes, columns=comps)


def _by_loop(truth: pd.DataFrame, pred: pd.DataFrame, weights: pd.DataFrame) -> dict[str, float]:
    """wMSE per compound by a plain loop over labels (the independent reference)."""
    return {c: sum(weights.at[g, c] * (pred.at[g, c] - truth.at[g, c]) ** 2 for g in truth.index)
            for c in truth.columns}


def _long(mat_gc: pd.DataFrame, col: str) -> pd.DataFrame:
    """genes x compounds -> long (compound, gene_id, col), NaN cells kept as rows."""
    g, c = mat_gc.shape
    return pd.DataFrame({"compound": np.tile(np.asarray(mat_gc.columns, dtype=object), g),
                         "gene_id": np.repeat(np.asarray(mat_gc.index, dtype=object), c),
                         col: mat_gc.to_numpy().ravel()})


def _hand_counts():
    """Two compounds x two replicates, library exactly 1e6 (CPM == count)."""
    counts = pd.DataFrame({"gene_id": ["g1", "g2", "filler"], "s1": [1, 3, 999_996], "s2": [3, 1, 999_996],
                           "s3": [7, 1, 999_992], "s4": [1, 7, 999_992]})
    meta = pd.DataFrame({"sequenced_id": ["s1", "s2", "s3", "s4"], "compound": ["A", "A", "B", "B"]})
    return counts, meta


# ----------------------------------------------------------------------------- defect 3: pairing by label
def test_defect3_wmse_pairs_reversed_rows_by_label():
    truth, pred, weights = _frames()
    want = _by_loop(truth, pred, weights)
    got = cs.wmse(truth, pred.iloc[::-1, ::-1], weights.iloc[::-1])
    assert got.to_dict() == pytest.approx(want, rel=1e-12)


def test_defect3_per_compound_wmse_pairs_labelled_frames():
    # per_compound_wmse took np.asarray of DataFrames: reversed rows were scored by position
    truth, pred, weights = _frames(1)
    want = _by_loop(truth, pred, weights)
    t_cg, p_cg = truth.T, pred.T.iloc[::-1, ::-1]
    got = cs.per_compound_wmse(t_cg, p_cg, weights.iloc[::-1, ::-1])
    assert isinstance(got, pd.Series) and list(got.index) == list(truth.columns)
    assert got.to_dict() == pytest.approx(want, rel=1e-12)
    with pytest.raises(ScoringError, match="compound labels differ.*cX"):
        cs.per_compound_wmse(t_cg, p_cg.rename(index={"c1": "cX"}), weights)
    with pytest.raises(ScoringError, match="pass both as DataFrames"):
        cs.per_compound_wmse(t_cg, p_cg.to_numpy(), weights)


@pytest.mark.parametrize("value, match", [(np.nan, "NaN/inf.*compound row 1"), (-0.5, "negative.*compound row 1")])
def test_defect3_per_compound_wmse_refuses_nan_and_negative_predictions(value, match):
    truth, pred, weights = _frames(2)
    p = pred.T.to_numpy().copy()
    p[1, 3] = value
    with pytest.raises(ScoringError, match=match):
        cs.per_compound_wmse(truth.T.to_numpy(), p, weights.to_numpy())
    # the organisers' reference table scores unclipped noise: only that opt-in scores negatives
    if value < 0:
        before = p.copy()
        assert np.isfinite(cs.per_compound_wmse(truth.T.to_numpy(), p, weights.to_numpy(), allow_negative=True)).all()
        np.testing.assert_array_equal(p, before)  # the caller's prediction is never modified




# ----------------------------------------------------------------------------- defect 4: NaN in ndarray weights
def test_defect4_one_nan_weight_is_refused_naming_the_compound():
    truth, pred, weights = _frames(4, n_comp=24)
    w = weights.to_numpy().copy()
    w[2, 17] = np.nan
    with pytest.raises(ScoringError, match="1 NaN/inf value.*compound column 17"):
        cs.per_compound_wmse(truth.T.to_numpy(), pred.T.to_numpy(), w)
    long_t, long_p = _long(truth, "expression"), _long(pred, "predicted_expression")
    # an array is taken in sorted gene x sorted compound order (as strings: c0, c1, c10, ...)
    with pytest.raises(ScoringError, match=f"NaN/inf.*compound {sorted(truth.columns)[17]};"):
        cs.score_compounds(long_t, long_p, weights=w)


def test_defect4_leaderboard_counts_each_compound_once_and_never_averages_fewer():
    per = pd.DataFrame({"wmse": [0.5, 0.7]}, index=pd.Index(["a", "a"], name="compound"))
    with pytest.raises(ScoringError, match="repeats compound.*a"):
        cs.aggregate_leaderboards(per)
    with pytest.raises(ScoringError, match="empty"):
        cs.aggregate_leaderboards(per.iloc[:0])
    with pytest.raises(ScoringError, match="negative wMSE"):
        cs.aggregate_leaderboards(pd.Series([0.5, -0.1], index=["a", "b"], name="wmse"))
    assert cs.aggregate_leaderboards(pd.Series([0.5, 0.7], index=["a", "b"])) == {"n_compounds": 2,
                                                                                  "wmse_mean": pytest.approx(0.6)}


# ----------------------------------------------------------------------------- defect 5: weights validated
@pytest.mark.parametrize("damage, match", [
    (lambda w: w - 0.5, "negative"),
    (lambda w: w * 0, "do not sum to 1"),
    (lambda w: w * 1.5, "do not sum to 1"),
])
def test_defect5_per_compound_wmse_validates_weights(damage, match):
    truth, pred, weights = _frames(5)
    with pytest.raises(ScoringError, match=match):
        cs.per_compound_wmse(truth.T.to_numpy(), pred.T.to_numpy(), damage(weights.to_numpy()))
    with pytest.raises(ScoringError, match=match):  # per-gene weights too
        cs.per_compound_wmse(truth.T.to_numpy(), pred.T.to_numpy(), damage(weights.to_numpy()[:, 0]))


def test_defect5_the_sum_error_counts_every_compound_across_chunks():
    truth, pred, weights = _frames(6, n_comp=9)
    w = weights.to_numpy() * 2.0  # every column sums to 2
    with pytest.raises(ScoringError, match="weights of 9 compound"):
        cs.validate_weights(w, per_compound=True, chunk=2)


def test_defect5_weights_file_path_is_read_and_validated(tmp_path):
    truth, pred, weights = _frames(7)
    long_t, long_p = _long(truth, "expression"), _long(pred, "predicted_expression")
    path = tmp_path / "weights.parquet"
    weights.rename_axis("gene_id").reset_index().to_parquet(path, index=False)
    got = cs.score_compounds(long_t, long_p, weights=str(path))["wmse"]
    assert got.to_dict() == pytest.approx(_by_loop(truth, pred, weights), rel=1e-12)
    (weights * 3).rename_axis("gene_id").reset_index().to_parquet(path, index=False)
    with pytest.raises(ScoringError, match="do not sum to 1"):
        cs.score_compounds(long_t, long_p, weights=path)


def test_defect5_repeated_weight_rows_are_refused():
    truth, pred, weights = _frames(8)
    dup = pd.concat([weights, weights.iloc[:1]])
    with pytest.raises(ScoringError, match="weights repeat gene row.*g0"):
        cs.wmse(truth, pred, dup)


# ----------------------------------------------------------------------------- the "Also" items
def test_also_a_path_string_is_read_never_iterated_by_character(tmp_path):
    truth, pred, weights = _frames(9)
    long_t, long_p = _long(truth, "expression"), _long(pred, "predicted_expression")
    gf = tmp_path / "gene_filter.csv"
    pd.DataFrame({"gene_id": truth.index}).to_csv(gf, index=False)
    tc = tmp_path / "test_compounds.csv"
    pd.DataFrame({"compound": truth.columns, "smiles": "C"}).to_csv(tc, index=False)
    assert cs.validate_submission(long_p, test_compounds=str(tc), gene_filter=gf) == {
        "rows": truth.size, "compounds": truth.shape[1], "genes": truth.shape[0]}
    got = cs.score_compounds(long_t, long_p, gene_filter=str(gf), weights=weights)["wmse"]
    assert got.to_dict() == pytest.approx(_by_loop(truth, pred, weights), rel=1e-12)
    with pytest.raises(ScoringError, match="the string 'c0', not a list of ids"):
        cs.validate_submission(long_p, test_compounds="c0", gene_filter=gf)
    with pytest.raises(ScoringError, match="not a list of ids"):
        cs.score_compounds(long_t, long_p, gene_filter="g0", weights=weights)
    counts, meta = _hand_counts()
    pd.DataFrame({"gene_id": ["g1", "g2"]}).to_csv(gf, index=False)
    assert sorted(cs.counts_to_expression(counts, meta, gene_filter=str(gf)).gene_id.unique()) == ["g1", "g2"]


@pytest.mark.parametrize("bad", [
    lambda v: v.map(lambda x: f"{x:.6f}"),  # numbers as text
    lambda v: v > 1.0,                      # booleans
])
def test_also_text_and_boolean_predictions_are_refused_not_coerced(bad):
    truth, pred, weights = _frames(10)
    long_t, long_p = _long(truth, "expression"), _long(pred, "predicted_expression")
    odd = long_p.assign(predicted_expression=bad(long_p.predicted_expression))
    with pytest.raises(ScoringError, match="'predicted_expression' holds text or booleans"):
        cs.validate_submission(odd, test_compounds=list(truth.columns), gene_filter=list(truth.index))
    with pytest.raises(ScoringError, match="'predicted_expression' holds text or booleans"):
        cs.score_compounds(long_t, odd, weights=weights)
    p = pred.copy()
    p["c2"] = bad(p["c2"])
    with pytest.raises(ScoringError, match="text or boolean values in 1 compound column.*c2"):
        cs.wmse(truth, p, weights)
    with pytest.raises(ScoringError, match="booleans and text are refused"):
        cs.per_compound_wmse(truth.T.to_numpy(), p.T.to_numpy(), weights.to_numpy())


def test_also_weighting_is_never_ignored_when_weights_are_given():
    truth, pred, weights = _frames(11)
    with pytest.raises(ScoringError, match="both weights and weighting='variance'"):
        cs.score_compounds(_long(truth, "expression"), _long(pred, "predicted_expression"), weights=weights,
                           weighting="variance")


def test_also_mejia_weights_of_one_sample_are_the_uniform_fallback():
    counts, meta = _hand_counts()
    one = meta.iloc[:1]
    with pytest.warns(UserWarning, match="no other samples"):
        w = cs.compute_mejia_weights(counts[["gene_id", "s1"]], one, gene_filter=["g1", "g2"])
    np.testing.assert_array_equal(w.to_numpy(), [[0.5], [0.5]])
    # one compound holding every sample: no rest either
    with pytest.warns(UserWarning, match="no other samples"):
        w = cs.compute_mejia_weights(counts, meta.assign(compound="A"), gene_filter=["g1", "g2", "filler"])
    np.testing.assert_array_equal(w.to_numpy(), np.full((3, 1), 1 / 3))
    # the float32 streaming rows agree
    from contest_scorer.weights import GeneTotals

    totals = GeneTotals.from_sums(np.array([1.0, 2.0]), np.array([1.0, 4.0]), 1)
    rows = cs.mejia_weight_rows(np.array([[1.0, 2.0]]), np.zeros((1, 2)), np.array([1]), totals)
    np.testing.assert_array_equal(rows, [[0.5, 0.5]])


def test_also_fractional_counts_are_refused_naming_the_sample():
    counts, meta = _hand_counts()
    counts["s3"] = counts["s3"].astype(float)
    counts.loc[0, "s3"] = 6.5
    with pytest.raises(ScoringError, match=r"fractional \(non-integer\) values in 1 sample\(s\): s3"):
        cs.counts_to_expression(counts, meta)
    with pytest.raises(ScoringError, match="fractional.*s3"):
        cs.compute_mejia_weights(counts, meta)


def test_also_metadata_samples_missing_from_counts_are_refused_naming_them():
    counts, meta = _hand_counts()
    with pytest.raises(ScoringError, match=r"metadata lists 1 sample\(s\) with no column in counts: s4"):
        cs.counts_to_expression(counts.drop(columns="s4"), meta)
    # restricted as the message says, the truth is the mean over the remaining wells, by hand:
    # B from s3 alone: g1 log2(7 + 1) = 3
    kept = meta[meta.sequenced_id.isin(["s1", "s2", "s3"])]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # compound B has one replicate
        long = cs.counts_to_expression(counts.drop(columns="s4"), kept, gene_filter=["g1"])
    assert long.set_index("compound").loc["B", "expression"] == pytest.approx(3.0, abs=1e-9)


# ----------------------------------------------------------------------------- property-based (Hypothesis)
@st.composite
def scored_sets(draw, min_truth: float = 0.0):
    """(truth, prediction, weights) genes x compounds frames; weights columns sum to 1."""
    n_genes = draw(st.integers(1, 7))
    n_comp = draw(st.integers(1, 5))
    vals = st.floats(min_truth, 15.0, allow_nan=False, allow_infinity=False)
    truth = draw(hnp.arrays(np.float64, (n_genes, n_comp), elements=vals))
    pred = draw(hnp.arrays(np.float64, (n_genes, n_comp), elements=st.floats(0.0, 15.0)))
    raw = draw(hnp.arrays(np.float64, (n_genes, n_comp), elements=st.floats(0.01, 1.0)))
    genes = [f"ENSG{i:03d}" for i in range(n_genes)]
    comps = [f"cmp{j}" for j in range(n_comp)]

    def frame(a):
        return pd.DataFrame(a, index=genes, columns=comps)

    return frame(truth), frame(pred), frame(raw / raw.sum(axis=0))


def _shuffle(df: pd.DataFrame, rows: list[int], cols: list[int] | None = None) -> pd.DataFrame:
    out = df.iloc[rows]
    return out if cols is None else out.iloc[:, cols]


@PROPS
@given(scored_sets())
def test_prop_truth_against_itself_scores_zero(data):
    truth, _, weights = data
    assert (cs.wmse(truth, truth.copy(), weights) == 0.0).all()
    assert (cs.per_compound_wmse(truth.T, truth.T.copy(), weights) == 0.0).all()
    per = cs.score_compounds(_long(truth, "expression"), _long(truth, "predicted_expression"), weights=weights)
    assert (per["wmse"] == 0.0).all()
    assert cs.aggregate_leaderboards(per)["wmse_mean"] == 0.0


@PROPS
@given(scored_sets(), st.randoms(use_true_random=False))
def test_prop_row_order_never_changes_a_score(data, rnd):
    truth, pred, weights = data
    want = pd.Series(_by_loop(truth, pred, weights))

    def perm(n):
        p = list(range(n))
        rnd.shuffle(p)
        return p

    g, c = truth.shape
    got = cs.wmse(_shuffle(truth, perm(g), perm(c)), _shuffle(pred, perm(g), perm(c)),
                  _shuffle(weights, perm(g), perm(c)))
    pd.testing.assert_series_equal(got.sort_index(), want.sort_index(), check_names=False, rtol=1e-9, atol=1e-12)
    got = cs.per_compound_wmse(_shuffle(truth.T, perm(c)), _shuffle(pred.T, perm(c)), _shuffle(weights, perm(g)))
    pd.testing.assert_series_equal(got.sort_index(), want.sort_index(), check_names=False, check_index_type=False,
                                   rtol=1e-9, atol=1e-12)
    long_t, long_p = _long(truth, "expression"), _long(pred, "predicted_expression")
    n = len(long_t)
    per = cs.score_compounds(long_t.iloc[perm(n)], long_p.iloc[perm(n)], weights=_shuffle(weights, perm(g), perm(c)))
    pd.testing.assert_series_equal(per["wmse"].sort_index(), want.sort_index(), check_names=False,
                                   check_index_type=False, rtol=1e-9, atol=1e-12)


@PROPS
@given(scored_sets(min_truth=5.0), st.floats(-5.0, 5.0))
def test_prop_a_constant_offset_d_scores_d_squared(data, d):
    truth, _, weights = data
    np.testing.assert_allclose(cs.wmse(truth, truth + d, weights), d * d, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(cs.per_compound_wmse(truth.T.to_numpy(), (truth + d).T.to_numpy(),
                                                    weights.to_numpy()), d * d, rtol=1e-9, atol=1e-12)
    per = cs.score_compounds(_long(truth, "expression"), _long(truth + d, "predicted_expression"), weights=weights)
    np.testing.assert_allclose(per["wmse"], d * d, rtol=1e-9, atol=1e-12)


_DAMAGES = ["nan_pred", "inf_pred", "negative_pred", "nan_truth", "renamed_gene", "renamed_compound",
            "nan_weight", "negative_weight", "missing_weight_compound"]


def _damaged(truth, pred, weights, kind, i, j):
    truth, pred, weights = truth.copy(), pred.copy(), weights.copy()
    if kind in ("nan_pred", "inf_pred", "negative_pred"):
        pred.iat[i, j] = {"nan_pred": np.nan, "inf_pred": np.inf, "negative_pred": -1e-3}[kind]
    elif kind == "nan_truth":
        truth.iat[i, j] = np.nan
    elif kind == "renamed_gene":
        pred = pred.rename(index={pred.index[i]: "ENSG_other"})
    elif kind == "renamed_compound":
        pred = pred.rename(columns={pred.columns[j]: "cmp_other"})
    elif kind in ("nan_weight", "negative_weight"):
        weights.iat[i, j] = np.nan if kind == "nan_weight" else -0.5
    else:
        weights = weights.drop(columns=weights.columns[j])
    return truth, pred, weights


@PROPS
@given(scored_sets(), st.sampled_from(_DAMAGES), st.integers(0, 100), st.integers(0, 100))
def test_prop_nan_negative_or_misaligned_input_never_yields_a_number(data, kind, i, j):
    truth, pred, weights = data
    i, j = i % truth.shape[0], j % truth.shape[1]
    t, p, w = _damaged(truth, pred, weights, kind, i, j)
    with pytest.raises(ScoringError):
        cs.wmse(t, p, w)
    with pytest.raises(ScoringError):
        cs.per_compound_wmse(t.T, p.T, w)
    with pytest.raises(ScoringError):
        cs.score_compounds(_long(t, "expression"), _long(p, "predicted_expression"), weights=w)
    if kind in ("nan_pred", "inf_pred", "negative_pred", "nan_weight", "negative_weight"):  # the array path
        with pytest.raises(ScoringError):
            cs.per_compound_wmse(t.T.to_numpy(), p.T.to_numpy(), w.to_numpy())
