"""The fitted std calibrator: one scale for one predictor, fitted on a CV run's held-out errors.

Why an object with a file: the factor applied to a submission's (or a saved model's) std must be
the one that was fitted and reported, with its provenance (which run, how many cells, coverage
before and after), not a number re-derived later from whatever the run folder holds by then. It
is saved as strict JSON next to the run (``RUN/calibrators/<predictor>.json``, by ``drugcell
calibrate``) and inside a saved model (``calibrator.json``), and read back refusing anything it
does not know.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from drugcell import __version__
from drugcell.calibration.grouping import (
    UNCERTAINTY_FILE,
    check_columns,
    load_uncertainty,
    std_kinds_line,
    summarize,
    usable_cells,
)
from drugcell.errors import DrugcellInputError
from drugcell.provenance import fingerprint_files, read_json_object, write_text

FORMAT = "drugcell.calibrator"
FORMAT_VERSION = 1
METHOD = "std_scale"
#: Where ``drugcell calibrate`` saves one calibrator per predictor inside a run folder.
CALIBRATOR_DIR = "calibrators"
#: Coverage of the sampled cells: raw std, and std scaled fold by fold with out-of-fold scales
#: (``held_out_*`` is None when the samples hold a single fold: no other fold to fit on).
COVERAGE_KEYS = ("raw_1sigma", "raw_2sigma", "held_out_1sigma", "held_out_2sigma")
#: Every field of the file and the JSON type it must have (bool is refused where a number is due).
_FIELDS: dict[str, tuple[type, ...]] = {
    "format": (str,), "format_version": (int,), "method": (str,), "predictor": (str,),
    "scale": (int, float), "n_cells": (int,), "n_dropped": (int,), "folds": (list,),
    "coverage": (dict,), "fitted_on": (dict,), "created": (dict,),
}


def safe_name(name: str) -> str:
    """A predictor name as a file name (anything but letters, digits, ``-_.`` becomes ``_``)."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


def _number_or_none(x: Any) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


@dataclass(frozen=True)
class Calibrator:
    """Multiply a predictor's std by ``scale`` = sqrt(mean((error/std)^2)) over its held-out cells."""

    predictor: str
    scale: float
    n_cells: int
    n_dropped: int = 0
    folds: tuple[str, ...] = ()
    coverage: dict[str, float | None] = field(default_factory=dict)
    fitted_on: dict[str, Any] = field(default_factory=dict)  # run folder, uncertainty file fingerprint
    created: dict[str, Any] = field(default_factory=dict)  # drugcell version, UTC time

    def __post_init__(self) -> None:
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"a std scale must be finite and > 0, got {self.scale!r}")

    # ------------------------------------------------------------------ fit
    @classmethod
    def fit(cls, error, std, folds=None, *, predictor: str,
            fitted_on: dict[str, Any] | None = None) -> Calibrator:
        """Fit on flat (error, std) arrays; ``folds`` (one label per cell) adds held-out coverage."""
        n = np.asarray(error).size
        frame = pd.DataFrame({"predictor": predictor, "error": np.asarray(error).ravel(),
                              "std": np.asarray(std).ravel(),
                              "fold": np.zeros(n, np.int64) if folds is None else np.asarray(folds).ravel()})
        return cls.from_samples(frame, predictor, source="error/std arrays", fitted_on=fitted_on)

    @classmethod
    def from_samples(cls, samples: pd.DataFrame, predictor: str, *, source: str = "uncertainty samples",
                     fitted_on: dict[str, Any] | None = None) -> Calibrator:
        """Fit on ``predictor``'s rows of uncertainty samples (columns predictor, fold, error, std).

        The scale is the pooled row of :func:`~drugcell.calibration.grouping.calibration_summary`:
        fitted on every held-out fold, exactly what the calibration report prints as ``s``.
        """
        check_columns(samples, source)
        mine = samples[samples["predictor"].astype(str) == str(predictor)]
        if mine.empty:
            have = ", ".join(sorted(set(samples["predictor"].astype(str)))) or "none"
            raise DrugcellInputError(f"{source}: no uncertainty samples for predictor {predictor!r} "
                                     f"(samples for: {have}). {std_kinds_line()}")
        cells = usable_cells(mine, source)
        if cells.error.size == 0:
            raise DrugcellInputError(f"{source}: all {len(mine):,} samples of {predictor!r} have a non-finite "
                                     "error/std or std <= 0; check the predictor's std output")
        pooled = summarize(cells).iloc[-1]
        scale = float(pooled["scale"])
        if not (math.isfinite(scale) and scale > 0):
            raise DrugcellInputError(f"{source}: every error of {predictor!r} is 0; there is no std scale to fit")
        return cls(
            predictor=str(predictor), scale=scale, n_cells=int(pooled["n"]), n_dropped=cells.n_dropped,
            folds=tuple(cells.folds),
            coverage={"raw_1sigma": _number_or_none(pooled["coverage_1sigma"]),
                      "raw_2sigma": _number_or_none(pooled["coverage_2sigma"]),
                      "held_out_1sigma": _number_or_none(pooled["coverage_1sigma_scaled"]),
                      "held_out_2sigma": _number_or_none(pooled["coverage_2sigma_scaled"])},
            fitted_on=dict(fitted_on or {}),
            created={"drugcell_version": __version__,
                     "created_utc": datetime.now(UTC).isoformat(timespec="seconds")},
        )

    # ------------------------------------------------------------------ use
    def apply(self, std):
        """``std * scale`` in the std's own float dtype (float32 stays float32); None stays None."""
        if std is None:
            return None
        a = np.asarray(std)
        dtype = a.dtype if np.issubdtype(a.dtype, np.floating) else np.dtype(np.float64)
        return a.astype(dtype, copy=False) * dtype.type(self.scale)

    def describe(self) -> str:
        """One line for the CLI: the scale, what it was fitted on, coverage before and after."""
        where = self.fitted_on.get("run")
        line = (f"std scale s = {self.scale:.3f} for {self.predictor}, fitted on {self.n_cells:,} held-out cells"
                f" of {len(self.folds)} fold(s)" + (f" of {where}" if where else ""))
        before, after = self.coverage.get("raw_1sigma"), self.coverage.get("held_out_1sigma")
        if before is not None and after is not None:
            line += f"; 1-sigma coverage {before:.3f} raw -> {after:.3f} scaled on held-out folds (Gaussian 0.683)"
        return line

    # ------------------------------------------------------------------ file
    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "format_version": FORMAT_VERSION, "method": METHOD,
                "predictor": self.predictor, "scale": float(self.scale), "n_cells": int(self.n_cells),
                "n_dropped": int(self.n_dropped), "folds": list(self.folds),
                "coverage": {k: self.coverage.get(k) for k in COVERAGE_KEYS},
                "fitted_on": dict(self.fitted_on), "created": dict(self.created)}

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the calibrator as JSON, atomically."""
        write_text(path, json.dumps(self.to_dict(), indent=1, allow_nan=False) + "\n")
        return Path(path)

    @classmethod
    def from_dict(cls, d: Any, source: str = "calibrator") -> Calibrator:
        """Rebuild from :meth:`to_dict` output; refuse another format, a newer version, a missing,
        unknown or mistyped field, or a scale that is not a positive number."""
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            found = d.get("format") if isinstance(d, dict) else type(d).__name__
            raise DrugcellInputError(f"{source}: not a drugcell calibrator (format {found!r}, expected {FORMAT!r})")
        _check_fields(d, source)
        if d["format_version"] > FORMAT_VERSION or d["format_version"] < 1:
            raise DrugcellInputError(f"{source}: calibrator format version {d['format_version']} is not one this "
                                     f"drugcell reads (1..{FORMAT_VERSION}); upgrade drugcell or refit it")
        if d["method"] != METHOD:
            raise DrugcellInputError(f"{source}: unknown calibration method {d['method']!r} (known: {METHOD})")
        _check_coverage(d["coverage"], d["folds"], source)
        if not (math.isfinite(d["scale"]) and d["scale"] > 0):
            raise DrugcellInputError(f"{source}: scale {d['scale']!r} is not a positive number; refit it")
        return cls(predictor=d["predictor"], scale=float(d["scale"]), n_cells=d["n_cells"],
                   n_dropped=d["n_dropped"], folds=tuple(d["folds"]), coverage=dict(d["coverage"]),
                   fitted_on=dict(d["fitted_on"]), created=dict(d["created"]))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Calibrator:
        """Read a calibrator file written by :meth:`save` (strict, see :meth:`from_dict`)."""
        path = Path(path)
        if not path.is_file():
            raise DrugcellInputError(f"calibrator file {path} not found")
        return cls.from_dict(read_json_object(path, what="calibrator file", fix="refit the calibrator"),
                             source=str(path))


def _check_fields(d: dict[str, Any], source: str) -> None:
    missing = [k for k in _FIELDS if k not in d]
    unknown = [k for k in d if k not in _FIELDS]
    if missing or unknown:
        raise DrugcellInputError(f"{source}: calibrator fields missing ({', '.join(missing) or 'none'}) or "
                                 f"unknown ({', '.join(unknown) or 'none'}); refit it")
    for key, types in _FIELDS.items():
        if isinstance(d[key], bool) or not isinstance(d[key], types):
            raise DrugcellInputError(f"{source}: field {key!r} is {type(d[key]).__name__}, expected "
                                     f"{' or '.join(t.__name__ for t in types)}")


def _check_coverage(cov: dict[str, Any], folds: list[Any], source: str) -> None:
    if set(cov) != set(COVERAGE_KEYS):
        raise DrugcellInputError(f"{source}: coverage must have exactly {', '.join(COVERAGE_KEYS)}")
    for k, v in cov.items():
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1):
            raise DrugcellInputError(f"{source}: coverage {k} = {v!r} is not a fraction or null")
    if not all(isinstance(f, str) for f in folds):
        raise DrugcellInputError(f"{source}: folds must be a list of strings")


# --------------------------------------------------------------------------- a run's calibrators
def calibrator_path(run_dir: str | os.PathLike[str], predictor: str) -> Path:
    """Where ``drugcell calibrate`` saves ``predictor``'s calibrator inside a run folder."""
    return Path(run_dir) / CALIBRATOR_DIR / f"{safe_name(predictor)}.json"


def calibrator_for_run(run_dir: str | os.PathLike[str], predictor: str) -> Calibrator | None:
    """``predictor``'s calibrator for a CV run; None when the run has no std samples for it.

    Reads the one ``drugcell calibrate`` saved when it was fitted on the run's current
    ``uncertainty.parquet`` (same fingerprint), else fits it from that file: the same numbers.
    """
    run_dir = Path(run_dir)
    samples_path = run_dir / UNCERTAINTY_FILE
    if not samples_path.exists():
        return None
    fingerprint = fingerprint_files([samples_path])
    saved = calibrator_path(run_dir, predictor)
    if saved.is_file():
        cal = Calibrator.load(saved)
        if cal.predictor == predictor and cal.fitted_on.get("uncertainty_fingerprint") == fingerprint:
            return cal
    samples = load_uncertainty(run_dir)
    if not samples["predictor"].astype(str).eq(predictor).any():
        return None
    return Calibrator.from_samples(samples, predictor, source=str(samples_path),
                                   fitted_on={"run": str(run_dir), "uncertainty_fingerprint": fingerprint})
