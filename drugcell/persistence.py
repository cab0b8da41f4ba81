"""Saved models: a fitted predictor written to a folder and read back exactly (no fitting, no predicting here).

A model dir holds plain data only, so loading never executes stored code (no pickle anywhere)::

    model.json        kind, name, config (constructor params), genes, package version, training
                      data fingerprint, array listing + sha256 of arrays.npz (and of the
                      training files), provenance
    arrays.npz        Predictor.get_state() (np.savez; read back with allow_pickle=False)
    training.npz      the training compounds' packed Morgan bits (radius 2, 2048 bits), parse
                      mask and mean profile: for the far-from-training warning and the
                      "vs mean" table of ``drugcell predict``
    training.parquet  compound, smiles of the training compounds (readable)
    calibrator.json   optional: the std :class:`~drugcell.calibration.calibrator.Calibrator` fitted
                      on a CV run's held-out errors (listed with its sha256 in model.json)

:func:`load_model` rebuilds the predictor through the registry (``make_predictor(kind,
**config)``) and restores it with ``set_state``; :class:`SavedModel` adds the training
compounds and the calibrator. Fitting lives in :mod:`drugcell.fitting`, prediction of new
molecules in :mod:`drugcell.prediction`: both import this module, never the other way.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from drugcell import __version__
from drugcell.calibration.calibrator import Calibrator
from drugcell.defaults import COMPOUND_COL, MORGAN_BITS, MORGAN_RADIUS, SMILES_COL
from drugcell.errors import DrugcellInputError
from drugcell.models.base import Predictor
from drugcell.outputs import check_folder_output
from drugcell.provenance import atomic_dir, provenance, read_json_object, sha256_file, strict_json

FORMAT = "drugcell.model"
#: 2 adds the optional calibrator.json (version 1 folders still load: they have none).
FORMAT_VERSION = 2
CALIBRATOR_FILE = "calibrator.json"
#: what a model remembers of its training compounds (checksums in model.json's ``files_sha256``)
TRAINING_FILES = ("training.npz", "training.parquet")
#: model.json fields every reader relies on, with their JSON types
_META_FIELDS = {"kind": str, "config": dict, "genes": list}
FP_RADIUS = MORGAN_RADIUS
FP_BITS = MORGAN_BITS


# ----------------------------------------------------------------------------- training info
@dataclass
class TrainInfo:
    """What a saved model remembers about its training compounds (not their profiles)."""

    compounds: np.ndarray  # (C,) str
    smiles: np.ndarray  # (C,) str
    mean_profile: np.ndarray  # (G,) float32: the per-gene training mean ("vs mean" tables)
    data_fingerprint: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # JSON-able: data path, seed, ...

    @classmethod
    def from_expression_set(cls, es, **extra: Any) -> TrainInfo:
        return cls(
            compounds=np.asarray(es.compounds).astype(str), smiles=np.asarray(es.smiles).astype(str),
            mean_profile=np.asarray(es.expression).mean(axis=0, dtype=np.float64).astype(np.float32),
            data_fingerprint=es.fingerprint(),
            extra={"data_path": es.info.get("path"), "n_compounds": int(es.n_compounds),
                   "n_genes": int(es.n_genes), **extra},
        )


def _as_train_info(train_info) -> TrainInfo:
    if isinstance(train_info, TrainInfo):
        return train_info
    if hasattr(train_info, "expression") and hasattr(train_info, "smiles"):
        return TrainInfo.from_expression_set(train_info)
    raise TypeError("train_info must be a TrainInfo or the ExpressionSet the model was fitted on")


def _plain_array(name: str, a: Any) -> np.ndarray:
    """A state array np.savez can store without pickle (object string arrays become unicode)."""
    a = np.asarray(a)
    if a.dtype == object:
        if not all(isinstance(v, str) for v in a.ravel().tolist()):
            raise TypeError(f"state array {name!r} holds Python objects; only numbers and strings can be saved")
        a = a.astype(str)
    return a


# ----------------------------------------------------------------------------- save
def is_saved_model(path: str | Path) -> bool:
    """Whether ``path`` is a folder drugcell wrote as a model (a model.json object of this format)."""
    try:
        meta = json.loads((Path(path) / "model.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("format") == FORMAT


def check_model_dir(path: str | Path, overwrite: bool, what: str = "model dir") -> bool:
    """Before any fitting: a new or empty folder is fine, an earlier saved model is replaced only with
    ``overwrite`` (True is returned then); a file or a folder that is not a drugcell model never is."""
    return check_folder_output(path, overwrite, what=what, kind="saved model", is_ours=is_saved_model)


def _check_calibrator(calibrator: Calibrator | None, name: str) -> None:
    if calibrator is not None and calibrator.predictor != name:
        raise ValueError(f"the calibrator was fitted for predictor {calibrator.predictor!r}, "
                         f"not for the model named {name!r}")


def save_model(predictor: Predictor, model_dir: str | Path, *, train_info, name: str | None = None,
               seed: int | None = None, overwrite: bool = False, calibrator: Calibrator | None = None) -> Path:
    """Write a fitted predictor to ``model_dir`` (built in a temp dir, then renamed into place). An
    earlier saved model there is replaced only with ``overwrite``; any other folder never is.

    ``train_info`` is a :class:`TrainInfo` or the ExpressionSet the model was fitted on;
    ``calibrator`` (fitted for the predictor called ``name``) is stored as ``calibrator.json``
    and applied to the std by ``drugcell predict``.
    """
    from drugcell.chem.fingerprints import morgan_bits
    from drugcell.chem.molecules import parse_smiles

    if not predictor.is_fitted:
        raise DrugcellInputError(f"predictor {predictor.kind!r} is not fitted; fit it before saving")
    info = _as_train_info(train_info)
    name = name or predictor.kind
    _check_calibrator(calibrator, name)
    final = Path(model_dir)
    check_model_dir(final, overwrite)
    genes = np.asarray(predictor.genes).astype(str)
    if info.mean_profile.shape != (len(genes),):
        raise ValueError(f"train_info mean profile has shape {info.mean_profile.shape}, expected ({len(genes)},)")
    state = {k: _plain_array(k, v) for k, v in predictor.get_state().items()}

    parsed = parse_smiles(list(info.smiles), inchikey=False)
    bits = morgan_bits(parsed, radius=FP_RADIUS, n_bits=FP_BITS)

    with atomic_dir(final) as tmp:
        np.savez(tmp / "arrays.npz", **state)
        np.savez(tmp / "training.npz", bits_packed=np.packbits(bits, axis=1), parsed=parsed.ok,
                 mean_profile=np.asarray(info.mean_profile, dtype=np.float32))
        pd.DataFrame({COMPOUND_COL: info.compounds, SMILES_COL: info.smiles}).to_parquet(
            tmp / "training.parquet", index=False)
        if calibrator is not None:
            calibrator.save(tmp / CALIBRATOR_FILE)
        meta = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "kind": predictor.kind,
            "name": name,
            "config": predictor.get_config(),
            "genes": genes.tolist(),
            "drugcell_version": __version__,
            "data_fingerprint": info.data_fingerprint,
            "training": {
                "n_compounds": len(info.compounds), "n_parsed": int(parsed.ok.sum()),
                "fingerprint": {"kind": "morgan_bits", "radius": FP_RADIUS, "n_bits": FP_BITS}, **info.extra,
            },
            "arrays": {k: {"dtype": str(v.dtype), "shape": list(v.shape)} for k, v in state.items()},
            "arrays_sha256": sha256_file(tmp / "arrays.npz"),
            "files_sha256": {f: sha256_file(tmp / f) for f in TRAINING_FILES},
            "calibrator": None if calibrator is None else {
                "file": CALIBRATOR_FILE, "sha256": sha256_file(tmp / CALIBRATOR_FILE), "scale": calibrator.scale},
            "provenance": provenance(command="drugcell fit", seed=seed, data_fingerprint=info.data_fingerprint,
                                     config={"kind": predictor.kind, **predictor.get_config()}),
        }
        (tmp / "model.json").write_text(strict_json(meta, indent=1) + "\n")
    return final


# ----------------------------------------------------------------------------- load
def read_model_meta(model_dir: str | Path) -> dict[str, Any]:
    """model.json, checked for format and version."""
    root = Path(model_dir)
    path = root / "model.json"
    if not path.is_file():
        raise DrugcellInputError(f"{root} is not a saved model (no model.json); create one with `drugcell fit`")
    meta = read_json_object(path, what="drugcell model file", fix="refit the model")
    if meta.get("format") != FORMAT:
        raise DrugcellInputError(f"{path}: not a drugcell model file (format {meta.get('format')!r})")
    version = meta.get("format_version", 0)
    bad = [k for k, t in _META_FIELDS.items() if not isinstance(meta.get(k), t)]
    if not isinstance(version, int) or isinstance(version, bool):
        bad.insert(0, "format_version")
    if bad:
        raise DrugcellInputError(f"{path}: field(s) {', '.join(bad)} missing or of the wrong type; model.json is "
                                 "damaged or was edited: refit the model")
    if version > FORMAT_VERSION:
        raise DrugcellInputError(
            f"{path}: model format version {meta.get('format_version')} is newer than this drugcell "
            f"({FORMAT_VERSION}); upgrade drugcell or refit")
    return meta


def load_model(model_dir: str | Path) -> Predictor:
    """Rebuild the saved predictor through the registry and restore its fitted state."""
    from drugcell.models import make_predictor

    root = Path(model_dir)
    meta = read_model_meta(root)
    arrays_path = root / "arrays.npz"
    if not arrays_path.is_file():
        raise DrugcellInputError(f"{root}: arrays.npz is missing; the model dir is incomplete, refit it")
    if meta.get("arrays_sha256") and sha256_file(arrays_path) != meta["arrays_sha256"]:
        raise DrugcellInputError(f"{arrays_path}: checksum differs from model.json; the file is corrupt, refit")
    if meta.get("drugcell_version") != __version__:
        warnings.warn(f"{root}: saved by drugcell {meta.get('drugcell_version')}, loading with {__version__}",
                      stacklevel=2)
    try:
        predictor = make_predictor(meta["kind"], **meta["config"])
    except DrugcellInputError as exc:
        raise DrugcellInputError(f"{root / 'model.json'}: {exc}") from None
    try:
        with np.load(arrays_path, allow_pickle=False) as z:
            state = {k: z[k] for k in z.files}
    except ValueError as exc:  # an object array would need pickle: refuse it
        raise DrugcellInputError(f"{arrays_path}: cannot be read without pickle ({exc}); refit the model") from None
    predictor.set_state(state)
    if list(np.asarray(predictor.genes).astype(str)) != list(meta["genes"]):
        raise DrugcellInputError(f"{root}: genes in arrays.npz differ from model.json; the model dir is inconsistent")
    return predictor


def read_calibrator(model_dir: str | Path, meta: dict[str, Any] | None = None) -> Calibrator | None:
    """The model's std calibrator, or None when it was saved without one (checksum-checked)."""
    root = Path(model_dir)
    entry = (read_model_meta(root) if meta is None else meta).get("calibrator")
    if entry is None:
        return None
    path = root / entry.get("file", CALIBRATOR_FILE)
    if not path.is_file():
        raise DrugcellInputError(f"{root}: {path.name} is listed in model.json but missing; the model dir is incomplete")
    if entry.get("sha256") and sha256_file(path) != entry["sha256"]:
        raise DrugcellInputError(f"{path}: checksum differs from model.json; the file is corrupt, refit")
    return Calibrator.load(path)


@dataclass
class SavedModel:
    """A loaded predictor plus what it remembers of its training compounds and its std calibrator."""

    predictor: Predictor
    meta: dict[str, Any]
    train_bits: np.ndarray  # (C, 2048) uint8, zero rows for unparsed training SMILES
    train_parsed: np.ndarray  # (C,) bool
    train_compounds: np.ndarray  # (C,) str
    mean_profile: np.ndarray  # (G,) float32
    calibrator: Calibrator | None = None  # applied to the std by drugcell.prediction

    @property
    def genes(self) -> np.ndarray:
        return np.asarray(self.predictor.genes).astype(str)

    @classmethod
    def load(cls, model_dir: str | Path) -> SavedModel:
        root = Path(model_dir)
        predictor = load_model(root)
        meta = read_model_meta(root)
        recorded = meta.get("files_sha256") or {}
        for f in TRAINING_FILES:
            if not (root / f).is_file():
                raise DrugcellInputError(f"{root}: {f} is missing; the model dir is incomplete, refit it")
            if recorded.get(f) and sha256_file(root / f) != recorded[f]:
                raise DrugcellInputError(f"{root / f}: checksum differs from model.json; the file is corrupt, refit")
        try:
            with np.load(root / "training.npz", allow_pickle=False) as z:
                n_bits = int(meta["training"]["fingerprint"]["n_bits"])
                bits = np.unpackbits(z["bits_packed"], axis=1, count=n_bits)
                parsed, mean_profile = z["parsed"].astype(bool), z["mean_profile"]
            comps = pd.read_parquet(root / "training.parquet", columns=[COMPOUND_COL])[COMPOUND_COL]
        except Exception as exc:  # numpy/pyarrow raise many types; a damaged model.json gives Key/Type errors
            raise DrugcellInputError(f"{root}: its training files or model.json's training entry cannot be read "
                                     f"({type(exc).__name__}: {exc}); the model dir is damaged, refit it") from None
        comps = comps.astype(str).to_numpy()
        return cls(predictor=predictor, meta=meta, train_bits=bits, train_parsed=parsed,
                   train_compounds=comps, mean_profile=mean_profile, calibrator=read_calibrator(root, meta))

    def nearest(self, query_bits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(nearest training similarity (n,), nearest training compound id (n,)) by Tanimoto."""
        from drugcell.chem.fingerprints import top_k_similar

        ref = np.flatnonzero(self.train_parsed)
        n = query_bits.shape[0]
        if ref.size == 0:
            return np.zeros(n, np.float32), np.full(n, "", dtype=object)
        idx, sim = top_k_similar(query_bits, self.train_bits[ref], 1)
        return sim[:, 0].astype(np.float32), self.train_compounds[ref[idx[:, 0]]]
