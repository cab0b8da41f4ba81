"""Saved models: fit once, predict new molecules later (``drugcell fit`` / ``drugcell predict``).

A model dir holds plain data only, so loading never executes stored code (no pickle anywhere)::

    model.json        kind, name, config (constructor params), genes, package version, training
                      data fingerprint, array listing + sha256 of arrays.npz, provenance
    arrays.npz        Predictor.get_state() (np.savez; read back with allow_pickle=False)
    training.npz      the training compounds' packed Morgan bits (radius 2, 2048 bits), parse
                      mask and mean profile: for the far-from-training warning and the
                      "vs mean" table of ``drugcell predict``
    training.parquet  compound, smiles of the training compounds (readable)

:func:`load_model` rebuilds the predictor through the registry (``make_predictor(kind,
**config)``) and restores it with ``set_state``.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from drugcell import __version__
from drugcell.defaults import MORGAN_BITS, MORGAN_RADIUS
from drugcell.errors import DrugcellInputError
from drugcell.models.base import Prediction, Predictor
from drugcell.provenance import atomic_dir, atomic_path, provenance

FORMAT = "drugcell.model"
FORMAT_VERSION = 1
FP_RADIUS = MORGAN_RADIUS
FP_BITS = MORGAN_BITS
DEFAULT_FAR_THRESHOLD = 0.3


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


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


# ----------------------------------------------------------------------------- save
def save_model(predictor: Predictor, model_dir: str | Path, *, train_info, name: str | None = None,
               seed: int | None = None, overwrite: bool = False) -> Path:
    """Write a fitted predictor to ``model_dir`` (built in a temp dir, then renamed into place).

    ``train_info`` is a :class:`TrainInfo` or the ExpressionSet the model was fitted on.
    """
    from drugcell.chem.fingerprints import morgan_bits
    from drugcell.chem.molecules import parse_smiles

    if not predictor.is_fitted:
        raise DrugcellInputError(f"predictor {predictor.kind!r} is not fitted; fit it before saving")
    info = _as_train_info(train_info)
    final = Path(model_dir)
    if final.exists() and any(final.iterdir()):
        if not overwrite:
            raise DrugcellInputError(f"model dir {final} exists and is not empty; pass --overwrite to replace it")
        if not (final / "model.json").is_file():
            raise DrugcellInputError(f"{final} is not a saved model (no model.json); refusing to replace it")
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
        pd.DataFrame({"compound": info.compounds, "smiles": info.smiles}).to_parquet(
            tmp / "training.parquet", index=False)
        meta = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "kind": predictor.kind,
            "name": name or predictor.kind,
            "config": predictor.get_config(),
            "genes": genes.tolist(),
            "drugcell_version": __version__,
            "data_fingerprint": info.data_fingerprint,
            "training": {
                "n_compounds": len(info.compounds), "n_parsed": int(parsed.ok.sum()),
                "fingerprint": {"kind": "morgan_bits", "radius": FP_RADIUS, "n_bits": FP_BITS}, **info.extra,
            },
            "arrays": {k: {"dtype": str(v.dtype), "shape": list(v.shape)} for k, v in state.items()},
            "arrays_sha256": _sha256(tmp / "arrays.npz"),
            "provenance": provenance(command="drugcell fit", seed=seed, data_fingerprint=info.data_fingerprint,
                                     config={"kind": predictor.kind, **predictor.get_config()}),
        }
        (tmp / "model.json").write_text(json.dumps(meta, indent=1, default=_json_default) + "\n")
    return final


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, (np.ndarray, Path)):
        return o.tolist() if isinstance(o, np.ndarray) else str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


# ----------------------------------------------------------------------------- load
def read_model_meta(model_dir: str | Path) -> dict[str, Any]:
    """model.json, checked for format and version."""
    root = Path(model_dir)
    path = root / "model.json"
    if not path.is_file():
        raise DrugcellInputError(f"{root} is not a saved model (no model.json); create one with `drugcell fit`")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DrugcellInputError(f"{path}: not valid JSON ({exc}); refit the model") from None
    if meta.get("format") != FORMAT:
        raise DrugcellInputError(f"{path}: not a drugcell model file (format {meta.get('format')!r})")
    if int(meta.get("format_version", 0)) > FORMAT_VERSION:
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
    if meta.get("arrays_sha256") and _sha256(arrays_path) != meta["arrays_sha256"]:
        raise DrugcellInputError(f"{arrays_path}: checksum differs from model.json; the file is corrupt, refit")
    if meta.get("drugcell_version") != __version__:
        warnings.warn(f"{root}: saved by drugcell {meta.get('drugcell_version')}, loading with {__version__}",
                      stacklevel=2)
    predictor = make_predictor(meta["kind"], **meta.get("config", {}))
    try:
        with np.load(arrays_path, allow_pickle=False) as z:
            state = {k: z[k] for k in z.files}
    except ValueError as exc:  # an object array would need pickle: refuse it
        raise DrugcellInputError(f"{arrays_path}: cannot be read without pickle ({exc}); refit the model") from None
    predictor.set_state(state)
    if list(np.asarray(predictor.genes).astype(str)) != list(meta["genes"]):
        raise DrugcellInputError(f"{root}: genes in arrays.npz differ from model.json; the model dir is inconsistent")
    return predictor


@dataclass
class SavedModel:
    """A loaded predictor plus what it remembers of its training compounds."""

    predictor: Predictor
    meta: dict[str, Any]
    train_bits: np.ndarray  # (C, 2048) uint8, zero rows for unparsed training SMILES
    train_parsed: np.ndarray  # (C,) bool
    train_compounds: np.ndarray  # (C,) str
    mean_profile: np.ndarray  # (G,) float32

    @property
    def genes(self) -> np.ndarray:
        return np.asarray(self.predictor.genes).astype(str)

    @classmethod
    def load(cls, model_dir: str | Path) -> SavedModel:
        root = Path(model_dir)
        predictor = load_model(root)
        meta = read_model_meta(root)
        for f in ("training.npz", "training.parquet"):
            if not (root / f).is_file():
                raise DrugcellInputError(f"{root}: {f} is missing; the model dir is incomplete, refit it")
        with np.load(root / "training.npz", allow_pickle=False) as z:
            n_bits = int(meta["training"]["fingerprint"]["n_bits"])
            bits = np.unpackbits(z["bits_packed"], axis=1, count=n_bits)
            parsed, mean_profile = z["parsed"].astype(bool), z["mean_profile"]
        comps = pd.read_parquet(root / "training.parquet", columns=["compound"])["compound"].astype(str).to_numpy()
        return cls(predictor=predictor, meta=meta, train_bits=bits, train_parsed=parsed,
                   train_compounds=comps, mean_profile=mean_profile)

    def nearest(self, query_bits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(nearest training similarity (n,), nearest training compound id (n,)) by Tanimoto."""
        from drugcell.chem.fingerprints import top_k_similar

        ref = np.flatnonzero(self.train_parsed)
        n = query_bits.shape[0]
        if ref.size == 0:
            return np.zeros(n, np.float32), np.full(n, "", dtype=object)
        idx, sim = top_k_similar(query_bits, self.train_bits[ref], 1)
        return sim[:, 0].astype(np.float32), self.train_compounds[ref[idx[:, 0]]]


# ----------------------------------------------------------------------------- fit
@dataclass
class FitResult:
    model_dir: Path
    name: str
    kind: str
    n_compounds: int
    n_genes: int
    seconds: float


def fit_model(data: str | Path, predictor: str, out: str | Path, *, config: str | Path | None = None,
              seed: int | None = None, overwrite: bool = False) -> FitResult:
    """What ``drugcell fit`` does: resolve the predictor, fit it on every compound, save it."""
    import time

    from drugcell.data.expression_set import ExpressionSet
    from drugcell.models import make_predictor
    from drugcell.submission import resolve_predictor

    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:  # fail before an hour of fitting
        raise DrugcellInputError(f"model dir {out} exists and is not empty; pass --overwrite to replace it")
    spec, cfg_seed = resolve_predictor(predictor, config=config)
    seed = cfg_seed if seed is None else int(seed)
    es = ExpressionSet.load(data)
    t0 = time.perf_counter()
    model = make_predictor(spec.kind, **spec.params).fit(es, seed=seed)
    seconds = time.perf_counter() - t0
    info = TrainInfo.from_expression_set(es, seed=seed, fit_s=round(seconds, 2),
                                         config_source=None if config is None else str(config))
    save_model(model, out, train_info=info, name=spec.name, seed=seed, overwrite=overwrite)
    return FitResult(model_dir=out, name=spec.name, kind=spec.kind, n_compounds=es.n_compounds,
                     n_genes=es.n_genes, seconds=seconds)


# ----------------------------------------------------------------------------- predict
@dataclass
class PredictResult:
    """Predicted profiles for new molecules and how far each is from the training set."""

    ids: np.ndarray  # (n,) str
    smiles: np.ndarray  # (n,) str
    genes: np.ndarray  # (G,) str
    prediction: Prediction
    mean_profile: np.ndarray  # (G,)
    nearest_similarity: np.ndarray  # (n,) Tanimoto to the nearest training compound
    nearest_compound: np.ndarray  # (n,) its id
    threshold: float
    model_name: str

    @property
    def far(self) -> np.ndarray:
        """Molecules whose nearest training compound is below the similarity threshold."""
        return self.nearest_similarity < self.threshold

    def warnings(self) -> list[str]:
        return [
            f"{self.ids[i]} ({self.smiles[i]}) is far from every training compound: nearest Tanimoto "
            f"{self.nearest_similarity[i]:.2f} (to {self.nearest_compound[i]}) < {self.threshold:g}; "
            "its prediction rests on weak structural evidence"
            for i in np.flatnonzero(self.far)
        ]

    def long_table(self) -> pd.DataFrame:
        """``compound, gene_id, predicted_expression[, predicted_std]``, compound-major."""
        n, g = self.prediction.mean.shape
        cols = {
            "compound": np.repeat(self.ids.astype(str), g),
            "gene_id": np.tile(self.genes.astype(str), n),
            "predicted_expression": self.prediction.mean.ravel(),
        }
        if self.prediction.std is not None:
            cols["predicted_std"] = self.prediction.std.ravel()
        return pd.DataFrame(cols)

    def top_changes(self, top: int = 10, symbols: np.ndarray | None = None) -> pd.DataFrame:
        """Per molecule the ``top`` genes most up and most down vs the training mean profile."""
        names = self.genes if symbols is None else np.asarray(symbols).astype(str)
        rows = []
        for i in range(len(self.ids)):
            delta = self.prediction.mean[i].astype(np.float64) - self.mean_profile
            order = np.argsort(delta, kind="stable")
            for direction, sel in (("up", order[::-1][:top]), ("down", order[:top])):
                for r, g in enumerate(sel, start=1):
                    row = {"compound": str(self.ids[i]), "direction": direction, "rank": r,
                           "gene": str(names[g]), "predicted": float(self.prediction.mean[i, g]),
                           "vs_mean": float(delta[g])}
                    if self.prediction.std is not None:
                        row["std"] = float(self.prediction.std[i, g])
                    rows.append(row)
        return pd.DataFrame(rows)


def read_molecules(input_csv: str | Path | None = None, smiles: list[str] | None = None,
                   id_column: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(ids, smiles) from ``--smiles`` values (id = the SMILES) or a CSV with a ``smiles`` column."""
    if (input_csv is None) == (not smiles):
        raise DrugcellInputError("pass molecules with --smiles \"...\" (repeatable) or --input FILE.csv, not both")
    if input_csv is None:
        ids = np.asarray([str(s) for s in smiles], dtype=object)
        smi = ids.copy()
    else:
        path = Path(input_csv)
        if not path.is_file():
            raise DrugcellInputError(f"input file {path} not found")
        try:
            df = pd.read_csv(path, dtype=str, keep_default_na=False)
        except Exception as exc:  # noqa: BLE001
            raise DrugcellInputError(f"{path}: not a readable CSV ({exc})") from None
        cols = {c.lower(): c for c in df.columns}
        if "smiles" not in cols:
            raise DrugcellInputError(f"{path}: no `smiles` column (found {list(df.columns)}); add one")
        if df.empty:
            raise DrugcellInputError(f"{path}: no rows")
        smi = df[cols["smiles"]].astype(str).to_numpy(dtype=object)
        if id_column is not None:
            if id_column not in df.columns:
                raise DrugcellInputError(f"{path}: no column {id_column!r} for --id-column (found {list(df.columns)})")
            ids = df[id_column].astype(str).to_numpy(dtype=object)
        else:
            auto = next((cols[c] for c in ("compound", "id", "compound_id", "name") if c in cols), None)
            ids = df[auto].astype(str).to_numpy(dtype=object) if auto else np.array(
                [f"row{i + 1}" for i in range(len(df))], dtype=object)
    seen: set[str] = set()
    for i in ids:
        if i in seen:
            where = f"{input_csv}" if input_csv is not None else "--smiles"
            raise DrugcellInputError(f"{where}: molecule id {i!r} appears twice; ids must be unique")
        seen.add(i)
    return ids, smi


def predict_molecules(model_dir: str | Path, smiles: list[str], ids: list[str] | None = None, *,
                      threshold: float = DEFAULT_FAR_THRESHOLD, source: str = "--smiles") -> PredictResult:
    """Predict profiles for new molecules with a saved model; refuse any unparseable SMILES."""
    from drugcell.chem.fingerprints import morgan_bits
    from drugcell.chem.molecules import parse_smiles

    smiles = [str(s) for s in smiles]
    ids = list(smiles) if ids is None else [str(i) for i in ids]
    if not smiles:
        raise DrugcellInputError("no molecules to predict")
    parsed = parse_smiles(smiles, inchikey=False)
    if parsed.errors:
        bad = sorted(parsed.errors)
        where = "--smiles value" if source == "--smiles" else "row"
        listed = "; ".join(f"{ids[i]!r} (SMILES {smiles[i]!r}, {where} {i + 1}): {parsed.errors[i]}"
                           for i in bad[:5])
        more = f" (+{len(bad) - 5} more)" if len(bad) > 5 else ""
        raise DrugcellInputError(
            f"{source}: {len(bad)} molecule(s) could not be parsed by RDKit: {listed}{more}. "
            "Fix or remove these SMILES.")
    saved = SavedModel.load(model_dir)
    sim, near = saved.nearest(morgan_bits(parsed, radius=FP_RADIUS, n_bits=FP_BITS))
    pred = saved.predictor.predict(smiles)
    return PredictResult(
        ids=np.asarray(ids, dtype=object), smiles=np.asarray(smiles, dtype=object), genes=saved.genes,
        prediction=pred, mean_profile=saved.mean_profile.astype(np.float64), nearest_similarity=sim,
        nearest_compound=near, threshold=float(threshold), model_name=str(saved.meta.get("name")),
    )


def write_predictions(result: PredictResult, out: str | Path) -> Path:
    """The long table as parquet (or CSV when ``out`` ends in .csv), written atomically."""
    out = Path(out)
    table = result.long_table()
    with atomic_path(out) as tmp:
        if out.suffix.lower() == ".csv":
            table.to_csv(tmp, index=False)
        else:
            table.to_parquet(tmp, index=False)
    return out
