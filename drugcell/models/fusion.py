"""Deep predictor ``fusion``: embedding + retrieval support -> heteroscedastic low-rank residual,
an ensemble of seeds.

The composition (``drugcell.models.deep``): the embedding and retrieval-support providers and
the mean-variance head. Each member predicts a mean and a softplus variance per basis
coefficient (beta-NLL after an MSE warm-up); the coefficient variance maps to genes through the
squared loadings plus the per-gene variance the basis leaves out, scaled per compound. Members
differ in seed and in which inner scaffold fold they validate on; the ensemble variance is the
mean aleatoric variance plus the variance of the members' means. With the default
``loss_weighting = "compound"`` the means follow each training compound's contest loss under its
own Mejia weights and the variances the NLL of the plain coefficients around them (``heads.py``).
"""

from __future__ import annotations

from drugcell.defaults import MORGAN_BITS, MORGAN_RADIUS
from drugcell.models.deep.features import EmbeddingFeatures
from drugcell.models.deep.heads import MeanVarianceHead
from drugcell.models.deep.predictor import COMMON_DEFAULTS, LowRankDeepPredictor
from drugcell.models.deep.retrieval import RetrievalSupport
from drugcell.models.registry import register

FUSION_DEFAULTS = {
    **COMMON_DEFAULTS,
    "n_members": 5,            # ensemble of seeds
    "warmup_epochs": 3,        # MSE epochs before the Gaussian NLL takes over
    "nll_beta": 1.0,           # beta-NLL: 1 gives the mean exactly the MSE gradient; 0 = plain NLL
    "min_var": 1e-4,           # variance floor of the head, in standardised coefficient units
    "support_k": 10,           # top-k for the mean top-k similarity
    "support_threshold": 0.5,  # similarity above which a training compound counts as support
    "fp_radius": MORGAN_RADIUS,
    "fp_bits": MORGAN_BITS,
}


@register("fusion")
class FusionPredictor(LowRankDeepPredictor):
    """Embedding + retrieval support -> heteroscedastic low-rank residual; ensemble of seeds."""

    defaults = FUSION_DEFAULTS
    returns_std = True
    simplicity = 50
    providers = (EmbeddingFeatures, RetrievalSupport)
    head_type = MeanVarianceHead
