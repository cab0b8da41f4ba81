"""AnnData in and out (#12 item 2): the ExpressionSet round trip, the generic h5ad adapter at well
and profile level, the recorded value scale (signed sets are not clipped) and the L1000 adapters."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from drugcell.cli import app
from drugcell.config import PredictorSpec
from drugcell.data.anndata_load import AnnDataOptions, load_anndata
from drugcell.data.expression_set import ExpressionSet
from drugcell.data.plates import PlateLayout
from drugcell.errors import DrugcellInputError
from drugcell.models import make_predictor
from drugcell.models.ridge_alpha import grouped_cv_curve
from drugcell.persistence import load_model, save_model
from drugcell.provenance import fingerprint_arrays
from drugcell.submission import make_submission
from tests.conftest import require_shared
from tests.test_cv import toy_es, toy_smiles
from tests.test_submit import write_inputs

ARRAYS = ("expression", "weights", "n_replicates", "control", "control_expression", "control_weights")
IDS = ("compounds", "genes", "smiles", "inchikey", "control_ids")


def rich_es(value_scale: str = "signed", controls: int = 2, plates: bool = True) -> ExpressionSet:
    """Every part a set can hold: controls, plates, compound metadata, nested info."""
    rng = np.random.default_rng(3)
    c, g = 7, 5
    w = rng.uniform(size=(g, c))
    cw = rng.uniform(size=(g, controls))
    lay = None
    if plates:
        lay = PlateLayout(plate_ids=["P1", "P2", "P3"], compound_counts=rng.integers(0, 3, size=(c, 3)),
                          control_mean=rng.normal(5, 1, size=(3, g)), control_var=rng.uniform(size=(3, g)),
                          control_n=[4, 5, 6])
    return ExpressionSet(
        compounds=[f"cmp{i}" for i in range(c)], genes=[f"ENSG{i:011d}" for i in range(g)],
        expression=rng.normal(0, 2, size=(c, g)), weights=w / w.sum(0), n_replicates=rng.integers(1, 4, size=c),
        control=rng.normal(size=g), smiles=toy_smiles(1, c), inchikey=["KEY-A", "", "KEY-C", "", "", "", "KEY-G"],
        control_ids=["DMSO", "poscon"][:controls], control_expression=rng.normal(size=(controls, g)),
        control_weights=cw / cw.sum(0), plates=lay, value_scale=value_scale,
        compound_meta=pd.DataFrame({"compound_name": [f"drug {i}" for i in range(c)],
                                    "dose_um": [0.1, 1.0, np.nan, 10.0, 3.0, 1.0, 2.0],
                                    "moa": pd.Categorical(["a", "b", "a", "a", "b", "b", "a"])}),
        info={"source": "test", "nested": {"none": None, "mixed": [1, "a", 2.5], "empty": {}}, "n": 3},
    )


def assert_same_set(back: ExpressionSet, es: ExpressionSet, load_keys: tuple[str, ...] = ()) -> None:
    """Equal ids, arrays (dtypes too), scale, fingerprint, metadata, plates and info (but the
    ``fingerprint`` entry and ``load_keys``, which a cache load adds)."""
    for name in IDS:
        assert list(getattr(back, name)) == list(getattr(es, name)), name
    for name in ARRAYS:
        a, b = getattr(back, name), getattr(es, name)
        assert a.dtype == b.dtype and a.shape == b.shape, name
        np.testing.assert_array_equal(a, b, err_msg=name)
    assert back.value_scale == es.value_scale
    assert back.fingerprint() == es.fingerprint()
    skip = ("fingerprint", *load_keys)
    assert {k: v for k, v in back.info.items() if k not in skip} == {k: v for k, v in es.info.items() if k not in skip}
    if es.compound_meta is None:
        assert back.compound_meta is None
    else:
        pd.testing.assert_frame_equal(back.compound_meta, es.compound_meta)
    assert (back.plates is None) == (es.plates is None)
    if es.plates is not None:
        for f in ("plate_ids", "compound_counts", "control_mean", "control_var", "control_n"):
            a, b = getattr(back.plates, f), getattr(es.plates, f)
            assert a.dtype == b.dtype
            np.testing.assert_array_equal(a, b, err_msg=f)


# ============================================================================ the round trip
def test_to_anndata_layout():
    es = rich_es()
    a = es.to_anndata()
    assert a.shape == (7, 5) and a.X.dtype == np.float32
    assert list(a.obs_names) == list(es.compounds) and list(a.var_names) == list(es.genes)
    np.testing.assert_array_equal(a.layers["mejia_weights"], es.weights.T)  # compounds x genes
    assert list(a.obs["smiles"]) == list(es.smiles) and list(a.obs["n_replicates"]) == list(es.n_replicates)
    assert list(a.obs["compound_name"]) == [f"drug {i}" for i in range(7)]
    np.testing.assert_array_equal(a.varm["control_weights"], es.control_weights)
    np.testing.assert_array_equal(a.obsm["plate_counts"], es.plates.compound_counts)
    uns = a.uns["drugcell"]
    assert uns["value_scale"] == "signed" and uns["data_fingerprint"] == es.fingerprint()
    assert list(uns["control_ids"]) == ["DMSO", "poscon"] and json.loads(uns["info_json"])["n"] == 3
    a.X[0, 0] = 99.0  # a copy: the set is not changed through the AnnData
    assert es.expression[0, 0] != 99.0


@pytest.mark.parametrize("kind", ["signed+plates", "log2cpm, no controls, no plates"])
def test_round_trip_in_memory_and_through_h5ad(tmp_path, kind):
    es = rich_es() if kind.startswith("signed") else rich_es("log2cpm", controls=0, plates=False)
    if not kind.startswith("signed"):
        es = dataclasses.replace(es, expression=np.abs(es.expression), compound_meta=None)
    assert_same_set(ExpressionSet.from_anndata(es.to_anndata()), es)
    es.to_anndata().write_h5ad(tmp_path / "set.h5ad")
    back = ExpressionSet.from_anndata(ad.read_h5ad(tmp_path / "set.h5ad"))
    assert_same_set(back, es)
    assert "derived_from_fingerprint" not in back.info
    back.save(tmp_path / "cache")  # and on into a cache, unchanged
    assert_same_set(ExpressionSet.load(tmp_path / "cache"), es, ("path", "cache_format_version"))


def test_round_trip_of_a_loaded_vcpi_cache(tmp_path):
    """A real `drugcell load` cache (plates, positive controls) survives cache -> h5ad -> cache."""
    from drugcell.data.simulate import simulate_vcpi

    simulate_vcpi(tmp_path / "sim", preset="tiny", n_genes=300, seed=2)
    res = CliRunner().invoke(app, ["load", "--data", str(tmp_path / "sim"), "--out", str(tmp_path / "c"),
                                   "--no-progress"])
    assert res.exit_code == 0, res.output
    es = ExpressionSet.load(tmp_path / "c")
    assert es.plates is not None and len(es.control_ids) >= 2
    es.to_anndata().write_h5ad(tmp_path / "c.h5ad")
    back = ExpressionSet.from_anndata(ad.read_h5ad(tmp_path / "c.h5ad"))
    assert_same_set(back, es, ("cache_format_version",))  # describes the copy read from the cache


def test_from_anndata_of_a_subset_records_where_it_came_from():
    es = rich_es()
    a = es.to_anndata()
    sub = ExpressionSet.from_anndata(a[[0, 2, 3]].copy())
    assert list(sub.compounds) == ["cmp0", "cmp2", "cmp3"]
    np.testing.assert_array_equal(sub.weights, es.weights[:, [0, 2, 3]])
    assert sub.fingerprint() != es.fingerprint() and sub.info["derived_from_fingerprint"] == es.fingerprint()


def test_from_anndata_refuses_an_anndata_it_did_not_write():
    a = ad.AnnData(np.ones((2, 3), dtype=np.float32))
    with pytest.raises(DrugcellInputError, match="drugcell load --anndata"):
        ExpressionSet.from_anndata(a)
    b = rich_es().to_anndata()
    del b.layers["mejia_weights"]
    with pytest.raises(DrugcellInputError, match=r"layers\['mejia_weights'\]"):
        ExpressionSet.from_anndata(b)


# ============================================================================ the cache records the scale
def test_cache_records_the_value_scale(tmp_path):
    signed, plain = rich_es(), rich_es("log2cpm")
    signed.save(tmp_path / "s")
    plain.save(tmp_path / "p")
    ms = json.loads((tmp_path / "s" / "manifest.json").read_text())
    mp = json.loads((tmp_path / "p" / "manifest.json").read_text())
    assert (ms["format_version"], ms["value_scale"]) == (5, "signed")
    assert (mp["format_version"], mp["value_scale"]) == (4, "log2cpm")  # older drugcells still read it
    assert ExpressionSet.load(tmp_path / "s").value_scale == "signed"
    assert ExpressionSet.load(tmp_path / "p").value_scale == "log2cpm"
    # the same arrays on another scale are other data: another fingerprint
    assert ms["data_fingerprint"] != mp["data_fingerprint"]
    # an older cache (no field) reads as log2cpm
    mp.pop("value_scale")
    (tmp_path / "p" / "manifest.json").write_text(json.dumps(mp))
    assert ExpressionSet.load(tmp_path / "p").value_scale == "log2cpm"


def test_an_edited_value_scale_is_refused(tmp_path):
    rich_es().save(tmp_path / "s")
    path = tmp_path / "s" / "manifest.json"
    m = json.loads(path.read_text())
    m["value_scale"] = "log2cpm"  # would clip every prediction of signed data
    path.write_text(json.dumps(m))
    with pytest.raises(DrugcellInputError, match="fingerprint"):
        ExpressionSet.load(tmp_path / "s")
    m["value_scale"], m["format_version"] = "signed", 4
    path.write_text(json.dumps(m))
    with pytest.raises(DrugcellInputError, match="format version 4 holds log2cpm only"):
        ExpressionSet.load(tmp_path / "s")
    m["value_scale"], m["format_version"] = "zscore", 5
    path.write_text(json.dumps(m))
    with pytest.raises(DrugcellInputError, match="value_scale 'zscore'"):
        ExpressionSet.load(tmp_path / "s")


# ============================================================================ the adapter, well level
def well_anndata(seed: int = 0) -> ad.AnnData:
    """4 compounds (3, 2, 3 and 1 wells) and 4 DMSO wells; log-expression, 8 genes."""
    rng = np.random.default_rng(seed)
    comps = ["A"] * 3 + ["B"] * 2 + ["C"] * 3 + ["D"] + ["DMSO"] * 4
    smiles = {"A": "CCO", "B": "c1ccccc1O", "C": "CC(=O)Nc1ccc(O)cc1", "D": "CCN(CC)CC"}
    effect = {k: rng.normal(0, 1.5, 8) for k in smiles} | {"DMSO": np.zeros(8)}
    x = np.array([5 + effect[c] + rng.normal(0, 0.4, 8) for c in comps]).clip(0.1)
    obs = pd.DataFrame({
        "drug": comps, "smi": [smiles.get(c, np.nan) for c in comps],
        "name": [f"{c.lower()}-ol" for c in comps], "dose": rng.uniform(1, 10, len(comps)),
        "plate": pd.Categorical([f"p{i % 2}" for i in range(len(comps))]),
    }, index=[f"well{i}" for i in range(len(comps))])
    return ad.AnnData(X=x.astype(np.float32), obs=obs, var=pd.DataFrame(index=[f"G{i}" for i in range(8)]))


def mejia_by_hand(x: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The spec's recipe for one compound, written out (contest-metric.md, 'Mejia weights')."""
    rest = np.setdiff1d(np.arange(len(x)), rows)
    n_p, n_r = len(rows), len(rest)
    v_all = x.var(axis=0, ddof=1)
    v_p = np.maximum(x[rows].var(axis=0, ddof=1), v_all) if n_p > 1 else v_all
    v_r = np.maximum(x[rest].var(axis=0, ddof=1), v_all)
    t = (x[rows].mean(0) - x[rest].mean(0)) / np.maximum(np.sqrt(v_p / n_p + v_r / n_r), 1e-12)
    a = np.abs(t)
    s = (a - a.min()) / (a.max() - a.min())
    return s**2 / (s**2).sum()


def test_well_level_means_and_the_vcpi_weight_recipe():
    a = well_anndata()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # D has one well
        es, summary = load_anndata(a, AnnDataOptions("drug", "smi", control_values=("DMSO",)))
    x = np.asarray(a.X, dtype=np.float64)
    comp = a.obs["drug"].to_numpy()
    assert list(es.compounds) == ["A", "B", "C", "D"] and list(es.control_ids) == ["DMSO"]
    assert list(es.n_replicates) == [3, 2, 3, 1] and list(es.smiles) == ["CCO", "c1ccccc1O",
                                                                       "CC(=O)Nc1ccc(O)cc1", "CCN(CC)CC"]
    np.testing.assert_allclose(es.expression[2], x[comp == "C"].mean(0), rtol=1e-6)
    np.testing.assert_allclose(es.control, x[comp == "DMSO"].mean(0), rtol=1e-6)
    for name, j in (("A", 0), ("D", 3)):  # D: one well, its variance is the gene-wide floor
        np.testing.assert_allclose(es.weights[:, j], mejia_by_hand(x, np.flatnonzero(comp == name)), rtol=1e-5)
    np.testing.assert_allclose(es.control_weights[:, 0], mejia_by_hand(x, np.flatnonzero(comp == "DMSO")),
                               rtol=1e-5)
    assert es.value_scale == "log2cpm" and summary.scale_reason == "auto: no negative value"
    # metadata that is one value per compound travels; what varies between wells does not
    assert list(es.compound_meta.columns) == ["name"] and list(es.compound_meta["name"]) == ["a-ol", "b-ol", "c-ol",
                                                                                          "d-ol"]
    assert es.info["loader"]["options"]["condition"] == {"concentration_nm": None, "cell_line": None,
                                                        "timepoint": None}


def test_well_level_weights_from_a_file(tmp_path):
    a = well_anndata()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref, _ = load_anndata(a, AnnDataOptions("drug", "smi", control_values=("DMSO",)))
        flipped = dataclasses.replace(ref, weights=ref.weights[::-1] / ref.weights[::-1].sum(0))
        flipped.write_weights_parquet(tmp_path / "w.parquet", dtype="float32")
        es, summary = load_anndata(a, AnnDataOptions("drug", "smi", control_values=("DMSO",),
                                                     weights=str(tmp_path / "w.parquet")))
    np.testing.assert_array_equal(es.weights, flipped.weights)
    np.testing.assert_array_equal(es.control_weights, ref.control_weights)  # the file's DMSO column
    np.testing.assert_array_equal(es.expression, ref.expression)
    assert summary.weights_source == f"file {tmp_path / 'w.parquet'}"


# ============================================================================ the adapter, profile level
def zscore_anndata(n_templates: int = 3, n_per: int = 8, g: int = 12, seed: int = 1) -> ad.AnnData:
    """One z-score profile per compound; genes 0-2 are down in every compound."""
    rng = np.random.default_rng(seed)
    smiles = toy_smiles(n_templates, n_per)
    z = rng.normal(0, 1.0, size=(len(smiles), g))
    z[:, :3] -= 3.0
    obs = pd.DataFrame({"cid": [f"BRD-{i:04d}" for i in range(len(smiles))], "canonical_smiles": smiles,
                        "pert_iname": [f"drug{i}" for i in range(len(smiles))]},
                       index=[f"sig{i}" for i in range(len(smiles))])
    return ad.AnnData(X=z.astype(np.float32), obs=obs, var=pd.DataFrame(index=[f"G{i}" for i in range(g)]))


def test_profile_level_zscores_weights_and_scale():
    a = zscore_anndata()
    es, summary = load_anndata(a, AnnDataOptions("cid", "canonical_smiles", level="profile"))
    z = np.asarray(a.X, dtype=np.float64)
    assert es.value_scale == "signed" and summary.scale_reason.startswith("auto: zscore")
    np.testing.assert_array_equal(es.expression, a.X)  # compound ids sort as the rows do
    assert (es.n_replicates == 1).all()
    np.testing.assert_allclose(es.weights[:, 5], np.abs(z[5]) / np.abs(z[5]).sum(), rtol=1e-6)
    np.testing.assert_array_equal(es.control, np.zeros(12, np.float32))  # signed: relative to control
    assert list(es.compound_meta["pert_iname"][:2]) == ["drug0", "drug1"]


@pytest.mark.parametrize("kind", ["mean", "knn", "ridge_fp"])
def test_signed_predictions_are_not_clipped(kind):
    """The same profiles read as signed keep negative predictions; read as log2cpm they are clipped."""
    es, _ = load_anndata(zscore_anndata(), AnnDataOptions("cid", "canonical_smiles", level="profile"))
    as_log = dataclasses.replace(es, value_scale="log2cpm")
    new = ["c1ccc(CC)cc1CCO", "C1CCC(O)CC1N"]
    signed = make_predictor(kind).fit(es).predict(new)
    clipped = make_predictor(kind).fit(as_log).predict(new)
    assert (signed.mean[:, :3] < -1).all() and signed.info["n_clipped"] == 0
    assert (clipped.mean >= 0).all() and clipped.info["n_clipped"] >= 6


def test_ridge_inner_cv_scores_signed_values_unclipped():
    es, _ = load_anndata(zscore_anndata(), AnnDataOptions("cid", "canonical_smiles", level="profile"))
    ridge = make_predictor("ridge_fp", alphas=[0.1, 10.0, 1000.0])
    x, _ = ridge._features(list(es.smiles), fit=True)
    alphas = np.array([0.1, 10.0, 1000.0])
    p = ridge.params
    kw = dict(smiles=list(es.smiles), weights_gc=es.weights, metric=p["metric"], baseline=p["baseline"],
              n_folds=p["inner_folds"], cv_genes=p["cv_genes"], seed=0)
    raw, _ = grouped_cv_curve(x, es.expression, alphas, clip=False, **kw)
    cut, _ = grouped_cv_curve(x, es.expression, alphas, clip=True, **kw)
    assert (cut > raw + 0.5).all()  # three genes near -3 scored against 0 when clipped
    fit = ridge.fit(es)
    assert fit.fit_info_["cv_wmse"] == pytest.approx(raw.min(), rel=1e-5)


def test_signed_model_saved_and_loaded_still_unclipped(tmp_path):
    es, _ = load_anndata(zscore_anndata(), AnnDataOptions("cid", "canonical_smiles", level="profile"))
    model = make_predictor("knn", k=3).fit(es)
    save_model(model, tmp_path / "m", train_info=es)
    back = load_model(tmp_path / "m")
    assert back.value_scale == "signed"
    np.testing.assert_array_equal(back.predict(["CCOc1ccccc1"]).mean, model.predict(["CCOc1ccccc1"]).mean)
    assert (back.predict(["CCOc1ccccc1"]).mean < 0).any()
    plain = make_predictor("knn", k=3).fit(dataclasses.replace(es, expression=np.abs(es.expression),
                                                                 value_scale="log2cpm"))
    assert "value_scale" not in plain.get_state()  # a log2cpm model's files are as before


def test_submission_of_a_signed_set_keeps_negative_values(tmp_path):
    base = toy_es(n_templates=3, n_per=8, n_genes=10)
    z = np.asarray(base.expression) - 3.0
    es = dataclasses.replace(base, expression=z, value_scale="signed")
    tc, gf, test, genes = write_inputs(tmp_path, es)
    out = tmp_path / "predictions.parquet"
    res = make_submission(es, PredictorSpec("mean", "mean"), tc, gf, out)
    df = pq.read_table(out).to_pandas()
    assert (df["predicted_expression"] < 0).sum() > 0 and res.info["n_clipped"] == 0
    profile = dict(zip(es.genes, z.astype(np.float64).mean(axis=0)))
    r = df.iloc[3]
    assert r.predicted_expression == pytest.approx(profile[str(r.gene_id)], rel=1e-5)
    assert json.loads((tmp_path / "predictions.parquet.manifest.json").read_text())["value_scale"] == "signed"


# ============================================================================ the command and its refusals
def test_cli_load_anndata_well_and_profile(tmp_path):
    well_anndata().write_h5ad(tmp_path / "wells.h5ad")
    res = CliRunner().invoke(app, ["load", "--anndata", str(tmp_path / "wells.h5ad"), "--compound-col", "drug",
                                   "--smiles-col", "smi", "--control-value", "DMSO", "--out", str(tmp_path / "w")])
    assert res.exit_code == 0, res.output
    assert "value scale        log2cpm (auto: no negative value)" in res.output
    es = ExpressionSet.load(tmp_path / "w")
    assert es.n_compounds == 4 and es.value_scale == "log2cpm" and list(es.compound_meta.columns) == ["name"]
    zscore_anndata().write_h5ad(tmp_path / "z.h5ad")
    res = CliRunner().invoke(app, ["load", "--anndata", str(tmp_path / "z.h5ad"), "--compound-col", "cid",
                                   "--smiles-col", "canonical_smiles", "--level", "profile", "--out",
                                   str(tmp_path / "z")])
    assert res.exit_code == 0, res.output
    z = ExpressionSet.load(tmp_path / "z")
    assert z.value_scale == "signed" and json.loads((tmp_path / "z" / "manifest.json").read_text())[
        "format_version"] == 5
    assert make_predictor("mean").fit(z).predict(["CCO"]).mean.min() < -2


def _refusal(tmp_path, a: ad.AnnData, *args: str) -> str:
    a.write_h5ad(tmp_path / "in.h5ad")
    res = CliRunner().invoke(app, ["load", "--anndata", str(tmp_path / "in.h5ad"), "--out", str(tmp_path / "o"),
                                   *args])
    assert res.exit_code != 0 and isinstance(res.exception, DrugcellInputError), res.output
    assert not (tmp_path / "o").exists()
    return str(res.exception)


def test_cli_refusals_name_the_column_and_the_compound(tmp_path):
    a = well_anndata()
    msg = _refusal(tmp_path, a, "--compound-col", "compound", "--smiles-col", "smi")
    assert "obs has no column 'compound' (--compound-col)" in msg and "drug" in msg
    msg = _refusal(tmp_path, a, "--compound-col", "drug", "--smiles-col", "smiles")
    assert "no column 'smiles' (--smiles-col)" in msg
    assert "no SMILES in column 'smi'" in _refusal(tmp_path, a, "--compound-col", "drug", "--smiles-col", "smi")
    assert "DMSO" in _refusal(tmp_path, a, "--compound-col", "drug", "--smiles-col", "smi")  # the SMILES-less one
    msg = _refusal(tmp_path, a, "--compound-col", "drug", "--smiles-col", "smi", "--control-value", "vehicle")
    assert "no row has compound 'vehicle' (--control-value)" in msg
    msg = _refusal(tmp_path, a, "--compound-col", "drug", "--smiles-col", "smi", "--control-value", "DMSO",
                   "--level", "profile")
    assert "one row per compound" in msg and "A, B, C" in msg
    msg = _refusal(tmp_path, a, "--compound-col", "drug", "--smiles-col", "smi", "--control-value", "DMSO",
                   "--weights", "zscore")
    assert "--weights zscore needs --level profile" in msg
    b = well_anndata()
    b.obs.loc["well1", "smi"] = "CCCO"
    msg = _refusal(tmp_path, b, "--compound-col", "drug", "--smiles-col", "smi", "--control-value", "DMSO")
    assert "different SMILES" in msg and ": A;" in msg
    z = zscore_anndata()
    msg = _refusal(tmp_path, z, "--compound-col", "cid", "--smiles-col", "canonical_smiles", "--level", "profile",
                   "--weights", "file-that-is-not-there.parquet")
    assert "file-that-is-not-there.parquet does not exist" in msg
    msg = _refusal(tmp_path, z, "--compound-col", "cid", "--smiles-col", "canonical_smiles", "--level", "profile",
                   "--weights", "zscore", "--scale", "log2cpm")
    assert "--scale signed" in msg
    n = zscore_anndata()
    n.X[4, 2] = np.nan
    msg = _refusal(tmp_path, n, "--compound-col", "cid", "--smiles-col", "canonical_smiles", "--level", "profile")
    assert "NaN/inf in 1 row(s), first row 'sig4' at gene 'G2'" in msg


def test_cli_refuses_mixed_routes_and_exits_2(tmp_path):
    res = CliRunner().invoke(app, ["load", "--data", str(tmp_path), "--compound-col", "x", "--out",
                                   str(tmp_path / "o")])
    assert isinstance(res.exception, DrugcellInputError) and "--compound-col go(es) with --anndata" in str(
        res.exception)
    well_anndata().write_h5ad(tmp_path / "w.h5ad")
    proc = subprocess.run([sys.executable, "-m", "drugcell", "load", "--anndata", str(tmp_path / "w.h5ad"),
                           "--counts", "c.parquet", "--compound-col", "drug", "--smiles-col", "smi",
                           "--out", str(tmp_path / "o")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--counts belong(s) to the VCPI files" in proc.stderr


# ============================================================================ L1000, unchanged
# Pinned with the adapters as they were before they went through the generic AnnData adapter
# (commit e6f22db): the data fingerprint (ids, truth, weights, SMILES) and the controls' arrays.
def _controls(es: ExpressionSet) -> str:
    return fingerprint_arrays(es.control, es.control_expression, es.control_weights, es.n_replicates, es.control_ids,
                              es.inchikey)


def test_l1000_adapters_unchanged():
    from drugcell.data.l1000 import load_cmap_gct, load_prnet_h5ad

    prnet = require_shared("prnet_l1000_ht115_demo", "demo.h5ad")
    gct = require_shared("cmap_l1000_a375_plate", "test_l1000.gct")
    table = require_shared("lincs_sciplex_compound_smiles", "lincs_drugs_smiles.csv")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p, c = load_prnet_h5ad(prnet), load_cmap_gct(gct, table)
    assert (p.fingerprint(), _controls(p)) == ("cf33574ec2e5f56a", "d097713f71768a91")
    assert (c.fingerprint(), _controls(c)) == ("68ad73563d39dbd6", "064cf257b7c5aeaa")
    assert p.value_scale == c.value_scale == "log2cpm" and p.compound_meta is None
    assert set(p.info) == {"source", "file", "file_fingerprint", "dose_rule", "values", "wells_used", "fingerprint"}


def test_generic_adapter_on_the_prnet_file_matches_its_own_adapter(tmp_path):
    """`load --anndata` on the real PRnet h5ad, every dose pooled, equals load_prnet_h5ad(dose_rule="all")."""
    from drugcell.data.l1000 import load_prnet_h5ad

    path = require_shared("prnet_l1000_ht115_demo", "demo.h5ad")
    res = CliRunner().invoke(app, ["load", "--anndata", str(path), "--compound-col", "pert_id", "--smiles-col",
                                   "SMILES", "--control-value", "DMSO", "--out", str(tmp_path / "c")])
    assert res.exit_code == 0, res.output
    es = ExpressionSet.load(tmp_path / "c")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = load_prnet_h5ad(path, dose_rule="all")
    order = pd.Index(es.genes).get_indexer(ref.genes)  # the adapter keeps the file's gene order
    assert list(es.compounds) == list(ref.compounds) and list(es.smiles) == list(ref.smiles)
    np.testing.assert_array_equal(es.expression[:, order], ref.expression)
    np.testing.assert_allclose(es.weights[order], ref.weights, rtol=1e-6, atol=1e-9)
    np.testing.assert_array_equal(es.control[order], ref.control)
    assert "pert_iname" in es.compound_meta.columns
