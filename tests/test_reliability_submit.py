"""Issue #10, the commands that write single outputs: a submission set appears whole or not at all
(also under SIGKILL, SIGTERM and SIGINT), nothing is replaced without --overwrite and the check
comes before the work, stereoisomers of training compounds pass only with --allow-stereo-overlap,
the test compounds' condition and SMILES are checked, parquet test files are read."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rdkit import Chem
from typer.testing import CliRunner

from drugcell.config import PredictorSpec
from drugcell.errors import DrugcellInputError
from drugcell.splits.audit import LeakError, audit_folds
from drugcell.submission import make_submission
from tests.test_cv import toy_es
from tests.test_submit import TEST_SMILES, write_inputs

ROOT = Path(__file__).resolve().parent.parent
MEAN = PredictorSpec("mean", "mean")
CONST_STD = PredictorSpec("s", "test_const_std", {"sigma": 0.25})


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _snapshot(folder: Path) -> dict[str, bytes]:
    """Every file in ``folder`` (hidden ones too), by name."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture
def inputs(tmp_path):
    es = toy_es(n_templates=3, n_per=8, n_genes=12)
    tc, gf, test, genes = write_inputs(tmp_path, es)
    return es, tc, gf, test


# ----------------------------------------------------------------------------- item 6: the set
def test_defect6_a_new_set_replaces_the_old_whole_and_drops_its_sidecar(tmp_path, inputs):
    es, tc, gf, test = inputs
    out = tmp_path / "sub" / "p.parquet"
    old = make_submission(es, CONST_STD, tc, gf, out)
    assert old.std_out == tmp_path / "sub" / "p.std.parquet" and old.std_out.is_file()
    new = make_submission(es, MEAN, tc, gf, out, overwrite=True)  # mean predicts no std
    assert new.std_out is None
    assert _listing(out.parent) == ["p.parquet", "p.parquet.manifest.json"]  # old sidecar gone, no temp files
    man = json.loads((out.parent / "p.parquet.manifest.json").read_text())
    assert man["predictor"] == "mean" and man["std_file"] is None and man["files"]["std"] is None
    assert man["files"]["submission"] == {"name": "p.parquet", "bytes": out.stat().st_size, "sha256": _sha(out)}
    profile = es.expression.astype(np.float64).mean(axis=0)
    sub = pd.read_parquet(out)
    np.testing.assert_allclose(sub["predicted_expression"].to_numpy()[:12],
                               profile[[list(es.genes).index(g) for g in sub["gene_id"].astype(str)[:12]]], rtol=1e-6)


def test_defect6_a_failure_while_writing_keeps_the_old_set_byte_identical(tmp_path, inputs, monkeypatch):
    import drugcell.submission as submission

    es, tc, gf, _ = inputs
    out = tmp_path / "p.parquet"
    make_submission(es, CONST_STD, tc, gf, out)
    before = _snapshot(tmp_path)
    real = submission.pq.write_table

    def fail_on_the_sidecar(table, where, **kw):
        if "predicted_std" in table.column_names:
            raise OSError("No space left on device")
        return real(table, where, **kw)

    monkeypatch.setattr(submission.pq, "write_table", fail_on_the_sidecar)
    with pytest.raises(OSError, match="No space"):
        make_submission(es, PredictorSpec("s2", "test_const_std", {"sigma": 0.5}), tc, gf, out, overwrite=True)
    assert _snapshot(tmp_path) == before  # the new submission was staged, never installed
    assert _listing(tmp_path) == sorted(before)  # and its staging folder is gone


def test_defect6_stale_temp_files_of_the_output_are_cleaned_and_no_others(tmp_path, inputs):
    es, tc, gf, _ = inputs
    out = tmp_path / "p.parquet"
    ours = [".p.parquet.ab12cd34.tmp", ".p.std.parquet.zz99_y88.tmp", ".p.parquet.manifest.json.qwertyui.tmp"]
    others = [".q.parquet.ab12cd34.tmp", ".p.parquet.notes.tmp", "p.tmp", "keep.txt"]
    for name in ours + others:
        (tmp_path / name).write_bytes(b"x" * 100)
    res = make_submission(es, MEAN, tc, gf, out)
    assert res.notes and "3 stale temporary file(s)" in res.notes[0]
    assert _listing(tmp_path) == sorted(others + ["p.parquet", "p.parquet.manifest.json", "gene_filter.csv",
                                                  "test_compounds.csv"])


# A light child (no torch, no pyarrow): forks once per kill point, the forked process writes a new
# set over the old one and is killed by the hook at that point.
_FORKER = textwrap.dedent(r'''
    import json, os, sys
    from pathlib import Path
    from drugcell.outputs import KILL_ENV, submission_files
    root, new_std, points = Path(sys.argv[1]), sys.argv[2] == "1", sys.argv[3:]
    for i, point in enumerate(points):
        out = root / f"k{i}" / "p.parquet"
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                os.environ[KILL_ENV] = point
                with submission_files(out).write() as stage:
                    stage.path("p.parquet").write_bytes(b"NEW SUBMISSION " * 2000)
                    if point == "partial":  # killed half-way through writing a member
                        with open(stage.path("p.parquet.manifest.json"), "wb") as f:
                            f.write(b'{"half')
                            f.flush()
                            os.kill(os.getpid(), 9)
                    if new_std:
                        stage.path("p.std.parquet").write_bytes(b"NEW STD " * 2000)
                    stage.path("p.parquet.manifest.json").write_bytes(b'{"new": true}')
            except BaseException as exc:
                code = 3 if type(exc).__name__ in ("Terminated", "KeyboardInterrupt") else 4
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"point": point, "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
                          "code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None}))
''')

OLD_SET = {"p.parquet": b"OLD SUBMISSION " * 1000, "p.std.parquet": b"OLD STD " * 1000,
           "p.parquet.manifest.json": b'{"old": true}'}


@pytest.mark.parametrize("new_std", [False, True])
def test_defect6_kill_at_every_point_of_a_set_write(tmp_path, new_std):
    """SIGKILL at every step of staging and commit (and SIGTERM/SIGINT while staging): without a
    journal the folder already holds the complete old or new set; after recovery it always does,
    with no temporary files, and a file of the user's beside it untouched."""
    from drugcell.outputs import submission_files

    old = dict(OLD_SET) if not new_std else {k: v for k, v in OLD_SET.items() if k != "p.std.parquet"}
    new = {"p.parquet": b"NEW SUBMISSION " * 2000, "p.parquet.manifest.json": b'{"new": true}'}
    if new_std:
        new["p.std.parquet"] = b"NEW STD " * 2000
    change = "install:p.std.parquet" if new_std else "remove:p.std.parquet"
    points = ["stage:p.parquet", "partial", "stage:p.parquet.manifest.json", "staged", "journal", change,
              "install:p.parquet", "install:p.parquet.manifest.json", "staging-removed", "done",
              "stage:p.parquet.manifest.json@TERM", "staged@INT", "journal@TERM"]
    for i in range(len(points)):
        (tmp_path / f"k{i}").mkdir()
        for name, data in {**old, "mine.txt": b"user file"}.items():
            (tmp_path / f"k{i}" / name).write_bytes(data)
    proc = subprocess.run([sys.executable, "-c", _FORKER, str(tmp_path), "1" if new_std else "0", *points],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    runs = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["point"] for r in runs] == points
    outcomes = {}
    for i, r in enumerate(runs):
        folder = tmp_path / f"k{i}"
        if "@" in r["point"]:  # caught signals: an exception, the staging removed in the child itself
            assert r["code"] == 3, r
            assert not submission_files(folder / "p.parquet").journal.exists() or r["point"] == "journal@TERM"
        else:
            assert r["signal"] == signal.SIGKILL, r
        files = {k: v for k, v in _snapshot(folder).items() if not k.startswith(".") and k != "mine.txt"}
        if not submission_files(folder / "p.parquet").journal.exists():
            assert files in (old, new), r["point"]  # no journal: already a complete set
        note = submission_files(folder / "p.parquet").recover()
        snap = _snapshot(folder)
        assert snap.pop("mine.txt") == b"user file"
        assert snap in (old, new), (r["point"], sorted(snap))
        assert _listing(folder) == sorted([*snap, "mine.txt"])  # no staging, journal or temp file left
        outcomes[r["point"]] = "new" if snap == new else "old"
        assert (note is not None) == (r["point"] not in ("done",) and "@" not in r["point"]), (r["point"], note)
    # before the journal the old set stands; from the journal on the new set does
    for p in points:
        expected = "old" if p.split("@")[0] in ("stage:p.parquet", "partial", "stage:p.parquet.manifest.json",
                                                "staged") else "new"
        assert outcomes[p] == expected, p


def test_defect6_fault_submit_killed_at_seeded_points(tmp_path, inputs):
    """The issue's fault test: `drugcell submit --overwrite` in subprocesses (run side by side, each
    over its own copy of an old set), killed by SIGKILL at seeded random points of the write phase
    and once by SIGTERM; after each, the location holds the old set byte-identical or the complete
    new one, and a following submit over an unfinished write succeeds and leaves no temp files."""
    from drugcell.outputs import submission_files

    es, tc, gf, test = inputs
    data = es.save(tmp_path / "es")
    seed_out = tmp_path / "seed" / "p.parquet"
    make_submission(es, PredictorSpec("knn", "knn", {"k": 5}), tc, gf, seed_out)  # the old set, with a sidecar
    old = _snapshot(seed_out.parent)
    assert sorted(old) == ["p.parquet", "p.parquet.manifest.json", "p.std.parquet"]
    before = ["stage:p.parquet", "stage:p.parquet.manifest.json", "staged"]
    after = ["journal", "remove:p.std.parquet", "install:p.parquet", "install:p.parquet.manifest.json",
             "staging-removed"]
    rng = random.Random(10)
    kills = rng.sample(before, 1) + rng.sample(after, 2) + ["stage:p.parquet.manifest.json@TERM"]

    def cmd(out: Path) -> list[str]:
        return [sys.executable, "-m", "drugcell", "submit", "--data", str(data), "--predictor", "mean",
                "--test-compounds", str(tc), "--gene-filter", str(gf), "--out", str(out), "--overwrite"]

    def new_set_ok(folder: Path) -> bool:
        snap = _snapshot(folder)
        if sorted(snap) != ["p.parquet", "p.parquet.manifest.json"]:
            return False
        man = json.loads(snap["p.parquet.manifest.json"])
        return (man["predictor"] == "mean" and man["std_file"] is None
                and len(pd.read_parquet(folder / "p.parquet")) == len(test) * 12
                and man["files"]["submission"]["sha256"] == hashlib.sha256(snap["p.parquet"]).hexdigest())

    env = {k: v for k, v in os.environ.items() if k != "DRUGCELL_KILL_AT"}
    procs = []
    for i, point in enumerate(kills):
        (tmp_path / f"k{i}").mkdir()
        for name, content in old.items():
            (tmp_path / f"k{i}" / name).write_bytes(content)
        procs.append(subprocess.Popen(cmd(tmp_path / f"k{i}" / "p.parquet"), env={**env, "DRUGCELL_KILL_AT": point},
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT))
    for point, proc in zip(kills, procs):
        _, err = proc.communicate(timeout=600)
        if point.endswith("@TERM"):
            assert proc.returncode == 128 + signal.SIGTERM and "stopped: terminated by SIGTERM" in err, err[-2000:]
        else:
            assert proc.returncode == -signal.SIGKILL, (point, proc.returncode, err[-2000:])
    last = tmp_path / f"k{kills.index(rng.choice(kills[1:3]))}"  # killed after its commit point
    assert submission_files(last / "p.parquet").journal.exists()  # an unfinished write, left as it was
    for i, point in enumerate(kills):
        folder = tmp_path / f"k{i}"
        if folder != last:
            submission_files(folder / "p.parquet").recover()  # what the next run or `drugcell score` does first
            assert _snapshot(folder) == old or new_set_ok(folder), (point, _listing(folder))
            assert (_snapshot(folder) == old) == (point in before or point.endswith("@TERM")), point
    proc = subprocess.run(cmd(last / "p.parquet"), capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "finished an interrupted write" in proc.stdout
    assert new_set_ok(last) and _listing(last) == ["p.parquet", "p.parquet.manifest.json"]  # no temp files


# ----------------------------------------------------------------------------- item 2: --overwrite
def test_defect2_submit_refuses_existing_outputs_before_any_fitting(tmp_path, inputs, monkeypatch):
    import drugcell.submission as submission
    from drugcell.models import make_predictor
    from drugcell.persistence import save_model

    es, tc, gf, _ = inputs
    out = tmp_path / "p.parquet"
    model_dir = tmp_path / "model"
    make_submission(es, MEAN, tc, gf, out, save_model_dir=model_dir)
    model_before = _snapshot(model_dir)

    def no_fitting(*a, **k):
        raise AssertionError("fitted before the output check")

    monkeypatch.setattr(submission, "fit_spec", no_fitting)
    with pytest.raises(DrugcellInputError, match="p.parquet.*already exist.*--overwrite"):
        make_submission(es, MEAN, tc, gf, out)
    # only the sidecar of an earlier run is there: still the user's file, still refused
    lone = tmp_path / "lone"
    lone.mkdir()
    (lone / "q.std.parquet").write_bytes(b"mine")
    with pytest.raises(DrugcellInputError, match=r"q\.std\.parquet.*--overwrite"):
        make_submission(es, MEAN, tc, gf, lone / "q.parquet")
    with pytest.raises(DrugcellInputError, match="model.*already holds a saved model.*--overwrite"):
        make_submission(es, MEAN, tc, gf, tmp_path / "other.parquet", save_model_dir=model_dir)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(DrugcellInputError, match="not a saved model written by drugcell.*even with --overwrite"):
        make_submission(es, MEAN, tc, gf, tmp_path / "other.parquet", save_model_dir=mine, overwrite=True)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(DrugcellInputError, match="is a file"):
        make_submission(es, MEAN, tc, gf, tmp_path / "other.parquet", save_model_dir=tmp_path / "afile")
    with pytest.raises(DrugcellInputError, match="even with --overwrite"):  # save_model itself, too
        save_model(make_predictor("mean").fit(es), mine, train_info=es, overwrite=True)
    assert (mine / "notes.txt").read_text() == "keep me" and _listing(mine) == ["notes.txt"]
    assert _snapshot(model_dir) == model_before
    assert not (tmp_path / "other.parquet").exists()


def test_defect2_cli_submit_and_fit_check_outputs_before_loading_the_data(tmp_path):
    """The data folder does not exist: the output refusal must come first."""
    from drugcell.cli import app
    from drugcell.persistence import save_model

    es = toy_es(n_templates=3, n_per=8, n_genes=6)
    from drugcell.models import make_predictor

    model_dir = save_model(make_predictor("mean").fit(es), tmp_path / "m", train_info=es)
    tc, gf, _, _ = write_inputs(tmp_path, es)
    runner = CliRunner()
    base = ["--data", str(tmp_path / "no_cache"), "--predictor", "mean"]
    res = runner.invoke(app, ["submit", *base, "--test-compounds", str(tc), "--gene-filter", str(gf),
                              "--out", str(tmp_path / "s.parquet"), "--save-model", str(model_dir)])
    assert res.exit_code != 0 and "already holds a saved model" in str(res.exception)
    res = runner.invoke(app, ["fit", *base, "--out", str(tmp_path / "m")])
    assert "already holds a saved model" in str(res.exception)
    (tmp_path / "u").mkdir()
    (tmp_path / "u" / "x.csv").write_text("1")
    res = runner.invoke(app, ["fit", *base, "--out", str(tmp_path / "u"), "--overwrite"])
    assert "not a saved model written by drugcell" in str(res.exception)
    (tmp_path / "f").write_text("1")
    res = runner.invoke(app, ["fit", *base, "--out", str(tmp_path / "f")])
    assert isinstance(res.exception, DrugcellInputError) and "is a file" in str(res.exception)
    assert (tmp_path / "u" / "x.csv").read_text() == "1"


def test_defect2_predict_and_score_refuse_an_existing_out_before_reading(tmp_path):
    from drugcell.cli import app

    runner = CliRunner()
    existing = tmp_path / "p.parquet"
    existing.write_bytes(b"mine")
    res = runner.invoke(app, ["predict", "--model", str(tmp_path / "no_model"), "--smiles", "CCO",
                              "--out", str(existing)])
    assert isinstance(res.exception, DrugcellInputError) and "already exists; pass --overwrite" in str(res.exception)
    report = tmp_path / "score.json"
    report.write_text("{}")
    res = runner.invoke(app, ["score", "--submission", str(tmp_path / "none.parquet"), "--truth", str(existing),
                              "--weights", str(existing), "--out", str(report)])
    assert isinstance(res.exception, DrugcellInputError) and "already exists; pass --overwrite" in str(res.exception)
    assert existing.read_bytes() == b"mine" and report.read_text() == "{}"


def test_defect2_calibrate_replaces_an_earlier_calibration_only_with_overwrite_and_whole(tmp_path):
    from drugcell.calibration.report import calibrate_run
    from tests.test_calibration import _run_dir

    run = _run_dir(tmp_path)
    calibrate_run(run, n_bins=4)
    first = _snapshot(run)
    with pytest.raises(DrugcellInputError, match="calibration.*already exist.*--overwrite"):
        calibrate_run(run, n_bins=5)
    assert _snapshot(run) == first
    # a predictor calibrated earlier but absent now: its files belong to the old set
    (run / "calibrators" / "gone.json").write_text("{}")
    (run / "calibration_gone.png").write_bytes(b"png")
    res = calibrate_run(run, n_bins=5, overwrite=True)
    assert not (run / "calibrators" / "gone.json").exists() and not (run / "calibration_gone.png").exists()
    assert sorted(p.name for p in (run / "calibrators").iterdir()) == ["fusion.json", "knn_std.json"]
    man = json.loads((run / "calibration_manifest.json").read_text())
    assert man["config"] == {"n_bins": 5} and len(res.reliability) == 2 * 2 * 5
    assert (run / "uncertainty.parquet").read_bytes() == first["uncertainty.parquet"]  # the run's own files kept
    assert not [p for p in run.iterdir() if p.name.startswith(".")]


def test_defect2_programs_never_writes_into_a_run_and_replaces_its_own_output_only_with_overwrite(tmp_path):
    from drugcell.programs import run_programs
    from tests.test_programs import _es

    cache = _es().save(tmp_path / "cache")
    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps({"command": "drugcell cv"}))
    with pytest.raises(DrugcellInputError, match="no `drugcell programs` output.*even with --overwrite"):
        run_programs(run, data=cache, rank=2, overwrite=True)
    assert json.loads((run / "manifest.json").read_text()) == {"command": "drugcell cv"}
    run_programs(tmp_path / "p", data=cache, rank=2, top=3)
    with pytest.raises(DrugcellInputError, match="already holds `drugcell programs` output.*--overwrite"):
        run_programs(tmp_path / "p", data=cache, rank=3, top=3)
    (tmp_path / "p" / "stale.txt").write_text("from an older version")
    run_programs(tmp_path / "p", data=cache, rank=3, top=3, overwrite=True)
    assert json.loads((tmp_path / "p" / "manifest.json").read_text())["config"]["rank"] == 3
    assert not (tmp_path / "p" / "stale.txt").exists()  # the folder is replaced whole, never mixed


# ----------------------------------------------------------------------------- item 7: stereo overlap
def _stereo_case(tmp_path):
    """Training holds L-alanine and (E)-crotonic acid; the test set D-alanine and (Z)-crotonic acid."""
    from drugcell.data.expression_set import ExpressionSet

    es = toy_es(n_templates=3, n_per=8, n_genes=8)
    smiles = es.smiles.astype(str).copy()
    smiles[3], smiles[7] = "C[C@H](N)C(=O)O", "C/C=C/C(=O)O"
    es = ExpressionSet(compounds=es.compounds, genes=es.genes, expression=es.expression, weights=es.weights,
                       n_replicates=es.n_replicates, control=es.control, smiles=smiles, inchikey=es.inchikey)
    tc, gf, test, _ = write_inputs(tmp_path, es, smiles=TEST_SMILES[:3] + ["C[C@@H](N)C(=O)O", "C/C=C\\C(=O)O"])
    return es, tc, gf, test


def test_defect7_a_stereoisomer_of_a_training_compound_is_named_and_passes_only_with_the_flag(tmp_path):
    from drugcell.cli import app

    es, tc, gf, test = _stereo_case(tmp_path)
    key = {s: Chem.MolToInchiKey(Chem.MolFromSmiles(s)) for s in
           ("C[C@H](N)C(=O)O", "C[C@@H](N)C(=O)O", "C/C=C/C(=O)O", "C/C=C\\C(=O)O")}
    assert key["C[C@H](N)C(=O)O"][:14] == key["C[C@@H](N)C(=O)O"][:14] != ""
    assert key["C[C@H](N)C(=O)O"] != key["C[C@@H](N)C(=O)O"] and key["C/C=C/C(=O)O"] != key["C/C=C\\C(=O)O"]
    out = tmp_path / "p.parquet"
    with pytest.raises(LeakError) as exc:
        make_submission(es, MEAN, tc, gf, out)
    msg = str(exc.value)
    for train_id, test_id, a, b in ((es.compounds[3], test.compound[3], "C[C@H](N)C(=O)O", "C[C@@H](N)C(=O)O"),
                                    (es.compounds[7], test.compound[4], "C/C=C/C(=O)O", "C/C=C\\C(=O)O")):
        assert f"train {train_id} ({a}, {key[a]}) and test {test_id} ({b}, {key[b]})" in msg
    assert "2 compound pair(s)" in msg and "pass --allow-stereo-overlap" in msg and not out.exists()

    res = make_submission(es, MEAN, tc, gf, out, allow_stereo_overlap=True)
    assert "2 test compound(s) share only the InChIKey first block" in res.audit_line
    man = json.loads((tmp_path / "p.parquet.manifest.json").read_text())
    assert man["allow_stereo_overlap"] is True and man["audit"]["n_stereo_overlaps"] == 2
    assert {(d["train_id"], d["test_id"], d["train_inchikey"], d["test_inchikey"])
            for d in man["audit"]["stereo_overlaps"]} == {
        (es.compounds[3], test.compound[3], key["C[C@H](N)C(=O)O"], key["C[C@@H](N)C(=O)O"]),
        (es.compounds[7], test.compound[4], key["C/C=C/C(=O)O"], key["C/C=C\\C(=O)O"])}
    assert len(pd.read_parquet(out)) == 5 * 8
    data = es.save(tmp_path / "es")
    res = CliRunner().invoke(app, ["submit", "--data", str(data), "--predictor", "mean", "--test-compounds",
                                   str(tc), "--gene-filter", str(gf), "--out", str(tmp_path / "c.parquet"),
                                   "--allow-stereo-overlap"])
    assert res.exit_code == 0, res.output
    assert "share only the InChIKey first block" in res.output


def test_defect7_the_same_molecule_is_refused_even_with_the_flag_and_cv_folds_still_refuse_stereo(tmp_path):
    es, tc, gf, test = _stereo_case(tmp_path)
    t = test.copy()
    t.loc[2, "smiles"] = "OC(=O)/C=C/C"  # (E)-crotonic acid again, written differently: the same molecule
    t.to_csv(tmp_path / "t2.csv", index=False)
    with pytest.raises(LeakError) as exc:
        make_submission(es, MEAN, tmp_path / "t2.csv", gf, tmp_path / "p.parquet", allow_stereo_overlap=True)
    msg = str(exc.value)
    assert f"test {t.compound[2]} (OC(=O)/C=C/C" in msg and "share the same inchikey" in msg
    assert f"test {t.compound[3]}" not in msg  # the stereoisomers are let through
    assert "1 compound pair(s)" in msg and "Remove the same molecules" not in msg
    # CV folds: a stereo pair across folds is a leak, and no flag reaches them
    smiles = ["C[C@H](N)C(=O)O", "C[C@@H](N)C(=O)O", "CCO", "c1ccccc1"]
    with pytest.raises(LeakError, match="inchikey-block1"):
        audit_folds(smiles, ["a", "b", "c", "d"], np.array([0, 1, 0, 1]))


# ----------------------------------------------------------------------------- item 4: the condition
def test_submit_checks_the_test_condition_naming_compound_and_value(tmp_path, inputs, monkeypatch):
    import drugcell.submission as submission

    es, tc, gf, test = inputs
    monkeypatch.setattr(submission, "fit_spec", lambda *a, **k: (_ for _ in ()).throw(AssertionError("fitted")))
    bad = test.astype({"compound_concentration": object})
    bad.loc[0, "compound_concentration"] = "ten"
    bad.loc[1, "compound_concentration"] = 1.0
    bad.loc[2, "cell_line"] = "HEK293"
    bad.loc[3, "timepoint"] = "6h"
    bad.loc[4, "compound_concentration_unit"] = "furlongs"
    bad.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(DrugcellInputError) as exc:
        make_submission(es, MEAN, tmp_path / "bad.csv", gf, tmp_path / "p.parquet")
    msg = str(exc.value)
    assert "5 value(s) outside the training condition (cell line THP-1, timepoint 24h, 10000 nM: the contest's" in msg
    assert f"{test.compound[0]}: compound_concentration 'ten' is not a number" in msg
    assert f"{test.compound[1]}: compound_concentration 1.0 uM = 1000 nM (training: 10000 nM)" in msg
    assert f"{test.compound[2]}: cell_line 'HEK293' (training: 'THP-1')" in msg
    assert f"{test.compound[3]}: timepoint '6h' (training: '24h')" in msg
    assert f"{test.compound[4]}: compound_concentration_unit 'furlongs'" in msg
    # the training set's own record wins over the contest default: loaded at 1 uM, 10 uM is outside
    es.info["loader"] = {"options": {"condition": {"concentration_nm": 1000.0, "cell_line": "THP-1",
                                                   "timepoint": "24h"}}}
    with pytest.raises(DrugcellInputError, match=r"1000 nM: recorded when the training data were loaded.*10\.0 uM "
                                                 r"= 10000 nM \(training: 1000 nM\)"):
        make_submission(es, MEAN, tc, gf, tmp_path / "p.parquet")
    # spelling of the same label, a blank cell and a file without the columns all pass the check
    from drugcell.heldout import check_condition

    ok = test.copy().astype(str)
    ok["cell_line"], ok.loc[0, "compound_concentration"] = "thp 1", ""
    ok["compound_concentration"] = ok["compound_concentration"].replace("10.0", "1")
    assert check_condition(ok, "t.csv", es.info)["concentration_nm"] == 1000.0
    assert check_condition(ok[["compound", "smiles"]], "t.csv", None)["source"].startswith("the contest's")


# ----------------------------------------------------------------------------- item 5: the file
def test_test_compounds_as_parquet_are_read_and_empty_files_are_clear_errors(tmp_path, inputs):
    es, tc, gf, test = inputs
    pq_path = tmp_path / "test_compounds.parquet"
    t = test.copy()
    t["compound"] = t["compound"].astype("int64")  # parquet keeps numbers as numbers
    t.to_parquet(pq_path, index=False)
    res = make_submission(es, MEAN, pq_path, gf, tmp_path / "p.parquet")
    assert res.n_compounds == 5
    assert sorted(pd.read_parquet(tmp_path / "p.parquet")["compound"].astype(str).unique()) == sorted(test.compound)
    (tmp_path / "empty.parquet").write_bytes(b"")
    with pytest.raises(DrugcellInputError, match="empty.parquet is not a readable parquet file"):
        make_submission(es, MEAN, tmp_path / "empty.parquet", gf, tmp_path / "q.parquet")
    (tmp_path / "empty.csv").write_bytes(b"")
    with pytest.raises(DrugcellInputError, match="empty.csv is not a readable CSV"):
        make_submission(es, MEAN, tc, tmp_path / "empty.csv", tmp_path / "q.parquet")
    assert not (tmp_path / "q.parquet").exists()


def test_an_all_unparseable_test_set_is_refused_naming_the_compounds(tmp_path, inputs):
    es, tc, gf, _ = inputs
    ids = [str(9400000 + i) for i in range(12)]
    pd.DataFrame({"compound": ids, "smiles": [f"not a smiles {i}" for i in range(12)]}).to_csv(
        tmp_path / "bad.csv", index=False)
    with pytest.raises(DrugcellInputError) as exc:
        make_submission(es, MEAN, tmp_path / "bad.csv", gf, tmp_path / "p.parquet")
    msg = str(exc.value)
    assert "none of the 12 test compounds has a SMILES RDKit can parse" in msg
    assert all(f"{i} ('not a smiles" in msg for i in ids[:10]) and ids[10] not in msg and "(+2 more)" in msg
    assert not (tmp_path / "p.parquet").exists()


def test_a_partly_unparseable_test_set_is_submitted_with_a_counted_named_warning(tmp_path, inputs):
    from drugcell.cli import app

    es, tc, gf, test = inputs
    t = test.copy()
    t.loc[1, "smiles"], t.loc[3, "smiles"] = "C1CC", "xyz"
    t.to_csv(tmp_path / "t.csv", index=False)
    res = make_submission(es, MEAN, tmp_path / "t.csv", gf, tmp_path / "p.parquet")
    assert len(res.warnings) == 1
    assert res.warnings[0].startswith("2 of 5 test compound(s) have a SMILES RDKit cannot parse")
    assert f"{t.compound[1]} ('C1CC'" in res.warnings[0] and f"{t.compound[3]} ('xyz'" in res.warnings[0]
    assert res.n_rows == 5 * 12 and res.audit["n_unparsed_test"] == 2
    man = json.loads((tmp_path / "p.parquet.manifest.json").read_text())
    assert [u["compound"] for u in man["unparsed_test_compounds"]] == [t.compound[1], t.compound[3]]
    data = es.save(tmp_path / "es")
    cli = CliRunner().invoke(app, ["submit", "--data", str(data), "--predictor", "mean", "--test-compounds",
                                   str(tmp_path / "t.csv"), "--gene-filter", str(gf), "--out",
                                   str(tmp_path / "c.parquet")])
    assert cli.exit_code == 0 and "warning: 2 of 5 test compound(s)" in cli.output


def test_fileset_refuses_journal_names_outside_the_set(tmp_path):
    """A damaged or foreign journal never makes recovery touch a file outside the set."""
    from drugcell.outputs import FileSet

    fs = FileSet.beside(tmp_path / "p.parquet", "p.parquet", "p.parquet.manifest.json")
    (tmp_path / "precious.txt").write_text("x")
    fs.journal.write_text(json.dumps({"format": "drugcell.fileset-commit", "install": [], "remove": ["precious.txt"]}))
    with pytest.raises(DrugcellInputError, match="not a commit journal of this file set"):
        fs.recover()
    fs.journal.write_text("{")
    with pytest.raises(DrugcellInputError, match="not a readable commit journal"):
        fs.recover()
    assert (tmp_path / "precious.txt").read_text() == "x"
