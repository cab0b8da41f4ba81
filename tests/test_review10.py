"""Issue #10 review: defects a hostile user still reached after the reliability work (one regression
test per fix; each failed on main before its fix)."""

from __future__ import annotations

import os

import pytest
from typer.testing import CliRunner

from drugcell.errors import DrugcellInputError
from tests.test_reliability_data import small_es


def test_weights_export_never_replaces_an_existing_file_without_overwrite(tmp_path):
    """Main's `drugcell weights export --out` replaced any file (e.g. train_counts.parquet) unasked."""
    from drugcell.cli import app

    es = small_es()
    es.save(tmp_path / "cache")
    precious = tmp_path / "train_counts.parquet"
    precious.write_bytes(b"the user's counts")
    res = CliRunner().invoke(app, ["weights", "export", "--data", str(tmp_path / "cache"), "--out", str(precious)])
    assert isinstance(res.exception, DrugcellInputError) and "--overwrite" in str(res.exception)
    assert precious.read_bytes() == b"the user's counts"
    with pytest.raises(DrugcellInputError, match="already exists"):
        es.write_weights_parquet(precious)
    assert precious.read_bytes() == b"the user's counts"
    es.write_weights_parquet(precious, overwrite=True)
    assert precious.read_bytes()[:4] == b"PAR1"


def test_weights_export_to_a_folder_is_a_clear_error(tmp_path):
    """Main raised a raw IsADirectoryError after the work."""
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "keep.txt").write_text("x")
    with pytest.raises(DrugcellInputError, match="is a folder"):
        small_es().write_weights_parquet(folder, overwrite=True)
    assert (folder / "keep.txt").read_text() == "x"


def _cli(args: list[str]) -> tuple[int, str]:
    """Run drugcell's real entry point (exit codes and the error line as a user sees them)."""
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-m", "drugcell", *args], capture_output=True, text=True,
                         env={**os.environ, "DRUGCELL_PROGRESS": "0"})
    return res.returncode, res.stderr


def test_a_symlinked_out_is_refused_and_its_target_left_alone(tmp_path):
    """Main: `cv --out LINK --overwrite` (LINK -> an earlier run) emptied the earlier run and died with a
    traceback; fit/load replaced the link by a folder and died; submit/predict replaced the link."""
    from drugcell.evaluation.run_dir import check_run_dir
    from drugcell.outputs import check_file_output
    from drugcell.persistence import check_model_dir
    from drugcell.submission import check_outputs

    target = tmp_path / "real"
    target.mkdir()
    (target / "keep.txt").write_text("x")
    link = tmp_path / "link"
    link.symlink_to(target)
    for check in (lambda: check_run_dir(link, True), lambda: check_model_dir(link, True),
                  lambda: small_es().save(link, overwrite=True), lambda: check_file_output(link, True),
                  lambda: check_outputs(link, None, True)):
        with pytest.raises(DrugcellInputError, match=r"is a symbolic link \(to .*real\)"):
            check()
    assert link.is_symlink() and (target / "keep.txt").read_text() == "x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "real"]


@pytest.mark.parametrize("command", ["fit", "predict", "weights"])
def test_an_out_below_a_file_is_refused_before_the_work(tmp_path, command):
    """Main raised FileExistsError (exit 1) after fitting or predicting."""
    cache = tmp_path / "cache"
    small_es().save(cache)
    blocker = tmp_path / "afile"
    blocker.write_text("mine")
    args = {"fit": ["fit", "--data", str(cache), "--predictor", "mean", "--out", str(blocker / "m")],
            "predict": ["predict", "--model", str(tmp_path / "no_model"), "--smiles", "CCO", "--out",
                        str(blocker / "p.csv")],
            "weights": ["weights", "export", "--data", str(cache), "--out", str(blocker / "w.parquet")]}[command]
    code, err = _cli(args)
    assert code == 2 and f"{blocker} is a file, so no folder can be made below it" in err, err
    assert blocker.read_text() == "mine"


def test_cli_names_a_file_system_refusal_instead_of_a_traceback(monkeypatch, capsys):
    """A full disk or a read-only mount found mid-write (after the up-front checks) exits 2 with the
    file named; main printed a traceback (exit 1)."""
    import errno

    from drugcell import cli

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", "/data/run/.scores.parquet.tmp")

    monkeypatch.setattr(cli, "app", full)
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 2
    assert "No space left on device (/data/run/.scores.parquet.tmp)" in capsys.readouterr().err


@pytest.fixture
def saved_model(tmp_path):
    from drugcell.models import make_predictor
    from drugcell.persistence import save_model

    es = small_es()
    return save_model(make_predictor("mean").fit(es), tmp_path / "model", train_info=es)


@pytest.mark.parametrize("name", ["training.npz", "training.parquet"])
def test_a_damaged_training_file_of_a_saved_model_is_named(saved_model, name):
    """Main checked only arrays.npz: a truncated training.parquet gave a raw ArrowInvalid traceback, a
    training.npz of another model loaded silently."""
    from drugcell.persistence import SavedModel

    path = saved_model / name
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(DrugcellInputError, match=f"{path}: checksum differs from model.json"):
        SavedModel.load(saved_model)


@pytest.mark.parametrize("edit, match", [
    (lambda m: {"format": m["format"]}, r"field\(s\) kind, config, genes missing"),
    (lambda m: {**m, "config": []}, r"field\(s\) config missing or of the wrong type"),
    (lambda m: {**m, "format_version": "two"}, r"field\(s\) format_version missing"),
    (lambda m: {k: v for k, v in m.items() if k != "training"}, r"training entry cannot be read \(KeyError"),
    (lambda m: {**m, "config": {"no_such_param": 1}}, r"model\.json: .*no_such_param"),
])
def test_an_edited_model_json_is_a_clear_error(saved_model, edit, match):
    """Main: KeyError / TypeError / ValueError tracebacks (exit 1) for these model.json files."""
    import json

    from drugcell.persistence import SavedModel

    meta = json.loads((saved_model / "model.json").read_text())
    (saved_model / "model.json").write_text(json.dumps(edit(meta)))
    with pytest.raises(DrugcellInputError, match=match):
        SavedModel.load(saved_model)


@pytest.mark.parametrize("col", ["compound", "sequenced_id"])
def test_counts_to_expression_refuses_metadata_without_ids(col):
    """Main turned a missing compound into a compound named 'None' (or a sample named 'nan') silently."""
    import pandas as pd

    import contest_scorer as cs

    counts = pd.DataFrame({"gene_id": ["g1", "g2"], "s1": [1, 2], "s2": [3, 4]})
    meta = pd.DataFrame({"sequenced_id": ["s1", "s2"], "compound": ["a", "b"]})
    meta.loc[1, col] = None
    with pytest.raises(cs.ScoringError, match=rf"metadata has 1 row\(s\) without a {col} \(rows 1"):
        cs.counts_to_expression(counts, meta)


def test_submit_id_collision_says_what_to_fix_not_to_build_folds():
    """A test compound whose id is a training id of another molecule: main's refusal advised
    `make_folds` (a CV remedy) to someone submitting a fixed test set."""
    from drugcell.splits.audit import LeakError, audit_split

    with pytest.raises(LeakError) as info:
        audit_split(["CCO", "c1ccccc1"], ["CCN"], ["7", "8"], ["7"], name="training set vs test.csv",
                    stereo_flag="--allow-stereo-overlap")
    msg = str(info.value)
    assert "share the same compound id" in msg and "make_folds" not in msg and "wrong id" in msg
