"""Ridge regression from chemistry features to every gene at once, with the penalty chosen by
generalised cross-validation (GCV) from one eigendecomposition.

Why one decomposition: with the centred features Xc = U S V^T, every alpha's fit, hat-matrix
trace and residual norm are closed-form in (S, U^T Yc), so the whole GCV curve over a log grid
of alphas, for all ~13k genes, costs two matrix products instead of one solve per alpha.

    H(a)   = 11^T/n + Xc (Xc^T Xc + a I)^-1 Xc^T      (the intercept is not penalised)
    tr H   = 1 + sum_i d_i,   d_i = s_i^2 / (s_i^2 + a)
    RSS_g  = ||Yc_g||^2 - sum_i r_ig + sum_i (1 - d_i)^2 r_ig,   r = (U^T Yc)^2
    GCV(a) = RSS(a) / (n - tr H)^2       (summed over genes, or per gene)
    B(a)   = V diag(s / (s^2 + a)) U^T Yc

Predictions are the residual over the training mean: mean_y + (x - mean_x) B.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from drugcell.defaults import MORGAN_BITS, MORGAN_RADIUS
from drugcell.errors import DrugcellInputError
from drugcell.models.base import Prediction, Predictor
from drugcell.models.registry import register

_ROW_CHUNK = 2048  # rows of Y converted to float64 at a time (bounds the temporary copies)


@dataclass
class RidgeFit:
    """A fitted multi-output ridge: ``pred = X @ coef + intercept``."""

    coef: np.ndarray  # (p, G) float32
    intercept: np.ndarray  # (G,) float64
    alpha: np.ndarray  # () global, or (G,) per gene
    alphas: np.ndarray  # the grid
    gcv: np.ndarray  # (A,) summed over genes, or (A, G) per gene
    sigma: np.ndarray  # (G,) residual std at the chosen alpha: RSS / (n - tr H)
    dof: np.ndarray  # () or (G,) effective degrees of freedom tr H at the chosen alpha


def _as_operand(x: np.ndarray, dtype=np.float64):
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


def _spectrum(xo, y: np.ndarray):
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
    """Eigenpairs of a PSD matrix with eigenvalue above round-off (the numerical rank)."""
    s2, vec = np.linalg.eigh((sym + sym.T) / 2)
    keep = s2 > max(float(s2.max()), 0.0) * 1e-10 if s2.size else np.zeros(0, bool)
    return s2[keep], vec[:, keep]


def gcv_ridge(
    x: np.ndarray,
    y: np.ndarray,
    alphas: np.ndarray | None = None,
    *,
    per_gene: bool = False,
    n_alphas: int = 41,
) -> RidgeFit:
    """Fit ridge (with unpenalised intercept) for all columns of ``y``, alpha by GCV.

    ``x`` (n, p) features, ``y`` (n, G) targets (float32 is fine; sums run in float64).
    """
    n, p = x.shape
    if y.shape[0] != n:
        raise ValueError(f"x has {n} rows but y has {y.shape[0]}")
    if n < 2:
        raise DrugcellInputError(f"ridge needs at least 2 training compounds with features, got {n}")
    n_genes = y.shape[1]
    mean_x, mean_y, ss_y, s2, v, uty = _spectrum(_as_operand(x), y)
    s = np.sqrt(s2)
    r = uty * uty
    outside = np.maximum(ss_y - r.sum(axis=0), 0.0)  # part of Yc outside the column space
    if alphas is None:
        alphas = default_alphas(float(s2.max()) if s2.size else 0.0, n_alphas)
    alphas = np.asarray(alphas, dtype=np.float64)
    if alphas.ndim != 1 or alphas.size == 0 or not np.all(alphas > 0):
        raise DrugcellInputError("ridge: alphas must be a non-empty list of positive numbers")
    d = s2[None, :] / (s2[None, :] + alphas[:, None])  # (A, r)
    dof = 1.0 + d.sum(axis=1)  # (A,)
    rss = ((1.0 - d) ** 2) @ r + outside[None, :]  # (A, G)
    del r
    denom = np.maximum(n - dof, 1e-12) ** 2
    if per_gene:
        gcv = rss / denom[:, None]
        best = np.argmin(gcv, axis=0)  # (G,)
        alpha = alphas[best]
        shrink = s[:, None] / (s2[:, None] + alpha[None, :])  # (r, G)
        uty *= shrink
        del shrink
        coef = v @ uty
        rss_best = rss[best, np.arange(n_genes)]
        dof_best = dof[best]
    else:
        gcv = rss.sum(axis=1) / denom
        best = int(np.argmin(gcv))
        alpha = np.asarray(alphas[best])
        uty *= (s / (s2 + alpha))[:, None]
        coef = v @ uty
        rss_best = rss[best]
        dof_best = np.asarray(dof[best])
    del uty
    intercept = mean_y - mean_x @ coef
    sigma = np.sqrt(rss_best / max(n - float(np.max(dof_best)), 1.0))
    return RidgeFit(
        coef=coef.astype(np.float32),
        intercept=intercept,
        alpha=alpha,
        alphas=alphas,
        gcv=gcv,
        sigma=sigma.astype(np.float32),
        dof=dof_best,
    )


class _RidgeBase(Predictor):
    """Shared fit/predict: subclasses say how to turn SMILES into a feature matrix."""

    returns_std = True   # the per-gene residual std at the chosen alpha
    simplicity = 30

    state_fields = ("coef_", "intercept_", "alpha_", "mean_", "sigma_")

    def _validate(self):
        alphas, n_alphas = self.params["alphas"], self.params["n_alphas"]
        if alphas is not None and (
            not isinstance(alphas, list)
            or not alphas
            or not all(isinstance(a, (int, float)) and not isinstance(a, bool) and a > 0 for a in alphas)
        ):
            raise DrugcellInputError(f"{self.kind}: alphas must be a list of positive numbers or null, got {alphas!r}")
        if not isinstance(n_alphas, int) or n_alphas < 2:
            raise DrugcellInputError(f"{self.kind}: n_alphas must be an integer >= 2, got {n_alphas!r}")
        if not isinstance(self.params["alpha_per_gene"], bool):
            raise DrugcellInputError(f"{self.kind}: alpha_per_gene must be true or false")

    # subclasses: features for fit (may fit a transform on training rows) and for predict
    def _features(self, smiles: list[str], *, fit: bool) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def _fit(self, train, seed):
        smiles = [str(s) for s in np.asarray(train.smiles)]
        x, ok = self._features(smiles, fit=True)
        y = np.asarray(train.expression)
        self.mean_ = y.mean(axis=0, dtype=np.float64).astype(np.float32)
        if ok.sum() < 2:
            raise DrugcellInputError(
                f"{self.kind}: only {int(ok.sum())} training compounds have parseable SMILES; "
                "ridge needs at least 2. Check the `smiles` column of the training data."
            )
        alphas = None if self.params["alphas"] is None else np.asarray(self.params["alphas"], float)
        if not ok.all():
            x, y = x[ok], y[ok]
        fit = gcv_ridge(
            x, y, alphas, per_gene=self.params["alpha_per_gene"], n_alphas=self.params["n_alphas"]
        )
        self.coef_, self.intercept_, self.alpha_, self.sigma_ = fit.coef, fit.intercept, fit.alpha, fit.sigma
        self.fit_ = fit  # GCV curve for diagnostics (not part of the saved state)
        self.n_train_unparsed_ = int((~ok).sum())

    def _predict(self, smiles):
        x, ok = self._features(smiles, fit=False)
        mean = np.empty((len(smiles), self.mean_.shape[0]), dtype=np.float32)
        if ok.any():
            # float32 product: coef_ is float32 and an upcast would copy it (p x G) per call
            xo = _as_operand(x[ok], np.float32)
            mean[ok] = np.asarray(xo @ self.coef_) + self.intercept_
        mean[~ok] = self.mean_
        std = np.broadcast_to(self.sigma_, mean.shape).copy()
        alpha = np.asarray(self.alpha_, dtype=np.float64)
        info = {
            "n_unparsed": float((~ok).sum()),
            "n_fallback": float((~ok).sum()),
            "alpha": float(alpha) if alpha.ndim == 0 else float(np.median(alpha)),
        }
        return Prediction(mean=mean, std=std, info=info)


@register("ridge_fp")
class RidgeFingerprintPredictor(_RidgeBase):
    """Ridge on 2048-bit Morgan (radius 2) fingerprints: ``fingerprint`` = "bits" or "counts"."""

    defaults = {"fingerprint": "bits", "alphas": None, "n_alphas": 41, "alpha_per_gene": False}

    def _validate(self):
        super()._validate()
        if self.params["fingerprint"] not in ("bits", "counts"):
            raise DrugcellInputError(
                f"ridge_fp: fingerprint must be 'bits' or 'counts', got {self.params['fingerprint']!r}"
            )

    def _features(self, smiles, *, fit):
        from drugcell.chem.features import featurize

        x, ok = featurize(list(smiles), f"morgan_{self.params['fingerprint']}", radius=MORGAN_RADIUS, n_bits=MORGAN_BITS)
        x, ok = np.asarray(x), np.asarray(ok, dtype=bool)
        x[~ok] = 0  # featurize already zeroes them; keep it explicit
        return x, ok


@register("ridge_desc")
class RidgeDescriptorPredictor(_RidgeBase):
    """Ridge on RDKit descriptors, standardised with statistics of the training compounds only
    (:class:`drugcell.chem.descriptors.DescriptorStandardizer`: impute, clip, z-score)."""

    defaults = {"alphas": None, "n_alphas": 41, "alpha_per_gene": False}
    _PREFIX = "standardizer__"

    def _features(self, smiles, *, fit):
        from drugcell.chem.descriptors import DescriptorStandardizer
        from drugcell.chem.features import featurize

        raw, ok = featurize(list(smiles), "descriptors")
        raw, ok = np.asarray(raw, dtype=np.float64), np.asarray(ok, dtype=bool)
        if fit:
            self.standardizer_ = DescriptorStandardizer().fit(raw[ok])
        x = np.asarray(self.standardizer_.transform(raw), dtype=np.float64)
        x[~ok] = 0.0
        return x, ok

    def get_state(self):
        state = super().get_state()
        for key, value in self.standardizer_.get_state().items():
            state[self._PREFIX + key] = np.asarray(value)
        return state

    def set_state(self, state):
        from drugcell.chem.descriptors import DescriptorStandardizer

        super().set_state(state)
        sub = {k[len(self._PREFIX):]: v for k, v in state.items() if k.startswith(self._PREFIX)}
        if not sub:
            raise DrugcellInputError(
                "saved state for predictor 'ridge_desc' lacks the descriptor standardiser arrays; refit it."
            )
        self.standardizer_ = DescriptorStandardizer.from_state(sub)
