"""Reading a `drugcell cv` run folder for the report, without ever changing it.

Why a reader of its own: the page must show what it can of any run, older ones included, so every
table is optional here. A missing or damaged file becomes a ``problems`` entry (the section shows it
as a note) instead of an exception; only a folder that is not a `drugcell cv` run is refused.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from drugcell.defaults import COMPOUND_COL
from drugcell.errors import DrugcellInputError
from drugcell.provenance import read_json_object

#: The tables the report reads, and the columns each one must have to be used.
TABLES: dict[str, tuple[str, ...]] = {
    "summary": ("metric", "predictor", "mean", "rank"),
    "scores": ("predictor", COMPOUND_COL, "metric", "wmse"),
    "comparisons": ("metric", "predictor_a", "predictor_b", "mean_a", "mean_b", "diff", "ci_low", "ci_high"),
    "agreement": ("metric_a", "metric_b", "kendall_tau"),
    "leaderboard_estimate": ("predictor", "metric", "estimate", "ci_low", "ci_high", "cv_mean", "floor"),
}
RUN_COMMAND = "drugcell cv"


@dataclass
class Run:
    """What the report found in a run folder; a table or JSON file it could not use is None."""

    path: Path
    manifest: dict[str, Any]
    tables: dict[str, pd.DataFrame | None] = field(default_factory=dict)
    choice: dict[str, Any] | None = None
    audit: dict[str, Any] | None = None
    problems: dict[str, str] = field(default_factory=dict)  # file name -> why it is not shown

    def table(self, name: str) -> pd.DataFrame | None:
        return self.tables.get(name)

    def missing(self, name: str) -> str:
        """Why ``name`` (a file name) is not in the page, for a section's note."""
        return self.problems.get(name, f"{name} is missing from this run")

    @property
    def config(self) -> dict[str, Any]:
        cfg = self.manifest.get("config")
        return cfg if isinstance(cfg, dict) else {}

    @property
    def metrics(self) -> list[str]:
        """The run's metrics in its own order (the first is the headline metric)."""
        cv = self.config.get("cv", {})
        listed = cv.get("metrics") if isinstance(cv, dict) else None
        if isinstance(listed, list) and listed:
            return [str(m) for m in listed]
        if self.choice:
            return list(self.choice)
        summary = self.table("summary")
        return list(dict.fromkeys(summary["metric"].astype(str))) if summary is not None else []

    @property
    def headline_metric(self) -> str | None:
        return self.metrics[0] if self.metrics else None

    def predictors(self) -> list[str]:
        """Predictor names as the config lists them (else as the summary has them)."""
        listed = self.config.get("predictors")
        if isinstance(listed, list):
            names = [str(p.get("name")) for p in listed if isinstance(p, dict) and p.get("name")]
            if names:
                return names
        summary = self.table("summary")
        return list(dict.fromkeys(summary["predictor"].astype(str))) if summary is not None else []

    @property
    def reference(self) -> str | None:
        """The structure-free reference: the estimate's ``reference`` column, else wmean, else mean."""
        est = self.table("leaderboard_estimate")
        if est is not None and "reference" in est.columns and len(est):
            ref = str(est["reference"].iloc[0])
            if ref and ref != "None":
                return ref
        names = self.predictors()
        return next((r for r in ("wmean", "mean") if r in names), None)

    def chosen(self, metric: str | None) -> dict[str, Any] | None:
        """The choice.json entry of ``metric`` (None when the run has none)."""
        if not self.choice or metric is None:
            return None
        entry = self.choice.get(metric)
        return entry if isinstance(entry, dict) and entry.get("predictor") else None

    def no_plates_reason(self) -> str:
        """Why the run's estimate has no plate term, as summary.md says it (empty when not said)."""
        try:
            text = (self.path / "summary.md").read_text(errors="replace")
        except OSError:
            return ""
        m = re.search(r"No usable plate information \((.+?)\): the estimate", text)
        return m.group(1) if m else ""


def _check_is_run(path: Path) -> dict[str, Any]:
    if not path.is_dir():
        raise DrugcellInputError(f"{path} is not a folder; pass the run folder that `drugcell cv --out` wrote.")
    manifest_path = path / "manifest.json"
    if not manifest_path.is_file():
        raise DrugcellInputError(f"{path} is not a `drugcell cv` run: it has no manifest.json; pass the folder "
                                 "that `drugcell cv --out` wrote.")
    manifest = read_json_object(manifest_path, what="`drugcell cv` run manifest",
                                fix="pass the folder that `drugcell cv --out` wrote, or rerun `drugcell cv`")
    if manifest.get("command") != RUN_COMMAND:
        raise DrugcellInputError(f"{path} is not a `drugcell cv` run: its manifest.json says command "
                                 f"{manifest.get('command')!r}; pass the folder that `drugcell cv --out` wrote.")
    return manifest


def _read_table(path: Path, columns: tuple[str, ...]) -> tuple[pd.DataFrame | None, str]:
    """The table, or None and why (missing, unreadable, or lacking a column the report needs)."""
    if not path.is_file():
        return None, f"{path.name} is missing from this run"
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for a damaged file
        return None, f"{path.name} could not be read ({type(exc).__name__}: {exc}); rerun `drugcell cv`"
    lacking = [c for c in columns if c not in frame.columns]
    if lacking:
        return None, (f"{path.name} lacks column(s) {', '.join(lacking)} (written by an older drugcell?); "
                      "rerun `drugcell cv` for this part of the report")
    return frame, ""


def _read_json(path: Path) -> tuple[dict[str, Any] | None, str]:
    if not path.is_file():
        return None, f"{path.name} is missing from this run"
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        return None, f"{path.name} could not be read ({exc}); rerun `drugcell cv`"
    if not isinstance(obj, dict):
        return None, f"{path.name} is not a JSON object; rerun `drugcell cv`"
    return obj, ""


def read_run(run_dir: str | Path) -> Run:
    """Read a run folder for the report; refuse a folder that is not a `drugcell cv` run.

    Only reads: the run's files are opened read-only and nothing is written into the folder.
    """
    path = Path(run_dir)
    run = Run(path=path, manifest=_check_is_run(path))
    for name, columns in TABLES.items():
        frame, why = _read_table(path / f"{name}.parquet", columns)
        run.tables[name] = frame
        if why:
            run.problems[f"{name}.parquet"] = why
    run.choice, why = _read_json(path / "choice.json")
    if why:
        run.problems["choice.json"] = why
    run.audit, why = _read_json(path / "audit.json")
    if why:
        run.problems["audit.json"] = why
    return run
