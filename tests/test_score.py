"""`drugcell score`: a submission scored against a truth table and official-layout weights, with
contest_scorer's refusals (exit 2, the file named), on a simulated set whose answer is known."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import contest_scorer as cs
from drugcell.scoring import score_files

PRED = "predicted_expression"


@pytest.fixture(scope="module")
def sim(tmp_path_factory) -> dict[str, Path]:
    from drugcell.data.simulate import simulate_vcpi

    return simulate_vcpi(tmp_path_factory.mktemp("sim"), preset="tiny", seed=4)


@pytest.fixture(scope="module")
def truth(sim) -> pd.DataFrame:
    return pd.read_parquet(sim["test_truth"])


def _sub(truth: pd.DataFrame, path: Path, shift: float = 0.0) -> Path:
    df = truth.rename(columns={"expression": PRED})
    df[PRED] = df[PRED] + shift
    if path.suffix == ".csv":
        df.to_csv(path, index=False)
    else:
        df.to_parquet(path, index=False)
    return path


def _run(monkeypatch, capsys, sim, submission, *extra) -> tuple[int, str, str]:
    from drugcell import cli

    args = ["drugcell", "score", "--submission", str(submission), "--truth", str(sim["test_truth"]),
            "--weights", str(sim["test_weights"]), *extra]
    monkeypatch.setattr(sys, "argv", args)
    with pytest.raises(SystemExit) as exc:
        cli.main()
    out = capsys.readouterr()
    return (0 if exc.value.code is None else exc.value.code), out.out, out.err


def test_the_truth_scores_zero_and_truth_plus_one_scores_one(tmp_path, monkeypatch, capsys, sim, truth):
    n_comp, n_genes = truth["compound"].nunique(), truth["gene_id"].nunique()
    code, out, _ = _run(monkeypatch, capsys, sim, _sub(truth, tmp_path / "s0.parquet"),
                        "--gene-filter", str(sim["gene_filter"]))
    assert code == 0
    assert "leaderboard wMSE: 0.000000" in out and f"{n_comp} compounds x {n_genes} genes" in out
    assert "worst 5 compounds:" in out
    # the weights of each compound sum to 1, so a shift of +1 everywhere scores exactly 1
    res = score_files(_sub(truth, tmp_path / "s1.csv", 1.0), sim["test_truth"], sim["test_weights"])
    assert res.leaderboard["wmse_mean"] == pytest.approx(1.0, abs=1e-6)
    assert res.median == pytest.approx(1.0, abs=1e-6) and res.n_genes == n_genes
    assert len(res.per_compound) == n_comp and res.weights_max_sum_error < 1e-5


def test_agrees_with_contest_scorer_and_reports_the_worst(tmp_path, sim, truth):
    rng = np.random.default_rng(0)
    df = truth.rename(columns={"expression": PRED})
    df[PRED] = np.clip(df[PRED] + rng.normal(0, 0.5, len(df)) * (df["compound"] == df["compound"].iloc[0]), 0, None)
    df.to_parquet(tmp_path / "noisy.parquet", index=False)
    res = score_files(tmp_path / "noisy.parquet", sim["test_truth"], sim["test_weights"], sim["gene_filter"])
    w = pd.read_parquet(sim["test_weights"]).set_index("gene_id")
    ref = cs.score_compounds(truth, df, weights=w)["wmse"]
    assert np.allclose(res.per_compound.sort_index().to_numpy(), ref.sort_index().to_numpy(), rtol=1e-12)
    assert res.worst().index[0] == str(truth["compound"].iloc[0]) and res.worst().iloc[0] > 0
    assert res.leaderboard["wmse_mean"] == pytest.approx(ref.mean())
    # weights with the genes as a pandas index (not a column) read the same
    w.to_parquet(tmp_path / "w_index.parquet")
    again = score_files(tmp_path / "noisy.parquet", sim["test_truth"], tmp_path / "w_index.parquet")
    assert again.leaderboard == res.leaderboard


def test_out_json_is_strict_and_carries_provenance(tmp_path, monkeypatch, capsys, sim, truth):
    code, out, _ = _run(monkeypatch, capsys, sim, _sub(truth, tmp_path / "s.parquet", 0.5),
                        "--out", str(tmp_path / "score.json"))
    assert code == 0 and "wrote" in out

    def refuse(name):
        raise AssertionError(f"non-strict JSON constant {name}")

    report = json.loads((tmp_path / "score.json").read_text(), parse_constant=refuse)
    assert report["wmse_mean"] == pytest.approx(0.25, abs=1e-6) and report["n_compounds"] == truth["compound"].nunique()
    assert len(report["per_compound"]) == report["n_compounds"] and len(report["worst"]) == 5
    assert report["files"]["gene_filter"] is None and len(report["files"]["truth"]["sha256"]) == 64
    assert report["provenance"]["command"] == "drugcell score"


def _broken(truth: pd.DataFrame, how: str) -> pd.DataFrame:
    df = truth.rename(columns={"expression": PRED})
    first = df["compound"].iloc[0]
    if how == "missing compound":
        return df[df["compound"] != first]
    if how == "duplicate":
        return pd.concat([df, df.iloc[:1]])
    if how == "nan":
        return df.assign(**{PRED: df[PRED].where(df.index != 3)})
    if how == "negative":
        return df.assign(**{PRED: df[PRED].where(df.index != 3, -1.0)})
    if how == "extra compound":
        return pd.concat([df, df[df["compound"] == first].assign(compound="not_a_test_compound")])
    if how == "missing gene":
        return df[df["gene_id"] != df["gene_id"].iloc[0]]
    raise AssertionError(how)


@pytest.mark.parametrize("how, match", [
    ("missing compound", "missing .* in 1 compound"),
    ("duplicate", "duplicate"),
    ("nan", "NaN"),
    ("negative", "negative"),
    ("extra compound", "not_a_test_compound"),
    ("missing gene", "missing"),
])
def test_bad_submissions_are_refused_with_exit_2(tmp_path, monkeypatch, capsys, sim, truth, how, match):
    path = tmp_path / "bad.parquet"
    _broken(truth, how).to_parquet(path, index=False)
    code, _, err = _run(monkeypatch, capsys, sim, path)
    assert code == 2 and f"submission file {path}" in err
    import re

    assert re.search(match, err), err
    assert "Traceback" not in err


def test_bad_truth_weights_and_paths_name_the_file(tmp_path, monkeypatch, capsys, sim, truth):
    sub = _sub(truth, tmp_path / "s.parquet")
    # weights without a column for one scored compound
    w = pd.read_parquet(sim["test_weights"])
    first = str(truth["compound"].iloc[0])
    w.drop(columns=[first]).to_parquet(tmp_path / "w.parquet", index=False)
    code, _, err = _run(monkeypatch, capsys, sim, sub, "--weights", str(tmp_path / "w.parquet"))
    assert code == 2 and f"weights file {tmp_path / 'w.parquet'}" in err and first in err
    # a truth without the expression column
    truth.rename(columns={"expression": "value"}).to_parquet(tmp_path / "t.parquet", index=False)
    code, _, err = _run(monkeypatch, capsys, sim, sub, "--truth", str(tmp_path / "t.parquet"))
    assert code == 2 and f"truth file {tmp_path / 't.parquet'} lacks column(s) expression" in err
    # a truth with a duplicated row
    pd.concat([truth, truth.iloc[:1]]).to_parquet(tmp_path / "t2.parquet", index=False)
    code, _, err = _run(monkeypatch, capsys, sim, sub, "--truth", str(tmp_path / "t2.parquet"))
    assert code == 2 and f"truth file {tmp_path / 't2.parquet'}" in err and "duplicate" in err
    # absent and unreadable files
    code, _, err = _run(monkeypatch, capsys, sim, tmp_path / "nope.parquet")
    assert code == 2 and "does not exist" in err
    (tmp_path / "junk.parquet").write_text("not parquet")
    code, _, err = _run(monkeypatch, capsys, sim, tmp_path / "junk.parquet")
    assert code == 2 and "cannot be read as parquet" in err
    # weights with a gene on two rows; a gene filter listing a gene twice
    pd.concat([w, w.iloc[:1]]).to_parquet(tmp_path / "w2.parquet", index=False)
    code, _, err = _run(monkeypatch, capsys, sim, sub, "--weights", str(tmp_path / "w2.parquet"))
    assert code == 2 and f"weights file {tmp_path / 'w2.parquet'} has 1 gene(s) on more than one row" in err
    genes = list(truth["gene_id"].unique())
    pd.DataFrame({"gene_id": [*genes, genes[0]]}).to_csv(tmp_path / "gf2.csv", index=False)
    code, _, err = _run(monkeypatch, capsys, sim, sub, "--gene-filter", str(tmp_path / "gf2.csv"))
    assert code == 2 and "gene filter" in err and "more than once" in err
    # a gene filter naming a gene the truth lacks
    pd.DataFrame({"gene_id": [*truth["gene_id"].unique(), "ENSG_EXTRA"]}).to_csv(tmp_path / "gf.csv", index=False)
    code, _, err = _run(monkeypatch, capsys, sim, sub, "--gene-filter", str(tmp_path / "gf.csv"))
    assert code == 2 and "ENSG_EXTRA" in err and f"truth file {sim['test_truth']} and gene filter" in err
