"""Paired bootstrap over compounds: is predictor A really better than B on these compounds?

Both predictors are scored on the same compounds, so the honest unit of resampling is the compound
and the two score vectors are resampled *together* (paired). Resample r draws compound indices
``rng.integers(0, n, size=n)`` from ``numpy.random.default_rng(seed)``, rows drawn in order, so a
plain loop with the same seed reproduces every resample; :func:`compare_all` shares those same
indices across all predictors and metrics, which keeps the pairwise results mutually consistent.

p-value definition (two-sided, percentile bootstrap):
``p = min(1, 2 * min(P*(d <= 0), P*(d >= 0)))`` where ``P*`` is the fraction of resampled mean
differences. It is the dual of the percentile CI reported next to it: ``p < 1 - ci`` exactly when
that CI excludes 0 (up to quantile interpolation), so a table never shows a "significant" p beside
a CI that covers 0. With B resamples its resolution is 1/B: ``p = 0`` means ``p < 1/B``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import numpy as np
import pandas as pd

from drugcell.defaults import COMPOUND_COL
from drugcell.errors import DrugcellInputError

# Resample-index chunk: at most this many int64 indices in memory at once (32 MB).
_MAX_CHUNK_ELEMENTS = 1 << 22


def _resample_count_chunks(n: int, n_resamples: int, seed: int) -> Iterator[np.ndarray]:
    """Yield (chunk, n) float64 matrices of how often each compound is drawn in each resample.

    Counts turn every resampled mean into one matrix product (counts @ scores / n) for any number
    of predictors; the index stream is exactly ``rng.integers(0, n, size=n)`` per resample.
    """
    rng = np.random.default_rng(seed)
    per_chunk = max(1, min(n_resamples, _MAX_CHUNK_ELEMENTS // max(n, 1)))
    done = 0
    while done < n_resamples:
        m = min(per_chunk, n_resamples - done)
        idx = rng.integers(0, n, size=(m, n))
        flat = (idx + (np.arange(m) * n)[:, None]).ravel()
        yield np.bincount(flat, minlength=m * n).reshape(m, n).astype(np.float64)
        done += m


def bootstrap_means(scores: np.ndarray, n_resamples: int = 10_000, seed: int = 0) -> np.ndarray:
    """(n_resamples, P) resampled means of each column of ``scores`` (n compounds x P), paired."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim == 1:
        scores = scores[:, None]
    n = scores.shape[0]
    if n == 0:
        raise DrugcellInputError("cannot bootstrap over zero compounds")
    out = np.empty((n_resamples, scores.shape[1]), dtype=np.float64)
    row = 0
    for counts in _resample_count_chunks(n, n_resamples, seed):
        out[row:row + len(counts)] = counts @ scores / n
        row += len(counts)
    return out


def _summarise(observed: float, boot: np.ndarray, ci: float) -> dict:
    alpha = 1.0 - ci
    lo, hi = np.quantile(boot, [alpha / 2, 1 - alpha / 2])
    p = min(1.0, 2.0 * min(float(np.mean(boot <= 0)), float(np.mean(boot >= 0))))
    return {"diff": float(observed), "ci_low": float(lo), "ci_high": float(hi), "p_value": p,
            "boot_std": float(boot.std(ddof=1)) if len(boot) > 1 else 0.0}


def _check(ci: float, n_resamples: int) -> None:
    if not 0.0 < ci < 1.0:
        raise DrugcellInputError(f"ci must be in (0, 1), e.g. 0.95; got {ci!r}")
    if n_resamples < 1:
        raise DrugcellInputError(f"n_resamples must be >= 1, got {n_resamples!r}")


def paired_bootstrap(a, b, n_resamples: int = 10_000, seed: int = 0, ci: float = 0.95) -> dict:
    """Mean of (a - b) over compounds, its percentile CI and a two-sided p-value.

    ``a`` and ``b`` are per-compound scores (e.g. wMSE) of two predictors on the same compounds in
    the same order. Returns ``diff, ci_low, ci_high, p_value, boot_std, mean_a, mean_b,
    n_compounds, n_resamples, seed, ci, p_value_definition``.
    """
    _check(ci, n_resamples)
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise DrugcellInputError(f"paired bootstrap needs equal lengths; got {len(a)} and {len(b)}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise DrugcellInputError("paired bootstrap got non-finite scores; fix the scores first")
    d = a - b
    boot = bootstrap_means(d, n_resamples, seed)[:, 0]
    return {**_summarise(d.mean(), boot, ci), "mean_a": float(a.mean()), "mean_b": float(b.mean()),
            "n_compounds": int(len(d)), "n_resamples": int(n_resamples), "seed": int(seed),
            "ci": float(ci), "p_value_definition": "2*min(P*(d<=0), P*(d>=0)), percentile"}


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error control over all the pairs given).

    Sorted ascending, ``adj_(i) = max_{j <= i} min(1, (m - j + 1) p_(j))``; returned in input order.
    """
    p = np.asarray(p_values, dtype=np.float64).ravel()
    m = len(p)
    if m == 0:
        return p
    order = np.argsort(p, kind="stable")
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adjusted = np.empty(m)
    adjusted[order] = np.maximum.accumulate(scaled)
    return adjusted


def _wide_scores(metric: str, sub: pd.DataFrame, value: str) -> pd.DataFrame:
    """compound x predictor float64 table (sorted ids), refusing repeats, holes and NaN/inf."""
    dup = sub.duplicated(["predictor", COMPOUND_COL], keep=False)
    if dup.any():
        r = sub[dup].iloc[0]
        raise DrugcellInputError(
            f"metric {metric}: predictor {r['predictor']} has {int(dup.sum())} repeated "
            f"(predictor, compound) rows, e.g. compound {r['compound']}; keep one score per "
            f"compound (average repeats first if that is what you mean)")
    wide = sub.pivot(index=COMPOUND_COL, columns="predictor", values=value).sort_index()
    if wide.isna().any().any():
        pred, comp = next((p, c) for p in wide.columns for c in wide.index[wide[p].isna()])
        raise DrugcellInputError(
            f"metric {metric}: predictor {pred} has no score for compound {comp} "
            f"({int(wide.isna().sum().sum())} missing in all); every predictor must be scored "
            f"on the same compounds for a paired comparison")
    wide = wide.astype(np.float64)
    if not np.isfinite(wide.to_numpy()).all():
        raise DrugcellInputError(f"metric {metric}: non-finite {value} values in scores")
    return wide


def compare_all(
    scores: pd.DataFrame, *, n_resamples: int = 10_000, seed: int = 0, ci: float = 0.95,
    ordered: bool = False, value: str = "wmse",
) -> pd.DataFrame:
    """Paired bootstrap for every pair of predictors, per metric, with shared resample indices.

    ``scores`` is long: ``predictor, compound, wmse`` (+ ``metric``; other columns such as
    ``fold`` are ignored). Each predictor must have exactly one score per compound and metric, on
    the same compounds. Compounds are resampled in sorted-id order, so a result does not depend
    on row order and equals ``paired_bootstrap`` on the id-sorted vectors. Unordered pairs list
    the predictor with the lower mean first (so ``diff`` <= 0 means "a is better" for
    lower-is-better metrics); ``ordered=True`` gives both directions.
    ``p_holm`` is Holm's adjustment over all pairs of the same metric, computed from the p-values
    floored at 1/B (a bootstrap p of 0 only says p < 1/B), so it never claims more than B resamples
    can show.
    Columns: ``metric, predictor_a, predictor_b, n_compounds, mean_a, mean_b, diff, ci_low,
    ci_high, p_value, p_holm, boot_std, n_resamples, seed, ci``.
    """
    _check(ci, n_resamples)
    need = {"predictor", COMPOUND_COL, value}
    missing = need - set(scores.columns)
    if missing:
        raise DrugcellInputError(f"scores frame lacks column(s) {sorted(missing)}; it needs "
                                 f"predictor, compound, {value} (+ metric)")
    frame = scores if "metric" in scores.columns else scores.assign(metric="wmse")
    tables = {}
    for metric, sub in frame.groupby("metric", sort=True):
        tables[metric] = _wide_scores(metric, sub, value)
    # Every metric scores the same compounds in a CV run: one pass of resamples serves them all.
    index = next(iter(tables.values())).index if tables else None
    shared = all(w.index.equals(index) for w in tables.values())
    if shared and tables:
        all_boot = bootstrap_means(np.hstack([w.to_numpy() for w in tables.values()]),
                                   n_resamples, seed)
    rows, col = [], 0
    for metric, wide in tables.items():
        means = wide.mean(axis=0)
        order = np.argsort(means.to_numpy(), kind="stable")
        names = [str(wide.columns[k]) for k in order]
        if shared:
            boot = all_boot[:, col + order]
            col += wide.shape[1]
        else:  # same seed, so the same indices whenever the compound sets coincide
            boot = bootstrap_means(wide.to_numpy()[:, order], n_resamples, seed)
        pairs = (itertools.permutations(range(len(names)), 2) if ordered
                 else itertools.combinations(range(len(names)), 2))
        for i, j in pairs:
            mean_a, mean_b = float(means[names[i]]), float(means[names[j]])
            s = _summarise(mean_a - mean_b, boot[:, i] - boot[:, j], ci)
            rows.append({"metric": metric, "predictor_a": names[i], "predictor_b": names[j],
                         "n_compounds": int(len(wide)), "mean_a": mean_a, "mean_b": mean_b, **s,
                         "n_resamples": int(n_resamples), "seed": int(seed), "ci": float(ci)})
    cols = ["metric", "predictor_a", "predictor_b", "n_compounds", "mean_a", "mean_b", "diff",
            "ci_low", "ci_high", "p_value", "p_holm", "boot_std", "n_resamples", "seed", "ci"]
    out = pd.DataFrame(rows, columns=cols)
    floor = 1.0 / n_resamples
    for _, idx in out.groupby("metric", sort=False).groups.items():
        out.loc[idx, "p_holm"] = holm(np.maximum(out.loc[idx, "p_value"].to_numpy(float), floor))
    return out.astype({"p_holm": np.float64})
