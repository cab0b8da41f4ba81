"""`drugcell submit`: a complete validated grid in gene-filter order, refusals, and the real layout."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from contest_scorer import validate_submission
from drugcell.config import PredictorSpec, config_from_dict
from drugcell.errors import DrugcellInputError
from drugcell.evaluation.cv import run_cv
from drugcell.fitting import resolve_predictor
from drugcell.splits.audit import LeakError
from drugcell.submission import make_submission
from tests.conftest import require_shared
from tests.test_cv import toy_es

TEST_SMILES = ["CCOC(=O)c1ccccc1N", "O=C(O)CCc1ccc(O)cc1", "CN1CCN(c2ccccn2)CC1", "Cc1ccc(S(N)(=O)=O)cc1",
               "CC(C)Cc1ccc(C(C)C(=O)O)cc1"]


def write_inputs(tmp_path, es, smiles=TEST_SMILES, n_genes=None, seed=0):
    """A test_compounds.csv in the contest layout and a shuffled gene_filter.csv subset."""
    rng = np.random.default_rng(seed)
    test = pd.DataFrame({
        "compound": [str(9300000 + i) for i in range(len(smiles))],
        "compound_name": [f"mol {i}" for i in range(len(smiles))], "compound_concentration": 10.0,
        "compound_concentration_unit": "uM", "cell_line": "THP-1", "timepoint": "24h",
        "smiles": smiles, "inchi_key": "",
    })
    genes = rng.permutation(es.genes)[: n_genes or es.n_genes]
    test.to_csv(tmp_path / "test_compounds.csv", index=False)
    pd.DataFrame({"gene_id": genes}).to_csv(tmp_path / "gene_filter.csv", index=False)
    return tmp_path / "test_compounds.csv", tmp_path / "gene_filter.csv", test, genes


def test_submit_writes_the_full_grid_in_gene_filter_order(tmp_path):
    es = toy_es(n_templates=3, n_per=8, n_genes=40)
    tc, gf, test, genes = write_inputs(tmp_path, es, n_genes=25)
    out = tmp_path / "sub" / "predictions.parquet"
    res = make_submission(es, PredictorSpec("mean", "mean"), tc, gf, out)
    df = pq.read_table(out).to_pandas()
    assert res.n_rows == len(df) == len(test) * 25
    assert list(df.columns) == ["compound", "gene_id", "predicted_expression"]
    assert validate_submission(df, test_compounds=test, gene_filter=pd.read_csv(gf, dtype=str))["rows"] == 125
    # the mean predictor: each test compound gets the training mean, gene by gene (by id, not position)
    profile = dict(zip(es.genes, es.expression.astype(np.float64).mean(axis=0)))
    got = df.assign(compound=df.compound.astype(str), gene_id=df.gene_id.astype(str))
    for r in got.sample(30, random_state=0).itertuples():
        assert r.predicted_expression == pytest.approx(profile[r.gene_id], rel=1e-5)
    assert got.compound.iloc[0] == "9300000" and list(got.gene_id.iloc[:25]) == list(genes)
    man = json.loads((tmp_path / "sub" / "predictions.parquet.manifest.json").read_text())
    assert man["n_rows"] == 125 and man["predictor"] == "mean" and man["audit"]["n_duplicates"] == 0
    assert not (tmp_path / "sub" / "predictions.std.parquet").exists()  # mean has no std


def test_std_sidecar_when_the_model_has_one(tmp_path):
    es = toy_es(n_templates=3, n_per=8, n_genes=20)
    tc, gf, test, genes = write_inputs(tmp_path, es)
    out = tmp_path / "predictions.parquet"
    res = make_submission(es, PredictorSpec("s", "test_const_std", {"sigma": 0.25}), tc, gf, out)
    std = pd.read_parquet(tmp_path / "predictions.std.parquet")
    assert res.std_out is not None and len(std) == len(test) * 20
    assert np.allclose(std["predicted_std"], 0.25)


def test_submit_refuses_a_train_test_overlap(tmp_path):
    es = toy_es(n_templates=3, n_per=8, n_genes=10)
    tc, gf, _, _ = write_inputs(tmp_path, es, smiles=TEST_SMILES[:2] + [es.smiles[5]])
    out = tmp_path / "predictions.parquet"
    with pytest.raises(LeakError, match=es.compounds[5]):
        make_submission(es, PredictorSpec("mean", "mean"), tc, gf, out)
    assert not out.exists()


def test_submit_refuses_bad_inputs(tmp_path):
    es = toy_es(n_templates=3, n_per=8, n_genes=10)
    tc, gf, test, genes = write_inputs(tmp_path, es)
    out = tmp_path / "predictions.parquet"
    pd.DataFrame({"gene_id": list(genes) + ["ENSG99999999999"]}).to_csv(tmp_path / "g2.csv", index=False)
    with pytest.raises(DrugcellInputError, match="not in the training data"):
        make_submission(es, PredictorSpec("mean", "mean"), tc, tmp_path / "g2.csv", out)
    pd.concat([test, test.iloc[:1]]).to_csv(tmp_path / "t2.csv", index=False)
    with pytest.raises(DrugcellInputError, match="listed twice"):
        make_submission(es, PredictorSpec("mean", "mean"), tmp_path / "t2.csv", gf, out)
    test.drop(columns="smiles").to_csv(tmp_path / "t3.csv", index=False)
    with pytest.raises(DrugcellInputError, match="smiles"):
        make_submission(es, PredictorSpec("mean", "mean"), tmp_path / "t3.csv", gf, out)
    assert not out.exists()


def test_from_run_takes_the_runs_choice_or_the_lowest_mean(tmp_path):
    es = toy_es(n_templates=3, n_per=8, n_genes=10)
    cfg = config_from_dict({"cv": {"folds": 3, "bootstrap_resamples": 2000, "seed": 4},
                            "predictors": [{"name": "ctl", "kind": "control"}, {"name": "avg", "kind": "mean"}]})
    res = run_cv(es, cfg, tmp_path / "run", progress=False)
    s = res.scores[res.scores.metric == "proxy"].groupby("predictor")["wmse"].mean()
    comp = res.comparisons[res.comparisons.metric == "proxy"].iloc[0]
    # the rule by hand: the simpler control unless the other beats it significantly (Holm)
    expected = comp.predictor_a if (comp.p_holm < 0.05 and comp.predictor_a == "avg") else "ctl"
    spec, seed = resolve_predictor(from_run=tmp_path / "run", metric="proxy")
    assert spec.name == expected
    assert spec.name == res.choices["proxy"].predictor and seed == 4
    saved = json.loads((tmp_path / "run" / "choice.json").read_text())
    assert saved["proxy"]["predictor"] == spec.name and saved["proxy"]["rule"] == "simplest"
    spec, _ = resolve_predictor(from_run=tmp_path / "run", metric="proxy", select="lowest")
    assert spec.name == s.idxmin()
    spec, _ = resolve_predictor("ctl", from_run=tmp_path / "run")
    assert spec.kind == "control"
    assert resolve_predictor("mean")[0].kind == "mean"  # a bare registry kind
    with pytest.raises(DrugcellInputError, match="no predictor named"):
        resolve_predictor("nope", from_run=tmp_path / "run")


def test_cli_submit(tmp_path):
    from typer.testing import CliRunner

    from drugcell.cli import app

    es = toy_es(n_templates=3, n_per=8, n_genes=12)
    data = es.save(tmp_path / "es")
    tc, gf, test, genes = write_inputs(tmp_path, es)
    out = tmp_path / "s" / "p.parquet"
    res = CliRunner().invoke(app, ["submit", "--data", str(data), "--predictor", "mean", "--test-compounds", str(tc),
                                   "--gene-filter", str(gf), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert len(pd.read_parquet(out)) == len(test) * 12 and "validated" in res.output


@pytest.mark.slow
def test_real_test_compounds_and_gene_filter_give_the_full_contest_grid(tmp_path):
    folder = require_shared("vcpi_contest_public")
    tc, gf = folder / "test_compounds.csv", folder / "gene_filter.csv"
    genes = pd.read_csv(gf, dtype=str)["gene_id"].to_numpy()
    es = toy_es(n_templates=4, n_per=10, genes=genes)
    out = tmp_path / "predictions.parquet"
    res = make_submission(es, PredictorSpec("mean", "mean"), tc, gf, out)
    assert res.n_rows == 1064 * 12995 == 13_826_680
    meta = pq.read_metadata(out)
    assert meta.num_rows == 13_826_680
    # make_submission validated the grid; check the file independently (and cheaply) as well
    test_ids = pd.read_csv(tc, dtype=str)["compound"]
    table = pq.read_table(out)
    per_comp = table.column("compound").value_counts().to_pandas()
    assert {str(v["values"]): v["counts"] for v in per_comp} == {c: 12995 for c in test_ids}
    per_gene = table.column("gene_id").value_counts().to_pandas()
    assert len(per_gene) == 12995 and {v["counts"] for v in per_gene} == {1064}
    assert {str(v["values"]) for v in per_gene} == set(genes)
    vals = table.column("predicted_expression").to_numpy()
    assert np.isfinite(vals).all() and vals.min() >= 0


def test_a_grid_the_scorer_rejects_is_never_written(tmp_path, monkeypatch):
    """Whatever the validator objects to (here: forced), nothing lands at --out."""
    import contest_scorer
    from contest_scorer import ScoringError

    def reject(*args, **kwargs):
        raise ScoringError("invalid submission: 3 missing (compound, gene) pair(s)")

    monkeypatch.setattr(contest_scorer, "validate_submission", reject)
    es = toy_es(n_templates=3, n_per=8, n_genes=10)
    tc, gf, _, _ = write_inputs(tmp_path, es)
    out = tmp_path / "predictions.parquet"
    with pytest.raises(DrugcellInputError, match="nothing written.*missing"):
        make_submission(es, PredictorSpec("mean", "mean"), tc, gf, out)
    assert not out.exists() and not list(tmp_path.glob(".predictions*"))


def test_calibrated_std_sidecar_and_saved_model(tmp_path):
    """--from-run scales the std sidecar by the calibrator fitted on the run's held-out folds (the
    scale sqrt(mean((error/std)^2)) over the predictor's sampled cells, computed here from the file);
    --save-model stores that calibrator with the model and `predict` applies it."""
    from drugcell.calibration.calibrator import Calibrator, calibrator_for_run
    from drugcell.persistence import SavedModel, load_model
    from drugcell.prediction import predict_molecules

    es = toy_es(n_templates=4, n_per=8, n_genes=20)
    cfg = config_from_dict({"cv": {"folds": 3, "bootstrap_resamples": 100},
                            "predictors": [{"name": "knn5", "kind": "knn", "k": 5}]})
    run_cv(es, cfg, tmp_path / "run", progress=False)
    u = pd.read_parquet(tmp_path / "run" / "uncertainty.parquet")
    u = u[u["predictor"] == "knn5"]
    e, sd = u["error"].to_numpy(np.float64), u["std"].to_numpy(np.float64)
    ok = np.isfinite(e) & np.isfinite(sd) & (sd > 0)
    expected = float(np.sqrt(np.mean((e[ok] / sd[ok]) ** 2)))  # one predictor: pooled over every fold
    cal = calibrator_for_run(tmp_path / "run", "knn5")
    assert cal.scale == pytest.approx(expected, rel=1e-12)
    assert cal.n_cells == int(ok.sum()) and cal.folds == ("0", "1", "2")
    assert calibrator_for_run(tmp_path / "run", "nope") is None

    tc, gf, _, genes = write_inputs(tmp_path, es)
    raw = make_submission(es, cfg.predictor("knn5"), tc, gf, tmp_path / "raw.parquet")
    scaled = make_submission(es, cfg.predictor("knn5"), tc, gf, tmp_path / "cal.parquet", calibrator=cal,
                             save_model_dir=tmp_path / "model")
    a = pd.read_parquet(raw.std_out)["predicted_std"].to_numpy()
    b = pd.read_parquet(scaled.std_out)["predicted_std"].to_numpy()
    np.testing.assert_allclose(b, a * np.float32(expected), rtol=1e-6)
    man = json.loads((tmp_path / "cal.parquet.manifest.json").read_text())
    assert man["std_scale"] == cal.scale and Calibrator.from_dict(man["calibrator"]) == cal
    pred = load_model(tmp_path / "model").predict(TEST_SMILES)
    sub = pd.read_parquet(tmp_path / "cal.parquet")
    first = sub[sub["compound"].astype(str) == "9300000"].set_index("gene_id")["predicted_expression"]
    gene_pos = {g: i for i, g in enumerate(es.genes)}
    np.testing.assert_allclose(first.to_numpy(), pred.mean[0, [gene_pos[g] for g in first.index]], rtol=1e-6)
    # the saved model carries the calibrator, and predicting with it gives the sidecar's std
    assert SavedModel.load(tmp_path / "model").calibrator == cal
    res = predict_molecules(tmp_path / "model", TEST_SMILES[:1])
    np.testing.assert_array_equal(res.prediction.std, cal.apply(pred.std[:1]))
    assert res.calibrator == cal and res.prediction.info["std_scale"] == cal.scale
    side = pd.read_parquet(scaled.std_out)
    side = side[side["compound"].astype(str) == "9300000"].set_index("gene_id")["predicted_std"]
    np.testing.assert_allclose(side.to_numpy(), res.prediction.std[0, [gene_pos[g] for g in side.index]], rtol=1e-6)


def test_cli_submit_from_run_saves_the_calibrated_model(tmp_path):
    """The CLI path: `calibrate` saves RUN/calibrators/knn5.json, `submit --from-run --save-model`
    applies that file's scale and stores it in the model; --raw-std leaves the std alone."""
    from typer.testing import CliRunner

    from drugcell.calibration.calibrator import Calibrator, calibrator_path
    from drugcell.cli import app
    from drugcell.persistence import read_model_meta

    es = toy_es(n_templates=4, n_per=8, n_genes=12)
    data = es.save(tmp_path / "es")
    cfg = config_from_dict({"cv": {"folds": 3, "bootstrap_resamples": 20},
                            "predictors": [{"name": "avg", "kind": "mean"}, {"name": "knn5", "kind": "knn", "k": 5}]})
    run_cv(es, cfg, tmp_path / "run", progress=False)
    runner = CliRunner()
    assert runner.invoke(app, ["calibrate", str(tmp_path / "run")]).exit_code == 0
    saved = Calibrator.load(calibrator_path(tmp_path / "run", "knn5"))
    tc, gf, _, _ = write_inputs(tmp_path, es)
    common = ["submit", "--data", str(data), "--test-compounds", str(tc), "--gene-filter", str(gf),
              "--from-run", str(tmp_path / "run"), "--predictor", "knn5"]
    res = runner.invoke(app, [*common, "--out", str(tmp_path / "c.parquet"), "--save-model", str(tmp_path / "m")])
    assert res.exit_code == 0, res.output
    assert f"s = {saved.scale:.3f}" in res.output and "with its std calibrator" in res.output
    meta = read_model_meta(tmp_path / "m")
    assert meta["calibrator"]["file"] == "calibrator.json" and meta["calibrator"]["scale"] == saved.scale
    assert Calibrator.load(tmp_path / "m" / "calibrator.json") == saved
    res = runner.invoke(app, [*common, "--out", str(tmp_path / "r.parquet"), "--raw-std"])
    assert res.exit_code == 0, res.output
    a = pd.read_parquet(tmp_path / "r.std.parquet")["predicted_std"].to_numpy()
    b = pd.read_parquet(tmp_path / "c.std.parquet")["predicted_std"].to_numpy()
    np.testing.assert_allclose(b, a * np.float32(saved.scale), rtol=1e-6)


def test_empty_or_unreadable_test_compounds_are_refused(tmp_path):
    """#10 item 10: a header-only file gave a 'validated' 0-row submission; a 0-byte file crashed."""
    from drugcell.submission import read_test_compounds

    header_only = tmp_path / "header.csv"
    header_only.write_text("compound,compound_name,smiles,inchi_key\n")
    with pytest.raises(DrugcellInputError, match="header but no compound rows"):
        read_test_compounds(header_only)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DrugcellInputError, match="not a readable CSV"):
        read_test_compounds(empty)
