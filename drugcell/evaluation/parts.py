"""What a CV run keeps in its staging folder while it works, so an interrupted run can be resumed.

Why: a full-scale run is minutes to hours of fits, and every finished (fold, predictor) result
is worth keeping. Each :class:`~drugcell.evaluation.fold_task.Part` is written as it arrives, as
``parts/<fold>__<predictor>.npz`` (plain arrays, no pickle) and then a small JSON naming it and
its sha256: the JSON is the commit point, so a part is either whole or not there. The run's
settings at its start go to ``.drugcell-cv-run.json`` (:data:`STATE`); ``--resume`` compares them
with its own and refuses a run it would mix with another (:func:`state_differences`). Saved
predictions go straight into their memory-mapped ``predictions/.<name>.npy.tmp`` rows, flushed
before the part is committed, so a resumed run finds them there.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from drugcell.evaluation.fold_task import Part
from drugcell.provenance import atomic_path, sha256_file, write_json

PARTS = "parts"
#: the run's settings when it started (config, data fingerprint, threads, version), for --resume
STATE = ".drugcell-cv-run.json"
#: what must be equal for a run to be resumed: its parts were computed under these
STATE_KEYS = ("config", "data_fingerprint", "threads", "drugcell_version")
_UNC = ("unc_rows", "unc_cols", "unc_err", "unc_std")


def part_stem(fold: int, predictor: str) -> str:
    return f"{int(fold)}__{predictor}"


def finished_parts(stage: Path) -> int:
    """How many parts a staging folder holds (committed ones: their JSON is there)."""
    folder = stage / PARTS
    return sum(1 for _ in folder.glob("*.json")) if folder.is_dir() else 0


def write_part(stage: Path, part: Part, spec: dict[str, Any]) -> None:
    """``part`` as ``parts/<fold>__<name>.npz`` and then its JSON (the commit point)."""
    arrays: dict[str, np.ndarray] = {
        "counter_names": np.array(list(part.counters), dtype=str),
        "counter_values": np.array(list(part.counters.values()), dtype=np.float64),
    }
    for prefix, table in (("scores", part.scores), ("base", part.base), ("fold_terms", part.fold_terms)):
        for metric, values in (table or {}).items():
            arrays[f"{prefix}/{metric}"] = np.asarray(values)
    for name in _UNC:
        value = getattr(part, name)
        if value is not None:
            arrays[name] = np.asarray(value)
    stem = part_stem(part.fold, part.predictor)
    npz = stage / PARTS / f"{stem}.npz"
    with atomic_path(npz) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)
    write_json(stage / PARTS / f"{stem}.json", {"fold": int(part.fold), "predictor": part.predictor, "spec": spec,
                                                "file": npz.name, "sha256": sha256_file(npz)})


def read_part(stage: Path, fold: int, predictor: str, spec: dict[str, Any]) -> Part | None:
    """The committed part of (``fold``, ``predictor``), or None when it is missing, damaged or was
    fitted with another ``spec``."""
    stem = part_stem(fold, predictor)
    meta_path, npz = stage / PARTS / f"{stem}.json", stage / PARTS / f"{stem}.npz"
    try:
        meta = json.loads(meta_path.read_text())
        if (meta.get("fold"), meta.get("predictor"), meta.get("spec")) != (int(fold), predictor, spec):
            return None
        if sha256_file(npz) != meta.get("sha256"):
            return None
        with np.load(npz, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, AttributeError):
        return None
    tables: dict[str, dict[str, np.ndarray]] = {"scores": {}, "base": {}, "fold_terms": {}}
    for key, value in arrays.items():
        prefix, _, metric = key.partition("/")
        if prefix in tables and metric:
            tables[prefix][metric] = value
    counters = dict(zip(arrays["counter_names"].tolist(), arrays["counter_values"].tolist()))
    part = Part(int(fold), predictor, tables["scores"], counters,
                base=tables["base"] or None, fold_terms=tables["fold_terms"] or None)
    for name in _UNC:
        setattr(part, name, arrays.get(name))
    return part


def drop_parts(stage: Path, predictor: str) -> None:
    """Forget every part of ``predictor`` (its saved predictions were lost): they are fitted again."""
    folder = stage / PARTS
    for meta in folder.glob(f"*__{predictor}.json"):
        if meta.stem.split("__", 1)[1] == predictor:
            meta.unlink()


# ----------------------------------------------------------------------------- the run's settings
def write_state(stage: Path, state: dict[str, Any]) -> None:
    write_json(stage / STATE, state)


def read_state(stage: Path) -> dict[str, Any] | None:
    """The settings recorded when the run in ``stage`` started; None when there are none."""
    try:
        obj = json.loads((stage / STATE).read_text())
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def state_differences(recorded: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """What differs between two runs' settings, each named (``cv.seed: 0 when it started, 1 now``)."""
    out: list[str] = []
    for key in STATE_KEYS:
        _diff(key, recorded.get(key), now.get(key), out)
    return out


def _diff(where: str, a: Any, b: Any, out: list[str]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            _diff(f"{where}.{k}" if where != "config" else str(k), a.get(k), b.get(k), out)
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b) and where.endswith("predictors"):
        for i, (x, y) in enumerate(zip(a, b)):
            _diff(f"{where}[{i}]", x, y, out)
    elif a != b:
        out.append(f"{where}: {json.dumps(a)} when it started, {json.dumps(b)} now")


# ----------------------------------------------------------------------------- saved predictions
class PredictionStore:
    """Held-out predictions of the run's predictors, memory-mapped in the staging folder
    (``predictions/.<name>.npy.tmp``) and renamed to ``<name>.npy`` when the run is complete.
    A resumed run maps the files its parts wrote into; a predictor whose file is gone loses its parts."""

    def __init__(self, stage: Path, names: list[str], shape: tuple[int, int], resumed: bool) -> None:
        self.folder = stage / "predictions"
        self.folder.mkdir(exist_ok=True)
        self.maps: dict[str, np.ndarray] = {}
        for name in names:
            path = self.folder / f".{name}.npy.tmp"
            mm = None
            if resumed and path.is_file():
                try:
                    mm = np.lib.format.open_memmap(path, mode="r+")
                except (OSError, ValueError):
                    mm = None
                if mm is not None and (mm.shape != shape or mm.dtype != np.float32):
                    mm = None
            if mm is None:
                if resumed:
                    drop_parts(stage, name)
                mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=shape)
            self.maps[name] = mm

    def put(self, name: str, test_idx: np.ndarray, rows: np.ndarray) -> None:
        """Rows of one part, on disk before the part is committed."""
        mm = self.maps[name]
        mm[test_idx] = rows
        mm.flush()

    def finish(self) -> None:
        for name, mm in list(self.maps.items()):
            mm.flush()
            tmp_path = Path(mm.filename)
            del self.maps[name], mm
            tmp_path.replace(self.folder / f"{name}.npy")
