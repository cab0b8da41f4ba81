"""Benchmark `run_cv` at a given scale on a simulated ExpressionSet built directly in memory.

Why in memory: the full contest scale (14,026 compounds x 12,995 genes) through `drugcell synth`
+ `drugcell load` costs far more than the CV itself; the runner only needs an ExpressionSet.
Molecules come from the simulator's library (`enumerate_molecules`: real scaffold families, so
scaffold folds are realistic); the truth is a per-gene baseline + a per-scaffold-family effect +
a low-rank effect of Morgan bits + noise, and the Mejia-like weights are random columns summing to
1 (timing does not depend on their values).

    python benchmarks/bench_cv.py --compounds 600 --genes 2000 --config configs/demo.toml
    python benchmarks/bench_cv.py --compounds 14026 --genes 12995          # full scale (lead only)

Prints a markdown table: wall time and peak RSS of building the data and of the CV run.
"""

from __future__ import annotations

import argparse
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--compounds", type=int, default=600)
    ap.add_argument("--genes", type=int, default=2000)
    ap.add_argument("--config", default=str(ROOT / "configs" / "default.toml"))
    ap.add_argument("--predictors", default=None, help="comma-separated subset of the config's names")
    ap.add_argument("--folds", type=int, default=None)
    ap.add_argument("--bootstrap", type=int, default=None)
    ap.add_argument("--out", default=None, help="run dir (default: a temporary dir)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from drugcell.config import load_config, with_overrides
    from drugcell.evaluation.cv import run_cv

    cfg = with_overrides(load_config(args.config), folds=args.folds, bootstrap_resamples=args.bootstrap,
                         predictors=args.predictors.split(",") if args.predictors else None)
    rows = []
    t = time.perf_counter()
    es = simulated_es(args.compounds, args.genes, seed=args.seed)
    rows.append(("simulate ExpressionSet (in memory)", time.perf_counter() - t, peak_rss_gb()))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or tmp) / "run"
        t = time.perf_counter()
        res = run_cv(es, cfg, out, progress=sys.stderr.isatty())
        rows.append((f"run_cv: {cfg.folds} folds x {len(cfg.predictors)} predictors x {len(cfg.metrics)} metrics, "
                     f"{cfg.bootstrap_resamples} resamples", time.perf_counter() - t, peak_rss_gb()))
        fit = res.diagnostics[res.diagnostics.counter.isin(["fit_s", "predict_s"])]
        per_pred = fit.groupby("predictor")["value"].sum().sort_values(ascending=False)
        stages = res.stages
    print(f"\n### bench_cv: {args.compounds} compounds x {args.genes} genes ({Path(args.config).name})\n")
    print("| stage | wall s | peak RSS GB |\n|---|---:|---:|")
    for name, s, rss in rows:
        print(f"| {name} | {s:.1f} | {rss:.2f} |")
    print("\n| run_cv stage | wall s |\n|---|---:|")
    for name, s in stages.items():
        print(f"| {name} | {s:.1f} |")
    print("\n| predictor | fit + predict s (all folds) |\n|---|---:|")
    for name, s in per_pred.items():
        print(f"| {name} | {s:.1f} |")
    print(f"\nbest under mejia: {res.best('mejia')}")


if __name__ == "__main__":
    main()
