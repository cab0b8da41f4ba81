"""Deep predictor ``fusion``: embedding + retrieval-support scalars -> heteroscedastic residual,
an ensemble of seeds.

Retrieval support tells the network how much structural evidence the training set holds for a
query: max Tanimoto similarity to training, mean of the top-k similarities, and log(1 + number
of training compounds above a similarity threshold). When fitting, each training compound's
scalars are computed against the *other* training compounds (self excluded), otherwise every
training compound would see itself at similarity 1 and the network would learn a signal that
never exists for an unseen molecule.

Uncertainty: each member predicts a mean and a softplus variance per basis coefficient (Gaussian
NLL after an MSE warm-up); the coefficient variance maps to genes through the squared loadings
plus the per-gene variance the basis leaves out (see ``lowrank.py``). Members differ in seed and
in which inner scaffold fold they validate on; the ensemble variance is the mean aleatoric
variance plus the variance of the members' means (``heads.EnsembleAccumulator``).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from drugcell.defaults import MORGAN_BITS, MORGAN_RADIUS
from drugcell.errors import DrugcellInputError
from drugcell.models.base import Prediction
from drugcell.models.heads import EnsembleAccumulator
from drugcell.models.mlp import COMMON_DEFAULTS, LowRankDeepPredictor, _check_positive_int
from drugcell.models.registry import register

FUSION_DEFAULTS = {
    **COMMON_DEFAULTS,
    "n_members": 5,            # ensemble of seeds
    "warmup_epochs": 3,        # MSE epochs before the Gaussian NLL takes over
    "nll_beta": 1.0,           # beta-NLL: 1 gives the mean exactly the MSE gradient; 0 = plain NLL
    "min_var": 1e-4,           # variance floor of the head, in standardised coefficient units
    "support_k": 10,           # top-k for the mean top-k similarity
    "support_threshold": 0.5,  # similarity above which a training compound counts as support
    "fp_radius": MORGAN_RADIUS,
    "fp_bits": MORGAN_BITS,
}


def support_scalars(
    query_bits: np.ndarray, ref_bits: np.ndarray, *, k: int = 10, threshold: float = 0.5,
    exclude_self: bool = False, chunk: int = 2048,
) -> np.ndarray:
    """(n, 3) float32: max similarity, mean top-k similarity, log1p(count >= threshold).

    Tanimoto on bit fingerprints, computed chunk by chunk with a sparse x dense product (Morgan
    bit vectors are ~2% dense, so this is ~50x fewer operations than a dense matmul) and never
    holding more than ``chunk`` x n_ref similarities. ``exclude_self`` (query == reference, same
    order) drops each compound from its own neighbours. Queries or references with no bits set
    (unparsed) have similarity 0 to everything.
    """
    q = sp.csr_matrix(np.asarray(query_bits, dtype=np.float32))
    r_dense = np.asarray(ref_bits, dtype=np.float32)
    q_cnt = np.asarray(q.sum(axis=1)).ravel()
    r_cnt = r_dense.sum(axis=1)
    n, m = q.shape[0], r_dense.shape[0]
    if exclude_self and n != m:
        raise ValueError("exclude_self needs the query and reference sets to be the same")
    kk = int(max(1, min(k, m - (1 if exclude_self else 0))))
    out = np.zeros((n, 3), np.float32)
    if m == 0 or (exclude_self and m < 2):
        return out
    r_t = np.ascontiguousarray(r_dense.T)
    for a in range(0, n, chunk):
        inter = np.asarray((q[a:a + chunk] @ r_t), dtype=np.float32)
        union = q_cnt[a:a + chunk, None] + r_cnt[None, :] - inter
        sim = np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0).astype(np.float32)
        if exclude_self:
            rows = np.arange(sim.shape[0])
            sim[rows, a + rows] = -1.0  # below any real similarity; never counted
        top = -np.partition(-sim, kk - 1, axis=1)[:, :kk]
        out[a:a + chunk, 0] = top.max(axis=1)
        out[a:a + chunk, 1] = top.mean(axis=1)
        out[a:a + chunk, 2] = np.log1p((sim >= threshold).sum(axis=1))
    return out


@register("fusion")
class FusionPredictor(LowRankDeepPredictor):
    """Embedding + retrieval support -> heteroscedastic low-rank residual; ensemble of seeds."""

    defaults = FUSION_DEFAULTS
    heteroscedastic = True
    returns_std = True
    simplicity = 50

    def _validate(self) -> None:
        super()._validate()
        p = self.params
        for name in ("n_members", "support_k", "fp_bits"):
            _check_positive_int(p, name, self.kind)
        _check_positive_int(p, "warmup_epochs", self.kind, 0)
        if not 0 < float(p["support_threshold"]) <= 1:
            raise DrugcellInputError(f"predictor kind 'fusion': support_threshold must be in (0, 1], got {p['support_threshold']!r}")
        if float(p["min_var"]) <= 0 or not 0 <= float(p["nll_beta"]) <= 1:
            raise DrugcellInputError("predictor kind 'fusion': min_var must be > 0 and nll_beta in [0, 1]")

    def _n_members(self) -> int:
        return int(self.params["n_members"])

    def _warmup_epochs(self) -> int:
        return int(self.params["warmup_epochs"])

    def _bits(self, parsed) -> np.ndarray:
        from drugcell.chem.fingerprints import morgan_bits

        return np.asarray(morgan_bits(parsed, radius=int(self.params["fp_radius"]),
                                      n_bits=int(self.params["fp_bits"])), dtype=np.uint8)

    def _prepare_reference(self, parsed) -> None:
        self._ref_bits = self._bits(parsed)

    def _reference_state(self) -> dict[str, np.ndarray]:
        return {"ref_bits_packed": np.packbits(self._ref_bits, axis=1),
                "ref_n_bits": np.asarray(self._ref_bits.shape[1], np.int64)}

    def _set_reference_state(self, state: dict[str, np.ndarray]) -> None:
        n_bits = int(state["ref_n_bits"])
        self._ref_bits = np.unpackbits(np.asarray(state["ref_bits_packed"], np.uint8), axis=1,
                                       count=n_bits)

    def _extra_features(self, parsed, *, training: bool) -> np.ndarray:
        p = self.params
        q = self._ref_bits if training else self._bits(parsed)
        return support_scalars(q, self._ref_bits, k=int(p["support_k"]),
                               threshold=float(p["support_threshold"]), exclude_self=training)

    def _predict(self, smiles: list[str]) -> Prediction:
        outs, ok = self._member_outputs(smiles)
        acc = EnsembleAccumulator()
        for mu, var in outs:
            mu = mu.copy()
            mu[~ok] = 0.0
            # aleatoric: coefficient variances through the squared loadings + the learned
            # per-compound scale of the per-gene variance outside the basis
            ale = self._basis.decode_var(var[:, :-1], include_resid=False)
            ale += var[:, -1:] * self._basis.resid_var
            acc.add(self._basis.decode(mu), ale)
        mean, var_g, _, _ = acc.result()
        if (~ok).any():  # fallback rows: the spread of training profiles around the mean
            var_g[~ok] = self._fallback_var()
        n_bad = float((~ok).sum())
        return Prediction(mean=mean.astype(np.float32), std=np.sqrt(var_g).astype(np.float32),
                          info={"n_fallback": n_bad, "n_unparsed": n_bad})

    def _fallback_var(self) -> np.ndarray:
        """Per-gene training variance: basis part (singular values^2 / n) + truncation part."""
        n = max(len(self._ref_bits), 1)
        zvar = (self._basis.singular_values.astype(np.float64) ** 2 / n)[None, :]
        return self._basis.decode_var(zvar)[0]
