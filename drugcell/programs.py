"""Gene programs: NMF of the magnitude of the chemistry-driven residual (``drugcell programs``).

Why the magnitude: the residual R = X - mean profile (compounds x genes) says how each compound
moves each gene away from the average drug response; its sign differs between compounds that
push a program up and those that push it down, but both mark the same genes as *responsive*.
|R| is non-negative, so scikit-learn's NMF factors it as |R| ~ W H with W (compounds x k) the
program activity per compound and H (k x genes) the program's gene loadings.

Two shares of the norm are reported, both computed on |R|:

    frobenius_share = 1 - ||A - WH||_F / ||A||_F        (the norm itself; the headline figure)
    squared_share   = 1 - ||A - WH||_F^2 / ||A||_F^2    (the "variance explained" analogue)

with A = |R|. Programs are normalised so each row of H has unit L2 norm (W absorbs the scale)
and ordered by the Frobenius norm of their rank-one part W[:, k] H[k] (largest first).

Input is either an ExpressionSet (the truth: measured responses) or a CV run's held-out
predictions (``RUN/predictions/<name>.npy``: what a model attributes to chemistry). In both
cases the mean profile is the column mean of that same matrix.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from drugcell.defaults import COMPOUND_COL, GENE_COL, SMILES_COL
from drugcell.errors import DrugcellInputError
from drugcell.outputs import check_folder_output, manifest_command
from drugcell.provenance import atomic_dir, atomic_path, fingerprint_arrays, provenance, write_json, write_text

#: Column names accepted in a gene-symbol mapping file (first match wins).
ID_COLUMNS = (GENE_COL, "ensembl_id", "ensembl_gene_id", "ensembl", "gene")
SYMBOL_COLUMNS = ("gene_symbol", "symbol", "gene_name", "pr_gene_symbol", "hgnc_symbol", "name")


@dataclass
class GenePrograms:
    """A fitted factorisation |R| ~ W H with the ids needed to read it."""

    W: np.ndarray  # (C, k) program activity per compound, >= 0
    H: np.ndarray  # (k, G) gene loadings, >= 0, each row unit L2 norm
    compounds: np.ndarray  # (C,) str
    genes: np.ndarray  # (G,) str (Ensembl ids)
    symbols: np.ndarray  # (G,) str: symbol where mapped, the gene id otherwise
    smiles: np.ndarray  # (C,) str ("" when unknown)
    frobenius_share: float  # 1 - ||A - WH||_F / ||A||_F
    squared_share: float  # 1 - ||A - WH||_F^2 / ||A||_F^2
    program_norms: np.ndarray  # (k,) ||W[:, k] H[k]||_F, descending
    n_iter: int = 0
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def rank(self) -> int:
        return self.H.shape[0]

    def genes_table(self, top: int = 20) -> pd.DataFrame:
        """Top ``top`` genes per program: program, rank, gene_id, symbol, loading, share_of_program."""
        rows = []
        for k in range(self.rank):
            h = self.H[k]
            order = np.argsort(-h, kind="stable")[: min(top, h.size)]
            total = float(h.sum()) or 1.0
            for r, g in enumerate(order, start=1):
                rows.append((k + 1, r, str(self.genes[g]), str(self.symbols[g]), float(h[g]), float(h[g]) / total))
        return pd.DataFrame(rows, columns=["program", "rank", GENE_COL, "symbol", "loading", "share_of_program"])

    def compounds_table(self, top: int = 20) -> pd.DataFrame:
        """Top ``top`` compounds per program: program, rank, compound, smiles, activity."""
        rows = []
        for k in range(self.rank):
            w = self.W[:, k]
            order = np.argsort(-w, kind="stable")[: min(top, w.size)]
            for r, c in enumerate(order, start=1):
                rows.append((k + 1, r, str(self.compounds[c]), str(self.smiles[c]), float(w[c])))
        return pd.DataFrame(rows, columns=["program", "rank", COMPOUND_COL, SMILES_COL, "activity"])


# ----------------------------------------------------------------------------- arithmetic
def residual_magnitude(X: np.ndarray, mean: np.ndarray | None = None) -> np.ndarray:
    """|X - mean profile| as float32 (mean defaults to the column mean of X), computed in row blocks."""
    X = np.asarray(X)
    if X.ndim != 2:
        raise DrugcellInputError(f"expected a compounds x genes matrix, got shape {X.shape}")
    if mean is None:
        mean = X.mean(axis=0, dtype=np.float64)
    mean = np.asarray(mean, dtype=np.float64)
    out = np.empty(X.shape, dtype=np.float32)
    for lo in range(0, X.shape[0], 2048):
        out[lo : lo + 2048] = np.abs(np.asarray(X[lo : lo + 2048], dtype=np.float64) - mean)
    return out


def _sum_squares(A: np.ndarray, block: int = 2048) -> float:
    """sum(A**2) in float64, converting one row block at a time (no full-size float64 copy)."""
    total = 0.0
    for lo in range(0, A.shape[0], block):
        a = np.asarray(A[lo : lo + block], dtype=np.float64)
        total += float(np.einsum("ij,ij->", a, a))
    return total


def norm_shares(A: np.ndarray, W: np.ndarray, H: np.ndarray) -> tuple[float, float]:
    """(1 - ||A - WH||_F / ||A||_F, 1 - ||A - WH||_F^2 / ||A||_F^2); (0, 0) when A is all zero."""
    A = np.asarray(A)
    total = _sum_squares(A)
    if total == 0:
        return 0.0, 0.0
    H = np.asarray(H, dtype=np.float64)
    err = 0.0
    for lo in range(0, A.shape[0], 2048):  # row blocks: no full-size float64 copy of A or WH
        d = np.asarray(A[lo : lo + 2048], dtype=np.float64) - np.asarray(W[lo : lo + 2048], dtype=np.float64) @ H
        err += float(np.einsum("ij,ij->", d, d))
    return 1.0 - np.sqrt(err / total), 1.0 - err / total


def fit_nmf(A: np.ndarray, rank: int = 8, *, seed: int = 0, max_iter: int = 500,
            tol: float = 1e-4) -> tuple[np.ndarray, np.ndarray, int]:
    """scikit-learn NMF (nndsvda init, coordinate descent) -> (W, H, n_iter), normalised and ordered.

    H rows get unit L2 norm (W absorbs the scale), then programs are sorted by the norm of
    their rank-one part so program 1 is the largest.
    """
    from sklearn.decomposition import NMF

    A = np.asarray(A, dtype=np.float32)
    if rank < 1:
        raise DrugcellInputError(f"--rank must be at least 1, got {rank}")
    if rank > min(A.shape):
        raise DrugcellInputError(
            f"--rank {rank} exceeds min(compounds, genes) = {min(A.shape)}; choose a smaller rank")
    if (A < 0).any() or not np.isfinite(A).all():
        raise DrugcellInputError("NMF needs a finite, non-negative matrix (pass |residual|)")
    model = NMF(n_components=rank, init="nndsvda", solver="cd", max_iter=max_iter, tol=tol,
                random_state=seed)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Maximum number of iterations")
        W = model.fit_transform(A).astype(np.float64)
    H = model.components_.astype(np.float64)
    scale = np.linalg.norm(H, axis=1)
    scale[scale == 0] = 1.0
    H = H / scale[:, None]
    W = W * scale[None, :]
    norms = np.linalg.norm(W, axis=0)  # ||w h^T||_F = ||w|| ||h|| = ||w||
    order = np.argsort(-norms, kind="stable")
    return W[:, order].astype(np.float32), H[order].astype(np.float32), int(model.n_iter_)


def gene_programs(
    X: np.ndarray, compounds, genes, *, rank: int = 8, seed: int = 0, symbols=None, smiles=None,
    mean: np.ndarray | None = None, max_iter: int = 500,
) -> GenePrograms:
    """NMF programs of |X - mean profile| (compounds x genes): the library entry point."""
    compounds = np.asarray(compounds).astype(str)
    genes = np.asarray(genes).astype(str)
    X = np.asarray(X)
    if X.shape != (len(compounds), len(genes)):
        raise DrugcellInputError(
            f"matrix shape {X.shape} does not match {len(compounds)} compounds x {len(genes)} genes")
    A = residual_magnitude(X, mean)
    W, H, n_iter = fit_nmf(A, rank, seed=seed, max_iter=max_iter)
    share, sq = norm_shares(A, W, H)
    return GenePrograms(
        W=W, H=H, compounds=compounds, genes=genes,
        symbols=genes.copy() if symbols is None else np.asarray(symbols).astype(str),
        smiles=np.full(len(compounds), "", dtype=object) if smiles is None else np.asarray(smiles).astype(str),
        frobenius_share=share, squared_share=sq,
        program_norms=np.linalg.norm(W.astype(np.float64), axis=0), n_iter=n_iter,
        info={"residual_fro_norm": float(np.sqrt(_sum_squares(A)))},
    )


# ----------------------------------------------------------------------------- inputs
def read_gene_symbols(path: str | Path, genes) -> np.ndarray:
    """Symbol per gene from a CSV (``gene_id``/``ensembl_id`` + ``gene_symbol``/``symbol``).

    The id column is whichever candidate column matches the most of ``genes`` (so
    ``landmark_geneinfo.csv``, whose ``gene_id`` is Entrez and ``ensembl_id`` Ensembl, works).
    Unmapped genes keep their id.
    """
    path = Path(path)
    genes = np.asarray(genes).astype(str)
    if not path.is_file():
        raise DrugcellInputError(f"gene symbol file {path} not found")
    try:
        df = pd.read_csv(path, dtype=str)
    except Exception as exc:  # noqa: BLE001  (pandas raises many types for a bad CSV)
        raise DrugcellInputError(f"{path}: not a readable CSV ({exc})") from None
    cols = {c.lower(): c for c in df.columns}
    sym_col = next((cols[c] for c in SYMBOL_COLUMNS if c in cols), None)
    if sym_col is None:
        raise DrugcellInputError(
            f"{path}: no symbol column; expected one of {', '.join(SYMBOL_COLUMNS)} (found {list(df.columns)})")
    wanted = set(genes.tolist())
    best, best_hits = None, 0
    for c in ID_COLUMNS:
        if c in cols and cols[c] != sym_col:
            ids = df[cols[c]].astype(str).str.split(".").str[0]  # drop Ensembl version suffixes
            hits = len(wanted & set(ids))
            if hits > best_hits:
                best, best_hits = cols[c], hits
    if best is None:
        raise DrugcellInputError(
            f"{path}: no id column ({', '.join(ID_COLUMNS)}) matches any gene id of the data "
            f"(e.g. {genes[0] if len(genes) else '?'}); pass a mapping keyed by the same ids")
    keys = df[best].astype(str).str.split(".").str[0]
    mapping = dict(zip(keys, df[sym_col].fillna("").astype(str)))
    return np.array([mapping.get(g) or g for g in genes], dtype=object)


@dataclass
class ProgramInput:
    """The matrix to factor and what it is."""

    X: np.ndarray
    compounds: np.ndarray
    genes: np.ndarray
    smiles: np.ndarray
    source: str  # "truth" or "predictions:<name>"
    data_fingerprint: str | None
    paths: dict[str, str]


def load_program_input(data: str | Path | None = None, predictions: str | Path | None = None) -> ProgramInput:
    """The truth of an ExpressionSet cache, or a CV run's held-out predictions.

    Predictions (``RUN/predictions/<name>.npy``, ExpressionSet row order) take their compound
    ids from ``RUN/folds.parquet`` and their genes from ``data`` or else the cache the run's
    manifest names; the cache's fingerprint must equal the run's.
    """
    from drugcell.data.expression_set import ExpressionSet

    if data is None and predictions is None:
        raise DrugcellInputError(
            "pass --data CACHE_DIR (programs of the truth) or --predictions RUN/predictions/NAME.npy")
    if predictions is None:
        es = ExpressionSet.load(data, mmap=True)
        return ProgramInput(X=es.expression, compounds=es.compounds, genes=es.genes, smiles=es.smiles,
                            source="truth", data_fingerprint=es.fingerprint(), paths={"data": str(data)})

    pred_path = Path(predictions)
    if not pred_path.is_file() or pred_path.suffix != ".npy":
        raise DrugcellInputError(
            f"{pred_path}: not a predictions file; pass RUN/predictions/<name>.npy from a "
            "`drugcell cv` run with output.save_predictions = true")
    run = pred_path.parent.parent
    man_path = run / "manifest.json"
    folds_path = run / "folds.parquet"
    if not man_path.is_file() or not folds_path.is_file():
        raise DrugcellInputError(
            f"{pred_path}: expected it inside a CV run dir with manifest.json and folds.parquet at {run}")
    manifest = json.loads(man_path.read_text())
    folds = pd.read_parquet(folds_path, columns=[COMPOUND_COL, SMILES_COL])
    if data is None:
        data = (manifest.get("data_info") or {}).get("path")
        if not data:
            raise DrugcellInputError(
                f"{man_path} does not name the ExpressionSet cache of the run; pass --data CACHE_DIR for the gene ids")
        if not (Path(data) / "manifest.json").is_file():
            raise DrugcellInputError(
                f"{man_path} names the ExpressionSet cache {data!r}, which is not found from here "
                f"({Path.cwd()}); pass --data CACHE_DIR for the gene ids")
    es = ExpressionSet.load(data, mmap=True)
    run_fp = manifest.get("data_fingerprint")
    if run_fp and run_fp != es.fingerprint():
        raise DrugcellInputError(
            f"{data}: data fingerprint {es.fingerprint()} differs from the run's {run_fp} ({man_path}); "
            "pass the --data cache the CV run used")
    X = np.load(pred_path, mmap_mode="r", allow_pickle=False)
    if X.shape != (len(folds), es.n_genes):
        raise DrugcellInputError(
            f"{pred_path}: shape {X.shape}, expected {len(folds)} compounds (folds.parquet) x {es.n_genes} genes")
    return ProgramInput(X=X, compounds=folds[COMPOUND_COL].astype(str).to_numpy(), genes=es.genes,
                        smiles=folds[SMILES_COL].astype(str).to_numpy(), source=f"predictions:{pred_path.stem}",
                        data_fingerprint=es.fingerprint(), paths={"data": str(data), "predictions": str(pred_path)})


# ----------------------------------------------------------------------------- outputs
def plot_programs(progs: GenePrograms, path: str | Path | None = None, *, genes_per_program: int = 5,
                  compounds_per_program: int = 3):
    """Two heatmaps: programs x their top genes (loadings), top compounds x programs (activity)."""
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
        for g in np.argsort(-progs.H[k], kind="stable")[:genes_per_program]:
            if g not in gsel:
                gsel.append(int(g))
    csel: list[int] = []
    for k in range(progs.rank):
        for c in np.argsort(-progs.W[:, k], kind="stable")[:compounds_per_program]:
            if c not in csel:
                csel.append(int(c))
    Hs = progs.H[:, gsel]
    Ws = progs.W[csel] / np.maximum(progs.W[csel].max(axis=1, keepdims=True), 1e-12)
    width = max(8.0, 0.22 * len(gsel) + 3)
    fig = make_figure(figsize=(width, 3 + 0.35 * progs.rank + 0.18 * len(csel)))
    ax, bx = fig.subplots(2, 1, gridspec_kw={"height_ratios": [progs.rank, max(len(csel), 1) * 0.6]})
    im = ax.imshow(Hs, aspect="auto", cmap="viridis", interpolation="nearest")
    ax.set_yticks(range(progs.rank), [f"P{k + 1}" for k in range(progs.rank)])
    ax.set_xticks(range(len(gsel)), [str(progs.symbols[g]) for g in gsel], rotation=90, fontsize=7)
    ax.set_title(f"gene loadings of the top {genes_per_program} genes per program "
                 f"(|residual| NMF, rank {progs.rank}, norm share {progs.frobenius_share:.2f})")
    fig.colorbar(im, ax=ax, fraction=0.02, pad=0.01)
    im2 = bx.imshow(Ws, aspect="auto", cmap="magma", interpolation="nearest")
    bx.set_xticks(range(progs.rank), [f"P{k + 1}" for k in range(progs.rank)])
    bx.set_yticks(range(len(csel)), [str(progs.compounds[c]) for c in csel], fontsize=6)
    bx.set_title(f"top {compounds_per_program} compounds per program: activity / row max")
    fig.colorbar(im2, ax=bx, fraction=0.02, pad=0.01)
    fig.tight_layout()
    if path is not None:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=120, format="png")
    return fig


def programs_markdown(progs: GenePrograms, genes: pd.DataFrame, comps: pd.DataFrame, source: str,
                      show: int = 10) -> str:
    """The readable report: shares, then per program its top genes and compounds."""
    lines = [
        "# drugcell programs",
        "",
        f"NMF (scikit-learn, nndsvda init, cd solver, {progs.n_iter} iterations) of |{source} - mean profile| "
        f"over {len(progs.compounds):,} compounds x {len(progs.genes):,} genes, rank {progs.rank}.",
        "",
        f"- norm share captured, 1 - ||A - WH||_F / ||A||_F: **{progs.frobenius_share:.4f}**",
        f"- squared share, 1 - ||A - WH||_F^2 / ||A||_F^2: {progs.squared_share:.4f}",
        "",
        "| program | norm of W_k H_k | top genes | top compounds |",
        "|---|---|---|---|",
    ]
    for k in range(progs.rank):
        g = genes[genes["program"] == k + 1].head(show)
        c = comps[comps["program"] == k + 1].head(min(show, 5))
        lines.append(f"| P{k + 1} | {progs.program_norms[k]:.4g} | {', '.join(g['symbol'])} | "
                     f"{', '.join(c['compound'])} |")
    return "\n".join(lines) + "\n"


@dataclass
class ProgramsResult:
    programs: GenePrograms
    genes: pd.DataFrame
    compounds: pd.DataFrame
    markdown: str
    files: dict[str, Path]


def check_programs_dir(out: str | Path, overwrite: bool) -> bool:
    """``--out`` must be new or empty, or an earlier ``drugcell programs`` output (replaced only with
    ``overwrite``); drugcell never writes into another folder (a CV run, a cache, the user's)."""
    return check_folder_output(out, overwrite, what="--out", kind="`drugcell programs` output",
                               is_ours=lambda p: manifest_command(p / "manifest.json") == "drugcell programs")


def write_programs(progs: GenePrograms, out: str | Path, *, top: int = 20, source: str = "truth",
                   seed: int = 0, extra: dict[str, Any] | None = None, overwrite: bool = False) -> ProgramsResult:
    """programs_genes.parquet, programs_compounds.parquet, programs.md, programs_heatmap.png,
    manifest.json under ``out``, built in a temporary folder that replaces ``out`` whole
    (:func:`check_programs_dir` says when it may)."""
    out = Path(out)
    check_programs_dir(out, overwrite)
    genes, comps = progs.genes_table(top), progs.compounds_table(top)
    md = programs_markdown(progs, genes, comps, source)
    with atomic_dir(out) as tmp:
        names = _write_program_files(progs, tmp, genes, comps, md, top=top, source=source, seed=seed, extra=extra)
    return ProgramsResult(programs=progs, genes=genes, compounds=comps, markdown=md,
                          files={k: out / name for k, name in names.items()})


def _write_program_files(progs: GenePrograms, out: Path, genes: pd.DataFrame, comps: pd.DataFrame, md: str, *,
                         top: int, source: str, seed: int, extra: dict[str, Any] | None) -> dict[str, str]:
    files = {
        "genes": out / "programs_genes.parquet",
        "compounds": out / "programs_compounds.parquet",
        "markdown": out / "programs.md",
        "heatmap": out / "programs_heatmap.png",
        "manifest": out / "manifest.json",
    }
    with atomic_path(files["genes"]) as tmp:
        genes.to_parquet(tmp, index=False)
    with atomic_path(files["compounds"]) as tmp:
        comps.to_parquet(tmp, index=False)
    write_text(files["markdown"], md)
    plot_programs(progs, files["heatmap"])
    write_json(files["manifest"], provenance(
        command="drugcell programs", seed=seed,
        data_fingerprint=(extra or {}).get("data_fingerprint"),
        config={"rank": progs.rank, "top": top, "source": source, "nmf": "sklearn NMF nndsvda/cd"},
        frobenius_share=progs.frobenius_share, squared_share=progs.squared_share,
        n_compounds=len(progs.compounds), n_genes=len(progs.genes), n_iter=progs.n_iter,
        input_fingerprint=fingerprint_arrays(progs.compounds, progs.genes),
        files=sorted(p.name for p in files.values()), **{k: v for k, v in (extra or {}).items()
                                                          if k != "data_fingerprint"},
    ))
    return {k: p.name for k, p in files.items()}


def run_programs(
    out: str | Path, *, data: str | Path | None = None, predictions: str | Path | None = None,
    rank: int = 8, top: int = 20, gene_symbols: str | Path | None = None, seed: int = 0,
    max_iter: int = 500, overwrite: bool = False,
) -> ProgramsResult:
    """What ``drugcell programs`` does: load the matrix, factor |residual|, write the report."""
    if top < 1:
        raise DrugcellInputError(f"--top must be at least 1, got {top}")
    check_programs_dir(out, overwrite)  # before loading and factoring
    inp = load_program_input(data, predictions)
    symbols = read_gene_symbols(gene_symbols, inp.genes) if gene_symbols is not None else None
    progs = gene_programs(inp.X, inp.compounds, inp.genes, rank=rank, seed=seed, symbols=symbols,
                          smiles=inp.smiles, max_iter=max_iter)
    extra = {"data_fingerprint": inp.data_fingerprint, "inputs": inp.paths,
             "gene_symbols": None if gene_symbols is None else str(gene_symbols)}
    return write_programs(progs, out, top=top, source=inp.source, seed=seed, extra=extra, overwrite=overwrite)
