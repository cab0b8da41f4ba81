"""Issue #10 review: defects a hostile user still reached after the reliability work (one regression
test per fix; each failed on main before its fix)."""

from __future__ import annotations

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
