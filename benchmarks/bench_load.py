"""Benchmark `drugcell load` (streaming) against the in-memory contest recipe.

    python benchmarks/bench_load.py --n-samples 2000            # small: both methods
    python benchmarks/bench_load.py --name full --no-in-memory  # the lead's full-scale run
    python benchmarks/bench_load.py --name full --no-in-memory --fraction 0.33  # a third of it

Data come from ``benchmarks/_cache/<name>`` (``benchmarks/simulate_full.py`` writes ``full``
there). A missing folder is created with ``drugcell.data.simulate.simulate_vcpi`` when it exists,
else with the quick generator below (the exact VCPI layout, Poisson counts, no chemistry signal:
enough to time the loader). Each method runs in its own subprocess; wall time and that process's
peak RSS and CPU time (``getrusage(RUSAGE_CHILDREN)`` of a one-child wrapper: CPU time is the
figure to trust on a shared machine) are reported, and the two results are compared. Targets at full scale (78,778 genes x 32,500 samples, 2 cores):
<= 40 s and <= 3 GiB peak RSS for `drugcell load`, Mejia weights included.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent
FILES = ("train_counts.parquet", "train_metadata.parquet", "train_chemistry.parquet", "gene_filter.csv")


def quick_vcpi(out: Path, *, n_samples: int, n_genes: int, seed: int = 0) -> None:
    """A timing fixture in the VCPI layout: ~86 % library wells (2 replicates), DMSO and four
    positive controls, lognormal depths (median 2 M), ~16.5 % of genes at mean CPM >= 1; the
    counts are one row group, as pandas writes the real file."""
    from tqdm.auto import tqdm

    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    abundance = np.exp(rng.normal(0.0, 3.4, n_genes))
    abundance /= abundance.sum()
    n_lib = int(n_samples * 0.86) // 2
    keys = [str(9_000_000 + i) for i in range(n_lib) for _ in range(2)]
    n_ctrl = n_samples - len(keys)
    pos = ["Staurosporine", "Brefeldin A", "Rigosertib", "trichostatin-A"]
    n_pos = min(10, n_ctrl // 8)
    keys += ["DMSO"] * (n_ctrl - 4 * n_pos) + [p for p in pos for _ in range(n_pos)]
    sid = [str(1_000_000 + i) for i in range(n_samples)]
    meta = pd.DataFrame({
        "sequenced_id": sid, "compound": [f"uuid-{k}" for k in keys], "user_compound_id": keys,
        "compound_concentration": [0.15 if k == "DMSO" else 10000.0 for k in keys],
        "compound_concentration_unit": ["%" if k == "DMSO" else "nM" for k in keys],
        "cell_line": "THP-1", "timepoint": "24h", "is_control": [not k.isdigit() for k in keys],
        "container_id": [f"plate{i // 384}" for i in range(n_samples)],
    })
    depth = rng.lognormal(np.log(2e6), 0.4, n_samples)
    genes = np.array([f"ENSG{i:011d}" for i in range(n_genes)])
    cols = {"gene_id": pa.array(genes)}
    mean_cpm = np.zeros(n_genes)
    for j in tqdm(range(n_samples), desc="quick counts", unit="sample"):
        x = rng.poisson(abundance * depth[j]).astype(np.int32)
        mean_cpm += x * (1e6 / max(int(x.sum()), 1))
        cols[sid[j]] = pa.array(x)
    pq.write_table(pa.table(cols), out / FILES[0], row_group_size=n_genes)
    meta.to_parquet(out / FILES[1], index=False)
    uuids = sorted(set(meta["compound"]))
    pd.DataFrame({"compound": uuids, "smiles": ["CCO"] * len(uuids), "inchi_key": [""] * len(uuids)}).to_parquet(
        out / FILES[2], index=False)
    keep = genes[mean_cpm / n_samples >= 1.0]
    pd.DataFrame({"gene_id": keep}).to_csv(out / FILES[3], index=False)


def ensure_data(name: str, n_samples: int, n_genes: int, generator: str = "auto") -> Path:
    d = ROOT / "_cache" / name
    if all((d / f).exists() for f in FILES):
        return d
    simulate_vcpi = None
    if generator != "quick":
        try:
            from drugcell.data.simulate import simulate_vcpi  # the project's simulator, when present
        except ImportError:
            if generator == "simulate":
                raise
    if simulate_vcpi is not None:
        try:
            simulate_vcpi(d, n_compounds=max(int(n_samples * 0.86) // 2, 10), n_genes=n_genes, seed=0,
                          overwrite=True)  # the benchmark's own cache folder
        except TypeError:
            simulate_vcpi = None
    if simulate_vcpi is None:
        quick_vcpi(d, n_samples=n_samples, n_genes=n_genes)
    return d


def restrict(d: Path, fraction: float, tmp: Path) -> Path:
    """A view of ``d`` where only ``fraction`` of the compounds (and of the DMSO wells) are in the
    contest condition (the rest get another cell line, so the loader skips their columns): CPU
    time on part of the data, with the same file and the same per-batch work."""
    v = tmp / "part"
    v.mkdir()
    for f in FILES:
        if f != FILES[1]:
            (v / f).symlink_to((d / f).resolve())
    meta = pd.read_parquet(d / FILES[1])
    keys = meta["user_compound_id"].astype(str)
    step = max(int(round(1 / fraction)), 1)
    out = pd.factorize(keys)[0] % step != 0
    dmso = (keys == "DMSO").to_numpy()
    out[dmso] = np.arange(dmso.sum()) % step != 0
    meta.loc[out, "cell_line"] = "not-in-condition"
    meta.to_parquet(v / FILES[1], index=False)
    return v


def measured(code: str) -> dict:
    """Run ``code`` in a child Python under a one-child wrapper; wall time and the child's peak RSS."""
    wrapper = textwrap.dedent(f"""
        import json, resource, subprocess, sys, time
        t = time.perf_counter()
        r = subprocess.run([sys.executable, "-c", {code!r}], capture_output=True, text=True)
        wall = time.perf_counter() - t
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        print(json.dumps(dict(rc=r.returncode, wall_s=wall, cpu_s=ru.ru_utime + ru.ru_stime, rss_mb=ru.ru_maxrss / 1024,
                              out=r.stdout[-3000:], err=r.stderr[-3000:])))
    """)
    res = subprocess.run([sys.executable, "-c", wrapper], capture_output=True, text=True, check=True)
    info = json.loads(res.stdout)
    if info["rc"] != 0:
        raise SystemExit(f"benchmark child failed:\n{info['err']}")
    return info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--name", help="folder under benchmarks/_cache (default: q<n-samples>)")
    ap.add_argument("--n-samples", type=int, default=2000, help="samples (wells) when the data must be made")
    ap.add_argument("--n-genes", type=int, default=78_778, help="genes when the data must be made")
    ap.add_argument("--generator", default="auto", choices=["auto", "simulate", "quick"],
                    help="how to make missing data: the simulator (gene-batch row groups), or the quick "
                    "generator (one row group, like the real file); auto = simulator when present")
    ap.add_argument("--batch-size", type=int, default=None, help="`drugcell load --batch-size` (default: its own)")
    ap.add_argument("--weights-library", default="scored", choices=["scored", "all"])
    ap.add_argument("--fraction", type=float, default=1.0,
                    help="load only about this fraction of the compounds (the others are put out of the "
                    "condition): CPU figures on part of the data while the machine is shared")
    ap.add_argument("--in-memory", action=argparse.BooleanOptionalAction, default=None,
                    help="also time the in-memory contest_scorer recipe (default: only up to 4,000 samples)")
    args = ap.parse_args()
    default_name = f"{'quick' if args.generator == 'quick' else 'q'}{args.n_samples}"
    d = ensure_data(args.name or default_name, args.n_samples, args.n_genes, args.generator)
    n_cols = len(pq.read_schema(d / FILES[0]).names) - 1
    in_memory = args.in_memory if args.in_memory is not None else n_cols <= 4000
    rows = []
    with tempfile.TemporaryDirectory(dir=ROOT / "_cache") as tmp:
        if not 0 < args.fraction <= 1:
            raise SystemExit("--fraction must be in (0, 1]")
        run_dir = restrict(d, args.fraction, Path(tmp)) if args.fraction < 1 else d
        cache = Path(tmp) / "cache"
        cli = ["load", "--data", str(run_dir), "--out", str(cache), "--no-progress", "--weights-library", args.weights_library]
        if args.batch_size:
            cli += ["--batch-size", str(args.batch_size)]
        r = measured(f"import sys; sys.argv = ['drugcell', *{cli!r}]; from drugcell.cli import main; main()")
        print(r["out"], file=sys.stderr)
        from drugcell.data.expression_set import ExpressionSet

        es = ExpressionSet.load(cache, mmap=True)
        rows.append(("`drugcell load` (streaming)", n_cols, es.n_genes, es.n_compounds, r["wall_s"], r["cpu_s"],
                     r["rss_mb"], ""))
        if in_memory:
            out = Path(tmp) / "mem.npz"
            code = textwrap.dedent(f"""
                import warnings, numpy as np, pandas as pd
                import contest_scorer as cs
                from drugcell.data import vcpi
                warnings.simplefilter("ignore")
                d = {str(run_dir)!r}
                meta = pd.read_parquet(d + "/train_metadata.parquet")
                meta["sequenced_id"] = meta["sequenced_id"].astype(str)
                ctrl = vcpi.control_ids_of(meta["user_compound_id"])
                meta = meta[vcpi.ConditionFilter().mask(meta, ctrl == "DMSO")].copy()
                meta["key"] = [c if isinstance(c, str) else k for c, k in zip(ctrl[meta.index], meta["user_compound_id"].astype(str))]
                counts = pd.read_parquet(d + "/train_counts.parquet")
                genes = sorted(pd.read_csv(d + "/gene_filter.csv")["gene_id"].astype(str))
                counts = counts[["gene_id", *meta["sequenced_id"]]]
                truth = cs.counts_to_expression(counts, meta, compound_col="key", gene_filter=genes)
                wc = counts.set_index("gene_id").loc[genes].reset_index() if {args.weights_library!r} == "scored" else counts
                w = cs.compute_mejia_weights(wc, meta, compound_col="key", gene_filter=genes, library={args.weights_library!r})
                t = truth.pivot(index="compound", columns="gene_id", values="expression")
                np.savez({str(out)!r}, expr=t.to_numpy(), comp=t.index.to_numpy().astype(str), w=w.to_numpy(),
                         wcomp=w.columns.to_numpy().astype(str))
            """)
            m = measured(code)
            ref = np.load(out)
            pos = pd.Index(ref["comp"]).get_indexer(es.compounds.astype(str))
            wpos = pd.Index(ref["wcomp"]).get_indexer(es.compounds.astype(str))
            de = float(np.abs(ref["expr"][pos] - es.expression).max())
            dw = float(np.abs(ref["w"][:, wpos] - es.weights).max())
            rows.append(("in-memory contest_scorer recipe", n_cols, es.n_genes, es.n_compounds, m["wall_s"], m["cpu_s"],
                         m["rss_mb"],
                         f"max abs diff: target {de:.1e}, weights {dw:.1e}"))
    print(f"\ndata: {d}  (counts {(d / FILES[0]).stat().st_size / 1e6:,.0f} MB, weights library {args.weights_library}, "
          f"fraction {args.fraction:g})\n")
    print("| method | samples | genes | compounds | wall s | CPU s | peak RSS MB | check |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for name, n, g, c, wall, cpu, rss, note in rows:
        print(f"| {name} | {n:,} | {g:,} | {c:,} | {wall:.1f} | {cpu:.1f} | {rss:,.0f} | {note} |")


if __name__ == "__main__":
    main()
