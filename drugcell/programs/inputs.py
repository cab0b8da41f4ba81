"""What ``drugcell programs`` factors: the truth of an ExpressionSet cache or a CV run's held-out
predictions, with the ids (compounds, genes, SMILES) needed to read the factors back."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from drugcell.defaults import COMPOUND_COL, SMILES_COL
from drugcell.errors import DrugcellInputError
from drugcell.provenance import read_json_object


@dataclass
class ProgramInput:
    """The matrix to factor and what it is."""

    X: np.ndarray
    compounds: np.ndarray
    genes: np.ndarray
    smiles: np.ndarray
    source: str  # "truth" or "predictions:<name>"
    data_fingerprint: str | None
    paths: dict[str, str]
    #: the input files the cache was loaded from (``ExpressionSet.info["inputs"]``): where compound
    #: names can be read back (the cache itself keeps none)
    cache_inputs: dict = field(default_factory=dict)


def load_program_input(data: str | Path | None = None, predictions: str | Path | None = None) -> ProgramInput:
    """The truth of an ExpressionSet cache, or a CV run's held-out predictions.

    Predictions (``RUN/predictions/<name>.npy``, ExpressionSet row order) take their compound
    ids from ``RUN/folds.parquet`` and their genes from ``data`` or else the cache the run's
    manifest names; the cache's fingerprint must equal the run's.
    """
    from drugcell.data.expression_set import ExpressionSet

    if data is None and predictions is None:
        raise DrugcellInputError(
            "pass --data CACHE_DIR (programs of the truth) or --predictions RUN/predictions/NAME.npy")
    if predictions is None:
        es = ExpressionSet.load(data, mmap=True)
        return ProgramInput(X=es.expression, compounds=es.compounds, genes=es.genes, smiles=es.smiles,
                            source="truth", data_fingerprint=es.fingerprint(), paths={"data": str(data)},
                            cache_inputs=dict(es.info.get("inputs") or {}))

    pred_path = Path(predictions)
    if not pred_path.is_file() or pred_path.suffix != ".npy":
        raise DrugcellInputError(
            f"{pred_path}: not a predictions file; pass RUN/predictions/<name>.npy from a "
            "`drugcell cv` run with output.save_predictions = true")
    run = pred_path.parent.parent
    man_path = run / "manifest.json"
    folds_path = run / "folds.parquet"
    if not man_path.is_file() or not folds_path.is_file():
        raise DrugcellInputError(
            f"{pred_path}: expected it inside a CV run dir with manifest.json and folds.parquet at {run}")
    manifest = read_json_object(man_path, what="CV run manifest", fix="pass a predictions file of a `drugcell cv` run")
    folds = pd.read_parquet(folds_path, columns=[COMPOUND_COL, SMILES_COL])
    if data is None:
        data = (manifest.get("data_info") or {}).get("path")
        if not data:
            raise DrugcellInputError(
                f"{man_path} does not name the ExpressionSet cache of the run; pass --data CACHE_DIR for the gene ids")
        if not (Path(data) / "manifest.json").is_file():
            raise DrugcellInputError(
                f"{man_path} names the ExpressionSet cache {data!r}, which is not found from here "
                f"({Path.cwd()}); pass --data CACHE_DIR for the gene ids")
    es = ExpressionSet.load(data, mmap=True)
    run_fp = manifest.get("data_fingerprint")
    if run_fp and run_fp != es.fingerprint():
        raise DrugcellInputError(
            f"{data}: data fingerprint {es.fingerprint()} differs from the run's {run_fp} ({man_path}); "
            "pass the --data cache the CV run used")
    X = np.load(pred_path, mmap_mode="r", allow_pickle=False)
    if X.shape != (len(folds), es.n_genes):
        raise DrugcellInputError(
            f"{pred_path}: shape {X.shape}, expected {len(folds)} compounds (folds.parquet) x {es.n_genes} genes")
    return ProgramInput(X=X, compounds=folds[COMPOUND_COL].astype(str).to_numpy(), genes=es.genes,
                        smiles=folds[SMILES_COL].astype(str).to_numpy(), source=f"predictions:{pred_path.stem}",
                        data_fingerprint=es.fingerprint(), paths={"data": str(data), "predictions": str(pred_path)},
                        cache_inputs=dict(es.info.get("inputs") or {}))

