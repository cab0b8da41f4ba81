"""Deep predictor ``mlp``: chemistry embedding -> MLP -> low-rank residual basis -> all genes.

Fast by design (the old full-gene output layer was the bottleneck):

* the target is k SVD coefficients of the training residual over the mean (``lowrank.py``), so
  the output layer is hidden x k (k ~ 128) instead of hidden x 12,995, and decoding to genes is
  one (n, k) @ (k, G) product at predict time;
* the embedding of every compound is computed once per fit (the embedder caches features by
  canonical SMILES across folds) and the whole training set lives in one float32 tensor;
* early stopping on an inner *scaffold* split of the training fold (``make_folds``), so the
  epoch count is chosen on chemotypes the network has not seen, like the outer CV;
* CUDA + bf16 autocast when a GPU is present; deterministic on the CPU for a seed.

:class:`LowRankDeepPredictor` holds everything shared with ``fusion``: embedding, input
standardisation, basis, inner split, the training loop and state round-trip.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import torch
from torch import nn

from drugcell.errors import DrugcellInputError
from drugcell.models.base import Prediction, Predictor
from drugcell.models.heads import HeteroscedasticHead, gaussian_nll
from drugcell.models.lowrank import ResidualBasis, mejia_gene_scale
from drugcell.models.registry import register
from drugcell.models.torch_utils import (
    autocast,
    deterministic,
    module_to_numpy,
    numpy_to_module,
    seed_everything,
    select_device,
    to_tensor,
    torch_threads,
)

COMMON_DEFAULTS: dict[str, Any] = {
    "embedding": "descriptors",   # name in drugcell.chem.embeddings
    "embedding_params": {},       # passed to get_embedder(name, **params)
    "rank": 128,                  # size of the residual basis (SVD of the training fold)
    "basis_weight_power": 0.5,    # gene scale = mean Mejia weight ** power (0 = unweighted)
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


class MLPNet(nn.Module):
    """Linear-GELU-dropout stack; the last layer is a plain linear map or a heteroscedastic head."""

    def __init__(self, in_dim: int, hidden: list[int], out_dim: int, dropout: float,
                 heteroscedastic: bool = False, min_var: float = 1e-4):
        super().__init__()
        layers: list[nn.Module] = []
        d = in_dim
        for h in hidden:
            layers += [nn.Linear(d, int(h)), nn.GELU(), nn.Dropout(dropout)]
            d = int(h)
        self.body = nn.Sequential(*layers)
        self.heteroscedastic = heteroscedastic
        # heteroscedastic: one more variance than means, the outside-basis noise scale
        self.head = (HeteroscedasticHead(d, out_dim, min_var, n_var=out_dim + 1) if heteroscedastic
                     else nn.Linear(d, out_dim))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        h = self.body(x)
        if self.heteroscedastic:
            return self.head(h)
        return self.head(h), None


def _adamw(net: nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW with the fused kernel where torch has one: on 2 CPU cores the per-parameter
    update loop otherwise costs as much as the forward and backward pass of a batch."""
    try:
        return torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)


def _check_positive_int(params: dict, name: str, kind: str, minimum: int = 1) -> None:
    v = params[name]
    if not isinstance(v, int) or isinstance(v, bool) or v < minimum:
        raise DrugcellInputError(f"predictor kind {kind!r}: {name} must be an integer >= {minimum}, got {v!r}")


class LowRankDeepPredictor(Predictor):
    """Shared machinery of the deep predictors (not registered itself)."""

    defaults = COMMON_DEFAULTS
    heteroscedastic = False
    needs_torch = True
    simplicity = 40

    # ------------------------------------------------------------------ params
    def _validate(self) -> None:
        p, kind = self.params, self.kind
        for name in ("rank", "batch_size", "epochs", "patience"):
            _check_positive_int(p, name, kind)
        _check_positive_int(p, "inner_folds", kind, 2)
        _check_positive_int(p, "torch_threads", kind, 0)
        hidden = p["hidden"]
        if not (isinstance(hidden, list) and hidden and all(isinstance(h, int) and h > 0 for h in hidden)):
            raise DrugcellInputError(f"predictor kind {kind!r}: hidden must be a non-empty list of positive integers, got {hidden!r}")
        if not 0 <= float(p["dropout"]) < 1:
            raise DrugcellInputError(f"predictor kind {kind!r}: dropout must be in [0, 1), got {p['dropout']!r}")
        if float(p["lr"]) <= 0 or float(p["weight_decay"]) < 0:
            raise DrugcellInputError(f"predictor kind {kind!r}: lr must be > 0 and weight_decay >= 0")
        if not isinstance(p["embedding_params"], dict):
            raise DrugcellInputError(f"predictor kind {kind!r}: embedding_params must be a table/dict")

    # ------------------------------------------------------------------ inputs
    def _make_embedder(self):
        from drugcell.chem.embeddings import get_embedder

        return get_embedder(self.params["embedding"], **self.params["embedding_params"])

    def _extra_features(self, parsed, *, training: bool) -> np.ndarray | None:
        """Per-compound scalars appended to the embedding (fusion's retrieval support)."""
        return None

    def _prepare_reference(self, parsed) -> None:
        """Hook: remember what ``_extra_features`` needs from the training fold."""

    def _reference_state(self) -> dict[str, np.ndarray]:
        return {}

    def _set_reference_state(self, state: dict[str, np.ndarray]) -> None:
        """Hook: restore what ``_prepare_reference`` computed."""

    def _inputs(self, parsed, *, training: bool) -> tuple[np.ndarray, np.ndarray]:
        """(raw input rows (n, d) float32, usable mask): embedding (+ extra features)."""
        X, ok = self._embedder.transform_with_mask(parsed)
        X = np.asarray(X, dtype=np.float32)
        extra = self._extra_features(parsed, training=training)
        if extra is not None:
            X = np.concatenate([X, np.asarray(extra, np.float32)], axis=1)
        ok = np.asarray(ok, bool) & np.isfinite(X).all(axis=1)
        X[~ok] = 0.0
        return X, ok

    # ------------------------------------------------------------------ fit
    def _fit(self, train, seed: int) -> None:
        from drugcell.chem.molecules import parse_smiles

        p = self.params
        parsed = parse_smiles([str(s) for s in train.smiles], inchikey=False)  # parsed once
        Y = np.asarray(train.expression, np.float32)
        self._device = select_device(p["device"])

        self._embedder = self._make_embedder()
        self._embedder.fit(parsed)
        self._prepare_reference(parsed)
        X, ok = self._inputs(parsed, training=True)
        if ok.sum() < max(10, p["inner_folds"]):
            raise DrugcellInputError(
                f"predictor {self.kind!r}: only {int(ok.sum())} training compounds have a usable "
                "structure; the deep models need SMILES for most training compounds.")
        self._x_mean = X[ok].mean(axis=0)
        # never *amplify* a feature: a Morgan bit seen in 1 of 10,000 training compounds would
        # otherwise become a huge input on the unseen scaffold that carries it
        self._x_std = np.maximum(X[ok].std(axis=0), 1.0).astype(np.float32)

        power = float(p["basis_weight_power"])
        scale = mejia_gene_scale(train.weights, power) if power else None
        self._basis = ResidualBasis.fit(Y, rank=p["rank"], gene_scale=scale, seed=seed)
        Z = self._basis.encode(Y)
        self._z_scale = np.float32(math.sqrt(float(np.mean(Z[ok].astype(np.float64) ** 2))) or 1.0)

        Xs = self._standardise(X[ok])
        Zs = Z[ok] / self._z_scale
        if self.heteroscedastic:  # last target column: sqrt of the outside-basis noise ratio
            q = self._basis.outside_ratio(Y[ok])
            Zs = np.concatenate([Zs, np.sqrt(q)[:, None]], axis=1)
        inner = self._inner_folds([m for m, o in zip(parsed.mols, ok) if o], seed)
        self._nets = []
        self.history_: list[dict[str, float]] = []
        for member in range(self._n_members()):
            val = inner == (member % p["inner_folds"])
            net, hist = self._train_member(Xs, Zs, val, seed=seed * 1000 + member)
            self._nets.append(net)
            self.history_.append(hist)

    def _inner_folds(self, mols: list, seed: int) -> np.ndarray:
        """Inner scaffold fold ids over the usable training compounds, so early stopping is
        judged on chemotypes the network has not trained on (like the outer CV). Fewer scaffolds
        than folds fall back to a random split (fine: this only picks an epoch)."""
        from drugcell.chem.scaffolds import scaffold_of_mol
        from drugcell.splits.folds import random_kfold, scaffold_kfold

        k = int(self.params["inner_folds"])
        scaffolds = [scaffold_of_mol(m) for m in mols]
        if len(set(scaffolds)) >= k:
            return scaffold_kfold(scaffolds, n_folds=k, seed=seed)
        return random_kfold(len(mols), n_folds=k, seed=seed)

    def _n_members(self) -> int:
        return 1

    def _standardise(self, X: np.ndarray) -> np.ndarray:
        """Centre and scale with training statistics; clip so one outlying descriptor of an
        unusual test molecule cannot dominate the first layer."""
        clip = float(self.params["input_clip"])
        return np.clip((X - self._x_mean) / self._x_std, -clip, clip).astype(np.float32)

    def _train_member(self, X: np.ndarray, Z: np.ndarray, val: np.ndarray, seed: int):
        """Train one network with AdamW and early stopping on the validation rows ``val``."""
        p = self.params
        dev = self._device
        with deterministic(p["deterministic"], dev), torch_threads(int(p["torch_threads"])):
            gen = seed_everything(seed)
            net = MLPNet(X.shape[1], p["hidden"], self._basis.rank, float(p["dropout"]),
                         heteroscedastic=self.heteroscedastic,
                         min_var=float(self.params.get("min_var", 1e-4))).to(dev)
            opt = _adamw(net, float(p["lr"]), float(p["weight_decay"]))
            Xt, Zt = to_tensor(X[~val], dev), to_tensor(Z[~val], dev)
            Xv, Zv = to_tensor(X[val], dev), to_tensor(Z[val], dev)
            n, bs = Xt.shape[0], int(p["batch_size"])
            warm = self._warmup_epochs()
            best, best_state, bad = math.inf, None, 0
            hist: dict[str, float] = {}
            for epoch in range(int(p["epochs"])):
                nll_phase = self.heteroscedastic and epoch >= warm
                net.train()
                perm = torch.randperm(n, generator=gen).to(dev)
                for a in range(0, n, bs):
                    idx = perm[a:a + bs]
                    if idx.numel() < 2:
                        continue
                    with autocast(dev, p["amp"]):
                        mu, var = net(Xt[idx])
                    loss = self._loss(mu.float(), None if var is None else var.float(), Zt[idx], nll_phase)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                crit, val_mse = self._evaluate(net, Xv, Zv, nll_phase)
                if self.heteroscedastic and not nll_phase:
                    continue  # the warm-up only shapes the mean; stopping starts with the NLL
                if best_state is None or crit < best - 1e-6 * abs(best):
                    best, bad = crit, 0
                    best_state = copy.deepcopy(net.state_dict())
                    hist = {"best_epoch": float(epoch + 1), "val_criterion": float(crit),
                            "val_mse": float(val_mse)}
                else:
                    bad += 1
                    if bad >= int(p["patience"]):
                        break
            if best_state is not None:
                net.load_state_dict(best_state)
            hist["epochs_run"] = float(epoch + 1)
        net.eval()
        return net, hist

    def _warmup_epochs(self) -> int:
        return 0

    def _loss(self, mu, var, z, nll_phase: bool) -> torch.Tensor:
        """MSE on the coefficients; in the NLL phase a Gaussian NLL over the coefficients and
        the outside-basis column, whose mean is 0 and target sqrt(q), so its term is exactly
        0.5 * (log s + q / s): the NLL of the outside-basis residual with variance s * r_g."""
        k = mu.shape[1]
        if nll_phase:
            mu_full = torch.cat([mu, torch.zeros_like(mu[:, :1])], dim=1)
            return gaussian_nll(mu_full, var, z, beta=float(self.params.get("nll_beta", 0.0)))
        return torch.mean((mu - z[:, :k]) ** 2)

    @torch.no_grad()
    def _evaluate(self, net, Xv, Zv, nll_phase: bool) -> tuple[float, float]:
        """(stopping criterion, MSE) on the validation rows: NLL in the NLL phase, else MSE."""
        if Xv.shape[0] == 0:
            return 0.0, 0.0
        net.eval()
        mu, var = self._forward_batches(net, Xv)
        mse = float(torch.mean((mu - Zv[:, :mu.shape[1]]) ** 2))
        if nll_phase:  # plain NLL (beta=0) whatever the training beta: a proper score
            mu_full = torch.cat([mu, torch.zeros_like(mu[:, :1])], dim=1)
            return float(gaussian_nll(mu_full, var, Zv)), mse
        return mse, mse

    @torch.no_grad()
    def _forward_batches(self, net, X: torch.Tensor, bs: int = 4096):
        mus, vars_ = [], []
        for a in range(0, X.shape[0], bs):
            with autocast(self._device, self.params["amp"]):
                mu, var = net(X[a:a + bs])
            mus.append(mu.float())
            if var is not None:
                vars_.append(var.float())
        return torch.cat(mus), (torch.cat(vars_) if vars_ else None)

    # ------------------------------------------------------------------ predict
    def _member_outputs(self, smiles: list[str]):
        """Per member: (coefficient mean (n, k), coefficient var (n, k) or None), plus ok mask."""
        from drugcell.chem.molecules import parse_smiles

        X, ok = self._inputs(parse_smiles(smiles, inchikey=False), training=False)
        Xs = to_tensor(self._standardise(X), self._device)
        outs = []
        for net in self._nets:
            net.eval()
            with torch_threads(int(self.params["torch_threads"])):
                mu, var = self._forward_batches(net, Xs)
            mu = mu.cpu().numpy() * self._z_scale
            if var is not None:  # coefficient variances back to basis units; noise ratio as is
                var = var.cpu().numpy()
                var[:, :-1] *= self._z_scale**2
            outs.append((mu, var))
        return outs, ok

    def _predict(self, smiles: list[str]) -> Prediction:
        outs, ok = self._member_outputs(smiles)
        z = np.mean([mu for mu, _ in outs], axis=0)
        z[~ok] = 0.0  # unusable structure -> the training mean profile
        mean = self._basis.decode(z)
        n_bad = float((~ok).sum())
        return Prediction(mean=mean, std=None, info={"n_fallback": n_bad, "n_unparsed": n_bad})

    # ------------------------------------------------------------------ state
    def get_state(self) -> dict[str, np.ndarray]:
        state = super().get_state()
        state.update(self._basis.get_state())
        state.update({f"embedder.{k}": v for k, v in self._embedder.get_state().items()})
        state.update(self._reference_state())
        state["x_mean"], state["x_std"] = self._x_mean, self._x_std
        state["z_scale"] = np.asarray(self._z_scale, np.float32)
        state["n_members"] = np.asarray(len(self._nets), np.int64)
        for m, net in enumerate(self._nets):
            state.update(module_to_numpy(net, f"net{m}."))
        return state

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        super().set_state(state)
        p = self.params
        self._device = select_device(p["device"])
        self._basis = ResidualBasis.from_state(state)
        self._embedder = self._make_embedder()
        self._embedder.set_state({k.split(".", 1)[1]: v for k, v in state.items()
                                  if k.startswith("embedder.")})
        self._set_reference_state(state)
        self._x_mean = np.asarray(state["x_mean"], np.float32)
        self._x_std = np.asarray(state["x_std"], np.float32)
        self._z_scale = np.float32(state["z_scale"])
        self._nets = []
        for m in range(int(state["n_members"])):
            net = MLPNet(self._x_mean.shape[0], p["hidden"], self._basis.rank, float(p["dropout"]),
                         heteroscedastic=self.heteroscedastic,
                         min_var=float(p.get("min_var", 1e-4))).to(self._device)
            numpy_to_module(net, state, f"net{m}.")
            net.eval()
            self._nets.append(net)


@register("mlp")
class MLPPredictor(LowRankDeepPredictor):
    """Chemistry-only MLP: embedding -> residual over the training mean in a low-rank basis."""

    defaults = dict(COMMON_DEFAULTS)
