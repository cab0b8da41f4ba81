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


@pytest.fixture(scope="session")
def plated_cache(tmp_path_factory):
    """A small simulated cache (700 compounds, 80 genes) with a plate layout the leaderboard
    estimate can use, so a CV run on it exercises every per-part term (engines, resume)."""
    import warnings

    from drugcell.data.loader import load_to_cache
    from drugcell.data.simulate import simulate_vcpi

    root = tmp_path_factory.mktemp("plated")
    files = simulate_vcpi(root / "sim", preset="tiny", n_compounds=700, n_genes=400, n_test=30, seed=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        load_to_cache(root / "cache", files["train_counts"], files["train_metadata"], files["train_chemistry"],
                      files["gene_filter"], progress=False)
    return root / "cache"
