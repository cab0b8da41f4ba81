"""A low-rank basis of the training residuals: the deep models predict k coefficients, not 13k genes.

Why: a full-gene output layer (hidden x 12,995) dominated the cost of the deep models and most of
its outputs are redundant (compound responses live in a few hundred directions). The basis is a
truncated SVD of the training expression minus a centre profile ``c``, fitted on the training
fold only; a prediction is ``c + z @ loadings``.

Centre: the plain training mean (``center=None``), or any profile, e.g. the metric-optimal
constant ``wmean`` (each gene's mean weighted by the compounds' own Mejia weights). Around a
non-mean centre the residuals have a non-zero mean; the SVD is taken of the residuals *as they
are* (not re-centred), so the basis is the best rank-k representation (Eckart-Young) of the very
targets the network fits, their mean offset included: the offset costs at most one of the k
directions, and the network's output bias can then reach any constant between ``c`` and the
plain mean, whichever its loss prefers. A re-centred SVD could leave that offset outside the
span, where no network output could reach it. ``resid_var`` and ``singular_values`` are
accordingly mean squares around ``c`` (equal to variances when ``c`` is the mean).

Gene weighting: the contest scores per-gene *weighted* squared errors. With ``gene_scale`` s_g
(e.g. sqrt of the mean Mejia weight of gene g over training compounds, normalised to mean 1),
the SVD is taken of ``(Y - c) * s`` so that squared error in coefficient space equals the
s^2-weighted gene-space error of the basis part, and the basis spends its rank on the genes the
metric counts. Decoding divides the scale back out. The per-compound weights are a training
loss on top (``weighting.py``).

Variance: a diagonal Gaussian over coefficients ``z ~ N(mu, diag(v))`` maps to genes as
``var_g = sum_k v_k L[k, g]^2 + r_g``, where ``L`` is the gene-space decoder and ``r_g`` is the
per-gene variance of the training residual that the basis does not represent (truncation error).
Coefficient covariances are ignored (diagonal): cheap, and the SVD coefficients are uncorrelated
across training compounds by construction. The mean-variance head (``fusion``) also scales
``r_g`` per compound by a learned factor (see :meth:`ResidualBasis.outside_ratio`): most of a
noisy compound's error lies outside any small basis, and a constant ``r_g`` could not express
that.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.utils.extmath import randomized_svd


@dataclass
class ResidualBasis:
    mean: np.ndarray        # (G,) the centre c: training mean or another profile (e.g. wmean)
    components: np.ndarray  # (k, G) orthonormal rows in the scaled space
    scale: np.ndarray       # (G,) gene scale s_g (ones when unweighted)
    resid_var: np.ndarray   # (G,) training variance left outside the basis (unscaled units)
    singular_values: np.ndarray  # (k,)

    @classmethod
    def fit(
        cls, Y: np.ndarray, rank: int = 128, *, gene_scale: np.ndarray | None = None,
        center: np.ndarray | None = None, n_iter: int = 2, seed: int = 0, chunk: int = 4096,
    ) -> ResidualBasis:
        """Randomized truncated SVD of ``(Y - center) * gene_scale`` for training matrix Y (n, G).

        ``center`` defaults to the plain training mean; another centre is not subtracted from the
        residuals again before the SVD (see the module docstring).
        """
        Y = np.asarray(Y, dtype=np.float32)
        n, G = Y.shape
        if center is None:
            mean = Y.mean(axis=0, dtype=np.float64).astype(np.float32)
        else:
            mean = np.asarray(center, dtype=np.float32)
            if mean.shape != (G,) or not np.all(np.isfinite(mean)):
                raise ValueError("center must be (G,) and finite")
        scale = (np.ones(G, np.float32) if gene_scale is None
                 else np.asarray(gene_scale, dtype=np.float32))
        if scale.shape != (G,) or not np.all(np.isfinite(scale)) or np.any(scale <= 0):
            raise ValueError("gene_scale must be (G,) finite and > 0")
        R = (Y - mean) * scale
        k = int(max(1, min(rank, n - 1 if n > 1 else 1, G)))
        _, S, Vt = randomized_svd(R, k, n_iter=n_iter, random_state=seed, n_oversamples=10)
        Vt = Vt.astype(np.float32)
        # truncation variance per gene, chunked so that (n, G) is never duplicated twice
        ss = np.zeros(G, np.float64)
        for a in range(0, n, chunk):
            Rb = R[a:a + chunk]
            E = Rb - (Rb @ Vt.T) @ Vt
            ss += np.einsum("ij,ij->j", E, E, dtype=np.float64)
        resid_var = (ss / max(n, 1)).astype(np.float32) / scale**2
        return cls(mean, Vt, scale, resid_var, S.astype(np.float32))

    @property
    def rank(self) -> int:
        return int(self.components.shape[0])

    @property
    def loadings(self) -> np.ndarray:
        """(k, G) gene-space decoder: residual = z @ loadings."""
        return self.components / self.scale

    def encode(self, Y: np.ndarray) -> np.ndarray:
        """Coefficients (n, k) of the residual of Y over the centre."""
        return (((np.asarray(Y, np.float32) - self.mean) * self.scale) @ self.components.T).astype(
            np.float32)

    def decode(self, z: np.ndarray) -> np.ndarray:
        """Gene-space profiles (n, G) = centre + z @ loadings."""
        return (self.mean + np.asarray(z, np.float32) @ self.loadings).astype(np.float32)

    def decode_var(self, zvar: np.ndarray, *, include_resid: bool = True) -> np.ndarray:
        """Gene-space variance (n, G) of a diagonal coefficient variance (n, k)."""
        L = self.loadings
        out = np.asarray(zvar, np.float32) @ (L * L)
        if include_resid:
            out += self.resid_var
        return out.astype(np.float32)

    def profile_var(self, n_train: int) -> np.ndarray:
        """(G,) mean square of the training profiles around the centre: basis part (singular
        values^2 / n) + truncation part; the spread to report when nothing better is known
        (the prediction is then the centre)."""
        zvar = (self.singular_values.astype(np.float64) ** 2 / max(int(n_train), 1))[None, :]
        return self.decode_var(zvar)[0]

    def explained_fraction(self, Y: np.ndarray) -> float:
        """Share of the scaled residual sum of squares of Y captured by the basis."""
        R = (np.asarray(Y, np.float32) - self.mean) * self.scale
        total = float(np.einsum("ij,ij->", R, R, dtype=np.float64))
        Z = R @ self.components.T
        return float(np.einsum("ij,ij->", Z, Z, dtype=np.float64)) / max(total, 1e-30)

    def outside_ratio(self, Y: np.ndarray, chunk: int = 4096) -> np.ndarray:
        """Per compound q_i = mean_g e_ig^2 / resid_var_g, e = the residual outside the basis.

        The training mean of q is 1 by construction; a compound with q = 2 is twice as noisy as
        usual outside the basis. Fusion learns q from structure, so its per-gene variance
        ``s(x) * resid_var`` can rise for compounds whose responses are noisy in every gene,
        not only in the k basis directions.
        """
        Y = np.asarray(Y, np.float32)
        floor = max(float(self.resid_var.mean()) * 1e-6, 1e-12)
        inv = 1.0 / np.maximum(self.resid_var, floor)
        out = np.empty(Y.shape[0], np.float64)
        for a in range(0, Y.shape[0], chunk):
            E = (Y[a:a + chunk] - self.mean) * self.scale
            E = (E - (E @ self.components.T) @ self.components) / self.scale
            out[a:a + chunk] = np.einsum("ij,ij,j->i", E, E, inv, dtype=np.float64) / Y.shape[1]
        return out.astype(np.float32)

    def get_state(self, prefix: str = "basis.") -> dict[str, np.ndarray]:
        return {f"{prefix}mean": self.mean, f"{prefix}components": self.components,
                f"{prefix}scale": self.scale, f"{prefix}resid_var": self.resid_var,
                f"{prefix}singular_values": self.singular_values}

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray], prefix: str = "basis.") -> ResidualBasis:
        return cls(*(np.asarray(state[f"{prefix}{k}"], np.float32)
                     for k in ("mean", "components", "scale", "resid_var", "singular_values")))


def mejia_gene_scale(weights: np.ndarray, power: float = 0.5) -> np.ndarray:
    """s_g = (mean Mejia weight of gene g over training compounds)^power, normalised to mean 1.

    ``weights`` is the ExpressionSet's (G, C) matrix. power=0.5 makes squared coefficient error
    equal the mean-weight-weighted gene error; power=0 gives the unweighted basis. A small floor
    keeps genes that never carry weight decodable.
    """
    w = np.asarray(weights, np.float64).mean(axis=1)
    w = np.maximum(w, 1e-3 * max(float(w.mean()), 1e-30))
    s = w**power
    return (s / s.mean()).astype(np.float32)
