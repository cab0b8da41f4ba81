"""Calibration of predicted stds: numbers pinned by hand on tiny examples, the scale recovered on
synthetic Gaussian errors, and the run-level files and CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from drugcell.calibration import grouping, report, stats
from drugcell.calibration.calibrator import Calibrator, calibrator_for_run, calibrator_path
from drugcell.errors import DrugcellInputError
from drugcell.models.registry import kinds_with

# Tiny example, worked by hand below.
E = np.array([0.5, -1.5, 0.2, 3.0, -0.1, 1.0])
S = np.array([1.0, 1.0, 0.5, 2.0, 0.2, 0.4])


def _samples(pred, fold, error, std):
    n = len(error)
    return pd.DataFrame({"predictor": pred, "fold": fold, "compound": [f"c{i}" for i in range(n)],
                         "gene": "g1", "error": error, "std": std})


def test_coverage_by_hand():
    # |e| <= std: T F T F T F ; |e| <= 2 std: T T T T T F (1.0 > 0.8)
    assert stats.coverage(E, S, 1) == pytest.approx(3 / 6)
    assert stats.coverage(E, S, 2) == pytest.approx(5 / 6)
    assert stats.GAUSSIAN_COVERAGE[1] == pytest.approx(0.682689, abs=1e-6)
    assert stats.GAUSSIAN_COVERAGE[2] == pytest.approx(0.954500, abs=1e-6)


def test_scale_and_pearson_by_hand():
    # z = e/std = .5, -1.5, .4, 1.5, -.5, 2.5 ; z^2 sums to 11.41
    assert stats.fit_scale(E, S) == pytest.approx(math.sqrt(11.41 / 6))
    a = np.abs(E)
    r = sum((x - S.mean()) * (y - a.mean()) for x, y in zip(S, a)) / math.sqrt(
        sum((x - S.mean()) ** 2 for x in S) * sum((y - a.mean()) ** 2 for y in a))
    assert stats.std_error_pearson(E, S) == pytest.approx(r)
    assert math.isnan(stats.std_error_pearson(E, np.ones(6)))  # constant std: undefined, not 0


def test_reliability_table_by_hand():
    # std order: 0.2(i4) 0.4(i5) | 0.5(i2) 1.0(i0) | 1.0(i1) 2.0(i3)
    t = stats.reliability_table(E, S, n_bins=3)
    assert t["bin"].tolist() == [1, 2, 3]
    assert t["n"].tolist() == [2, 2, 2]
    np.testing.assert_allclose(t["mean_std"], [0.3, 0.75, 1.5])
    np.testing.assert_allclose(t["mae"], [(0.1 + 1.0) / 2, (0.2 + 0.5) / 2, (1.5 + 3.0) / 2])
    np.testing.assert_allclose(t["ideal_mae"], np.array([0.3, 0.75, 1.5]) * math.sqrt(2 / math.pi))
    np.testing.assert_allclose(t["rmse"], np.sqrt([(0.01 + 1) / 2, (0.04 + 0.25) / 2, (2.25 + 9) / 2]))
    np.testing.assert_allclose(t["std_min"], [0.2, 0.5, 1.0])
    np.testing.assert_allclose(t["std_max"], [0.4, 1.0, 2.0])


def test_bins_equal_sized_under_ties():
    bins = stats.std_bins(np.ones(20), n_bins=10)
    assert np.bincount(bins).tolist() == [2] * 10


def test_out_of_fold_scale_by_hand():
    df = pd.concat([
        _samples("p", 0, [1.0, 1.0], [1.0, 1.0]),   # sum z^2 = 2, n = 2
        _samples("p", 1, [2.0], [1.0]),             # 4, 1
        _samples("p", 2, [3.0, 0.0], [1.0, 1.0]),   # 9, 2
        _samples("q", 0, [1.0], [2.0]),             # another predictor must not leak in
        _samples("q", 1, [1.0], [0.5]),
    ])
    s = grouping.out_of_fold_scales(grouping.clean_samples(df)[0])
    assert s[("p", "0")] == pytest.approx(math.sqrt(13 / 3))
    assert s[("p", "1")] == pytest.approx(math.sqrt(11 / 4))
    assert s[("p", "2")] == pytest.approx(math.sqrt(6 / 3))
    assert s[("q", "0")] == pytest.approx(2.0)    # fitted on q's fold 1 only: z = 2
    assert s[("q", "1")] == pytest.approx(0.5)

    summary = grouping.calibration_summary(df).set_index(["predictor", "fold"])
    # fold 2 scaled by sqrt(2): |3| > 2 sqrt(2), |0| ok -> 0.5 at 1 and 2 sigma
    assert summary.loc[("p", "2"), "coverage_1sigma_scaled"] == pytest.approx(0.5)
    assert summary.loc[("p", "2"), "coverage_2sigma_scaled"] == pytest.approx(0.5)
    assert summary.loc[("p", "2"), "coverage_1sigma"] == pytest.approx(0.5)
    assert summary.loc[("p", "2"), "z_rms"] == pytest.approx(math.sqrt(9 / 2))
    # fold 1 scaled by sqrt(11/4) = 1.658: |2| > 1.658 at 1 sigma, within at 2 sigma
    assert summary.loc[("p", "1"), "coverage_1sigma_scaled"] == 0.0
    assert summary.loc[("p", "1"), "coverage_2sigma_scaled"] == 1.0
    # pooled: scale on all folds = sqrt(15/5); scaled coverage pools held-out folds: 2+0+1 of 5
    assert summary.loc[("p", "all"), "scale"] == pytest.approx(math.sqrt(15 / 5))
    assert summary.loc[("p", "all"), "coverage_1sigma_scaled"] == pytest.approx(3 / 5)
    assert summary.loc[("p", "all"), "n"] == 5


@pytest.mark.parametrize("heteroscedastic", [False, True])
def test_scale_recovered_on_synthetic_gaussian_errors(heteroscedastic):
    """Errors ~ N(0, (s * std)^2): the out-of-fold scale recovers s and restores 0.683 coverage.

    With 160,000 cells per fit the relative sd of s-hat is 1/sqrt(2n) ~ 0.0018, so 1% is > 5 sd;
    held-out coverage on 40,000 cells has binomial sd 0.0023, so 0.012 is > 5 sd.
    """
    rng = np.random.default_rng(7)
    s_true, n_per_fold = 1.7, 40_000
    parts = []
    for fold in range(5):
        std = rng.uniform(0.05, 2.0, n_per_fold) if heteroscedastic else np.ones(n_per_fold)
        parts.append(_samples("m", fold, rng.normal(0.0, 1.0, n_per_fold) * s_true * std, std))
    summary = grouping.calibration_summary(pd.concat(parts, ignore_index=True))
    folds = summary[summary["fold"] != "all"]
    assert len(folds) == 5
    np.testing.assert_allclose(folds["scale"], s_true, rtol=0.01)
    before = math.erf(1 / (s_true * math.sqrt(2)))  # 0.443: clearly miscalibrated before scaling
    np.testing.assert_allclose(folds["coverage_1sigma"], before, atol=0.012)
    np.testing.assert_allclose(folds["coverage_1sigma_scaled"], stats.GAUSSIAN_COVERAGE[1], atol=0.012)
    np.testing.assert_allclose(folds["coverage_2sigma_scaled"], stats.GAUSSIAN_COVERAGE[2], atol=0.008)
    pooled = summary[summary["fold"] == "all"].iloc[0]
    assert pooled["scale"] == pytest.approx(s_true, rel=0.01)
    assert pooled["coverage_1sigma_scaled"] == pytest.approx(stats.GAUSSIAN_COVERAGE[1], abs=0.006)
    if heteroscedastic:  # std carries real information about |error|
        assert pooled["pearson_std_abs_error"] > 0.3


def test_heavy_tails_flagged():
    """Laplace errors scaled to unit variance cover P(|X| <= 1) = 1 - exp(-sqrt 2) = 0.757 at 1 sigma
    (Gaussian: 0.683) and the markdown says so; Gaussian errors are not flagged."""
    rng = np.random.default_rng(11)
    lap = pd.concat([_samples("lap", f, rng.laplace(0, 1, 30_000), np.ones(30_000)) for f in range(3)])
    gau = pd.concat([_samples("gau", f, rng.normal(0, 1, 30_000), np.ones(30_000)) for f in range(3)])
    summary = grouping.calibration_summary(pd.concat([lap, gau]))
    pooled = summary[summary["fold"] == "all"].set_index("predictor")
    assert pooled.loc["lap", "coverage_1sigma_scaled"] == pytest.approx(1 - math.exp(-math.sqrt(2)), abs=0.01)
    md = report.calibration_markdown(summary)
    assert "Heavy tails (lap)" in md


def test_clean_samples_drops_and_counts_bad_std():
    df = _samples("p", 0, [1.0, np.nan, 1.0, 1.0], [1.0, 1.0, 0.0, np.inf])
    clean, dropped = grouping.clean_samples(df)
    assert dropped == 3 and len(clean) == 1
    with pytest.raises(DrugcellInputError, match="missing column.*std"):
        grouping.clean_samples(df.drop(columns="std"), source="x.parquet")


def test_single_fold_has_no_honest_scale():
    summary = grouping.calibration_summary(_samples("p", 0, E, S))
    assert math.isnan(summary.loc[summary["fold"] == "0", "scale"].iloc[0])
    assert math.isnan(summary.loc[summary["fold"] == "all", "coverage_1sigma_scaled"].iloc[0])
    md = report.calibration_markdown(summary)
    assert "single fold" in md


def test_markdown_from_samples_equals_from_summary():
    df = pd.concat([_samples("p", f, E * (f + 1), S) for f in range(3)])
    md = report.calibration_markdown(df)
    assert md == report.calibration_markdown(grouping.calibration_summary(df))
    assert "| p | **all** | 18 |" in md


def _is_png(path) -> bool:
    with open(path, "rb") as f:
        return f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_reliability_plot_is_valid_png(tmp_path):
    import matplotlib.image as mpimg

    df = pd.concat([_samples("p", f, E * (f + 1), S) for f in range(3)])
    rel = grouping.reliability_tables(df, n_bins=3)
    assert set(rel["std_kind"]) == {"raw", "scaled"}
    row = grouping.calibration_summary(df).iloc[-1]
    out = report.reliability_plot(rel, row, tmp_path / "r.png", title="t")
    assert _is_png(out)
    img = mpimg.imread(out)
    assert img.shape[0] == 400 and img.shape[1] == 900  # figsize 9x4 at 100 dpi
    assert img[..., :3].std() > 0  # something was drawn


def _run_dir(tmp_path, with_manifest=True):
    rng = np.random.default_rng(3)
    parts = [_samples(p, f, rng.normal(0, 2.0, 500), np.ones(500)) for p in ("fusion", "knn std")
             for f in range(3)]
    run = tmp_path / "run"
    run.mkdir()
    pd.concat(parts, ignore_index=True).to_parquet(run / "uncertainty.parquet")
    if with_manifest:
        (run / "manifest.json").write_text(json.dumps(
            {"config": {"predictors": [{"name": "mean", "kind": "mean"}, {"name": "fusion", "kind": "fusion"}]}}))
    return run


def test_calibrate_run_writes_files(tmp_path):
    run = _run_dir(tmp_path)
    res = report.calibrate_run(run, n_bins=5)
    names = sorted(p.name for p in run.iterdir())
    for expected in ("calibration.parquet", "calibration.md", "calibration_fusion.png",
                     "calibration_knn_std.png", "calibration_reliability.parquet",
                     "calibration_manifest.json"):
        assert expected in names
    assert not any(n.endswith(".tmp") for n in names)
    assert _is_png(run / "calibration_fusion.png")
    back = pd.read_parquet(run / "calibration.parquet")
    pd.testing.assert_frame_equal(back, res.summary)
    assert len(back) == 2 * (3 + 1)
    rel = pd.read_parquet(run / "calibration_reliability.parquet")
    assert rel.groupby(["predictor", "std_kind"]).size().tolist() == [5, 5, 5, 5]
    manifest = json.loads((run / "calibration_manifest.json").read_text())
    assert manifest["n_samples"] == 3000 and manifest["config"] == {"n_bins": 5}
    assert "# Calibration" in (run / "calibration.md").read_text()
    # one calibrator per predictor, holding the pooled scale the summary prints as `s`
    assert sorted(p.name for p in (run / "calibrators").iterdir()) == ["fusion.json", "knn_std.json"]
    assert "calibrators/knn_std.json" in manifest["outputs"]
    pooled = back[back["fold"] == "all"].set_index("predictor")
    for name in ("fusion", "knn std"):
        loaded = Calibrator.load(calibrator_path(run, name))
        assert loaded == res.calibrators[name]
        assert loaded.scale == pooled.loc[name, "scale"] and loaded.n_cells == 1500
        assert loaded.fitted_on["uncertainty_fingerprint"] == manifest["data_fingerprint"]


def test_calibrate_run_without_samples_names_std_predictors(tmp_path):
    run = _run_dir(tmp_path)
    (run / "uncertainty.parquet").unlink()
    with pytest.raises(DrugcellInputError) as exc:
        report.calibrate_run(run)
    msg = str(exc.value)
    assert "no uncertainty samples" in msg
    # the kinds named are the registry's (returns_std), not a hand-kept list: mlp returns no std
    listed = msg.split("can return a std: ")[1].split(" (")[0].split(", ")
    assert listed == kinds_with("returns_std")
    assert {"knn", "ridge_fp", "ridge_desc", "fusion"} <= set(listed) and "mlp" not in listed
    assert "This run's predictors: mean, fusion" in msg
    with pytest.raises(DrugcellInputError, match="does not exist"):
        report.calibrate_run(tmp_path / "nope")


def test_cli_calibrate(tmp_path):
    from typer.testing import CliRunner

    from drugcell import cli

    run = _run_dir(tmp_path)
    # typer runs a one-command app without the command name; with several it needs it
    prefix = ["calibrate"] if len(cli.app.registered_commands) > 1 else []
    res = CliRunner().invoke(cli.app, [*prefix, str(run), "--bins", "4"])
    assert res.exit_code == 0, res.output
    assert "| fusion | **all** | 1,500 |" in res.output
    assert (run / "calibration.md").exists()
    (run / "uncertainty.parquet").unlink()
    res = CliRunner().invoke(cli.app, [*prefix, str(run)])
    assert res.exit_code != 0
    assert isinstance(res.exception, DrugcellInputError)


# --------------------------------------------------------------------------- the fitted Calibrator
def _by_hand_samples():
    return pd.concat([
        _samples("p", 0, [1.0, 1.0], [1.0, 1.0]),
        _samples("p", 1, [2.0], [1.0]),
        _samples("p", 2, [3.0, 0.0], [1.0, 1.0]),
        _samples("q", 0, [1.0], [2.0]),
        _samples("q", 1, [1.0], [0.5]),
        _samples("p", 2, [np.nan], [1.0]),  # dropped and counted
    ])


def test_calibrator_from_samples_by_hand():
    cal = Calibrator.from_samples(_by_hand_samples(), "p", fitted_on={"run": "r"})
    # z^2 over p's usable cells: 1 + 1 + 4 + 9 + 0 = 15 over 5 cells
    assert cal.scale == pytest.approx(math.sqrt(15 / 5))
    assert (cal.predictor, cal.n_cells, cal.n_dropped, cal.folds) == ("p", 5, 1, ("0", "1", "2"))
    # raw: |e| <= 1 for 1, 1, 0 (3 of 5); <= 2 for all but 3 (4 of 5)
    assert cal.coverage["raw_1sigma"] == pytest.approx(3 / 5)
    assert cal.coverage["raw_2sigma"] == pytest.approx(4 / 5)
    # held out, each fold by its out-of-fold scale (sqrt(13/3), sqrt(11/4), sqrt(2)): 2+0+1 and 2+1+1 of 5
    assert cal.coverage["held_out_1sigma"] == pytest.approx(3 / 5)
    assert cal.coverage["held_out_2sigma"] == pytest.approx(4 / 5)
    assert cal.fitted_on == {"run": "r"} and cal.created["drugcell_version"]
    with pytest.raises(DrugcellInputError, match="no uncertainty samples for predictor 'z'.*samples for: p, q"):
        Calibrator.from_samples(_by_hand_samples(), "z")


def test_calibrator_fit_on_arrays_matches_samples():
    df = _by_hand_samples()
    p = df[df["predictor"] == "p"]
    with_folds = Calibrator.fit(p["error"], p["std"], p["fold"], predictor="p")
    assert with_folds.scale == Calibrator.from_samples(df, "p").scale
    assert with_folds.coverage == Calibrator.from_samples(df, "p").coverage
    one = Calibrator.fit(E, S, predictor="m")
    assert one.scale == pytest.approx(math.sqrt(11.41 / 6)) and one.folds == ("0",)
    assert one.coverage["raw_1sigma"] == pytest.approx(3 / 6)
    assert one.coverage["held_out_1sigma"] is None  # a single fold has no other fold to fit on
    with pytest.raises(DrugcellInputError, match="every error .* is 0"):
        Calibrator.fit(np.zeros(3), np.ones(3), predictor="m")


def test_calibrator_apply_keeps_dtype():
    cal = Calibrator(predictor="p", scale=1.7, n_cells=10)
    std = np.array([[0.1, 0.2], [0.3, 0.4]], dtype=np.float32)
    out = cal.apply(std)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, std * np.float32(1.7))
    np.testing.assert_allclose(cal.apply([1.0, 2.0]), [1.7, 3.4])
    assert cal.apply(None) is None
    with pytest.raises(ValueError, match="finite and > 0"):
        Calibrator(predictor="p", scale=0.0, n_cells=1)


def test_calibrator_file_round_trip_and_strictness(tmp_path):
    cal = Calibrator.from_samples(_by_hand_samples(), "p", fitted_on={"run": "r", "uncertainty_fingerprint": "x"})
    path = cal.save(tmp_path / "c.json")
    assert Calibrator.load(path) == cal
    d = json.loads(path.read_text())
    assert (d["format"], d["format_version"], d["method"]) == ("drugcell.calibrator", 1, "std_scale")
    assert d["scale"] == cal.scale  # JSON keeps the float exactly

    def refused(change, match):
        bad = {**d, **change}
        bad = {k: v for k, v in bad.items() if v is not ...}
        (tmp_path / "b.json").write_text(json.dumps(bad))
        with pytest.raises(DrugcellInputError, match=match):
            Calibrator.load(tmp_path / "b.json")

    refused({"format": "drugcell.model"}, "not a drugcell calibrator")
    refused({"format_version": 2}, "format version 2")
    refused({"method": "isotonic"}, "unknown calibration method")
    refused({"extra": 1}, "unknown \\(extra\\)")
    refused({"scale": ...}, "missing \\(scale\\)")
    refused({"scale": -1.0}, "not a positive number")
    refused({"n_cells": True}, "'n_cells' is bool")
    refused({"coverage": {"raw_1sigma": 0.5}}, "coverage must have")
    refused({"coverage": {**d["coverage"], "raw_1sigma": 1.5}}, "not a fraction")
    (tmp_path / "b.json").write_text("{not json")
    with pytest.raises(DrugcellInputError, match="not valid JSON"):
        Calibrator.load(tmp_path / "b.json")
    with pytest.raises(DrugcellInputError, match="not found"):
        Calibrator.load(tmp_path / "none.json")


def test_calibrator_for_run_reads_the_saved_one_only_while_fresh(tmp_path):
    run = _run_dir(tmp_path)
    fitted = calibrator_for_run(run, "fusion")  # nothing saved yet: fitted from the samples
    samples = pd.read_parquet(run / "uncertainty.parquet")
    mine = samples[samples["predictor"] == "fusion"]
    assert fitted.scale == pytest.approx(math.sqrt(np.mean((mine["error"] / mine["std"]) ** 2)), rel=1e-12)
    assert calibrator_for_run(run, "mean") is None  # no std samples for it
    report.calibrate_run(run)
    saved = Calibrator.load(calibrator_path(run, "fusion"))
    marked = Calibrator(**{**saved.__dict__, "scale": 9.0})  # same fingerprint: the saved file is what is read
    marked.save(calibrator_path(run, "fusion"))
    assert calibrator_for_run(run, "fusion").scale == 9.0
    samples.assign(error=samples["error"] * 2).to_parquet(run / "uncertainty.parquet")  # stale now: refit
    assert calibrator_for_run(run, "fusion").scale == pytest.approx(2 * fitted.scale)
    (run / "uncertainty.parquet").unlink()
    assert calibrator_for_run(run, "fusion") is None
