"""Deep predictor ``mlp``: chemistry embedding -> MLP -> low-rank residual basis -> all genes.

The composition (``drugcell.models.deep``): the embedding provider and the mean head (MSE on the
basis coefficients), one network; no std.
"""

from __future__ import annotations

from drugcell.models.deep.features import EmbeddingFeatures
from drugcell.models.deep.heads import MeanHead
from drugcell.models.deep.predictor import COMMON_DEFAULTS, LowRankDeepPredictor
from drugcell.models.registry import register


@register("mlp")
class MLPPredictor(LowRankDeepPredictor):
    """Chemistry-only MLP: embedding -> residual over the training mean in a low-rank basis."""

    defaults = dict(COMMON_DEFAULTS)
    providers = (EmbeddingFeatures,)
    head_type = MeanHead
