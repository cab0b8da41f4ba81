"""The public API (issue #12 item 1): ``import drugcell as dc`` gives the workflow, lazily; torch
only when a deep model is used; the registry knows every built-in kind without importing it."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import drugcell as dc
from drugcell.models import registry

ROOT = Path(__file__).resolve().parent.parent


def _python(code: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          cwd=cwd or ROOT, timeout=300)


# ----------------------------------------------------------------------------- cheap imports
def test_import_drugcell_models_and_cli_never_imports_torch_or_pandas():
    proc = _python(
        "import sys, json, drugcell, drugcell.models, drugcell.cli\n"
        "print(json.dumps({m: m in sys.modules for m in ('torch', 'pandas', 'rdkit', 'sklearn', 'matplotlib')}))")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {
        "torch": False, "pandas": False, "rdkit": False, "sklearn": False, "matplotlib": False}


def test_import_drugcell_alone_imports_none_of_its_modules_or_numpy():
    proc = _python("import sys, drugcell\nprint(sorted(m for m in sys.modules if m.startswith('drugcell.')), "
                   "'numpy' in sys.modules)")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[] False"


def test_capabilities_and_shallow_kinds_need_no_torch():
    """Which kinds need torch or return a std is known without importing them; building a shallow
    kind imports its own module only (the deep kinds' import is test_the_builtin_table_matches_the_classes's)."""
    proc = _python(
        "import sys, drugcell as dc\n"
        "from drugcell.models.registry import capability, kinds_with\n"
        "print(kinds_with('needs_torch'), capability('fusion', 'returns_std'), 'torch' in sys.modules)\n"
        "dc.make_predictor('ridge_fp')\n"
        "print('torch' in sys.modules, 'drugcell.models.ridge' in sys.modules, 'drugcell.models.knn' in sys.modules)")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["['fusion', 'mlp'] True False", "False True False"]


def test_the_builtin_table_matches_the_classes():
    """BUILTIN_KINDS repeats what each class declares (so --help and kinds_with need no import)."""
    for kind, entry in registry.BUILTIN_KINDS.items():
        cls = registry.get_class(kind)
        assert cls.__module__ == entry.module and cls.kind == kind
        for cap in ("returns_std", "needs_torch", "simplicity"):
            assert getattr(cls, cap) == getattr(entry, cap), (kind, cap)
    for module in {e.module for e in registry.BUILTIN_KINDS.values()}:  # a module registers only its listed kinds
        importlib.import_module(module)
    listed = {k for k, c in registry.PREDICTORS.items() if c.__module__.startswith("drugcell.models")}
    assert listed == set(registry.BUILTIN_KINDS)


# ----------------------------------------------------------------------------- the names
def test_every_public_name_resolves_and_is_listed():
    assert dc.__version__ and isinstance(dc.__version__, str)
    for name in dc.__all__:
        assert getattr(dc, name) is not None, name
        assert name in dir(dc)
    assert dc.ExpressionSet.__name__ == "ExpressionSet" and issubclass(dc.DrugcellInputError, ValueError)
    assert dc.register is registry.register and dc.make_predictor is registry.make_predictor
    assert dc.available_predictors() == registry.available()
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        dc.nope  # noqa: B018


def test_shipped_config_names_resolve_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = dc.load_config("default.toml")
    assert Path(cfg.source) == dc.config_path("default.toml") and Path(cfg.source).is_file()
    assert {"wmean", "ridge_fp", "blend"} <= {p.name for p in cfg.predictors}
    assert dc.load_config("configs/demo.toml").source == str(dc.config_path("demo.toml"))  # the old spelling
    (tmp_path / "default.toml").write_text('[[predictors]]\nname = "mine"\nkind = "mean"\n')
    assert [p.name for p in dc.load_config("default.toml").predictors] == ["mine"]  # a file of that name wins
    with pytest.raises(dc.DrugcellInputError, match="deep.toml, default.toml, demo.toml, minimol.toml"):
        dc.load_config("nope.toml")


# ----------------------------------------------------------------------------- the README example
@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    from drugcell.data.simulate import simulate_vcpi

    root = tmp_path_factory.mktemp("api")
    simulate_vcpi(root / "sim", preset="tiny", n_genes=600, n_test=10, seed=5)
    return root


def test_load_cv_fit_predict_as_the_readme_shows(sim):
    es = dc.load_vcpi(sim / "sim", out=sim / "cache")
    assert isinstance(es, dc.ExpressionSet) and (sim / "cache" / "manifest.json").is_file()
    assert dc.ExpressionSet.load(sim / "cache").fingerprint() == es.fingerprint()

    result = dc.run_cv(sim / "cache", "default.toml", sim / "run", predictors=["mean", "wmean"], folds=3,
                       bootstrap_resamples=200, progress=False, sets=["estimate.test_plates=1"])
    assert isinstance(result, dc.CVResult)
    assert set(result.scores["predictor"]) == {"mean", "wmean"} and result.scores["fold"].nunique() == 3
    assert result.best("mejia") in ("mean", "wmean") and (sim / "run" / "summary.md").is_file()

    model = dc.make_predictor("wmean").fit(es)
    pred = model.predict(["CC(=O)Oc1ccccc1C(=O)O"])
    x, w = es.expression.astype(np.float64), es.weights.astype(np.float64)  # (C, G), (G, C)
    by_hand = (w.T * x).sum(axis=0) / w.sum(axis=1)  # p_g = sum_c W_gc y_cg / sum_c W_gc
    np.testing.assert_allclose(pred.mean[0], by_hand, rtol=1e-5)

    # the held-out scores of `mean` are the Mejia wMSE of the training-fold mean, computed here by hand
    folds = pd.read_parquet(sim / "run" / "folds.parquet")
    fold_of = folds.set_index("compound").loc[es.compounds.astype(str), "fold"].to_numpy()
    mine = result.scores.query("predictor == 'mean' and metric == 'mejia'").set_index("compound")["wmse"]
    k = fold_of[0]
    test = np.flatnonzero(fold_of == k)
    profile = x[fold_of != k].mean(axis=0)
    expect = (w[:, test] * (profile[:, None] - x[test].T) ** 2).sum(axis=0)
    np.testing.assert_allclose(mine.loc[es.compounds[test].astype(str)].to_numpy(), expect, rtol=1e-4)


def test_make_submission_takes_a_cache_path_and_a_kind(sim):
    from drugcell.data.vcpi import GENE_FILTER_FILE, TEST_COMPOUNDS_FILE

    if not (sim / "cache").exists():
        dc.load_vcpi(sim / "sim", out=sim / "cache")
    res = dc.make_submission(sim / "cache", "wmean", sim / "sim" / TEST_COMPOUNDS_FILE,
                             sim / "sim" / GENE_FILTER_FILE, sim / "sub" / "p.parquet")
    sub = pd.read_parquet(sim / "sub" / "p.parquet")
    assert res.n_rows == len(sub) == 10 * res.n_genes
    assert dc.validate_submission(sub, test_compounds=sorted(set(sub["compound"])),
                                  gene_filter=sorted(set(sub["gene_id"])))["rows"] == len(sub)


def _readme_block(heading: str) -> str:
    """The first ```python block after ``heading`` in the README."""
    text = (ROOT / "README.md").read_text()
    after = text[text.index(heading):]
    return after.split("```python\n", 1)[1].split("```", 1)[0]


def test_the_readme_examples_run(sim, tmp_path, monkeypatch, capsys):
    """The README's Python example and its plugin example, run as written (in a folder holding
    cache/sim, a tiny simulated set)."""
    if not (sim / "cache").exists():
        dc.load_vcpi(sim / "sim", out=sim / "cache")
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "sim").symlink_to(sim / "cache", target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(_readme_block("## Use it from Python"), "README.md", "exec"), scope)  # noqa: S102
    assert capsys.readouterr().out.startswith("## Chosen predictor")
    assert set(scope["run"].scores["predictor"]) == {"wmean", "ridge_fp"} and len(scope["up"]) == 10
    assert scope["pred"].mean.shape == (1, scope["es"].n_genes)

    plugin = tmp_path / "team_predictors.py"
    plugin.write_text(_readme_block("### Your own predictor"))
    try:
        assert dc.load_plugins([str(plugin)]) == ["team_shift"]
        es = scope["es"]
        got = dc.make_predictor("team_shift", shift=1.0).fit(es).predict(["CCO", "CCN"]).mean
        np.testing.assert_allclose(got, np.tile(es.expression.astype(np.float64).mean(axis=0) + 1.0, (2, 1)),
                                   rtol=1e-5)
    finally:
        registry.PREDICTORS._entries.pop("team_shift", None)
