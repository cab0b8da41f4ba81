"""Where a CV run's (fold, predictor) fits run: in this process (``local``) or as Ray tasks (``ray``).

Why engines are interchangeable: each one runs :func:`~drugcell.evaluation.fold_task.run_part` on
the same inputs, with the same number of BLAS threads per fit, and hands every finished
:class:`~drugcell.evaluation.fold_task.Part` to the driver's ``on_part`` as it arrives; the driver
writes it to the staging folder and later records all parts in one fixed order. So the engine and
its worker count change the wall time, never a result file.

``local`` (the default) is the serial loop and needs nothing beyond the base install. ``ray``
(the ``ray`` extra) puts the ExpressionSet into the object store once (its numpy arrays are then
shared zero-copy by the workers of a machine), keeps at most ``workers`` tasks in flight, and runs
against a local Ray it starts on loopback (and shuts down at the end) or an existing cluster
(``address``: ``auto``, ``ray://head:10001``, ...). On Ctrl-C or SIGTERM the driver cancels its
tasks within a second and returns; the finished parts stay written.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from drugcell.errors import DrugcellInputError
from drugcell.evaluation.fold_task import DEFAULT_THREADS, Part, clear_fold_context, run_part

ENGINES = ("local", "ray")
#: seconds the Ray driver waits for a result before it checks for signals again
_POLL_S = 0.25
START_ATTEMPTS = 3
_RAY_MISSING = ("--engine ray needs Ray, which is not installed: `pip install -e '.[ray]'` (or "
                "`pip install \"ray[tune]==2.60.0\"`), or use --engine local")

Task = tuple[int, Any]  # (fold, PredictorSpec)
OnPart = Callable[[Part], None]


class FitProgress:
    """Finished fits (:func:`drugcell.progress.bar`: a tqdm bar on a terminal, plain lines elsewhere)."""

    def __init__(self, total: int, done: int, enabled: bool) -> None:
        from drugcell.progress import bar, note

        if done and enabled:
            note(f"cv: {done} of {total} fits already done (resumed)")
        self.bar = bar(total=total, desc="cv", unit="fit", disable=not enabled)
        if done:
            self.bar.update(done)

    def update(self, part: Part) -> None:
        self.bar.set_postfix_str(f"fold {part.fold} {part.predictor}")
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


class LocalEngine:
    """The fits one after another in this process (each with ``threads`` BLAS threads)."""

    name = "local"

    def __init__(self, threads: int = DEFAULT_THREADS) -> None:
        self.threads = _positive(threads, "--threads")
        self.workers = 1

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "workers": 1, "threads_per_fit": self.threads}

    def run(self, es, config, fold_of: np.ndarray, plate_model, tasks: Sequence[Task], on_part: OnPart) -> None:
        try:
            for fold, spec in tasks:
                on_part(run_part(es, spec, fold, fold_of, config, plate_model, self.threads))
        finally:
            clear_fold_context()


class RayEngine:
    """Each (fold, predictor) a Ray task, at most ``workers`` at a time."""

    name = "ray"

    def __init__(self, workers: int | None = None, address: str | None = None,
                 threads: int = DEFAULT_THREADS, plugins: Sequence[str] = ()) -> None:
        self.threads = _positive(threads, "--threads")
        self.workers = None if workers is None else _positive(workers, "--workers")
        self.address = address or None
        # `--plugin` modules, imported again in each worker (a .py file by its absolute path)
        self.plugins = tuple(str(Path(p).resolve()) if p.endswith(".py") and Path(p).is_file() else p
                             for p in plugins or ())
        _import_ray()  # a clear error before any data is loaded

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "workers": self.workers, "threads_per_fit": self.threads,
                "address": self.address or "local"}

    def run(self, es, config, fold_of: np.ndarray, plate_model, tasks: Sequence[Task], on_part: OnPart) -> None:
        ray = _import_ray()
        started = self._connect(ray)
        pending: dict[Any, Task] = {}
        try:
            if self.workers is None:
                self.workers = max(1, int(ray.cluster_resources().get("CPU", 1)) // self.threads)
            remote = ray.remote(num_cpus=self.threads)(_ray_task)
            shared = [ray.put(x) for x in (es, config, fold_of, plate_model)]  # once, not once per task
            todo = list(tasks)
            while todo or pending:
                while todo and len(pending) < self.workers:
                    fold, spec = todo.pop(0)
                    ref = remote.remote(shared[0], spec, fold, shared[2], shared[1], shared[3], self.threads,
                                        self.plugins)
                    pending[ref] = (fold, spec)
                if not pending:
                    break
                done, _ = ray.wait(list(pending), num_returns=1, timeout=_POLL_S)
                for ref in done:
                    del pending[ref]
                    on_part(ray.get(ref))
        finally:
            for ref in pending:  # an interrupt or a failed task: stop what still runs
                with contextlib.suppress(Exception):  # a task that just finished cannot be cancelled
                    ray.cancel(ref, force=True)
            if started:
                ray.shutdown()

    def _connect(self, ray) -> bool:
        """Start a local Ray on loopback (True: this run shuts it down) or join ``address``."""
        if ray.is_initialized():
            return False
        held = _handlers()
        try:
            if self.address is None:
                start_local_ray(ray, _cpus() if self.workers is None else self.workers * self.threads)
            else:
                ray.init(address=self.address, include_dashboard=False, logging_level=logging.WARNING,
                         log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            if ray.is_initialized():
                ray.shutdown()
            where = f"the Ray cluster at {self.address}" if self.address else "a local Ray"
            raise DrugcellInputError(f"--engine ray: could not start or join {where}: {exc}") from None
        except BaseException:  # Ctrl-C while Ray starts: stop what it started
            ray.shutdown()
            raise
        finally:
            _restore(held)  # ray.init sets its own SIGTERM handler (sys.exit): keep the run's
        return True


def start_local_ray(ray, num_cpus: int, attempts: int = START_ATTEMPTS) -> None:
    """A new local Ray on loopback with ``num_cpus`` CPUs and no dashboard. Ray's raylet gives its
    agent processes a fixed 15 s to start, which a busy machine can miss: then it is tried again."""
    for attempt in range(1, attempts + 1):
        try:
            ray.init(address="local", num_cpus=int(num_cpus), include_dashboard=False, _node_ip_address="127.0.0.1",
                     log_to_driver=False, logging_level=logging.WARNING)
            return
        except Exception as exc:  # Ray raises a bare Exception for a node that timed out during startup
            ray.shutdown()
            if "timed out during startup" not in str(exc) or attempt == attempts:
                raise RuntimeError(f"Ray could not start a local node ({exc})") from exc


def _ray_task(es, spec, fold: int, fold_of: np.ndarray, config, plate_model, threads: int,
              plugins: tuple[str, ...]) -> Part:
    """One part in a Ray worker: the run's plugins first, so their predictor kinds are known there."""
    if plugins:
        from drugcell.models.registry import load_plugins

        load_plugins(list(plugins))
    return run_part(es, spec, fold, fold_of, config, plate_model, threads)


def _handlers() -> dict[int, Any]:
    if threading.current_thread() is not threading.main_thread():
        return {}
    sigs = [s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None), signal.SIGINT) if s]
    return {s: signal.getsignal(s) for s in sigs}


def _restore(held: dict[int, Any]) -> None:
    for s, h in held.items():
        signal.signal(s, signal.SIG_DFL if h is None else h)


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _import_ray():
    try:
        import ray
    except ImportError:
        raise DrugcellInputError(_RAY_MISSING) from None
    return ray


def _positive(value: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise DrugcellInputError(f"{what} must be a whole number >= 1, got {value!r}")
    return int(value)


def make_engine(name: str = "local", *, workers: int | None = None, address: str | None = None,
                threads: int = DEFAULT_THREADS, plugins: Sequence[str] | None = None):
    """The engine ``name`` (:data:`ENGINES`); ``workers``, ``address`` and ``plugins`` (imported in
    each worker) are Ray's."""
    if name == "local":
        if address:
            raise DrugcellInputError("--address joins a Ray cluster: it needs --engine ray")
        if workers not in (None, 1):
            raise DrugcellInputError(f"--workers {workers} needs --engine ray (the local engine runs one fit "
                                     "at a time)")
        return LocalEngine(threads)
    if name == "ray":
        return RayEngine(workers, address, threads, plugins or ())
    raise DrugcellInputError(f"--engine must be one of {', '.join(ENGINES)}, got {name!r}")
