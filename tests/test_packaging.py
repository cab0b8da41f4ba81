"""Packaging (issue #12 item 4): a wheel installed in a fresh environment runs `drugcell cv` with the
shipped default config outside the checkout; files honour the umask; version and git commit are honest."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from drugcell import provenance
from drugcell.config import PredictorSpec
from drugcell.submission import make_submission
from tests.test_cv import toy_es
from tests.test_submit import write_inputs

ROOT = Path(__file__).resolve().parent.parent


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask():
    """Set the process umask for one test and put the old one back."""
    old = os.umask(0o022)
    os.umask(old)
    yield lambda mask: os.umask(mask)
    os.umask(old)


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o077])
def test_atomic_writes_get_the_mode_a_plain_create_would(tmp_path, umask, mask):
    umask(mask)
    assert provenance.current_umask() == mask
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    provenance.write_json(tmp_path / "a.json", {"a": 1})
    with provenance.atomic_path(tmp_path / "b.bin") as tmp:
        tmp.write_bytes(b"b")
    with provenance.atomic_dir(tmp_path / "d") as tmp:
        (tmp / "inner.txt").write_text("i")
    plain_dir = tmp_path / "plain_dir"
    plain_dir.mkdir()
    assert _mode(plain) == 0o666 & ~mask
    assert _mode(tmp_path / "a.json") == _mode(tmp_path / "b.bin") == _mode(tmp_path / "d" / "inner.txt") == 0o666 & ~mask
    assert _mode(tmp_path / "d") == _mode(plain_dir) == 0o777 & ~mask
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left


def test_a_cache_and_a_submission_set_are_group_readable_under_umask_022(tmp_path, umask):
    umask(0o022)
    es = toy_es(n_templates=3, n_per=6, n_genes=10)
    cache = es.save(tmp_path / "cache")
    assert _mode(cache) == 0o755
    assert {p.name: _mode(p) for p in cache.iterdir()} == {p.name: 0o644 for p in cache.iterdir()}
    tc, gf, _, _ = write_inputs(tmp_path, es)
    res = make_submission(es, PredictorSpec("mean", "mean"), tc, gf, tmp_path / "sub" / "p.parquet")
    files = sorted((tmp_path / "sub").iterdir())
    assert [p.name for p in files] == ["p.parquet", "p.parquet.manifest.json"] and res.n_rows > 0
    assert all(_mode(p) == 0o644 for p in files)


def test_git_commit_only_from_a_checkout(tmp_path, monkeypatch):
    """A wheel installed into a virtual environment that sits inside someone's repository (as .venv
    does) must not record that repository's commit as drugcell's."""
    assert provenance.git_commit() is not None or not (ROOT / ".git").exists()
    repo = tmp_path / "their_project"
    site = repo / ".venv" / "lib" / "site-packages"
    site.mkdir(parents=True)
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "theirs"], check=True)
    monkeypatch.setattr(provenance, "repo_root", lambda: site)  # where an installed drugcell/ sits
    assert provenance.git_commit() is None


# ----------------------------------------------------------------------------- the wheel
def _copy_source(dest: Path) -> Path:
    """What a wheel is built from (the packages, pyproject, README), without the checkout's
    caches, so the build writes nothing into the checkout."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("drugcell", "contest_scorer"):
        shutil.copytree(ROOT / name, dest / name, ignore=ignore)
    shutil.copy(ROOT / "README.md", dest / "README.md")
    # a local version tag tells the installed wheel apart from the editable install of the dev venv
    text = (ROOT / "pyproject.toml").read_text()
    version = re.search(r'^version = "([^"]+)"', text, re.M).group(1)
    (dest / "pyproject.toml").write_text(text.replace(f'version = "{version}"', f'version = "{version}+wheeltest"', 1))
    return dest


@pytest.mark.slow
def test_the_wheel_runs_cv_with_the_default_config_outside_the_checkout(tmp_path):
    src = _copy_source(tmp_path / "src")
    pip = [sys.executable, "-m", "pip"]
    proc = subprocess.run([*pip, "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index", "-w",
                           str(tmp_path / "dist"), str(src)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (wheel,) = (tmp_path / "dist").glob("drugcell-*+wheeltest-py3-none-any.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    assert {f"drugcell/configs/{n}.toml" for n in ("default", "demo", "deep", "minimol")} <= names
    assert "drugcell/data/gene_symbols.tsv.gz" in names and "contest_scorer/columns.py" in names

    # a fresh environment; its dependencies come from the project's venv through a .pth line (that
    # venv's editable drugcell is not activated: .pth files on such a line are not processed)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=300)
    vpy = venv / "bin" / "python"
    site = Path(subprocess.run([str(vpy), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    deps = next(p for p in map(Path, sys.path) if p.name == "site-packages" and (p / "numpy").is_dir())
    (site / "dev_venv_deps.pth").write_text(f"{deps}\n")
    proc = subprocess.run([*pip, "--python", str(vpy), "install", "-q", "--no-deps", "--no-index", str(wheel)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    work = tmp_path / "elsewhere"  # outside the checkout: no configs/ folder, no PYTHONPATH
    work.mkdir()
    toy_es(n_templates=4, n_per=8, n_genes=15).save(work / "cache")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DRUGCELL_PROGRESS")}
    exe = venv / "bin" / "drugcell"
    version = subprocess.run([str(exe), "--version"], capture_output=True, text=True, env=env, cwd=work, timeout=300)
    assert version.returncode == 0 and re.fullmatch(r"drugcell \d+\.\d+\.\d+\+wheeltest\n", version.stdout), version
    where = subprocess.run([str(vpy), "-c", "import drugcell.paths as p; print(p.config_path())"], capture_output=True,
                           text=True, env=env, cwd=work, timeout=300)
    assert Path(where.stdout.strip()).is_relative_to(site), where  # the wheel's own copy
    run = subprocess.run([str(exe), "cv", "--data", "cache", "--out", "run", "--predictors", "control,mean,wmean"],
                         capture_output=True, text=True, env=env, cwd=work, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    manifest = json.loads((work / "run" / "manifest.json").read_text())
    assert Path(manifest["config"]["source"]) == site / "drugcell" / "configs" / "default.toml"
    assert manifest["drugcell_version"].endswith("+wheeltest") and manifest["git_commit"] is None
    scores = pd.read_parquet(work / "run" / "scores.parquet")
    assert set(scores["predictor"]) == {"control", "mean", "wmean"} and scores["fold"].nunique() == 5
