"""The `drugcell cv` run folder appears complete or not at all, and an interrupted run can be resumed.

Why: a run killed half-way, or one that fails after minutes, must never leave a folder that
`calibrate` or `submit --from-run` would read as a run, nor damage the earlier run it was to replace;
and the fits it finished are worth keeping. So a run writes into a hidden staging folder beside
``--out`` (:func:`staging_dir`, the one place that names it), with its finished parts and settings
(:mod:`drugcell.evaluation.parts`), and is swapped into place when complete: atomically with an
earlier run (Linux ``renameat2(RENAME_EXCHANGE)``; elsewhere two renames, with the earlier run set
aside under ``<staging>-old`` and restored by the next run if a kill fell between them). The earlier
run (only replaced with ``--overwrite``) stays intact until then.

On SIGINT, SIGTERM or SIGHUP (:func:`~drugcell.provenance.terminate_raises`), and on an error once a
part is finished, the staging folder is kept for ``--resume`` (:func:`staged_run`); a SIGKILLed run
leaves it too. An existing staging folder with settings (a resumable run) then needs ``--resume``
or ``--overwrite`` (which removes it first, so a run folder never mixes two runs); one without
(an earlier run set aside by a swap, or a staging folder of older drugcell) holds nothing to resume
and is removed by the next run, which says so. A folder that is not drugcell's is never removed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drugcell.errors import DrugcellInputError
from drugcell.evaluation.parts import PARTS, STATE, finished_parts, read_state, state_differences, write_state
from drugcell.outputs import check_out_location
from drugcell.provenance import Terminated, signals_deferred, terminate_raises
from drugcell.provenance import exchange_paths as _exchange

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


def check_run_dir(out: Path, overwrite: bool, resume: bool = False) -> bool:
    """Whether ``out`` holds an earlier run (to be replaced); raises when drugcell must not write
    there: a file, a non-empty folder that is not a `drugcell cv` run (even with ``overwrite``), an
    earlier run without ``overwrite`` (or ``resume`` of an interrupted run started with it), or an
    interrupted run in the staging folder without ``resume`` or ``overwrite``."""
    check_out_location(out)  # a symlink, a path below a file, a read-only folder: refused up front
    if overwrite and resume:
        raise DrugcellInputError("--resume finishes the interrupted run and --overwrite starts over: pass one")
    stage = staging_dir(out)
    if stage.exists():
        _check_stale(stage, _absolute(out))  # not drugcell's, or a live run's: never touched
    state = read_state(stage) if stage.is_dir() else None
    if state is not None and not (resume or overwrite):
        raise DrugcellInputError(
            f"--out {out} has an interrupted `drugcell cv` run in {stage} ({finished_parts(stage)} fit(s) finished); "
            "pass --resume to finish it, or --overwrite to start over")
    return _check_out(out, overwrite or bool(resume and state is not None and state.get("overwrite")),
                      resume=resume and state is None)


def _check_out(out: Path, overwrite: bool, resume: bool = False) -> bool:
    if out.exists() and not out.is_dir():
        raise DrugcellInputError(f"--out {out} is a file; choose a folder for the run")
    if out.exists() and any(out.iterdir()):
        if not _is_cv_run(out):
            raise DrugcellInputError(f"--out {out} is not empty and is not a `drugcell cv` run; drugcell never "
                                     "writes into it (even with --overwrite): choose another folder")
        if resume:
            raise DrugcellInputError(f"--out {out} holds a complete `drugcell cv` run: nothing to resume (pass "
                                     "--overwrite to run it again)")
        if not overwrite:
            raise DrugcellInputError(f"--out {out} already holds a `drugcell cv` run; pass --overwrite to replace it "
                                     "(it stays intact until the new run is complete), or choose another folder")
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


def clear_stale_staging(out: Path, *, keep_resumable: bool = False) -> str | None:
    """Remove what an interrupted run of ``out`` left (its staging folder; an earlier run set aside
    is put back if ``out`` is missing) and say what was done; None when there was nothing. A
    staging folder with the run's settings is kept when ``keep_resumable`` (``--resume`` finishes
    it). Refuses a folder under those names that drugcell did not write, and one a live process is
    writing."""
    out = _absolute(out)
    notes = []
    aside = _set_aside_dir(out)
    for folder in (staging_dir(out), aside):
        if not folder.exists():
            continue
        _check_stale(folder, out)
        if folder == aside and not out.exists() and _is_cv_run(folder):
            os.rename(folder, out)
            notes.append(f"restored the earlier run {out} from {folder}, where an interrupted run had set it aside")
            continue
        if keep_resumable and folder != aside and read_state(folder) is not None:
            continue
        _remove(folder)
        notes.append(f"removed {folder}, left by an interrupted `drugcell cv` for --out {out}")
    return "; ".join(notes) or None


def _check_stale(folder: Path, out: Path) -> None:
    """Refuse a folder at a staging name that is not drugcell's, or that a live run is writing."""
    if not folder.is_dir() or not _ours(folder):
        raise DrugcellInputError(f"{folder} is in the way: drugcell stages the run for --out {out} there, and it "
                                 "was not written by `drugcell cv`; move it away")
    pid = _owner(folder)
    if pid is not None and pid != os.getpid() and _alive(pid):
        raise DrugcellInputError(f"another `drugcell cv` (pid {pid}) is writing the run for --out {out} in "
                                 f"{folder}; wait for it, or remove {folder} if that process is gone")


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


@dataclass
class Stage:
    """The staging folder a run writes into, and whether it resumes an interrupted run there."""

    path: Path
    resumed: bool = False
    recorded: dict[str, Any] = field(default_factory=dict)  # the settings written when the run started


def resume_hint(out: Path) -> str | None:
    """What to tell a user whose run stopped with its staging folder kept; None when there is none."""
    stage = staging_dir(out)
    if not stage.is_dir() or read_state(stage) is None:
        return None
    return (f"the interrupted run is kept in {stage} ({finished_parts(stage)} fit(s) finished); run the same "
            "command with --resume to finish it, or with --overwrite to start over")


def _begin(out: Path, overwrite: bool, resume: bool, state: dict[str, Any]) -> Stage:
    """The staging folder for this run: the interrupted run's (``resume``, same settings) or a new one."""
    check_run_dir(out, overwrite, resume)
    note = clear_stale_staging(out, keep_resumable=resume)
    if note:
        warnings.warn(note, stacklevel=4)
    stage = staging_dir(out)
    if resume and stage.is_dir():
        recorded = read_state(stage) or {}
        diffs = state_differences(recorded, state)
        if diffs:
            raise DrugcellInputError(
                f"--resume: the interrupted run in {stage} was started with other settings, so its finished fits "
                f"would not belong to this run: {'; '.join(diffs)}. Run it as it started, or pass --overwrite to "
                "start over")
        _mark(stage)
        return Stage(stage, resumed=True, recorded=recorded)
    stage.parent.mkdir(parents=True, exist_ok=True)
    stage.mkdir()
    _mark(stage)
    write_state(stage, state)
    return Stage(stage, recorded=state)


def _finish(stage: Stage, out: Path, overwrite: bool) -> None:
    """The complete run at ``stage`` becomes ``out``: its parts and settings go, then the swap."""
    _check_out(out, overwrite or bool(stage.recorded.get("overwrite")))  # nothing foreign appeared meanwhile
    with signals_deferred():  # the parts go only with the swap (a SIGKILL here: the next run redoes the fits)
        shutil.rmtree(stage.path / PARTS, ignore_errors=True)
        (stage.path / STATE).unlink(missing_ok=True)
        (stage.path / MARKER).unlink()  # the run is complete (its manifest says `drugcell cv`)
        _swap_into_place(stage.path, out)


@contextlib.contextmanager
def staged_run(out: Path, overwrite: bool, *, resume: bool = False,
               state: dict[str, Any] | None = None) -> Iterator[Stage]:
    """Yield the :class:`Stage` for the run of ``out``: a new staging folder with ``state`` (the run's
    settings) recorded, or with ``resume`` the interrupted run's, refused when its recorded settings
    differ from ``state``. When the block completes the run becomes ``out`` (replacing an earlier
    run, checked again against ``overwrite``). On SIGINT, SIGTERM or SIGHUP, and on an error once a
    part is finished, the staging folder is kept for ``--resume`` (the exception carries a note
    saying so) and ``out`` is left as it was; on an error before any part it is removed."""
    out = _absolute(out)
    state = dict(state or {})
    state.setdefault("overwrite", bool(overwrite))
    with terminate_raises():  # SIGTERM/SIGHUP raise provenance.Terminated, so the except clause runs
        stage = _begin(out, overwrite, resume, state)
        try:
            yield stage
            _finish(stage, out, overwrite)
        except BaseException as exc:
            interrupted = isinstance(exc, KeyboardInterrupt | Terminated | SystemExit)
            if stage.path.exists():
                if interrupted or stage.resumed or finished_parts(stage.path):
                    hint = resume_hint(out)
                    if hint:
                        exc.add_note(hint)
                else:
                    _remove(stage.path)
            raise
