"""Where the shared real data lives (``../shared/data`` or ``$DRUGCELL_SHARED_DATA``)."""

from __future__ import annotations

import os
from pathlib import Path

from drugcell.defaults import DEFAULT_CONFIG_NAME

_REPO_ROOT = Path(__file__).resolve().parent.parent


def repo_root() -> Path:
    return _REPO_ROOT


def config_path(name: str = DEFAULT_CONFIG_NAME) -> Path:
    """A shipped run config (``configs/<name>``): the default of every command that takes --config."""
    return _REPO_ROOT / "configs" / name


def shared_data_dir() -> Path:
    """The shared data folder; may not exist (tests then skip, or fail in CI)."""
    env = os.environ.get("DRUGCELL_SHARED_DATA")
    if env:
        return Path(env)
    return _REPO_ROOT.parent / "shared" / "data"
