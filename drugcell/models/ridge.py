"""Ridge regression from chemistry features to every gene at once: ``ridge_fp`` (Morgan
fingerprints), ``ridge_desc`` (RDKit descriptors) and ``ridge_emb`` (a registered embedding,
MiniMol by default).

Predictions are the residual over a baseline profile: ``baseline + (x - mean_x) B``. The baseline
is ``wmean`` by default, the metric-optimal constant under Mejia weights (each gene's mean over
the training compounds weighted by their own weights; see
:func:`drugcell.models.baselines.weighted_mean_profile`), or the plain ``mean`` (the behaviour
before it existed). B does not depend on the baseline: the features are centred, so only the
intercept moves. Compounds without features get the baseline profile.

Alpha (``alpha_selection``): ``grouped_cv`` (default) picks it by inner scaffold folds of the
training compounds under the run's ``metric``; ``gcv`` by generalised cross-validation with
duplicate feature rows collapsed. Both, and their costs, are in :mod:`drugcell.models.ridge_alpha`.
"""

from __future__ import annotations

import numpy as np

from drugcell.defaults import LOG2CPM, MORGAN_BITS, MORGAN_RADIUS
from drugcell.errors import DrugcellInputError
from drugcell.models.base import Prediction, Predictor
from drugcell.models.baselines import weighted_mean_profile
from drugcell.models.registry import register
from drugcell.models.ridge_alpha import RidgeFit, default_alphas, gcv_ridge, grouped_cv_curve
from drugcell.models.ridge_alpha import as_operand as _as_operand

__all__ = ["RidgeFit", "default_alphas", "gcv_ridge"]

BASELINES = ("wmean", "mean")
SELECTIONS = ("grouped_cv", "gcv")
#: params every ridge kind accepts (each kind adds its feature params)
RIDGE_DEFAULTS = {
    "alphas": None, "n_alphas": 41, "alpha_per_gene": False, "baseline": "wmean",
    "alpha_selection": "grouped_cv", "inner_folds": 3, "metric": "mejia", "cv_genes": 2000,
}


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


class _RidgeBase(Predictor):
    """Shared fit/predict: subclasses say how to turn SMILES into a feature matrix."""

    returns_std = True   # the per-gene residual std at the chosen alpha
    simplicity = 30
    reuse_fit = True

    state_fields = ("coef_", "intercept_", "alpha_", "mean_", "sigma_")
    _INFO = ("info_keys_", "info_values_")  # optional state: the alpha-selection diagnostics

    def _validate(self):
        p = self.params
        alphas, n_alphas = p["alphas"], p["n_alphas"]
        if alphas is not None and (
            not isinstance(alphas, list)
            or not alphas
            or not all(isinstance(a, (int, float)) and not isinstance(a, bool) and a > 0 for a in alphas)
        ):
            raise DrugcellInputError(f"{self.kind}: alphas must be a list of positive numbers or null, got {alphas!r}")
        if not _is_int(n_alphas) or n_alphas < 2:
            raise DrugcellInputError(f"{self.kind}: n_alphas must be an integer >= 2, got {n_alphas!r}")
        if not isinstance(p["alpha_per_gene"], bool):
            raise DrugcellInputError(f"{self.kind}: alpha_per_gene must be true or false")
        for key, allowed in (("baseline", BASELINES), ("alpha_selection", SELECTIONS)):
            if p[key] not in allowed:
                raise DrugcellInputError(f"{self.kind}: {key} must be one of {', '.join(allowed)}, got {p[key]!r}")
        if p["alpha_per_gene"] and p["alpha_selection"] != "gcv":
            raise DrugcellInputError(
                f"{self.kind}: alpha_per_gene = true needs alpha_selection = \"gcv\" (grouped CV scores "
                "one alpha on a subset of genes, so it cannot pick one per gene)")
        if not _is_int(p["inner_folds"]) or p["inner_folds"] < 2:
            raise DrugcellInputError(f"{self.kind}: inner_folds must be an integer >= 2, got {p['inner_folds']!r}")
        if p["cv_genes"] is not None and (not _is_int(p["cv_genes"]) or p["cv_genes"] < 1):
            raise DrugcellInputError(f"{self.kind}: cv_genes must be a positive integer or null, got {p['cv_genes']!r}")
        from drugcell.metrics import available as metrics_available

        if p["metric"] not in metrics_available():
            raise DrugcellInputError(
                f"{self.kind}: unknown metric {p['metric']!r}; choose one of {', '.join(metrics_available())}")

    # subclasses: features for fit (may fit a transform on training rows) and for predict
    def _features(self, smiles: list[str], *, fit: bool) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def _fit(self, train, seed):
        p = self.params
        smiles = [str(s) for s in np.asarray(train.smiles)]
        x, ok = self._features(smiles, fit=True)
        y = np.asarray(train.expression)
        weights = np.asarray(train.weights)
        if p["baseline"] == "mean":
            self.mean_ = y.mean(axis=0, dtype=np.float64).astype(np.float32)
        else:
            self.mean_ = weighted_mean_profile(y, weights)
        if ok.sum() < 2:
            raise DrugcellInputError(
                f"{self.kind}: only {int(ok.sum())} training compounds have parseable SMILES; "
                "ridge needs at least 2. Check the `smiles` column of the training data."
            )
        alphas = None if p["alphas"] is None else np.asarray(p["alphas"], float)
        if not ok.all():
            x, y, weights = x[ok], y[ok], weights[:, ok]
            smiles = [s for s, keep in zip(smiles, ok) if keep]
        chooser = None
        if p["alpha_selection"] == "grouped_cv":
            def chooser(grid):
                return grouped_cv_curve(
                    x, y, grid, smiles=smiles, weights_gc=weights, metric=p["metric"], baseline=p["baseline"],
                    n_folds=p["inner_folds"], cv_genes=p["cv_genes"], seed=seed, clip=self.value_scale == LOG2CPM)
        fit = gcv_ridge(x, y, alphas, per_gene=p["alpha_per_gene"], n_alphas=p["n_alphas"], dedupe=True,
                        chooser=chooser)
        intercept = fit.intercept
        if p["baseline"] == "wmean":  # same B; the intercept moves from the mean to the wmean
            intercept = intercept - fit.mean_y + weighted_mean_profile(y, weights).astype(np.float64)
        self.coef_, self.intercept_, self.alpha_, self.sigma_ = fit.coef, intercept, fit.alpha, fit.sigma
        self.fit_ = fit  # GCV / inner-CV curves for diagnostics
        self.n_train_unparsed_ = int((~ok).sum())
        self.fit_info_ = self._fit_info(fit)

    @staticmethod
    def _fit_info(fit: RidgeFit) -> dict[str, float]:
        """Flat float diagnostics of the alpha choice (they travel with the saved state)."""
        info = dict(fit.info)
        info["alpha_grouped_cv"] = float(fit.selection == "grouped_cv")
        if np.ndim(fit.alpha) == 0:
            info["alpha_index"] = float(np.flatnonzero(fit.alphas == fit.alpha)[0])
            info["alpha_at_grid_edge"] = float(info["alpha_index"] in (0, len(fit.alphas) - 1))
        if fit.cv is not None:
            info["cv_wmse"] = float(np.min(fit.cv))
            for i, (a, v) in enumerate(zip(fit.alphas, fit.cv)):
                info[f"cv_wmse[{i:02d}:{a:.3g}]"] = float(v)
        return info

    def get_state(self):
        state = super().get_state()
        info = getattr(self, "fit_info_", {})
        state["info_keys_"] = np.asarray(list(info), dtype=str)
        state["info_values_"] = np.asarray(list(info.values()), dtype=np.float64)
        return state

    def set_state(self, state):
        super().set_state(state)
        keys = state.get("info_keys_", np.zeros(0, dtype=str))  # absent in models saved before them
        values = state.get("info_values_", np.zeros(0))
        self.fit_info_ = {str(k): float(v) for k, v in zip(np.asarray(keys).tolist(), np.asarray(values))}

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
            **getattr(self, "fit_info_", {}),
        }
        return Prediction(mean=mean, std=std, info=info)


@register("ridge_fp")
class RidgeFingerprintPredictor(_RidgeBase):
    """Ridge on 2048-bit Morgan (radius 2) fingerprints: ``fingerprint`` = "bits" or "counts"."""

    defaults = {"fingerprint": "bits", **RIDGE_DEFAULTS}

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


class _PrefixedState:
    """Save a helper's arrays inside the predictor's flat state under a key prefix."""

    @staticmethod
    def put(state: dict, prefix: str, sub: dict) -> None:
        for key, value in sub.items():
            state[prefix + key] = np.asarray(value)

    @staticmethod
    def take(state: dict, prefix: str) -> dict:
        return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


@register("ridge_desc")
class RidgeDescriptorPredictor(_RidgeBase):
    """Ridge on RDKit descriptors, standardised with statistics of the training compounds only
    (:class:`drugcell.chem.descriptors.DescriptorStandardizer`: impute, clip, z-score)."""

    defaults = dict(RIDGE_DEFAULTS)
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
        _PrefixedState.put(state, self._PREFIX, self.standardizer_.get_state())
        return state

    def set_state(self, state):
        from drugcell.chem.descriptors import DescriptorStandardizer

        super().set_state(state)
        sub = _PrefixedState.take(state, self._PREFIX)
        if not sub:
            raise DrugcellInputError(
                "saved state for predictor 'ridge_desc' lacks the descriptor standardiser arrays; refit it."
            )
        self.standardizer_ = DescriptorStandardizer.from_state(sub)


@register("ridge_emb")
class RidgeEmbeddingPredictor(_RidgeBase):
    """Ridge on a registered embedding (:mod:`drugcell.chem.embeddings`), each dimension z-scored
    with statistics of the training compounds. ``embedding`` names it (default ``minimol``, which
    needs ``pip install 'drugcell[minimol]'``), ``embedding_params`` are its params.

    With MiniMol, mind the caveat in :class:`~drugcell.chem.embeddings.MinimolEmbedder`: it was
    pretrained with L1000 MCF7/VCAP response heads, so on L1000-derived benchmarks its gains are an
    upper bound; on THP-1 DRUG-seq it is honest transfer.
    """

    defaults = {"embedding": "minimol", "embedding_params": {}, **RIDGE_DEFAULTS}
    _PREFIX = "embedder__"

    def _validate(self):
        super()._validate()
        if not isinstance(self.params["embedding_params"], dict):
            raise DrugcellInputError("ridge_emb: embedding_params must be a table/dict")
        self._new_embedder()  # unknown names, bad params and a missing package fail here, not mid-CV

    def _new_embedder(self):
        from drugcell.chem.embeddings import get_embedder

        return get_embedder(self.params["embedding"], **self.params["embedding_params"])

    def _features(self, smiles, *, fit):
        if fit:
            self.embedder_ = self._new_embedder()
            if self.embedder_.needs_fit:
                self.embedder_.fit(smiles)
        x, ok = self.embedder_.transform_with_mask(smiles)
        x, ok = np.asarray(x, dtype=np.float64), np.asarray(ok, dtype=bool)
        if fit:
            rows = x[ok] if ok.any() else np.zeros((1, x.shape[1]))
            std = rows.std(axis=0)
            self.emb_mean_, self.emb_std_ = rows.mean(axis=0), np.where(std > 1e-8, std, 1.0)
        x = (x - self.emb_mean_) / self.emb_std_
        x[~ok] = 0.0
        return x, ok

    def get_state(self):
        state = super().get_state()
        state["emb_mean_"], state["emb_std_"] = self.emb_mean_, self.emb_std_
        _PrefixedState.put(state, self._PREFIX, self.embedder_.get_state())
        return state

    def set_state(self, state):
        missing = [k for k in ("emb_mean_", "emb_std_") if k not in state]
        if missing:
            raise DrugcellInputError(f"saved state for predictor 'ridge_emb' lacks {', '.join(missing)}; refit it.")
        super().set_state(state)
        self.emb_mean_, self.emb_std_ = np.asarray(state["emb_mean_"]), np.asarray(state["emb_std_"])
        self.embedder_ = self._new_embedder()
        self.embedder_.set_state(_PrefixedState.take(state, self._PREFIX))
