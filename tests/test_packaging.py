"""Packaging (issue #12 item 4): files honour the umask, the version and git commit are honest."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

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
