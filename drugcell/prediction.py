"""Profiles for new molecules from a saved model (``drugcell predict``), flagged when far from training.

Why its own module: predicting reads a saved model (:mod:`drugcell.persistence`) and applies the
std calibrator the model carries, so a std printed or written here is on the same scale as the
one ``submit`` wrote for the test compounds; persistence itself stays save/load only.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from drugcell.calibration.calibrator import Calibrator
from drugcell.defaults import COMPOUND_COL, GENE_COL
from drugcell.errors import DrugcellInputError
from drugcell.models.base import Prediction
from drugcell.outputs import check_file_output
from drugcell.persistence import SavedModel
from drugcell.progress import step
from drugcell.provenance import atomic_path

#: Tanimoto to the nearest training compound below which a molecule is reported as far.
DEFAULT_FAR_THRESHOLD = 0.3


@dataclass
class PredictResult:
    """Predicted profiles for new molecules and how far each is from the training set."""

    ids: np.ndarray  # (n,) str
    smiles: np.ndarray  # (n,) str
    genes: np.ndarray  # (G,) str
    prediction: Prediction
    mean_profile: np.ndarray  # (G,)
    nearest_similarity: np.ndarray  # (n,) Tanimoto to the nearest training compound
    nearest_compound: np.ndarray  # (n,) its id
    threshold: float
    model_name: str
    calibrator: Calibrator | None = None  # the model's std calibrator, already applied to prediction.std
    #: molecules left out because RDKit cannot parse them: {row, id, smiles, reason} (row is 1-based)
    skipped: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def skipped_message(self, source: str = "--smiles", shown: int = 20) -> str | None:
        """One line naming the molecules left out (by row or --smiles position, id and SMILES), or None."""
        if not self.skipped:
            return None
        where = "--smiles value" if source == "--smiles" else "row"
        listed = "; ".join(f"{where} {s['row']} {s['id']!r} (SMILES {s['smiles']!r}): {s['reason']}"
                           for s in self.skipped[:shown])
        more = f" (+{len(self.skipped) - shown} more)" if len(self.skipped) > shown else ""
        total = len(self.skipped) + len(self.ids)
        return (f"{source}: {len(self.skipped)} of {total} molecule(s) could not be parsed by RDKit and were left out "
                f"(the other {len(self.ids)} are predicted): {listed}{more}. Fix these SMILES; --strict makes "
                "this an error")

    @property
    def far(self) -> np.ndarray:
        """Molecules whose nearest training compound is below the similarity threshold."""
        return self.nearest_similarity < self.threshold

    def warnings(self) -> list[str]:
        return [
            f"{self.ids[i]} ({self.smiles[i]}) is far from every training compound: nearest Tanimoto "
            f"{self.nearest_similarity[i]:.2f} (to {self.nearest_compound[i]}) < {self.threshold:g}; "
            "its prediction rests on weak structural evidence"
            for i in np.flatnonzero(self.far)
        ]

    def long_table(self) -> pd.DataFrame:
        """``compound, gene_id, predicted_expression[, predicted_std]``, compound-major."""
        n, g = self.prediction.mean.shape
        cols = {
            COMPOUND_COL: np.repeat(self.ids.astype(str), g),
            GENE_COL: np.tile(self.genes.astype(str), n),
            "predicted_expression": self.prediction.mean.ravel(),
        }
        if self.prediction.std is not None:
            cols["predicted_std"] = self.prediction.std.ravel()
        return pd.DataFrame(cols)

    def top_changes(self, top: int = 10, symbols: np.ndarray | None = None) -> pd.DataFrame:
        """Per molecule the ``top`` genes most up and most down vs the training mean profile."""
        names = self.genes if symbols is None else np.asarray(symbols).astype(str)
        rows = []
        for i in range(len(self.ids)):
            delta = self.prediction.mean[i].astype(np.float64) - self.mean_profile
            order = np.argsort(delta, kind="stable")
            for direction, sel in (("up", order[::-1][:top]), ("down", order[:top])):
                for r, g in enumerate(sel, start=1):
                    row = {COMPOUND_COL: str(self.ids[i]), "direction": direction, "rank": r,
                           "gene": str(names[g]), "predicted": float(self.prediction.mean[i, g]),
                           "vs_mean": float(delta[g])}
                    if self.prediction.std is not None:
                        row["std"] = float(self.prediction.std[i, g])
                    rows.append(row)
        return pd.DataFrame(rows)


def read_molecules(input_csv: str | Path | None = None, smiles: list[str] | None = None,
                   id_column: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(ids, smiles) from ``--smiles`` values (id = the SMILES) or a CSV with a ``smiles`` column."""
    if (input_csv is None) == (not smiles):
        raise DrugcellInputError("pass molecules with --smiles \"...\" (repeatable) or --input FILE.csv, not both")
    if input_csv is None:
        ids = np.asarray([str(s) for s in smiles], dtype=object)
        smi = ids.copy()
    else:
        path = Path(input_csv)
        if not path.is_file():
            raise DrugcellInputError(f"input file {path} not found")
        try:
            df = pd.read_csv(path, dtype=str, keep_default_na=False)
        except Exception as exc:  # noqa: BLE001
            raise DrugcellInputError(f"{path}: not a readable CSV ({exc})") from None
        cols = {c.lower(): c for c in df.columns}
        if "smiles" not in cols:
            raise DrugcellInputError(f"{path}: no `smiles` column (found {list(df.columns)}); add one")
        if df.empty:
            raise DrugcellInputError(f"{path}: no rows")
        smi = df[cols["smiles"]].astype(str).to_numpy(dtype=object)
        if id_column is not None:
            if id_column not in df.columns:
                raise DrugcellInputError(f"{path}: no column {id_column!r} for --id-column (found {list(df.columns)})")
            ids = df[id_column].astype(str).to_numpy(dtype=object)
        else:
            auto = next((cols[c] for c in (COMPOUND_COL, "id", "compound_id", "name") if c in cols), None)
            ids = df[auto].astype(str).to_numpy(dtype=object) if auto else np.array(
                [f"row{i + 1}" for i in range(len(df))], dtype=object)
    seen: set[str] = set()
    for i in ids:
        if i in seen:
            where = f"{input_csv}" if input_csv is not None else "--smiles"
            raise DrugcellInputError(f"{where}: molecule id {i!r} appears twice; ids must be unique")
        seen.add(i)
    return ids, smi


def calibrated(pred: Prediction, calibrator: Calibrator | None) -> Prediction:
    """``pred`` with its std scaled by ``calibrator`` (unchanged without one or without a std)."""
    if calibrator is None or pred.std is None:
        return pred
    return dataclasses.replace(pred, std=calibrator.apply(pred.std), info={**pred.info, "std_scale": calibrator.scale})


def _unparsed(errors: dict[int, str], ids: list[str], smiles: list[str]) -> list[dict[str, Any]]:
    return [{"row": i + 1, "id": ids[i], "smiles": smiles[i], "reason": errors[i]} for i in sorted(errors)]


def predict_molecules(model_dir: str | Path, smiles: list[str], ids: list[str] | None = None, *,
                      threshold: float = DEFAULT_FAR_THRESHOLD, source: str = "--smiles",
                      strict: bool = False) -> PredictResult:
    """Predict profiles for new molecules with a saved model (its std calibrated when the model
    carries a calibrator). Molecules RDKit cannot parse are left out and listed in
    ``PredictResult.skipped``; with ``strict`` (or when none parses) they are an input error."""
    from drugcell.chem.fingerprints import morgan_bits
    from drugcell.chem.molecules import parse_smiles

    smiles = [str(s) for s in smiles]
    ids = list(smiles) if ids is None else [str(i) for i in ids]
    if not smiles:
        raise DrugcellInputError("no molecules to predict")
    step(f"parse {len(smiles):,} molecule(s)")
    parsed = parse_smiles(smiles, inchikey=False)
    skipped = _unparsed(parsed.errors, ids, smiles)
    if skipped and (strict or len(skipped) == len(smiles)):
        where = "--smiles value" if source == "--smiles" else "row"
        listed = "; ".join(f"{s['id']!r} (SMILES {s['smiles']!r}, {where} {s['row']}): {s['reason']}"
                           for s in skipped[:5])
        more = f" (+{len(skipped) - 5} more)" if len(skipped) > 5 else ""
        none = "; none of them parses" if len(skipped) == len(smiles) else " (--strict)"
        raise DrugcellInputError(
            f"{source}: {len(skipped)} molecule(s) could not be parsed by RDKit{none}: {listed}{more}. "
            "Fix or remove these SMILES.")
    keep = np.flatnonzero(parsed.ok)
    smiles = [smiles[i] for i in keep]
    ids = [ids[i] for i in keep]
    step(f"load the model from {model_dir}")
    saved = SavedModel.load(model_dir)
    fp = saved.meta["training"]["fingerprint"]  # the fingerprint the model stored for its training set
    bits = morgan_bits(parsed, radius=int(fp["radius"]), n_bits=int(fp["n_bits"]))[keep]
    sim, near = saved.nearest(bits)
    step(f"predict {len(smiles):,} molecule(s) with {saved.meta.get('name')}")
    pred = calibrated(saved.predictor.predict(smiles), saved.calibrator)
    return PredictResult(
        ids=np.asarray(ids, dtype=object), smiles=np.asarray(smiles, dtype=object), genes=saved.genes,
        prediction=pred, mean_profile=saved.mean_profile.astype(np.float64), nearest_similarity=sim,
        nearest_compound=near, threshold=float(threshold), model_name=str(saved.meta.get("name")),
        calibrator=saved.calibrator if pred.std is not None else None, skipped=skipped,
    )


def write_predictions(result: PredictResult, out: str | Path, *, overwrite: bool = False) -> Path:
    """The long table as parquet (or CSV when ``out`` ends in .csv), written atomically; an existing
    file is replaced only with ``overwrite``."""
    out = check_file_output(out, overwrite)
    table = result.long_table()
    with atomic_path(out) as tmp:
        if out.suffix.lower() == ".csv":
            table.to_csv(tmp, index=False)
        else:
            table.to_parquet(tmp, index=False)
    return out
