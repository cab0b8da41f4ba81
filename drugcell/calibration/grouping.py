"""A CV run's uncertainty samples, cleaned and grouped by (predictor, fold), with scales fitted out of fold.

Input is what the CV runner writes (``RUN/uncertainty.parquet``: one row per sampled (compound,
gene) cell with ``error = pred - truth`` and the predicted ``std``). Fitting the scale on the same
cells it is judged on flatters it, so the scale for held-out fold f is fitted on the predictor's
other folds only, and the coverage reported after scaling is the coverage on fold f. Everything
works on integer group codes, not strings: a run holds millions of sampled cells.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from drugcell.calibration.stats import coverage, fit_scale, reliability_table, std_error_pearson
from drugcell.defaults import COMPOUND_COL
from drugcell.errors import DrugcellInputError

REQUIRED_COLUMNS = ("predictor", "fold", COMPOUND_COL, "gene", "error", "std")
#: Columns the arithmetic needs (``compound``/``gene`` are only required in a run's file).
NEEDED_COLUMNS = ("predictor", "fold", "error", "std")
UNCERTAINTY_FILE = "uncertainty.parquet"

SUMMARY_COLUMNS = [
    "predictor", "fold", "n", "mean_std", "mae", "rmse", "pearson_std_abs_error",
    "coverage_1sigma", "coverage_2sigma", "z_rms", "scale",
    "coverage_1sigma_scaled", "coverage_2sigma_scaled",
]
RELIABILITY_COLUMNS = ["predictor", "std_kind", "bin", "n", "std_min", "std_max",
                       "mean_std", "mae", "ideal_mae", "rmse"]


def check_columns(samples: pd.DataFrame, source: str, columns: tuple[str, ...] = NEEDED_COLUMNS) -> None:
    """Refuse a frame that lacks a column, naming the file and what `drugcell cv` writes."""
    missing = [c for c in columns if c not in samples.columns]
    if missing:
        raise DrugcellInputError(
            f"{source}: missing column(s) {', '.join(missing)}; expected columns "
            f"{', '.join(columns)} as written by `drugcell cv`."
        )


def _sorted_folds(folds) -> list[str]:
    """Folds in numeric order when they are numbers ("2" before "10"), else alphabetical."""
    folds = [str(f) for f in folds]
    try:
        return sorted(folds, key=float)
    except ValueError:
        return sorted(folds)


@dataclass
class Cells:
    """The usable cells as flat arrays; ``group = predictor_code * n_folds + fold_code``."""

    error: np.ndarray
    std: np.ndarray
    group: np.ndarray
    predictors: list[str]
    folds: list[str]
    n_dropped: int

    @property
    def n_groups(self) -> int:
        return len(self.predictors) * len(self.folds)

    def group_slices(self) -> tuple[np.ndarray, list[np.ndarray]]:
        """Cell indices of every (predictor, fold) group, from one stable sort."""
        order = np.argsort(self.group, kind="stable")
        counts = np.bincount(self.group, minlength=self.n_groups)
        return counts, np.split(order, np.cumsum(counts)[:-1])


def usable_cells(samples: pd.DataFrame, source: str = "uncertainty samples",
                 columns: tuple[str, ...] = NEEDED_COLUMNS) -> Cells:
    """Check columns; drop cells whose error or std is non-finite or whose std is <= 0.

    A zero std with a non-zero error has an infinite z-score, which would make the fitted scale
    infinite; such cells are dropped and counted rather than silently clipped.
    """
    check_columns(samples, source, columns)
    e = pd.to_numeric(samples["error"], errors="coerce").to_numpy(np.float64)
    s = pd.to_numeric(samples["std"], errors="coerce").to_numpy(np.float64)
    good = np.isfinite(e) & np.isfinite(s) & (s > 0)
    p_codes, p_names = pd.factorize(samples["predictor"].to_numpy()[good], sort=False)
    f_codes, f_names = pd.factorize(samples["fold"].to_numpy()[good], sort=False)
    p_str, f_str = [str(x) for x in p_names], [str(x) for x in f_names]
    p_order = sorted(range(len(p_str)), key=lambda i: p_str[i])
    f_sorted = _sorted_folds(f_str)
    p_map = np.empty(len(p_str), dtype=np.int64)
    p_map[p_order] = np.arange(len(p_str))
    f_map = np.array([f_sorted.index(f) for f in f_str], dtype=np.int64)
    group = p_map[p_codes] * max(len(f_sorted), 1) + f_map[f_codes] if good.any() else np.zeros(0, np.int64)
    return Cells(error=e[good], std=s[good], group=group.astype(np.int64),
                 predictors=[p_str[i] for i in p_order], folds=f_sorted, n_dropped=int((~good).sum()))


def clean_samples(samples: pd.DataFrame, source: str = "uncertainty samples") -> tuple[pd.DataFrame, int]:
    """The usable cells as a frame (``predictor``, ``fold`` as str, ``error``, ``std``) and the
    number dropped (non-finite error/std, or std <= 0)."""
    c = usable_cells(samples, source)
    nf = max(len(c.folds), 1)
    frame = pd.DataFrame({
        "predictor": np.asarray(c.predictors, dtype=object)[c.group // nf] if c.group.size else [],
        "fold": np.asarray(c.folds, dtype=object)[c.group % nf] if c.group.size else [],
        "error": c.error, "std": c.std,
    })
    return frame, c.n_dropped


def _oof_group_scales(c: Cells) -> np.ndarray:
    """Scale per (predictor, fold) group fitted on the predictor's other folds (NaN if none)."""
    z2 = (c.error / c.std) ** 2
    nf = max(len(c.folds), 1)
    S = np.bincount(c.group, weights=z2, minlength=c.n_groups).reshape(-1, nf)
    N = np.bincount(c.group, minlength=c.n_groups).reshape(-1, nf).astype(np.float64)
    rest_n = N.sum(axis=1, keepdims=True) - N
    with np.errstate(invalid="ignore", divide="ignore"):
        scale = np.sqrt((S.sum(axis=1, keepdims=True) - S) / rest_n)
    scale[rest_n == 0] = np.nan
    return scale.ravel()


def out_of_fold_scales(samples: pd.DataFrame) -> pd.Series:
    """Scale for each (predictor, fold) fitted on that predictor's *other* folds (NaN if none),
    indexed by (predictor, fold) with the fold as str."""
    c = usable_cells(samples)
    scale = _oof_group_scales(c)
    counts = np.bincount(c.group, minlength=c.n_groups)
    idx = [(p, f) for p in c.predictors for f in c.folds]
    s = pd.Series(scale, index=pd.MultiIndex.from_tuples(idx, names=["predictor", "fold"]), name="scale")
    return s[counts > 0]


def _row(predictor: str, fold: str, e: np.ndarray, s: np.ndarray, scale: float,
         scaled_std: np.ndarray | None) -> dict:
    row = {
        "predictor": predictor, "fold": fold, "n": int(e.size),
        "mean_std": float(s.mean()), "mae": float(np.abs(e).mean()),
        "rmse": float(np.sqrt(np.mean(e * e))),
        "pearson_std_abs_error": std_error_pearson(e, s),
        "coverage_1sigma": coverage(e, s, 1), "coverage_2sigma": coverage(e, s, 2),
        "z_rms": fit_scale(e, s), "scale": float(scale),
    }
    if scaled_std is None:
        row["coverage_1sigma_scaled"] = row["coverage_2sigma_scaled"] = float("nan")
    else:
        row["coverage_1sigma_scaled"] = coverage(e, scaled_std, 1)
        row["coverage_2sigma_scaled"] = coverage(e, scaled_std, 2)
    return row


def _per_predictor(c: Cells):
    """Yield (predictor, [(fold, idx, scale)], all_idx) with out-of-fold scales per fold."""
    scales = _oof_group_scales(c)
    counts, slices = c.group_slices()
    nf = max(len(c.folds), 1)
    for p, name in enumerate(c.predictors):
        folds = [(c.folds[f], slices[p * nf + f], float(scales[p * nf + f]))
                 for f in range(nf) if counts[p * nf + f] > 0]
        yield name, folds, np.concatenate([idx for _, idx, _ in folds])


def calibration_summary(samples: pd.DataFrame) -> pd.DataFrame:
    """One row per (predictor, held-out fold) plus a pooled row per predictor (``fold == "all"``).

    Per fold: ``scale`` is fitted on the other folds and ``coverage_*_scaled`` is measured on this
    fold; ``z_rms`` is the in-fold scale (what this fold alone would ask for). Pooled row:
    ``scale`` is fitted on all folds (the factor to apply at submission), and the scaled coverage
    pools the held-out folds, each scaled by its own out-of-fold factor (still honest).
    """
    return summarize(usable_cells(samples))


def summarize(c: Cells) -> pd.DataFrame:
    """:func:`calibration_summary` of cells already cleaned and grouped."""
    rows = []
    for predictor, folds, all_idx in _per_predictor(c):
        scaled_all = np.empty(all_idx.size)
        pos = 0
        for fold, idx, scale in folds:
            e, s = c.error[idx], c.std[idx]
            scaled = s * scale if np.isfinite(scale) else None
            rows.append(_row(predictor, fold, e, s, scale, scaled))
            scaled_all[pos:pos + idx.size] = s * scale
            pos += idx.size
        e, s = c.error[all_idx], c.std[all_idx]
        scaled_all = scaled_all if np.isfinite(scaled_all).all() else None
        rows.append(_row(predictor, "all", e, s, fit_scale(e, s), scaled_all))
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def reliability_tables(samples: pd.DataFrame, n_bins: int = 10) -> pd.DataFrame:
    """Reliability tables pooled over folds, per predictor, for the raw std and the std scaled
    by each fold's out-of-fold factor (``std_kind`` = ``raw`` / ``scaled``)."""
    return reliability_of(usable_cells(samples), n_bins)


def reliability_of(c: Cells, n_bins: int) -> pd.DataFrame:
    """:func:`reliability_tables` of cells already cleaned and grouped."""
    parts = []
    for predictor, folds, all_idx in _per_predictor(c):
        e = c.error[all_idx]
        parts.append(reliability_table(e, c.std[all_idx], n_bins).assign(predictor=predictor, std_kind="raw"))
        scaled = np.concatenate([c.std[idx] * scale for _, idx, scale in folds])
        if np.isfinite(scaled).all():
            parts.append(reliability_table(e, scaled, n_bins).assign(predictor=predictor, std_kind="scaled"))
    if not parts:
        return pd.DataFrame(columns=RELIABILITY_COLUMNS)
    out = pd.concat(parts, ignore_index=True)
    return out[["predictor", "std_kind"] + [c for c in out.columns if c not in ("predictor", "std_kind")]]


# --------------------------------------------------------------------------- reading a run
def _run_predictor_names(run_dir: Path) -> list[str]:
    """Best effort: predictor names recorded in the run manifest (for the error message)."""
    try:
        manifest = json.loads((run_dir / "manifest.json").read_text())
    except (OSError, ValueError):
        return []
    found: list[str] = []

    def walk(obj) -> None:
        if isinstance(obj, dict):
            for k, v in obj.items():
                if k == "predictors" and isinstance(v, list):
                    for p in v:
                        name = (p.get("name") or p.get("kind")) if isinstance(p, dict) else p
                        if isinstance(name, str) and name not in found:
                            found.append(name)
                else:
                    walk(v)
        elif isinstance(obj, list):
            for v in obj:
                walk(v)

    walk(manifest)
    return found


def std_kinds_line() -> str:
    """The predictor kinds that can return a std, read from the registry (never a kept list)."""
    from drugcell.models.registry import kinds_with

    return (f"Predictor kinds that can return a std: {', '.join(kinds_with('returns_std'))} "
            "(a kind may have an option that turns its std off).")


def load_uncertainty(run_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """Read the predictor, fold, error and std columns of ``RUN/uncertainty.parquet`` (after checking
    that all of its columns are there); a clear error when the run has none."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DrugcellInputError(f"run directory {run_dir} does not exist; pass the folder `drugcell cv` wrote.")
    path = run_dir / UNCERTAINTY_FILE
    if path.exists():
        import pyarrow.parquet as pq

        try:
            names = pq.read_schema(path).names
        except Exception as exc:  # pyarrow raises several types for a damaged file
            raise DrugcellInputError(f"{path} is not a readable parquet file ({exc}); rerun `drugcell cv`.") from None
        check_columns(pd.DataFrame(columns=names), str(path), REQUIRED_COLUMNS)
        # compound/gene strings are not needed for the arithmetic and dominate the read time
        samples = pd.read_parquet(path, columns=list(NEEDED_COLUMNS))
        if len(samples):
            return samples
    in_run = _run_predictor_names(run_dir)
    ran = f" This run's predictors: {', '.join(in_run)}." if in_run else ""
    raise DrugcellInputError(
        f"run {run_dir} has no uncertainty samples ({path} is missing or empty): none of its "
        f"predictors returned a std.{ran} {std_kinds_line()} Add one to the config and rerun `drugcell cv`."
    )
