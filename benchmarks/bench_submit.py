"""Benchmark `make_submission` (refit + audit + predict + validate + atomic write) at a given scale.

The training ExpressionSet is simulated in memory (see bench_cv.py). ``--real`` uses the shared
contest files (1,064 real test compounds, the 12,995 real scored genes: the full 13.8 M-row grid);
otherwise test compounds are drawn from the simulator's library, disjoint from training.

    python benchmarks/bench_submit.py --train 500 --test 100 --genes 2000 --predictor ridge_fp
    python benchmarks/bench_submit.py --train 14026 --real --predictor ridge_fp   # full scale (lead)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_cv import peak_rss_gb, simulated_es  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", type=int, default=500, help="training compounds")
    ap.add_argument("--test", type=int, default=100, help="test compounds (ignored with --real)")
    ap.add_argument("--genes", type=int, default=2000, help="genes (ignored with --real: 12,995)")
    ap.add_argument("--real", action="store_true", help="use shared test_compounds.csv and gene_filter.csv")
    ap.add_argument("--predictor", default="ridge_fp", help="registry kind, or a name in --config")
    ap.add_argument("--config", default=None)
    args = ap.parse_args()

    from drugcell.data.molecules_library import enumerate_molecules
    from drugcell.fitting import resolve_predictor
    from drugcell.paths import shared_data_dir
    from drugcell.submission import make_submission

    spec, seed = resolve_predictor(args.predictor, config=args.config)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        if args.real:
            folder = shared_data_dir() / "vcpi_contest_public"
            tc, gf = folder / "test_compounds.csv", folder / "gene_filter.csv"
            genes = pd.read_csv(gf, dtype=str)["gene_id"].to_numpy()
            test_smiles = set(pd.read_csv(tc, dtype=str)["smiles"])
            es = simulated_es(args.train, len(genes), exclude=test_smiles)
            es.genes = genes.astype(object)
        else:
            es = simulated_es(args.train, args.genes)
            mols = enumerate_molecules(args.test, np.random.default_rng(99), exclude=set(es.smiles))
            tc, gf = tmp / "test_compounds.csv", tmp / "gene_filter.csv"
            pd.DataFrame({"compound": [str(9_000_000 + i) for i in range(args.test)], "compound_name": "",
                          "smiles": [m.smiles for m in mols], "inchi_key": ""}).to_csv(tc, index=False)
            pd.DataFrame({"gene_id": es.genes}).to_csv(gf, index=False)
        rows.append(("simulate training ExpressionSet", time.perf_counter() - t, peak_rss_gb()))
        t = time.perf_counter()
        res = make_submission(es, spec, tc, gf, tmp / "predictions.parquet", seed=seed)
        rows.append((f"make_submission ({spec.name}): {res.n_rows:,} rows", time.perf_counter() - t, peak_rss_gb()))
    print(f"\n### bench_submit: {args.train} training compounds, {res.n_compounds} test x {res.n_genes} genes\n")
    print("| stage | wall s | peak RSS GB |\n|---|---:|---:|")
    for name, s, rss in rows:
        print(f"| {name} | {s:.1f} | {rss:.2f} |")
    for k, v in res.timings.items():
        print(f"| &nbsp; {k} | {v:.1f} | |")


if __name__ == "__main__":
    main()
