"""One search: Ray Tune trials proposed by Optuna, each scored by inner scaffold CV, ASHA-stopped.

Why these libraries: Ray Tune runs trials in parallel on a local Ray (or on a cluster) and
Optuna's TPE proposes them from the results so far, as chemprop's hyperparameter search does.

**Early stopping: ASHA over inner folds.** A trial is fitted and scored on inner fold 1, 2, ...
and reports the running mean after each (training iteration = inner folds done); ASHA stops a
trial at a rung (1, 2, 4, ... folds) when it is outside the best half of the trials that reached
that rung. Every trial of a search uses the same inner folds, so the comparison at a rung is paired
(same compounds), which is what makes a partial mean a fair early verdict. Optuna's MedianPruner
would need Optuna to drive the trials; through Ray the pruning is the scheduler's job, and ASHA is
its asynchronous form, so a worker never waits for a rung to fill. Only trials that completed
every inner fold can be the best. A stopped trial's partial mean is still what Optuna learns from.

**Repeatability.** Optuna's sampler is seeded per search, and every fit uses the run's seed, so
with ``--workers 1`` a search is repeatable. With more workers, TPE (after its first 10 random
proposals) and ASHA see results in the order they finish, so the trials can differ between runs.

Ray and Optuna are optional (``pip install -e .[ray]``) and are imported only in this module.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from drugcell.errors import DrugcellInputError
from drugcell.tuning.space import Dim, TuneSpec

RAY_HINT = "drugcell tune needs Ray Tune and Optuna (the optional `ray` extra): pip install -e .[ray]"
SCORE = "score"
DONE = "inner_folds_done"
START_ATTEMPTS = 3  # Ray's raylet gives its agents a fixed 15 s to start: a busy machine can miss that


def require_ray() -> None:
    """Refuse early, with the install line, when Ray Tune or Optuna is missing."""
    try:
        import optuna  # noqa: F401
        import ray.tune  # noqa: F401
        from ray.tune.search.optuna import OptunaSearch  # noqa: F401
    except ImportError as exc:
        raise DrugcellInputError(f"{RAY_HINT} ({exc})") from None


@contextlib.contextmanager
def ray_session(workers: int) -> Iterator[None]:
    """A local Ray on loopback with ``workers`` CPUs and no dashboard, shut down at the end; an
    already running session (a test's, a cluster the caller joined) is used and left running."""
    require_ray()
    import ray

    if ray.is_initialized():
        yield
        return
    for attempt in range(1, START_ATTEMPTS + 1):
        try:
            ray.init(address="local", num_cpus=workers, include_dashboard=False, _node_ip_address="127.0.0.1",
                     log_to_driver=False, logging_level=logging.WARNING)
            break
        except Exception as exc:  # Ray raises a bare Exception for a node that timed out during startup
            ray.shutdown()
            if "timed out during startup" not in str(exc):
                raise
            if attempt == START_ATTEMPTS:
                raise RuntimeError(
                    f"Ray could not start a local node in {START_ATTEMPTS} attempts: its raylet waits a fixed 15 s for "
                    "its agent processes, which a machine busy with other work can miss; retry when it is less "
                    "busy") from exc
    try:
        yield
    finally:
        ray.shutdown()


@dataclass(frozen=True)
class TrialContext:
    """What every trial of one search needs besides the ExpressionSet (sent to the workers)."""

    kind: str
    fixed: dict[str, Any]
    dims: tuple[Dim, ...]
    rows: np.ndarray          # the search's compounds (row indices into the ExpressionSet)
    inner: np.ndarray         # inner fold id of each of ``rows``
    metric: str
    seed: int
    plugins: tuple[str, ...] = ()  # `--plugin` modules, imported again in each Ray worker

    def params(self, sampled: dict[str, Any]) -> dict[str, Any]:
        dims = {d.param: d for d in self.dims}
        return {**self.fixed, **{k: dims[k].coerce(v) for k, v in sampled.items()}}


def _trial(config: dict[str, Any], es=None, ctx: TrialContext | None = None) -> None:
    """A Ray Tune function trainable: inner folds in order, the running mean reported after each."""
    from ray import tune

    from drugcell.tuning.scoring import fold_scores

    if ctx.plugins:
        from drugcell.models.registry import load_plugins

        load_plugins(list(ctx.plugins))
    params = ctx.params(config)
    total, count = 0.0, 0
    for j in range(int(ctx.inner.max()) + 1):
        held = ctx.inner == j
        s = fold_scores(es, ctx.kind, params, ctx.rows[~held], ctx.rows[held], ctx.metric, ctx.seed)
        total, count = total + float(s.sum()), count + len(s)
        tune.report({SCORE: total / count, DONE: j + 1})


def ray_space(dims: tuple[Dim, ...]) -> dict[str, Any]:
    """The Ray Tune search space of ``dims`` (int ends inclusive; Ray's upper bound is exclusive)."""
    from ray import tune

    out: dict[str, Any] = {}
    for d in dims:
        if d.type == "choice":
            out[d.param] = tune.choice(list(d.choices))
        elif d.type == "int":
            out[d.param] = (tune.lograndint if d.log else tune.randint)(int(d.low), int(d.high) + 1)
        else:
            out[d.param] = (tune.loguniform if d.log else tune.uniform)(float(d.low), float(d.high))
    return out


@dataclass
class SearchResult:
    """One search's trials (in the order they started) and its best complete trial."""

    trials: pd.DataFrame              # trial, trial_id, status, inner_folds_done, inner_score, seconds, param_<p>
    best_params: dict[str, Any]       # the searched values only
    best_score: float


def _callback(dims: tuple[Dim, ...], n_inner: int, metric: str, label: str, n_trials: int,
              log: Callable[[str], None]):
    """A Tune callback that numbers trials as they start and logs one line per finished trial."""
    from ray import tune

    class _Progress(tune.Callback):
        def __init__(self) -> None:
            self.order: dict[str, int] = {}
            self.rows: list[dict[str, Any]] = []
            self.best = np.inf

        def on_trial_start(self, iteration, trials, trial, **info):
            self.order.setdefault(trial.trial_id, len(self.order))

        def on_trial_complete(self, iteration, trials, trial, **info):
            res = trial.last_result or {}
            done, value = int(res.get(DONE, 0)), float(res.get(SCORE, np.nan))
            sampled = {d.param: d.coerce(trial.config[d.param]) for d in dims}
            columns = {f"param_{k}": v for k, v in sampled.items()}
            status = "complete" if done == n_inner else "stopped early"
            if done == n_inner:
                self.best = min(self.best, value)
            self.rows.append({"trial": self.order.get(trial.trial_id, len(self.order)), "trial_id": trial.trial_id,
                              "status": status, DONE: done, "inner_score": value,
                              "seconds": float(res.get("time_total_s", np.nan)), **columns})
            shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in sampled.items())
            tail = (f"{done}/{n_inner} inner folds" if done == n_inner else
                    f"after {done}/{n_inner} inner folds; stopped early (ASHA: behind the others on the same folds)")
            log(f"tune {label}: trial {len(self.rows)}/{n_trials} {shown} -> {metric} {value:.4f} ({tail}); "
                f"best {self.best:.4f}")

    return _Progress()


def _raise_trial_errors(results) -> None:
    errors = list(results.errors)
    if not errors:
        return
    err = errors[0]
    cause = getattr(err, "cause", None) or err
    if isinstance(cause, DrugcellInputError):
        raise DrugcellInputError(f"a tuning trial failed: {cause}")
    raise RuntimeError(f"a tuning trial failed: {cause!r}") from cause


def run_search(es_ref, spec: TuneSpec, rows: np.ndarray, inner: np.ndarray, *, trials: int, seed: int,
               workers: int, early_stop: bool = True, label: str = "", log: Callable[[str], None] = print,
               plugins: tuple[str, ...] = ()) -> SearchResult:
    """Search ``spec``'s space on the compounds ``rows`` (inner fold ids ``inner``); the
    ExpressionSet is ``es_ref``, already in Ray's object store (put once per run)."""
    import optuna
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search.optuna import OptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # the trials' results come from the callback: Tune's per-trial result files are not written (the next
    # line), and its warning that it cannot read them back is noise
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # no CSV/JSON/TensorBoard files per trial
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # Tune's own console tables off (verbose=0 applies)
    os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")  # Ctrl-C stops the run, not just this search
    n_inner = int(inner.max()) + 1
    ctx = TrialContext(kind=spec.kind, fixed=dict(spec.fixed), dims=spec.dims, rows=np.asarray(rows),
                       inner=np.asarray(inner), metric=spec.metric, seed=spec.run.seed,
                       plugins=tuple(plugins))
    scheduler = (ASHAScheduler(time_attr="training_iteration", max_t=n_inner, grace_period=1, reduction_factor=2)
                 if early_stop else FIFOScheduler())
    progress = _callback(spec.dims, n_inner, spec.metric, label, trials, log)
    storage = tempfile.mkdtemp(prefix="drugcell-tune-")
    try:
        tuner = tune.Tuner(
            tune.with_parameters(_trial, es=es_ref, ctx=ctx),
            param_space=ray_space(spec.dims),
            tune_config=tune.TuneConfig(metric=SCORE, mode="min", search_alg=OptunaSearch(seed=seed),
                                        scheduler=scheduler, num_samples=trials, max_concurrent_trials=workers,
                                        reuse_actors=True),
            run_config=tune.RunConfig(storage_path=storage, verbose=0, callbacks=[progress],
                                      failure_config=tune.FailureConfig(max_failures=0, fail_fast=True)),
        )
        results = tuner.fit()
        _raise_trial_errors(results)
    finally:
        shutil.rmtree(storage, ignore_errors=True)
    table = pd.DataFrame(progress.rows).sort_values("trial", kind="stable").reset_index(drop=True)
    table["trial"] = np.arange(len(table), dtype=np.int32)
    complete = table[table[DONE] == n_inner]
    if complete.empty:
        raise RuntimeError(f"tune {label}: no trial completed all {n_inner} inner folds")
    best = complete.loc[complete["inner_score"].idxmin()]
    return SearchResult(trials=table, best_params={d.param: d.coerce(best[f"param_{d.param}"]) for d in spec.dims},
                        best_score=float(best["inner_score"]))
