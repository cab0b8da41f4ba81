"""Where things are: the shipped run configs, the source checkout, and the shared real data
(``../shared/data`` or ``$DRUGCELL_SHARED_DATA``).

The run configs are package data (``drugcell/configs/*.toml``), found through
:mod:`importlib.resources`, so an installed wheel has them wherever it runs; a checkout keeps a
``configs`` link to them at its root for the paths older commands and docs use.
"""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path

from drugcell.defaults import DEFAULT_CONFIG_NAME

_REPO_ROOT = Path(__file__).resolve().parent.parent


def repo_root() -> Path:
    """The folder above the package: the source checkout when drugcell runs from one."""
    return _REPO_ROOT


def configs_dir() -> Path:
    """The folder of the shipped run configs (``default.toml``, ``demo.toml``, ...), inside the
    installed package (a folder on disk for a wheel, an editable install or a checkout)."""
    return Path(str(files("drugcell") / "configs"))


def shipped_configs() -> list[str]:
    """Names of the shipped run configs, sorted."""
    return sorted(p.name for p in configs_dir().glob("*.toml"))


def config_path(name: str = DEFAULT_CONFIG_NAME) -> Path:
    """A shipped run config by name: the default of every command that takes --config."""
    return configs_dir() / name


def resolve_config(path: str | os.PathLike[str]) -> Path:
    """A ``--config`` value as a file: an existing path as given; otherwise a bare name
    (``default.toml``) or the old ``configs/<name>`` spelling means the shipped config of that name."""
    given = Path(path)
    if given.is_file():
        return given
    shipped = config_path(given.name)
    if (len(given.parts) == 1 or given.parent.name == "configs") and shipped.is_file():
        return shipped
    return given


def shared_data_dir() -> Path:
    """The shared data folder; may not exist (tests then skip, or fail in CI)."""
    env = os.environ.get("DRUGCELL_SHARED_DATA")
    if env:
        return Path(env)
    return _REPO_ROOT.parent / "shared" / "data"
