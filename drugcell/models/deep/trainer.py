"""Training of the deep models: AdamW, early stopping on an inner scaffold split, member seeds.

Why it knows nothing of the head: the loss, the warm-up and the stopping criterion belong to the
head (``heads.py``); the trainer only asks it for ``loss``, ``judges`` and ``val_criterion``.

* early stopping on an inner *scaffold* split of the training fold (``make_folds``), so the
  epoch count is chosen on chemotypes the network has not seen, like the outer CV; member ``m``
  validates on inner fold ``m % inner_folds`` and trains from seed ``seed * 1000 + m``;
* CUDA + bf16 autocast when a GPU is present; deterministic on the CPU for a seed.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from drugcell.errors import DrugcellInputError
from drugcell.models.deep.heads import Head
from drugcell.models.deep.network import DeepNet
from drugcell.models.deep.params import check_int
from drugcell.models.deep.torch_utils import (
    autocast,
    deterministic,
    seed_everything,
    select_device,
    to_tensor,
    torch_threads,
)

MakeHead = Callable[[int], Head]


def _adamw(net: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW with the fused kernel where torch has one: on 2 CPU cores the per-parameter
    update loop otherwise costs as much as the forward and backward pass of a batch."""
    try:
        return torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)


@dataclass
class _EarlyStopping:
    """Best validation criterion so far, the weights that reached it, epochs since."""

    patience: int
    best: float = math.inf
    state: dict | None = None
    bad: int = 0
    hist: dict[str, float] = field(default_factory=dict)

    def stop_after(self, net: torch.nn.Module, epoch: int, crit: float, mse: float) -> bool:
        if self.state is None or crit < self.best - 1e-6 * abs(self.best):
            self.best, self.bad = crit, 0
            self.state = copy.deepcopy(net.state_dict())
            self.hist = {"best_epoch": float(epoch + 1), "val_criterion": float(crit), "val_mse": float(mse)}
            return False
        self.bad += 1
        return self.bad >= self.patience


@dataclass
class Trainer:
    """Trains ``n_members`` networks (body of ``hidden`` widths + a head) on standardised rows."""

    hidden: list[int]
    dropout: float
    lr: float
    weight_decay: float
    batch_size: int
    epochs: int
    patience: int
    inner_folds: int
    n_members: int
    device: torch.device
    amp: bool = True
    deterministic: bool = True
    torch_threads: int = 1

    @classmethod
    def from_params(cls, p: dict[str, Any]) -> Trainer:
        return cls(hidden=[int(h) for h in p["hidden"]], dropout=float(p["dropout"]), lr=float(p["lr"]),
                   weight_decay=float(p["weight_decay"]), batch_size=int(p["batch_size"]),
                   epochs=int(p["epochs"]), patience=int(p["patience"]), inner_folds=int(p["inner_folds"]),
                   n_members=int(p.get("n_members", 1)), device=select_device(p["device"]),
                   amp=bool(p["amp"]), deterministic=bool(p["deterministic"]),
                   torch_threads=int(p["torch_threads"]))

    @staticmethod
    def check_params(p: dict[str, Any], kind: str) -> None:
        for name in ("batch_size", "epochs", "patience"):
            check_int(p, name, kind)
        check_int(p, "inner_folds", kind, 2)
        check_int(p, "torch_threads", kind, 0)
        if "n_members" in p:
            check_int(p, "n_members", kind)
        hidden = p["hidden"]
        if not (isinstance(hidden, list) and hidden and all(isinstance(h, int) and h > 0 for h in hidden)):
            raise DrugcellInputError(f"predictor kind {kind!r}: hidden must be a non-empty list of positive integers, got {hidden!r}")
        if not 0 <= float(p["dropout"]) < 1:
            raise DrugcellInputError(f"predictor kind {kind!r}: dropout must be in [0, 1), got {p['dropout']!r}")
        if float(p["lr"]) <= 0 or float(p["weight_decay"]) < 0:
            raise DrugcellInputError(f"predictor kind {kind!r}: lr must be > 0 and weight_decay >= 0")

    # ------------------------------------------------------------------ fit
    def fold_ids(self, mols: list, seed: int) -> np.ndarray:
        """Inner scaffold fold ids of the training compounds, so early stopping is judged on
        chemotypes the network has not trained on (like the outer CV). Fewer scaffolds than
        folds fall back to a random split (fine: this only picks an epoch)."""
        from drugcell.chem.scaffolds import scaffold_of_mol
        from drugcell.splits.folds import random_kfold, scaffold_kfold

        scaffolds = [scaffold_of_mol(m) for m in mols]
        if len(set(scaffolds)) >= self.inner_folds:
            return scaffold_kfold(scaffolds, n_folds=self.inner_folds, seed=seed)
        return random_kfold(len(mols), n_folds=self.inner_folds, seed=seed)

    def fit(self, X: np.ndarray, T: np.ndarray, folds: np.ndarray, make_head: MakeHead, seed: int
            ) -> tuple[list[DeepNet], list[dict[str, float]]]:
        """One network per member on inputs ``X`` and head targets ``T``; (nets, histories)."""
        nets, history = [], []
        for member in range(self.n_members):
            val = folds == (member % self.inner_folds)
            net, hist = self.train_member(X, T, val, make_head, seed=seed * 1000 + member)
            nets.append(net)
            history.append(hist)
        return nets, history

    def build(self, in_dim: int, make_head: MakeHead) -> DeepNet:
        return DeepNet(in_dim, self.hidden, self.dropout, make_head).to(self.device)

    def train_member(self, X: np.ndarray, T: np.ndarray, val: np.ndarray, make_head: MakeHead, seed: int
                     ) -> tuple[DeepNet, dict[str, float]]:
        """Train one network with AdamW and early stopping on the validation rows ``val``."""
        dev = self.device
        with deterministic(self.deterministic, dev), torch_threads(self.torch_threads):
            gen = seed_everything(seed)
            net = self.build(X.shape[1], make_head)
            opt = _adamw(net, self.lr, self.weight_decay)
            Xt, Tt = to_tensor(X[~val], dev), to_tensor(T[~val], dev)
            Xv, Tv = to_tensor(X[val], dev), to_tensor(T[val], dev)
            stopping = _EarlyStopping(self.patience)
            for epoch in range(self.epochs):
                self._train_epoch(net, opt, Xt, Tt, gen, epoch)
                if not net.head.judges(epoch):
                    continue
                crit, mse = self._validate(net, Xv, Tv, epoch)
                if stopping.stop_after(net, epoch, crit, mse):
                    break
            if stopping.state is not None:
                net.load_state_dict(stopping.state)
            hist = {**stopping.hist, "epochs_run": float(epoch + 1)}
        net.eval()
        return net, hist

    def _train_epoch(self, net: DeepNet, opt, Xt: torch.Tensor, Tt: torch.Tensor, gen: torch.Generator,
                     epoch: int) -> None:
        net.train()
        n, bs = Xt.shape[0], self.batch_size
        perm = torch.randperm(n, generator=gen).to(self.device)
        for a in range(0, n, bs):
            idx = perm[a:a + bs]
            if idx.numel() < 2:
                continue
            with autocast(self.device, self.amp):
                mu, var = net(Xt[idx])
            loss = net.head.loss(mu.float(), None if var is None else var.float(), Tt[idx], epoch=epoch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    @torch.no_grad()
    def _validate(self, net: DeepNet, Xv: torch.Tensor, Tv: torch.Tensor, epoch: int) -> tuple[float, float]:
        """(stopping criterion, MSE of the means) on the validation rows."""
        if Xv.shape[0] == 0:
            return 0.0, 0.0
        net.eval()
        mu, var = self._forward_batches(net, Xv)
        return net.head.val_criterion(mu, var, Tv, epoch=epoch), float(net.head.mean_mse(mu, Tv))

    @torch.no_grad()
    def _forward_batches(self, net: DeepNet, X: torch.Tensor, bs: int = 4096):
        mus, vars_ = [], []
        for a in range(0, X.shape[0], bs):
            with autocast(self.device, self.amp):
                mu, var = net(X[a:a + bs])
            mus.append(mu.float())
            if var is not None:
                vars_.append(var.float())
        return torch.cat(mus), (torch.cat(vars_) if vars_ else None)

    # ------------------------------------------------------------------ predict
    def predict(self, nets: list[DeepNet], X: np.ndarray) -> list[tuple[np.ndarray, np.ndarray | None]]:
        """Per member: the head's raw outputs (mean, var or None) as float32 numpy arrays."""
        Xt = to_tensor(X, self.device)
        outs = []
        for net in nets:
            net.eval()
            with torch_threads(self.torch_threads):
                mu, var = self._forward_batches(net, Xt)
            outs.append((mu.cpu().numpy(), None if var is None else var.cpu().numpy()))
        return outs
