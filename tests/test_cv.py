"""The CV runner and TOML configs: file layout, scores pinned by a plain loop, leak refusal,
the positive control's two orderings, and the `drugcell cv` command."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from drugcell.config import RunConfig, config_from_dict, load_config, with_overrides
from drugcell.data.expression_set import ExpressionSet
from drugcell.errors import DrugcellInputError
from drugcell.evaluation.cv import run_cv
from drugcell.models import Prediction, Predictor, register
from drugcell.paths import configs_dir

CONFIGS = configs_dir()
RING_TEMPLATES = [  # distinct Bemis-Murcko scaffolds; {a}/{b} are substituents (scaffold unchanged)
    "c1cc({a})ccc1{b}", "c1cc({a})ncc1{b}", "C1CC({a})CCC1{b}", "c1cc({a})sc1{b}",
    "c1cc({a})oc1{b}", "C1CC({a})NCC1{b}", "c1cc({a})c2ccccc2c1{b}", "c1nc({a})ncc1{b}",
]
SUBSTITUENTS = ["C", "CC", "O", "N", "Cl", "F", "C(=O)O", "OC", "CN", "C#N", "Br", "CCC"]


def toy_smiles(n_templates: int = 6, n_per: int = 12) -> list[str]:
    """Valid, distinct molecules in ``n_templates`` scaffold families."""
    pairs = [(a, b) for i, a in enumerate(SUBSTITUENTS) for b in SUBSTITUENTS[i:]]
    return [t.format(a=a, b=b) for t in RING_TEMPLATES[:n_templates] for a, b in pairs[:n_per]]


def toy_es(n_templates: int = 6, n_per: int = 12, n_genes: int = 30, seed: int = 0,
           genes: np.ndarray | None = None) -> ExpressionSet:
    """A small ExpressionSet with random truth and column-normalised random weights."""
    smiles = toy_smiles(n_templates, n_per)
    rng = np.random.default_rng(seed)
    genes = np.asarray(genes) if genes is not None else np.array([f"ENSG{i:011d}" for i in range(n_genes)])
    c, g = len(smiles), len(genes)
    expr = rng.gamma(2.0, 1.0, (c, g)).astype(np.float32)
    w = rng.random((g, c)).astype(np.float32)
    w /= w.sum(axis=0)
    return ExpressionSet(
        compounds=[str(700000 + i) for i in range(c)], genes=genes, expression=expr, weights=w,
        n_replicates=np.full(c, 2), control=rng.gamma(2.0, 1.0, g).astype(np.float32),
        smiles=smiles, inchikey=[""] * c,
    )


@register("test_const_std")
class ConstStdPredictor(Predictor):
    """Test-only: the training mean with a constant predictive std (exercises uncertainty.parquet)."""

    defaults = {"sigma": 0.5}
    state_fields = ("profile_",)

    def _fit(self, train, seed):
        self.profile_ = train.expression.mean(axis=0)

    def _predict(self, smiles):
        mean = np.tile(self.profile_, (len(smiles), 1))
        return Prediction(mean=mean, std=np.full_like(mean, self.params["sigma"]), info={"n_fallback": 0.0})


def small_config(predictors=("control", "mean"), **cv) -> RunConfig:
    return config_from_dict({
        "cv": {"folds": 3, "bootstrap_resamples": 300, **cv},
        "output": {"uncertainty_sample": 50},
        "predictors": [{"name": p, "kind": p} for p in predictors],
    })


# ----------------------------------------------------------------------------- configs
def test_shipped_configs_load_with_the_promised_contents():
    cfg = load_config(CONFIGS / "default.toml")
    names = [p.name for p in cfg.predictors]
    assert len(names) == 3 + 12 + 2 + 1 and names[:3] == ["control", "mean", "wmean"] and names[-1] == "blend"
    knn = {(p.params["k"], p.params["kernel"]) for p in cfg.predictors if p.kind == "knn"}
    assert knn == {(k, kern) for k in (5, 10, 20, 50) for kern in ("uniform", "tanimoto", "softmax")}
    assert (cfg.folds, cfg.split, cfg.bootstrap_resamples) == (5, "scaffold", 10_000)
    assert cfg.metrics == ("mejia", "proxy", "variance")
    demo = load_config(CONFIGS / "demo.toml")
    assert demo.folds <= 3 and len(demo.predictors) <= 7


@pytest.mark.parametrize("raw, key", [
    ({"cv": {"folds": 1}}, "cv.folds"),
    ({"cv": {"folds": "5"}}, "cv.folds"),
    ({"cv": {"split": "temporal"}}, "cv.split"),
    ({"cv": {"metrics": ["mejia", "r2"]}}, "cv.metrics"),
    ({"cv": {"bootstrap": 10}}, "cv.bootstrap"),
    ({"output": {"save_predictions": "yes"}}, "output.save_predictions"),
    ({"predictors": [{"name": "x", "kind": "no_such_kind"}]}, "predictors[0].kind"),
    ({"predictors": [{"name": "m", "kind": "mean"}, {"name": "m", "kind": "control"}]}, "predictors[1].name"),
    ({"predictors": [{"name": "m", "kind": "mean", "alpha": 3}]}, "predictors[0]"),
    ({"predictors": []}, "predictors"),
])
def test_config_errors_name_the_key(raw, key):
    raw = {"predictors": [{"name": "mean", "kind": "mean"}], **raw}
    with pytest.raises(DrugcellInputError, match=key.replace("[", r"\[").replace("]", r"\]")):
        config_from_dict(raw, source="my.toml")


def test_overrides_revalidate_and_select(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[cv]\nfolds = 5\n[[predictors]]\nname = "a"\nkind = "mean"\n'
                    '[[predictors]]\nname = "b"\nkind = "control"\n')
    cfg = with_overrides(load_config(path), seed=7, sets=["cv.folds=3", "cv.split=random",
                                                          'cv.metrics=["mejia"]'], predictors=["b"])
    assert (cfg.folds, cfg.split, cfg.seed, cfg.metrics) == (3, "random", 7, ("mejia",))
    assert [p.name for p in cfg.predictors] == ["b"]
    with pytest.raises(DrugcellInputError, match="cv.folds"):
        with_overrides(cfg, sets=["cv.folds=0"])
    with pytest.raises(DrugcellInputError, match="no predictor named 'zz'"):
        with_overrides(cfg, predictors=["zz"])
    # the manifest form round-trips
    assert config_from_dict(cfg.to_dict()) == cfg


# ----------------------------------------------------------------------------- the runner
@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    es = toy_es()
    cfg = with_overrides(small_config(("control", "mean", "test_const_std")), save_predictions=True)
    out = tmp_path_factory.mktemp("run")
    return es, cfg, run_cv(es, cfg, out, progress=False)


def test_run_dir_layout_and_one_row_per_combination(small_run):
    es, cfg, res = small_run
    out = res.out_dir
    for name in ("scores.parquet", "folds.parquet", "audit.json", "summary.parquet", "agreement.parquet",
                 "comparisons.parquet", "summary.md", "manifest.json", "diagnostics.parquet",
                 "uncertainty.parquet"):
        assert (out / name).is_file(), name
    scores = pd.read_parquet(out / "scores.parquet")
    assert {"predictor", "fold", "compound", "metric", "wmse"} <= set(scores.columns)
    assert len(scores) == 3 * es.n_compounds * 3
    assert not scores.duplicated(["predictor", "fold", "compound", "metric"]).any()
    assert not scores.duplicated(["predictor", "compound", "metric"]).any()  # each compound held out once
    folds = pd.read_parquet(out / "folds.parquet")
    assert list(folds["compound"]) == list(es.compounds) and {"fold", "scaffold"} <= set(folds.columns)
    # a scaffold split: no scaffold in two folds
    assert (folds.groupby("scaffold")["fold"].nunique() == 1).all()
    man = json.loads((out / "manifest.json").read_text())
    assert man["seed"] == 0 and man["data_fingerprint"] == es.fingerprint()
    assert man["config"]["predictors"][2]["kind"] == "test_const_std" and man["git_commit"] is not None
    audit = json.loads((out / "audit.json").read_text())
    assert len(audit["folds"]) == 3 and all(a["n_duplicates"] == 0 for a in audit["folds"])


def test_scores_match_a_plain_loop(small_run):
    """wMSE of `mean` (training-fold mean) and `control`, recomputed compound by compound."""
    es, cfg, res = small_run
    scores = res.scores.set_index(["predictor", "metric", "compound"])["wmse"]
    fold_of = res.folds.set_index("compound")["fold"]
    checked = 0
    for i in range(0, es.n_compounds, 7):
        c = es.compounds[i]
        train = [j for j in range(es.n_compounds) if fold_of[es.compounds[j]] != fold_of[c]]
        mean_profile = [sum(float(es.expression[j, g]) for j in train) / len(train) for g in range(es.n_genes)]
        # proxy weights: 1 / variance (ddof 0) of the training truth per gene, normalised
        inv = []
        for g in range(es.n_genes):
            col = [float(es.expression[j, g]) for j in train]
            m = sum(col) / len(col)
            inv.append(1.0 / (sum((x - m) ** 2 for x in col) / len(col)))
        proxy = [v / sum(inv) for v in inv]
        for name, prof in (("mean", mean_profile), ("control", [float(x) for x in es.control])):
            sq = [(prof[g] - float(es.expression[i, g])) ** 2 for g in range(es.n_genes)]
            mejia = sum(float(es.weights[g, i]) * sq[g] for g in range(es.n_genes))
            assert scores[(name, "mejia", c)] == pytest.approx(mejia, rel=1e-5)
            assert scores[(name, "proxy", c)] == pytest.approx(sum(p * s for p, s in zip(proxy, sq)), rel=1e-5)
            checked += 1
    assert checked >= 20


def test_summary_and_bootstrap_agree_with_scores(small_run):
    es, cfg, res = small_run
    summary = pd.read_parquet(res.out_dir / "summary.parquet")
    comps = pd.read_parquet(res.out_dir / "comparisons.parquet")
    s = res.scores
    for metric in cfg.metrics:
        for p in ("control", "mean"):
            by_hand = s[(s.predictor == p) & (s.metric == metric)]["wmse"].sum() / es.n_compounds
            row = summary[(summary.metric == metric) & (summary.predictor == p)].iloc[0]
            assert row["mean"] == pytest.approx(by_hand, rel=1e-12)
            fold_means = [s[(s.predictor == p) & (s.metric == metric) & (s.fold == k)]["wmse"].mean() for k in range(3)]
            assert row["fold_std"] == pytest.approx(np.std(fold_means, ddof=1), rel=1e-9)
        sub = comps[comps.metric == metric]
        assert len(sub) == 3  # every pair of 3 predictors
        for r in sub.itertuples():
            ma = summary[(summary.metric == metric) & (summary.predictor == r.predictor_a)]["mean"].iloc[0]
            mb = summary[(summary.metric == metric) & (summary.predictor == r.predictor_b)]["mean"].iloc[0]
            assert r.diff == pytest.approx(ma - mb, rel=1e-9, abs=1e-12)
            assert r.ci_low <= r.diff <= r.ci_high and r.n_resamples == 300
    text = (res.out_dir / "summary.md").read_text()
    assert "Paired bootstrap" in text and "control" in text and "Leak audit" in text
    assert res.best("mejia") == summary[summary.metric == "mejia"].sort_values("mean").predictor.iloc[0]


def test_uncertainty_sample_and_saved_predictions(small_run):
    es, cfg, res = small_run
    unc = pd.read_parquet(res.out_dir / "uncertainty.parquet")
    assert set(unc.predictor) == {"test_const_std"}  # only predictors with a std
    assert list(unc.columns) == ["predictor", "fold", "compound", "gene", "error", "std"]
    assert unc.groupby("fold").size().tolist() == [50, 50, 50]
    assert np.allclose(unc["std"], 0.5)
    pred = np.load(res.out_dir / "predictions" / "test_const_std.npy")
    assert pred.shape == (es.n_compounds, es.n_genes)
    row = {c: i for i, c in enumerate(es.compounds)}
    gcol = {g: j for j, g in enumerate(es.genes)}
    for r in unc.head(20).itertuples():
        i, j = row[r.compound], gcol[r.gene]
        assert r.error == pytest.approx(pred[i, j] - es.expression[i, j], abs=1e-5)
    # held-out rows of the mean-like predictor equal that fold's training mean
    fold = res.folds["fold"].to_numpy()
    for k in range(3):
        expected = es.expression[fold != k].mean(axis=0)
        assert np.allclose(pred[fold == k], expected, atol=1e-5)


def test_an_official_weights_file_replaces_the_expressionset_weights(tmp_path):
    """With uniform weights from the file, Mejia wMSE is the plain mean squared error."""
    es = toy_es(n_templates=3, n_per=6, n_genes=8)
    uniform = toy_es(n_templates=3, n_per=6, n_genes=8)
    uniform.weights[:] = 1.0 / uniform.n_genes
    uniform.write_weights_parquet(tmp_path / "weights.parquet", dtype="float32")
    cfg = with_overrides(small_config(("control",)), weights_file=str(tmp_path / "weights.parquet"))
    res = run_cv(es, cfg, tmp_path / "run", progress=False)
    got = res.scores[res.scores.metric == "mejia"].set_index("compound")["wmse"]
    for i, c in enumerate(es.compounds):
        mse = sum((float(es.control[g]) - float(es.expression[i, g])) ** 2 for g in range(es.n_genes)) / es.n_genes
        assert got[c] == pytest.approx(mse, rel=1e-5)
    man = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert man["config"]["output"]["weights_file"].endswith("weights.parquet")


def test_a_leaking_fold_is_refused_before_any_fit(tmp_path, monkeypatch):
    import drugcell.splits.folds as splits

    es = toy_es(n_templates=3, n_per=6)
    es.smiles[1] = es.smiles[0]  # one molecule under two compound ids
    real = splits.make_folds

    def leaky(smiles, split, n_folds, seed):
        a = real(smiles, split, n_folds, seed)
        a.folds = np.arange(len(smiles)) % n_folds  # puts compounds 0 and 1 in different folds
        return a

    monkeypatch.setattr(splits, "make_folds", leaky)
    from drugcell.splits.audit import LeakError

    with pytest.raises(LeakError, match="both sides"):
        run_cv(es, small_config(), tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "scores.parquet").exists()


# ----------------------------------------------------------------------------- positive control
@pytest.mark.slow
def test_positive_control_orderings(tmp_path):
    """Retrieval wins by far under a random split, and not under a scaffold split."""
    from drugcell.data.positive_control import make_positive_control

    es = make_positive_control(n_compounds=240, n_genes=200, seed=0)
    preds = [{"name": "mean", "kind": "mean"},
             {"name": "knn", "kind": "knn", "k": 5, "kernel": "tanimoto"}]
    means, diff = {}, {}
    for split in ("random", "scaffold"):
        cfg = config_from_dict({"cv": {"folds": 3, "split": split, "bootstrap_resamples": 200,
                                       "metrics": ["mejia"]}, "predictors": preds})
        res = run_cv(es, cfg, tmp_path / split, progress=False)
        means[split] = res.summary.set_index("predictor")["mean"]
        c = res.comparisons.iloc[0]
        sign = 1.0 if c.predictor_a == "knn" else -1.0  # orient as knn - mean
        diff[split] = (sign * c["diff"], sorted([sign * c.ci_low, sign * c.ci_high]), c.p_value)
    assert means["random"]["knn"] < 0.5 * means["random"]["mean"]
    assert diff["random"][1][1] < 0 and diff["random"][2] < 0.01  # the bootstrap agrees: knn wins
    assert means["scaffold"]["knn"] >= 0.95 * means["scaffold"]["mean"]
    assert diff["scaffold"][1][1] > 0  # under a scaffold split the CI does not favour retrieval


# ----------------------------------------------------------------------------- CLI
def test_cli_cv_writes_a_run(tmp_path):
    from typer.testing import CliRunner

    from drugcell.cli import app

    data = toy_es(n_templates=4, n_per=6).save(tmp_path / "es")
    cfg = tmp_path / "c.toml"
    cfg.write_text('[cv]\nfolds = 4\nbootstrap_resamples = 50\n[[predictors]]\nname = "mean"\nkind = "mean"\n'
                   '[[predictors]]\nname = "control"\nkind = "control"\n')
    res = CliRunner().invoke(app, ["cv", "--data", str(data), "--config", str(cfg), "--out", str(tmp_path / "run"),
                                   "--folds", "3", "--metrics", "mejia,variance", "--no-progress"])
    assert res.exit_code == 0, res.output
    scores = pd.read_parquet(tmp_path / "run" / "scores.parquet")
    assert set(scores.metric) == {"mejia", "variance"} and scores.fold.nunique() == 3
    assert "Ranking" in res.output
    bad = CliRunner().invoke(app, ["cv", "--data", str(data), "--config", str(cfg), "--out", str(tmp_path / "r2"),
                                   "--split", "temporal"])
    assert bad.exit_code == 2 and "Invalid value for '--split'" in bad.output  # a choice option: refused by the CLI
    # the interface: --metric mejia|proxy|variance|all
    for flag, want in (("mejia", {"mejia"}), ("all", {"mejia", "proxy", "variance"})):
        res = CliRunner().invoke(app, ["cv", "--data", str(data), "--config", str(cfg), "--out",
                                       str(tmp_path / f"run_{flag}"), "--metric", flag, "--no-progress"])
        assert res.exit_code == 0, res.output
        assert set(pd.read_parquet(tmp_path / f"run_{flag}" / "scores.parquet").metric) == want


def test_out_never_mixes_two_runs_and_never_takes_a_foreign_folder(tmp_path):
    """#10 item 2: an earlier run is replaced only with overwrite, and then cleared first; a cache or
    the user's folder is never written into, even with overwrite."""
    es = toy_es(n_templates=3, n_per=6)
    cfg = small_config(bootstrap_resamples=50)
    run = tmp_path / "run"
    run_cv(es, cfg, run, progress=False)
    (run / "stale_from_an_old_run.parquet").write_text("old")
    with pytest.raises(DrugcellInputError, match="already holds a `drugcell cv` run; pass --overwrite"):
        run_cv(es, cfg, run, progress=False)
    run_cv(es, cfg, run, progress=False, overwrite=True)
    assert not (run / "stale_from_an_old_run.parquet").exists() and (run / "scores.parquet").is_file()
    cache = es.save(tmp_path / "cache")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    for target in (cache, mine):
        with pytest.raises(DrugcellInputError, match="not a `drugcell cv` run; drugcell never writes into it"):
            run_cv(es, cfg, target, progress=False, overwrite=True)
    assert (mine / "notes.txt").read_text() == "keep"
    assert ExpressionSet.load(cache).n_compounds == es.n_compounds  # the cache's manifest is intact
