"""Retrieval support: how much structural evidence the training set holds for a compound.

Three scalars per compound: max Tanimoto similarity to training, mean of the top-k similarities,
and log(1 + number of training compounds with similarity >= a threshold), all from one pass of
the shared search (:func:`drugcell.chem.fingerprints.search_similar`). When fitting, each
training compound is compared with the *other* training compounds (self excluded), otherwise
every training compound would see itself at similarity 1 and the network would learn a signal
that never exists for an unseen molecule.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from drugcell.chem.fingerprints import morgan_bits, search_similar
from drugcell.chem.molecules import ParsedMolecules
from drugcell.errors import DrugcellInputError
from drugcell.models.deep.features import FeatureProvider, Molecules
from drugcell.models.deep.params import check_int


def support_scalars(
    query_bits: np.ndarray, ref_bits: np.ndarray, *, k: int = 10, threshold: float = 0.5,
    exclude_self: bool = False, block_rows: int | None = None,
) -> np.ndarray:
    """(n, 3) float32: max similarity, mean top-k similarity, log1p(count >= threshold).

    ``exclude_self`` (query == reference, same order) drops each compound from its own
    neighbours. Queries or references with no bits set (unparsed) have similarity 0 to
    everything; with no reference to compare with, all three are 0.
    """
    found = search_similar(query_bits, ref_bits, k, exclude_self=exclude_self, count_at_least=threshold,
                           block_rows=block_rows)
    top = found.similarities
    out = np.zeros((top.shape[0], 3), np.float32)
    if top.shape[1]:
        out[:, 0] = top[:, 0]          # most similar first
        out[:, 1] = top.mean(axis=1)
        out[:, 2] = np.log1p(found.n_at_least)
    return out


class RetrievalSupport(FeatureProvider):
    """:func:`support_scalars` of each compound against the training compounds' Morgan bits."""

    def __init__(self, k: int, threshold: float, radius: int, n_bits: int):
        self.k, self.threshold = int(k), float(threshold)
        self.radius, self.n_bits = int(radius), int(n_bits)
        self._ref_bits: np.ndarray | None = None

    @classmethod
    def check_params(cls, params: dict[str, Any], kind: str) -> None:
        for name in ("support_k", "fp_bits"):
            check_int(params, name, kind)
        if not 0 < float(params["support_threshold"]) <= 1:
            raise DrugcellInputError(
                f"predictor kind {kind!r}: support_threshold must be in (0, 1], got {params['support_threshold']!r}")

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> RetrievalSupport:
        return cls(params["support_k"], params["support_threshold"], params["fp_radius"], params["fp_bits"])

    def _bits(self, parsed: Molecules) -> np.ndarray:
        """Morgan bits through the per-process feature cache (by canonical SMILES, so every fold
        and the kNN predictors share the rows) when the molecules come parsed; zero rows for
        failures either way."""
        if isinstance(parsed, ParsedMolecules):
            from drugcell.chem.features import featurize

            bits, _ = featurize(parsed.canonical, "morgan_bits", radius=self.radius, n_bits=self.n_bits)
            return np.asarray(bits, dtype=np.uint8)
        return np.asarray(morgan_bits(parsed, radius=self.radius, n_bits=self.n_bits), dtype=np.uint8)

    def _scalars(self, query_bits: np.ndarray, *, exclude_self: bool) -> tuple[np.ndarray, np.ndarray]:
        x = support_scalars(query_bits, self._ref_bits, k=self.k, threshold=self.threshold,
                            exclude_self=exclude_self)
        return x, np.ones(len(x), bool)  # an unparsed compound simply has no support

    def fit(self, parsed: Molecules) -> RetrievalSupport:
        self._ref_bits = self._bits(parsed)
        return self

    def fit_transform(self, parsed: Molecules) -> tuple[np.ndarray, np.ndarray]:
        """Leave-one-out: each training compound against the others."""
        return self.fit(parsed)._scalars(self._ref_bits, exclude_self=True)

    def transform(self, parsed: Molecules) -> tuple[np.ndarray, np.ndarray]:
        return self._scalars(self._bits(parsed), exclude_self=False)

    def get_state(self) -> dict[str, np.ndarray]:
        return {"ref_bits_packed": np.packbits(self._ref_bits, axis=1),
                "ref_n_bits": np.asarray(self._ref_bits.shape[1], np.int64)}

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        self._ref_bits = np.unpackbits(np.asarray(state["ref_bits_packed"], np.uint8), axis=1,
                                       count=int(state["ref_n_bits"]))
