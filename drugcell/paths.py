"""Where the shared real data lives (``../shared/data`` or ``$DRUGCELL_SHARED_DATA``)."""

from __future__ import annotations

import os
from pathlib import Path

_REPO_ROOT = Path(__file__).resolve().parent.parent


def repo_root() -> Path:
    return _REPO_ROOT


def shared_data_dir() -> Path:
    """The shared data folder; may not exist (tests then skip, or fail in CI)."""
    env = os.environ.get("DRUGCELL_SHARED_DATA")
    if env:
        return Path(env)
    return _REPO_ROOT.parent / "shared" / "data"
