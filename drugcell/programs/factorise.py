"""Signed gene programs: NMF of the up and the down parts of the chemistry-driven residual.

Why signed: the residual R = X - mean profile (compounds x genes) says how each compound moves each
gene, and a biologist reads a program as "these genes go up, those go down". Factoring |R| (as
drugcell once did) put up- and down-regulated genes into one unsigned program. Here the
non-negative matrix is the two parts side by side,

    A = [max(R, 0) | max(-R, 0)]      (compounds x 2 genes)

and scikit-learn's NMF factors A ~ W [H_up | H_down]. Program k is a signed gene loading
H_up[k] - H_down[k] (its up genes and its down genes) with a non-negative activity W[:, k] per
compound: a compound that drives it raises the up genes and lowers the down genes together. A
compound that moves the same genes the other way is held by a mirrored program (up and down
swapped), so opposite effects never share a program. Two separate NMFs of the parts would lose the
co-regulation of up and down genes within one response; stacking keeps it in one fit. The parts
have disjoint support, so ||A||_F = ||R||_F and the shares below are shares of the residual's norm:

    frobenius_share = 1 - ||A - WH||_F / ||A||_F        (the headline figure)
    squared_share   = 1 - ||A - WH||_F^2 / ||A||_F^2    (the "variance explained" analogue)

Each program's stacked loading [H_up | H_down] has unit L2 norm (W absorbs the scale); programs are
ordered by the Frobenius norm of their rank-one part, largest first. Whether the fit converged is
reported (scikit-learn's ConvergenceWarning is captured, not hidden).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from drugcell.defaults import COMPOUND_COL, GENE_COL, SMILES_COL
from drugcell.errors import DrugcellInputError

_BLOCK = 2048  # rows converted to float64 at a time: no full-size float64 copy of a big matrix
CHECK_ITER = 10  # extra iterations run after a fit that did not converge, to say how much stopping cost


@dataclass
class GenePrograms:
    """A fitted signed factorisation [R+ | R-] ~ W [H_up | H_down] with the ids needed to read it."""

    W: np.ndarray  # (C, k) program activity per compound, >= 0
    H_up: np.ndarray  # (k, G) loadings of the genes a program raises, >= 0
    H_down: np.ndarray  # (k, G) loadings of the genes it lowers, >= 0; [H_up | H_down] rows have unit norm
    compounds: np.ndarray  # (C,) str
    genes: np.ndarray  # (G,) str (Ensembl ids)
    symbols: np.ndarray  # (G,) str: symbol where mapped, the gene id otherwise
    smiles: np.ndarray  # (C,) str ("" when unknown)
    frobenius_share: float  # 1 - ||A - WH||_F / ||A||_F
    squared_share: float  # 1 - ||A - WH||_F^2 / ||A||_F^2
    program_norms: np.ndarray  # (k,) ||W[:, k] H[k]||_F, descending
    n_iter: int = 0
    max_iter: int = 0
    tol: float = 0.0
    converged: bool = True
    convergence_warning: str | None = None  # scikit-learn's ConvergenceWarning text, when it warned
    error_drift: float | None = None  # not converged: relative error drop over CHECK_ITER more iterations
    reconstruction_error: float = float("nan")  # ||A - WH||_F
    names: np.ndarray | None = None  # (C,) compound names, "" when unknown
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def rank(self) -> int:
        return self.H_up.shape[0]

    @property
    def H(self) -> np.ndarray:
        """(k, G) signed loadings: up genes > 0, down genes < 0."""
        return self.H_up - self.H_down

    @property
    def up_share(self) -> np.ndarray:
        """(k,) share of each program's squared loading on its up genes (1: all up, 0: all down)."""
        up = np.einsum("kg,kg->k", self.H_up.astype(np.float64), self.H_up.astype(np.float64))
        down = np.einsum("kg,kg->k", self.H_down.astype(np.float64), self.H_down.astype(np.float64))
        return up / np.maximum(up + down, 1e-300)

    def compound_names(self) -> np.ndarray:
        return np.full(len(self.compounds), "", dtype=object) if self.names is None else self.names

    def convergence(self) -> dict[str, Any]:
        """What the manifest and the report say about the fit."""
        return {"n_iter": int(self.n_iter), "max_iter": int(self.max_iter), "tol": float(self.tol),
                "converged": bool(self.converged), "convergence_warning": self.convergence_warning,
                "error_drift": self.error_drift, "error_drift_iterations": CHECK_ITER,
                "reconstruction_error": float(self.reconstruction_error)}

    def genes_table(self, top: int = 20) -> pd.DataFrame:
        """Top ``top`` up and top ``top`` down genes per program (genes with a zero loading left out):
        program, direction, rank, gene_id, symbol, loading (signed: down < 0), share_of_program
        (|loading| over the sum of the program's up and down loadings)."""
        rows = []
        for k in range(self.rank):
            total = float(self.H_up[k].sum() + self.H_down[k].sum()) or 1.0
            for direction, h, sign in (("up", self.H_up[k], 1.0), ("down", self.H_down[k], -1.0)):
                order = np.argsort(-h, kind="stable")[: min(top, h.size)]
                for r, g in enumerate(order[h[order] > 0], start=1):
                    rows.append((k + 1, direction, r, str(self.genes[g]), str(self.symbols[g]),
                                 sign * float(h[g]), float(h[g]) / total))
        return pd.DataFrame(rows, columns=["program", "direction", "rank", GENE_COL, "symbol", "loading",
                                           "share_of_program"])

    def compounds_table(self, top: int = 20) -> pd.DataFrame:
        """Top ``top`` compounds per program: program, rank, compound, compound_name, smiles, activity."""
        names = self.compound_names()
        rows = []
        for k in range(self.rank):
            w = self.W[:, k]
            order = np.argsort(-w, kind="stable")[: min(top, w.size)]
            for r, c in enumerate(order, start=1):
                rows.append((k + 1, r, str(self.compounds[c]), str(names[c]), str(self.smiles[c]), float(w[c])))
        return pd.DataFrame(rows, columns=["program", "rank", COMPOUND_COL, "compound_name", SMILES_COL, "activity"])


# ----------------------------------------------------------------------------- arithmetic
def _check_matrix(X) -> np.ndarray:
    X = np.asarray(X)
    if X.ndim != 2:
        raise DrugcellInputError(f"expected a compounds x genes matrix, got shape {X.shape}")
    return X


def _mean_profile(X: np.ndarray, mean: np.ndarray | None) -> np.ndarray:
    return np.asarray(X.mean(axis=0, dtype=np.float64) if mean is None else mean, dtype=np.float64)


def signed_parts(X: np.ndarray, mean: np.ndarray | None = None) -> np.ndarray:
    """[max(R, 0) | max(-R, 0)] with R = X - mean profile (column mean of X by default): the
    (C, 2G) float32 matrix the signed NMF factors, computed in row blocks."""
    X = _check_matrix(X)
    mean = _mean_profile(X, mean)
    G = X.shape[1]
    out = np.empty((X.shape[0], 2 * G), dtype=np.float32)
    for lo in range(0, X.shape[0], _BLOCK):
        r = np.asarray(X[lo : lo + _BLOCK], dtype=np.float64) - mean
        out[lo : lo + _BLOCK, :G] = np.maximum(r, 0.0)
        out[lo : lo + _BLOCK, G:] = np.maximum(-r, 0.0)
    return out


def residual_magnitude(X: np.ndarray, mean: np.ndarray | None = None) -> np.ndarray:
    """|X - mean profile| as float32: the unsigned matrix, kept to compare against (it merges up and down)."""
    X = _check_matrix(X)
    mean = _mean_profile(X, mean)
    out = np.empty(X.shape, dtype=np.float32)
    for lo in range(0, X.shape[0], _BLOCK):
        out[lo : lo + _BLOCK] = np.abs(np.asarray(X[lo : lo + _BLOCK], dtype=np.float64) - mean)
    return out


def _sum_squares(A: np.ndarray) -> float:
    """sum(A**2) in float64, converting one row block at a time."""
    total = 0.0
    for lo in range(0, A.shape[0], _BLOCK):
        a = np.asarray(A[lo : lo + _BLOCK], dtype=np.float64)
        total += float(np.einsum("ij,ij->", a, a))
    return total


def _error_squares(A: np.ndarray, W: np.ndarray, H: np.ndarray) -> float:
    """||A - WH||_F^2 in float64, one row block at a time."""
    H = np.asarray(H, dtype=np.float64)
    err = 0.0
    for lo in range(0, A.shape[0], _BLOCK):
        d = np.asarray(A[lo : lo + _BLOCK], dtype=np.float64) - np.asarray(W[lo : lo + _BLOCK], dtype=np.float64) @ H
        err += float(np.einsum("ij,ij->", d, d))
    return err


def norm_shares(A: np.ndarray, W: np.ndarray, H: np.ndarray) -> tuple[float, float]:
    """(1 - ||A - WH||_F / ||A||_F, 1 - ||A - WH||_F^2 / ||A||_F^2); (0, 0) when A is all zero."""
    A = np.asarray(A)
    total = _sum_squares(A)
    if total == 0:
        return 0.0, 0.0
    err = _error_squares(A, W, H)
    return 1.0 - np.sqrt(err / total), 1.0 - err / total


@dataclass(frozen=True)
class NMFFit:
    """W (C, k) and H (k, n) normalised and ordered, and how the fit ended."""

    W: np.ndarray
    H: np.ndarray
    n_iter: int
    max_iter: int
    tol: float
    converged: bool  # n_iter < max_iter and scikit-learn raised no ConvergenceWarning
    warning: str | None  # the ConvergenceWarning's text, when there was one
    #: when not converged: how much CHECK_ITER more iterations lower ||A - WH||_F (relative), i.e.
    #: whether stopping early cost anything (scikit-learn's criterion is relative to the first
    #: sweep's step, which a near-optimal start makes tiny, so it can fail on a fit that is done)
    error_drift: float | None = None


def _fit_capturing(model, A: np.ndarray, **init) -> tuple[np.ndarray, list[str]]:
    """model.fit_transform(A), with ConvergenceWarnings captured and returned (others passed on)."""
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        W = model.fit_transform(A, **init)
    messages = []
    for w in caught:
        if issubclass(w.category, ConvergenceWarning):
            messages.append(str(w.message))
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return W, messages


def fit_nmf(A: np.ndarray, rank: int = 8, *, seed: int = 0, max_iter: int = 500, tol: float = 1e-4) -> NMFFit:
    """scikit-learn NMF (nndsvda init, coordinate descent), normalised and ordered, with its convergence.

    H rows get unit L2 norm (W absorbs the scale), then programs are sorted by the norm of their
    rank-one part so program 1 is the largest.
    """
    from sklearn.decomposition import NMF

    A = np.asarray(A, dtype=np.float32)
    if rank < 1:
        raise DrugcellInputError(f"--rank must be at least 1, got {rank}")
    if rank > min(A.shape):
        raise DrugcellInputError(
            f"--rank {rank} exceeds min(compounds, columns) = {min(A.shape)}; choose a smaller rank")
    if max_iter < 1:
        raise DrugcellInputError(f"--max-iter must be at least 1, got {max_iter}")
    if (A < 0).any() or not np.isfinite(A).all():
        raise DrugcellInputError("NMF needs a finite, non-negative matrix (pass signed_parts(X) or |residual|)")
    model = NMF(n_components=rank, init="nndsvda", solver="cd", max_iter=max_iter, tol=tol, random_state=seed)
    W, messages = _fit_capturing(model, A)
    n_iter = int(model.n_iter_)
    converged = n_iter < max_iter and not messages
    drift = None if converged else _error_drift(model, A, W)
    W = W.astype(np.float64)
    H = model.components_.astype(np.float64)
    scale = np.linalg.norm(H, axis=1)
    scale[scale == 0] = 1.0
    H = H / scale[:, None]
    W = W * scale[None, :]
    norms = np.linalg.norm(W, axis=0)  # ||w h^T||_F = ||w|| ||h|| = ||w||
    order = np.argsort(-norms, kind="stable")
    return NMFFit(W=W[:, order].astype(np.float32), H=H[order].astype(np.float32), n_iter=n_iter,
                  max_iter=int(max_iter), tol=float(tol), converged=converged, warning="; ".join(messages) or None,
                  error_drift=drift)



def _error_drift(model, A: np.ndarray, W: np.ndarray) -> float:
    """(e - e') / e: e = ||A - WH||_F of the fit, e' after CHECK_ITER more iterations from (W, H)."""
    from sklearn.base import clone

    more = clone(model).set_params(init="custom", max_iter=CHECK_ITER)
    W2, _ = _fit_capturing(more, A, W=W.copy(), H=model.components_.copy())
    err = np.sqrt(_error_squares(A, W, model.components_))
    err2 = np.sqrt(_error_squares(A, W2, more.components_))
    return 0.0 if err == 0 else max(0.0, float((err - err2) / err))


def not_converged_message(progs: GenePrograms) -> str:
    """The line a non-converged fit prints: what happened, how much it matters, what to do."""
    drift = "" if progs.error_drift is None else (
        f"; {CHECK_ITER} more iterations lower the reconstruction error by {100 * progs.error_drift:.3g}%")
    return (f"NMF did not converge: it stopped at the iteration limit, {progs.n_iter} of at most {progs.max_iter} "
            f"(scikit-learn's tol {progs.tol:g} not reached){drift}. Rerun with a larger --max-iter "
            f"(e.g. {2 * max(progs.max_iter, 1)}) if the programs matter.")


def gene_programs(
    X: np.ndarray, compounds, genes, *, rank: int = 8, seed: int = 0, symbols=None, smiles=None, names=None,
    mean: np.ndarray | None = None, max_iter: int = 500, tol: float = 1e-4, warn: bool = True,
) -> GenePrograms:
    """Signed NMF programs of X - mean profile (compounds x genes): the library entry point.

    A fit that did not converge warns (scikit-learn's ConvergenceWarning, with what to do) unless
    ``warn`` is False; either way ``converged`` and ``n_iter`` say so.
    """
    compounds = np.asarray(compounds).astype(str)
    genes = np.asarray(genes).astype(str)
    X = _check_matrix(X)
    if X.shape != (len(compounds), len(genes)):
        raise DrugcellInputError(
            f"matrix shape {X.shape} does not match {len(compounds)} compounds x {len(genes)} genes")
    A = signed_parts(X, mean)
    fit = fit_nmf(A, rank, seed=seed, max_iter=max_iter, tol=tol)
    total = _sum_squares(A)
    err = _error_squares(A, fit.W, fit.H)
    G = len(genes)
    progs = GenePrograms(
        W=fit.W, H_up=fit.H[:, :G], H_down=fit.H[:, G:], compounds=compounds, genes=genes,
        symbols=genes.copy() if symbols is None else np.asarray(symbols).astype(str),
        smiles=np.full(len(compounds), "", dtype=object) if smiles is None else np.asarray(smiles).astype(str),
        names=None if names is None else np.asarray(names, dtype=object),
        frobenius_share=0.0 if total == 0 else 1.0 - float(np.sqrt(err / total)),
        squared_share=0.0 if total == 0 else 1.0 - err / total,
        program_norms=np.linalg.norm(fit.W.astype(np.float64), axis=0), n_iter=fit.n_iter, max_iter=fit.max_iter,
        tol=fit.tol, converged=fit.converged, convergence_warning=fit.warning, error_drift=fit.error_drift,
        reconstruction_error=float(np.sqrt(err)), info={"residual_fro_norm": float(np.sqrt(total))},
    )
    if warn and not progs.converged:
        from sklearn.exceptions import ConvergenceWarning

        warnings.warn(not_converged_message(progs), ConvergenceWarning, stacklevel=2)
    return progs
