"""The `drugcell cv` run folder appears complete or not at all.

Why: a run killed half-way, or one that fails after minutes, must never leave a folder that
`calibrate` or `submit --from-run` would read as a run, nor damage the earlier run it was to replace.
So a run writes into a hidden staging folder beside ``--out`` (:func:`staging_dir`, the one place
that names it) and is swapped into place when complete: atomically with an earlier run (Linux
``renameat2(RENAME_EXCHANGE)``; elsewhere two renames, with the earlier run set aside under
``<staging>-old`` and restored by the next run if a kill fell between them). The earlier run (only
replaced with ``--overwrite``) stays intact until then. On an exception, SIGINT, SIGTERM or SIGHUP
(:func:`~drugcell.provenance.terminate_raises`) the staging folder is removed; SIGKILL cannot be caught, so the next run of the same ``--out`` removes
the staging folder it left, and says so. A folder that is not drugcell's is never removed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path

from drugcell.errors import DrugcellInputError
from drugcell.outputs import check_out_location
from drugcell.provenance import exchange_paths as _exchange
from drugcell.provenance import signals_deferred, terminate_raises

#: inside a staging folder: it is drugcell's, and which process writes it
MARKER = ".drugcell-cv-staging"
COMMAND = "drugcell cv"


def staging_dir(out: Path) -> Path:
    """Where the run for ``out`` is written until it is complete."""
    out = _absolute(out)
    return out.parent / f".{out.name}.partial"


def _absolute(out: Path) -> Path:
    """``out`` with a name of its own ("." or "run/.." become the folder they mean); links kept."""
    return Path(os.path.abspath(out))


def _set_aside_dir(out: Path) -> Path:
    """Where an earlier run waits between two renames when the atomic exchange is unavailable."""
    stage = staging_dir(out)
    return stage.with_name(stage.name + "-old")


def _is_cv_run(folder: Path) -> bool:
    try:
        return json.loads((folder / "manifest.json").read_text()).get("command") == COMMAND
    except (OSError, ValueError, AttributeError):
        return False


def check_run_dir(out: Path, overwrite: bool) -> bool:
    """Whether ``out`` holds an earlier run (to be replaced); raises when drugcell must not write
    there: a file, a non-empty folder that is not a `drugcell cv` run (even with ``overwrite``), or
    an earlier run without ``overwrite``."""
    check_out_location(out)
    if out.exists() and not out.is_dir():
        raise DrugcellInputError(f"--out {out} is a file; choose a folder for the run")
    if out.exists() and any(out.iterdir()):
        if not _is_cv_run(out):
            raise DrugcellInputError(f"--out {out} is not empty and is not a `drugcell cv` run; drugcell never "
                                     "writes into it (even with --overwrite): choose another folder")
        if not overwrite:
            raise DrugcellInputError(f"--out {out} already holds a `drugcell cv` run; pass --overwrite to replace it "
                                     "(it stays intact until the new run is complete)")
        return True
    return False


def _owner(stage: Path) -> int | None:
    try:
        pid = json.loads((stage / MARKER).read_text()).get("pid")
    except (OSError, ValueError, AttributeError):
        return None
    return pid if isinstance(pid, int) else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove(folder: Path) -> None:
    """Remove a staging folder, its marker last, so a kill half-way leaves it recognisable."""
    for child in folder.iterdir():
        if child.name == MARKER:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
    (folder / MARKER).unlink(missing_ok=True)
    folder.rmdir()


def _mark(folder: Path) -> None:
    (folder / MARKER).write_text(json.dumps({"pid": os.getpid()}))


def _ours(folder: Path) -> bool:
    return (folder / MARKER).is_file() or _is_cv_run(folder) or not any(folder.iterdir())


def clear_stale_staging(out: Path) -> str | None:
    """Remove what an interrupted run of ``out`` left (its staging folder; an earlier run set aside
    is put back if ``out`` is missing) and say what was done; None when there was nothing. Refuses
    a folder under those names that drugcell did not write, and one a live process is writing."""
    out = _absolute(out)
    notes = []
    aside = _set_aside_dir(out)
    for folder in (staging_dir(out), aside):
        if not folder.exists():
            continue
        if not folder.is_dir() or not _ours(folder):
            raise DrugcellInputError(f"{folder} is in the way: drugcell stages the run for --out {out} there, and it "
                                     "was not written by `drugcell cv`; move it away")
        pid = _owner(folder)
        if pid is not None and pid != os.getpid() and _alive(pid):
            raise DrugcellInputError(f"another `drugcell cv` (pid {pid}) is writing the run for --out {out} in "
                                     f"{folder}; wait for it, or remove {folder} if that process is gone")
        if folder == aside and not out.exists() and _is_cv_run(folder):
            os.rename(folder, out)
            notes.append(f"restored the earlier run {out} from {folder}, where an interrupted run had set it aside")
            continue
        _remove(folder)
        notes.append(f"removed {folder}, left by an interrupted `drugcell cv` for --out {out}")
    return "; ".join(notes) or None


def _swap_into_place(stage: Path, out: Path) -> None:
    """Make the complete run at ``stage`` the run at ``out``; an earlier run there is then removed."""
    if not (out.exists() and any(out.iterdir())):
        os.replace(stage, out)  # a missing or empty ``out``
        return
    if _exchange(stage, out):
        old = stage
    else:
        old = _set_aside_dir(out)
        with signals_deferred():  # never stop between the two renames
            os.rename(out, old)
            os.rename(stage, out)
    _mark(old)  # the earlier run, now drugcell's to remove; recognisable if a kill stops the removal
    _remove(old)


@contextlib.contextmanager
def staged_run(out: Path, overwrite: bool) -> Iterator[Path]:
    """Yield an empty staging folder for the run of ``out``; when the block completes it becomes
    ``out`` (replacing an earlier run, checked again against ``overwrite``); on an exception, SIGINT
    or SIGTERM it is removed and ``out`` is left as it was."""
    out = _absolute(out)
    note = clear_stale_staging(out)
    if note:
        warnings.warn(note, stacklevel=3)
    stage = staging_dir(out)
    stage.parent.mkdir(parents=True, exist_ok=True)
    with terminate_raises():  # SIGTERM/SIGHUP raise provenance.Terminated, so the except clause runs
        stage.mkdir()
        try:
            _mark(stage)
            yield stage
            check_run_dir(out, overwrite)  # nothing foreign appeared at ``out`` meanwhile
            (stage / MARKER).unlink()  # the run is complete (its manifest says `drugcell cv`)
            _swap_into_place(stage, out)
        except BaseException:
            if stage.exists():
                _remove(stage)
            raise
