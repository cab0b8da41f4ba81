"""What was chosen and how the run was made: the model choice with its rule and reason
(choice.json) at the top of the page, and the provenance (manifest.json: config, seed, data
fingerprint, version, git commit, command, timings) at the bottom.

Why together: both answer "can I trust and reproduce this page's conclusion?", from the run's own
records, never recomputed.
"""

from __future__ import annotations

import json
from typing import Any

from drugcell.report.html import Section, esc, key_values, note, table
from drugcell.report.run import Run
from drugcell.reporting import fmt_number


def _mean(run: Run, metric: str, predictor: str) -> float | None:
    summary = run.table("summary")
    if summary is None:
        return None
    hit = summary[(summary["metric"].astype(str) == metric) & (summary["predictor"].astype(str) == predictor)]
    return float(hit["mean"].iloc[0]) if len(hit) else None


def _estimate_line(run: Run, metric: str, predictor: str) -> str:
    est = run.table("leaderboard_estimate")
    if est is None:
        return ""
    hit = est[(est["metric"].astype(str) == metric) & (est["predictor"].astype(str) == predictor)]
    if hit.empty:
        return ""
    r = hit.iloc[0]
    return (f"Leaderboard estimate: {fmt_number(r['estimate'])} "
            f"[{fmt_number(r['ci_low'])}, {fmt_number(r['ci_high'])}] (95% interval).")


def choice_section(run: Run) -> Section:
    """The chosen predictor under the headline metric, the rule and the reason; the other metrics' choices."""
    sec = Section("choice", "Chosen predictor", "")
    metric = run.headline_metric
    first = run.chosen(metric)
    if first is None:
        sec.body = note(f"No model choice to show: {run.missing('choice.json')} (runs before the choice rule "
                        "have none; `drugcell submit --from-run` recomputes it).")
        return sec
    name = str(first["predictor"])
    mean = _mean(run, metric, name)
    head = (f'<p class="choice"><strong>{esc(name)}</strong> under {esc(metric)}'
            + (f": mean wMSE {esc(fmt_number(mean))} (log2(CPM+1))" if mean is not None else "")
            + f" &middot; rule '{esc(first.get('rule', '?'))}', alpha {esc(first.get('alpha', '?'))}</p>")
    parts = [head, f"<p>{esc(first.get('reason', ''))} {esc(_estimate_line(run, metric, name))}</p>"]
    rows = []
    for m, c in (run.choice or {}).items():
        if not isinstance(c, dict):
            continue
        rows.append([m, str(c.get("predictor", "")), str(c.get("rule", "")), str(c.get("lowest", "")),
                     ", ".join(map(str, c.get("unbeaten", []) or [])), str(c.get("reason", ""))])
    parts.append(table(["metric", "chosen", "rule", "lowest mean", "not beaten significantly", "reason"], rows,
                       numeric_from=99))
    sec.body = "\n".join(parts)
    return sec


def _stages(manifest: dict[str, Any]) -> str:
    stages = manifest.get("stages_s")
    if not isinstance(stages, dict) or not stages:
        return ""
    rows = [[str(k), fmt_number(float(v), 2)] for k, v in sorted(stages.items(), key=lambda kv: -float(kv[1]))
            if isinstance(v, (int, float))]
    return table(["stage", "seconds"], rows, caption="Where the run spent its time (wall seconds per stage)")


def provenance_section(run: Run) -> Section:
    """manifest.json as a table, the stage timings and the full config."""
    m = run.manifest
    info = m.get("data_info") if isinstance(m.get("data_info"), dict) else {}
    size = (f"{fmt_number(m.get('n_compounds'), missing='?')} compounds x {fmt_number(m.get('n_genes'), missing='?')} "
            "genes" if "n_compounds" in m else "")
    pairs = [
        ("run folder", str(run.path)), ("command", m.get("command", "")),
        ("drugcell version", m.get("drugcell_version", "")), ("git commit", m.get("git_commit") or "unknown"),
        ("created (UTC)", m.get("created_utc", "")), ("seed", m.get("seed", "")),
        ("data fingerprint", m.get("data_fingerprint", "")), ("data", size),
        ("data (cache or source)", info.get("path") or info.get("source") or ""),
        ("config file", run.config.get("source", "")),
        ("run time", f"{fmt_number(m.get('elapsed_s'), 1)} s" if isinstance(m.get("elapsed_s"), (int, float)) else ""),
        ("python / platform", f"{m.get('python', '')} / {m.get('platform', '')}"),
    ]
    config = json.dumps(run.config, indent=2, sort_keys=True, default=str)
    sec = Section("provenance", "Provenance", "\n".join([
        key_values([(k, v) for k, v in pairs if v not in ("", None)]), _stages(m),
        f"<details><summary>The run's config (manifest.json)</summary><pre>{esc(config)}</pre></details>",
    ]))
    return sec
