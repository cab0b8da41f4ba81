"""Scaffold-split CV of the deep predictors (mlp, fusion) next to mean and ridge, same folds.

Why: the deep models are judged by two things, wMSE under the contest metric against the shallow
predictors on identical folds, and cost (the target is full 5-fold CV of mlp + a 5-member fusion
at 14,026 x 12,995 in <= 30 minutes on 2 CPU cores). This script runs ``run_cv`` on a simulated
ExpressionSet (``benchmarks/bench_cv.py:simulated_es``: scaffold families, Morgan-driven low-rank
effects, noise) or on a real cache dir (``--data``), and prints wMSE per metric and fit + predict
seconds per predictor.

    python benchmarks/bench_deep_cv.py --compounds 800 --genes 1000 --members 2   # small (try)
    python benchmarks/bench_deep_cv.py --compounds 14026 --genes 12995            # full (lead only)
    python benchmarks/bench_deep_cv.py --data CACHE_DIR                           # a real cache

Published reference (wMSE under the contest metric): chemistry-only MLP 0.4977, fusion 0.5008,
mean baseline 0.5390; the simulated data has its own scale, so compare ratios to ``mean`` there.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

# The suggested configs/deep.toml blocks (the report repeats them).
DEEP_PARAMS = {
    "mlp": {"rank": 128, "hidden": [512, 256], "epochs": 30, "patience": 4, "batch_size": 256,
            "lr": 2e-3, "dropout": 0.1},
    "fusion": {"rank": 128, "hidden": [512, 256], "epochs": 30, "patience": 4, "batch_size": 256,
               "lr": 2e-3, "dropout": 0.1, "n_members": 5, "warmup_epochs": 3,
               "support_k": 10, "support_threshold": 0.5},
}


def build_config(args):
    from drugcell.config import config_from_dict

    deep = {k: dict(v) for k, v in DEEP_PARAMS.items()}
    for params in deep.values():
        for key in ("rank", "epochs"):
            if getattr(args, key) is not None:
                params[key] = getattr(args, key)
        if args.hidden:
            params["hidden"] = [int(h) for h in args.hidden.split(",")]
    if args.members is not None:
        deep["fusion"]["n_members"] = args.members
    predictors = [{"name": "mean", "kind": "mean"}, {"name": "ridge_fp", "kind": "ridge_fp"},
                  {"name": "mlp", "kind": "mlp", **deep["mlp"]},
                  {"name": "fusion", "kind": "fusion", **deep["fusion"]}]
    if args.predictors:
        keep = set(args.predictors.split(","))
        predictors = [p for p in predictors if p["name"] in keep]
    raw = {"cv": {"folds": args.folds, "split": "scaffold", "seed": args.seed,
                  "metrics": ["mejia", "proxy"], "bootstrap_resamples": args.bootstrap},
           "output": {"uncertainty_sample": 20000}, "predictors": predictors}
    return config_from_dict(raw, source="benchmarks/bench_deep_cv.py")


def calibration_rows(path: Path) -> list[tuple]:
    """Coverage of the predicted std on the runner's sampled (error, std) cells, per predictor."""
    import numpy as np
    import pandas as pd
    from scipy.stats import spearmanr

    if not path.exists():
        return []
    u = pd.read_parquet(path)
    rows = []
    for name, g in u.groupby("predictor", observed=True):
        z = np.abs(g["error"].to_numpy()) / np.maximum(g["std"].to_numpy(), 1e-12)
        rho = spearmanr(np.abs(g["error"]), g["std"]).statistic
        rows.append((str(name), float((z <= 1).mean()), float((z <= 2).mean()), float(rho)))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--compounds", type=int, default=800, help="simulated compounds")
    ap.add_argument("--genes", type=int, default=1000, help="simulated genes")
    ap.add_argument("--data", default=None, help="an ExpressionSet cache dir instead of simulated data")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--members", type=int, default=None, help="fusion ensemble size (default 5)")
    ap.add_argument("--epochs", type=int, default=None, help="max epochs for mlp and fusion")
    ap.add_argument("--rank", type=int, default=None, help="residual basis rank")
    ap.add_argument("--hidden", default=None, help="hidden widths, e.g. 512,256")
    ap.add_argument("--predictors", default=None, help="comma-separated subset: mean,ridge_fp,mlp,fusion")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="run dir (default: a temporary dir)")
    args = ap.parse_args()

    from drugcell.evaluation.cv import run_cv

    cfg = build_config(args)
    t = time.perf_counter()
    if args.data:
        from drugcell.data.expression_set import ExpressionSet

        es = ExpressionSet.load(args.data)
        what = f"{args.data}: {es.n_compounds} compounds x {es.n_genes} genes"
    else:
        from bench_cv import simulated_es

        es = simulated_es(args.compounds, args.genes, seed=args.seed)
        what = f"simulated {args.compounds} compounds x {args.genes} genes"
    t_data = time.perf_counter() - t
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or tmp) / "run"
        t = time.perf_counter()
        res = run_cv(es, cfg, out, progress=sys.stderr.isatty())
        t_cv = time.perf_counter() - t
        scores = res.scores.groupby(["predictor", "metric"], observed=True)["wmse"].mean().unstack()
        diag = res.diagnostics
        cost = diag[diag.counter.isin(["fit_s", "predict_s"])].groupby("predictor")["value"].sum()
        calib = calibration_rows(out / "uncertainty.parquet")
    base = scores.loc["mean"] if "mean" in scores.index else None
    print(f"\n### bench_deep_cv: {what}, {cfg.folds}-fold scaffold CV (data {t_data:.1f} s, CV {t_cv:.1f} s)\n")
    print("| predictor | mejia wMSE | / mean | proxy wMSE | fit + predict s (all folds) |")
    print("|---|---:|---:|---:|---:|")
    for name in [p.name for p in cfg.predictors]:
        row = scores.loc[name]
        ratio = row["mejia"] / base["mejia"] if base is not None else float("nan")
        print(f"| {name} | {row['mejia']:.4f} | {ratio:.3f} | {row['proxy']:.4f} | {cost.get(name, float('nan')):.1f} |")
    if calib:
        print("\n| predictor (sampled cells) | coverage 1 sd (0.683) | coverage 2 sd (0.954) | Spearman abs(err) vs std |")
        print("|---|---:|---:|---:|")
        for row in calib:
            print("| {} | {:.3f} | {:.3f} | {:.3f} |".format(*row))
    print(f"\nparams: {DEEP_PARAMS if not (args.epochs or args.rank or args.hidden or args.members) else [p.params for p in cfg.predictors if p.kind in ('mlp', 'fusion')]}")


if __name__ == "__main__":
    main()
