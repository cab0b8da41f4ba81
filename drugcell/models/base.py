"""The one small interface every predictor implements, so the CV runner, submission and
persistence never need to know which model they hold.

How to write a predictor (see ``baselines.py`` for the shortest example)::

    @register("my_kind")
    class MyPredictor(Predictor):
        defaults = {"alpha": 1.0}            # the accepted params and their defaults (JSON-able)
        state_fields = ("coef_",)            # fitted numpy arrays saved by get_state()

        def _validate(self): ...             # optional: check self.params, raise DrugcellInputError
        def _fit(self, train, seed): ...     # set the fields in state_fields
        def _predict(self, smiles): ...      # return Prediction(mean (n, G), std or None, info)

``fit`` stores ``self.genes`` and the training set's value scale; ``predict`` clips at 0 and counts
the clipped cells when that scale is log2(CPM+1) (a ``signed`` set's predictions stay). Predictors
whose state is not a fixed set of arrays (torch modules) override ``get_state``/``set_state``
and call ``super()`` so ``genes`` still travels with the state.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from drugcell.defaults import LOG2CPM
from drugcell.errors import DrugcellInputError

if TYPE_CHECKING:  # only for annotations: models must not depend on how data is loaded
    from drugcell.data.expression_set import ExpressionSet


@dataclass
class Prediction:
    """Predicted profiles for ``n`` compounds over the ``G`` training genes.

    ``info`` holds counters (``n_fallback``, ``n_unparsed``, ``n_clipped``, ...) that reports
    aggregate over folds, so a model that silently falls back to the mean is visible.
    """

    mean: np.ndarray
    std: np.ndarray | None = None
    info: dict[str, float] = field(default_factory=dict)


class Predictor(ABC):
    """Abstract predictor: ``fit(train)`` then ``predict(smiles)`` on compounds x genes arrays."""

    kind: ClassVar[str] = ""
    #: Capabilities, declared by each class (read by calibration, model choice and the CLI).
    returns_std: ClassVar[bool] = False     # Prediction.std can be set (see std_enabled)
    needs_torch: ClassVar[bool] = False     # imports torch when fitted
    simplicity: ClassVar[int] = 100         # rank for model choice: lower is simpler
    defaults: ClassVar[dict[str, Any]] = {}
    state_fields: ClassVar[tuple[str, ...]] = ()
    #: The fit is a deterministic function of (training set, params, seed) and cheap to keep, so a
    #: fitted instance may serve an identical refit on the same set (blend's members in CV:
    #: :func:`drugcell.models.train_memo.fitted_twin`); see :meth:`_keep_fit`.
    reuse_fit: ClassVar[bool] = False

    def __init__(self, **params: Any) -> None:
        self.params: dict[str, Any] = self._merged(dict(self.defaults), params)
        self.genes: np.ndarray | None = None
        self.value_scale: str = LOG2CPM  # the training set's; only log2cpm predictions are clipped at 0
        self._validate()

    def _merged(self, base: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        """``base`` updated by ``params``: unknown names and values that are not JSON refused."""
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            accepted = ", ".join(sorted(self.defaults)) or "(none)"
            raise DrugcellInputError(
                f"predictor kind {self.kind!r}: unknown parameter(s) {', '.join(unknown)}; "
                f"accepted parameters: {accepted}. Fix the predictor entry in the config."
            )
        try:  # params must survive a JSON round trip so a saved model can be rebuilt exactly
            return json.loads(json.dumps({**base, **params}))
        except (TypeError, ValueError) as exc:
            raise DrugcellInputError(
                f"predictor kind {self.kind!r}: parameters must be JSON values "
                f"(numbers, strings, booleans, lists): {exc}"
            ) from None

    # ----------------------------------------------------------------- subclass hooks
    def _validate(self) -> None:
        """Check ``self.params``; raise :class:`DrugcellInputError` on a bad value."""

    def _fit(self, train: ExpressionSet, seed: int) -> None:
        raise NotImplementedError(f"{type(self).__name__} must implement _fit or override fit")

    @abstractmethod
    def _predict(self, smiles: list[str]) -> Prediction:
        """Unclipped prediction for ``smiles``; ``mean`` has shape (len(smiles), n_genes)."""

    # ----------------------------------------------------------------- public API
    @property
    def std_enabled(self) -> bool:
        """Whether this instance (with its params) returns a std; classes narrow it by a param."""
        return self.returns_std

    @property
    def is_fitted(self) -> bool:
        return self.genes is not None

    def fit(self, train: ExpressionSet, *, seed: int = 0) -> Predictor:
        """Fit on all compounds of ``train``; remember its genes (the prediction columns)."""
        if train.expression.shape[0] == 0:
            raise DrugcellInputError(
                f"predictor {self.kind!r}: the training set has no compounds; "
                "check the split or the data filter."
            )
        self.value_scale = str(getattr(train, "value_scale", LOG2CPM))
        self._fit(train, int(seed))
        self.genes = np.asarray(train.genes).astype(str)
        if self.reuse_fit and self._keep_fit():
            from drugcell.models.train_memo import remember_fit

            remember_fit(self, train, int(seed))
        return self

    def _keep_fit(self) -> bool:
        """Whether this fitted instance is worth keeping while its training set lives (a kind may
        say no when it holds a large copy of the training data)."""
        return True

    def predict(self, smiles: Sequence[str]) -> Prediction:
        """Predict profiles; for log2(CPM+1) data (which cannot be negative) clip at 0 and count the clips."""
        if not self.is_fitted:
            raise RuntimeError(f"predictor {self.kind!r} must be fitted (or set_state) before predict")
        smiles = [("" if s is None else str(s)) for s in smiles]
        pred = self._predict(smiles)
        mean = np.asarray(pred.mean, dtype=np.float32)
        expected = (len(smiles), len(self.genes))
        if mean.shape != expected:
            raise RuntimeError(f"predictor {self.kind!r} returned shape {mean.shape}, expected {expected}")
        if not np.isfinite(mean).all():
            raise RuntimeError(f"predictor {self.kind!r} produced non-finite predictions")
        negative = mean < 0 if self.value_scale == LOG2CPM else np.zeros(mean.shape, dtype=bool)
        n_clipped = int(negative.sum())
        if n_clipped:
            mean = np.where(negative, np.float32(0), mean)
        std = None if pred.std is None else np.asarray(pred.std, dtype=np.float32)
        if std is not None and std.shape != expected:
            raise RuntimeError(f"predictor {self.kind!r} returned std shape {std.shape}, expected {expected}")
        info = {"n_compounds": float(len(smiles)), **dict(pred.info), "n_clipped": float(n_clipped)}
        return Prediction(mean=mean, std=std, info=info)

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor parameters (scikit-learn style; a copy, JSON values)."""
        return self.get_config()

    def set_params(self, **params: Any) -> Predictor:
        """Change parameters (scikit-learn style), checked as the constructor checks them; on a bad
        value nothing changes. A change makes a fitted predictor unfitted: fit it again."""
        before = dict(self.__dict__)  # _validate may set derived attributes (blend's candidates)
        merged = self._merged(self.params, params)
        if merged == self.params:
            return self
        self.params = merged
        try:
            self._validate()
        except BaseException:
            self.__dict__.clear()
            self.__dict__.update(before)
            raise
        self.genes = None
        return self

    def get_config(self) -> dict[str, Any]:
        """The params (JSON-able); ``type(p)(**p.get_config())`` rebuilds an unfitted twin."""
        return json.loads(json.dumps(self.params))

    def get_state(self) -> dict[str, np.ndarray]:
        """Fitted arrays by name (``genes`` included), enough for ``set_state`` to predict."""
        if not self.is_fitted:
            raise RuntimeError(f"predictor {self.kind!r} has no state before fit")
        state = {"genes": np.asarray(self.genes).astype(str)}
        if self.value_scale != LOG2CPM:  # absent: log2cpm (models saved before the scale was recorded)
            state["value_scale"] = np.asarray(self.value_scale)
        for name in self.state_fields:
            state[name] = np.asarray(getattr(self, name))
        return state

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        """Restore what ``get_state`` returned (for a predictor built with the same params)."""
        missing = [k for k in ("genes", *self.state_fields) if k not in state]
        if missing:
            raise DrugcellInputError(
                f"saved state for predictor {self.kind!r} lacks array(s) {', '.join(missing)}; "
                "the model file is incomplete or from another version: refit it."
            )
        for name in self.state_fields:
            setattr(self, name, np.asarray(state[name]))
        self.genes = np.asarray(state["genes"]).astype(str)
        self.value_scale = str(state["value_scale"]) if "value_scale" in state else LOG2CPM

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({args})"
