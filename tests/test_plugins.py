"""Predictors from other packages (issue #12 item 3): the ``drugcell.predictors`` entry-point group
(a plugin package built and installed for the test), ``--plugin MODULE`` on cv, submit, fit and
predict, a broken plugin named in a clear message, and scikit-learn style get_params/set_params."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from drugcell import cli
from drugcell.errors import DrugcellInputError
from drugcell.models import make_predictor, registry
from tests.test_cv import toy_es
from tests.test_submit import write_inputs

ROOT = Path(__file__).resolve().parent.parent

#: a predictor that predicts the training mean plus a constant: shift = 0 is the built-in `mean`
SHIFT_SOURCE = '''
import numpy as np
from drugcell.models.base import Prediction, Predictor


class ShiftPredictor(Predictor):
    """The training mean plus `shift` (a plugin's predictor, registered by its entry point)."""

    defaults = {"shift": 0.0}
    state_fields = ("profile_",)
    simplicity = 5

    def _validate(self):
        if not isinstance(self.params["shift"], (int, float)):
            raise ValueError("shift must be a number")

    def _fit(self, train, seed):
        self.profile_ = np.asarray(train.expression, dtype=np.float64).mean(axis=0).astype(np.float32)

    def _predict(self, smiles):
        mean = np.tile(self.profile_ + np.float32(self.params["shift"]), (len(smiles), 1))
        return Prediction(mean=mean, info={"n_fallback": 0.0})
'''


def _run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["drugcell", *args])
    with pytest.raises(SystemExit) as exc:
        cli.main()
    out = capsys.readouterr()
    return (0 if exc.value.code is None else exc.value.code), out.out, out.err


def _config(path: Path, *predictors: str) -> Path:
    blocks = "".join(f"[[predictors]]\n{p}\n" for p in predictors)
    path.write_text("[cv]\nfolds = 3\nbootstrap_resamples = 200\nmetrics = [\"mejia\"]\n"
                    "[output]\nuncertainty_sample = 0\n[estimate]\ntest_plates = 1\n" + blocks)
    return path


# ----------------------------------------------------------------------------- entry points
@pytest.fixture(scope="module")
def installed_plugin(tmp_path_factory) -> Path:
    """The package `drugcell-toyplugin` built from source and pip-installed into a target folder:
    an entry point naming a class, one naming a module that registers its kind, one broken."""
    root = tmp_path_factory.mktemp("plugin")
    src = root / "src"
    (src / "toyplug").mkdir(parents=True)
    (src / "pyproject.toml").write_text(textwrap.dedent('''
        [build-system]
        requires = ["setuptools>=68"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "drugcell-toyplugin"
        version = "0.1.0"

        [project.entry-points."drugcell.predictors"]
        toy_shift = "toyplug.shift:ShiftPredictor"
        toy_module = "toyplug.registered"
        toy_broken = "toyplug.broken"

        [tool.setuptools]
        packages = ["toyplug"]
        '''))
    (src / "toyplug" / "__init__.py").write_text("")
    (src / "toyplug" / "shift.py").write_text(SHIFT_SOURCE)
    (src / "toyplug" / "registered.py").write_text(textwrap.dedent('''
        from drugcell import register
        from toyplug.shift import ShiftPredictor


        @register("toy_registered")
        class Registered(ShiftPredictor):
            """Registered by the module's own decorator."""
        '''))
    (src / "toyplug" / "broken.py").write_text("raise ImportError('toyplug.broken needs the package frobnicate')\n")
    target = root / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
                           "--quiet", "--target", str(target), str(src)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert list(target.glob("drugcell_toyplugin-0.1.0.dist-info/entry_points.txt"))
    return target


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("plugin_data")
    es = toy_es(n_templates=4, n_per=6, n_genes=20)
    es.save(root / "es")
    write_inputs(root, es)
    return root


def test_an_installed_plugin_package_runs_in_cv(installed_plugin, cache, tmp_path):
    cfg = _config(tmp_path / "c.toml", 'name = "mean"\nkind = "mean"',
                  'name = "shift0"\nkind = "toy_shift"', 'name = "half"\nkind = "toy_shift"\nshift = 0.5',
                  'name = "one"\nkind = "toy_shift"\nshift = 1.0', 'name = "reg"\nkind = "toy_registered"')
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(installed_plugin)])}
    proc = subprocess.run([sys.executable, "-m", "drugcell", "cv", "--data", str(cache / "es"), "--config", str(cfg),
                           "--out", str(tmp_path / "run"), "--no-progress"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr
    # the broken entry point is named, with its package and the reason, and does not stop the others
    assert "plugin 'toy_broken' failed to load" in proc.stderr and "drugcell-toyplugin 0.1.0" in proc.stderr
    assert "needs the package frobnicate" in proc.stderr
    scores = pd.read_parquet(tmp_path / "run" / "scores.parquet").pivot_table(
        index="compound", columns="predictor", values="wmse")
    # shift = 0 predicts exactly what the built-in mean does; with weights summing to 1 per compound,
    # wMSE(s) = a + 2 b s + s^2, so wMSE(1) - 2 wMSE(0.5) + wMSE(0) = 0.5 for every compound
    np.testing.assert_allclose(scores["shift0"], scores["mean"], rtol=1e-6)
    np.testing.assert_allclose(scores["reg"], scores["mean"], rtol=1e-6)
    np.testing.assert_allclose(scores["one"] - 2 * scores["half"] + scores["mean"], 0.5, atol=1e-4)

    # a config naming a kind no plugin provides: exit 2; the broken plugin is named beside the error
    bad = _config(tmp_path / "bad.toml", 'name = "x"\nkind = "toy_missing"')
    proc = subprocess.run([sys.executable, "-m", "drugcell", "cv", "--data", str(cache / "es"), "--config", str(bad),
                           "--out", str(tmp_path / "run2")], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=600)
    assert proc.returncode == 2 and "unknown predictor kind 'toy_missing'" in proc.stderr
    assert "toy_registered" in proc.stderr and "toy_shift" in proc.stderr  # listed among the kinds on offer
    assert "warning: drugcell predictor plugin 'toy_broken' failed to load (entry point 'toy_broken' = " \
           "'toyplug.broken'" in proc.stderr and "Traceback" not in proc.stderr


def test_entry_points_are_read_once_on_the_first_lookup(installed_plugin, monkeypatch):
    monkeypatch.setattr(registry, "_PLUGINS", registry._Plugins())
    monkeypatch.syspath_prepend(str(installed_plugin))
    for kind in ("toy_shift", "toy_registered"):
        monkeypatch.delitem(registry.PREDICTORS._entries, kind, raising=False)
    assert "toy_shift" not in registry.PREDICTORS  # nothing read before a lookup needs it
    registry.get_class("mean")
    assert not registry._PLUGINS.loaded  # a built-in kind needs no plugin
    with pytest.warns(RuntimeWarning, match="toy_broken"):
        cls = registry.get_class("toy_shift")
    assert cls.kind == "toy_shift" and registry._PLUGINS.loaded and set(registry._PLUGINS.broken) == {"toy_broken"}
    registry.available()  # read once: no second warning
    assert make_predictor("toy_shift", shift=1.0).get_params() == {"shift": 1.0}


# ----------------------------------------------------------------------------- --plugin MODULE
def test_plugin_option_in_cv_fit_predict_and_submit(cache, tmp_path, monkeypatch, capsys):
    mod = "drugcell_test_plugin_opt"
    (tmp_path / f"{mod}.py").write_text(SHIFT_SOURCE + '\n\nfrom drugcell import register\n'
                                                       'register("opt_shift")(ShiftPredictor)\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, mod, raising=False)
    cfg = _config(tmp_path / "c.toml", 'name = "mean"\nkind = "mean"', 'name = "s"\nkind = "opt_shift"')

    code, _, err = _run_cli(monkeypatch, capsys, "cv", "--data", str(cache / "es"), "--config", str(cfg),
                            "--out", str(tmp_path / "nope"))
    assert code == 2 and "unknown predictor kind 'opt_shift'" in err
    code, out, err = _run_cli(monkeypatch, capsys, "cv", "--plugin", mod, "--data", str(cache / "es"),
                              "--config", str(cfg), "--out", str(tmp_path / "run"), "--no-progress")
    assert code == 0, err
    scores = pd.read_parquet(tmp_path / "run" / "scores.parquet").pivot_table(
        index="compound", columns="predictor", values="wmse")
    np.testing.assert_allclose(scores["s"], scores["mean"], rtol=1e-6)

    code, out, err = _run_cli(monkeypatch, capsys, "fit", "--plugin", mod, "--data", str(cache / "es"),
                              "--predictor", "opt_shift", "--out", str(tmp_path / "model"))
    assert code == 0 and "opt_shift (opt_shift) fitted on 24 compounds" in out, err

    code, out, err = _run_cli(monkeypatch, capsys, "submit", "--plugin", mod, "--data", str(cache / "es"),
                              "--predictor", "opt_shift", "--test-compounds", str(cache / "test_compounds.csv"),
                              "--gene-filter", str(cache / "gene_filter.csv"), "--out", str(tmp_path / "s.parquet"))
    assert code == 0, err
    sub = pd.read_parquet(tmp_path / "s.parquet")
    es = toy_es(n_templates=4, n_per=6, n_genes=20)
    profile = dict(zip(es.genes, es.expression.astype(np.float64).mean(axis=0)))
    np.testing.assert_allclose(sub["predicted_expression"], sub["gene_id"].map(profile), rtol=1e-6)

    # a saved model of a plugin kind needs the plugin to be read back: without it, a clear error
    monkeypatch.delitem(registry.PREDICTORS._entries, "opt_shift")
    monkeypatch.delitem(sys.modules, mod)
    code, _, err = _run_cli(monkeypatch, capsys, "predict", "--model", str(tmp_path / "model"), "--smiles", "CCO")
    assert code == 2 and "unknown predictor kind 'opt_shift'" in err and "--plugin" in err
    code, out, err = _run_cli(monkeypatch, capsys, "predict", "--plugin", mod, "--model", str(tmp_path / "model"),
                              "--smiles", "CCO", "--out", str(tmp_path / "p.csv"))
    assert code == 0, err
    pred = pd.read_csv(tmp_path / "p.csv", dtype={"gene_id": str})
    np.testing.assert_allclose(pred["predicted_expression"], pred["gene_id"].map(profile), rtol=1e-5)


def test_plugin_option_errors_name_the_module(tmp_path, monkeypatch, capsys):
    code, _, err = _run_cli(monkeypatch, capsys, "fit", "--plugin", "no_such_module_xyz", "--data", str(tmp_path),
                            "--predictor", "mean", "--out", str(tmp_path / "m"))
    assert code == 2 and "--plugin no_such_module_xyz: cannot import it (ModuleNotFoundError" in err
    bad = tmp_path / "bad_plugin.py"
    bad.write_text("raise RuntimeError('boom at import')\n")
    with pytest.raises(DrugcellInputError, match=r"--plugin .*bad_plugin.py: cannot import it \(RuntimeError: boom"):
        registry.load_plugins([str(bad)])
    good = tmp_path / "file_plugin.py"
    good.write_text(SHIFT_SOURCE + '\n\nfrom drugcell import register\nregister("file_shift")(ShiftPredictor)\n')
    try:
        assert registry.load_plugins([str(good)]) == ["file_shift"]
        assert registry.load_plugins([str(good)]) == []  # loaded once
    finally:
        registry.PREDICTORS._entries.pop("file_shift", None)


def test_a_plugin_cannot_take_a_builtin_name():
    from drugcell.models.base import Predictor

    class Impostor(Predictor):
        def _predict(self, smiles):
            raise NotImplementedError

    with pytest.raises(ValueError, match="predictor kind 'knn' is built in"):
        registry.register("knn")(Impostor)


# ----------------------------------------------------------------------------- get_params / set_params
def test_get_params_and_set_params_follow_scikit_learn():
    p = make_predictor("knn", k=3, kernel="uniform")
    params = p.get_params()
    assert params["k"] == 3 and params["kernel"] == "uniform" and set(params) == set(type(p).defaults)
    params["k"] = 99  # a copy
    assert p.params["k"] == 3
    assert type(p)(**p.get_params()).get_params() == p.get_params()  # clone-able
    assert p.set_params(k=5, kernel="softmax") is p and p.get_params()["k"] == 5
    before = p.get_params()
    with pytest.raises(DrugcellInputError, match="knn: k must be a positive integer, got 0"):
        p.set_params(k=0)  # checked as the constructor checks
    with pytest.raises(DrugcellInputError, match="unknown parameter"):
        p.set_params(kk=3)
    with pytest.raises(DrugcellInputError, match="JSON values"):
        p.set_params(k=np.int64(4))
    assert p.get_params() == before  # nothing changed by a refused call


def test_set_params_unfits_and_restores_derived_state_on_failure():
    es = toy_es(n_templates=3, n_per=6, n_genes=10)
    p = make_predictor("knn", k=2).fit(es)
    assert p.is_fitted
    p.set_params(k=2)  # no change: still fitted
    assert p.is_fitted
    p.set_params(k=3)
    assert not p.is_fitted
    with pytest.raises(RuntimeError, match="must be fitted"):
        p.predict(["CCO"])
    blend = make_predictor("blend", members=[{"kind": "knn", "k": 2}], baselines=["mean"])
    names = [c.name for c in blend.candidates_]
    with pytest.raises(DrugcellInputError):
        blend.set_params(members=[{"kind": "nope"}])
    assert [c.name for c in blend.candidates_] == names and blend.params["members"] == [{"kind": "knn", "k": 2}]
