"""`drugcell tune`: the search-space file, the run folder's rules, tuned.toml, and a nested search on a
tiny simulated set whose outer and inner scores are recomputed here without the tuning code.

The Ray checks share one Ray session and one tuning run (module fixtures) inside ONE test function, so
Ray starts once per suite run: with `-n 2`, xdist would spread separate tests over both workers (and
its `xdist_group` marks do not group under pytest 9, whose node ids it can no longer rewrite).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
import warnings

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from drugcell.errors import DrugcellInputError
from drugcell.paths import repo_root
from drugcell.tuning.outputs import check_tune_dir, toml_value, tuned_config, tuned_toml
from drugcell.tuning.space import load_space, spec_from_dict

SPACE = {
    "cv": {"folds": 2, "seed": 0, "metrics": ["mejia", "proxy"]},
    "tune": {"kind": "knn", "name": "knn_tuned", "trials": 4, "inner_folds": 2, "params": {"std": False}},
    "space": {"k": {"int": [2, 30], "log": True}, "kernel": {"choice": ["uniform", "tanimoto", "softmax"]}},
}


def _space(**changes):
    raw = json.loads(json.dumps(SPACE))
    for key, value in changes.items():
        section, name = key.split("__")
        if value is None:
            raw[section].pop(name, None)
        else:
            raw[section][name] = value
    return raw


# ----------------------------------------------------------------------------- the search-space file
def test_shipped_space_parses_and_maps_onto_inclusive_optuna_ranges():
    from ray.tune.search.optuna import OptunaSearch

    from drugcell.tuning.search import ray_space

    spec = load_space(repo_root() / "configs" / "tune_knn.toml")
    assert (spec.kind, spec.name, spec.metric, spec.trials, spec.inner_folds) == ("knn", "knn_tuned", "mejia", 20, 3)
    assert [(d.param, d.type, d.log) for d in spec.dims] == [("k", "int", True), ("kernel", "choice", False),
                                                              ("temperature", "float", True)]
    dists = OptunaSearch.convert_search_space(ray_space(spec.dims))
    assert (dists["k"].low, dists["k"].high, dists["k"].log) == (3, 60, True)  # both ends can be drawn
    assert (dists["temperature"].low, dists["temperature"].high, dists["temperature"].log) == (0.02, 1.0, True)
    assert list(dists["kernel"].choices) == ["uniform", "tanimoto", "softmax"]
    # the sampled values reach the predictor as plain Python types, with the fixed params
    assert spec.params({"k": np.int64(7), "kernel": "softmax", "temperature": np.float64(0.5)}) == {
        "std": True, "k": 7, "kernel": "softmax", "temperature": 0.5}
    assert type(spec.params({"k": np.int64(7)})["k"]) is int
    over = spec.with_overrides(trials=3, inner_folds=2, seed=5, folds=3)
    assert (over.trials, over.inner_folds, over.run.seed, over.run.folds) == (3, 2, 5, 3)


@pytest.mark.parametrize("changes, words", [
    ({"space__alpha": {"float": [0.1, 1.0]}}, ["space.alpha", "not a parameter", "searchable: ", "k, kernel"]),
    ({"space__embedding_params": {"choice": [{}]}}, ["space.embedding_params", "cannot be searched"]),
    ({"space__k": {"int": [2, 30], "float": [1.0, 2.0]}}, ["space.k", "must be one of"]),
    ({"space__k": {"int": [2.5, 30]}}, ["space.k", "integers"]),
    ({"space__k": {"int": [30, 2]}}, ["space.k", "low < high"]),
    ({"space__k": {"int": [0, 30], "log": True}}, ["space.k", "low > 0"]),
    ({"space__k": {"int": [0, 30]}}, ["space.k", "value 0 is refused", "positive integer"]),
    ({"space__kernel": {"choice": []}}, ["space.kernel", "non-empty list"]),
    ({"space__kernel": {"choice": ["uniform", "uniform"]}}, ["space.kernel", "twice"]),
    ({"space__kernel": {"choice": ["uniform", "cosine"]}}, ["space.kernel", "'cosine'", "unknown kernel"]),
    ({"space__kernel": {"choice": ["uniform", 3]}}, ["space.kernel", "one type"]),
    ({"space__kernel": {"choice": ["uniform"], "log": True}}, ["space.kernel", "log applies"]),
    ({"tune__params": {"k": [5, 10]}}, ["tune.params", "sweep"]),
    ({"tune__params": {"kernel": "uniform"}}, ["tune.params", "both fixed and searched"]),
    ({"tune__budget": 3}, ["tune.budget", "not a known option"]),
    ({"tune__kind": None}, ["tune.kind", "missing"]),
    ({"tune__kind": "knnn"}, ["tune.kind", "unknown predictor kind"]),
    ({"tune__trials": 0}, ["tune.trials", ">= 1"]),
    ({"tune__inner_folds": 1}, ["tune.inner_folds", ">= 2"]),
    ({"cv__folds": 1}, ["cv.folds", ">= 2"]),
])
def test_bad_search_spaces_are_refused_naming_the_key(changes, words):
    with pytest.raises(DrugcellInputError) as err:
        spec_from_dict(_space(**changes), source="space.toml")
    for w in words:
        assert w in str(err.value), (w, str(err.value))
    assert "space.toml" in str(err.value)


def test_a_space_without_parameters_or_with_unknown_tables_is_refused():
    with pytest.raises(DrugcellInputError, match="'space' must be a table with at least one"):
        spec_from_dict({k: v for k, v in SPACE.items() if k != "space"}, source="s.toml")
    with pytest.raises(DrugcellInputError, match=r"unknown top-level key\(s\) \['predictors'\]"):
        spec_from_dict({**SPACE, "predictors": []}, source="s.toml")


# ----------------------------------------------------------------------------- tuned.toml and the run folder
def test_tuned_toml_reads_back_as_the_same_config_and_cannot_hold_what_toml_cannot():
    spec = spec_from_dict(_space(tune__kind="blend", tune__name="bl", tune__params={
        "members": [{"kind": "knn", "k": 3, "kernel": "softmax"}, {"kind": "ridge_fp"}], "baselines": ["wmean"]},
        space__k=None, space__kernel=None, space__inner_folds={"int": [2, 4]}))
    raw = tuned_config(spec, spec.params({"inner_folds": 3}))
    text = tuned_toml(raw, ['a "header" line', "ünïcode"])
    back = tomllib.loads(text)
    assert back["predictors"] == [{"name": "wmean", "kind": "wmean"}, {
        "name": "bl", "kind": "blend", "members": [{"kind": "knn", "k": 3, "kernel": "softmax"}, {"kind": "ridge_fp"}],
        "baselines": ["wmean"], "inner_folds": 3}]
    assert back["cv"]["metrics"] == ["mejia", "proxy"] and back["cv"]["folds"] == 2
    tricky = 'a"b\\c\nd'
    doc = "\n".join([f"v = {toml_value(1e-05)}", f"w = {toml_value(3.0e20)}", f"s = {toml_value(tricky)}"])
    assert tomllib.loads(doc) == {"v": 1e-05, "w": 3.0e20, "s": tricky}
    for bad in (float("nan"), float("inf"), None):
        with pytest.raises(ValueError, match="TOML cannot hold"):
            toml_value(bad)


def test_out_folder_rules(tmp_path):
    check_tune_dir(tmp_path / "new", overwrite=False)  # a new folder is fine
    (tmp_path / "empty").mkdir()
    check_tune_dir(tmp_path / "empty", overwrite=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(DrugcellInputError, match="is a file"):
        check_tune_dir(tmp_path / "file", overwrite=True)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(DrugcellInputError, match="never writes into it"):
        check_tune_dir(tmp_path / "mine", overwrite=True)
    (tmp_path / "cvrun").mkdir()
    (tmp_path / "cvrun" / "manifest.json").write_text('{"command": "drugcell cv"}')
    with pytest.raises(DrugcellInputError, match="not a `drugcell tune` run"):
        check_tune_dir(tmp_path / "cvrun", overwrite=True)
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "manifest.json").write_text('{"command": "drugcell tune"}')
    with pytest.raises(DrugcellInputError, match="pass --overwrite"):
        check_tune_dir(tmp_path / "old", overwrite=False)
    check_tune_dir(tmp_path / "old", overwrite=True)
    # the command refuses before it loads anything (the data folder here does not exist)
    from drugcell.cli import app

    res = CliRunner().invoke(app, ["tune", "--data", str(tmp_path / "nodata"), "--space",
                                   str(repo_root() / "configs" / "tune_knn.toml"), "--out", str(tmp_path / "mine")])
    assert res.exit_code != 0 and "never writes into it" in str(res.exception)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_without_ray_drugcell_imports_and_tune_says_how_to_install(tmp_path):
    code = ("import sys; sys.modules['ray'] = None; sys.modules['optuna'] = None\n"
            "import drugcell, drugcell.cli, drugcell.tuning.nested, drugcell.config\n"
            "sys.argv = ['drugcell', 'tune', '--data', 'x', '--space', sys.argv[1], '--out', sys.argv[2]]\n"
            "drugcell.cli.main()\n")
    env = {**os.environ, "PYTHONPATH": str(repo_root())}
    res = subprocess.run([sys.executable, "-c", code, str(repo_root() / "configs" / "tune_knn.toml"),
                          str(tmp_path / "out")], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 2, res.stderr
    assert "pip install -e .[ray]" in res.stderr and not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- a nested search (Ray)
@pytest.fixture(scope="module")
def tiny_es(tmp_path_factory):
    from drugcell.data.expression_set import ExpressionSet
    from drugcell.data.loader import load_to_cache
    from drugcell.data.simulate import simulate_vcpi

    root = tmp_path_factory.mktemp("tune")
    files = simulate_vcpi(root / "sim", preset="tiny", seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        load_to_cache(root / "cache", files["train_counts"], files["train_metadata"], files["train_chemistry"],
                      files["gene_filter"], progress=False)
    return root / "cache", ExpressionSet.load(root / "cache")


@pytest.fixture(scope="module")
def ray_local():
    from drugcell.tuning.search import ray_session

    with ray_session(2):
        yield


@pytest.fixture(scope="module")
def tuned(ray_local, tiny_es, tmp_path_factory):
    from drugcell.tuning.nested import run_tune

    out = tmp_path_factory.mktemp("tuned") / "run"
    lines: list[str] = []
    spec = spec_from_dict(SPACE, source="space.toml")
    res = run_tune(tiny_es[1], spec, out, workers=2, log=lines.append)
    return res, out, spec, lines


def test_tune_on_a_tiny_set(tuned, tiny_es, tmp_path):
    """Ray: the run folder, scores recomputed without the tuning code, tuned.toml in cv and fit, a failing trial."""
    _check_run_and_nested_score(tuned, tiny_es)
    _check_outer_and_inner_scores_recomputed(tuned, tiny_es)
    _check_tuned_toml_in_cv_and_fit(tuned, tiny_es, tmp_path)
    _check_a_failing_trial_stops_the_search(tiny_es)


def _check_run_and_nested_score(tuned, tiny_es):
    res, out, spec, lines = tuned
    assert sorted(p.name for p in out.iterdir()) == ["best_params.parquet", "manifest.json", "nested_score.json",
                                                     "trials.parquet", "tuned.toml"]
    best = pd.read_parquet(out / "best_params.parquet")
    assert best["fold"].tolist() == [0, 1] and {"param_k", "param_kernel", "params"} <= set(best.columns)
    nested = json.loads((out / "nested_score.json").read_text())
    assert nested["metric"] == "mejia" and nested["folds"] == 2
    assert np.isclose(nested["outer_mean"], best["outer_score"].mean())
    assert np.isclose(nested["outer_sd"], best["outer_score"].std(ddof=1))
    assert np.isclose(nested["inner_best_mean"], best["inner_score"].mean())
    # the nested score is the outer folds' own, not the inner best reported twice
    assert not np.isclose(nested["outer_mean"], nested["inner_best_mean"], rtol=1e-6, atol=0)
    assert not np.allclose(best["outer_score"], best["inner_score"], rtol=1e-6, atol=0)
    assert np.isclose(nested["optimism"], nested["outer_mean"] - nested["inner_best_mean"])
    # every trial of the 2 outer searches and the final search; ASHA's stopped trials cannot be the best
    trials = pd.read_parquet(out / "trials.parquet")
    assert sorted(trials["fold"].unique()) == [-1, 0, 1] and trials.groupby("fold").size().tolist() == [4, 4, 4]
    for fold, group in trials.groupby("fold"):
        complete = group[group["inner_folds_done"] == 2]
        assert (group["status"] == "complete").sum() == len(complete) >= 1
        best_trial = complete.loc[complete["inner_score"].idxmin()]
        if fold >= 0:
            row = best[best["fold"] == fold].iloc[0]
            assert row["inner_score"] == best_trial["inner_score"] and row["param_k"] == best_trial["param_k"]
        else:
            assert nested["final"]["params"] == {"k": int(best_trial["param_k"]),
                                                 "kernel": best_trial["param_kernel"]}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["command"] == "drugcell tune" and manifest["data_fingerprint"] == tiny_es[1].fingerprint()
    assert manifest["config"]["space"]["k"] == {"int": [2, 30], "log": True} and manifest["seed"] == 0
    assert sum("trial" in line for line in lines) == 12 and any("outer" in line for line in lines)


def _fold0(es, spec):
    from drugcell.splits.folds import make_folds

    folds = np.asarray(make_folds([str(s) for s in es.smiles], "scaffold", 2, 0).folds)
    return np.flatnonzero(folds != 0), np.flatnonzero(folds == 0)


def _contest_score(es, params, train_idx, test_idx):
    """Fit knn directly, score with contest_scorer's long-table scorer under held-out Mejia weights."""
    from contest_scorer import score_compounds
    from drugcell.defaults import COMPOUND_COL, GENE_COL, PRED_COL
    from drugcell.models import make_predictor

    model = make_predictor("knn", **params).fit(es.subset(train_idx), seed=0)
    test = es.subset(test_idx)
    pred = model.predict(list(test.smiles)).mean
    pred_long = pd.DataFrame({COMPOUND_COL: np.repeat(test.compounds.astype(str), test.n_genes),
                              GENE_COL: np.tile(test.genes.astype(str), test.n_compounds), PRED_COL: pred.ravel()})
    weights = pd.DataFrame(test.weights, index=test.genes.astype(str), columns=test.compounds.astype(str))
    return score_compounds(test.truth_long(), pred_long, weights=weights)["wmse"]


def _check_outer_and_inner_scores_recomputed(tuned, tiny_es):
    from drugcell.splits.folds import make_folds

    res, out, spec, _ = tuned
    es = tiny_es[1]
    row = pd.read_parquet(out / "best_params.parquet").iloc[0]
    params = {"std": False, **json.loads(row["params"])}
    train_idx, test_idx = _fold0(es, spec)
    assert row["n_test"] == len(test_idx)
    outer = _contest_score(es, params, train_idx, test_idx)
    assert np.isclose(row["outer_score"], outer.mean(), rtol=1e-5)
    # the best trial's inner score: 2 scaffold folds of the outer training compounds only, pooled mean
    inner = np.asarray(make_folds([str(s) for s in es.smiles[train_idx]], "scaffold", 2, 0).folds)
    pooled = pd.concat([_contest_score(es, params, train_idx[inner != j], train_idx[inner == j]) for j in (0, 1)])
    assert np.isclose(row["inner_score"], pooled.mean(), rtol=1e-5)


def _check_tuned_toml_in_cv_and_fit(tuned, tiny_es, tmp_path):
    from drugcell.cli import app

    res, out, spec, _ = tuned
    cfg = tomllib.loads((out / "tuned.toml").read_text())
    assert cfg["predictors"][1] == {"name": "knn_tuned", "kind": "knn", "std": False, **res.nested["final"]["params"]}
    cache = str(tiny_es[0])
    run = CliRunner().invoke(app, ["cv", "--data", cache, "--config", str(out / "tuned.toml"), "--out",
                                   str(tmp_path / "cv"), "--bootstrap", "50", "--no-progress"])
    assert run.exit_code == 0, run.output
    scores = pd.read_parquet(tmp_path / "cv" / "scores.parquet")
    assert sorted(scores["predictor"].unique()) == ["knn_tuned", "wmean"]
    # the same outer folds as the tuning run: cv's fold-0 score of knn_tuned is the final params' on fold 0
    mine = scores[(scores["predictor"] == "knn_tuned") & (scores["metric"] == "mejia") & (scores["fold"] == 0)]
    want = _contest_score(tiny_es[1], {"std": False, **res.params}, *_fold0(tiny_es[1], spec))
    assert np.isclose(mine["wmse"].mean(), want.mean(), rtol=1e-5)
    fit = CliRunner().invoke(app, ["fit", "--data", cache, "--config", str(out / "tuned.toml"), "--predictor",
                                   "knn_tuned", "--out", str(tmp_path / "model")])
    assert fit.exit_code == 0, fit.output
    assert json.loads((tmp_path / "model" / "model.json").read_text())["config"]["k"] == res.params["k"]


def _check_a_failing_trial_stops_the_search(tiny_es):
    """Inside the tuning run's Ray session: a trial's input error ends the search, with its message."""
    import ray

    from drugcell.tuning.search import run_search

    es = tiny_es[1]
    spec = spec_from_dict(_space(tune__kind="blend", tune__name="bl", tune__params={"members": [{"kind": "knn"}]},
                                 space__k=None, space__kernel=None, space__inner_folds={"int": [400, 500]}))
    rows = np.arange(es.n_compounds)
    with pytest.raises(DrugcellInputError, match="a tuning trial failed: blend: inner folds .* cannot make 4"):
        run_search(ray.put(es), spec, rows, rows % 2, trials=2, seed=0, workers=1, log=lambda line: None)


def test_tune_plugin_option_is_imported_first_and_named_when_it_fails(tmp_path):
    """`tune --plugin` imports the module before anything else (and passes it to every Ray worker);
    a module that cannot be imported is named, exit code 2, before the data or Ray are touched."""

    space = tmp_path / "space.toml"
    space.write_text('[tune]\nkind = "knn"\n[space]\nk = {int = [2, 5]}\n')
    res = subprocess.run([sys.executable, "-m", "drugcell", "tune", "--data", str(tmp_path / "nothing"),
                          "--space", str(space), "--out", str(tmp_path / "t"), "--plugin", "no_such_team_module"],
                         capture_output=True, text=True)
    assert res.returncode == 2, res.stderr
    assert "--plugin no_such_team_module: cannot import it" in res.stderr
    assert not (tmp_path / "t").exists()


def test_trial_context_carries_the_plugins_to_the_workers():
    import pickle

    from drugcell.tuning.search import TrialContext

    ctx = TrialContext(kind="knn", fixed={}, dims=(), rows=np.arange(3), inner=np.zeros(3, dtype=int),
                       metric="mejia", seed=0, plugins=("team.predictors",))
    assert pickle.loads(pickle.dumps(ctx)).plugins == ("team.predictors",)
