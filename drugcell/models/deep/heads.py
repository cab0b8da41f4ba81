"""Output heads of the deep models: each owns its loss, its training targets and its way back to
genes, so the trainer never asks which head it trains (as chemprop's ``MveFFN`` owns ``MVELoss``).

Both heads predict standardised coefficients of the residual basis (``lowrank.py``):

* :class:`MeanHead`: a linear map to the k coefficients, trained with MSE (``mlp``);
* :class:`MeanVarianceHead`: a mean and a softplus variance per coefficient plus one more
  variance, the per-compound scale of the noise outside the basis; MSE for ``warmup_epochs``,
  then beta-NLL (``fusion``). Early stopping only judges the NLL epochs.

Loss weighting (``loss_weighting`` param): with ``"gene"`` the means are fitted by the plain MSE
of the coefficients; with ``"compound"`` the predictor hands the head a
:class:`~drugcell.models.deep.weighting.CompoundWeightedLoss` (``metric_loss``) and the targets
end with each compound's row index, and the means are fitted by the contest loss of every
training compound under its own Mejia weights. The mean-variance head then fits its variances
with the NLL of the *plain* coefficients around the detached mean, so the std still describes
the error of the true profile.

The NLL is written out (not torch's ``GaussianNLLLoss``) so that the beta-NLL variant is one
factor away; with ``beta=0`` and mean reduction it equals ``GaussianNLLLoss(full=False,
eps=...)`` exactly: ``0.5 * (log var + (y - mu)^2 / var)`` averaged over elements, without the
constant ``0.5 * log(2 pi)``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from drugcell.errors import DrugcellInputError
from drugcell.models.deep.lowrank import ResidualBasis
from drugcell.models.deep.params import check_int
from drugcell.models.deep.weighting import CompoundWeightedLoss


def gaussian_nll(
    mean: torch.Tensor, var: torch.Tensor, target: torch.Tensor, *, beta: float = 0.0,
    weight: torch.Tensor | None = None, eps: float = 1e-6,
) -> torch.Tensor:
    """Mean over elements of ``0.5 * (log var + (target - mean)^2 / var)``.

    beta > 0 gives beta-NLL (Seitzer et al. 2022): each element is multiplied by ``var**beta``
    (detached), which stops high-variance points from starving the mean fit; beta=0 is the plain
    NLL. ``weight`` (broadcastable) multiplies each element before averaging.
    """
    var = var.clamp_min(eps)
    loss = 0.5 * (torch.log(var) + (target - mean) ** 2 / var)
    if beta:
        loss = loss * var.detach() ** beta
    if weight is not None:
        loss = loss * weight
    return loss.mean()


class Head(nn.Module):
    """What a head tells the trainer and the predictor; ``forward(h) -> (mean, var or None)``."""

    predicts_variance: ClassVar[bool] = False
    #: set (only while training) for loss_weighting "compound": the last target column is the row
    metric_loss: CompoundWeightedLoss | None = None

    @classmethod
    def check_params(cls, params: dict[str, Any], kind: str) -> None:
        """Raise DrugcellInputError on a bad value of this head's params."""

    @classmethod
    def options(cls, params: dict[str, Any]) -> dict[str, Any]:
        """Constructor keywords (besides in_dim, out_dim) from the predictor's params."""
        return {}

    @staticmethod
    def targets(z: np.ndarray, y: np.ndarray, basis: ResidualBasis) -> np.ndarray:
        """Training targets from the standardised coefficients ``z`` and the profiles ``y``."""
        return z

    @staticmethod
    def mean_mse(mu: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """MSE of the coefficient means (targets may carry extra columns after them)."""
        return torch.mean((mu - target[:, :mu.shape[1]]) ** 2)

    def mean_loss(self, mu: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """What the coefficient means are fitted to: the plain MSE, or with ``metric_loss`` the
        contest loss of the batch's training compounds (gene sample while training)."""
        if self.metric_loss is None:
            return self.mean_mse(mu, target)
        return self.metric_loss(mu, target[:, -1], sample=self.training)

    def loss(self, mu: torch.Tensor, var: torch.Tensor | None, target: torch.Tensor, *,
             epoch: int) -> torch.Tensor:
        """Training loss of one batch in epoch ``epoch`` (0-based)."""
        return self.mean_loss(mu, target)

    def judges(self, epoch: int) -> bool:
        """Whether early stopping looks at this epoch (False during a warm-up)."""
        return True

    def val_criterion(self, mu: torch.Tensor, var: torch.Tensor | None, target: torch.Tensor, *,
                      epoch: int) -> float:
        """Early-stopping criterion on the validation rows (lower is better)."""
        return float(self.mean_loss(mu, target))

    def to_genes(self, mu: np.ndarray, var: np.ndarray | None, basis: ResidualBasis,
                 z_scale: np.float32, usable: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(gene-space mean (n, G), gene-space variance or None); unusable rows: the centre."""
        mu = mu * z_scale
        mu[~usable] = 0.0
        return basis.decode(mu), None


class MeanHead(Head, nn.Linear):
    """A linear map to the k coefficient means, trained with MSE (a subclass of ``nn.Linear``, so
    its weights and their initialisation are exactly those of the plain output layer)."""

    def __init__(self, in_dim: int, out_dim: int):
        nn.Linear.__init__(self, in_dim, out_dim)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, None]:
        return nn.Linear.forward(self, h), None


class MeanVarianceHead(Head):
    """Mean and softplus variance per coefficient, plus the variance of the outside-basis column.

    ``min_var`` keeps the variance away from zero so the NLL cannot diverge on a training point.
    The outside-basis column has mean 0 and target sqrt(q) (``ResidualBasis.outside_ratio``), so
    its NLL term is exactly ``0.5 * (log s + q / s)``: the NLL of the residual outside the basis
    with per-gene variance ``s * resid_var``.
    """

    predicts_variance = True

    def __init__(self, in_dim: int, out_dim: int, *, min_var: float = 1e-4, beta: float = 0.0,
                 warmup_epochs: int = 0):
        super().__init__()
        self.mean = nn.Linear(in_dim, out_dim)
        self.raw_var = nn.Linear(in_dim, out_dim + 1)
        self.min_var = float(min_var)
        self.beta = float(beta)
        self.warmup_epochs = int(warmup_epochs)

    @classmethod
    def check_params(cls, params: dict[str, Any], kind: str) -> None:
        check_int(params, "warmup_epochs", kind, 0)
        if float(params["min_var"]) <= 0 or not 0 <= float(params["nll_beta"]) <= 1:
            raise DrugcellInputError(f"predictor kind {kind!r}: min_var must be > 0 and nll_beta in [0, 1]")

    @classmethod
    def options(cls, params: dict[str, Any]) -> dict[str, Any]:
        return {"min_var": float(params["min_var"]), "beta": float(params["nll_beta"]),
                "warmup_epochs": int(params["warmup_epochs"])}

    @staticmethod
    def targets(z: np.ndarray, y: np.ndarray, basis: ResidualBasis) -> np.ndarray:
        """The coefficients, then sqrt of each compound's outside-basis noise ratio."""
        return np.concatenate([z, np.sqrt(basis.outside_ratio(y))[:, None]], axis=1)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mean(h), F.softplus(self.raw_var(h)) + self.min_var

    def judges(self, epoch: int) -> bool:
        return epoch >= self.warmup_epochs  # the warm-up only shapes the mean

    def loss(self, mu, var, target, *, epoch: int) -> torch.Tensor:
        if not self.judges(epoch):
            return self.mean_loss(mu, target)
        return self._objective(mu, var, target, self.beta)

    def val_criterion(self, mu, var, target, *, epoch: int) -> float:
        # the plain NLL (beta=0) whatever the training beta: a proper score
        return float(self._objective(mu, var, target, 0.0))

    def _objective(self, mu, var, target, beta: float) -> torch.Tensor:
        core = target[:, :mu.shape[1] + 1]   # the coefficients and the outside-basis column
        if self.metric_loss is None:
            return gaussian_nll(self._with_outside(mu), var, core, beta=beta)
        # the mean follows the contest loss (0.5: the scale of beta-NLL's mean gradient at
        # beta=1); the variances, the plain coefficients around the detached mean
        return 0.5 * self.mean_loss(mu, target) + gaussian_nll(
            self._with_outside(mu.detach()), var, core, beta=beta)

    @staticmethod
    def _with_outside(mu: torch.Tensor) -> torch.Tensor:
        return torch.cat([mu, torch.zeros_like(mu[:, :1])], dim=1)

    def to_genes(self, mu, var, basis, z_scale, usable):
        """Coefficient variances through the squared loadings + the learned per-compound scale
        of the per-gene variance outside the basis (aleatoric part of one member)."""
        mean, _ = super().to_genes(mu, None, basis, z_scale, usable)
        var = var.copy()
        var[:, :-1] *= z_scale**2          # coefficient variances back to basis units
        ale = basis.decode_var(var[:, :-1], include_resid=False)
        ale += var[:, -1:] * basis.resid_var
        return mean, ale
