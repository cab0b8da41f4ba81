"""Adapters from real LINCS L1000 files to an ExpressionSet, so the panel can be checked on data
people trust (978 landmark genes, level-3 log2 expression).

* :func:`load_prnet_h5ad`: the PRnet HT115 demo AnnData (SMILES in ``obs``, DMSO wells flagged).
* :func:`load_cmap_gct`: a CMap GCT 1.3 plate joined to SMILES through the LINCS ``pert_id`` table.

One profile per compound at a stated dose rule (``max``: each compound's highest dose;
``nearest:X``: the dose nearest X uM; ``all``: every dose pooled as replicates). The values are
already log2, so they play the role of L = log2(CPM+1) (value scale ``log2cpm``): the target is the
mean over the chosen wells, and the Mejia weights come from the same t-vs-rest recipe on the
well-level values (treated compounds and the DMSO group are all columns, as in the official build).
Both read their files and choose the wells; the rest is the generic AnnData adapter
(:mod:`drugcell.data.anndata_load`), so an L1000 set and any other h5ad are built alike.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from drugcell.data.anndata_io import anndata_module
from drugcell.data.anndata_load import AnnDataOptions, load_anndata
from drugcell.data.expression_set import ExpressionSet
from drugcell.defaults import LOG2CPM
from drugcell.errors import DrugcellInputError
from drugcell.provenance import fingerprint_files

DMSO = "DMSO"


def select_dose(doses: pd.Series, compounds: pd.Series, rule: str) -> np.ndarray:
    """Boolean mask of treated wells kept under ``rule`` (max | nearest:X | all)."""
    d = pd.to_numeric(doses, errors="coerce").to_numpy(dtype=float)
    if rule == "all":
        return np.isfinite(d)
    frame = pd.DataFrame({"c": compounds.to_numpy(), "d": d})
    if rule == "max":
        target = frame.groupby("c")["d"].transform("max").to_numpy()
        return d == target
    if rule.startswith("nearest:"):
        try:
            x = float(rule.split(":", 1)[1])
        except ValueError as exc:
            raise DrugcellInputError(f"dose rule {rule!r}: use nearest:<uM>, e.g. nearest:10") from exc
        frame["gap"] = np.abs(np.log(np.maximum(d, 1e-9)) - np.log(x))
        best = frame.groupby("c")["gap"].transform("min").to_numpy()
        return frame["gap"].to_numpy() == best
    raise DrugcellInputError(f"unknown dose rule {rule!r}; use max, nearest:<uM> or all")


def build_expression_set(
    values_sg: np.ndarray,
    well_compound: np.ndarray,
    genes: np.ndarray,
    smiles_of: dict[str, str],
    *,
    control_groups: dict[str, np.ndarray],
    info: dict,
) -> ExpressionSet:
    """Well-level log2 values (samples x genes) -> ExpressionSet with t-vs-rest weights, through the
    generic AnnData adapter (:func:`drugcell.data.anndata_load.load_anndata`, level ``well``).

    ``well_compound`` names each well's group (treated compound ids or a control id such as
    DMSO); ``control_groups`` maps control ids to masks over the wells (DMSO is the vehicle).
    Genes are sorted by id.
    """
    ad = anndata_module()
    if DMSO not in set(np.asarray(well_compound).tolist()):
        raise DrugcellInputError("no DMSO wells found: the control profile needs vehicle wells")
    order = np.argsort(genes, kind="stable")
    groups = np.asarray(well_compound).astype(str)
    obs = pd.DataFrame({"compound": groups, "smiles": [smiles_of.get(g, "") for g in groups]},
                       index=[f"w{i}" for i in range(len(groups))])
    controls = (DMSO, *sorted(c for c in control_groups if c != DMSO))
    adata = ad.AnnData(X=np.asarray(values_sg, dtype=np.float64)[:, order], obs=obs,
                       var=pd.DataFrame(index=np.asarray(genes).astype(str)[order]))
    options = AnnDataOptions(compound_col="compound", smiles_col="smiles", control_values=controls,
                             weights="ttest", level="well", scale=LOG2CPM)
    return load_anndata(adata, options, info=info)[0]


def load_prnet_h5ad(path: str | Path, *, dose_rule: str = "max") -> ExpressionSet:
    """PRnet HT115 6 h demo (681 wells: 661 treated, 20 DMSO; 354 compounds with SMILES)."""
    import anndata as ad

    path = Path(path)
    if not path.exists():
        raise DrugcellInputError(f"{path} does not exist (the PRnet demo.h5ad)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adata = ad.read_h5ad(path)
    obs = adata.obs
    for col in ("pert_id", "pert_dose", "control", "SMILES"):
        if col not in obs.columns:
            raise DrugcellInputError(f"{path}: obs lacks column {col!r}")
    x = np.asarray(adata.X, dtype=np.float64)
    control = obs["control"].astype(int).to_numpy() == 1
    pert = obs["pert_id"].astype(str).to_numpy()
    treated_keep = ~control & select_dose(obs["pert_dose"], obs["pert_id"].astype(str), dose_rule)
    keep = treated_keep | control
    group = np.where(control, DMSO, pert)
    smiles_of = dict(zip(pert[~control], obs["SMILES"].astype(str).to_numpy()[~control]))
    info = {
        "source": "prnet_l1000_ht115_demo",
        "file": str(path),
        "file_fingerprint": fingerprint_files([path]),
        "dose_rule": dose_rule,
        "values": "L1000 level-3 log2 expression (absolute)",
        "wells_used": int(keep.sum()),
    }
    return build_expression_set(
        x[keep], group[keep], adata.var_names.to_numpy().astype(str), smiles_of,
        control_groups={DMSO: control[keep]}, info=info,
    )


def read_gct(path: str | Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """GCT 1.3 -> (values probes x wells, row metadata, column metadata wells x fields)."""
    path = Path(path)
    with open(path) as f:
        version = f.readline().strip()
        dims = f.readline().split()
    if version != "#1.3" or len(dims) != 4:
        raise DrugcellInputError(f"{path}: not a GCT 1.3 file (first line {version!r})")
    n_rows, n_cols, n_row_meta, n_col_meta = map(int, dims)
    raw = pd.read_csv(path, sep="\t", skiprows=2, header=0, dtype=str, low_memory=False)
    id_col = raw.columns[0]
    row_meta_cols = list(raw.columns[1 : 1 + n_row_meta])
    wells = list(raw.columns[1 + n_row_meta :])
    col_meta = raw.iloc[:n_col_meta].set_index(id_col)[wells].T
    body = raw.iloc[n_col_meta:].set_index(id_col)
    if body.shape != (n_rows, n_row_meta + n_cols):
        raise DrugcellInputError(f"{path}: expected {n_rows} x {n_cols} values, found {body.shape}")
    values = body[wells].astype(float)
    return values, body[row_meta_cols], col_meta


def read_lincs_smiles(path: str | Path) -> dict[str, str]:
    """The chemCPA ``pert_id, SMILES`` table (no header; comma + space separated)."""
    table = pd.read_csv(path, header=None, names=["pert_id", "smiles"], skipinitialspace=True, dtype=str)
    return dict(zip(table["pert_id"], table["smiles"]))


def load_cmap_gct(
    path: str | Path, smiles_table: str | Path, *, dose_rule: str = "nearest:10"
) -> ExpressionSet:
    """A CMap L1000 plate: treated wells (``trt_cp``) whose ``pert_id`` has SMILES; DMSO wells
    (``ctl_vehicle``) are the control; positive controls (``trt_poscon``) are control columns."""
    values, row_meta, col_meta = read_gct(path)
    smiles_of = read_lincs_smiles(smiles_table)
    ptype = col_meta["pert_type"].to_numpy()
    pert = col_meta["pert_id"].astype(str).to_numpy()
    vehicle = ptype == "ctl_vehicle"
    poscon = ptype == "trt_poscon"
    treated = (ptype == "trt_cp") & np.array([p in smiles_of for p in pert])
    n_unjoined = int(((ptype == "trt_cp") & ~treated).sum())
    dose_ok = np.zeros(len(pert), dtype=bool)
    if treated.any():
        dose_ok[treated] = select_dose(col_meta["pert_dose"][treated], col_meta["pert_id"][treated], dose_rule)
    keep = (treated & dose_ok) | vehicle | poscon
    group = np.where(vehicle, DMSO, np.where(poscon, "poscon:" + pert, pert))
    genes = row_meta["pr_gene_symbol"].astype(str).to_numpy()
    info = {
        "source": "cmap_l1000_a375_plate",
        "file": str(path),
        "file_fingerprint": fingerprint_files([path, smiles_table]),
        "dose_rule": dose_rule,
        "treated_wells_without_smiles": n_unjoined,
        "values": "L1000 level-3 log2 expression (absolute)",
    }
    controls = {g: (group[keep] == g) for g in np.unique(group[keep & (vehicle | poscon)])}
    return build_expression_set(values.to_numpy().T[keep], group[keep], genes, smiles_of, control_groups=controls, info=info)
