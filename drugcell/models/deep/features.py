"""Feature providers: the per-compound input columns of the deep models, behind one interface.

Why an interface: ``mlp`` reads an embedding, ``fusion`` the same embedding plus retrieval
support (``retrieval.py``); the predictor stacks whatever providers it is composed of. Every
provider is fitted on the training fold only and stores its state as flat numpy arrays (the
keys it returns are the keys it reads back, so saved models keep their layout).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np

from drugcell.chem.molecules import ParsedMolecules
from drugcell.errors import DrugcellInputError

#: What providers read: SMILES or RDKit Mols, or (parsed once for all providers) ParsedMolecules.
Molecules = Sequence[Any] | ParsedMolecules


class FeatureProvider(ABC):
    """``fit`` on the training compounds, then ``transform`` any compounds to (X, usable)."""

    @classmethod
    def check_params(cls, params: dict[str, Any], kind: str) -> None:
        """Raise DrugcellInputError on a bad value of this provider's params."""

    @classmethod
    @abstractmethod
    def from_params(cls, params: dict[str, Any]) -> FeatureProvider:
        """An unfitted provider configured by the predictor's params."""

    @abstractmethod
    def fit(self, parsed: Molecules) -> FeatureProvider:
        """Learn what ``transform`` needs from the training compounds."""

    @abstractmethod
    def transform(self, parsed: Molecules) -> tuple[np.ndarray, np.ndarray]:
        """(features float32 (n, d), usable bool (n,)) for new compounds."""

    def fit_transform(self, parsed: Molecules) -> tuple[np.ndarray, np.ndarray]:
        """Fit, then the *training* rows' features (a provider may need to treat them apart)."""
        return self.fit(parsed).transform(parsed)

    @abstractmethod
    def get_state(self) -> dict[str, np.ndarray]:
        """Fitted arrays by (globally unique) key."""

    @abstractmethod
    def set_state(self, state: dict[str, np.ndarray]) -> None:
        """Restore from a dict holding (at least) the keys ``get_state`` wrote."""


class EmbeddingFeatures(FeatureProvider):
    """A :mod:`drugcell.chem.embeddings` embedder (its statistics from the training fold)."""

    _prefix = "embedder."

    def __init__(self, name: str, params: dict[str, Any]):
        self.name, self.params = name, dict(params)
        self._embedder = None

    @classmethod
    def check_params(cls, params: dict[str, Any], kind: str) -> None:
        if not isinstance(params["embedding_params"], dict):
            raise DrugcellInputError(f"predictor kind {kind!r}: embedding_params must be a table/dict")

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> EmbeddingFeatures:
        return cls(params["embedding"], params["embedding_params"])

    def _new_embedder(self):
        from drugcell.chem.embeddings import get_embedder

        return get_embedder(self.name, **self.params)

    def fit(self, parsed: Molecules) -> EmbeddingFeatures:
        self._embedder = self._new_embedder()
        self._embedder.fit(parsed)
        return self

    def transform(self, parsed: Molecules) -> tuple[np.ndarray, np.ndarray]:
        X, ok = self._embedder.transform_with_mask(parsed)
        return np.asarray(X, dtype=np.float32), np.asarray(ok, bool)

    def get_state(self) -> dict[str, np.ndarray]:
        return {f"{self._prefix}{k}": v for k, v in self._embedder.get_state().items()}

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        self._embedder = self._new_embedder()
        self._embedder.set_state({k[len(self._prefix):]: v for k, v in state.items()
                                  if k.startswith(self._prefix)})


def _stack(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Columns side by side; a row is usable when every provider can use it and all is finite
    (unusable rows are zeroed so they never carry NaN into a network)."""
    X = np.concatenate([x for x, _ in parts], axis=1)
    ok = np.logical_and.reduce([ok for _, ok in parts]) & np.isfinite(X).all(axis=1)
    X[~ok] = 0.0
    return X, ok


def fit_features(providers: Sequence[FeatureProvider], parsed: Molecules) -> tuple[np.ndarray, np.ndarray]:
    """Fit every provider on the training compounds; their training rows, stacked."""
    return _stack([p.fit_transform(parsed) for p in providers])


def transform_features(providers: Sequence[FeatureProvider], parsed: Molecules) -> tuple[np.ndarray, np.ndarray]:
    """New compounds through every fitted provider, stacked."""
    return _stack([p.transform(parsed) for p in providers])


class InputScaler:
    """Centre and scale with training statistics; clip so one outlying descriptor of an unusual
    test molecule cannot dominate the first layer. Never *amplifies* a feature (std floor 1): a
    Morgan bit seen in 1 of 10,000 training compounds would otherwise become a huge input on the
    unseen scaffold that carries it."""

    def __init__(self, mean: np.ndarray, std: np.ndarray, clip: float):
        self.mean = np.asarray(mean, np.float32)
        self.std = np.asarray(std, np.float32)
        self.clip = float(clip)

    @classmethod
    def fit(cls, X: np.ndarray, clip: float) -> InputScaler:
        return cls(X.mean(axis=0), np.maximum(X.std(axis=0), 1.0).astype(np.float32), clip)

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    def transform(self, X: np.ndarray) -> np.ndarray:
        return np.clip((X - self.mean) / self.std, -self.clip, self.clip).astype(np.float32)

    def get_state(self) -> dict[str, np.ndarray]:
        return {"x_mean": self.mean, "x_std": self.std}

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray], clip: float) -> InputScaler:
        return cls(state["x_mean"], state["x_std"], clip)
