"""Feedback and habits (issue #12 item 7): a line per step with its time on the long commands,
plain lines instead of tqdm redraws off a terminal, `predict --input` keeps the good molecules,
`--help` lists every choice option's values, flags are shown as flags, `--version`."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.main import get_command
from typer.testing import CliRunner

from drugcell import cli, progress
from drugcell.cli import app
from tests.test_cv import toy_es
from tests.test_submit import write_inputs

ROOT = Path(__file__).resolve().parent.parent
STEP = re.compile(r"^\[\s*\d+\.\d s\] \S", re.M)


def _run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["drugcell", *args])
    with pytest.raises(SystemExit) as exc:
        cli.main()
    out = capsys.readouterr()
    return (0 if exc.value.code is None else exc.value.code), out.out, out.err


# ----------------------------------------------------------------------------- the helper
def test_off_a_terminal_a_bar_is_a_few_plain_lines(monkeypatch):
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    monkeypatch.delenv("DRUGCELL_PROGRESS", raising=False)
    bar = progress.bar(total=500, desc="cv", unit="fit")
    assert isinstance(bar, progress.LineProgress)
    for i in range(500):
        bar.set_postfix_str(f"fold {i}")
        bar.update(1)
    bar.close()
    bar.close()  # once only
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    assert lines[0] == "cv: 0/500 fit (0%) ..." and re.fullmatch(r"cv: 500/500 fit \(100%\) in \d+\.\d s", lines[-1])
    assert len(lines) == 2  # 500 updates within LINE_INTERVAL_S: no line in between
    stream.truncate(0)
    stream.seek(0)
    items = list(progress.LineProgress(range(3), desc="x", unit="batch", interval=0.0))
    assert items == [0, 1, 2]
    assert [ln.split(",")[0] for ln in stream.getvalue().splitlines()] == [
        "x: 0/3 batch (0%) ...", "x: 1/3 batch (33%)", "x: 2/3 batch (67%)", "x: 3/3 batch (100%)",
        "x: 3/3 batch (100%) in 0.0 s"]


def test_one_helper_decides_bar_lines_or_nothing(monkeypatch):
    from tqdm.auto import tqdm

    monkeypatch.delenv("DRUGCELL_PROGRESS", raising=False)
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert isinstance(progress.bar(range(3), disable=True), progress._Silent)
    assert isinstance(progress.bar(range(3), disable=None), progress._Silent)  # tqdm's "terminal only"
    assert isinstance(progress.bar(range(3)), progress.LineProgress)
    monkeypatch.setattr(progress, "is_terminal", lambda stream=None: True)
    b = progress.bar(range(3), desc="t")
    assert isinstance(b, tqdm)
    b.close()
    monkeypatch.setenv("DRUGCELL_PROGRESS", "0")
    assert isinstance(progress.bar(range(3)), progress._Silent)
    assert sys.stderr.getvalue() == "" or "\r" in sys.stderr.getvalue()  # only tqdm (on the 'terminal') redraws


def test_steps_are_quiet_in_the_library_and_timed_in_the_cli(capsys, monkeypatch):
    monkeypatch.delenv("DRUGCELL_PROGRESS", raising=False)
    progress.step("not shown")
    assert capsys.readouterr().err == ""
    progress.set_enabled(True)
    try:
        progress.step("fit x")
        progress.finish()
    finally:
        progress.set_enabled(False)
    err = capsys.readouterr().err.splitlines()
    assert re.fullmatch(r"\[\s+0\.\d s\] fit x", err[0]) and re.fullmatch(r"\[\s+0\.\d s\] done", err[1])


# ----------------------------------------------------------------------------- the commands
@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("feedback")
    es = toy_es(n_templates=4, n_per=6, n_genes=20)
    es.save(root / "es")
    write_inputs(root, es)
    return root


def test_cv_off_a_terminal_writes_lines_not_redraws(toy, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[cv]\nfolds = 3\nbootstrap_resamples = 100\n[estimate]\ntest_plates = 1\n'
                   '[[predictors]]\nname = "mean"\nkind = "mean"\n[[predictors]]\nname = "knn"\nkind = "knn"\n')
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("DRUGCELL_PROGRESS", None)
    with open(tmp_path / "err.log", "w") as err:  # stderr is a file, not a terminal
        proc = subprocess.run([sys.executable, "-m", "drugcell", "cv", "--data", str(toy / "es"), "--config", str(cfg),
                               "--out", str(tmp_path / "run")], stdout=subprocess.PIPE, stderr=err, text=True,
                              env=env, cwd=tmp_path, timeout=600)
    log = (tmp_path / "err.log").read_text()
    assert proc.returncode == 0, log
    assert "\r" not in log and len(log) < 3000, log
    assert "cv: 0/6 fit (0%) ..." in log and re.search(r"^cv: 6/6 fit \(100%\) in \d+\.\d s$", log, re.M)
    steps = [ln.split("] ", 1)[1] for ln in log.splitlines() if STEP.match(ln)]
    assert steps == ["folds and leak audit", "paired bootstrap and model choice", "leaderboard estimate",
                     "write summary.md and the manifest", "done"]


def test_long_commands_print_timed_steps(toy, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("DRUGCELL_PROGRESS", raising=False)
    code, _, err = _run_cli(monkeypatch, capsys, "fit", "--data", str(toy / "es"), "--predictor", "knn",
                            "--out", str(tmp_path / "m"))
    assert code == 0
    steps = [ln for ln in err.splitlines() if STEP.match(ln)]
    assert [s.split("] ", 1)[1].split(" ")[0] for s in steps] == ["load", "fit", "save", "done"]
    assert "fit knn (knn) on 24 compounds x 20 genes" in err

    code, _, err = _run_cli(monkeypatch, capsys, "submit", "--data", str(toy / "es"), "--predictor", "mean",
                            "--test-compounds", str(toy / "test_compounds.csv"), "--gene-filter",
                            str(toy / "gene_filter.csv"), "--out", str(tmp_path / "s.parquet"))
    assert code == 0
    firsts = [ln.split("] ", 1)[1].split(" ")[0] for ln in err.splitlines() if STEP.match(ln)]
    assert firsts == ["load", "read", "fit", "predict", "validate", "write", "done"]

    code, _, err = _run_cli(monkeypatch, capsys, "predict", "--model", str(tmp_path / "m"), "--smiles", "CCO",
                            "--out", str(tmp_path / "p.parquet"))
    assert code == 0
    assert [ln.split("] ", 1)[1].split(" ")[0] for ln in err.splitlines() if STEP.match(ln)] == [
        "parse", "load", "predict", "done"]

    code, _, err = _run_cli(monkeypatch, capsys, "programs", "--data", str(toy / "es"), "--rank", "2",
                            "--out", str(tmp_path / "prog"), "--no-builtin-symbols")
    assert code == 0
    assert [ln.split("] ", 1)[1].split(" ")[0] for ln in err.splitlines() if STEP.match(ln)] == [
        "load", "name", "signed", "write", "done"]


def test_load_and_calibrate_print_timed_steps(tmp_path, monkeypatch, capsys):
    from drugcell.data.simulate import simulate_vcpi

    monkeypatch.delenv("DRUGCELL_PROGRESS", raising=False)
    simulate_vcpi(tmp_path / "sim", preset="tiny", n_genes=300, n_test=5, seed=2)
    code, _, err = _run_cli(monkeypatch, capsys, "load", "--data", str(tmp_path / "sim"), "--out",
                            str(tmp_path / "cache"), "--no-progress")
    assert code == 0, err
    firsts = [ln.split("] ", 1)[1].split(" ")[0] for ln in err.splitlines() if STEP.match(ln)]
    assert firsts == ["read", "stream", "Mejia", "structures", "plate", "write", "done"]
    cfg = tmp_path / "c.toml"
    cfg.write_text('[cv]\nfolds = 2\nbootstrap_resamples = 50\n[estimate]\ntest_plates = 1\n'
                   '[[predictors]]\nname = "knn"\nkind = "knn"\n')
    code, _, err = _run_cli(monkeypatch, capsys, "cv", "--data", str(tmp_path / "cache"), "--config", str(cfg),
                            "--out", str(tmp_path / "run"), "--no-progress")
    assert code == 0, err
    code, _, err = _run_cli(monkeypatch, capsys, "calibrate", str(tmp_path / "run"))
    assert code == 0, err
    firsts = [ln.split("] ", 1)[1].split(" ")[0] for ln in err.splitlines() if STEP.match(ln)]
    assert firsts == ["read", "coverage,", "write", "done"]


def test_predict_input_keeps_the_good_molecules(toy, tmp_path, monkeypatch, capsys):
    from drugcell.models import make_predictor
    from drugcell.persistence import save_model

    es = toy_es(n_templates=4, n_per=6, n_genes=20)
    save_model(make_predictor("mean").fit(es), tmp_path / "m", train_info=es)
    csv = tmp_path / "in.csv"
    csv.write_text("compound,smiles\na,CCO\nb,C1CC(\nc,c1ccccc1\nd,not a smiles\n")
    code, out, err = _run_cli(monkeypatch, capsys, "predict", "--model", str(tmp_path / "m"), "--input", str(csv),
                              "--out", str(tmp_path / "p.parquet"))
    assert code == 0, err
    assert f"{csv}: 2 of 4 molecule(s) could not be parsed by RDKit and were left out (the other 2 are predicted)" in err
    assert "row 2 'b' (SMILES 'C1CC(')" in err and "row 4 'd' (SMILES 'not a smiles')" in err
    table = pd.read_parquet(tmp_path / "p.parquet")
    assert sorted(table["compound"].unique()) == ["a", "c"] and len(table) == 2 * 20
    code, _, err = _run_cli(monkeypatch, capsys, "predict", "--model", str(tmp_path / "m"), "--input", str(csv),
                            "--out", str(tmp_path / "q.parquet"), "--strict")
    assert code == 2 and "2 molecule(s) could not be parsed by RDKit (--strict)" in err
    assert not (tmp_path / "q.parquet").exists()


# ----------------------------------------------------------------------------- --help and --version
def _all_commands():
    root = get_command(app)
    for name, cmd in root.commands.items():
        if hasattr(cmd, "commands"):
            for sub_name, sub in cmd.commands.items():
                yield [name, sub_name], sub
        else:
            yield [name], cmd


def test_help_lists_every_choice_and_shows_flags_as_flags():
    runner = CliRunner()
    n_choices = 0
    for path, cmd in [([], get_command(app)), *_all_commands()]:
        res = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "250"})
        assert res.exit_code == 0, (path, res.output)
        assert "<bool>" not in res.output and "BOOLEAN" not in res.output, (path, res.output)
        for p in cmd.params:
            desc = getattr(p, "type_descriptor", None)
            if desc is not None and desc.is_choice:
                n_choices += 1
                values = [getattr(c, "value", c) for c in desc.choices]  # Enum members or Literal values
                assert "<" + "|".join(values) + ">" in res.output, (path, p.name, res.output)
    assert n_choices >= 9  # split, select x3, metric x2, preset, weights library, dtype


def test_the_choices_come_from_the_registries():
    from drugcell.commands.synth import PRESET_NAMES
    from drugcell.data.simulate import PRESETS

    assert tuple(PRESETS) == PRESET_NAMES
    out = CliRunner().invoke(app, ["fit", "--help"], env={"COLUMNS": "250"}).output
    assert "<mejia|proxy|variance>" in out and "<simplest|lowest>" in out
    assert "built in: blend, control, fusion, knn, mean, mlp, ridge_desc, ridge_emb, ridge_fp, wmean" in out
    out = CliRunner().invoke(app, ["cv", "--help"], env={"COLUMNS": "250"}).output
    assert "<scaffold|random>" in out and "one of mejia, proxy, variance" in out
    assert "deep.toml, default.toml, demo.toml, minimol.toml" in out


def test_version():
    from drugcell import __version__

    res = CliRunner().invoke(app, ["--version"])
    assert res.exit_code == 0 and res.output == f"drugcell {__version__}\n"
