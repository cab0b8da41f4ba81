"""Which predictor to submit: the simplest one that no other beats significantly.

Why not the lowest mean: with 15+ predictors the lowest CV mean is often a tie that the paired
bootstrap cannot resolve, and the more complex model then costs more to run and generalises no
better. The rule reads the bootstrap table with Holm-corrected p-values (all pairs of one metric
are one family), keeps every predictor that no other beats at ``alpha``, and among those takes the
simplest (the ``simplicity`` rank declared on each predictor class), breaking ties in rank by the
lower mean. ``rule="lowest"`` keeps the old rule (lowest mean, no statistics).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

import pandas as pd

from drugcell.errors import DrugcellInputError
from drugcell.reporting import fmt_number

RULES = ("simplest", "lowest")
DEFAULT_ALPHA = 0.05


@dataclass
class Choice:
    """The chosen predictor under one metric, and why."""

    metric: str
    rule: str
    predictor: str
    lowest: str                     # the lowest mean, for comparison
    reason: str
    alpha: float = DEFAULT_ALPHA
    unbeaten: list[str] = field(default_factory=list)   # not beaten significantly by any other
    beaten_by: dict[str, str] = field(default_factory=dict)  # loser -> one significant winner

    def as_dict(self) -> dict:
        return asdict(self)


def _means(scores: pd.DataFrame, metric: str) -> pd.Series:
    sub = scores[scores["metric"] == metric]
    if sub.empty:
        known = ", ".join(sorted(map(str, scores["metric"].unique())))
        raise DrugcellInputError(f"no scores for metric {metric!r}; the run has: {known}")
    return sub.groupby("predictor", observed=True)["wmse"].mean().sort_values(kind="stable")


def choose(scores: pd.DataFrame, comparisons: pd.DataFrame | None, metric: str,
           simplicity: Mapping[str, int], *, rule: str = "simplest", alpha: float = DEFAULT_ALPHA) -> Choice:
    """Apply ``rule`` to a run's per-compound ``scores`` and its bootstrap ``comparisons``.

    ``simplicity`` maps each predictor name to its rank (lower is simpler; unknown names rank last).
    Lower wMSE is better.
    """
    if rule not in RULES:
        raise DrugcellInputError(f"unknown selection rule {rule!r}; choose one of {', '.join(RULES)}")
    means = _means(scores, metric)
    lowest = str(means.index[0])
    if rule == "lowest" or len(means) == 1:
        return Choice(metric, rule, lowest, lowest, alpha=alpha, unbeaten=[lowest],
                      reason=f"{lowest} has the lowest mean wMSE under {metric} ({fmt_number(means.iloc[0])}); "
                             "rule 'lowest' ignores whether the lead is significant.")
    if comparisons is None or "p_holm" not in comparisons.columns:
        raise DrugcellInputError("rule 'simplest' needs the bootstrap table with Holm p-values "
                                 "(comparisons.parquet from this version); re-run `drugcell cv`, or pass --select lowest")
    comp = comparisons[comparisons["metric"] == metric]
    if comp.empty:
        raise DrugcellInputError(f"the bootstrap table has no pairs under metric {metric!r}; re-run `drugcell cv` "
                                 "with that metric, or pass --select lowest")
    n_res = int(comp["n_resamples"].iloc[0]) if "n_resamples" in comp.columns and len(comp) else 0
    if n_res and len(comp) / n_res >= alpha:
        # Holm over m pairs cannot go below m / B: no difference could ever be significant, and
        # "the simplest unbeaten" would always be the simplest predictor (control). Say so, take the lowest.
        return Choice(metric, "lowest", lowest, lowest, alpha=alpha, unbeaten=[str(p) for p in means.index],
                      reason=f"{lowest} has the lowest mean wMSE under {metric} ({fmt_number(means.iloc[0])}). The "
                             f"rule 'simplest' was not applied: with {len(comp)} pairs and {n_res} bootstrap resamples "
                             f"the smallest Holm-corrected p is {len(comp) / n_res:.3g} >= {alpha:g}, so no difference "
                             "could be significant; raise cv.bootstrap_resamples (10,000 is the default).")
    beaten_by: dict[str, str] = {}
    for r in comp.itertuples(index=False):
        if r.p_holm < alpha and r.diff != 0:
            winner, loser = (r.predictor_a, r.predictor_b) if r.diff < 0 else (r.predictor_b, r.predictor_a)
            beaten_by.setdefault(str(loser), str(winner))
    unbeaten = [str(p) for p in means.index if p not in beaten_by]
    rank = {p: (simplicity.get(p, 10**6), float(means[p])) for p in unbeaten}
    chosen = min(unbeaten, key=rank.__getitem__)
    reason = (f"{chosen} ({fmt_number(means[chosen])}) is the simplest of the {len(unbeaten)} predictor(s) that "
              f"no other beats significantly under {metric} (paired bootstrap, Holm-corrected p < {alpha:g}): "
              f"{', '.join(unbeaten)}.")
    if chosen != lowest:
        row = comp[((comp.predictor_a == lowest) & (comp.predictor_b == chosen))
                   | ((comp.predictor_a == chosen) & (comp.predictor_b == lowest))]
        p = float(row["p_holm"].iloc[0]) if len(row) else float("nan")
        reason += (f" The lowest mean, {lowest} ({fmt_number(means[lowest])}), is not significantly better "
                   f"(Holm p = {p:.3g}).")
    return Choice(metric, rule, chosen, lowest, reason, alpha, unbeaten, beaten_by)
