"""Outputs a user may already have: refused unless ``--overwrite``, and multi-file sets written as a unit.

Why its own module (issue #10): drugcell never replaces what a user had without ``--overwrite``,
never writes into a folder it did not make, says so before the work starts, and a submission with
its std sidecar and manifest appears together or not at all.

A :class:`FileSet` is a few files side by side that belong together (``predictions.parquet``,
``predictions.std.parquet``, ``predictions.parquet.manifest.json``). Three renames cannot be one
atomic step, so :meth:`FileSet.write` stages the new set in a hidden folder beside them
(``.<key>.drugcell-staging/``) and commits it in three steps:

1. the journal ``.<key>.drugcell-commit.json`` is renamed into place (one atomic rename, the
   commit point); it lists the staged files (with their sha256) and the old members to remove;
2. old members the new set lacks are removed, the staged files renamed over the final names;
3. the staging folder is removed, then the journal.

A kill before step 1 leaves the old set untouched; the next write (or :meth:`FileSet.recover`)
drops the staging folder. A kill after it is finished by the next write or read of the set, since
every part of steps 2 and 3 can be repeated. So once recovered, the folder holds the complete old
set or the complete new one, and no journal means no recovery is needed. Renames are held back
from SIGTERM/SIGINT (:func:`~drugcell.provenance.signals_deferred`), staging is removed on any
exception or caught signal, and stale temporary files of the set's own names are cleaned. Writers
of one folder hold an ``flock`` on it, so no drugcell process recovers another's live write.

Test hook: with ``DRUGCELL_KILL_AT=<point>`` set, the process SIGKILLs itself at that point of a
set write (``<point>@TERM`` / ``@INT``: SIGTERM / SIGINT instead): ``stage:<name>`` (before that
member is staged), ``staged``, ``journal``, ``remove:<name>`` / ``install:<name>`` (after that
step), ``staging-removed``, ``done``. Unset, it costs one dictionary lookup per point.
"""

from __future__ import annotations

import contextlib
import fnmatch
import glob
import json
import os
import re
import shutil
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drugcell.errors import DrugcellInputError
from drugcell.provenance import sha256_file, signals_deferred, terminate_raises

KILL_ENV = "DRUGCELL_KILL_AT"
JOURNAL_FORMAT = "drugcell.fileset-commit"
#: provenance.atomic_path's temporary names: ``.<final name>.<8 mkstemp characters>.tmp``
_ATOMIC_TMP = re.compile(r"^\.(?P<inner>.+)\.[a-z0-9_]{8}\.tmp$")


def kill_point(name: str) -> None:
    """The fault tests' hook: signal this process here when ``$DRUGCELL_KILL_AT`` names the point
    (``<point>`` sends SIGKILL, ``<point>@TERM`` SIGTERM, ``<point>@INT`` SIGINT)."""
    want = os.environ.get(KILL_ENV)
    if want is not None and want.split("@")[0] == name:
        sig = want.partition("@")[2] or "KILL"
        os.kill(os.getpid(), getattr(signal, f"SIG{sig}"))


# ----------------------------------------------------------------------------- overwrite rules
def check_out_location(path: str | os.PathLike[str], what: str = "--out") -> None:
    """Refuse, before any work, an output path that cannot be written the way drugcell writes: a
    symbolic link (the output is built beside ``path`` and renamed into place, which would replace
    the link, not write into its target), a path below a file, or below a folder this process may
    not write into (permission, read-only file system).

    The nearest existing folder above ``path`` is where the output (or its temporary sibling) is
    created, so it is the one checked; ``path`` itself, when it exists, is checked by the caller's
    own rules (an earlier cache, a run folder, ...)."""
    p = Path(path)
    if p.is_symlink():
        raise DrugcellInputError(f"{what} {path} is a symbolic link (to {os.readlink(p)}); drugcell writes beside it "
                                 "and renames into place, which would replace the link: pass the real path "
                                 f"({p.resolve()}) or remove the link")
    anc = p.absolute().parent
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if not anc.is_dir():
        raise DrugcellInputError(f"{what} {path}: {anc} is a file, so no folder can be made below it; choose "
                                 f"another {what}")
    if not os.access(anc, os.W_OK | os.X_OK):
        raise DrugcellInputError(f"{what} {path}: cannot write into {anc} (permission denied or a read-only file "
                                 f"system); choose another {what}")


def check_file_output(path: str | os.PathLike[str], overwrite: bool, what: str = "--out") -> Path:
    """A file output: refuse a folder there, and an existing file without ``overwrite``."""
    check_out_location(path, what)
    path = Path(path)
    if path.is_dir():
        raise DrugcellInputError(f"{what} {path} is a folder; pass a file name")
    if path.exists() and not overwrite:
        raise DrugcellInputError(f"{what} {path} already exists; pass --overwrite to replace it, or choose another name")
    return path


def check_folder_output(path: str | os.PathLike[str], overwrite: bool, *, what: str, kind: str,
                        is_ours: Callable[[Path], bool]) -> bool:
    """A folder output: new or empty is fine; an earlier ``kind`` (``is_ours``) is replaced only with
    ``overwrite`` (returns True then); a file or any other non-empty folder never is."""
    check_out_location(path, what)
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise DrugcellInputError(f"{what} {path} is a file; choose a folder for the {kind}")
    if not path.exists() or not any(path.iterdir()):
        return False
    if not is_ours(path):
        raise DrugcellInputError(f"{what} {path} is not empty and is not a {kind} written by drugcell; drugcell never "
                                 "writes into it or replaces it (even with --overwrite): choose another folder")
    if not overwrite:
        raise DrugcellInputError(f"{what} {path} already holds a {kind}; pass --overwrite to replace it")
    return True


def manifest_command(path: Path) -> str | None:
    """The ``command`` a drugcell manifest records, or None when ``path`` is not a readable one."""
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return obj.get("command") if isinstance(obj, dict) else None


# ----------------------------------------------------------------------------- file sets
@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """An exclusive flock on ``folder`` (released when the descriptor closes, also on SIGKILL)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


class Stage:
    """Where the new set's members are written during :meth:`FileSet.write`."""

    def __init__(self, fileset: FileSet) -> None:
        self._set = fileset
        self._seen: set[str] = set()

    def path(self, name: str) -> Path:
        """The staging path of member ``name`` (a member the block never asks for is not in the new set)."""
        if not self._set.is_member(name):
            raise ValueError(f"{name!r} is not a member of the file set {self._set.members}")
        if name not in self._seen:
            self._seen.add(name)
            kill_point(f"stage:{name}")
        p = self._set.staging / name
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def files(self) -> list[str]:
        """The staged members, in the set's install order."""
        root = self._set.staging
        names = [p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()]
        return sorted(names, key=lambda n: (self._set.rank(n), n))


@dataclass(frozen=True)
class FileSet:
    """Files in ``folder`` matching ``members`` (names or glob patterns, in install order: the
    manifest last) that are replaced as one unit; ``key`` names the staging folder and journal."""

    folder: Path
    key: str
    members: tuple[str, ...]

    @classmethod
    def beside(cls, anchor: str | os.PathLike[str], *names: str) -> FileSet:
        """The set of the files ``names`` (plain names, no patterns) in ``anchor``'s folder, keyed by ``anchor``."""
        anchor = Path(anchor)
        return cls(anchor.parent, anchor.name, tuple(glob.escape(n) for n in names))

    @property
    def staging(self) -> Path:
        return self.folder / f".{self.key}.drugcell-staging"

    @property
    def journal(self) -> Path:
        return self.folder / f".{self.key}.drugcell-commit.json"

    @property
    def _journal_tmp(self) -> Path:
        return self.folder / f".{self.key}.drugcell-commit.json.tmp"

    def rank(self, name: str) -> int:
        return next(i for i, p in enumerate(self.members) if fnmatch.fnmatchcase(name, p))

    def is_member(self, name: str) -> bool:
        parts = Path(name).parts
        return (bool(parts) and not Path(name).is_absolute() and ".." not in parts
                and any(fnmatch.fnmatchcase(name, p) for p in self.members))

    def existing(self) -> list[str]:
        """Members present now (files or not), relative to ``folder``."""
        if not self.folder.is_dir():
            return []
        found: dict[str, None] = {}
        for pattern in self.members:
            for p in sorted(self.folder.glob(pattern)):
                found[p.relative_to(self.folder).as_posix()] = None
        return list(found)

    def check(self, overwrite: bool, what: str = "--out") -> list[str]:
        """Refuse a member that is a folder, and any existing member without ``overwrite``."""
        have = self.existing()
        folders = [n for n in have if (self.folder / n).is_dir()]
        if folders:
            raise DrugcellInputError(f"{self.folder / folders[0]} is a folder where drugcell writes a file; "
                                     "move it away or choose another name")
        if have and not overwrite:
            raise DrugcellInputError(
                f"{what}: {', '.join(have)} already exist(s) in {self.folder}; pass --overwrite to replace the set "
                "(files of the old set that the new one lacks are removed too), or choose another name")
        return have

    # ------------------------------------------------------------------------- recovery
    def recover(self) -> str | None:
        """Finish (journal present) or undo (staging only) an interrupted write and remove stale
        temporary files of the set; a note of what was done, or None."""
        if not self.folder.is_dir():
            return None
        with terminate_raises(), _locked(self.folder), signals_deferred():
            return self._recover()

    def _recover(self) -> str | None:
        notes = []
        if self.journal.exists():
            plan = self._read_journal()
            self._roll_forward(plan)
            notes.append(f"finished an interrupted write of {', '.join(e['name'] for e in plan['install'])}")
        elif self.staging.exists():
            shutil.rmtree(self.staging)
            notes.append(f"removed {self.staging.name}, left by an interrupted write (the set before it is intact)")
        stale = self._stale_temps()
        for p in stale:
            p.unlink(missing_ok=True)
        if stale:
            notes.append(f"removed {len(stale)} stale temporary file(s) ({', '.join(p.name for p in stale[:3])})")
        return f"{self.folder}: " + "; ".join(notes) if notes else None

    def _stale_temps(self) -> list[Path]:
        found = [self._journal_tmp] if self._journal_tmp.exists() else []
        for pattern in self.members:
            sub, base = self.folder / Path(pattern).parent, Path(pattern).name
            if not sub.is_dir():
                continue
            for p in sorted(sub.iterdir()):
                m = _ATOMIC_TMP.match(p.name)
                if m and p.is_file() and fnmatch.fnmatchcase(m["inner"], base) and p not in found:
                    found.append(p)
        return found

    def _read_journal(self) -> dict[str, Any]:
        fix = (f"it marks an interrupted write in {self.folder}: check the files of {self.key}, then delete "
               f"{self.journal.name} and {self.staging.name} and run the command again")
        try:
            plan = json.loads(self.journal.read_text())
            names = [e["name"] for e in plan["install"]] + list(plan["remove"])
            ok = plan.get("format") == JOURNAL_FORMAT and all(isinstance(n, str) and self.is_member(n) for n in names)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DrugcellInputError(f"{self.journal}: not a readable commit journal ({exc}); {fix}") from None
        if not ok:
            raise DrugcellInputError(f"{self.journal}: not a commit journal of this file set; {fix}")
        return plan

    def _roll_forward(self, plan: dict[str, Any]) -> None:
        """Steps 2 and 3; each can be repeated, so a kill anywhere is finished by running it again."""
        for name in plan["remove"]:
            (self.folder / name).unlink(missing_ok=True)
            kill_point(f"remove:{name}")
        for entry in plan["install"]:
            src, dst = self.staging / entry["name"], self.folder / entry["name"]
            if src.exists():
                dst.parent.mkdir(parents=True, exist_ok=True)
                os.replace(src, dst)
            elif not dst.is_file() or sha256_file(dst) != entry["sha256"]:
                raise DrugcellInputError(
                    f"{self.journal}: cannot finish the interrupted write: the staged {entry['name']} is gone and "
                    f"{dst} is not it; delete {self.journal.name} and {self.staging.name}, then run the command again")
            kill_point(f"install:{entry['name']}")
        shutil.rmtree(self.staging, ignore_errors=True)
        kill_point("staging-removed")
        self.journal.unlink()  # last: until here the journal says the write is unfinished

    # ------------------------------------------------------------------------- writing
    @contextlib.contextmanager
    def write(self) -> Iterator[Stage]:
        """Yield a :class:`Stage`; the members written through it replace the set when the block
        ends without an exception (members it did not write are removed). On an exception, SIGINT,
        SIGTERM or SIGHUP the staging folder is removed and the old set stays as it was."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with terminate_raises(), _locked(self.folder):
            with signals_deferred():
                self._recover()
            self.staging.mkdir()
            try:
                stage = Stage(self)
                yield stage
                kill_point("staged")
                self._commit(stage)
                kill_point("done")
            finally:
                self._journal_tmp.unlink(missing_ok=True)
                if not self.journal.exists() and self.staging.exists():  # a committed write is finished by recovery
                    shutil.rmtree(self.staging, ignore_errors=True)

    def _commit(self, stage: Stage) -> None:
        staged = stage.files()
        for n in staged:
            if not self.is_member(n):
                raise ValueError(f"{n!r} was staged but is not a member of the file set {self.members}")
        plan = {
            "format": JOURNAL_FORMAT, "version": 1,
            "install": [{"name": n, "sha256": sha256_file(self.staging / n)} for n in staged],
            "remove": [n for n in self.existing() if n not in staged],
        }
        self._journal_tmp.write_text(json.dumps(plan, indent=1) + "\n")
        with signals_deferred():
            os.replace(self._journal_tmp, self.journal)
            kill_point("journal")
            self._roll_forward(plan)


# ----------------------------------------------------------------------------- a submission's set
def std_path(out: str | os.PathLike[str]) -> Path:
    """The std sidecar beside a submission: ``<stem>.std.parquet``."""
    out = Path(out)
    return out.with_name(out.stem + ".std.parquet")


def manifest_path(out: str | os.PathLike[str]) -> Path:
    """The manifest beside a submission: ``<name>.manifest.json``."""
    out = Path(out)
    return out.with_name(out.name + ".manifest.json")


def submission_files(out: str | os.PathLike[str]) -> FileSet:
    """A submission's file set (``drugcell submit`` writes it, ``drugcell score`` reads it), in
    install order: std sidecar, submission, manifest."""
    out = Path(out)
    return FileSet.beside(out, std_path(out).name, out.name, manifest_path(out).name)
