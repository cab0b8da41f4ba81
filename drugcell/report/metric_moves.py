"""How the ranking moves between metrics: a rank heatmap (predictors x metrics, labelled colour bar)
and the Kendall tau of every pair of metric rankings from agreement.parquet, with the pairs that flip.

Why it is on the page: the metric decides the ranking in this field; a reader must see whether the
chosen predictor stays on top under the proxy and variance weightings.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from drugcell.report.html import Section, caption, esc, note, table
from drugcell.report.plotting import figure_html, new_figure, tick_label
from drugcell.report.run import Run
from drugcell.reporting import fmt_number

MAX_FLIPS_SHOWN = 20


def rank_matrix(summary: pd.DataFrame, metrics: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(ranks, means): predictor x metric tables, rows sorted by the first metric's rank."""
    sub = summary[summary["metric"].astype(str).isin(metrics)].assign(
        metric=lambda f: f["metric"].astype(str), predictor=lambda f: f["predictor"].astype(str))
    ranks = sub.pivot(index="predictor", columns="metric", values="rank").reindex(columns=metrics)
    means = sub.pivot(index="predictor", columns="metric", values="mean").reindex(columns=metrics)
    order = ranks.sort_values([metrics[0]], kind="stable").index
    return ranks.loc[order], means.loc[order]


def _tau_title(agreement: pd.DataFrame | None, first: str) -> str:
    if agreement is None or agreement.empty:
        return "rank under each metric"
    pairs = agreement[(agreement["metric_a"] == first) | (agreement["metric_b"] == first)]
    bits = [f"{r.metric_a}-{r.metric_b} {r.kendall_tau:+.2f}" for r in pairs.itertuples(index=False)]
    return "Kendall tau " + ", ".join(bits) if bits else "rank under each metric"


def _plot(ranks: pd.DataFrame, means: pd.DataFrame, chosen: str | None, reference: str | None, title: str) -> str:
    n_p, n_m = ranks.shape
    fig = new_figure(2.2 + 1.6 * n_m, 1.2 + 0.36 * n_p)
    ax = fig.subplots()
    values = ranks.to_numpy(dtype=float)
    im = ax.imshow(values, cmap="viridis_r", aspect="auto", vmin=1, vmax=max(n_p, 2))
    for i in range(n_p):
        for j in range(n_m):
            if np.isfinite(values[i, j]):
                dark = values[i, j] > (n_p + 1) / 2
                ax.text(j, i, f"{int(values[i, j])}  ({means.iat[i, j]:.3f})", ha="center", va="center",
                        fontsize=8, color="white" if dark else "black")
    ax.set_xticks(range(n_m), list(ranks.columns))
    ax.set_yticks(range(n_p), [tick_label(p, chosen, reference) for p in ranks.index])
    ax.set_xlabel("metric (cell: rank, and in brackets mean wMSE of log2(CPM+1))")
    ax.set_title(title, fontsize=10)
    bar = fig.colorbar(im, ax=ax, fraction=0.05, pad=0.02)
    bar.set_label("rank under the metric (1 = lowest mean wMSE)")
    fig.tight_layout()
    return figure_html(fig, "rank of every predictor under every metric")


def _agreement_html(agreement: pd.DataFrame) -> str:
    rows = [[r.metric_a, r.metric_b, fmt_number(getattr(r, "n_predictors", None), missing=""),
             fmt_number(r.kendall_tau, 3), fmt_number(getattr(r, "n_flips", None), missing="")]
            for r in agreement.itertuples(index=False)]
    out = [table(["metric A", "metric B", "predictors", "Kendall tau", "pairs that flip"], rows, numeric_from=2)]
    if "flips" in agreement.columns:
        for r in agreement.itertuples(index=False):
            flips = [str(f) for f in (r.flips if r.flips is not None else [])]
            if not flips:
                continue
            items = "".join(f"<li>{esc(f)}</li>" for f in flips[:MAX_FLIPS_SHOWN])
            more = f"<li>... {len(flips) - MAX_FLIPS_SHOWN} more</li>" if len(flips) > MAX_FLIPS_SHOWN else ""
            out.append(f"<details><summary>{len(flips)} pair(s) flip between {esc(r.metric_a)} and "
                       f"{esc(r.metric_b)}</summary><ul>{items}{more}</ul></details>")
    return "\n".join(out)


def metric_moves_section(run: Run) -> Section:
    """The rank heatmap across metrics and the Kendall tau table."""
    sec = Section("metrics", "How the ranking moves between metrics", "")
    summary, agreement = run.table("summary"), run.table("agreement")
    if summary is None:
        sec.body = note(f"No ranks to compare: {run.missing('summary.parquet')}.")
        return sec
    metrics = [m for m in run.metrics if m in set(summary["metric"].astype(str))]
    if len(metrics) < 2:
        sec.body = note(f"This run scored one metric ({', '.join(metrics) or 'none'}), so there is no move to show; "
                        "run `drugcell cv --metric all` to rank under mejia, proxy and variance.")
        return sec
    chosen = (run.chosen(metrics[0]) or {}).get("predictor")
    ranks, means = rank_matrix(summary, metrics)
    parts = [_plot(ranks, means, chosen, run.reference, _tau_title(agreement, metrics[0])),
             caption(f"Rows sorted by the rank under {metrics[0]}; colour and number: the rank under each metric "
                     "(from summary.parquet). Kendall tau (tau-b) between two metrics' rankings: 1 = same order, "
                     "-1 = reversed (agreement.parquet).")]
    parts.append(_agreement_html(agreement) if agreement is not None
                 else note(f"No Kendall tau table: {run.missing('agreement.parquet')}."))
    sec.body = "\n".join(parts)
    return sec
