"""Figures for the report page: a matplotlib figure without pyplot, embedded as an inline PNG.

Why apart: every figure of the page shares the same units, the same colours for the chosen and the
reference predictor, and the same way into the page (a base64 ``data:`` URI, so the HTML file needs
nothing from the network or the disk).
"""

from __future__ import annotations

import base64
import io

from drugcell.report.html import esc

#: The unit of every metric value on the page: the contest scores log2(CPM+1) profiles.
UNIT = "log2(CPM+1)"
#: Colours shared by all figures.
CHOSEN_COLOUR = "#d62728"
REFERENCE_COLOUR = "#7f7f7f"
OTHER_COLOUR = "#1f77b4"
DPI = 100


def wmse_label(metric: str, what: str = "mean over compounds") -> str:
    """An axis label that carries the unit: e.g. ``mejia wMSE of log2(CPM+1), mean over compounds``."""
    return f"{metric} wMSE of {UNIT}, {what}"


def new_figure(width: float, height: float):
    """A matplotlib Figure on the Agg canvas (no pyplot state, nothing shown or cached)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def figure_html(fig, alt: str, caption: str = "") -> str:
    """The figure as an ``<img>`` with an inline base64 PNG, in a ``<figure>`` with its caption."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="data:image/png;base64,{data}" alt="{esc(alt)}">{cap}</figure>'


def predictor_colour(name: str, chosen: str | None, reference: str | None) -> str:
    """Red for the chosen predictor, grey for the reference, blue for the rest."""
    if name == chosen:
        return CHOSEN_COLOUR
    return REFERENCE_COLOUR if name == reference else OTHER_COLOUR


def tick_label(name: str, chosen: str | None, reference: str | None) -> str:
    """A predictor's axis label, marked when it is the chosen predictor or the reference."""
    marks = [m for m, hit in (("chosen", name == chosen), ("reference", name == reference)) if hit]
    return f"{name} ({', '.join(marks)})" if marks else name
