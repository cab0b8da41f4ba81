"""Benchmark `run_cv`: where a CV run spends its time, per stage and per predictor.

Data: a cache (``--data CACHE``, e.g. the full-scale simulated VCPI cache) or a simulated
ExpressionSet built in memory (``--compounds/--genes``). Why in memory: the full contest scale
through `drugcell synth` + `drugcell load` costs far more than the CV itself; the runner only
needs an ExpressionSet. Molecules come from the simulator's library (`enumerate_molecules`: real
scaffold families, so scaffold folds are realistic); the truth is a per-gene baseline + a
per-scaffold-family effect + a low-rank effect of Morgan bits + noise, and the Mejia-like weights
are random columns summing to 1 (timing does not depend on their values).

    python benchmarks/bench_cv.py --compounds 600 --genes 2000 --config configs/demo.toml
    python benchmarks/bench_cv.py --data /work/bench/lb_full_s0/cache --config configs/default.toml

Prints markdown tables: wall and CPU time and peak RSS of loading and of the run, the run's
stages (``manifest.json``'s ``stages_s``), fit and predict seconds per predictor summed over folds
(``diagnostics.parquet``), what the shared work saved (one similarity matrix per fold for every
kNN variant, training-set statistics and blend refits taken from the runner's fits), and the load
average before and after, since timings on a shared machine mean little without it.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # KB on Linux


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def load_average() -> str:
    return " / ".join(f"{v:.2f}" for v in os.getloadavg())


def simulated_es(n_compounds: int, n_genes: int, seed: int = 0, exclude: set[str] | None = None):
    """An ExpressionSet with structure-linked truth (see module docstring)."""
    from drugcell.chem.fingerprints import morgan_bits
    from drugcell.data.expression_set import ExpressionSet
    from drugcell.data.molecules_library import enumerate_molecules

    rng = np.random.default_rng(seed)
    mols = enumerate_molecules(n_compounds, rng, exclude=exclude)
    smiles = [m.smiles for m in mols]
    fam = np.array([m.scaffold_index for m in mols])
    base = rng.gamma(2.0, 1.5, n_genes).astype(np.float32)
    fam_eff = rng.normal(0, 0.3, (fam.max() + 1, n_genes)).astype(np.float32)
    bits = np.asarray(morgan_bits(smiles), dtype=np.float32)[:, :256]
    load = rng.normal(0, 0.05, (256, 8)).astype(np.float32)
    prog = rng.normal(0, 1.0, (8, n_genes)).astype(np.float32)
    expr = base + fam_eff[fam] + (bits @ load) @ prog
    expr += rng.normal(0, 0.3, expr.shape).astype(np.float32)
    np.maximum(expr, 0, out=expr)
    w = rng.random((n_genes, n_compounds), dtype=np.float32) ** 4
    w /= w.sum(axis=0, keepdims=True)
    return ExpressionSet(
        compounds=[str(1_000_000 + i) for i in range(n_compounds)],
        genes=[f"ENSG{i:011d}" for i in range(n_genes)], expression=expr.astype(np.float32), weights=w,
        n_replicates=np.full(n_compounds, 2), control=base, smiles=smiles, inchikey=[""] * n_compounds,
        info={"source": f"benchmarks/bench_cv.py simulated_es({n_compounds}, {n_genes}, seed={seed})"},
    )


def per_predictor_table(diagnostics) -> list[str]:
    """Markdown rows: fit and predict seconds per predictor, summed over folds, slowest first."""
    d = diagnostics[diagnostics.counter.isin(["fit_s", "predict_s"])]
    table = d.pivot_table(index="predictor", columns="counter", values="value", aggfunc="sum").fillna(0.0)
    table["total"] = table.sum(axis=1)
    folds = diagnostics.groupby("predictor")["fold"].nunique()
    lines = ["| predictor | fit s | predict s | total s | per fold s |", "|---|---:|---:|---:|---:|"]
    for name, row in table.sort_values("total", ascending=False).iterrows():
        lines.append(f"| {name} | {row.get('fit_s', 0):.1f} | {row.get('predict_s', 0):.1f} | {row['total']:.1f} | "
                     f"{row['total'] / max(int(folds[name]), 1):.1f} |")
    lines.append(f"| **all predictors** | {table.get('fit_s', table['total'] * 0).sum():.1f} | "
                 f"{table.get('predict_s', table['total'] * 0).sum():.1f} | {table['total'].sum():.1f} | |")
    return lines


def compare_runs(a: Path, b: Path) -> list[str]:
    """Markdown lines: whether two run folders hold the same results (timings aside): scores,
    diagnostics counters other than fit_s/predict_s, the choice, the leaderboard estimate, the audit."""
    import json

    import pandas as pd

    lines = [f"\n| compared with {a} | result |", "|---|---|"]
    sa, sb = (pd.read_parquet(r / "scores.parquet") for r in (a, b))
    key = ["predictor", "fold", "compound", "metric"]
    merged = sa.merge(sb, on=key, how="outer", suffixes=("_a", "_b"), indicator=True)
    both = merged[merged["_merge"] == "both"]
    diff = (both["wmse_a"] - both["wmse_b"]).abs()
    lines.append(f"| scores.parquet rows | {len(sa):,} vs {len(sb):,}; {int((merged['_merge'] != 'both').sum())} unmatched |")
    lines.append(f"| wMSE identical | {int((diff == 0).sum()):,} of {len(both):,}; max abs difference {diff.max():.3g} |")
    if (diff > 0).any():
        worst = both.assign(d=diff).groupby("predictor")["d"].max().sort_values(ascending=False)
        lines.append("| differing predictors (max abs) | " + ", ".join(f"{k} {v:.2g}" for k, v in worst.items() if v > 0) + " |")
    da, db = (pd.read_parquet(r / "diagnostics.parquet") for r in (a, b))
    da, db = (d[~d.counter.isin(["fit_s", "predict_s"])] for d in (da, db))
    dm = da.merge(db, on=["predictor", "fold", "counter"], how="outer", suffixes=("_a", "_b"))
    same = (dm.value_a == dm.value_b) | (dm.value_a.isna() & dm.value_b.isna())
    lines.append(f"| diagnostics counters identical | {int(same.sum()):,} of {len(dm):,} |")
    if not same.all():
        lines.append("| differing counters | " + ", ".join(sorted(set(dm[~same].counter.astype(str))))[:300] + " |")
    for name in ("choice.json", "audit.json"):
        ja, jb = (json.loads((r / name).read_text()) for r in (a, b))
        lines.append(f"| {name} identical | {ja == jb} |")
    ea, eb = (pd.read_parquet(r / "leaderboard_estimate.parquet") for r in (a, b))
    lines.append(f"| leaderboard_estimate.parquet identical | {ea.equals(eb)} |")
    return lines


def shared_lines() -> list[str]:
    """Markdown rows: what the shared work saved (counters of the memos; zeros before they existed)."""
    try:
        from drugcell.chem import search_cache
        from drugcell.models import train_memo
    except ImportError:
        return []
    search, memo = search_cache.stats(), train_memo.stats()
    return ["\n| shared work | count |", "|---|---:|",
            f"| similarity matrices computed / served from the memo / streamed | {search['computed']} / "
            f"{search['served']} / {search['streamed']} |",
            f"| training-set statistics computed / served | {memo['computed']} / {memo['served']} |",
            f"| blend refits taken from the runner's fits | {memo['fits_served']} |"]


def one_fold(es, cfg, fold: int) -> list[str]:
    """Markdown rows: one fold of the panel as the runner fits it (the same training set object for
    every predictor, predictions by SMILES), wall and CPU seconds (all threads) per fit and predict.
    A fifth of a full run's fitting work, with CPU time beside the wall time on a shared machine."""
    from drugcell.splits.folds import make_folds

    smiles = np.asarray(es.smiles).astype(str)
    fold_of = np.asarray(make_folds(list(smiles), cfg.split, cfg.folds, cfg.seed).folds)
    test_smiles = list(smiles[fold_of == fold])
    train = es.subset(np.flatnonzero(fold_of != fold))
    lines = [f"fold {fold}: {train.n_compounds:,} training / {len(test_smiles):,} held-out compounds\n",
             "| predictor | fit wall s | fit CPU s | predict wall s | predict CPU s |", "|---|---:|---:|---:|---:|"]
    total = np.zeros(4)
    for spec in cfg.predictors:
        t0, c0 = time.perf_counter(), cpu_s()
        model = spec.build(metric=cfg.metrics[0]).fit(train, seed=cfg.seed)
        t1, c1 = time.perf_counter(), cpu_s()
        model.predict(test_smiles)
        row = np.array([t1 - t0, c1 - c0, time.perf_counter() - t1, cpu_s() - c1])
        total += row
        lines.append(f"| {spec.name} | " + " | ".join(f"{v:.1f}" for v in row) + " |")
        del model
    lines.append("| **all** | " + " | ".join(f"{v:.1f}" for v in total) + " |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=None, help="an ExpressionSet cache (default: simulate in memory)")
    ap.add_argument("--compounds", type=int, default=600)
    ap.add_argument("--genes", type=int, default=2000)
    ap.add_argument("--config", default=str(ROOT / "configs" / "default.toml"))
    ap.add_argument("--predictors", default=None, help="comma-separated subset of the config's names")
    ap.add_argument("--folds", type=int, default=None)
    ap.add_argument("--bootstrap", type=int, default=None)
    ap.add_argument("--out", default=None, help="run dir (default: a temporary dir)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fold", type=int, default=None,
                    help="fit and predict one fold only: wall and CPU seconds per predictor (no run folder)")
    ap.add_argument("--compare-to", default=None, help="an earlier run folder: are the results the same?")
    ap.add_argument("--compare-only", nargs=2, default=None, metavar=("RUN_A", "RUN_B"),
                    help="only compare two existing run folders")
    args = ap.parse_args()
    if args.compare_only:
        print("\n".join(compare_runs(*map(Path, args.compare_only))))
        return

    from drugcell.config import load_config, with_overrides
    from drugcell.evaluation.cv import run_cv

    cfg = with_overrides(load_config(args.config), folds=args.folds, bootstrap_resamples=args.bootstrap,
                         predictors=args.predictors.split(",") if args.predictors else None)
    load_before = load_average()
    rows = []
    t, c = time.perf_counter(), cpu_s()
    if args.data:
        from drugcell.data.expression_set import ExpressionSet

        es = ExpressionSet.load(args.data)
        what = f"load {args.data}"
    else:
        es = simulated_es(args.compounds, args.genes, seed=args.seed)
        what = "simulate ExpressionSet (in memory)"
    rows.append((what, time.perf_counter() - t, cpu_s() - c, peak_rss_gb()))
    if args.fold is not None:
        lines = one_fold(es, cfg, args.fold)
        print(f"\n### bench_cv --fold {args.fold}: {es.n_compounds} compounds x {es.n_genes} genes "
              f"({Path(args.config).name})\n")
        print(f"machine: {os.cpu_count()} cores; load average (1 / 5 / 15 min) before {load_before}, "
              f"after {load_average()}; peak RSS {peak_rss_gb():.2f} GB\n")
        print("\n".join(lines))
        print("\n".join(shared_lines()))
        return
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or tmp) / "run"
        t, c = time.perf_counter(), cpu_s()
        res = run_cv(es, cfg, out, progress=sys.stderr.isatty())
        rows.append((f"run_cv: {cfg.folds} folds x {len(cfg.predictors)} predictors x {len(cfg.metrics)} metrics, "
                     f"{cfg.bootstrap_resamples} resamples", time.perf_counter() - t, cpu_s() - c, peak_rss_gb()))
        stages = res.stages
        table = per_predictor_table(res.diagnostics)
        if args.compare_to:
            table += compare_runs(Path(args.compare_to), out)
    print(f"\n### bench_cv: {es.n_compounds} compounds x {es.n_genes} genes ({Path(args.config).name})\n")
    print(f"machine: {os.cpu_count()} cores; load average (1 / 5 / 15 min) before {load_before}, "
          f"after {load_average()}\n")
    print("| stage | wall s | CPU s | peak RSS GB |\n|---|---:|---:|---:|")
    for name, s, cpu, rss in rows:
        print(f"| {name} | {s:.1f} | {cpu:.1f} | {rss:.2f} |")
    print("\n| run_cv stage | wall s |\n|---|---:|")
    for name, s in stages.items():
        print(f"| {name} | {s:.1f} |")
    print()
    print("\n".join(table))
    print("\n".join(shared_lines()))
    print(f"\nchosen under {cfg.metrics[0]}: {res.best(cfg.metrics[0])}")


if __name__ == "__main__":
    main()
