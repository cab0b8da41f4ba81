"""The run's tables from its parts: scores, diagnostics, uncertainty and the leaderboard estimate's
terms, assembled in one fixed (fold, predictor) order.

Why a fixed order: parts finish in whatever order the engine runs them (and a resumed run read
some from disk), but the tables must not depend on that, so the same config and seed give
byte-identical files on every engine and worker count, interrupted or not. Every part is read
back from the staging folder (:func:`~drugcell.evaluation.parts.read_part`), whichever process
computed it, so a resumed run and an uninterrupted one take the same path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from drugcell.defaults import COMPOUND_COL
from drugcell.provenance import atomic_path

DIAG_COLUMNS = ["predictor", "fold", "counter", "value"]


class Recorder:
    """Collects the parts of a run in (fold, predictor) order and writes its tables."""

    def __init__(self, es, estimator) -> None:
        self.compounds = np.asarray(es.compounds).astype(str)
        self.compound_cats = pd.Index(self.compounds)
        self.gene_cats = pd.Index(np.asarray(es.genes).astype(str))
        self.estimator = estimator
        self.scores: list[pd.DataFrame] = []
        self.diag: list[dict[str, Any]] = []
        self.unc: list[pd.DataFrame] = []
        self._folds_seen: set[int] = set()

    def add(self, part, test_idx: np.ndarray) -> None:
        """One part; the first part of a fold also brings the fold's plate terms."""
        k, name = int(part.fold), part.predictor
        if k not in self._folds_seen and part.fold_terms is not None:
            for m, terms in part.fold_terms.items():
                self.estimator.add_fold_terms(m, test_idx, terms)
        self._folds_seen.add(k)
        for m, vals in part.scores.items():
            base = part.base[m] if part.base is not None else None
            self.estimator.add_terms(name, m, test_idx, vals, base)
            self.scores.append(pd.DataFrame({"predictor": name, "fold": np.int32(k),
                                             COMPOUND_COL: self.compounds[test_idx], "metric": m, "wmse": vals}))
        self.diag += [{"predictor": name, "fold": k, "counter": c, "value": float(v)}
                      for c, v in part.counters.items()]
        if part.unc_rows is not None:
            self.unc.append(pd.DataFrame({  # ids as categoricals: millions of rows, few strings
                "predictor": name, "fold": np.int32(k),
                COMPOUND_COL: pd.Categorical.from_codes(test_idx[part.unc_rows], categories=self.compound_cats),
                "gene": pd.Categorical.from_codes(part.unc_cols, categories=self.gene_cats),
                "error": part.unc_err, "std": part.unc_std,
            }))

    def write(self, out: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame | None]:
        """scores, diagnostics and uncertainty, each written atomically."""
        scores = pd.concat(self.scores, ignore_index=True)
        diagnostics = pd.DataFrame(self.diag, columns=DIAG_COLUMNS)
        uncertainty = pd.concat(self.unc, ignore_index=True) if self.unc else None
        for name, frame in (("scores", scores), ("diagnostics", diagnostics), ("uncertainty", uncertainty)):
            if frame is not None:
                with atomic_path(out / f"{name}.parquet") as tmp:
                    frame.to_parquet(tmp, index=False)
        return scores, diagnostics, uncertainty
