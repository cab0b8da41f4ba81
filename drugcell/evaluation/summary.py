"""Ranking tables from CV scores, and how much the metrics disagree about the ranking.

A predictor's place can depend on the weighting (Mejia vs proxy vs variance); the summary shows the
ranks side by side, the Kendall tau between each pair of metric rankings and the exact predictor
pairs whose order flips, so a reader sees whether a conclusion survives a change of metric.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.stats import kendalltau

from drugcell.defaults import COMPOUND_COL
from drugcell.errors import DrugcellInputError
from drugcell.reporting import fmt_number, fmt_p, md_table

REQUIRED = ("predictor", "fold", COMPOUND_COL, "metric", "wmse")


def _direction(metric: str) -> str:
    from drugcell.metrics import METRICS

    return METRICS.get(metric).direction if metric in METRICS else "lower"


@dataclass
class Summary:
    # metric, predictor, n_compounds, mean, fold_mean, fold_std, n_folds, rank
    table: pd.DataFrame
    agreement: pd.DataFrame    # metric_a, metric_b, n_predictors, kendall_tau, n_flips, flips
    notes: list[str] = field(default_factory=list)

    def ranks(self) -> pd.DataFrame:
        """predictor x metric rank table (1 = best)."""
        return self.table.pivot(index="predictor", columns="metric", values="rank")

    def to_markdown(self, comparisons: pd.DataFrame | None = None, max_pairs: int = 30) -> str:
        return render_markdown(self, comparisons=comparisons, max_pairs=max_pairs)


def summarize(scores: pd.DataFrame, notes: Sequence[str] = ()) -> Summary:
    """Per metric and predictor: mean over compounds, mean/std over fold means, rank; agreement.

    ``mean`` pools all compounds (the leaderboard's arithmetic); ``fold_mean``/``fold_std`` are the
    mean and sample std (ddof=1; NaN with one fold) of the per-fold means, a feel for split noise.
    Ranks use the metric's direction (1 = best; ties share the lower rank).
    """
    missing = [c for c in REQUIRED if c not in scores.columns]
    if missing:
        raise DrugcellInputError(f"scores frame lacks column(s) {missing}; needs {list(REQUIRED)}")
    if not np.isfinite(scores["wmse"].to_numpy(dtype=np.float64)).all():
        raise DrugcellInputError("scores frame has NaN/inf wmse values; fix the scoring first")
    pooled = scores.groupby(["metric", "predictor"], sort=True).agg(
        n_compounds=("wmse", "size"), mean=("wmse", "mean"))
    per_fold = scores.groupby(["metric", "predictor", "fold"], sort=True)["wmse"].mean()
    folds = per_fold.groupby(level=["metric", "predictor"]).agg(
        fold_mean="mean", fold_std=lambda x: x.std(ddof=1) if len(x) > 1 else np.nan,
        n_folds="size")
    table = pooled.join(folds).reset_index()
    table["rank"] = 0
    for metric, idx in table.groupby("metric").groups.items():
        asc = _direction(metric) == "lower"
        ranks = table.loc[idx, "mean"].rank(method="min", ascending=asc)
        table.loc[idx, "rank"] = ranks.astype(int)
    table = table.sort_values(["metric", "rank", "predictor"], kind="stable").reset_index(drop=True)
    return Summary(table=table, agreement=rank_agreement(table), notes=list(notes))


def rank_agreement(table: pd.DataFrame) -> pd.DataFrame:
    """Kendall tau (tau-b) between every pair of metrics' rankings, and the pairs that flip.

    A flip is a predictor pair strictly ordered one way under metric A and strictly the other way
    under metric B (better/worse by each metric's own direction); ties are not flips.
    """
    # Orient every metric so that smaller is better, then compare orders.
    score = {}
    for metric, sub in table.groupby("metric", sort=True):
        sign = 1.0 if _direction(metric) == "lower" else -1.0
        score[metric] = pd.Series(sign * sub["mean"].to_numpy(), index=sub["predictor"].to_numpy())
    rows = []
    for ma, mb in itertools.combinations(sorted(score), 2):
        common = sorted(set(score[ma].index) & set(score[mb].index))
        a, b = score[ma].loc[common].to_numpy(), score[mb].loc[common].to_numpy()
        tau = float(kendalltau(a, b).statistic) if len(common) >= 2 else float("nan")
        flips = []
        for i, j in itertools.combinations(range(len(common)), 2):
            if np.sign(a[i] - a[j]) * np.sign(b[i] - b[j]) < 0:
                better_a = common[i] if a[i] < a[j] else common[j]
                other = common[j] if better_a == common[i] else common[i]
                flips.append(f"{better_a} beats {other} under {ma}, reversed under {mb}")
        rows.append({"metric_a": ma, "metric_b": mb, "n_predictors": len(common),
                     "kendall_tau": tau, "n_flips": len(flips), "flips": flips})
    return pd.DataFrame(rows, columns=["metric_a", "metric_b", "n_predictors", "kendall_tau",
                                       "n_flips", "flips"])


def render_markdown(summary: Summary, comparisons: pd.DataFrame | None = None,
                    max_pairs: int = 30) -> str:
    """A readable report: one ranking table (a column per metric), agreement, notes, bootstrap."""
    parts = [ranking_markdown(summary, max_pairs=max_pairs)]
    if comparisons is not None and len(comparisons):
        parts.append(bootstrap_markdown(comparisons, max_pairs=max_pairs))
    return "\n".join(parts)


def ranking_markdown(summary: Summary, max_pairs: int = 30) -> str:
    """The headline (what `drugcell cv` prints): the ranking table and whether the metrics agree."""
    t = summary.table
    metrics = list(dict.fromkeys(t["metric"]))
    first = metrics[0] if metrics else None
    if "mejia" in metrics:
        first = "mejia"
    order = (t[t["metric"] == first].sort_values(["rank", "predictor"])["predictor"].tolist()
             if first else [])
    order += sorted(set(t["predictor"]) - set(order))
    cell = {(r.metric, r.predictor): r for r in t.itertuples(index=False)}
    header = ["predictor"] + [f"{m} wMSE (fold std) [rank]" for m in metrics]
    rows = []
    for p in order:
        row = [p]
        for m in metrics:
            r = cell.get((m, p))
            row.append("" if r is None else
                       f"{fmt_number(r.mean)} ({fmt_number(r.fold_std)}) [{int(r.rank)}]")
        rows.append(row)
    n_c = int(t["n_compounds"].max()) if len(t) else 0
    n_f = int(t["n_folds"].max()) if len(t) else 0
    out = ["## Ranking", "",
           f"Mean per-compound wMSE over {n_c} compounds ({n_f} folds; fold std = std of the "
           f"per-fold means); rank 1 = best; sorted by {first}.", ""]
    if summary.notes:
        out += [f"> **Note:** {n}" for n in summary.notes] + [""]
    out += [md_table(header, rows), ""]
    if len(summary.agreement):
        out += ["## Do the metrics agree?", ""]
        out.append(md_table(
            ["metric A", "metric B", "Kendall tau", "pairs that flip"],
            [[r.metric_a, r.metric_b, fmt_number(r.kendall_tau, 3), str(r.n_flips)]
             for r in summary.agreement.itertuples(index=False)], align=["l", "l", "r", "r"]))
        out.append("")
        for r in summary.agreement.itertuples(index=False):
            for f in r.flips[:max_pairs]:
                out.append(f"- {f}")
            if len(r.flips) > max_pairs:
                out.append(f"- ... {len(r.flips) - max_pairs} more ({r.metric_a} vs {r.metric_b})")
        out.append("")
    return "\n".join(out)


def bootstrap_markdown(comparisons: pd.DataFrame, max_pairs: int = 30) -> str:
    """The paired-bootstrap table: per metric, the pairs led by the best predictors first (sorted by
    A's mean), with the raw and the Holm-corrected p-value (the one the model choice uses)."""
    out = []
    if len(comparisons):
        out += ["## Paired bootstrap over compounds", ""]
        c = comparisons.sort_values(["metric", "mean_a"], kind="stable").head(max_pairs * 4)
        out.append(md_table(
            ["metric", "A", "B", "mean A - B", f"{int(100 * c['ci'].iloc[0])}% CI", "p", "p (Holm)"],
            [[r.metric, r.predictor_a, r.predictor_b, fmt_number(r.diff),
              f"[{fmt_number(r.ci_low)}, {fmt_number(r.ci_high)}]", fmt_p(r.p_value, int(r.n_resamples)),
              f"{getattr(r, 'p_holm', float('nan')):.3g}"]
             for r in c.itertuples(index=False)], align=["l", "l", "l", "r", "r", "r", "r"]))
        out += ["", "p: two-sided percentile bootstrap, 2*min(P*(d<=0), P*(d>=0)), paired over "
                f"compounds, {int(c['n_resamples'].iloc[0])} resamples; p (Holm): corrected over every pair of "
                "the metric, from p floored at 1/resamples.", ""]
    return "\n".join(out)
