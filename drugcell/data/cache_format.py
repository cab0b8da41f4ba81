"""The ExpressionSet cache folder on disk: its manifest, format versions, checksums and the rule for
what may be replaced. Kept apart from the dataclass so each reads plainly (layout: docs/architecture.md).

Why checksums: a cache edited or damaged after it was written (a truncated array, a NaN typed in,
compound rows shuffled) must be refused naming the file, never silently scored. Version 4 records
the sha256 of every file in ``manifest.json`` at save and :func:`verify_checksums` checks them on
every load, memory-mapped or not: the load's value check reads every byte of the big arrays anyway,
and sha256 runs at ~1.1 GB/s on the project's 2-core box (0.6 s per 730 MB array; the files are
hashed in parallel threads): ~1 s of CPU for a full-scale cache, whose two arrays take ~3 s to
read. Older versions carry no checksums; they are read as before and guarded by the recomputed
data fingerprint.

Version 5 records the value scale (``value_scale``: :data:`drugcell.defaults.VALUE_SCALES`). The
manifest field is outside the checksummed files, so a signed scale is also folded into the data
fingerprint (an edited field is refused). A cache holding the default ``log2cpm`` is still written
as version 4 (older drugcells read it as before); one holding another scale is written as version 5,
so an older drugcell refuses it instead of clipping its predictions at 0.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from drugcell.defaults import LOG2CPM, VALUE_SCALES
from drugcell.errors import DrugcellInputError
from drugcell.outputs import check_out_location
from drugcell.provenance import sha256_file

#: what ``manifest.json`` says a cache is, and the newest layout this code reads and writes
FORMAT = "drugcell.expression_set"
FORMAT_VERSION = 5
#: the version a cache of the default scale is written as (its layout is version 4's)
DEFAULT_SCALE_VERSION = 4
MANIFEST = "manifest.json"
KIND = "drugcell.ExpressionSet"  # the version-1 manifest's only mark (still written, for older readers)
ARRAYS = ("expression", "weights", "control", "control_expression", "control_weights")
COMPOUNDS, GENES, CONTROLS, PLATES = "compounds.parquet", "genes.parquet", "controls.parquet", "plates.npz"
#: every file a cache may hold besides the manifest (plates.npz is optional)
FILES = (*(f"{a}.npy" for a in ARRAYS), COMPOUNDS, GENES, CONTROLS, PLATES)
REBUILD = "re-run `drugcell load` (or `drugcell synth`) to rebuild it"


def _sha256_all(paths: list[Path]) -> list[str]:
    """sha256 of several files, hashed in parallel threads (hashlib releases the GIL): the two big
    arrays take the time of one on two cores."""
    with ThreadPoolExecutor(max_workers=max(1, min(len(paths), os.cpu_count() or 1))) as pool:
        return list(pool.map(sha256_file, paths))


def file_checksums(root: Path) -> dict[str, str]:
    """sha256 of every cache file present in ``root`` (written into the manifest at save)."""
    names = [name for name in FILES if (root / name).is_file()]
    return dict(zip(names, _sha256_all([root / n for n in names]), strict=True))


def verify_checksums(root: Path, manifest: dict[str, Any], version: int) -> None:
    """Every file the manifest lists must be present and hash to its recorded sha256; a version-4
    cache must list the files it holds. Older versions have no checksums and pass unchecked."""
    sums = manifest.get("checksums")
    if sums is None and version < 4:
        return
    if not isinstance(sums, dict) or not all(isinstance(v, str) for v in sums.values()):
        raise DrugcellInputError(f"ExpressionSet cache {root}: {root / MANIFEST} has no valid `checksums` (format "
                                 f"version {version} records them); the manifest is damaged; {REBUILD}")
    unknown = sorted(set(sums) - set(FILES))
    if unknown:
        raise DrugcellInputError(f"ExpressionSet cache {root}: {root / MANIFEST} lists unknown file(s) {unknown}; "
                                 f"the manifest is damaged or was edited; {REBUILD}")
    unlisted = [n for n in FILES if n not in sums and (root / n).is_file()]
    if unlisted:
        raise DrugcellInputError(f"ExpressionSet cache {root}: {root / unlisted[0]} was not written with this cache "
                                 f"(no checksum in {MANIFEST}); the cache was modified; {REBUILD}")
    names = [name for name in FILES if name in sums]
    for name in names:
        if not (root / name).is_file():
            raise DrugcellInputError(f"ExpressionSet cache {root} is incomplete: {root / name} is missing; {REBUILD}")
    for name, digest in zip(names, _sha256_all([root / n for n in names]), strict=True):
        path = root / name
        if digest != sums[name]:
            raise DrugcellInputError(
                f"ExpressionSet cache file {path} is damaged or was modified: it does not match the sha256 recorded "
                f"in {MANIFEST} when the cache was written; {REBUILD}")


def version_for(value_scale: str) -> int:
    """The format version a cache holding ``value_scale`` is written as (see the module docstring)."""
    return DEFAULT_SCALE_VERSION if value_scale == LOG2CPM else FORMAT_VERSION


def manifest_scale(root: Path, manifest: dict[str, Any], version: int) -> str:
    """The value scale a cache holds: the manifest's ``value_scale`` (version 5 must record one; an
    older cache holds log2cpm, the only scale there was)."""
    scale = manifest.get("value_scale")
    if scale is None and version < FORMAT_VERSION:
        return LOG2CPM
    if scale not in VALUE_SCALES:
        raise DrugcellInputError(f"ExpressionSet cache {root}: {root / MANIFEST} records value_scale {scale!r}, not one "
                                 f"of {', '.join(VALUE_SCALES)}; the manifest is damaged or was edited; {REBUILD}")
    if scale != LOG2CPM and version < FORMAT_VERSION:
        raise DrugcellInputError(f"ExpressionSet cache {root}: format version {version} holds log2cpm only, but "
                                 f"{root / MANIFEST} records value_scale {scale!r}; the manifest was edited; {REBUILD}")
    return scale


def check_replaceable(path: Path, overwrite: bool) -> None:
    """Refuse to write a cache over a file, over a folder drugcell did not write as a cache (a run,
    a model, the user's files: never, even with ``overwrite``), or over a cache without ``overwrite``."""
    check_out_location(path)
    if not path.exists():
        return
    if not path.is_dir():
        raise DrugcellInputError(f"{path} exists and is a file; choose another folder for the ExpressionSet cache")
    if not any(path.iterdir()):
        return
    try:
        read_manifest(path)
    except DrugcellInputError:
        raise DrugcellInputError(
            f"{path} is not empty and is not an ExpressionSet cache; drugcell never replaces it (even with "
            "--overwrite): choose another folder") from None
    if not overwrite:
        raise DrugcellInputError(f"{path} already holds an ExpressionSet cache; pass --overwrite to replace it")


def read_file(path: Path, reader, columns: tuple[str, ...] = ()):
    """One cache file; a truncated or damaged file, or a missing column, is a clear error naming it."""
    try:
        out = reader(path)
    except Exception as exc:  # numpy/pyarrow raise many types (ValueError, EOFError, ArrowInvalid, OSError)
        raise DrugcellInputError(f"ExpressionSet cache file {path} is damaged ({type(exc).__name__}: {exc}); "
                                 f"{REBUILD}") from None
    lacking = [c for c in columns if c not in out.columns]
    if lacking:
        raise DrugcellInputError(f"ExpressionSet cache file {path} lacks column(s) {', '.join(lacking)}; {REBUILD}")
    return out


def read_manifest(root: Path) -> tuple[dict[str, Any], int]:
    """The cache's manifest and its format version; anything this code cannot read is refused
    with a message that names the folder and says what to do."""
    manifest_path = root / MANIFEST
    if not manifest_path.exists():
        raise DrugcellInputError(
            f"{root} is not an ExpressionSet cache (no {MANIFEST}); create one with `drugcell load` or `drugcell synth`"
        )
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DrugcellInputError(f"ExpressionSet cache {root}: cannot read {manifest_path} ({exc}); {REBUILD}") from exc
    if not isinstance(manifest, dict):
        raise DrugcellInputError(f"ExpressionSet cache {root}: {manifest_path} is not a JSON object; {REBUILD}")
    fmt, version = manifest.get("format"), manifest.get("format_version")
    if fmt is None and version is None:  # version 1: written before the fields existed
        if manifest.get("kind") != KIND:
            raise DrugcellInputError(
                f"{root} is not an ExpressionSet cache: {manifest_path} has no format {FORMAT!r} (nor the version-1 "
                f"kind {KIND!r}); pass a folder written by `drugcell load` or `drugcell synth`"
            )
        return manifest, 1
    if fmt != FORMAT:
        raise DrugcellInputError(
            f"{root} is not an ExpressionSet cache: {manifest_path} says format {fmt!r}, expected {FORMAT!r}; "
            "pass a folder written by `drugcell load` or `drugcell synth`"
        )
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise DrugcellInputError(
            f"ExpressionSet cache {root}: {manifest_path} has format_version {version!r}, not a positive integer; "
            f"{REBUILD}"
        )
    if version > FORMAT_VERSION:
        raise DrugcellInputError(
            f"ExpressionSet cache {root} has format version {version}, newer than this drugcell reads (up to "
            f"{FORMAT_VERSION}); upgrade drugcell, or {REBUILD} with this one"
        )
    return manifest, version
