"""Deep predictor ``mlp``: chemistry embedding -> MLP -> low-rank residual basis -> all genes.

The composition (``drugcell.models.deep``): the embedding provider and the mean head, one network;
no std. By default the residual is taken over the metric-optimal ``wmean`` profile and the head
is fitted to each training compound's contest loss under its own Mejia weights
(``baseline = "mean"``, ``loss_weighting = "gene"``: the plain MSE of the basis coefficients).
"""

from __future__ import annotations

from drugcell.models.deep.features import EmbeddingFeatures
from drugcell.models.deep.heads import MeanHead
from drugcell.models.deep.predictor import COMMON_DEFAULTS, LowRankDeepPredictor
from drugcell.models.registry import register


@register("mlp")
class MLPPredictor(LowRankDeepPredictor):
    """Chemistry-only MLP: embedding -> residual over the wmean (or mean) profile in a low-rank basis."""

    defaults = dict(COMMON_DEFAULTS)
    providers = (EmbeddingFeatures,)
    head_type = MeanHead
