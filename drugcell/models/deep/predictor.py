"""The composition behind the deep predictors: feature providers -> input scaler -> trainer's
networks (body + head) -> low-rank basis -> all genes.

Why a composition: a registered deep kind only declares its ``providers`` and its ``head_type``
(``mlp.py``, ``fusion.py``); everything else is shared here, with no hook to override.

Fast by design: the target is k SVD coefficients of the training residual over a centre profile
(``lowrank.py``), so the output layer is hidden x k (k ~ 128) instead of hidden x 12,995 and
decoding is one (n, k) @ (k, G) product; the embedding of every compound is computed once per
fit (embedders cache features by canonical SMILES) and the training set is one float32 tensor.
Members are combined in gene space (``ensemble.py``); with a variance head the std is the
mixture's, otherwise no std is returned.

Fitted under the metric (params ``baseline``, ``loss_weighting``, ``loss_genes``): under
per-(gene, compound) Mejia weights the best structure-free prediction is not the per-gene mean
but ``wmean``, the mean weighted by each training compound's own weights
(``weighted_mean_profile``). With ``baseline = "wmean"`` the basis is centred there, so a
compound the network cannot read gets the metric-optimal constant. The centre alone decides
little once the network trains: under the unweighted ``"gene"`` loss its output bias learns the
offset back toward the plain mean, which is what minimises that loss.
``loss_weighting = "compound"`` fits each training compound under its own weights
(``weighting.py``), whose best constant is exactly the wmean centre. ``baseline = "mean"`` with
``loss_weighting = "gene"`` is the earlier model, prediction for prediction.
"""

from __future__ import annotations

import functools
import math
from typing import Any, ClassVar

import numpy as np

from drugcell.chem.molecules import ParsedMolecules, parse_smiles
from drugcell.errors import DrugcellInputError
from drugcell.models.base import Prediction, Predictor
from drugcell.models.baselines import weighted_mean_profile
from drugcell.models.deep.ensemble import EnsembleAccumulator
from drugcell.models.deep.features import (
    EmbeddingFeatures,
    FeatureProvider,
    InputScaler,
    fit_features,
    transform_features,
)
from drugcell.models.deep.heads import Head, MeanHead
from drugcell.models.deep.lowrank import ResidualBasis, mejia_gene_scale
from drugcell.models.deep.params import check_int
from drugcell.models.deep.torch_utils import module_to_numpy, numpy_to_module
from drugcell.models.deep.trainer import Trainer
from drugcell.models.deep.weighting import CompoundWeightedLoss

COMMON_DEFAULTS: dict[str, Any] = {
    "embedding": "descriptors",   # name in drugcell.chem.embeddings
    "embedding_params": {},       # passed to get_embedder(name, **params)
    "rank": 128,                  # size of the residual basis (SVD of the training fold)
    "basis_weight_power": 0.5,    # gene scale = mean Mejia weight ** power (0 = unweighted)
    "baseline": "wmean",          # centre of the residual basis: "wmean" (metric-optimal) or "mean"
    "loss_weighting": "compound",  # "compound": each compound's own Mejia weights; "gene": unweighted
    "loss_genes": 0,              # "compound": genes scored per training step (0 = all; see weighting.py)
    "hidden": [512, 256],         # hidden layer widths
    "dropout": 0.1,
    "lr": 2e-3,
    "weight_decay": 1e-4,         # AdamW
    "batch_size": 256,
    "epochs": 30,                 # maximum; early stopping usually ends sooner
    "patience": 4,                # epochs without validation improvement before stopping
    "inner_folds": 10,            # inner scaffold split: one fold (10%) validates
    "device": "auto",             # "auto" -> CUDA when present, else CPU
    "amp": True,                  # bf16 autocast on CUDA (ignored on CPU)
    "deterministic": True,
    "input_clip": 10.0,           # standardised inputs are clipped to +-input_clip
    "torch_threads": 1,           # intra-op threads for training/inference (0 = torch default)
}


def _parse(smiles) -> ParsedMolecules:
    return parse_smiles([str(s) for s in smiles], inchikey=False)


class LowRankDeepPredictor(Predictor):
    """Deep predictor composed of ``providers`` and ``head_type`` (not registered itself)."""

    defaults = COMMON_DEFAULTS
    needs_torch = True
    simplicity = 40
    providers: ClassVar[tuple[type[FeatureProvider], ...]] = (EmbeddingFeatures,)
    head_type: ClassVar[type[Head]] = MeanHead
    state_fields = ("n_train_",)  # training set size (the fallback spread); the rest is below

    def _validate(self) -> None:
        check_int(self.params, "rank", self.kind)
        check_int(self.params, "loss_genes", self.kind, 0)
        for name, allowed in (("baseline", ("wmean", "mean")), ("loss_weighting", ("compound", "gene"))):
            if self.params[name] not in allowed:
                raise DrugcellInputError(f"predictor kind {self.kind!r}: {name} must be one of "
                                         f"{', '.join(map(repr, allowed))}, got {self.params[name]!r}")
        for part in (Trainer, *self.providers, self.head_type):
            part.check_params(self.params, self.kind)

    def _make_head(self, rank: int, metric_loss: CompoundWeightedLoss | None = None):
        """in_dim -> a fresh head for ``rank`` coefficients (the trainer builds one per member),
        fitted under ``metric_loss`` when one is given."""
        make = functools.partial(self.head_type, out_dim=rank, **self.head_type.options(self.params))
        if metric_loss is None:
            return make

        def make_weighted(in_dim: int):
            head = make(in_dim)
            head.metric_loss = metric_loss
            return head
        return make_weighted

    # ------------------------------------------------------------------ fit
    def _fit(self, train, seed: int) -> None:
        p = self.params
        parsed = _parse(train.smiles)  # parsed once for every provider and the inner folds
        Y = np.asarray(train.expression, np.float32)
        self._trainer = Trainer.from_params(p)
        self._providers = [cls.from_params(p) for cls in self.providers]
        X, ok = fit_features(self._providers, parsed)
        if ok.sum() < max(10, p["inner_folds"]):
            raise DrugcellInputError(
                f"predictor {self.kind!r}: only {int(ok.sum())} training compounds have a usable "
                "structure; the deep models need SMILES for most training compounds.")
        self._scaler = InputScaler.fit(X[ok], float(p["input_clip"]))

        power = float(p["basis_weight_power"])
        scale = mejia_gene_scale(train.weights, power) if power else None
        center = weighted_mean_profile(Y, train.weights) if p["baseline"] == "wmean" else None
        self._basis = ResidualBasis.fit(Y, rank=p["rank"], gene_scale=scale, center=center, seed=seed)
        Z = self._basis.encode(Y)
        self._z_scale = np.float32(math.sqrt(float(np.mean(Z[ok].astype(np.float64) ** 2))) or 1.0)
        self.n_train_ = len(Y)

        Yok = Y[ok]
        targets = self.head_type.targets(Z[ok] / self._z_scale, Yok, self._basis)
        metric_loss = None
        if p["loss_weighting"] == "compound":  # the heads read the row from the last column
            W = train.weights if ok.all() else np.asarray(train.weights)[:, ok]  # no copy if all usable
            metric_loss = CompoundWeightedLoss(Yok, W, self._basis, float(self._z_scale), p["loss_genes"])
            targets = np.concatenate([targets, np.arange(len(Yok), dtype=np.float32)[:, None]], axis=1)
        folds = self._trainer.fold_ids([m for m, o in zip(parsed.mols, ok) if o], seed)
        self._nets, self.history_ = self._trainer.fit(
            self._scaler.transform(X[ok]), targets, folds, self._make_head(self._basis.rank, metric_loss), seed)
        for net in self._nets:  # training data only: not kept with the fitted model
            net.head.metric_loss = None

    # ------------------------------------------------------------------ predict
    def _predict(self, smiles: list[str]) -> Prediction:
        X, ok = transform_features(self._providers, _parse(smiles))
        acc = EnsembleAccumulator()
        for net, (mu, var) in zip(self._nets, self._trainer.predict(self._nets, self._scaler.transform(X))):
            acc.add(*net.head.to_genes(mu, var, self._basis, self._z_scale, ok))
        mean, var_g, _, _ = acc.result()
        std = None
        if self.head_type.predicts_variance:
            if (~ok).any():  # unusable structure: the spread of training profiles around the centre
                var_g[~ok] = self._basis.profile_var(int(self.n_train_))
            std = np.sqrt(var_g).astype(np.float32)
        n_bad = float((~ok).sum())
        return Prediction(mean=mean.astype(np.float32), std=std,
                          info={"n_fallback": n_bad, "n_unparsed": n_bad})

    # ------------------------------------------------------------------ state
    def get_state(self) -> dict[str, np.ndarray]:
        state = super().get_state()
        state.update(self._basis.get_state())
        for provider in self._providers:
            state.update(provider.get_state())
        state.update(self._scaler.get_state())
        state["z_scale"] = np.asarray(self._z_scale, np.float32)
        state["n_members"] = np.asarray(len(self._nets), np.int64)
        for m, net in enumerate(self._nets):
            state.update(module_to_numpy(net, f"net{m}."))
        return state

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        super().set_state(state)
        p = self.params
        self._trainer = Trainer.from_params(p)
        self._basis = ResidualBasis.from_state(state)
        self._providers = [cls.from_params(p) for cls in self.providers]
        for provider in self._providers:
            provider.set_state(state)
        self._scaler = InputScaler.from_state(state, float(p["input_clip"]))
        self._z_scale = np.float32(state["z_scale"])
        make_head = self._make_head(self._basis.rank)
        self._nets = []
        for m in range(int(state["n_members"])):
            net = self._trainer.build(self._scaler.dim, make_head)
            numpy_to_module(net, state, f"net{m}.")
            net.eval()
            self._nets.append(net)
