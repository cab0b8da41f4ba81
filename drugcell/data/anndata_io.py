"""ExpressionSet <-> AnnData, so a set goes to scanpy and the other tools biologists use, and back
without loss (every array, id and info entry; through an .h5ad file too).

Layout (AnnData wants observations as rows, so compounds x genes throughout)::

    X                          expression, float32
    obs (index: compound id)   smiles, inchikey, n_replicates, then the compound metadata columns
    var (index: gene id)
    layers["mejia_weights"]    the weights, compounds x genes (the ExpressionSet stores genes x compounds)
    varm["control"]            (G, 1) the control (DMSO) profile
    varm["control_expression"], varm["control_weights"]   (G, K): each control's profile and weights
    obsm["plate_counts"]       (C, P) wells per compound and plate            } only for a set
    varm["plate_control_mean"], varm["plate_control_var"]   (G, P) DMSO per plate } with plates
    uns["drugcell"]            format, layout version, drugcell version, data fingerprint, value scale,
                               control ids, plate ids, DMSO wells per plate, info as JSON text

Why info as JSON text: h5ad stores nested dicts, but not None, empty dicts or mixed lists; JSON text
comes back as it went (as in the cache's manifest). The module never imports the ExpressionSet
class (it is handed in), so the container can delegate here without an import cycle.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from drugcell import __version__
from drugcell.data.plates import PlateLayout
from drugcell.errors import DrugcellInputError
from drugcell.provenance import strict_json

if TYPE_CHECKING:  # annotations only: expression_set delegates here
    import anndata

    from drugcell.data.expression_set import ExpressionSet

FORMAT = "drugcell.expression_set.anndata"
LAYOUT_VERSION = 1
UNS_KEY = "drugcell"
WEIGHTS_LAYER = "mejia_weights"
OBS_COLS = ("smiles", "inchikey", "n_replicates")
#: info keys that describe one loaded copy, not the data (as in the cache's manifest)
_LOAD_ONLY_INFO = ("cache_format_version", "fingerprint")
_GENERIC = ("it was not written by ExpressionSet.to_anndata; read an AnnData of your own with "
            "`drugcell load --anndata FILE.h5ad` (drugcell.data.anndata_load.load_anndata)")


def anndata_module():
    """The ``anndata`` package, or a clear error saying how to install it (an optional dependency)."""
    try:
        import anndata
    except ImportError:
        raise DrugcellInputError("AnnData support needs the anndata package: pip install 'drugcell[anndata]' "
                                 "(or pip install anndata)") from None
    return anndata


def to_anndata(es: ExpressionSet) -> anndata.AnnData:
    """The set as an AnnData (layout in the module docstring); arrays are copied, never shared."""
    ad = anndata_module()

    obs = pd.DataFrame({"smiles": es.smiles.astype(str), "inchikey": es.inchikey.astype(str),
                        "n_replicates": np.asarray(es.n_replicates, dtype=np.int32)},
                       index=pd.Index(es.compounds.astype(str), name="compound"))
    meta_dtypes: dict[str, str] = {}
    if es.compound_meta is not None:
        clash = sorted(set(es.compound_meta.columns) & set(OBS_COLS))
        if clash:
            raise DrugcellInputError(f"compound metadata column(s) {clash} clash with AnnData obs columns "
                                     f"{', '.join(OBS_COLS)}; rename them")
        for col in es.compound_meta.columns:
            obs[col] = es.compound_meta[col].set_axis(obs.index)
            meta_dtypes[str(col)] = str(es.compound_meta[col].dtype)
    varm = {"control": np.asarray(es.control, dtype=np.float32).reshape(-1, 1),
            "control_expression": np.array(es.control_expression, dtype=np.float32).T,
            "control_weights": np.array(es.control_weights, dtype=np.float32)}
    obsm: dict[str, np.ndarray] = {}
    uns: dict[str, Any] = {
        "format": FORMAT, "layout_version": LAYOUT_VERSION, "drugcell_version": __version__,
        "data_fingerprint": es.fingerprint(), "value_scale": es.value_scale,
        "control_ids": es.control_ids.astype(str), "meta_dtypes_json": json.dumps(meta_dtypes),
        "info_json": strict_json({k: v for k, v in es.info.items() if k not in _LOAD_ONLY_INFO}),
    }
    if es.plates is not None:
        obsm["plate_counts"] = np.array(es.plates.compound_counts)
        varm["plate_control_mean"] = np.array(es.plates.control_mean, dtype=np.float32).T
        varm["plate_control_var"] = np.array(es.plates.control_var, dtype=np.float32).T
        uns["plate_ids"] = es.plates.plate_ids.astype(str)
        uns["plate_control_n"] = np.array(es.plates.control_n)
    return ad.AnnData(X=np.array(es.expression, dtype=np.float32), obs=obs,
                      var=pd.DataFrame(index=pd.Index(es.genes.astype(str), name="gene_id")),
                      layers={WEIGHTS_LAYER: np.array(es.weights, dtype=np.float32).T},
                      obsm=obsm, varm=varm, uns={UNS_KEY: uns})


def dense(x: Any) -> np.ndarray:
    """A dense array from an AnnData matrix (numpy, scipy sparse, or an h5py-backed dataset)."""
    if hasattr(x, "toarray"):
        return np.asarray(x.toarray())
    return np.asarray(x)


def _part(store: Any, key: str, where: str) -> np.ndarray:
    if key not in store:
        raise DrugcellInputError(f"AnnData has no {where}[{key!r}]; {_GENERIC}")
    return dense(store[key])


def _meta(obs: pd.DataFrame, dtypes: dict[str, str]) -> pd.DataFrame | None:
    """The compound metadata columns of obs, with the dtype each had before h5ad made text categorical."""
    cols = [c for c in obs.columns if c not in OBS_COLS]
    if not cols:
        return None
    out = {}
    for c in cols:
        s = obs[c]
        if isinstance(s.dtype, pd.CategoricalDtype) and dtypes.get(str(c), "category") != "category":
            s = pd.Series(np.asarray(s.astype(object)), index=s.index, dtype=dtypes[str(c)])
        out[str(c)] = s.reset_index(drop=True)
    return pd.DataFrame(out)


def set_fields(adata: anndata.AnnData) -> dict[str, Any]:
    """ExpressionSet constructor arguments from an AnnData that :func:`to_anndata` wrote (perhaps
    subset or edited since: the fingerprint is recomputed, and a different one is recorded as
    ``derived_from_fingerprint``). Anything missing is named."""
    uns = adata.uns.get(UNS_KEY)
    if not isinstance(uns, dict) or uns.get("format") != FORMAT:
        raise DrugcellInputError(f"AnnData has no uns[{UNS_KEY!r}] of format {FORMAT!r}: {_GENERIC}")
    version = int(uns.get("layout_version", 0))
    if version > LAYOUT_VERSION:
        raise DrugcellInputError(f"AnnData layout version {version} is newer than this drugcell reads "
                                 f"({LAYOUT_VERSION}); upgrade drugcell")
    lacking = [c for c in OBS_COLS if c not in adata.obs.columns]
    if lacking:
        raise DrugcellInputError(f"AnnData obs lacks column(s) {', '.join(lacking)}; {_GENERIC}")
    obs = adata.obs
    info = json.loads(str(uns.get("info_json", "{}")))
    recorded = uns.get("data_fingerprint")
    fields: dict[str, Any] = dict(
        compounds=obs.index.to_numpy().astype(str), genes=adata.var_names.to_numpy().astype(str),
        expression=dense(adata.X).astype(np.float32), weights=_part(adata.layers, WEIGHTS_LAYER, "layers").T,
        n_replicates=obs["n_replicates"].to_numpy(), smiles=obs["smiles"].astype(str).to_numpy(),
        inchikey=obs["inchikey"].astype(str).to_numpy(),
        control=_part(adata.varm, "control", "varm")[:, 0],
        control_ids=np.asarray(uns.get("control_ids", []), dtype=object).astype(str),
        control_expression=_part(adata.varm, "control_expression", "varm").T,
        control_weights=_part(adata.varm, "control_weights", "varm"),
        info=info, value_scale=str(uns.get("value_scale", "log2cpm")),
        compound_meta=_meta(obs.drop(columns=list(OBS_COLS)), json.loads(str(uns.get("meta_dtypes_json", "{}")))),
    )
    if "plate_counts" in adata.obsm:
        fields["plates"] = PlateLayout(
            plate_ids=np.asarray(uns["plate_ids"]).astype(str), compound_counts=dense(adata.obsm["plate_counts"]),
            control_mean=_part(adata.varm, "plate_control_mean", "varm").T,
            control_var=_part(adata.varm, "plate_control_var", "varm").T,
            control_n=np.asarray(uns["plate_control_n"]))
    fields["_recorded_fingerprint"] = None if recorded is None else str(recorded)
    return fields


def from_anndata(cls: type[ExpressionSet], adata: anndata.AnnData) -> ExpressionSet:
    """The ExpressionSet ``adata`` holds (see :func:`set_fields`); checked as every set is."""
    fields = set_fields(adata)
    recorded = fields.pop("_recorded_fingerprint")
    try:
        es = cls(**fields)
    except DrugcellInputError as exc:
        raise DrugcellInputError(f"AnnData: {exc}") from None
    if recorded is not None and es.fingerprint() != recorded:
        es.info["derived_from_fingerprint"] = recorded  # subset or edited since it was exported
    return es
