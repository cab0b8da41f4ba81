"""Parts the deep predictors (``mlp``, ``fusion``) are composed of, one concern per module.

Why parts instead of a base class with hooks: the two models differ only in what they read
(feature providers) and what they predict (a head that owns its loss); the training loop, the
low-rank target basis and the state round trip are the same code for both. A new deep model is
a new combination, not a new set of overrides.

    features.py   feature providers (embedding) and input standardisation
    retrieval.py  retrieval-support provider on the shared Tanimoto search
    lowrank.py    the residual basis: k coefficients instead of 13k genes
    heads.py      mean head and mean-variance head, each with its loss
    weighting.py  the contest loss of each training compound under its own Mejia weights
    network.py    the MLP body + a head
    trainer.py    training loop, early stopping on inner scaffold folds, member seeds
    ensemble.py   combining members (mean, aleatoric + epistemic variance)
    predictor.py  the composition behind both registered kinds
    torch_utils.py  device, seeding, determinism, AMP, numpy state dicts
    params.py     the shared parameter check
"""
