"""Tanimoto nearest-neighbour retrieval: a test compound gets the weighted average profile of
its most similar training compounds (2048-bit Morgan, radius 2).

Neighbours are the top ``k`` training compounds by Tanimoto similarity, keeping only those with
similarity > 0 (a compound sharing no bit carries no structural evidence). Compounds that do not
parse, or have no such neighbour, get the training mean profile and are counted
(``info["n_unparsed"]``, ``info["n_fallback"]``; fallback includes the unparsed ones).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from drugcell.defaults import MORGAN_BITS, MORGAN_RADIUS
from drugcell.errors import DrugcellInputError
from drugcell.models.base import Prediction, Predictor
from drugcell.models.registry import register

KERNELS = ("uniform", "tanimoto", "softmax")
N_BITS = MORGAN_BITS
RADIUS = MORGAN_RADIUS
_QUERY_CHUNK = 1024  # similarity rows per block: bounds memory at ~chunk x n_train floats


def morgan_features(smiles: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(bits uint8 (n, 2048), ok bool (n,)) through the shared featurize cache."""
    from drugcell.chem.features import featurize

    bits, ok = featurize(list(smiles), "morgan_bits", radius=RADIUS, n_bits=N_BITS)
    bits, ok = np.asarray(bits), np.asarray(ok, dtype=bool)
    if bits.shape != (len(smiles), N_BITS):
        raise RuntimeError(f"morgan_bits featurizer returned shape {bits.shape}, expected ({len(smiles)}, {N_BITS})")
    bits = (bits != 0).astype(np.uint8)
    bits[~ok] = 0
    return bits, ok


def _column_mean_std(y: np.ndarray, chunk: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and population std in float64, in row chunks (numpy's ``std`` on a 14k x
    13k float32 matrix makes two full float64 temporaries and takes seconds per fit)."""
    n = y.shape[0]
    total = np.zeros(y.shape[1])
    for i in range(0, n, chunk):
        total += y[i:i + chunk].sum(axis=0, dtype=np.float64)
    mean = total / max(n, 1)
    ss = np.zeros(y.shape[1])
    for i in range(0, n, chunk):
        d = y[i:i + chunk].astype(np.float64)
        d -= mean
        ss += np.einsum("ij,ij->j", d, d)
    return mean, np.sqrt(ss / max(n, 1))


def neighbour_weights(
    sim: np.ndarray, k: int, kernel: str, temperature: float = 0.1
) -> tuple[sp.csr_matrix, np.ndarray]:
    """Row-normalised sparse weights (n, n_train) over each row's top-k neighbours with sim > 0.

    Returns the weights and a bool mask of rows that had at least one such neighbour (rows
    without one are all zero). ``softmax`` weights are exp(sim / temperature), normalised.
    """
    sim = np.nan_to_num(np.asarray(sim, dtype=np.float32), nan=0.0)
    n, m = sim.shape
    if n == 0 or m == 0:
        return sp.csr_matrix((n, m), dtype=np.float32), np.zeros(n, dtype=bool)
    kk = min(int(k), m)
    if kk < m:
        idx = np.argpartition(-sim, kk - 1, axis=1)[:, :kk]
    else:
        idx = np.broadcast_to(np.arange(m), (n, m)).copy()
    s = np.take_along_axis(sim, idx, axis=1).astype(np.float64)
    valid = s > 0
    if kernel == "uniform":
        w = valid.astype(np.float64)
    elif kernel == "tanimoto":
        w = np.where(valid, s, 0.0)
    elif kernel == "softmax":
        top = np.max(np.where(valid, s, -np.inf), axis=1, keepdims=True)
        top = np.where(np.isfinite(top), top, 0.0)
        w = np.where(valid, np.exp((s - top) / float(temperature)), 0.0)
    else:
        raise DrugcellInputError(f"knn: unknown kernel {kernel!r}; choose one of {', '.join(KERNELS)}")
    total = w.sum(axis=1, keepdims=True)
    has = total[:, 0] > 0
    w = np.divide(w, total, out=np.zeros_like(w), where=total > 0)
    rows = np.repeat(np.arange(n), kk)
    weights = sp.csr_matrix(
        (w.ravel().astype(np.float32), (rows, idx.ravel())), shape=(n, m), dtype=np.float32
    )
    weights.eliminate_zeros()
    return weights, has


@register("knn")
class KNNPredictor(Predictor):
    """Weighted average of the k most Tanimoto-similar training profiles.

    Params: ``k`` (neighbours), ``kernel`` (uniform | tanimoto | softmax), ``temperature``
    (softmax only, on the similarity scale), ``std`` (also return the weighted std of the
    neighbours' profiles, a cheap per-cell uncertainty for calibration), ``std_prior`` (how many
    pseudo-neighbours carry the training per-gene variance into that std; 0 = raw spread).
    """

    returns_std = True
    simplicity = 20

    @property
    def std_enabled(self) -> bool:
        return bool(self.params["std"])

    defaults = {"k": 10, "kernel": "tanimoto", "temperature": 0.1, "std": True, "std_prior": 1.0}
    state_fields = ("train_bits_", "train_y_", "mean_", "sd_")

    def _validate(self):
        k, kernel, temp = self.params["k"], self.params["kernel"], self.params["temperature"]
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise DrugcellInputError(f"knn: k must be a positive integer, got {k!r}")
        if kernel not in KERNELS:
            raise DrugcellInputError(f"knn: unknown kernel {kernel!r}; choose one of {', '.join(KERNELS)}")
        if not isinstance(temp, (int, float)) or isinstance(temp, bool) or not temp > 0:
            raise DrugcellInputError(f"knn: temperature must be a positive number, got {temp!r}")
        prior = self.params["std_prior"]
        if not isinstance(prior, (int, float)) or isinstance(prior, bool) or not prior >= 0:
            raise DrugcellInputError(f"knn: std_prior must be a number >= 0, got {prior!r}")

    def _fit(self, train, seed):
        smiles = [str(s) for s in np.asarray(train.smiles)]
        bits, ok = morgan_features(smiles)
        y = np.asarray(train.expression, dtype=np.float32)
        mean, sd = _column_mean_std(y)
        self.mean_, self.sd_ = mean.astype(np.float32), sd.astype(np.float32)
        # Unparseable training compounds can never be neighbours: keep only the parsed ones.
        self.train_bits_ = np.packbits(bits[ok], axis=1)
        self.train_y_ = y if ok.all() else np.ascontiguousarray(y[ok])  # no copy when all parse
        self.n_train_unparsed_ = int((~ok).sum())

    def _predict(self, smiles):
        from drugcell.chem.fingerprints import iter_tanimoto_blocks

        n, n_genes = len(smiles), self.mean_.shape[0]
        bits, ok = morgan_features(smiles)
        train_bits = np.unpackbits(self.train_bits_, axis=1, count=N_BITS)
        mean = np.empty((n, n_genes), dtype=np.float32)
        want_std = bool(self.params["std"])
        std = np.empty((n, n_genes), dtype=np.float32) if want_std else None
        has_all = np.zeros(n, dtype=bool)
        y2 = np.square(self.train_y_) if want_std else None  # float32, once per predict call
        # the shared blockwise search; the neighbours are picked by neighbour_weights (its own
        # kernels and tie order, pinned by tests), so only the similarity blocks are shared
        for start, stop, sim in iter_tanimoto_blocks(bits, train_bits, block_rows=_QUERY_CHUNK):
            sim[~ok[start:stop]] = 0.0
            weights, has = neighbour_weights(
                sim, self.params["k"], self.params["kernel"], self.params["temperature"]
            )
            block = np.asarray(weights @ self.train_y_, dtype=np.float32)
            block[~has] = self.mean_
            mean[start:stop] = block
            if want_std:
                std[start:stop] = self._weighted_std(weights, block, has, y2)
            has_all[start:stop] = has
        info = {
            "n_unparsed": float((~ok).sum()),
            "n_fallback": float((~has_all).sum()),
        }
        return Prediction(mean=mean, std=std, info=info)

    def _weighted_std(self, weights: sp.csr_matrix, mu: np.ndarray, has: np.ndarray, y2: np.ndarray) -> np.ndarray:
        """Neighbour spread, shrunk towards the training spread so it is never 0.

        var = (n_eff * sum_j w_j (y_j - mu)^2 + c * sd_train^2) / (n_eff + c), with the Kish
        effective neighbour count n_eff = 1 / sum_j w_j^2 and c = ``std_prior`` pseudo-neighbours
        (one neighbour, or a softmax peaked on one, would otherwise claim zero uncertainty).
        """
        c = float(self.params["std_prior"])
        prior = self.sd_.astype(np.float64) ** 2
        w = weights.astype(np.float32)  # float32 product: no float64 copy of Y^2
        # sum_j w_j (y_j - mu)^2 = sum_j w_j y_j^2 - mu^2 (the weights of a row sum to 1): one
        # sparse product with Y^2 for the whole block instead of a Python loop over compounds
        second = np.asarray(w @ y2, dtype=np.float64)
        var = np.maximum(second - mu.astype(np.float64) ** 2, 0.0)
        w64 = weights.astype(np.float64)
        n_eff = 1.0 / np.maximum(np.asarray(w64.multiply(w64).sum(axis=1)).ravel(), 1e-300)
        out = np.sqrt((n_eff[:, None] * var + c * prior) / (n_eff[:, None] + c)).astype(np.float32)
        out[~has] = self.sd_
        return out
