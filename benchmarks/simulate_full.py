"""Create the full-size simulated VCPI set (78,778 genes x ~32,500 wells) into a cache dir.

Run by the lead at the end (a few minutes, ~3 GB RAM peak, ~1.5 GB on disk):
    python benchmarks/simulate_full.py                       # -> benchmarks/_cache/full
Try it small first (the machine is shared):
    python benchmarks/simulate_full.py --scale 0.01 --n-genes 5000 --out /tmp/synth_small --reference
Skips when the cache dir already holds a finished set (synth_manifest.json), unless --force.
``--reference`` recomputes the organisers' reference table in memory (small sizes only).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

from drugcell.data.simulate import FULL_N_GENES, PRESETS, reference_figures, simulate_vcpi


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "_cache" / "full")
    ap.add_argument("--scale", type=float, default=1.0,
                    help="fraction of the real compound numbers (14,026 library, 1,064 test); 1.0 = full")
    ap.add_argument("--n-genes", type=int, default=FULL_N_GENES)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--force", action="store_true", help="rebuild even if the cache dir is complete")
    ap.add_argument("--reference", action="store_true", help="also compute the reference table (small only)")
    args = ap.parse_args(argv)

    manifest = args.out / "synth_manifest.json"
    if manifest.exists() and not args.force:
        print(f"{args.out} already holds a simulated set (delete it or pass --force); skipping")
        return 0
    full = PRESETS["full"]
    n_compounds = max(10, round(full["n_compounds"] * args.scale))
    n_test = max(2, round(full["n_test"] * args.scale))
    t0 = time.perf_counter()
    simulate_vcpi(args.out, n_compounds=n_compounds, n_genes=args.n_genes, n_test=n_test,
                  seed=args.seed, progress=True, overwrite=args.force)
    wall = time.perf_counter() - t0
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    summary = json.loads(manifest.read_text())["summary"]
    size_gb = sum(p.stat().st_size for p in args.out.iterdir() if p.is_file()) / 1024**3
    result = {"n_compounds": n_compounds, "n_genes": args.n_genes, "n_test": n_test, "wall_s": round(wall, 1),
              "peak_rss_gb": round(peak_gb, 2), "disk_gb": round(size_gb, 3), **summary}
    if args.reference:
        result["reference"] = {k: round(v, 3) for k, v in reference_figures(args.out).items()}
    (args.out / "benchmark.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
