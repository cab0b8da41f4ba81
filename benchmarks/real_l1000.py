"""The full predictor panel under scaffold CV on real L1000 data (shared/data), into RESULTS.md.

    .venv/bin/python benchmarks/real_l1000.py [--folds 5] [--resamples 10000] [--no-deep]

Datasets: the PRnet HT115 demo (354 compounds, 978 landmark genes; each compound's highest dose)
and, if present, the CMap A375 plate (47 compounds with SMILES, dose nearest 10 uM; 3 folds since
it is tiny). Results go to ``runs/real_l1000/<dataset>`` and the section between the
``real_l1000`` markers of ``benchmarks/RESULTS.md`` is rewritten with the ranking table, the
bootstrap comparisons against the mean baseline and the leak audit.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import time
import warnings
from pathlib import Path

import pandas as pd

from drugcell.config import config_from_dict
from drugcell.data.l1000 import load_cmap_gct, load_prnet_h5ad
from drugcell.evaluation.cv import run_cv
from drugcell.paths import repo_root, shared_data_dir
from drugcell.reporting import frame_table as md_table

START, END = "<!-- real_l1000:start -->", "<!-- real_l1000:end -->"


def panel(deep: bool, minimol: bool) -> list[dict]:
    preds = [{"name": "control", "kind": "control"}, {"name": "mean", "kind": "mean"},
             {"name": "wmean", "kind": "wmean"}]
    for k in (5, 10, 20, 50):
        for kernel in ("uniform", "tanimoto", "softmax"):
            preds.append({"name": f"knn_k{k}_{kernel}", "kind": "knn", "k": k, "kernel": kernel})
    preds += [{"name": "ridge_fp", "kind": "ridge_fp"}, {"name": "ridge_desc", "kind": "ridge_desc"},
              {"name": "blend", "kind": "blend", "members": [{"kind": "ridge_fp"},
                                                             {"kind": "knn", "k": 20, "kernel": "softmax"}]}]
    if minimol:  # MiniMol v1 was pretrained with L1000 MCF7/VCAP heads: on L1000 an upper bound, not clean
        preds += [{"name": "knn_minimol", "kind": "knn", "k": 20, "kernel": "softmax", "embedding": "minimol"},
                  {"name": "ridge_minimol", "kind": "ridge_emb", "embedding": "minimol"}]
    if deep:
        preds += [{"name": "mlp", "kind": "mlp"}, {"name": "fusion", "kind": "fusion"}]
    return preds


def run_one(name: str, es, folds: int, resamples: int, deep: bool, out_root: Path, minimol: bool = False) -> str:
    cfg = config_from_dict({
        "cv": {"folds": folds, "split": "scaffold", "seed": 0, "metrics": ["mejia", "proxy", "variance"],
               "bootstrap_resamples": resamples},
        "output": {"uncertainty_sample": 50000},
        "predictors": panel(deep, minimol),
    }, source=f"benchmarks/real_l1000.py:{name}")
    t0 = time.perf_counter()
    res = run_cv(es, cfg, out_root / name, progress=True, overwrite=True)
    wall = time.perf_counter() - t0
    table = res.summary[res.summary["metric"] == "mejia"].sort_values("rank")
    keep = [c for c in ("predictor", "mean", "fold_mean", "fold_std", "rank") if c in table.columns]
    cmp = res.comparisons
    cmp = cmp[(cmp["metric"] == "mejia") & ((cmp["predictor_a"] == "wmean") | (cmp["predictor_b"] == "wmean"))]
    choice = res.choices["mejia"]
    audit = json.loads((out_root / name / "audit.json").read_text())
    audit_lines = [
        f"- fold {a['fold']}: {a['n_test_scaffold_in_train']}/{a['n_test']} held-out compounds share a "
        f"scaffold with training; nearest-training Tanimoto median {a['nearest_similarity'].get('median', float('nan')):.2f}"
        for a in audit["folds"]
    ]
    return "\n".join([
        f"### {name}: {es.n_compounds} compounds x {es.n_genes} genes, {folds}-fold scaffold CV ({wall:.0f} s)",
        "",
        f"Source: {es.info.get('source')} ({es.info.get('dose_rule')} dose rule). Ranking under Mejia weights "
        "(per-compound wMSE, lower is better):",
        "",
        md_table(table[keep]),
        "",
        f"Chosen (simplest predictor no other beats significantly, Holm): **{choice.predictor}**. {choice.reason}",
        "",
        "Paired bootstrap against wmean, the metric-optimal constant (Mejia; difference = a - b; p_holm "
        "corrected over all pairs of the metric):",
        "",
        md_table(cmp[["predictor_a", "predictor_b", "mean_a", "mean_b", "diff", "ci_low", "ci_high", "p_value",
                      "p_holm"]]),
        "",
        "MiniMol rows (if any): MiniMol v1 was pretrained with L1000 MCF7/VCAP response heads, so on L1000 data "
        "its gains are an upper bound (contamination), not clean evidence.",
        "",
        "Leak audit (no duplicate molecule across any fold):",
        "",
        *audit_lines,
        "",
    ])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--resamples", type=int, default=10000)
    ap.add_argument("--no-deep", action="store_true", help="skip mlp and fusion")
    ap.add_argument("--minimol", action="store_true", help="add knn and ridge on MiniMol embeddings")
    ap.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = ap.parse_args()
    data = shared_data_dir()
    out_root = repo_root() / "runs" / "real_l1000"
    sections = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prnet = load_prnet_h5ad(data / "prnet_l1000_ht115_demo" / "demo.h5ad")
    sections.append(run_one("prnet_ht115", prnet, args.folds, args.resamples, not args.no_deep, out_root,
                            args.minimol))
    gct = data / "cmap_l1000_a375_plate" / "test_l1000.gct"
    if gct.exists():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cmap = load_cmap_gct(gct, data / "lincs_sciplex_compound_smiles" / "lincs_drugs_smiles.csv")
        sections.append(run_one("cmap_a375", cmap, 3, args.resamples, not args.no_deep, out_root, args.minimol))
    header = (
        f"Command: `.venv/bin/python benchmarks/real_l1000.py --folds {args.folds} --resamples {args.resamples}"
        f"{' --no-deep' if args.no_deep else ''}{' --minimol' if args.minimol else ''}`; machine: {platform.machine()}, "
        f"{__import__('os').cpu_count()} cores; {time.strftime('%Y-%m-%d')}.\n"
    )
    text = header + "\n" + "\n".join(sections)
    print(text)
    if not args.no_write:
        results = repo_root() / "benchmarks" / "RESULTS.md"
        body = results.read_text() if results.exists() else "# Benchmarks\n"
        block = f"{START}\n{text}\n{END}"
        if START in body:
            body = re.sub(re.escape(START) + r".*?" + re.escape(END), lambda _: block, body, flags=re.S)
        else:
            body += "\n## Real L1000 data: the predictor panel under scaffold CV\n\n" + block + "\n"
        results.write_text(body)


if __name__ == "__main__":
    pd.set_option("display.width", 200)
    main()
