"""Which plates each compound's wells sat on, and how plates move the DMSO profile.

Why: the contest's test compounds sit on plates no training compound shares, and each test
compound's truth carries its plate's effect, which no structure model can predict. To estimate the
leaderboard score from training data alone, drugcell needs (a) how much of each training compound's
truth is plate effect (the plates its wells were on: ``compound_counts``) and (b) how big plate
effects are, gene by gene (the DMSO wells, on every plate: per-plate mean and within-plate variance
of log2(CPM+1) on the scored genes). Both are recorded at load time; the arithmetic that uses them
is :mod:`drugcell.evaluation.leaderboard`.
"""

from __future__ import annotations

import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from drugcell.errors import DrugcellInputError

PLATES_FILE = "plates.npz"
_FIELDS = ("plate_ids", "compound_counts", "control_mean", "control_var", "control_n")


@dataclass
class PlateLayout:
    """Plates of the training data: ids (P,), wells per compound and plate (C, P), and per plate the
    DMSO mean (P, G), within-plate variance (P, G, ddof=1; NaN-free, 0 with one well) and well count."""

    plate_ids: np.ndarray
    compound_counts: np.ndarray
    control_mean: np.ndarray
    control_var: np.ndarray
    control_n: np.ndarray

    def __post_init__(self) -> None:
        self.plate_ids = np.asarray(self.plate_ids).astype(str)
        self.compound_counts = np.asarray(self.compound_counts, dtype=np.int16)
        self.control_mean = np.asarray(self.control_mean, dtype=np.float32)
        self.control_var = np.asarray(self.control_var, dtype=np.float32)
        self.control_n = np.asarray(self.control_n, dtype=np.int32)
        p = len(self.plate_ids)
        g = self.control_mean.shape[1] if self.control_mean.ndim == 2 else -1
        shapes = {"compound_counts": (self.compound_counts.shape[1:], (p,)),
                  "control_mean": (self.control_mean.shape, (p, g)),
                  "control_var": (self.control_var.shape, (p, g)),
                  "control_n": (self.control_n.shape, (p,))}
        for name, (got, want) in shapes.items():
            if got != want:
                raise DrugcellInputError(f"PlateLayout.{name} has shape {got}, expected {want}")

    @property
    def n_plates(self) -> int:
        return len(self.plate_ids)

    def subset(self, idx: np.ndarray) -> PlateLayout:
        """The same plates, with the compound rows ``idx``."""
        return PlateLayout(self.plate_ids, self.compound_counts[idx], self.control_mean, self.control_var,
                           self.control_n)

    def check(self, n_compounds: int, n_genes: int) -> None:
        if self.compound_counts.shape[0] != n_compounds or self.control_mean.shape[1] != n_genes:
            raise DrugcellInputError(
                f"plate layout is for {self.compound_counts.shape[0]} compounds x {self.control_mean.shape[1]} "
                f"genes, the ExpressionSet has {n_compounds} x {n_genes}")

    # ------------------------------------------------------------------ derived
    def plate_fraction(self) -> np.ndarray:
        """f_c = sum_p (n_cp / n_c)^2: the share of one plate's effect variance in compound c's mean
        (1 when every well sat on one plate, 1/2 for two wells on two plates; NaN with no wells)."""
        n = self.compound_counts.astype(np.float64)
        tot = n.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return (n ** 2).sum(axis=1) / tot ** 2

    def usable(self) -> np.ndarray:
        """Plates with at least two DMSO wells (a within-plate variance exists)."""
        return self.control_n >= 2

    def deviations(self) -> np.ndarray:
        """(P', G) each usable plate's DMSO mean minus the mean over usable plates (plate effects
        plus the sampling noise of a plate mean)."""
        m = self.control_mean[self.usable()].astype(np.float64)
        return m - m.mean(axis=0)

    def noise_variance(self) -> np.ndarray:
        """(P', G) sampling variance of each usable plate's DMSO mean: within-plate variance / n."""
        ok = self.usable()
        return self.control_var[ok].astype(np.float64) / self.control_n[ok, None]

    def plate_variance(self) -> np.ndarray:
        """(G,) between-plate variance of the DMSO profile, the sampling noise of the plate means
        removed (method of moments; clipped at 0)."""
        d = self.deviations()
        if len(d) < 2:
            return np.zeros(self.control_mean.shape[1])
        raw = (d ** 2).sum(axis=0) / (len(d) - 1)
        return np.maximum(raw - self.noise_variance().mean(axis=0), 0.0)

    # ------------------------------------------------------------------ files
    def save(self, folder: Path) -> None:
        np.savez(Path(folder) / PLATES_FILE, **{f: getattr(self, f) for f in _FIELDS})

    @classmethod
    def load(cls, folder: Path) -> PlateLayout | None:
        path = Path(folder) / PLATES_FILE
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                return cls(**{f: z[f] for f in _FIELDS})
        except (KeyError, ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error, DrugcellInputError) as exc:
            raise DrugcellInputError(f"{path} is damaged or incomplete ({exc}); re-run `drugcell load`") from exc


def compound_plate_counts(compound_of_well: np.ndarray, plate_of_well: np.ndarray, n_compounds: int,
                          n_plates: int) -> np.ndarray:
    """(C, P) wells per compound and plate; wells with compound index -1 are skipped."""
    ok = compound_of_well >= 0
    out = np.zeros((n_compounds, n_plates), dtype=np.int64)
    np.add.at(out, (compound_of_well[ok], plate_of_well[ok]), 1)
    if out.max(initial=0) > np.iinfo(np.int16).max:
        raise DrugcellInputError("more than 32,767 wells of one compound on one plate: not a plate layout")
    return out.astype(np.int16)


class ControlAccumulator:
    """Per-plate mean and within-plate variance of log2(CPM+1) of control wells, batch by batch
    (float64 sums; Welford-free because each plate's DMSO rows are few and values are O(10))."""

    def __init__(self, n_plates: int, n_genes: int) -> None:
        self.n = np.zeros(n_plates, dtype=np.int64)
        self.s = np.zeros((n_plates, n_genes))
        self.ss = np.zeros((n_plates, n_genes))

    def add(self, plate: np.ndarray, log_expr: np.ndarray) -> None:
        x = np.asarray(log_expr, dtype=np.float64)
        np.add.at(self.n, plate, 1)
        np.add.at(self.s, plate, x)
        np.add.at(self.ss, plate, x * x)

    def result(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n = np.maximum(self.n, 1)[:, None]
        mean = self.s / n
        with np.errstate(invalid="ignore", divide="ignore"):
            var = (self.ss - n * mean ** 2) / np.maximum(self.n - 1, 1)[:, None]
        var = np.where(self.n[:, None] >= 2, np.maximum(var, 0.0), 0.0)
        return mean.astype(np.float32), var.astype(np.float32), self.n.astype(np.int32)
