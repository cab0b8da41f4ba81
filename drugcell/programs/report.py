"""What ``drugcell programs`` writes: per program its up genes, its down genes and its compounds (by
name where the data have names), how well and whether the NMF converged, and a signed heatmap."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from drugcell.errors import DrugcellInputError
from drugcell.outputs import check_out_location
from drugcell.programs import annotate
from drugcell.programs.factorise import GenePrograms, gene_programs, not_converged_message
from drugcell.programs.inputs import load_program_input
from drugcell.progress import step
from drugcell.provenance import atomic_path, fingerprint_arrays, provenance, write_json, write_text
from drugcell.reporting import fmt_number, md_table

COMMAND = "drugcell programs"
FILES = {
    "genes": "programs_genes.parquet",
    "compounds": "programs_compounds.parquet",
    "markdown": "programs.md",
    "heatmap": "programs_heatmap.png",
    "manifest": "manifest.json",
}


def _short(text: str, n: int = 32) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _compound_label(progs: GenePrograms, c: int) -> str:
    name = str(progs.compound_names()[c])
    return f"{progs.compounds[c]} ({_short(name)})" if name else str(progs.compounds[c])


def _top(h: np.ndarray, n: int) -> list[int]:
    order = np.argsort(-h, kind="stable")[:n]
    return [int(g) for g in order if h[g] > 0]


def plot_programs(progs: GenePrograms, path: str | Path | None = None, *, genes_per_program: int = 5,
                  compounds_per_program: int = 3):
    """Two heatmaps: programs x their top up and down genes (signed loadings), top compounds x programs."""
    # Saving to a file uses a bare Figure (Agg canvas, no pyplot state, no backend switch);
    # without a path the figure comes from pyplot so a notebook shows it inline.
    if path is not None:
        from matplotlib.figure import Figure

        make_figure = Figure
    else:
        import matplotlib.pyplot as plt

        make_figure = plt.figure

    gsel: list[int] = []
    for k in range(progs.rank):
        for g in _top(progs.H_up[k], genes_per_program) + _top(progs.H_down[k], genes_per_program):
            if g not in gsel:
                gsel.append(g)
    csel: list[int] = []
    for k in range(progs.rank):
        for c in np.argsort(-progs.W[:, k], kind="stable")[:compounds_per_program]:
            if int(c) not in csel:
                csel.append(int(c))
    Hs = progs.H[:, gsel]
    vmax = float(np.abs(Hs).max()) if Hs.size else 1.0
    Ws = progs.W[csel] / np.maximum(progs.W[csel].max(axis=1, keepdims=True), 1e-12)
    width = max(8.0, 0.22 * len(gsel) + 3)
    fig = make_figure(figsize=(width, 3 + 0.35 * progs.rank + 0.18 * len(csel)))
    ax, bx = fig.subplots(2, 1, gridspec_kw={"height_ratios": [progs.rank, max(len(csel), 1) * 0.6]})
    im = ax.imshow(Hs, aspect="auto", cmap="RdBu_r", vmin=-vmax or -1, vmax=vmax or 1, interpolation="nearest")
    ax.set_yticks(range(progs.rank), [f"P{k + 1}" for k in range(progs.rank)])
    ax.set_xticks(range(len(gsel)), [str(progs.symbols[g]) for g in gsel], rotation=90, fontsize=7)
    ax.set_title(f"top {genes_per_program} up and down genes per program (signed NMF, rank {progs.rank}, "
                 f"norm share {progs.frobenius_share:.2f})")
    fig.colorbar(im, ax=ax, fraction=0.02, pad=0.01).set_label("loading (red up, blue down)")
    im2 = bx.imshow(Ws, aspect="auto", cmap="magma", interpolation="nearest")
    bx.set_xticks(range(progs.rank), [f"P{k + 1}" for k in range(progs.rank)])
    bx.set_yticks(range(len(csel)), [_compound_label(progs, c) for c in csel], fontsize=6)
    bx.set_title(f"top {compounds_per_program} compounds per program")
    fig.colorbar(im2, ax=bx, fraction=0.02, pad=0.01).set_label("activity / row max")
    fig.tight_layout()
    if path is not None:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=120, format="png")
    return fig


def convergence_line(progs: GenePrograms) -> str:
    """One line on how the NMF ended; a fit that did not converge says so and what to do."""
    if not progs.converged:
        return f"**{not_converged_message(progs)}**"
    return (f"NMF converged in {progs.n_iter:,} iterations (at most {progs.max_iter:,}, tol {progs.tol:g}); "
            f"reconstruction error ||A - WH||_F = {fmt_number(progs.reconstruction_error)}")


def programs_markdown(progs: GenePrograms, genes: pd.DataFrame, comps: pd.DataFrame, source: str,
                      show: int = 10, annotations: dict[str, Any] | None = None) -> str:
    """The readable report: fit and convergence, then per program its up genes, down genes, compounds."""
    lines = [
        "# drugcell programs",
        "",
        f"Signed NMF (scikit-learn, nndsvda init, cd solver) of R = {source} - mean profile over "
        f"{len(progs.compounds):,} compounds x {len(progs.genes):,} genes, rank {progs.rank}: the up part "
        "max(R, 0) and the down part max(-R, 0) are factored side by side, A = [R+ | R-] ~ W [H_up | H_down], so "
        "each program has up genes and down genes (a compound that moves them the other way drives a mirrored "
        "program).",
        "",
        f"- {convergence_line(progs)}",
        f"- norm share captured, 1 - ||A - WH||_F / ||A||_F: **{progs.frobenius_share:.4f}** (||A||_F = ||R||_F)",
        f"- squared share, 1 - ||A - WH||_F^2 / ||A||_F^2: {progs.squared_share:.4f}",
    ]
    for what, ann in (annotations or {}).items():
        lines.append(f"- {what}: {ann['n_mapped']:,} of {ann['n']:,} from {ann['source']}"
                     + (f"; {ann['n_ambiguous']:,} ids with several names (joined by /)" if ann["n_ambiguous"] else ""))
    rows = []
    up_share = progs.up_share
    for k in range(progs.rank):
        g = genes[genes["program"] == k + 1]
        up = g[g["direction"] == "up"].head(show)["symbol"]
        down = g[g["direction"] == "down"].head(show)["symbol"]
        c = comps[comps["program"] == k + 1].head(min(show, 5))
        labels = [f"{i} ({_short(n)})" if n else str(i) for i, n in zip(c["compound"], c["compound_name"])]
        rows.append([f"P{k + 1}", f"{progs.program_norms[k]:.4g}", f"{up_share[k]:.2f}", ", ".join(up) or "-",
                     ", ".join(down) or "-", ", ".join(labels)])
    table = md_table(["program", "norm of W_k H_k", "up share", "up genes", "down genes", "top compounds"], rows,
                     ["l", "r", "r", "l", "l", "l"])
    return "\n".join([*lines, "", table]) + "\n"


@dataclass
class ProgramsResult:
    programs: GenePrograms
    genes: pd.DataFrame
    compounds: pd.DataFrame
    markdown: str
    files: dict[str, Path]


def check_out_dir(out: Path, overwrite: bool) -> bool:
    """Whether ``out`` holds an earlier ``drugcell programs`` output to clear; raises when drugcell
    must not write there: a file, a non-empty folder that is not such output (even with
    ``overwrite``), or earlier output without ``overwrite``."""
    check_out_location(out)
    if out.exists() and not out.is_dir():
        raise DrugcellInputError(f"--out {out} is a file; choose a folder for the programs")
    if not (out.exists() and any(out.iterdir())):
        return False
    try:
        command = json.loads((out / FILES["manifest"]).read_text()).get("command")
    except (OSError, ValueError, AttributeError):
        command = None
    if command != COMMAND:
        raise DrugcellInputError(f"--out {out} is not empty and holds no `drugcell programs` output; drugcell "
                                 "never writes into it (even with --overwrite): choose another folder")
    if not overwrite:
        raise DrugcellInputError(f"--out {out} already holds `drugcell programs` output; pass --overwrite to "
                                 "replace it (its files are removed first)")
    return True


def prepare_out_dir(out: Path, overwrite: bool) -> None:
    """A new or empty folder is used as is, earlier programs output is cleared (only with
    ``overwrite``), anything else is refused (:func:`check_out_dir`)."""
    if check_out_dir(out, overwrite):
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def write_programs(progs: GenePrograms, out: str | Path, *, top: int = 20, source: str = "truth",
                   seed: int = 0, extra: dict[str, Any] | None = None, overwrite: bool = False) -> ProgramsResult:
    """programs_genes.parquet, programs_compounds.parquet, programs.md, programs_heatmap.png,
    manifest.json under ``out`` (each written atomically; see :func:`prepare_out_dir`)."""
    out = Path(out)
    extra = dict(extra or {})
    prepare_out_dir(out, overwrite)
    step(f"write the tables, programs.md and the heatmap into {out}")
    genes = progs.genes_table(top)
    comps = progs.compounds_table(top)
    files = {k: out / name for k, name in FILES.items()}
    with atomic_path(files["genes"]) as tmp:
        genes.to_parquet(tmp, index=False)
    with atomic_path(files["compounds"]) as tmp:
        comps.to_parquet(tmp, index=False)
    md = programs_markdown(progs, genes, comps, source, annotations=extra.get("annotations"))
    write_text(files["markdown"], md)
    plot_programs(progs, files["heatmap"])
    write_json(files["manifest"], provenance(
        command=COMMAND, seed=seed, data_fingerprint=extra.pop("data_fingerprint", None),
        config={"rank": progs.rank, "top": top, "source": source, "max_iter": progs.max_iter, "tol": progs.tol,
                "nmf": "sklearn NMF nndsvda/cd of [max(R,0) | max(-R,0)]"},
        nmf=progs.convergence(), converged=progs.converged, n_iter=progs.n_iter,
        frobenius_share=progs.frobenius_share, squared_share=progs.squared_share,
        up_share=[float(x) for x in progs.up_share],
        n_compounds=len(progs.compounds), n_genes=len(progs.genes),
        input_fingerprint=fingerprint_arrays(progs.compounds, progs.genes),
        files=sorted(p.name for p in files.values()), **extra,
    ))
    return ProgramsResult(programs=progs, genes=genes, compounds=comps, markdown=md, files=files)


def run_programs(
    out: str | Path, *, data: str | Path | None = None, predictions: str | Path | None = None,
    rank: int = 8, top: int = 20, gene_symbols: str | Path | None = None, builtin_symbols: bool = True,
    compound_names: str | Path | None = None, seed: int = 0, max_iter: int = 500, tol: float = 1e-4,
    overwrite: bool = False,
) -> ProgramsResult:
    """What ``drugcell programs`` does: load the matrix, name genes and compounds, factor, write the report.

    ``gene_symbols`` and ``compound_names`` are mapping files (see :mod:`drugcell.programs.annotate`).
    """
    if top < 1:
        raise DrugcellInputError(f"--top must be at least 1, got {top}")
    check_out_dir(Path(out), overwrite)  # refuse before the work, not after it
    step("load the " + ("held-out predictions" if predictions is not None else "measured profiles"))
    inp = load_program_input(data, predictions)
    step(f"name {len(inp.genes):,} genes and {len(inp.compounds):,} compounds")
    sym = annotate.gene_symbols(inp.genes, gene_symbols, builtin=builtin_symbols)
    names = annotate.compound_names(inp.compounds, compound_names, cache_inputs=inp.cache_inputs)
    step(f"signed NMF, rank {rank}, of the {len(inp.compounds):,} x {len(inp.genes):,} residual (up to {max_iter} "
         "iterations)")
    progs = gene_programs(inp.X, inp.compounds, inp.genes, rank=rank, seed=seed,
                          symbols=np.where(sym.values == "", inp.genes, sym.values), smiles=inp.smiles,
                          names=names.values, max_iter=max_iter, tol=tol, warn=False)
    extra = {"data_fingerprint": inp.data_fingerprint, "inputs": inp.paths,
             "gene_symbols": None if gene_symbols is None else str(gene_symbols),
             "compound_names": None if compound_names is None else str(compound_names),
             "annotations": {"gene symbols": sym.as_dict(), "compound names": names.as_dict()}}
    return write_programs(progs, out, top=top, source=inp.source, seed=seed, extra=extra, overwrite=overwrite)
