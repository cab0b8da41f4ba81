"""``blend``: convex weights over member predictors and baselines, fitted under the metric on inner
scaffold folds of the training data, then every candidate with a non-zero weight refitted on it all.

Config (every key but ``kind``/``name`` is a parameter)::

    [[predictors]]
    name = "blend"
    kind = "blend"
    members = [{kind = "ridge_fp"}, {kind = "knn", k = 20, kernel = "softmax"}]
    baselines = ["wmean"]     # kinds added as candidates with default params; [] for none
    inner_folds = 3           # scaffold folds of the training set (>= 2)
    metric = "mejia"          # the metric the weights minimise (mejia, proxy, variance)

A member is an inline table ``{kind = ..., <params>, name = ...}``; ``name`` defaults to the kind
(two members of one kind need names). A member whose kind takes a ``metric`` parameter gets the
blend's unless it sets its own.

Fit (seed from ``fit``): inner scaffold folds of the training compounds; per inner fold every
candidate is fitted on the inner-train part and predicts the held-out part in chunks of compounds,
and only the K x K error Gram matrix under the metric is kept (:func:`~drugcell.models.
blend_weights.error_gram`), so memory stays at the candidates plus one chunk whatever the size.
The weights minimise the out-of-fold mean wMSE over the simplex, solved exactly by
:func:`~drugcell.models.blend_weights.convex_weights`. A useless member gets weight 0 and the
blend falls back on the baseline: the shrinkage toward the baseline falls out of the fit. One
candidate alone gets weight 1 without inner folds, so it predicts exactly what that member does.

Predict: ``sum_i w_i p_i`` over the candidates with non-zero weight (each already clipped at 0 for
log2(CPM+1) data).
std: only when every such candidate returns one, as ``sum_i w_i s_i``: the std of the blended
error if the candidates' errors were perfectly correlated, an upper bound on it otherwise
(Cauchy-Schwarz), so conservative; a calibrator rescales it like any other. ``Prediction.info``
carries ``w_<name>`` per candidate and the out-of-fold wMSE of each (``oof_<name>``) and of the
blend (``oof_blend``). ``needs_torch`` is declared False (a class-level flag); a blend with a deep
member imports torch when that member is fitted.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from drugcell.errors import DrugcellInputError
from drugcell.models.base import Prediction, Predictor
from drugcell.models.blend_weights import MAX_CANDIDATES, convex_weights, error_gram
from drugcell.models.registry import get_class, make_predictor, register

_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]+$")
_CHUNK_CELLS = 4_000_000   # held-out compounds x genes per candidate per chunk (float64: 32 MB)
_PREFIX = "cand{}__"       # state keys of candidate i


class _Candidate:
    """One blend candidate: its display name, kind and constructor params."""

    def __init__(self, name: str, kind: str, params: dict[str, Any]) -> None:
        self.name, self.kind, self.params = name, kind, params

    def build(self) -> Predictor:
        return make_predictor(self.kind, **self.params)


def _member_candidate(i: int, spec: Any, metric: str) -> _Candidate:
    where = f"blend: members[{i}]"
    if not isinstance(spec, dict):
        raise DrugcellInputError(f"{where} must be an inline table like {{kind = \"ridge_fp\"}}, got {spec!r}")
    spec = dict(spec)
    kind = spec.pop("kind", None)
    if not isinstance(kind, str) or not kind:
        raise DrugcellInputError(f"{where} has no kind; write e.g. {{kind = \"knn\", k = 20}}")
    name = spec.pop("name", kind)
    cls = get_class(kind)
    if cls is BlendPredictor:
        raise DrugcellInputError(f"{where}: a blend cannot be a member of a blend; list its members instead")
    if "metric" in cls.defaults and "metric" not in spec:
        spec["metric"] = metric
    return _Candidate(name, kind, spec)


def _fit_on(cand: _Candidate, train, seed: int) -> Predictor:
    """``cand`` fitted on ``train``: the twin the CV runner fitted on this very set when there is
    one (same kind, params and seed; :func:`drugcell.models.train_memo.fitted_twin`), else a fit."""
    from drugcell.models.train_memo import fitted_twin

    model = cand.build()
    twin = fitted_twin(model.kind, model.params, train, seed)
    return twin if twin is not None else model.fit(train, seed=seed)


@register("blend")
class BlendPredictor(Predictor):
    """Convex combination of members and baselines, weights fitted out of fold under the metric."""

    returns_std = False   # only when every candidate with weight returns one: see std_enabled
    simplicity = 60       # more complex than any of its members

    defaults = {
        "members": [{"kind": "ridge_fp"}, {"kind": "knn", "k": 20, "kernel": "softmax"}],
        "baselines": ["wmean"],
        "inner_folds": 3,
        "metric": "mejia",
    }

    # ----------------------------------------------------------------- params
    def _validate(self) -> None:
        from drugcell.metrics import available as metrics_available

        p = self.params
        if p["metric"] not in metrics_available():
            raise DrugcellInputError(
                f"blend: unknown metric {p['metric']!r}; known: {', '.join(metrics_available())}")
        folds = p["inner_folds"]
        if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
            raise DrugcellInputError(f"blend: inner_folds must be an integer >= 2, got {folds!r}")
        if not isinstance(p["members"], list):
            raise DrugcellInputError("blend: members must be a list of inline tables ({kind = ...})")
        baselines = p["baselines"]
        if not isinstance(baselines, list) or not all(isinstance(b, str) for b in baselines):
            raise DrugcellInputError(f"blend: baselines must be a list of kinds like [\"wmean\"], got {baselines!r}")
        cands = [_member_candidate(i, s, p["metric"]) for i, s in enumerate(p["members"])]
        for b in baselines:
            if get_class(b) is BlendPredictor:
                raise DrugcellInputError("blend: a blend cannot be a baseline of a blend")
            cands.append(_Candidate(b, b, {}))
        self._check_candidates(cands)
        self.candidates_ = cands
        self.models_: list[Predictor | None] = [c.build() for c in cands]   # validates every params
        self.weights_ = np.zeros(len(cands))
        self.oof_wmse_ = np.full(len(cands) + 1, np.nan)

    @staticmethod
    def _check_candidates(cands: list[_Candidate]) -> None:
        if not cands:
            raise DrugcellInputError("blend: no candidates; give at least one member or baseline")
        if len(cands) > MAX_CANDIDATES:
            raise DrugcellInputError(
                f"blend: {len(cands)} candidates (members + baselines); at most {MAX_CANDIDATES}")
        seen: set[str] = set()
        for c in cands:
            if not isinstance(c.name, str) or not _NAME_RE.match(c.name):
                raise DrugcellInputError(
                    f"blend: candidate name {c.name!r} must be letters, digits, '_', '-' or '.'")
            if c.name in seen:
                raise DrugcellInputError(
                    f"blend: two candidates are called {c.name!r}; give each member a distinct name "
                    "(e.g. {kind = \"knn\", k = 5, name = \"knn5\"}) and keep member names apart from the baselines")
            seen.add(c.name)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.candidates_]

    @property
    def std_enabled(self) -> bool:
        """After fit: whether every candidate with a non-zero weight returns a std; before: all."""
        active = [m for m, w in zip(self.models_, self.weights_, strict=True) if w > 0] if self.is_fitted else \
            self.models_
        return all(m is not None and m.std_enabled for m in active)

    # ----------------------------------------------------------------- fit
    def _fit(self, train, seed):
        k = len(self.candidates_)
        if k == 1:
            self.weights_ = np.ones(1)
            self.oof_wmse_ = np.full(2, np.nan)
        else:
            q, n = self._oof_gram(train, seed)
            self.weights_ = convex_weights(q)
            self.oof_wmse_ = np.append(np.diag(q) / n, self.weights_ @ q @ self.weights_ / n)
        self.models_ = [_fit_on(c, train, seed) if w > 0 else None
                        for c, w in zip(self.candidates_, self.weights_, strict=True)]

    def _oof_gram(self, train, seed: int) -> tuple[np.ndarray, int]:
        """Q (K, K) summed over the held-out compounds of every inner fold, and their count."""
        from drugcell.metrics import metric_weights
        from drugcell.splits import make_folds

        smiles = [str(s) for s in np.asarray(train.smiles)]
        try:
            folds = np.asarray(make_folds(smiles, "scaffold", self.params["inner_folds"], seed).folds)
        except DrugcellInputError as exc:
            raise DrugcellInputError(f"blend: inner folds of {len(smiles)} training compounds: {exc}") from None
        k = len(self.candidates_)
        q = np.zeros((k, k))
        for f in np.unique(folds):
            inner_train, held = train.subset(np.flatnonzero(folds != f)), train.subset(np.flatnonzero(folds == f))
            models = [c.build().fit(inner_train, seed=seed) for c in self.candidates_]
            y = np.asarray(held.expression)
            w = np.asarray(metric_weights(self.params["metric"], y, test_weights_gc=np.asarray(held.weights),
                                          train_truth_cg=np.asarray(inner_train.expression)))
            held_smiles = [str(s) for s in held.smiles]
            step = max(1, _CHUNK_CELLS // max(1, y.shape[1]))
            for lo in range(0, len(held_smiles), step):
                sl = slice(lo, lo + step)
                y_sl = y[sl].astype(np.float64)
                errors = [m.predict(held_smiles[sl]).mean.astype(np.float64) - y_sl for m in models]
                q += error_gram(errors, w[:, sl] if w.ndim == 2 else w)
            del models
        return q, len(smiles)

    # ----------------------------------------------------------------- predict
    def _predict(self, smiles):
        mean = None
        std = None
        with_std = True
        fallback = unparsed = 0.0
        for model, w in zip(self.models_, self.weights_, strict=True):
            if w <= 0 or model is None:
                continue
            pred = model.predict(smiles)
            wf = np.float32(w)
            mean = pred.mean * wf if mean is None else mean + pred.mean * wf
            with_std = with_std and pred.std is not None
            if with_std:
                std = pred.std * wf if std is None else std + pred.std * wf
            fallback = max(fallback, float(pred.info.get("n_fallback", 0.0)))
            unparsed = max(unparsed, float(pred.info.get("n_unparsed", 0.0)))
        info = {"n_fallback": fallback, "n_unparsed": unparsed}
        for name, w, oof in zip(self.names, self.weights_, self.oof_wmse_[:-1], strict=True):
            info[f"w_{name}"] = float(w)
            if np.isfinite(oof):
                info[f"oof_{name}"] = float(oof)
        if np.isfinite(self.oof_wmse_[-1]):
            info["oof_blend"] = float(self.oof_wmse_[-1])
        return Prediction(mean=mean, std=std if with_std else None, info=info)

    # ----------------------------------------------------------------- state
    def get_state(self) -> dict[str, np.ndarray]:
        state = super().get_state()
        state["candidates_"] = np.asarray(self.names, dtype=str)
        state["weights_"] = np.asarray(self.weights_, dtype=np.float64)
        state["oof_wmse_"] = np.asarray(self.oof_wmse_, dtype=np.float64)
        for i, model in enumerate(self.models_):
            if model is not None and self.weights_[i] > 0:
                for key, value in model.get_state().items():
                    state[_PREFIX.format(i) + key] = value
        return state

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        missing = [k for k in ("candidates_", "weights_", "oof_wmse_") if k not in state]
        if missing:
            raise DrugcellInputError(
                f"saved state for predictor 'blend' lacks array(s) {', '.join(missing)}; refit it.")
        saved = [str(n) for n in np.asarray(state["candidates_"]).tolist()]
        if saved != self.names:
            raise DrugcellInputError(
                f"saved blend has candidates {saved}, its config says {self.names}; the model dir is inconsistent")
        super().set_state(state)
        self.weights_ = np.asarray(state["weights_"], dtype=np.float64)
        self.oof_wmse_ = np.asarray(state["oof_wmse_"], dtype=np.float64)
        models: list[Predictor | None] = []
        for i, (cand, w) in enumerate(zip(self.candidates_, self.weights_, strict=True)):
            if w <= 0:
                models.append(None)
                continue
            prefix = _PREFIX.format(i)
            sub = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            model = cand.build()
            model.set_state(sub)
            models.append(model)
        self.models_ = models
