"""Provenance and atomic writes: every result file says how it was made, and none is half-written.

Use :func:`atomic_path` for any file the user will read: write to the temporary path it yields,
and the final name appears only if the block finishes without an exception. Inside it (and inside
:func:`atomic_dir`) SIGTERM and SIGHUP raise :class:`Terminated`, so the temporary file is removed
on every exit path a process can catch (SIGINT already raises KeyboardInterrupt).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from drugcell import __version__
from drugcell.errors import DrugcellInputError
from drugcell.paths import repo_root


class Terminated(BaseException):
    """SIGTERM or SIGHUP arrived while drugcell was writing a file (see :func:`terminate_raises`)."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"terminated by {signal.Signals(signum).name} during a write")
        self.signum = signum


_CATCH = tuple(s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)) if s is not None)
_DEFER = (*_CATCH, signal.SIGINT)
_depth = 0


def _raise_terminated(signum, frame) -> None:
    raise Terminated(signum)


@contextlib.contextmanager
def terminate_raises() -> Iterator[None]:
    """Inside the block SIGTERM and SIGHUP raise :class:`Terminated` (instead of killing the process
    outright), so ``finally`` clauses remove temporary files. Nested use is free; outside the main
    thread (where handlers cannot be set) it does nothing."""
    global _depth
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if _depth:
        _depth += 1
        try:
            yield
        finally:
            _depth -= 1
        return
    old = {s: signal.signal(s, _raise_terminated) for s in _CATCH}
    _depth = 1
    try:
        yield
    finally:
        _depth = 0
        for s, h in old.items():
            signal.signal(s, signal.SIG_DFL if h is None else h)  # None: a handler set outside Python


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGTERM, SIGHUP and SIGINT back during a few renames that must not be cut in half; a
    signal that arrived meanwhile is delivered when the block ends."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "pthread_sigmask"):
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _DEFER)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def current_umask() -> int:
    """The process umask (read from /proc where possible: setting it to read it is not thread-safe)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def _honour_umask(path: Path, *, folder: bool) -> None:
    """mkstemp/mkdtemp create 0600/0700; give the file or folder the mode an ordinary create would
    have (0666 or 0777 less the umask), so results are as readable as the user's other files."""
    os.chmod(path, (0o777 if folder else 0o666) & ~current_umask())


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary sibling path; rename it onto ``path`` only on success. The file gets the
    mode a plain ``open(path, "w")`` would give it (umask honoured)."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    with terminate_raises():
        fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        try:
            yield tmp_path
            if tmp_path.exists():
                _honour_umask(tmp_path, folder=False)
            os.replace(tmp_path, final)
        finally:
            if tmp_path.exists():
                tmp_path.unlink()


_WRITING = ".drugcell-writing"  # inside an atomic_dir temporary folder: the pid of the process filling it


def exchange_paths(a: Path, b: Path) -> bool:
    """Swap two existing paths atomically (Linux ``renameat2(RENAME_EXCHANGE)``); False where the
    platform or file system cannot, so the caller falls back to two renames."""
    import ctypes
    import errno

    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _recover_dir(final: Path) -> None:
    """Undo what a SIGKILLed :func:`atomic_dir` left beside ``final``: an old folder set aside
    between two renames is put back when ``final`` is missing, and temporary folders whose writer
    is gone are removed (only ours: they hold the ``.drugcell-writing`` marker)."""
    old = final.with_name(f".{final.name}.old")
    if old.is_dir() and not final.exists():
        os.replace(old, final)
    for tmp in final.parent.glob(f".{final.name}.*"):
        marker = tmp / _WRITING
        if tmp == old or not tmp.is_dir() or not marker.is_file():
            continue
        try:
            pid = int(marker.read_text().strip())
        except (OSError, ValueError):
            continue
        if not _pid_alive(pid):
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it replaces ``path`` (an old one is swapped out
    atomically where the platform can, and removed), on failure it is deleted and ``path`` is left
    as it was. Leftovers of a SIGKILLed earlier write of ``path`` are recovered first. The folder gets the mode
    a plain ``mkdir`` would give it (umask honoured)."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    _recover_dir(final)
    with terminate_raises():
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
        try:
            (tmp / _WRITING).write_text(str(os.getpid()))
            yield tmp
            (tmp / _WRITING).unlink()
            _honour_umask(tmp, folder=True)
            with signals_deferred():  # never stop between the two renames
                if final.exists() and exchange_paths(tmp, final):
                    pass  # ``tmp`` now holds the old folder, removed below
                elif final.exists():
                    old = final.with_name(f".{final.name}.old")
                    if old.exists():
                        shutil.rmtree(old)
                    os.replace(final, old)
                    os.replace(tmp, final)
                    shutil.rmtree(old)
                else:
                    os.replace(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)


def strict_json(obj: Any, **kwargs: Any) -> str:
    """JSON that strict parsers accept: NaN and inf written as null (numpy values and paths converted)."""
    return json.dumps(_finite(obj), allow_nan=False, default=_json_default, **kwargs)


def _finite(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _finite(obj.tolist())
    if isinstance(obj, (float, np.floating)):
        return float(obj) if np.isfinite(obj) else None
    return obj


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Atomically write strict JSON (NaN/inf as null; numpy scalars and paths converted)."""
    with atomic_path(path) as tmp:
        tmp.write_text(strict_json(obj, indent=2, sort_keys=True) + "\n")


def write_text(path: str | os.PathLike[str], text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    return str(o)  # anything else (a date, an enum) as its text, never a crash half-way through a write


def git_commit() -> str | None:
    """The source checkout's HEAD commit (with ``-dirty`` if the tree has changes), or None when
    drugcell runs from an installed wheel (whose site-packages may sit inside someone's repository)."""
    if not (repo_root() / ".git").exists():
        return None
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo_root(), capture_output=True, text=True, timeout=5
        )
        if head.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=repo_root(), capture_output=True, text=True, timeout=5,
        )
        return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Full sha256 hex digest of one file, read in chunks (checksums in model.json, score reports)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_json_object(path: str | os.PathLike[str], *, what: str, fix: str) -> dict[str, Any]:
    """A JSON file that must hold an object; unreadable JSON or another type is a clear error
    naming the file, ``what`` it should be and how to ``fix`` it."""
    path = Path(path)
    try:
        obj = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DrugcellInputError(f"{path}: not valid JSON, so not a readable {what} ({exc}); {fix}") from None
    if not isinstance(obj, dict):
        raise DrugcellInputError(f"{path}: not a {what} (a JSON {type(obj).__name__}, not an object); {fix}")
    return obj


def fingerprint_files(paths: list[str | os.PathLike[str]], chunk: int = 1 << 20) -> str:
    """sha256 over file names, sizes and contents (for inputs up to a few GB this is seconds)."""
    h = hashlib.sha256()
    for p in sorted(Path(x) for x in paths):
        h.update(p.name.encode())
        h.update(str(p.stat().st_size).encode())
        with open(p, "rb") as f:
            while block := f.read(chunk):
                h.update(block)
    return h.hexdigest()[:16]


def fingerprint_arrays(*arrays: np.ndarray, rows: int = 256, release: Any = None) -> str:
    """sha256 over array dtypes, shapes and C-order bytes; a short hex digest.

    Numeric arrays are hashed in row chunks, so a 730 MB Fortran-order matrix is never copied
    whole; ``release`` (optional) is called every 16 chunks, e.g. to hand back pages of a file
    mapping. The digest equals hashing ``a.tobytes()`` in one piece.
    """
    h = hashlib.sha256()
    for a in arrays:
        a = np.asarray(a)
        h.update(str(a.dtype).encode())
        h.update(str(a.shape).encode())
        if a.dtype.kind in "OUS":
            h.update("\x1f".join(map(str, a.ravel().tolist())).encode())
        elif a.ndim == 0 or a.size == 0:
            h.update(np.ascontiguousarray(a).tobytes())
        else:
            for i, start in enumerate(range(0, a.shape[0], rows)):
                h.update(memoryview(np.ascontiguousarray(a[start:start + rows])).cast("B"))
                if release is not None and i % 16 == 15:
                    release()
    return h.hexdigest()[:16]


def provenance(
    *, config: dict[str, Any] | None = None, seed: int | None = None,
    data_fingerprint: str | None = None, command: str | None = None, **extra: Any,
) -> dict[str, Any]:
    """The block every result manifest carries."""
    return {
        "drugcell_version": __version__,
        "git_commit": git_commit(),
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "command": command,
        "config": config,
        "seed": seed,
        "data_fingerprint": data_fingerprint,
        **extra,
    }
