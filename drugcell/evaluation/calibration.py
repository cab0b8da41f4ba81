"""Is a predicted std worth anything? Coverage, reliability by std decile, and one honest scale.

Input is the uncertainty sample the CV runner writes (``RUN/uncertainty.parquet``: one row per
sampled (compound, gene) cell with ``error = pred - truth`` and the predicted ``std``). For a
Gaussian predictive distribution that is calibrated:

* coverage: the fraction of cells with ``|error| <= k * std`` is 0.683 at k = 1 and 0.954 at k = 2;
* reliability: within any group of cells with similar std, ``mean |error| = sqrt(2/pi) * mean std``;
* the predicted std ranks the errors: Pearson r(std, |error|) > 0.

A model that is right about *which* cells are uncertain but wrong about *how much* is fixed by one
global factor ``s = sqrt(mean((error/std)^2))``. Fitting ``s`` on the same cells it is judged on
flatters it, so the scale for held-out fold f is fitted on the other folds only and the coverage
reported after scaling is the coverage on fold f.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from drugcell.errors import DrugcellInputError
from drugcell.provenance import atomic_path, fingerprint_files, provenance, write_json, write_text

#: Gaussian probability mass within k standard deviations: erf(k / sqrt(2)).
GAUSSIAN_COVERAGE = {1: math.erf(1 / math.sqrt(2)), 2: math.erf(2 / math.sqrt(2))}
#: E|X| / sigma for X ~ N(0, sigma^2): the ideal MAE-to-std ratio of the reliability table.
MAE_PER_STD = math.sqrt(2 / math.pi)

REQUIRED_COLUMNS = ("predictor", "fold", "compound", "gene", "error", "std")
UNCERTAINTY_FILE = "uncertainty.parquet"

#: Scaled 1-sigma coverage this far above 0.683 is flagged as heavier-than-Gaussian tails.
HEAVY_TAIL_MARGIN = 0.03

#: Predictors that can return a std (said in the error when a run has no uncertainty samples).
STD_PREDICTORS = (
    "fusion (heteroscedastic head, ensemble of seeds)",
    "mlp (ensemble of seeds)",
    "knn (spread of the neighbours' profiles, when its std option is on)",
)

SUMMARY_COLUMNS = [
    "predictor", "fold", "n", "mean_std", "mae", "rmse", "pearson_std_abs_error",
    "coverage_1sigma", "coverage_2sigma", "z_rms", "scale",
    "coverage_1sigma_scaled", "coverage_2sigma_scaled",
]


# --------------------------------------------------------------------------- array-level pieces
def _as_arrays(error, std) -> tuple[np.ndarray, np.ndarray]:
    e = np.asarray(error, dtype=np.float64).ravel()
    s = np.asarray(std, dtype=np.float64).ravel()
    if e.shape != s.shape:
        raise ValueError(f"error and std differ in length: {e.size} vs {s.size}")
    return e, s


def coverage(error, std, k: float = 1.0) -> float:
    """Fraction of cells with ``|error| <= k * std`` (NaN for no cells)."""
    e, s = _as_arrays(error, std)
    if e.size == 0:
        return float("nan")
    return float(np.mean(np.abs(e) <= k * s))


def fit_scale(error, std) -> float:
    """The one factor ``s`` that makes ``mean((error / (s * std))^2) = 1``: sqrt(mean z^2)."""
    e, s = _as_arrays(error, std)
    if e.size == 0:
        return float("nan")
    return float(np.sqrt(np.mean((e / s) ** 2)))


def std_error_pearson(error, std) -> float:
    """Pearson r between predicted std and |error| (NaN when either is constant)."""
    e, s = _as_arrays(error, std)
    a = np.abs(e)
    if e.size < 2 or np.ptp(a) == 0 or np.ptp(s) == 0:
        return float("nan")
    return float(np.corrcoef(s, a)[0, 1])


def std_bins(std, n_bins: int = 10) -> np.ndarray:
    """Quantile bin (0 .. n_bins-1) of each cell by rank of its std.

    Ranks (stable sort), not value cut points, so ties and a constant std still give equal-sized
    bins: cell of rank i goes to bin ``floor(i * n_bins / n)``.
    """
    s = np.asarray(std, dtype=np.float64).ravel()
    order = np.argsort(s, kind="stable")
    bins = np.empty(s.size, dtype=np.int64)
    bins[order] = (np.arange(s.size) * n_bins) // max(s.size, 1)
    return bins


def reliability_table(error, std, n_bins: int = 10) -> pd.DataFrame:
    """MAE per predicted-std quantile bin, next to the Gaussian ideal sqrt(2/pi) * mean std.

    Bins are contiguous runs of the std-sorted cells (see :func:`std_bins`), so every statistic
    is a sum over a slice of the sorted arrays: fast on millions of cells.
    """
    e, s = _as_arrays(error, std)
    if n_bins < 1:
        raise DrugcellInputError(f"number of std bins must be >= 1, got {n_bins}")
    order = np.argsort(s, kind="stable")
    s_sorted, e_sorted = s[order], e[order]
    bins = (np.arange(s.size) * n_bins) // max(s.size, 1)
    n = np.bincount(bins, minlength=n_bins)
    used = np.flatnonzero(n)
    n = n[used]
    ends = np.cumsum(n)
    starts = ends - n
    mean_std = np.add.reduceat(s_sorted, starts) / n if s.size else np.zeros(0)
    mae = np.add.reduceat(np.abs(e_sorted), starts) / n if s.size else np.zeros(0)
    rmse = np.sqrt(np.add.reduceat(e_sorted ** 2, starts) / n) if s.size else np.zeros(0)
    return pd.DataFrame({
        "bin": used + 1,  # 1-based: "decile 1" is the smallest std
        "n": n.astype(np.int64),
        "std_min": s_sorted[starts] if s.size else np.zeros(0),
        "std_max": s_sorted[ends - 1] if s.size else np.zeros(0),
        "mean_std": mean_std, "mae": mae, "ideal_mae": MAE_PER_STD * mean_std, "rmse": rmse,
    })


# --------------------------------------------------------------------------- frame-level
#: Columns the arithmetic needs (``compound``/``gene`` are only required in a run's file).
NEEDED_COLUMNS = ("predictor", "fold", "error", "std")


def _check_columns(samples: pd.DataFrame, source: str, columns: tuple[str, ...] = NEEDED_COLUMNS) -> None:
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
class _Cells:
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


def _cells(samples: pd.DataFrame, source: str = "uncertainty samples",
           columns: tuple[str, ...] = NEEDED_COLUMNS) -> _Cells:
    """Check columns; drop cells whose error or std is non-finite or whose std is <= 0.

    A zero std with a non-zero error has an infinite z-score, which would make the fitted scale
    infinite; such cells are dropped and counted rather than silently clipped. Works on codes,
    not strings: a run holds millions of sampled cells.
    """
    _check_columns(samples, source, columns)
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
    return _Cells(error=e[good], std=s[good], group=group.astype(np.int64),
                  predictors=[p_str[i] for i in p_order], folds=f_sorted, n_dropped=int((~good).sum()))


def clean_samples(samples: pd.DataFrame, source: str = "uncertainty samples") -> tuple[pd.DataFrame, int]:
    """The usable cells as a frame (``predictor``, ``fold`` as str, ``error``, ``std``) and the
    number dropped (non-finite error/std, or std <= 0)."""
    c = _cells(samples, source)
    nf = max(len(c.folds), 1)
    frame = pd.DataFrame({
        "predictor": np.asarray(c.predictors, dtype=object)[c.group // nf] if c.group.size else [],
        "fold": np.asarray(c.folds, dtype=object)[c.group % nf] if c.group.size else [],
        "error": c.error, "std": c.std,
    })
    return frame, c.n_dropped


def _oof_group_scales(c: _Cells) -> np.ndarray:
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
    c = _cells(samples)
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


def _per_predictor(c: _Cells):
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
    return _summary(_cells(samples))


def _summary(c: _Cells) -> pd.DataFrame:
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
    return _reliability(_cells(samples), n_bins)


def _reliability(c: _Cells, n_bins: int) -> pd.DataFrame:
    parts = []
    for predictor, folds, all_idx in _per_predictor(c):
        e = c.error[all_idx]
        parts.append(reliability_table(e, c.std[all_idx], n_bins).assign(predictor=predictor, std_kind="raw"))
        scaled = np.concatenate([c.std[idx] * scale for _, idx, scale in folds])
        if np.isfinite(scaled).all():
            parts.append(reliability_table(e, scaled, n_bins).assign(predictor=predictor, std_kind="scaled"))
    if not parts:
        return pd.DataFrame(columns=["predictor", "std_kind", "bin", "n", "std_min", "std_max",
                                     "mean_std", "mae", "ideal_mae", "rmse"])
    out = pd.concat(parts, ignore_index=True)
    return out[["predictor", "std_kind"] + [c for c in out.columns if c not in ("predictor", "std_kind")]]



# --------------------------------------------------------------------------- report pieces
def _fmt(x, digits: int = 3) -> str:
    if isinstance(x, (int, np.integer)):
        return f"{int(x):,}"
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "-"
    return f"{x:.{digits}f}"


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def calibration_markdown(df: pd.DataFrame, *, heading: str = "## Calibration of the predicted std") -> str:
    """A markdown section for a run summary.

    ``df`` is either the uncertainty samples (columns ``error``, ``std``, ...) as the CV runner
    holds them, or a frame from :func:`calibration_summary`.
    """
    summary = calibration_summary(df) if {"error", "std"} <= set(df.columns) else df
    c1, c2 = GAUSSIAN_COVERAGE[1], GAUSSIAN_COVERAGE[2]
    intro = (
        f"Coverage = fraction of sampled (compound, gene) cells with |pred - truth| <= k * std; a "
        f"calibrated Gaussian gives {c1:.3f} at 1 sigma and {c2:.3f} at 2 sigma. "
        "`s` = sqrt(mean((error/std)^2)) fitted on the *other* folds and applied to the held-out "
        "fold (pooled row: `s` fitted on all folds, the factor to use at submission; its scaled "
        "coverage pools the held-out folds). r = Pearson(std, |error|)."
    )
    if summary.empty:
        return f"{heading}\n\nNo uncertainty samples (no predictor in this run predicts a std).\n"
    header = ["predictor", "fold", "cells", "mean std", "MAE", "r", "cov 1σ", "cov 2σ",
              "s", "cov 1σ scaled", "cov 2σ scaled"]
    rows = []
    for r in summary.itertuples(index=False):
        fold = "**all**" if r.fold == "all" else str(r.fold)
        rows.append([str(r.predictor), fold, _fmt(int(r.n)), _fmt(r.mean_std), _fmt(r.mae),
                     _fmt(r.pearson_std_abs_error), _fmt(r.coverage_1sigma), _fmt(r.coverage_2sigma),
                     _fmt(r.scale), _fmt(r.coverage_1sigma_scaled), _fmt(r.coverage_2sigma_scaled)])
    note = ""
    if summary["coverage_1sigma_scaled"].isna().any():
        note = "\n\n`-` in the scaled columns: a predictor with a single fold has no other fold to fit `s` on."
    pooled = summary[summary["fold"] == "all"]
    heavy = pooled.loc[pooled["coverage_1sigma_scaled"] > c1 + HEAVY_TAIL_MARGIN, "predictor"].tolist()
    if heavy:
        note += (
            f"\n\nHeavy tails ({', '.join(map(str, heavy))}): after scaling, 1-sigma coverage exceeds "
            f"{c1:.3f} by more than {HEAVY_TAIL_MARGIN}: error/std is heavier-tailed than a Gaussian, so "
            "the variance-matching `s` over-covers most cells while a few large misses carry the variance."
        )
    return f"{heading}\n\n{intro}\n\n{_md_table(header, rows)}{note}\n"


def reliability_markdown(reliability: pd.DataFrame) -> str:
    """Decile tables (raw std) as markdown, one per predictor."""
    out = []
    for predictor, t in reliability[reliability["std_kind"] == "raw"].groupby("predictor", sort=True):
        rows = [[str(int(r.bin)), _fmt(int(r.n)), _fmt(r.mean_std), _fmt(r.mae), _fmt(r.ideal_mae),
                 _fmt(r.mae / r.ideal_mae if r.ideal_mae > 0 else float("nan"), 2)]
                for r in t.itertuples(index=False)]
        out.append(f"### {predictor}: MAE by predicted-std decile\n\n" + _md_table(
            ["decile", "cells", "mean std", "MAE", "ideal sqrt(2/pi)*std", "MAE / ideal"], rows))
    return "\n\n".join(out) + ("\n" if out else "")


def reliability_plot(reliability: pd.DataFrame, summary_row: pd.Series | dict | None,
                     path: str | os.PathLike[str], *, title: str = "") -> Path:
    """PNG: MAE vs mean predicted std per decile (raw and scaled) with the Gaussian ideal line,
    and coverage before/after scaling against 0.683 / 0.954. Written atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax, bx = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    hi = 0.0
    for kind, style in (("raw", "o-"), ("scaled", "s--")):
        t = reliability[reliability["std_kind"] == kind]
        if t.empty:
            continue
        label = "predicted std" if kind == "raw" else "std x s (other folds)"
        ax.plot(t["mean_std"], t["mae"], style, label=label)
        hi = max(hi, float(t["mean_std"].max()), float(t["mae"].max() / MAE_PER_STD))
    grid = np.linspace(0, hi if hi > 0 else 1.0, 50)
    ax.plot(grid, MAE_PER_STD * grid, "k:", label="ideal: MAE = sqrt(2/pi) std")
    ax.set_xlabel("mean predicted std in decile")
    ax.set_ylabel("mean |pred - truth|")
    ax.set_title("reliability by std decile")
    ax.legend(fontsize=8)
    if summary_row is not None:
        r = dict(summary_row)
        xs = np.arange(2)
        before = [r.get("coverage_1sigma", np.nan), r.get("coverage_2sigma", np.nan)]
        after = [r.get("coverage_1sigma_scaled", np.nan), r.get("coverage_2sigma_scaled", np.nan)]
        bx.bar(xs - 0.2, np.nan_to_num(before), width=0.4, label="raw")
        bx.bar(xs + 0.2, np.nan_to_num(after), width=0.4, label="scaled (held-out)")
        for x, ideal in zip(xs, (GAUSSIAN_COVERAGE[1], GAUSSIAN_COVERAGE[2])):
            bx.hlines(ideal, x - 0.45, x + 0.45, colors="k", linestyles=":")
        bx.set_xticks(xs, ["1 sigma", "2 sigma"])
        bx.set_ylim(0, 1.05)
        bx.set_ylabel("coverage")
        bx.set_title("coverage (dotted: Gaussian)")
        bx.legend(fontsize=8, loc="lower right")
    else:
        bx.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return Path(path)


# --------------------------------------------------------------------------- run-level
@dataclass
class CalibrationReport:
    """What :func:`calibrate_run` computed and wrote."""

    summary: pd.DataFrame
    reliability: pd.DataFrame
    markdown: str
    n_samples: int
    n_dropped: int
    files: dict[str, Path] = field(default_factory=dict)


def _run_predictor_names(run_dir: Path) -> list[str]:
    """Best effort: predictor names recorded in the run manifest (for the error message)."""
    import json

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


def _safe_name(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


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
        _check_columns(pd.DataFrame(columns=names), str(path), REQUIRED_COLUMNS)
        # compound/gene strings are not needed for the arithmetic and dominate the read time
        samples = pd.read_parquet(path, columns=list(NEEDED_COLUMNS))
        if len(samples):
            return samples
    in_run = _run_predictor_names(run_dir)
    ran = f" This run's predictors: {', '.join(in_run)}." if in_run else ""
    raise DrugcellInputError(
        f"run {run_dir} has no uncertainty samples ({path} is missing or empty): none of its "
        f"predictors returned a std.{ran} Predictors that can: {'; '.join(STD_PREDICTORS)}. "
        "Add one to the config and rerun `drugcell cv`."
    )


def calibrate_run(run_dir: str | os.PathLike[str], *, n_bins: int = 10) -> CalibrationReport:
    """Calibrate every std-predicting predictor of a CV run and write the results into the run.

    Writes ``calibration.parquet`` (summary), ``calibration_reliability.parquet`` (decile tables),
    ``calibration.md``, ``calibration_<predictor>.png`` and ``calibration_manifest.json``.
    """
    run_dir = Path(run_dir)
    raw = load_uncertainty(run_dir)
    cells = _cells(raw, source=str(run_dir / UNCERTAINTY_FILE))
    n_samples, n_dropped = int(cells.error.size), cells.n_dropped
    if n_samples == 0:
        raise DrugcellInputError(
            f"{run_dir / UNCERTAINTY_FILE}: all {len(raw):,} rows have a non-finite error/std or "
            "std <= 0; the predictor's std output is broken, check it before calibrating."
        )
    summary = _summary(cells)
    reliability = _reliability(cells, n_bins)
    md = calibration_markdown(summary, heading="# Calibration of the predicted std")
    md += f"\n{n_samples:,} cells"
    md += f" ({n_dropped:,} dropped: non-finite or std <= 0)" if n_dropped else ""
    md += f"; std bins: {n_bins} quantiles by predicted std.\n\n" + reliability_markdown(reliability)

    files: dict[str, Path] = {}
    files["summary"] = run_dir / "calibration.parquet"
    with atomic_path(files["summary"]) as tmp:
        summary.to_parquet(tmp, index=False)
    files["reliability"] = run_dir / "calibration_reliability.parquet"
    with atomic_path(files["reliability"]) as tmp:
        reliability.to_parquet(tmp, index=False)
    for predictor in summary["predictor"].unique():
        pooled = summary[(summary["predictor"] == predictor) & (summary["fold"] == "all")].iloc[0]
        path = run_dir / f"calibration_{_safe_name(predictor)}.png"
        reliability_plot(reliability[reliability["predictor"] == predictor], pooled, path,
                         title=f"{predictor}: calibration of the predicted std")
        files[f"plot:{predictor}"] = path
    files["markdown"] = run_dir / "calibration.md"
    write_text(files["markdown"], md)
    files["manifest"] = run_dir / "calibration_manifest.json"
    write_json(files["manifest"], provenance(
        command="calibrate", config={"n_bins": n_bins},
        data_fingerprint=fingerprint_files([run_dir / UNCERTAINTY_FILE]),
        n_samples=n_samples, n_dropped=n_dropped,
        outputs=sorted(p.name for p in files.values()),
    ))
    return CalibrationReport(summary=summary, reliability=reliability, markdown=md,
                             n_samples=n_samples, n_dropped=n_dropped, files=files)
