"""Output locations of `drugcell load` and `drugcell synth`, checked before the work starts.

Why apart: minutes of streaming or simulating must never end in an error about where to write, and
nothing a user had may be replaced unasked. So the checks run first: the nearest existing folder
above ``--out`` must be a folder drugcell may write into (not a file), and a simulated data set
replaces files only of an earlier `drugcell synth` output, only with ``overwrite``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from drugcell.data.readers import show_ids
from drugcell.errors import DrugcellInputError
from drugcell.outputs import check_out_location

__all__ = ["SYNTH_COMMAND", "check_out_location", "check_synth_out"]

#: the command that writes a folder's ``synth_manifest.json``
SYNTH_COMMAND = "drugcell synth"


def check_synth_out(out: str | os.PathLike[str], names: Sequence[str], manifest_name: str, *,
                    overwrite: bool) -> None:
    """A simulated data set goes into a new folder or one without files of its ``names``; those files
    are replaced only when the folder is an earlier `drugcell synth` output (its manifest says so)
    and ``overwrite`` is set. A user's files (e.g. the real VCPI download) are never replaced."""
    out = Path(out)
    check_out_location(out, "--out")
    if out.exists() and not out.is_dir():
        raise DrugcellInputError(f"--out {out} is a file; choose a folder for the simulated data set")
    clash = [n for n in names if (out / n).exists()]
    if not clash:
        if out.is_dir() and not os.access(out, os.W_OK | os.X_OK):
            raise DrugcellInputError(f"--out {out}: cannot write into it (permission denied); choose another folder")
        return
    try:
        command = json.loads((out / manifest_name).read_text()).get("command")
    except (OSError, ValueError, AttributeError):
        command = None
    if command != SYNTH_COMMAND:
        raise DrugcellInputError(
            f"--out {out} holds file(s) a simulation would replace ({show_ids(clash)}) and is not a "
            f"`drugcell synth` output (no {manifest_name} written by it); drugcell never replaces them, even with "
            "--overwrite: choose another folder")
    if not overwrite:
        raise DrugcellInputError(f"--out {out} already holds a simulated data set ({show_ids(clash)}); pass "
                                 "--overwrite to replace it, or choose another folder")
