"""Sweeps in run configs: lists and ranges of scalar predictor parameters expand into named variants
(drugcell/sweeps.py, drugcell/config.py); the shipped default config's expanded list is pinned."""

from __future__ import annotations

import json

import pytest

from drugcell.config import config_from_dict, load_config, with_overrides
from drugcell.errors import DrugcellInputError
from drugcell.paths import repo_root

CONFIGS = repo_root() / "configs"


def _cfg(*entries, source="my.toml"):
    return config_from_dict({"predictors": [dict(e) for e in entries]}, source=source)


def _listed(cfg):
    return [(p.name, p.kind, p.params) for p in cfg.predictors]


def test_default_config_expands_to_the_list_it_had_by_hand():
    """Names, kinds, params and order of configs/default.toml, written out as the file listed them before."""
    want = [("control", "control", {}), ("mean", "mean", {}), ("wmean", "wmean", {})]
    want += [(f"knn_k{k}_{kern}", "knn", {"k": k, "kernel": kern})
             for k in (5, 10, 20, 50) for kern in ("uniform", "tanimoto", "softmax")]
    want += [("ridge_fp", "ridge_fp", {}), ("ridge_desc", "ridge_desc", {}),
             ("blend", "blend", {"members": [{"kind": "ridge_fp"}, {"kind": "knn", "k": 20, "kernel": "softmax"}],
                                 "baselines": ["wmean"], "inner_folds": 3})]
    assert _listed(load_config(CONFIGS / "default.toml")) == want
    text = (CONFIGS / "default.toml").read_text()
    assert "k = [5, 10, 20, 50]" in text and 'name = "knn_k5_uniform"' not in text  # the file uses the sweep


def test_cross_product_in_key_order_first_key_slowest_strings_bare():
    cfg = _cfg({"name": "nb", "kind": "knn", "kernel": ["uniform", "softmax"], "k": [3, 7], "std": [True, False]},
               {"name": "mean", "kind": "mean"})
    names = [p.name for p in cfg.predictors]
    assert names == ["nb_uniform_k3_stdtrue", "nb_uniform_k3_stdfalse", "nb_uniform_k7_stdtrue",
                     "nb_uniform_k7_stdfalse", "nb_softmax_k3_stdtrue", "nb_softmax_k3_stdfalse",
                     "nb_softmax_k7_stdtrue", "nb_softmax_k7_stdfalse", "mean"]
    assert cfg.predictor("nb_softmax_k3_stdfalse").params == {"kernel": "softmax", "k": 3, "std": False}
    # without a name the kind names the variants; a [params] table sweeps like top-level keys
    cfg = _cfg({"kind": "knn", "params": {"k": [4, 9]}})
    assert _listed(cfg) == [("knn_k4", "knn", {"k": 4}), ("knn_k9", "knn", {"k": 9})]


def test_ranges_linear_log_and_integer():
    cfg = _cfg({"name": "a", "kind": "knn", "kernel": "softmax", "temperature": {"range": [0.1, 0.3], "num": 3}},
               {"name": "b", "kind": "knn", "temperature": {"range": [0.01, 1], "num": 3, "log": True}},
               {"name": "c", "kind": "ridge_fp", "inner_folds": {"range": [2, 4], "num": 3}},
               {"name": "d", "kind": "knn", "k": {"range": [10, 1000], "num": 3, "log": True}})
    got = {p.name: p.params for p in cfg.predictors}
    # 0.1 + 0.1 is 0.2 only after rounding to 4 significant digits (linspace gives 0.19999999999999998)
    assert [got[f"a_temperature{t}"]["temperature"] for t in ("0.1", "0.2", "0.3")] == [0.1, 0.2, 0.3]
    assert [got[f"b_temperature{t}"]["temperature"] for t in ("0.01", "0.1", "1")] == [0.01, 0.1, 1.0]
    assert [got[f"c_inner_folds{n}"]["inner_folds"] for n in (2, 3, 4)] == [2, 3, 4]
    assert all(isinstance(got[f"c_inner_folds{n}"]["inner_folds"], int) for n in (2, 3, 4))
    assert [got[f"d_k{k}"]["k"] for k in (10, 100, 1000)] == [10, 100, 1000]


def test_list_and_table_valued_parameters_are_never_swept():
    """A default that is a list/table (blend members, knn embedding_params) or None (ridge alphas) keeps
    its list or table as the value, beside a swept scalar of the same entry."""
    members = [{"kind": "ridge_fp"}, {"kind": "knn", "k": 5}]
    cfg = _cfg({"name": "b", "kind": "blend", "members": members, "baselines": ["wmean", "mean"],
                "inner_folds": [2, 3]},
               {"name": "r", "kind": "ridge_fp", "alphas": [0.1, 1.0, 10.0], "baseline": ["wmean", "mean"]},
               {"name": "n", "kind": "knn", "embedding_params": {}, "k": [1]})
    assert _listed(cfg) == [
        ("b_inner_folds2", "blend", {"members": members, "baselines": ["wmean", "mean"], "inner_folds": 2}),
        ("b_inner_folds3", "blend", {"members": members, "baselines": ["wmean", "mean"], "inner_folds": 3}),
        ("r_wmean", "ridge_fp", {"alphas": [0.1, 1.0, 10.0], "baseline": "wmean"}),
        ("r_mean", "ridge_fp", {"alphas": [0.1, 1.0, 10.0], "baseline": "mean"}),
        ("n_k1", "knn", {"embedding_params": {}, "k": 1})]


@pytest.mark.parametrize("entry, words", [
    ({"name": "knn", "kind": "knn", "k": []}, ["predictors[0]", "k = []", "sweeps over nothing"]),
    ({"name": "knn", "kind": "knn", "k": [5, 5]}, ["predictors[0]", "'knn_k5' twice", "repeated value"]),
    ({"name": "knn", "kind": "knn", "k": [5, 0]}, ["predictors[0]", "knn_k0", "swept k = 0", "positive integer"]),
    ({"name": "knn", "kind": "knn", "kernel": ["uniform", "cosine"]}, ["predictors[0]", "knn_cosine",
                                                                      "swept kernel = 'cosine'", "unknown kernel"]),
    ({"name": "knn", "kind": "knn", "kernel": {"range": [1, 2], "num": 2}}, ["predictors[0]", "not a range"]),
    ({"name": "knn", "kind": "knn", "k": {"range": [1, 2], "num": 5}}, ["predictors[0]", "repeats a value"]),
    ({"name": "knn", "kind": "knn", "k": {"range": [1, 9], "num": 1}}, ["predictors[0]", "num must be"]),
    ({"name": "knn", "kind": "knn", "k": {"range": [0, 9], "num": 3, "log": True}}, ["predictors[0]", "> 0"]),
    ({"name": "knn", "kind": "knn", "k": {"from": 1, "to": 9}}, ["predictors[0]", "not a range"]),
    ({"name": "knn", "kind": "knn", "k": [[5, 10]]}, ["predictors[0]", "inside"]),
    ({"name": "knn", "kind": "knn", "kernel": ["a b"]}, ["predictors[0]", "'a b'", "cannot be part"]),
])
def test_bad_sweeps_are_refused_naming_the_entry_and_the_value(entry, words):
    with pytest.raises(DrugcellInputError) as err:
        _cfg(entry)
    for w in words:
        assert w in str(err.value), (w, str(err.value))
    assert "my.toml" in str(err.value)


def test_a_variant_that_takes_another_entrys_name_is_refused():
    with pytest.raises(DrugcellInputError, match=r"predictors\[1\].*duplicate predictor name 'knn_k5'.*sweep"):
        _cfg({"name": "knn_k5", "kind": "knn", "k": 5}, {"name": "knn", "kind": "knn", "k": [5, 10]})


def test_the_expanded_config_is_what_manifests_hold_and_predictors_select(tmp_path):
    path = tmp_path / "sweep.toml"
    path.write_text('[[predictors]]\nname = "wmean"\nkind = "wmean"\n\n'
                    '[[predictors]]\nname = "knn"\nkind = "knn"\nk = [5, 20]\nkernel = ["uniform", "softmax"]\n')
    cfg = load_config(path)
    raw = json.loads(json.dumps(cfg.to_dict()))  # what manifest.json holds
    assert [p["name"] for p in raw["predictors"]] == ["wmean", "knn_k5_uniform", "knn_k5_softmax",
                                                      "knn_k20_uniform", "knn_k20_softmax"]
    assert all(not isinstance(p.get("k", 0), list) for p in raw["predictors"])
    again = config_from_dict(raw, source="manifest.json")  # a run repeated from its manifest
    assert _listed(again) == _listed(cfg)
    picked = with_overrides(cfg, predictors=["knn_k20_softmax", "wmean"])
    assert _listed(picked) == [("knn_k20_softmax", "knn", {"k": 20, "kernel": "softmax"}), ("wmean", "wmean", {})]
    with pytest.raises(DrugcellInputError, match="no predictor named 'knn'"):
        with_overrides(cfg, predictors=["knn"])


def test_cv_runs_the_expanded_variants_and_records_them(tmp_path):
    from drugcell.evaluation.cv import run_cv
    from tests.test_cv import toy_es

    cfg = config_from_dict({"cv": {"folds": 2, "bootstrap_resamples": 50, "metrics": ["mejia"]},
                            "output": {"uncertainty_sample": 0},
                            "predictors": [{"name": "wmean", "kind": "wmean"},
                                           {"name": "knn", "kind": "knn", "k": [2, 4], "std": False}]})
    res = run_cv(toy_es(n_templates=4, n_per=6, n_genes=12), cfg, tmp_path / "run", progress=False)
    assert sorted(res.scores["predictor"].unique()) == ["knn_k2", "knn_k4", "wmean"]
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert [(p["name"], p.get("k")) for p in manifest["config"]["predictors"]] == [
        ("wmean", None), ("knn_k2", 2), ("knn_k4", 4)]
