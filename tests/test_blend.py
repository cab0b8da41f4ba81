"""`blend`: convex weights over members and baselines fitted out of fold under the metric.

Pinned: one member and no baseline is that member exactly; the exact simplex solver and the whole
fit agree with brute-force grids; a pure-noise member loses its weight to the baseline; the saved
model round-trips; the outer CV runs it."""

from __future__ import annotations

import itertools
import zlib

import numpy as np
import pytest

from drugcell.config import config_from_dict, load_config
from drugcell.data.expression_set import ExpressionSet
from drugcell.errors import DrugcellInputError
from drugcell.metrics import score
from drugcell.models import Prediction, Predictor, make_predictor, register
from drugcell.models.baselines import weighted_mean_profile
from drugcell.models.blend_weights import convex_weights, error_gram
from drugcell.persistence import load_model, save_model
from drugcell.splits import make_folds

RINGS = ["c1cc({a})ccc1{b}", "c1cc({a})ncc1{b}", "C1CC({a})CCC1{b}", "c1cc({a})sc1{b}",
         "c1cc({a})oc1{b}", "C1CC({a})NCC1{b}"]
SUBS = ["C", "CC", "O", "N", "Cl", "F", "C(=O)O", "OC", "CN", "C#N"]


def toy_es(n_per: int = 10, n_genes: int = 24, seed: int = 0, signal: float = 1.0) -> ExpressionSet:
    """Six scaffold families; expression = per-gene base + an effect of each substituent (shared across
    scaffolds, so learnable on unseen ones) times ``signal`` + noise."""
    pairs = [(i, j) for i in range(len(SUBS)) for j in range(i, len(SUBS))][:n_per]
    smiles = [t.format(a=SUBS[i], b=SUBS[j]) for t in RINGS for i, j in pairs]
    rng = np.random.default_rng(seed)
    c, g = len(smiles), n_genes
    base = rng.gamma(4.0, 1.0, g)
    effect = rng.normal(0, 1, (len(SUBS), g))
    subs = np.array([pair for _ in RINGS for pair in pairs])
    expr = base + signal * (effect[subs[:, 0]] + effect[subs[:, 1]]) + rng.normal(0, 0.7, (c, g))
    w = rng.random((g, c)) ** 2
    w /= w.sum(axis=0)
    return ExpressionSet(
        compounds=[f"c{i}" for i in range(c)], genes=[f"g{j}" for j in range(g)],
        expression=np.clip(expr, 0, None).astype(np.float32), weights=w.astype(np.float32),
        n_replicates=np.full(c, 2), control=base.astype(np.float32), smiles=smiles, inchikey=[""] * c,
    )


@register("test_noise")
class NoisePredictor(Predictor):
    """Test-only: the metric-optimal constant plus N(0, 1) per cell, fixed by the SMILES (pure noise)."""

    state_fields = ("profile_",)

    def _fit(self, train, seed):
        self.profile_ = weighted_mean_profile(train.expression, train.weights)

    def _predict(self, smiles):
        rows = [np.random.default_rng(zlib.crc32(s.encode())).normal(0, 1, self.profile_.shape) for s in smiles]
        return Prediction(mean=self.profile_ + np.array(rows).reshape(len(smiles), -1), info={"n_fallback": 0.0})


@register("test_metric_member")
class MetricMember(Predictor):
    """Test-only: a kind with a ``metric`` parameter (the blend passes its own down)."""

    defaults = {"metric": "mejia"}
    state_fields = ("profile_",)

    def _fit(self, train, seed):
        self.profile_ = np.asarray(train.expression).mean(axis=0)

    def _predict(self, smiles):
        return Prediction(mean=np.tile(self.profile_, (len(smiles), 1)))


@pytest.fixture(scope="module")
def es() -> ExpressionSet:
    return toy_es()


# ----------------------------------------------------------------------------- one member
@pytest.mark.parametrize("member", [{"kind": "ridge_fp"}, {"kind": "knn", "k": 5, "kernel": "softmax"}])
def test_one_member_and_no_baseline_is_that_member(es, member):
    blend = make_predictor("blend", members=[member], baselines=[]).fit(es, seed=3)
    params = {k: v for k, v in member.items() if k != "kind"}
    alone = make_predictor(member["kind"], **params).fit(es, seed=3)
    query = list(es.smiles[::7]) + ["CCO", "not a smiles"]
    got, want = blend.predict(query), alone.predict(query)
    assert np.array_equal(got.mean, want.mean)
    assert np.array_equal(got.std, want.std) and blend.std_enabled
    assert got.info[f"w_{member['kind']}"] == 1.0 and got.info["n_fallback"] == want.info["n_fallback"]


# ----------------------------------------------------------------------------- the weights
def _grid(k: int, steps: int) -> np.ndarray:
    """Every point of the simplex with coordinates in multiples of 1/steps."""
    pts = [c for c in itertools.product(range(steps + 1), repeat=k - 1) if sum(c) <= steps]
    return np.array([[*c, steps - sum(c)] for c in pts], dtype=np.float64) / steps


@pytest.mark.parametrize("seed", range(6))
def test_convex_weights_equal_a_brute_force_grid(seed):
    rng = np.random.default_rng(seed)
    k = 3 if seed % 2 else 4
    a = rng.normal(0, 1, (k, 50)) + rng.normal(0, 1, (1, 50)) * (seed % 3)  # correlated "errors"
    q = a @ a.T
    w = convex_weights(q)
    assert w.min() >= 0 and w.sum() == pytest.approx(1.0, abs=1e-12)
    grid = _grid(k, 200 if k == 3 else 60)
    vals = np.einsum("ni,ij,nj->n", grid, q, grid)
    assert w @ q @ w <= vals.min() + 1e-12 * abs(vals.min())
    assert np.abs(w - grid[np.argmin(vals)]).max() <= 2.0 / (200 if k == 3 else 60) + 1e-9


def test_convex_weights_prefer_the_smaller_support_and_exact_zeros():
    q = np.array([[1.0, 1.0], [1.0, 1.0]])  # two identical candidates: the first alone
    assert convex_weights(q).tolist() == [1.0, 0.0]
    q = np.array([[1.0, 0.0, 2.0], [0.0, 1.0, 2.0], [2.0, 2.0, 9.0]])  # the third only hurts
    w = convex_weights(q)
    assert w[2] == 0.0 and w[:2] == pytest.approx([0.5, 0.5])


def test_error_gram_is_the_blends_mean_wmse():
    rng = np.random.default_rng(1)
    y = rng.random((7, 5))
    preds = [rng.random((7, 5)) for _ in range(3)]
    w_gc = rng.random((5, 7))
    w_gc /= w_gc.sum(axis=0)  # Mejia weights: each compound's column sums to 1 (the scorer checks)
    w = np.array([0.2, 0.5, 0.3])
    q = error_gram([p - y for p in preds], w_gc)
    blended = sum(wi * p for wi, p in zip(w, preds))
    assert w @ q @ w / 7 == pytest.approx(score("mejia", y, blended, test_weights_gc=w_gc).mean(), rel=1e-12)
    q_gene = error_gram([p - y for p in preds], w_gc[:, 0])
    assert w @ q_gene @ w == pytest.approx(((blended - y) ** 2 @ w_gc[:, 0]).sum(), rel=1e-12)


@pytest.mark.parametrize("metric", ["mejia", "proxy", "variance"])
def test_fitted_weights_minimise_the_out_of_fold_wmse_over_a_grid(es, metric):
    members = [{"kind": "knn", "k": 3, "kernel": "uniform"}, {"kind": "ridge_fp"}]
    blend = make_predictor("blend", members=members, baselines=["wmean"], inner_folds=3, metric=metric)
    blend.fit(es, seed=5)
    # the same out-of-fold predictions by a plain loop, and the mean wMSE of every grid blend
    folds = make_folds(list(es.smiles), "scaffold", 3, 5).folds
    specs = [("knn", {"k": 3, "kernel": "uniform"}), ("ridge_fp", {}), ("wmean", {})]
    grid = _grid(3, 50)
    total = np.zeros(len(grid))
    for f in np.unique(folds):
        tr, te = es.subset(np.flatnonzero(folds != f)), es.subset(np.flatnonzero(folds == f))
        preds = [make_predictor(kind, **p).fit(tr, seed=5).predict(list(te.smiles)).mean for kind, p in specs]
        for n, wv in enumerate(grid):
            blended = sum(wi * p.astype(np.float64) for wi, p in zip(wv, preds))
            total[n] += score(metric, te.expression, blended, test_weights_gc=te.weights,
                              train_truth_cg=tr.expression).sum()
    oof = total / es.n_compounds
    info = blend.predict(list(es.smiles[:2])).info
    w = np.array([info["w_knn"], info["w_ridge_fp"], info["w_wmean"]])
    assert info["oof_blend"] <= oof.min() + 1e-9
    assert info["oof_blend"] == pytest.approx(min(info["oof_knn"], info["oof_ridge_fp"], info["oof_wmean"],
                                                  info["oof_blend"]))
    assert info["oof_wmean"] == pytest.approx(oof[np.argmax(grid[:, 2])], rel=1e-6)
    assert np.abs(w - grid[np.argmin(oof)]).max() <= 0.05


def test_a_pure_noise_member_loses_its_weight_to_the_baseline():
    es = toy_es(signal=0.0, seed=2)
    blend = make_predictor("blend", members=[{"kind": "test_noise"}], baselines=["wmean"]).fit(es, seed=0)
    info = blend.predict(["CCO"]).info
    # what weight the noise keeps is chance correlation on 60 compounds x 24 genes (seeds 0-5: 0 to 0.06)
    assert info["w_wmean"] > 0.9 and info["w_test_noise"] == pytest.approx(1 - info["w_wmean"])
    assert info["oof_test_noise"] > 2 * info["oof_wmean"] and info["oof_blend"] <= info["oof_wmean"]


def test_std_only_when_every_weighted_candidate_has_one(es):
    blend = make_predictor("blend", members=[{"kind": "knn", "k": 5}, {"kind": "ridge_fp"}], baselines=[])
    assert blend.std_enabled
    out = blend.fit(es, seed=0).predict(list(es.smiles[:4]))
    assert (out.std is not None) == blend.std_enabled
    parts = [m.predict(list(es.smiles[:4])) for m in blend.models_ if m is not None]
    w = [x for x in blend.weights_ if x > 0]
    assert np.allclose(out.std, sum(np.float32(wi) * p.std for wi, p in zip(w, parts)), rtol=1e-6)
    noisy = make_predictor("blend", members=[{"kind": "test_noise"}], baselines=["wmean"])
    assert not noisy.std_enabled
    assert noisy.fit(es, seed=0).predict(["CCO"]).std is None and not noisy.std_enabled


# ----------------------------------------------------------------------------- params
@pytest.mark.parametrize("params, match", [
    ({"members": [{"kind": "nope"}]}, "unknown predictor kind 'nope'"),
    ({"members": [{"k": 3}]}, r"members\[0\] has no kind"),
    ({"members": ["knn"]}, r"members\[0\] must be an inline table"),
    ({"members": [{"kind": "knn"}, {"kind": "knn", "k": 3}]}, "two candidates are called 'knn'"),
    ({"members": [{"kind": "wmean"}]}, "two candidates are called 'wmean'"),
    ({"members": [{"kind": "blend"}]}, "cannot be a member"),
    ({"members": [{"kind": "knn", "kk": 3}]}, "unknown parameter"),
    ({"members": [], "baselines": []}, "no candidates"),
    ({"baselines": "wmean"}, "baselines must be a list"),
    ({"inner_folds": 1}, "inner_folds must be an integer >= 2"),
    ({"metric": "r2"}, "unknown metric 'r2'"),
    ({"members": [{"kind": "knn", "k": k, "name": f"k{k}"} for k in range(1, 13)]}, "at most 12"),
])
def test_bad_params_are_refused(params, match):
    with pytest.raises(DrugcellInputError, match=match):
        make_predictor("blend", **params)


def test_toml_inline_tables_and_metric_passed_to_members(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[[predictors]]\nname = "b"\nkind = "blend"\n'
                    'members = [{kind = "knn", k = 5, name = "knn5"}, {kind = "test_metric_member"}]\n'
                    'baselines = []\nmetric = "proxy"\n')
    spec = load_config(path).predictor("b")
    blend = make_predictor(spec.kind, **spec.params)
    assert blend.names == ["knn5", "test_metric_member"]
    assert blend.candidates_[1].params == {"metric": "proxy"}
    own = make_predictor("blend", members=[{"kind": "test_metric_member", "metric": "variance"}], metric="proxy")
    assert own.candidates_[0].params == {"metric": "variance"}


# ----------------------------------------------------------------------------- persistence and CV
def test_saved_blend_predicts_identically(tmp_path, es):
    blend = make_predictor("blend", members=[{"kind": "knn", "k": 5}, {"kind": "ridge_fp"}],
                           baselines=["wmean", "mean"], inner_folds=2).fit(es, seed=1)
    save_model(blend, tmp_path / "m", train_info=es, seed=1)
    back = load_model(tmp_path / "m")
    query = list(es.smiles[:5]) + ["c1ccccc1O"]
    a, b = blend.predict(query), back.predict(query)
    assert np.array_equal(a.mean, b.mean) and a.info == b.info
    assert (a.std is None) == (b.std is None) and back.std_enabled == blend.std_enabled
    assert np.array_equal(back.weights_, blend.weights_)
    state = back.get_state()
    zero = [i for i, w in enumerate(blend.weights_) if w == 0]
    assert not any(k.startswith(f"cand{i}__") for i in zero for k in state)
    with pytest.raises(DrugcellInputError, match="inconsistent"):
        make_predictor("blend", members=[{"kind": "ridge_fp"}], baselines=[]).set_state(state)
    with pytest.raises(DrugcellInputError, match="lacks"):
        back.set_state({"genes": state["genes"]})


def test_the_outer_cv_scores_a_blend(tmp_path, es):
    from drugcell.evaluation.cv import run_cv

    cfg = config_from_dict({
        "cv": {"folds": 3, "bootstrap_resamples": 200, "metrics": ["mejia", "proxy"]},
        "output": {"uncertainty_sample": 0},
        "predictors": [{"name": "wmean", "kind": "wmean"},
                       {"name": "blend", "kind": "blend", "members": [{"kind": "knn", "k": 5}],
                        "baselines": ["wmean"], "inner_folds": 2}],
    })
    res = run_cv(es, cfg, tmp_path / "run", progress=False)
    sub = res.scores[(res.scores["predictor"] == "blend") & (res.scores["metric"] == "mejia")]
    assert len(sub) == es.n_compounds and np.isfinite(sub["wmse"]).all()
    import pandas as pd

    diag = pd.read_parquet(tmp_path / "run" / "diagnostics.parquet")
    w = diag[(diag["predictor"] == "blend") & diag["counter"].str.startswith("w_")]
    assert set(w["counter"]) == {"w_knn", "w_wmean"}
    assert np.allclose(w.groupby("fold")["value"].sum(), 1.0)
