"""Saved models (JSON + npz, no pickle) predict exactly like the fitted originals; `drugcell fit`
and `drugcell predict` write what they say, refuse bad molecules with exit code 2, and warn when a
molecule is far from every training compound."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from drugcell.calibration.calibrator import Calibrator
from drugcell.data.expression_set import ExpressionSet
from drugcell.errors import DrugcellInputError
from drugcell.fitting import fit_model
from drugcell.models import available, make_predictor
from drugcell.persistence import SavedModel, TrainInfo, load_model, read_model_meta, save_model
from drugcell.prediction import predict_molecules, read_molecules, write_predictions

REPO = Path(__file__).resolve().parent.parent

SMILES = [
    "c1ccccc1", "Cc1ccccc1", "CCc1ccccc1", "Oc1ccccc1", "Nc1ccccc1", "Clc1ccccc1", "OC(=O)c1ccccc1",
    "CC(=O)Oc1ccccc1C(=O)O", "c1ccc2ccccc2c1", "c1ccncc1", "Cc1ccncc1", "c1ccc(cc1)-c1ccccc1",
    "CCCCCC", "CCCCCCCC", "CCCCO", "CCCCCCO", "CC(C)CO", "CCOC(=O)C", "CCN(CC)CC", "C1CCCCC1",
    "C1CCNCC1", "C1CCOC1", "O=C1CCCCC1", "CC(=O)NC1=CC=C(O)C=C1", "CN1C=NC2=C1C(=O)N(C)C(=O)N2C",
    "OCC(O)CO", "NCC(=O)O", "CC(N)C(=O)O", "OC(=O)CCC(=O)O", "c1ccc2[nH]ccc2c1",
]
FAR = "[Na+].[Cl-]"  # nearest training Tanimoto 0.10 (RDKit)


def _es(G=12, seed=0) -> ExpressionSet:
    from drugcell.chem.fingerprints import morgan_bits

    rng = np.random.default_rng(seed)
    C = len(SMILES)
    bits = morgan_bits(SMILES).astype(np.float64)
    proj = rng.normal(0, 0.2, (bits.shape[1], G))
    X = rng.uniform(3, 9, G) + bits @ proj + rng.normal(0, 0.05, (C, G))
    return ExpressionSet(
        compounds=[f"cmp{i:02d}" for i in range(C)], genes=[f"ENSG{i:05d}" for i in range(G)],
        expression=np.clip(X, 0, None).astype(np.float32), weights=np.full((G, C), 1.0 / G, np.float32),
        n_replicates=np.full(C, 2), control=np.full(G, 5.0, np.float32), smiles=SMILES, inchikey=[""] * C,
    )


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return _es().save(tmp_path_factory.mktemp("data") / "cache")


QUERY = ["Cc1ccccc1O", "CCCCCCCCCO", "c1ccc2ncccc2c1", FAR]

KINDS = [
    ("mean", {}),
    ("control", {}),
    ("knn", {"k": 3, "kernel": "tanimoto"}),
    ("knn", {"k": 5, "kernel": "softmax", "std": False}),
    ("ridge_fp", {}),
]
if "ridge_desc" in available():
    KINDS.append(("ridge_desc", {}))
if "mlp" in available():
    KINDS.append(("mlp", {"rank": 4, "hidden": [16], "epochs": 2, "patience": 1, "inner_folds": 3,
                          "batch_size": 16, "device": "cpu"}))
if "fusion" in available():
    KINDS.append(("fusion", {"rank": 4, "hidden": [16], "epochs": 2, "patience": 1, "n_members": 2,
                             "inner_folds": 3, "batch_size": 16, "warmup_epochs": 1, "device": "cpu"}))


@pytest.mark.parametrize("kind,params", KINDS, ids=[f"{k}-{i}" for i, (k, _) in enumerate(KINDS)])
def test_saved_model_predicts_identically(tmp_path, cache, kind, params):
    es = ExpressionSet.load(cache)
    model = make_predictor(kind, **params).fit(es, seed=0)
    before = model.predict(QUERY)
    save_model(model, tmp_path / "m", train_info=es, name=f"my_{kind}")
    loaded = load_model(tmp_path / "m")
    assert type(loaded) is type(model) and loaded.get_config() == model.get_config()
    after = loaded.predict(QUERY)
    np.testing.assert_array_equal(after.mean, before.mean)
    if before.std is None:
        assert after.std is None
    else:
        np.testing.assert_array_equal(after.std, before.std)
    # every stored array reads back without pickle
    for f in ("arrays.npz", "training.npz"):
        with np.load(tmp_path / "m" / f, allow_pickle=False) as z:
            for k in z.files:
                assert z[k].dtype != object
    meta = read_model_meta(tmp_path / "m")
    assert meta["kind"] == kind and meta["name"] == f"my_{kind}"
    assert meta["genes"] == es.genes.tolist()
    assert meta["data_fingerprint"] == es.fingerprint()
    assert meta["training"]["n_compounds"] == es.n_compounds


def test_model_json_and_training_files(tmp_path, cache):
    es = ExpressionSet.load(cache)
    model = make_predictor("mean").fit(es)
    save_model(model, tmp_path / "m", train_info=TrainInfo.from_expression_set(es, seed=7), seed=7)
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["config"] == {} and meta["arrays"]["profile_"]["shape"] == [es.n_genes]
    assert meta["provenance"]["seed"] == 7 and meta["training"]["seed"] == 7
    saved = SavedModel.load(tmp_path / "m")
    np.testing.assert_allclose(saved.mean_profile, es.expression.astype(np.float64).mean(axis=0), rtol=1e-6)
    assert saved.train_compounds.tolist() == es.compounds.tolist()
    from drugcell.chem.fingerprints import morgan_bits

    np.testing.assert_array_equal(saved.train_bits, morgan_bits(SMILES))


def test_save_refuses_overwrite_and_load_detects_corruption(tmp_path, cache):
    es = ExpressionSet.load(cache)
    model = make_predictor("mean").fit(es)
    save_model(model, tmp_path / "m", train_info=es)
    with pytest.raises(DrugcellInputError, match="--overwrite"):
        save_model(model, tmp_path / "m", train_info=es)
    save_model(model, tmp_path / "m", train_info=es, overwrite=True)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "x.txt").write_text("x")
    with pytest.raises(DrugcellInputError, match="not a saved model"):
        save_model(model, tmp_path / "junk", train_info=es, overwrite=True)
    with pytest.raises(DrugcellInputError, match="not fitted"):
        save_model(make_predictor("mean"), tmp_path / "n", train_info=es)
    arr = tmp_path / "m" / "arrays.npz"
    arr.write_bytes(arr.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(DrugcellInputError, match="checksum"):
        load_model(tmp_path / "m")
    with pytest.raises(DrugcellInputError, match="no model.json"):
        load_model(tmp_path)


def test_saved_model_carries_its_calibrator(tmp_path, cache):
    es = ExpressionSet.load(cache)
    model = make_predictor("knn", k=3).fit(es)
    cal = Calibrator(predictor="knn3", scale=1.5, n_cells=100, folds=("0", "1"),
                     coverage={"raw_1sigma": 0.5, "raw_2sigma": 0.8, "held_out_1sigma": 0.7, "held_out_2sigma": None},
                     fitted_on={"run": "r"})
    save_model(model, tmp_path / "m", train_info=es, name="knn3", calibrator=cal)
    meta = read_model_meta(tmp_path / "m")
    assert meta["format_version"] == 2 and meta["calibrator"]["file"] == "calibrator.json"
    assert meta["calibrator"]["scale"] == 1.5
    assert SavedModel.load(tmp_path / "m").calibrator == cal
    raw, res = model.predict(QUERY), predict_molecules(tmp_path / "m", QUERY)
    np.testing.assert_array_equal(res.prediction.mean, raw.mean)
    np.testing.assert_array_equal(res.prediction.std, raw.std * np.float32(1.5))
    assert res.calibrator == cal
    # a model saved without one has none; a calibrator for another predictor is refused
    save_model(model, tmp_path / "plain", train_info=es, name="knn3")
    assert read_model_meta(tmp_path / "plain")["calibrator"] is None
    assert SavedModel.load(tmp_path / "plain").calibrator is None
    assert predict_molecules(tmp_path / "plain", QUERY).calibrator is None
    with pytest.raises(ValueError, match="fitted for predictor 'knn3'"):
        save_model(model, tmp_path / "other", train_info=es, name="knn5", calibrator=cal)
    # the calibrator file is checksummed like the arrays
    path = tmp_path / "m" / "calibrator.json"
    path.write_text(path.read_text().replace('"scale": 1.5', '"scale": 2.5'))
    with pytest.raises(DrugcellInputError, match="checksum"):
        SavedModel.load(tmp_path / "m")
    path.unlink()
    with pytest.raises(DrugcellInputError, match="missing"):
        SavedModel.load(tmp_path / "m")


def test_format_version_1_model_still_loads(tmp_path, cache):
    es = ExpressionSet.load(cache)
    save_model(make_predictor("mean").fit(es), tmp_path / "m", train_info=es)
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    meta["format_version"] = 1
    del meta["calibrator"]
    (tmp_path / "m" / "model.json").write_text(json.dumps(meta))
    saved = SavedModel.load(tmp_path / "m")
    assert saved.calibrator is None and saved.meta["format_version"] == 1
    meta["format_version"] = 3
    (tmp_path / "m" / "model.json").write_text(json.dumps(meta))
    with pytest.raises(DrugcellInputError, match="newer"):
        read_model_meta(tmp_path / "m")


def test_fit_from_run_saves_the_runs_calibrator(tmp_path, monkeypatch, capsys, cache):
    from drugcell.calibration.calibrator import calibrator_for_run
    from drugcell.config import config_from_dict
    from drugcell.evaluation.cv import run_cv

    es = ExpressionSet.load(cache)
    cfg = config_from_dict({"cv": {"folds": 3, "bootstrap_resamples": 10, "seed": 2, "split": "random"},
                            "predictors": [{"name": "knn_k3", "kind": "knn", "k": 3}]})
    run_cv(es, cfg, tmp_path / "run", progress=False)
    expected = calibrator_for_run(tmp_path / "run", "knn_k3")
    res = fit_model(cache, None, tmp_path / "m", from_run=tmp_path / "run")  # the run's best (and only)
    assert (res.name, res.calibrator) == ("knn_k3", expected)
    assert read_model_meta(tmp_path / "m")["provenance"]["seed"] == 2
    assert SavedModel.load(tmp_path / "m").calibrator == expected
    fit_model(cache, "knn_k3", tmp_path / "raw", from_run=tmp_path / "run", calibrate_std=False)
    assert SavedModel.load(tmp_path / "raw").calibrator is None
    code, out, _ = _run_cli(monkeypatch, capsys, "predict", "--model", str(tmp_path / "m"), "--smiles", "CCO",
                            "--out", str(tmp_path / "p.parquet"))
    assert code == 0 and f"s = {expected.scale:.3f}" in out
    raw = load_model(tmp_path / "raw").predict(["CCO"])
    got = pd.read_parquet(tmp_path / "p.parquet").set_index("gene_id").loc[es.genes, "predicted_std"]
    np.testing.assert_array_equal(got.to_numpy(), expected.apply(raw.std)[0])


def test_fit_model_from_config_and_kind(tmp_path, cache):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[cv]\nseed = 3\n\n[[predictors]]\nname = "knn_k2"\nkind = "knn"\nk = 2\nkernel = "uniform"\n')
    res = fit_model(cache, "knn_k2", tmp_path / "m", config=cfg)
    meta = read_model_meta(tmp_path / "m")
    assert (res.name, res.kind, meta["config"]["k"], meta["provenance"]["seed"]) == ("knn_k2", "knn", 2, 3)
    res2 = fit_model(cache, "ridge_fp", tmp_path / "r")  # a kind name: default parameters
    assert read_model_meta(tmp_path / "r")["kind"] == "ridge_fp" and res2.n_compounds == len(SMILES)
    with pytest.raises(DrugcellInputError, match="--overwrite"):
        fit_model(cache, "mean", tmp_path / "r")


@pytest.fixture(scope="module")
def knn_model(tmp_path_factory, cache) -> Path:
    out = tmp_path_factory.mktemp("models") / "knn"
    fit_model(cache, "knn", out, config=None)
    return out


def _nearest_by_rdkit(query: str) -> float:
    """Max Tanimoto to the training set, straight from RDKit (the slow, plain way)."""
    from rdkit import Chem, DataStructs
    from rdkit.Chem import rdFingerprintGenerator

    gen = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048)
    train = [gen.GetFingerprint(Chem.MolFromSmiles(s)) for s in SMILES]
    return max(DataStructs.BulkTanimotoSimilarity(gen.GetFingerprint(Chem.MolFromSmiles(query)), train))


def test_predict_far_warning_and_nearest(knn_model):
    res = predict_molecules(knn_model, QUERY + [SMILES[4]], threshold=0.3)
    for i, q in enumerate(QUERY + [SMILES[4]]):
        assert res.nearest_similarity[i] == pytest.approx(_nearest_by_rdkit(q), abs=1e-6)
    assert res.nearest_similarity[-1] == pytest.approx(1.0) and res.nearest_compound[-1] == "cmp04"
    assert res.far.tolist() == [s < 0.3 for s in res.nearest_similarity]
    assert res.far[3] and not res.far[-1]
    msgs = res.warnings()
    assert len(msgs) == int(res.far.sum()) and any(
        FAR in m and f"nearest Tanimoto {res.nearest_similarity[3]:.2f}" in m for m in msgs)
    res0 = predict_molecules(knn_model, QUERY, threshold=0.0)
    assert res0.warnings() == []


def test_predict_tables(tmp_path, knn_model, cache):
    es = ExpressionSet.load(cache)
    res = predict_molecules(knn_model, QUERY[:2], ids=["a", "b"])
    direct = load_model(knn_model).predict(QUERY[:2])
    out = write_predictions(res, tmp_path / "p.parquet")
    long = pd.read_parquet(out)
    assert list(long.columns) == ["compound", "gene_id", "predicted_expression", "predicted_std"]
    assert len(long) == 2 * es.n_genes
    wide = long.pivot(index="compound", columns="gene_id", values="predicted_expression").loc[["a", "b"], es.genes]
    np.testing.assert_array_equal(wide.to_numpy(), direct.mean)
    top = res.top_changes(top=2)
    delta = direct.mean[1].astype(np.float64) - es.expression.astype(np.float64).mean(axis=0)
    up = top[(top.compound == "b") & (top.direction == "up")]
    assert up["gene"].tolist() == es.genes[np.argsort(-delta)[:2]].tolist()
    assert up["vs_mean"].to_numpy() == pytest.approx(np.sort(delta)[::-1][:2], abs=1e-5)
    down = top[(top.compound == "b") & (top.direction == "down")]
    assert down["gene"].tolist() == es.genes[np.argsort(delta)[:2]].tolist()


def test_read_molecules(tmp_path):
    ids, smi = read_molecules(smiles=["CCO", "CCN"])
    assert ids.tolist() == ["CCO", "CCN"] and smi.tolist() == ["CCO", "CCN"]
    f = tmp_path / "in.csv"
    f.write_text("name,SMILES\nethanol,CCO\nmethanol,CO\n")
    ids, smi = read_molecules(input_csv=f)
    assert ids.tolist() == ["ethanol", "methanol"] and smi.tolist() == ["CCO", "CO"]
    g = tmp_path / "noid.csv"
    g.write_text("smiles\nCCO\n")
    assert read_molecules(input_csv=g)[0].tolist() == ["row1"]
    h = tmp_path / "nosmiles.csv"
    h.write_text("id,structure\n1,CCO\n")
    with pytest.raises(DrugcellInputError, match="no `smiles` column"):
        read_molecules(input_csv=h)
    with pytest.raises(DrugcellInputError, match="appears twice"):
        read_molecules(smiles=["CCO", "CCO"])
    with pytest.raises(DrugcellInputError, match="not both"):
        read_molecules(input_csv=f, smiles=["CCO"])


def test_bad_smiles_names_the_molecule(knn_model):
    # strict: the whole input is refused, naming the bad molecule by id, SMILES and row
    with pytest.raises(DrugcellInputError, match=r"C1CC\(") as exc:
        predict_molecules(knn_model, ["CCO", "C1CC("], ids=["ok", "broken"], source="in.csv", strict=True)
    msg = str(exc.value)
    assert "in.csv" in msg and "'broken'" in msg and "row 2" in msg and "'ok'" not in msg
    # by default the good molecules are predicted and the bad ones listed
    res = predict_molecules(knn_model, ["CCO", "C1CC(", "CCN"], ids=["ok", "broken", "ok2"], source="in.csv")
    assert res.ids.tolist() == ["ok", "ok2"] and res.prediction.mean.shape[0] == 2
    assert res.skipped == [{"row": 2, "id": "broken", "smiles": "C1CC(", "reason": res.skipped[0]["reason"]}]
    line = res.skipped_message("in.csv")
    assert "in.csv: 1 of 3" in line and "row 2 'broken' (SMILES 'C1CC(')" in line
    # none parses: nothing to predict, an error even without strict
    with pytest.raises(DrugcellInputError, match="none of them parses"):
        predict_molecules(knn_model, ["C1CC(", "xx"], source="in.csv")


def _run_cli(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    from drugcell import cli

    monkeypatch.setattr(sys, "argv", ["drugcell", *args])
    with pytest.raises(SystemExit) as exc:
        cli.main()
    code = 0 if exc.value.code is None else exc.value.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_fit_predict_via_main(tmp_path, monkeypatch, capsys, cache):
    code, out, _ = _run_cli(monkeypatch, capsys, "fit", "--data", str(cache), "--predictor", "knn",
                            "--out", str(tmp_path / "m"))
    assert code == 0 and "fitted on 30 compounds" in out
    code, out, err = _run_cli(monkeypatch, capsys, "predict", "--model", str(tmp_path / "m"),
                              "--smiles", "Cc1ccccc1O", "--smiles", FAR, "--top", "3")
    assert code == 0
    assert "## Cc1ccccc1O" in out and out.count("  up ") + out.count(" up ") >= 3
    assert "warning:" in err and FAR in err and "Cc1ccccc1O (" not in err
    csv = tmp_path / "in.csv"
    csv.write_text("compound,smiles\nx1,CCO\nx2,not_a_smiles\n")
    code, _, err = _run_cli(monkeypatch, capsys, "predict", "--model", str(tmp_path / "m"),
                            "--input", str(csv), "--out", str(tmp_path / "p.parquet"), "--strict")
    assert code == 2 and "x2" in err and "not_a_smiles" in err
    assert not (tmp_path / "p.parquet").exists()
    code, out, err = _run_cli(monkeypatch, capsys, "predict", "--model", str(tmp_path / "m"),
                              "--input", str(csv), "--out", str(tmp_path / "p.parquet"))
    assert code == 0 and "row 2 'x2' (SMILES 'not_a_smiles')" in err and "1 left out" in out
    assert set(pd.read_parquet(tmp_path / "p.parquet")["compound"]) == {"x1"}


def test_cli_bad_smiles_subprocess_exit_code_2_with_strict(knn_model):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "drugcell", "predict", "--model", str(knn_model), "--strict",
                           "--smiles", "CCO", "--smiles", "C1CC("], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert "C1CC(" in proc.stderr and "could not be parsed" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.skipif("fusion" not in available(), reason="fusion predictor not in this checkout")
def test_fusion_reloaded_in_a_fresh_process_predicts_identically(tmp_path, cache):
    """No hidden process state (feature caches, torch globals) may leak into a saved model."""
    es = ExpressionSet.load(cache)
    params = dict(KINDS[-1][1])
    model = make_predictor("fusion", **params).fit(es, seed=0)
    save_model(model, tmp_path / "m", train_info=es)
    expected = model.predict(QUERY[:3])
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "drugcell", "predict", "--model", str(tmp_path / "m"),
                           *sum((["--smiles", s] for s in QUERY[:3]), []), "--out", str(tmp_path / "p.parquet")],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr
    long = pd.read_parquet(tmp_path / "p.parquet")
    mean = long.pivot(index="compound", columns="gene_id", values="predicted_expression").loc[QUERY[:3], es.genes]
    std = long.pivot(index="compound", columns="gene_id", values="predicted_std").loc[QUERY[:3], es.genes]
    np.testing.assert_allclose(mean.to_numpy(), expected.mean, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(std.to_numpy(), expected.std, rtol=1e-6, atol=1e-6)


def test_model_json_that_is_not_an_object_is_refused(tmp_path):
    """#10 item 8: model.json = [] gave a raw AttributeError."""
    from drugcell.persistence import read_model_meta

    (tmp_path / "model.json").write_text("[]")
    with pytest.raises(DrugcellInputError, match="not an object"):
        read_model_meta(tmp_path)
