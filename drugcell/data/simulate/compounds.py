"""Simulated compounds: molecules, structure keys, latent potency, ids; and their descriptors.

Why apart: the chemistry is where the transferable signal comes from (keys and templates); the
rest of the model only reads the :class:`Compounds` table.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from drugcell.data import molecules_library as lib
from drugcell.data import vcpi
from drugcell.data.simulate.config import STREAM_COMPOUNDS, STREAM_MOLECULES, SimConfig, stream
from drugcell.errors import DrugcellInputError

SPLIT_TRAIN, SPLIT_TEST, SPLIT_CONTROL = "train", "test", "control"


@dataclass
class Compounds:
    """All simulated compounds: training library, held-out test, then the 5 controls."""

    smiles: list[str]
    template: np.ndarray      # scaffold template index (or Murcko group for a SMILES file); -1 controls
    split: np.ndarray         # "train" | "test" | "control"
    uuid: list[str]
    lims_id: list[str]        # user_compound_id; control name for controls
    keys: np.ndarray          # (C, K) 0/1 program keys
    potency: np.ndarray       # (C,)
    murcko: np.ndarray        # Bemis-Murcko scaffold code; -1 controls


def is_active(potency: np.ndarray, cfg: SimConfig) -> np.ndarray:
    """The "clearly active" flag of sim_compounds and the manifest summary."""
    return potency > cfg.weak_potency * 3


def _read_smiles_file(path: str) -> list[str]:
    p = Path(path)
    if not p.exists():
        raise DrugcellInputError(f"--smiles-file {path}: no such file; give a CSV with a 'smiles' column or one SMILES per line")
    text = p.read_text().splitlines()
    if text and "smiles" in [c.strip().lower() for c in text[0].split(",")]:
        df = pd.read_csv(p)
        col = next(c for c in df.columns if c.strip().lower() == "smiles")
        return [str(s) for s in df[col].dropna()]
    return [line.split()[0] for line in text if line.strip() and not line.startswith("#")]


def _molecules(cfg: SimConfig) -> tuple[list[str], np.ndarray]:
    """Canonical SMILES and template index for n_compounds + n_test distinct molecules."""
    need = cfg.n_compounds + cfg.n_test
    gen = stream(cfg.seed, STREAM_MOLECULES)
    if cfg.smiles_file is None:
        mols = lib.enumerate_molecules(need, gen)
        return [m.smiles for m in mols], np.array([m.scaffold_index for m in mols], dtype=np.int64)
    from rdkit import Chem, RDLogger
    from rdkit.Chem.Scaffolds import MurckoScaffold

    RDLogger.DisableLog("rdApp.*")
    raw = _read_smiles_file(cfg.smiles_file)
    seen: dict[str, None] = {}
    for s in raw:
        mol = Chem.MolFromSmiles(s)
        if mol is not None:
            seen.setdefault(Chem.MolToSmiles(mol))
    canon = list(seen)
    if len(canon) < need:
        raise DrugcellInputError(
            f"--smiles-file {cfg.smiles_file}: {len(canon)} distinct valid molecules, need "
            f"{need} (n_compounds + n_test); lower --n-compounds/--n-test or add molecules"
        )
    pick = np.sort(gen.choice(len(canon), size=need, replace=False))
    smiles = [canon[i] for i in pick]
    scaf = [MurckoScaffold.MurckoScaffoldSmiles(s) for s in smiles]
    codes, _ = pd.factorize(pd.Series(scaf))
    return smiles, codes.astype(np.int64)


def _key_matrix(smiles: list[str]) -> np.ndarray:
    from rdkit import Chem

    pats = [Chem.MolFromSmarts(s) for _, s, _ in lib.PROGRAM_KEYS]
    out = np.zeros((len(smiles), len(pats)), dtype=np.float32)
    for i, s in enumerate(smiles):
        mol = Chem.MolFromSmiles(s)
        if mol is None:
            continue
        out[i] = [mol.HasSubstructMatch(p) for p in pats]
    return out


def _murcko_codes(smiles: list[str]) -> np.ndarray:
    from rdkit.Chem.Scaffolds import MurckoScaffold

    scaf = [MurckoScaffold.MurckoScaffoldSmiles(s) for s in smiles]
    return pd.factorize(pd.Series(scaf))[0].astype(np.int64)


def make_compounds(cfg: SimConfig) -> Compounds:
    """Library and test molecules in random order (which are held out is random), then controls."""
    smiles, template = _molecules(cfg)
    gen = stream(cfg.seed, STREAM_COMPOUNDS)
    n_lib = cfg.n_compounds
    order = gen.permutation(len(smiles))            # which molecules are held out is random
    smiles = [smiles[i] for i in order]
    template = template[order]
    split = np.array([SPLIT_TRAIN] * n_lib + [SPLIT_TEST] * cfg.n_test, dtype=object)
    keys = _key_matrix(smiles)
    murcko = _murcko_codes(smiles)
    strength = np.array([k[2] for k in lib.PROGRAM_KEYS], dtype=np.float64)
    n_templates = int(template.max()) + 1
    template_bias = gen.normal(0.0, 0.5, size=n_templates)
    # latent activity: graded key strengths + chemotype bias + compound luck
    z = keys.astype(np.float64) @ strength + template_bias[template] + gen.normal(0.0, 0.7, size=len(smiles))
    active = 1.0 / (1.0 + np.exp(-2.5 * (z - cfg.active_threshold - 0.8)))
    potency = cfg.weak_potency * np.exp(gen.normal(0.0, 0.35, size=len(smiles))) + active * np.exp(
        gen.normal(0.0, 0.3, size=len(smiles))
    )
    lims = 9_000_000 + gen.choice(400_000, size=len(smiles), replace=False)
    ctrl_names = list(lib.CONTROLS)
    all_smiles = smiles + [lib.CONTROLS[k][0] for k in ctrl_names]
    n_all = len(all_smiles)
    uuids = [str(uuid.UUID(bytes=gen.bytes(16), version=4)) for _ in range(n_all)]
    return Compounds(
        smiles=all_smiles,
        template=np.concatenate([template, -np.ones(len(ctrl_names), dtype=np.int64)]),
        split=np.concatenate([split, np.array([SPLIT_CONTROL] * len(ctrl_names), dtype=object)]),
        uuid=uuids,
        lims_id=[str(x) for x in lims] + ctrl_names,
        keys=np.vstack([keys, np.zeros((len(ctrl_names), keys.shape[1]), dtype=np.float32)]),
        potency=np.concatenate([potency, np.zeros(len(ctrl_names))]),
        murcko=np.concatenate([murcko, -np.ones(len(ctrl_names), dtype=np.int64)]),
    )


def descriptors(smiles: list[str]) -> pd.DataFrame:
    """InChIKey, molecular weight, logP and TPSA per molecule (the chemistry file's extra columns)."""
    from rdkit import Chem
    from rdkit.Chem import Crippen, Descriptors, rdMolDescriptors

    rows = []
    for s in smiles:
        mol = Chem.MolFromSmiles(s)
        rows.append((
            Chem.MolToInchiKey(mol), float(Descriptors.MolWt(mol)), float(Crippen.MolLogP(mol)),
            float(rdMolDescriptors.CalcTPSA(mol)),
        ))
    return pd.DataFrame(rows, columns=[vcpi.INCHIKEY_COL, vcpi.MOLECULAR_WEIGHT_COL, vcpi.LOG_P_COL, vcpi.TPSA_COL])
