"""Ridge's penalty: one spectrum of the centred features, then alpha by GCV or by grouped inner CV.

Why one decomposition: with the centred features Xc = U S V^T, every alpha's fit, hat-matrix
trace and residual norm are closed-form in (S, U^T Yc), so a whole curve over a log grid of
alphas, for all ~13k genes, costs a few matrix products instead of one solve per alpha.

    H(a)   = 11^T/n + Xc (Xc^T Xc + a I)^-1 Xc^T      (the intercept is not penalised)
    tr H   = 1 + sum_i d_i,   d_i = s_i^2 / (s_i^2 + a)
    RSS_g  = ||Yc_g||^2 - sum_i r_ig + sum_i (1 - d_i)^2 r_ig,   r = (U^T Yc)^2
    GCV(a) = RSS(a) / (n - tr H)^2       (summed over genes, or per gene)
    B(a)   = V diag(s / (s^2 + a)) U^T Yc

Two ways to pick alpha:

* ``gcv`` (:func:`gcv_ridge`): the leave-one-out shortcut. It goes optimistic when feature rows
  repeat (salts and stereoisomers share Morgan bits): a left-out row's twin is still in the fit.
  With ``dedupe=True`` identical rows are collapsed first: the collapsed problem (distinct rows,
  mean targets, weights = counts) has the same Gram matrix, the same X^T Yc and so the same
  spectrum and the same fit at every alpha; only its GCV differs, as
  ``(RSS(a) - S_within) / (U - tr H)^2`` with U distinct rows and S_within the (alpha-free) scatter
  of targets inside groups of identical rows. That is leave-one-*distinct-input*-out, each weighted
  by its count.
* ``grouped_cv`` (:func:`grouped_cv_curve`): K inner folds over whole scaffold groups, merged with
  groups of identical feature rows (so a duplicate never sits on both sides), scored under the
  run's metric (per-compound wMSE, mean over held-out compounds). Per inner fold the spectrum is
  computed once on the inner-train rows and every alpha of the grid is scored on the held-out rows.

Cost of ``grouped_cv`` per fit: per inner fold one spectrum (a ``min(n, p)``-sized
eigendecomposition, as in a GCV fit) plus, per alpha, one float32 (n_held x r) @ (r x cv_genes)
product, r = rank <= min(n, p); the scaffold/InChIKey keys of the molecules once per process.
Measured on the project's 2-core box (Morgan bits of real LINCS molecules, 41 alphas, 3 inner
folds, cv_genes = 2,000, machine otherwise quiet): 3,000 compounds x 2,000 genes: GCV fit 1.5-2 s,
grouped_cv fit 10-11 s; 11,000 compounds x 13,000 genes (one training fold of a 5-fold CV at the
contest's scale): GCV 14-17 s, grouped_cv 40 s (29 s with cv_genes = 1,000), plus 9 s once per
process for the molecule keys. With other jobs on the box, wall times doubled or worse.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from drugcell.errors import DrugcellInputError

_ROW_CHUNK = 2048  # rows of Y converted to float64 at a time (bounds the temporary copies)
_GENE_CHUNK = 2048  # genes per block when summing within-duplicate scatter


@dataclass
class RidgeFit:
    """A fitted multi-output ridge: ``pred = X @ coef + intercept``."""

    coef: np.ndarray  # (p, G) float32
    intercept: np.ndarray  # (G,) float64
    alpha: np.ndarray  # () global, or (G,) per gene
    alphas: np.ndarray  # the grid
    gcv: np.ndarray  # (A,) summed over genes, or (A, G) per gene (duplicate-collapsed when dedupe)
    sigma: np.ndarray  # (G,) residual std at the chosen alpha: RSS / (n - tr H)
    dof: np.ndarray  # () or (G,) effective degrees of freedom tr H at the chosen alpha
    mean_x: np.ndarray | None = None  # (p,) training feature mean (the centring)
    mean_y: np.ndarray | None = None  # (G,) training target mean (the plain-mean intercept's base)
    selection: str = "gcv"  # how alpha was chosen: "gcv" or "grouped_cv"
    cv: np.ndarray | None = None  # (A,) mean inner-CV wMSE per alpha (grouped_cv only)
    n_unique: int = 0  # distinct feature rows
    info: dict[str, float] = field(default_factory=dict)  # selection details (folds, genes, ...)


def as_operand(x: np.ndarray, dtype=np.float64):
    """Sparse CSR for mostly-zero features (Morgan bits/counts), dense otherwise.

    Converts straight from the featurizer's dtype (uint8 bits) so no dense float64 copy of a
    2048-column fingerprint matrix is ever made.
    """
    x = np.asarray(x)
    if x.size and np.count_nonzero(x) < 0.2 * x.size:
        return sp.csr_matrix(x, dtype=dtype)
    return x.astype(dtype, copy=False)


def default_alphas(s2_max: float, n_alphas: int = 41) -> np.ndarray:
    """Log grid from 1e-7 to 10 times the largest eigenvalue of Xc^T Xc: spans full fit to ~0 dof."""
    scale = s2_max if s2_max > 0 else 1.0
    return scale * np.logspace(-7, 1, n_alphas)


def spectrum(xo, y: np.ndarray):
    """Means, per-gene ||Yc||^2 and the thin SVD pieces (s^2, V, U^T Yc) of the centred X.

    Eigendecomposes whichever Gram matrix is smaller: Xc^T Xc (p x p) when n >= p, the kernel
    Xc Xc^T (n x n) otherwise. Y is read in row blocks converted to float64, so no full-size
    float64 copy of Y is ever made.
    """
    n, p = xo.shape
    n_genes = y.shape[1]
    mean_x = np.asarray(xo.mean(axis=0)).ravel()
    mean_y = np.zeros(n_genes)
    for lo in range(0, n, _ROW_CHUNK):
        mean_y += np.asarray(y[lo : lo + _ROW_CHUNK], dtype=np.float64).sum(axis=0)
    mean_y /= n
    ss_y = np.zeros(n_genes)

    def centred_blocks():
        for lo in range(0, n, _ROW_CHUNK):
            yb = np.asarray(y[lo : lo + _ROW_CHUNK], dtype=np.float64) - mean_y
            ss_y[:] += np.einsum("ij,ij->j", yb, yb)
            yield lo, yb

    if n >= p:
        gram = xo.T @ xo
        gram = np.asarray(gram.toarray() if sp.issparse(gram) else gram) - n * np.outer(mean_x, mean_x)
        s2, v = _top_eigen(gram)
        # Xc^T Yc = X^T Yc because the columns of Yc sum to zero; accumulate per row block.
        xty = np.zeros((p, n_genes))
        for lo, yb in centred_blocks():
            xty += np.asarray(xo[lo : lo + _ROW_CHUNK].T @ yb)
        uty = v.T @ xty
        del xty
        uty /= np.sqrt(s2)[:, None]
    else:
        a = np.asarray(xo @ mean_x).ravel()
        kern = xo @ xo.T
        kern = np.asarray(kern.toarray() if sp.issparse(kern) else kern)
        kern = kern - a[:, None] - a[None, :] + mean_x @ mean_x
        s2, u = _top_eigen(kern)
        uty = np.zeros((len(s2), n_genes))
        for lo, yb in centred_blocks():
            uty += u[lo : lo + _ROW_CHUNK].T @ yb
        v = (np.asarray(xo.T @ u) - np.outer(mean_x, u.sum(axis=0))) / np.sqrt(s2)[None, :]
    return mean_x, mean_y, ss_y, s2, v, uty


def _top_eigen(sym: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenpairs of a PSD matrix with eigenvalue above round-off (the numerical rank).

    scipy's LAPACK divide-and-conquer (the algorithm numpy's ``eigh`` uses too) ran 3x faster
    than ``numpy.linalg.eigh`` on a 2048 x 2048 Gram matrix on this project's 2-core box (6 s vs
    19 s): the eigendecomposition is the largest single cost of a ridge fit.
    """
    from scipy.linalg import eigh

    s2, vec = eigh((sym + sym.T) / 2, driver="evd", check_finite=False)
    keep = s2 > max(float(s2.max()), 0.0) * 1e-10 if s2.size else np.zeros(0, bool)
    return s2[keep], vec[:, keep]


# ------------------------------------------------------------------ duplicate feature rows
def duplicate_labels(x: np.ndarray) -> np.ndarray:
    """Group id per row: rows with byte-identical feature vectors share one id (0..U-1)."""
    a = np.asarray(x.toarray() if sp.issparse(x) else x)
    if a.ndim != 2:
        raise ValueError(f"features must be 2-D, got shape {a.shape}")
    if a.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    if np.issubdtype(a.dtype, np.floating):
        a = a + 0.0  # -0.0 and 0.0 are one value
    a = np.ascontiguousarray(a)
    rows = a.view(np.dtype((np.void, a.dtype.itemsize * a.shape[1]))).ravel()
    _, inverse = np.unique(rows, return_inverse=True)
    return inverse.ravel().astype(np.int64)


def within_duplicate_scatter(y: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per gene, sum over groups of identical rows of sum_i (y_i - group mean)^2 (float64)."""
    counts = np.bincount(labels)
    rows = np.flatnonzero(counts[labels] > 1)
    out = np.zeros(y.shape[1])
    if rows.size == 0:
        return out
    _, inv = np.unique(labels[rows], return_inverse=True)
    inv = inv.ravel()
    member = sp.csr_matrix((np.ones(rows.size), (inv, np.arange(rows.size))))
    size = np.asarray(member.sum(axis=1)).ravel()
    for lo in range(0, y.shape[1], _GENE_CHUNK):
        yb = np.asarray(y[rows, lo : lo + _GENE_CHUNK], dtype=np.float64)
        means = np.asarray(member @ yb) / size[:, None]
        yb -= means[inv]
        out[lo : lo + yb.shape[1]] = np.einsum("ij,ij->j", yb, yb)
    return out


# ------------------------------------------------------------------ fit
def _check_alphas(alphas: np.ndarray | None, s2: np.ndarray, n_alphas: int) -> np.ndarray:
    if alphas is None:
        alphas = default_alphas(float(s2.max()) if s2.size else 0.0, n_alphas)
    alphas = np.asarray(alphas, dtype=np.float64)
    if alphas.ndim != 1 or alphas.size == 0 or not np.all(alphas > 0):
        raise DrugcellInputError("ridge: alphas must be a non-empty list of positive numbers")
    return alphas


def _argmin_prefer_strong(curve: np.ndarray) -> int:
    """Index of the lowest value; among exact ties the largest alpha (the simpler model)."""
    curve = np.where(np.isfinite(curve), curve, np.inf)
    return int(len(curve) - 1 - np.argmin(curve[::-1]))


def gcv_ridge(
    x: np.ndarray,
    y: np.ndarray,
    alphas: np.ndarray | None = None,
    *,
    per_gene: bool = False,
    n_alphas: int = 41,
    dedupe: bool = False,
    chooser=None,
) -> RidgeFit:
    """Fit ridge (with unpenalised intercept) for all columns of ``y``; alpha by GCV.

    ``x`` (n, p) features, ``y`` (n, G) targets (float32 is fine; sums run in float64).
    ``dedupe``: GCV of the duplicate-collapsed problem (see the module docstring); the fit at any
    alpha is unchanged, and without duplicate rows so is everything else.
    ``chooser``: ``alphas -> (curve (A,), info dict)``, an alternative criterion to minimise
    (:func:`grouped_cv_curve`); the GCV curve is still computed and returned for diagnostics, and
    decides when the chooser returns ``None`` (no inner split possible) or a flat curve.
    """
    n, p = x.shape
    if y.shape[0] != n:
        raise ValueError(f"x has {n} rows but y has {y.shape[0]}")
    if n < 2:
        raise DrugcellInputError(f"ridge needs at least 2 training compounds with features, got {n}")
    if chooser is not None and per_gene:
        raise DrugcellInputError("ridge: a per-gene alpha is only available with GCV")
    n_genes = y.shape[1]
    labels = duplicate_labels(x) if dedupe or chooser is not None else np.arange(n)
    n_unique = int(labels.max()) + 1 if n else 0
    mean_x, mean_y, ss_y, s2, v, uty = spectrum(as_operand(x), y)
    s = np.sqrt(s2)
    r = uty * uty
    outside = np.maximum(ss_y - r.sum(axis=0), 0.0)  # part of Yc outside the column space
    alphas = _check_alphas(alphas, s2, n_alphas)
    d = s2[None, :] / (s2[None, :] + alphas[:, None])  # (A, r)
    dof = 1.0 + d.sum(axis=1)  # (A,)
    rss = ((1.0 - d) ** 2) @ r + outside[None, :]  # (A, G)
    del r
    rss_gcv, n_gcv = rss, n
    if dedupe and n_unique < n:
        rss_gcv = np.maximum(rss - within_duplicate_scatter(y, labels)[None, :], 0.0)
        n_gcv = n_unique
    denom = np.maximum(n_gcv - dof, 1e-12) ** 2
    cv, info, selection = None, {"n_duplicate_rows": float(n - n_unique)}, "gcv"
    if per_gene:
        gcv = rss_gcv / denom[:, None]
        best = np.argmin(gcv, axis=0)  # (G,)
        alpha = alphas[best]
        shrink = s[:, None] / (s2[:, None] + alpha[None, :])  # (r, G)
        uty *= shrink
        del shrink
        coef = v @ uty
        rss_best = rss[best, np.arange(n_genes)]
        dof_best = dof[best]
    else:
        gcv = rss_gcv.sum(axis=1) / denom
        best = int(np.argmin(gcv))
        if chooser is not None:
            picked = chooser(alphas)
            if picked is not None:
                cv, cv_info = picked
                info.update(cv_info)
                if np.isfinite(cv).all() and np.ptp(cv) > 0:  # flat (e.g. all-zero weights): keep GCV's
                    best, selection = _argmin_prefer_strong(cv), "grouped_cv"
        alpha = np.asarray(alphas[best])
        uty *= (s / (s2 + alpha))[:, None]
        coef = v @ uty
        rss_best = rss[best]
        dof_best = np.asarray(dof[best])
    del uty
    intercept = mean_y - mean_x @ coef
    sigma = np.sqrt(rss_best / max(n - float(np.max(dof_best)), 1.0))
    return RidgeFit(
        coef=coef.astype(np.float32), intercept=intercept, alpha=alpha, alphas=alphas, gcv=gcv,
        sigma=sigma.astype(np.float32), dof=dof_best, mean_x=mean_x, mean_y=mean_y,
        selection=selection, cv=cv, n_unique=n_unique, info=info,
    )


# ------------------------------------------------------------------ grouped inner CV
def _connected(*labelings: Sequence[object]) -> np.ndarray:
    """Group id per item: items sharing a label in any labeling end in one group (union-find)."""
    from scipy.sparse.csgraph import connected_components

    n = len(labelings[0])
    rows, cols, offset = [], [], n
    for labels in labelings:
        _, inv = np.unique(np.asarray(labels).astype(str), return_inverse=True)
        rows.append(np.arange(n))
        cols.append(offset + inv.ravel())
        offset += int(inv.max()) + 1 if n else 0
    r, c = np.concatenate(rows), np.concatenate(cols)
    graph = sp.coo_matrix((np.ones(len(r), dtype=np.int8), (r, c)), shape=(offset, offset))
    return connected_components(graph, directed=False)[1][:n].astype(np.int64)


def _molecule_keys(smiles: list[str]) -> tuple[list[str], list[str]]:
    """(InChIKey identity, Murcko scaffold) per SMILES, from the per-process cache of
    :func:`drugcell.chem.keys.identity_keys`: every outer fold and every ridge kind asks again for
    the same compounds, and InChI plus scaffold cost ~1.5 ms a molecule (16 s for 11,000 on a busy
    2-core box). An unparsed SMILES is its own group."""
    from drugcell.chem.keys import identity_keys

    keys, scaf, ok = identity_keys(smiles)
    return [k if good else f"\x00unparsed:{s}" for s, k, good in zip(smiles, keys, ok)], scaf


def inner_folds(smiles: Sequence[str], x: np.ndarray, n_folds: int, seed: int = 0
                ) -> tuple[np.ndarray, dict[str, float]] | None:
    """Inner fold id per training row: whole scaffold groups (as :func:`drugcell.splits.make_folds`
    builds them) merged with groups of identical feature rows, so neither a scaffold nor a
    duplicated input ever sits on both sides. Fewer scaffold groups than folds: molecule/duplicate
    groups only (a random split, as ``make_folds`` falls back); fewer folds when there are fewer
    groups than ``n_folds``; ``None`` when fewer than 2 groups (no CV possible).
    """
    from drugcell.splits.folds import group_kfold

    ident, scaf = _molecule_keys(list(smiles))
    dup = duplicate_labels(x)
    by_scaffold = [f"scaf:{s}" if s else ident[i] for i, s in enumerate(scaf)]
    groups, split = _connected(by_scaffold, ident, dup), 1.0
    if len(np.unique(groups)) < n_folds:
        groups, split = _connected(ident, dup), 0.0
    n_groups = len(np.unique(groups))
    k = min(int(n_folds), n_groups)
    if k < 2:
        return None
    folds = group_kfold(groups, n_folds=k, seed=seed)
    return folds, {"cv_folds": float(k), "cv_groups": float(n_groups), "cv_scaffold_split": split}


def grouped_cv_curve(
    x: np.ndarray,
    y: np.ndarray,
    alphas: np.ndarray,
    *,
    smiles: Sequence[str],
    weights_gc: np.ndarray | None,
    metric: str = "mejia",
    baseline: str = "wmean",
    n_folds: int = 3,
    cv_genes: int | None = 2000,
    seed: int = 0,
    clip: bool = True,
) -> tuple[np.ndarray, dict[str, float]] | None:
    """Mean per-compound held-out wMSE (under ``metric``) of ridge at each alpha, by inner folds.

    Predictions on the held-out rows are ``baseline + (x - mean_x) B(a)`` from the inner-train
    rows (baseline: their plain or weighted mean), clipped at 0 as :meth:`Predictor.predict` does
    (``clip``: the training set holds log2(CPM+1), not signed values),
    on a seeded random subset of ``cv_genes`` genes (all when fewer). Mejia weights of the held-out
    rows are rescaled per compound by (total weight / weight on the subset), the ratio estimate of
    its full-gene wMSE (a no-op with all genes). The curve is the mean over every held-out compound.
    ``None`` when no inner split is possible (the caller falls back to GCV).
    """
    from drugcell.metrics import metric_weights
    from drugcell.models.baselines import weighted_mean_profile

    n, n_genes = y.shape
    split = inner_folds(smiles, x, n_folds, seed)
    if split is None:
        return None
    folds, info = split
    genes = np.arange(n_genes)
    if cv_genes is not None and cv_genes < n_genes:
        genes = np.sort(np.random.default_rng(seed).choice(n_genes, size=int(cv_genes), replace=False))
    ys = np.asarray(y[:, genes], dtype=np.float32)
    ws = ws_scaled = None
    if weights_gc is not None:
        w_all = np.asarray(weights_gc, dtype=np.float32)
        ws = np.ascontiguousarray(w_all[genes])
        sub = ws.sum(axis=0, dtype=np.float64)
        total = w_all.sum(axis=0, dtype=np.float64) if len(genes) < n_genes else sub
        ws_scaled = ws * np.divide(total, sub, out=np.zeros_like(sub), where=sub > 0).astype(np.float32)
    xo = as_operand(x)
    total_wmse = np.zeros(len(alphas))
    n_scored = 0
    for k in np.unique(folds):
        tr, te = np.flatnonzero(folds != k), np.flatnonzero(folds == k)
        if tr.size < 2:
            continue
        mean_x, mean_y, _, s2, v, uty = spectrum(xo[tr], ys[tr])
        if baseline == "wmean":
            if ws is None:
                raise DrugcellInputError("ridge: baseline 'wmean' needs the training weights")
            base = weighted_mean_profile(ys[tr], ws[:, tr])
        else:
            base = mean_y.astype(np.float32)
        z = (np.asarray(xo[te] @ v) - mean_x @ v).astype(np.float32)  # (n_te, r)
        s = np.sqrt(s2)
        uty32 = uty.astype(np.float32)
        truth = ys[te]
        with warnings.catch_warnings():  # proxy warns on zero-variance genes of every inner fold
            warnings.simplefilter("ignore")
            w = metric_weights(metric, truth, test_weights_gc=None if ws_scaled is None else ws_scaled[:, te],
                               train_truth_cg=ys[tr])
        w = np.asarray(w, dtype=np.float32)
        if w.ndim == 2:
            w = np.ascontiguousarray(w.T)  # (n_te, genes): rows line up with the predictions
        for i, a in enumerate(alphas):
            pred = (z * (s / (s2 + a)).astype(np.float32)) @ uty32
            pred += base
            if clip:
                np.maximum(pred, 0.0, out=pred)
            pred -= truth
            pred *= pred
            per = pred @ w if w.ndim == 1 else np.einsum("cg,cg->c", pred, w)
            total_wmse[i] += float(per.sum(dtype=np.float64))
        n_scored += te.size
    if n_scored == 0:
        return None
    info.update(cv_genes=float(len(genes)), cv_compounds=float(n_scored))
    return total_wmse / n_scored, info
