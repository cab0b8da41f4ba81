"""The structure (SMILES, InChIKey) of each library compound of a load, and what is wrong with them.

Why apart from the loader: a compound reaches its structure through the metadata's compound UUID
and the chemistry table, which can disagree (conflicting SMILES, several UUIDs per id, none at
all); and a SMILES RDKit cannot read silently turns a compound into a fallback prediction in every
model. Each case is counted and named here, so the load summary (and the cache manifest) say so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from drugcell.data import vcpi
from drugcell.data.readers import INCHIKEY, show_ids
from drugcell.defaults import COMPOUND_COL, SMILES_COL

#: unparseable compound ids recorded in the load summary (the count is always complete)
MAX_RECORDED = 20


@dataclass
class Structures:
    """SMILES/InChIKey per library compound ("" when unknown) and the counted problems."""

    smiles: np.ndarray
    inchikey: np.ndarray
    n_missing: int = 0
    n_ambiguous: int = 0
    unparsed: list[str] = field(default_factory=list)  # compound ids whose SMILES RDKit cannot read
    warnings: list[str] = field(default_factory=list)


def compound_structures(meta: pd.DataFrame, compounds: np.ndarray, chem: pd.DataFrame, chem_path: Path) -> Structures:
    """SMILES/InChIKey per library compound, through the metadata's compound UUID; every SMILES is
    parsed once, so an unparseable one is counted and named (not found later, fold by fold)."""
    notes: list[str] = []
    dup = chem[COMPOUND_COL].duplicated(keep=False)
    if dup.any():
        clash = chem[dup].groupby(COMPOUND_COL)[SMILES_COL].nunique()
        clash = clash[clash > 1]
        if len(clash):
            notes.append(f"chemistry file {chem_path}: {len(clash)} compound UUID(s) have conflicting SMILES "
                         f"({show_ids(clash.index)}); the first row is used")
    chem = chem.drop_duplicates(COMPOUND_COL).set_index(COMPOUND_COL)
    pairs = meta[[vcpi.COMPOUND_KEY_COL, vcpi.COMPOUND_UUID_COL]].drop_duplicates()
    pairs = pairs.join(chem, on=vcpi.COMPOUND_UUID_COL)
    pairs[SMILES_COL] = pairs[SMILES_COL].fillna("")
    pairs[INCHIKEY] = pairs[INCHIKEY].fillna("")
    pairs["has"] = pairs[SMILES_COL] != ""
    pairs = pairs.sort_values([vcpi.COMPOUND_KEY_COL, "has"], ascending=[True, False], kind="stable")
    n_uuid = pairs.groupby(vcpi.COMPOUND_KEY_COL)[vcpi.COMPOUND_UUID_COL].nunique()
    multi = n_uuid[n_uuid > 1]
    if len(multi):
        notes.append(f"{len(multi)} compound id(s) map to several compound UUIDs ({show_ids(multi.index)}); "
                     "the first with a SMILES is used")
    first = pairs.drop_duplicates(vcpi.COMPOUND_KEY_COL).set_index(vcpi.COMPOUND_KEY_COL).reindex(compounds)
    smiles = first[SMILES_COL].fillna("").to_numpy(dtype=object)
    inchikey = first[INCHIKEY].fillna("").to_numpy(dtype=object)
    missing = compounds[smiles == ""]
    if len(missing):
        notes.append(f"{len(missing)} compound(s) have no SMILES in {chem_path} ({show_ids(missing)}); they are kept "
                     "with an empty SMILES (predictors count them as unparsed)")
    unparsed = _unparseable(smiles, compounds)
    if unparsed:
        notes.append(f"{len(unparsed)} compound(s) have a SMILES RDKit cannot parse in {chem_path} "
                     f"({show_ids(unparsed)}); they are kept, and predictors give them their fallback profile")
    return Structures(smiles=smiles, inchikey=inchikey, n_missing=len(missing), n_ambiguous=len(multi),
                      unparsed=unparsed, warnings=notes)


def _unparseable(smiles: np.ndarray, compounds: np.ndarray) -> list[str]:
    """Ids of the compounds whose non-empty SMILES RDKit rejects (about 0.2 ms a molecule)."""
    from drugcell.chem.molecules import parse_smiles

    given = np.flatnonzero(smiles != "")
    if not len(given):
        return []
    parsed = parse_smiles(list(smiles[given]), inchikey=False, progress=False)
    return [str(compounds[given[i]]) for i in sorted(parsed.errors)]
