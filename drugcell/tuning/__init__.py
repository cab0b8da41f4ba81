"""`drugcell tune`: hyperparameter search for one predictor, scored by nested scaffold CV.

Why a package of its own: a tuned score is only honest when the search never sees the compounds
it is scored on. Each outer fold (the fold assignment `drugcell cv` uses) gets its own search, by
inner scaffold CV of its training compounds only; the best parameters are refitted on the whole
outer training fold and scored on the outer held-out compounds. The mean of those outer scores is
the nested estimate; the mean of the inner bests is what an un-nested search would have claimed,
and the gap between them is the search's optimism. The parameters written to ``tuned.toml`` come
from one more search, on every compound (the procedure whose score the nested CV estimated).

Modules: ``space`` (the search-space TOML and its checks), ``scoring`` (fit one parameter set on
some compounds and score it on others, in memory, as `drugcell cv` scores), ``search`` (Ray Tune +
Optuna over inner folds, with ASHA early stopping), ``nested`` (the outer loop), ``outputs`` (the
run folder: tables, ``tuned.toml``, manifest). Ray and Optuna are the optional ``ray`` extra and
are imported only inside ``search``.
"""
