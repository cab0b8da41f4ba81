"""Issue #11 item 1: `drugcell cv --engine local|ray`. The engine and its worker count change the
wall time, never a result file: local and Ray with two workers give byte-identical tables; what is
seeded does not depend on which part ran first; each fit runs with the run's BLAS thread count; a
missing Ray is a clear error before any work."""

from __future__ import annotations

import builtins
import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from drugcell.config import config_from_dict
from drugcell.data.expression_set import ExpressionSet
from drugcell.errors import DrugcellInputError
from drugcell.evaluation.cv import run_cv
from drugcell.evaluation.engines import LocalEngine, RayEngine, make_engine
from drugcell.models import Prediction, Predictor, register

#: the tables that must not depend on the engine (diagnostics hold wall times, manifest.json the engine)
TABLES = ["scores", "summary", "agreement", "comparisons", "leaderboard_estimate", "uncertainty", "folds"]
PREDICTORS = [{"name": "control", "kind": "control"}, {"name": "wmean", "kind": "wmean"},
              {"name": "knn_k5", "kind": "knn", "k": 5, "kernel": "tanimoto"},
              {"name": "ridge_fp", "kind": "ridge_fp"}]


def engine_config(predictors=PREDICTORS, **output):
    return config_from_dict({"cv": {"folds": 3, "bootstrap_resamples": 200},
                             "output": {"uncertainty_sample": 500, "save_predictions": True, **output},
                             "predictors": predictors})


@pytest.fixture(scope="module")
def ray_session():
    """One local Ray for the module (2 CPUs, loopback): the engine joins it and leaves it running."""
    from drugcell.evaluation.engines import start_local_ray

    ray = pytest.importorskip("ray")
    start_local_ray(ray, 2)
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_local_and_ray_with_two_workers_give_byte_identical_files(plated_cache, ray_session, tmp_path):
    es = ExpressionSet.load(plated_cache)
    cfg = engine_config()
    local = run_cv(es, cfg, tmp_path / "local", progress=False).out_dir
    ray = run_cv(es, cfg, tmp_path / "ray", progress=False, engine=RayEngine(workers=2)).out_dir
    assert ray_session.is_initialized()  # joined, not shut down: drugcell did not start it
    for name in TABLES:
        assert (local / f"{name}.parquet").read_bytes() == (ray / f"{name}.parquet").read_bytes(), name
    for p in cfg.predictors:
        f = f"predictions/{p.name}.npy"
        assert (local / f).read_bytes() == (ray / f).read_bytes(), f
    assert (local / "choice.json").read_bytes() == (ray / "choice.json").read_bytes()
    # every term of the estimate came through the parts: the data have plates, knn and ridge a std
    est = pd.read_parquet(local / "leaderboard_estimate.parquet")
    assert (est["plate_term"] != 0).all() and est["floor"].notna().all()
    assert set(pd.read_parquet(local / "uncertainty.parquet")["predictor"]) == {"knn_k5", "ridge_fp"}
    # diagnostics: the same counters, the same values but for the wall times
    a, b = (pd.read_parquet(d / "diagnostics.parquet") for d in (local, ray))
    assert a[["predictor", "fold", "counter"]].equals(b[["predictor", "fold", "counter"]])
    timed = a["counter"].isin(["fit_s", "predict_s"])
    assert a.loc[~timed, "value"].equals(b.loc[~timed, "value"])
    engines = [json.loads((d / "manifest.json").read_text())["engine"] for d in (local, ray)]
    assert engines == [{"name": "local", "workers": 1, "threads_per_fit": 1},
                       {"name": "ray", "workers": 2, "threads_per_fit": 1, "address": "local"}]


PLUGIN = """
import numpy as np
import drugcell as dc
from drugcell.models import Prediction, Predictor


@dc.register("test_plugin_half_mean")
class HalfMean(Predictor):
    defaults = {}
    state_fields = ("profile_",)

    def _fit(self, train, seed):
        self.profile_ = train.expression.mean(axis=0) / 2

    def _predict(self, smiles):
        return Prediction(mean=np.tile(self.profile_, (len(smiles), 1)), std=None, info={})
"""


@pytest.mark.slow
def test_ray_workers_import_the_runs_plugins(ray_session, tmp_path):
    """A `--plugin` predictor is registered in the driver only; each Ray worker imports it again."""
    from drugcell.models.registry import load_plugins
    from tests.test_cv import toy_es

    (tmp_path / "my_plugin.py").write_text(PLUGIN)
    load_plugins([str(tmp_path / "my_plugin.py")])
    cfg = config_from_dict({"cv": {"folds": 2, "bootstrap_resamples": 20},
                            "predictors": [{"name": "half", "kind": "test_plugin_half_mean"}]})
    es = toy_es(n_templates=3, n_per=6)
    local = run_cv(es, cfg, tmp_path / "local", progress=False).out_dir
    engine = make_engine("ray", workers=1, plugins=[str(tmp_path / "my_plugin.py")])
    ray = run_cv(es, cfg, tmp_path / "ray", progress=False, engine=engine).out_dir
    assert (local / "scores.parquet").read_bytes() == (ray / "scores.parquet").read_bytes()


def test_the_uncertainty_sample_does_not_depend_on_which_part_ran_first(tmp_path):
    """Main drew every part's sample from one generator in run order, so a part's cells depended on
    the parts before it (and would on the order a parallel engine finishes them)."""
    from tests.test_cv import toy_es

    es = toy_es(n_templates=4, n_per=6)
    knn = [{"name": f"knn_k{k}", "kind": "knn", "k": k} for k in (3, 5)]
    samples = []
    for i, preds in enumerate((knn, knn[::-1], knn[1:])):
        cfg = config_from_dict({"cv": {"folds": 2, "bootstrap_resamples": 20}, "output": {"uncertainty_sample": 40},
                                "predictors": preds})
        unc = pd.read_parquet(run_cv(es, cfg, tmp_path / str(i), progress=False).out_dir / "uncertainty.parquet")
        samples.append(unc[unc.predictor == "knn_k5"].sort_values(["fold", "compound", "gene"]).reset_index(drop=True))
    pd.testing.assert_frame_equal(samples[0], samples[1])
    pd.testing.assert_frame_equal(samples[0], samples[2])
    assert len(samples[0]) == 2 * 40


@register("test_records_threads")
class RecordsThreads(Predictor):
    """Test-only: the training mean; notes the BLAS threads it was fitted with."""

    defaults = {}
    state_fields = ("profile_",)
    seen: list[int] = []

    def _fit(self, train, seed):
        from threadpoolctl import threadpool_info

        type(self).seen += [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
        self.profile_ = train.expression.mean(axis=0)

    def _predict(self, smiles):
        return Prediction(mean=np.tile(self.profile_, (len(smiles), 1)), std=None, info={})


@pytest.mark.parametrize("threads", [1, 2])
def test_each_fit_runs_with_the_runs_blas_thread_count(tmp_path, threads):
    """OpenBLAS's results change in the last bits with its thread count, so it is fixed per fit."""
    from threadpoolctl import threadpool_info

    from tests.test_cv import toy_es

    before = [i["num_threads"] for i in threadpool_info()]
    RecordsThreads.seen = []
    cfg = config_from_dict({"cv": {"folds": 2, "bootstrap_resamples": 20},
                            "predictors": [{"name": "t", "kind": "test_records_threads"}]})
    run_cv(toy_es(n_templates=3, n_per=6), cfg, tmp_path / "run", progress=False, engine=LocalEngine(threads))
    assert RecordsThreads.seen and set(RecordsThreads.seen) == {threads}
    assert [i["num_threads"] for i in threadpool_info()] == before  # restored after the fits


def test_engine_ray_without_ray_installed_is_a_clear_error_before_the_data(tmp_path, monkeypatch):
    from drugcell.cli import app

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    res = CliRunner().invoke(app, ["cv", "--data", str(tmp_path / "no_such_cache"), "--out", str(tmp_path / "run"),
                                   "--engine", "ray", "--no-progress"])
    assert isinstance(res.exception, DrugcellInputError), res.output  # the CLI prints it and exits 2
    msg = str(res.exception)
    assert "--engine ray needs Ray, which is not installed" in msg and ".[ray]" in msg
    assert "no_such_cache" not in res.output + msg  # said before the data are looked at
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kwargs, match", [
    ({"name": "spark"}, "--engine must be one of local, ray"),
    ({"workers": 2}, "--workers 2 needs --engine ray"),
    ({"address": "auto"}, "--address joins a Ray cluster: it needs --engine ray"),
    ({"threads": 0}, "--threads must be a whole number >= 1"),
])
def test_engine_options_are_checked(kwargs, match):
    with pytest.raises(DrugcellInputError, match=match):
        make_engine(**kwargs)
