"""Nested CV around the search: one search per outer training fold, scored on the outer fold.

Why: the best of many trials scored on the same compounds is optimistic (the search picked what
happened to fit those compounds). The outer folds are the fold assignment `drugcell cv` uses for
the same split, folds and seed; each outer training fold is searched by inner CV of its own
compounds only, the winner is refitted on the whole outer training fold and scored on the outer
held-out compounds, under the same scoring as `drugcell cv` (held-out Mejia weights from the
ExpressionSet). The mean of those scores is the nested estimate; the mean inner best beside it
shows the search's optimism.

Which parameters ``tuned.toml`` gets: one more search, on every compound, with the same budget.
The nested score estimates exactly that procedure (search, then refit); a vote over the folds'
bests would not, and with continuous parameters the folds rarely agree on a value to vote for.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from drugcell.tuning.outputs import check_tune_dir, params_json, tuned_config, tuned_toml, write_run
from drugcell.tuning.scoring import fold_scores, inner_folds
from drugcell.tuning.search import ray_session, require_ray, run_search
from drugcell.tuning.space import TuneSpec

FINAL_FOLD = -1  # the fold id of the final search (every compound) in trials.parquet


@dataclass
class TuneResult:
    """What a tuning run produced (the same tables are on disk under ``out_dir``)."""

    out_dir: Path
    best: pd.DataFrame                # best_params.parquet
    trials: pd.DataFrame              # trials.parquet
    nested: dict[str, Any]            # nested_score.json
    params: dict[str, Any]            # the tuned predictor's params in tuned.toml
    name: str


def _outer_folds(es, spec: TuneSpec) -> tuple[np.ndarray, Any]:
    """`drugcell cv`'s fold assignment for the spec's split, folds and seed; every fold leak-audited."""
    from drugcell.splits.audit import audit_split
    from drugcell.splits.folds import make_folds

    cfg = spec.run
    smiles = [str(s) for s in es.smiles]
    compounds = [str(c) for c in es.compounds]
    assignment = make_folds(smiles, cfg.split, cfg.folds, cfg.seed)
    fold_of = np.asarray(assignment.folds, dtype=np.int32)
    for k in np.unique(fold_of):
        tr, te = np.flatnonzero(fold_of != k), np.flatnonzero(fold_of == k)
        audit_split([smiles[i] for i in tr], [smiles[i] for i in te], [compounds[i] for i in tr],
                    [compounds[i] for i in te], name=f"fold {k}")
    return fold_of, assignment


def _nested_summary(spec: TuneSpec, best: pd.DataFrame, pooled: float, final: dict[str, Any],
                    notes: list[str]) -> dict[str, Any]:
    outer = best["outer_score"].to_numpy(dtype=np.float64)
    inner = best["inner_score"].to_numpy(dtype=np.float64)
    sd = float(outer.std(ddof=1)) if len(outer) > 1 else float("nan")
    return {
        "metric": spec.metric, "predictor": spec.name, "kind": spec.kind,
        "outer_mean": float(outer.mean()), "outer_sd": sd, "outer_pooled": pooled,
        "outer_per_fold": outer.tolist(),
        "inner_best_mean": float(inner.mean()), "inner_best_per_fold": inner.tolist(),
        "optimism": float(outer.mean() - inner.mean()),
        "folds": int(len(best)), "inner_folds": spec.inner_folds, "trials": spec.trials,
        "final": final, "notes": notes,
        "meaning": ("outer_mean +- outer_sd (sd over folds, ddof 1): the nested estimate of the tuned predictor's "
                    f"{spec.metric} on unseen compounds; inner_best_mean: what the search itself reported; "
                    "optimism = outer_mean - inner_best_mean"),
    }


def run_tune(es, spec: TuneSpec, out_dir: str | Path, *, workers: int = 1, early_stop: bool = True,
             overwrite: bool = False, log: Callable[[str], None] = print,
             plugins: tuple[str, ...] = ()) -> TuneResult:
    """Nested CV of the search ``spec`` on ``es``; writes the run folder (:mod:`.outputs`). ``plugins``
    (`--plugin` modules, already imported here) are imported again in every Ray worker."""
    out = Path(out_dir)
    require_ray()
    check_tune_dir(out, overwrite)
    t0 = time.perf_counter()
    cfg = spec.run
    if cfg.output.weights_file:
        es = es.with_weights_parquet(cfg.output.weights_file)
    fold_of, assignment = _outer_folds(es, spec)
    smiles = [str(s) for s in es.smiles]
    notes = [assignment.warning] if assignment.warning else []
    fold_ids = [int(k) for k in np.unique(fold_of)]
    rows, trial_tables, pooled_sum, pooled_n = [], [], 0.0, 0

    def search(es_ref, rows_idx: np.ndarray, k: int, fold: int, label: str):
        inner = inner_folds([smiles[i] for i in rows_idx], cfg.split, spec.inner_folds, cfg.seed)
        if inner.warning:
            notes.append(f"{label}: {inner.warning}")
        res = run_search(es_ref, spec, rows_idx, np.asarray(inner.folds), trials=spec.trials, seed=cfg.seed + k,
                         workers=workers, early_stop=early_stop, label=label, log=log, plugins=plugins)
        trial_tables.append(res.trials.assign(fold=np.int32(fold)))
        return res

    import ray

    with ray_session(workers):
        es_ref = ray.put(es)  # once per run: every trial of every search reads it from the object store
        for k in fold_ids:
            train_idx, test_idx = np.flatnonzero(fold_of != k), np.flatnonzero(fold_of == k)
            res = search(es_ref, train_idx, k, k, f"fold {k + 1}/{len(fold_ids)}")
            params = spec.params(res.best_params)
            outer = fold_scores(es, spec.kind, params, train_idx, test_idx, spec.metric, cfg.seed)
            pooled_sum, pooled_n = pooled_sum + float(outer.sum()), pooled_n + len(outer)
            log(f"tune fold {k + 1}/{len(fold_ids)}: best {res.best_params} inner {spec.metric} "
                f"{res.best_score:.4f}, outer {float(outer.mean()):.4f} on {len(test_idx):,} held-out compounds")
            rows.append({"fold": np.int32(k), "params": params_json(res.best_params),
                         **{f"param_{p}": v for p, v in res.best_params.items()},
                         "inner_score": res.best_score, "outer_score": float(outer.mean()),
                         "n_train": len(train_idx), "n_test": len(test_idx)})
        final = search(es_ref, np.arange(es.n_compounds), len(fold_ids), FINAL_FOLD, "all compounds")
        del es_ref
    tuned = spec.params(final.best_params)
    best = pd.DataFrame(rows)
    trials = pd.concat(trial_tables, ignore_index=True)
    trials = trials[["fold", *[c for c in trials.columns if c != "fold"]]]
    nested = _nested_summary(spec, best, pooled_sum / pooled_n,
                             {"params": final.best_params, "inner_score": final.best_score}, notes)
    raw = tuned_config(spec, tuned)
    header = [f"Written by `drugcell tune` from {spec.source or 'a search space'}: {spec.name} with the parameters",
              f"of a final search on all {es.n_compounds:,} compounds ({spec.trials} trials, "
              f"{spec.inner_folds} inner folds).",
              f"Nested {spec.metric} (outer folds): {nested['outer_mean']:.4f} +- {nested['outer_sd']:.4f}; "
              f"mean inner best {nested['inner_best_mean']:.4f}.",
              "wmean is the reference every chemistry model must beat. Run: drugcell cv --config tuned.toml ..."]
    write_run(out, best=best, trials=trials, nested=nested, toml_text=tuned_toml(raw, header), overwrite=overwrite,
              manifest={"config": spec.to_dict(), "seed": cfg.seed, "data_fingerprint": es.fingerprint(),
                        "tuned_config": raw, "split": assignment.to_dict(), "workers": workers,
                        "early_stop": early_stop, "n_compounds": es.n_compounds, "n_genes": es.n_genes,
                        "elapsed_s": round(time.perf_counter() - t0, 1)})
    return TuneResult(out_dir=out, best=best, trials=trials, nested=nested, params=tuned, name=spec.name)
