"""Shared fixtures. Tests that need ../shared/data skip without it, but fail in CI
(DRUGCELL_REQUIRE_SHARED=1) so a missing data folder can never pass silently."""

from __future__ import annotations

import os

import pytest

from drugcell.paths import shared_data_dir


def require_shared(*parts: str):
    """Return the path under the shared data folder, or skip (fail under DRUGCELL_REQUIRE_SHARED)."""
    path = shared_data_dir().joinpath(*parts)
    if not path.exists():
        msg = f"shared data not found at {path} (set DRUGCELL_SHARED_DATA or place ../shared/data)"
        if os.environ.get("DRUGCELL_REQUIRE_SHARED") == "1":
            pytest.fail(msg + "; DRUGCELL_REQUIRE_SHARED=1 forbids skipping")
        pytest.skip(msg)
    return path


@pytest.fixture
def shared_data():
    """Fixture form of :func:`require_shared` for the folder itself."""
    return require_shared()
