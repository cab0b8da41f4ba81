"""Which compounds may be compared with which: fold assignment and the leak audit.

Below :mod:`drugcell.models` in the layering, so a model may run inner scaffold folds of its own
training data (early stopping, alpha choice, blending) with the same rules as the outer CV.
"""

from drugcell.splits.audit import LeakError, audit_folds, audit_split
from drugcell.splits.folds import group_kfold, make_folds, random_kfold, scaffold_kfold

__all__ = ["LeakError", "audit_folds", "audit_split", "group_kfold", "make_folds", "random_kfold",
           "scaffold_kfold"]
