"""The `drugcell tune` run folder: its rules, ``tuned.toml`` and the files, written in one piece.

Why its own module: the folder follows `drugcell cv`'s rules (a new or empty folder, or an earlier
`drugcell tune` run replaced only with ``--overwrite``; anything else is never written into), and
``tuned.toml`` must be a run config that `cv`, `fit` and `submit` read back exactly, which needs a
small TOML writer (the standard library only reads TOML). Files::

    best_params.parquet   fold, params (JSON), param_<p>..., inner_score, outer_score, n_train, n_test
    trials.parquet        fold (-1: the final search on every compound), trial, trial_id, status,
                          inner_folds_done, inner_score, seconds, param_<p>...
    nested_score.json     the nested outer score (mean +- sd over folds, pooled), the mean inner best,
                          the gap between them, the final search's params
    tuned.toml            [cv] ... and [[predictors]]: wmean (the reference) and the tuned predictor
    manifest.json         provenance (search space, seed, data fingerprint, version), the files
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from pathlib import Path
from typing import Any

import pandas as pd

from drugcell.config import config_from_dict
from drugcell.errors import DrugcellInputError
from drugcell.outputs import check_out_location
from drugcell.provenance import atomic_dir, provenance, strict_json, write_json, write_text

COMMAND = "drugcell tune"
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def check_tune_dir(out: Path, overwrite: bool) -> None:
    """Raise when drugcell must not write the run to ``out``: a file, a non-empty folder that is
    not a `drugcell tune` run (even with ``overwrite``), or an earlier run without ``overwrite``."""
    check_out_location(out)
    if out.exists() and not out.is_dir():
        raise DrugcellInputError(f"--out {out} is a file; choose a folder for the tuning run")
    if out.exists() and any(out.iterdir()):
        try:
            command = json.loads((out / "manifest.json").read_text()).get("command")
        except (OSError, ValueError, AttributeError):
            command = None
        if command != COMMAND:
            raise DrugcellInputError(f"--out {out} is not empty and is not a `{COMMAND}` run; drugcell never "
                                     "writes into it (even with --overwrite): choose another folder")
        if not overwrite:
            raise DrugcellInputError(f"--out {out} already holds a `{COMMAND}` run; pass --overwrite to replace it "
                                     "(the whole folder is replaced, so it never mixes two runs)")


def toml_value(v: Any) -> str:
    """One TOML value (inline arrays and tables); refuses what TOML cannot hold (None, NaN, inf)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ValueError(f"TOML cannot hold {v!r}")
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # JSON's escapes (\", \\, \n, \uXXXX) are TOML basic-string escapes
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{toml_key(k)} = {toml_value(x)}" for k, x in v.items()) + "}"
    raise ValueError(f"TOML cannot hold {v!r} ({type(v).__name__})")


def toml_key(k: str) -> str:
    return k if _BARE_KEY.match(k) else json.dumps(k)


def tuned_config(spec, params: dict[str, Any]) -> dict[str, Any]:
    """The run config of ``tuned.toml``: the search's [cv]/[output]/[estimate], then wmean (the bar
    every chemistry model must clear, and the leaderboard estimate's reference) and the tuned predictor."""
    raw = spec.run.to_dict()
    raw.pop("source", None)
    tuned = {"name": spec.name, "kind": spec.kind, **params}
    raw["predictors"] = [tuned] if spec.kind == "wmean" or spec.name == "wmean" else [
        {"name": "wmean", "kind": "wmean"}, tuned]
    return raw


def tuned_toml(raw: dict[str, Any], header: list[str]) -> str:
    """``raw`` (a run config dict) as TOML, checked to read back as the same config."""
    lines = [f"# {h}" for h in header] + [""]
    for section in ("cv", "output", "estimate"):
        lines.append(f"[{section}]")
        lines += [f"{toml_key(k)} = {toml_value(v)}" for k, v in raw[section].items()]
        lines.append("")
    for entry in raw["predictors"]:
        lines.append("[[predictors]]")
        lines += [f"{toml_key(k)} = {toml_value(v)}" for k, v in entry.items()]
        lines.append("")
    text = "\n".join(lines)
    back = config_from_dict(tomllib.loads(text)).to_dict()
    want = config_from_dict(raw).to_dict()
    if back != want:  # a writer bug must never hand the user a config that means something else
        raise RuntimeError(f"tuned.toml does not read back as written: {back} != {want}")
    return text


def write_run(out: Path, *, best: pd.DataFrame, trials: pd.DataFrame, nested: dict[str, Any],
              toml_text: str, manifest: dict[str, Any], overwrite: bool) -> list[str]:
    """Write every file into a temporary sibling folder that replaces ``out`` only when complete."""
    check_tune_dir(out, overwrite)  # again: the folder may have changed during the search
    files = ["best_params.parquet", "trials.parquet", "nested_score.json", "tuned.toml", "manifest.json"]
    with atomic_dir(out) as tmp:
        best.to_parquet(tmp / "best_params.parquet", index=False)
        trials.to_parquet(tmp / "trials.parquet", index=False)
        write_json(tmp / "nested_score.json", nested)
        write_text(tmp / "tuned.toml", toml_text)
        write_json(tmp / "manifest.json", provenance(command=COMMAND, files=files, **manifest))
    return files


def params_json(params: dict[str, Any]) -> str:
    """One params dict as a strict JSON string (a parquet cell)."""
    return strict_json(params, sort_keys=True)
