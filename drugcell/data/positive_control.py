"""A positive control for the evaluation machinery: chemistry signal that only neighbours share.

Why: a CV runner is trustworthy only if it tells apart what must differ. Here responses are a
smooth function of the Morgan fingerprint, but only of the bits private to one scaffold family
(each family: one Bemis-Murcko scaffold, members differ by acyclic substituents). So

* under a **random split** a held-out compound has family members in training, its Tanimoto
  neighbours share its private bits and retrieval beats the per-gene mean by far;
* under a **scaffold split** the family is gone from training, the neighbours (other families)
  carry unrelated responses, and retrieval is no better than the per-gene mean.

The output is an in-memory :class:`~drugcell.data.expression_set.ExpressionSet` with Mejia
weights computed by the contest scorer from simulated replicate wells.
"""

from __future__ import annotations

import numpy as np

from drugcell.data import molecules_library as lib
from drugcell.data.expression_set import ExpressionSet

_ACYCLIC = tuple(s for s in lib.SUBSTITUENTS if "%9" not in s and s)
_RINGS = ("",) + tuple(s for s in lib.SUBSTITUENTS if "%9" in s)


def _families(n_compounds: int, family_size: int, rng: np.random.Generator) -> tuple[list[str], np.ndarray]:
    """Molecules in scaffold families: a core (template + fixed ring substituent at R1) and
    members that vary only acyclic substituents at R2/R3, so all members share one Murcko scaffold."""
    from rdkit import Chem, RDLogger
    from rdkit.Chem.Scaffolds import MurckoScaffold

    RDLogger.DisableLog("rdApp.*")
    n_fam = max(4, int(np.ceil(n_compounds / family_size)))
    cores = [(t, r) for t in range(len(lib.SCAFFOLDS)) for r in range(len(_RINGS))]
    order = rng.permutation(len(cores))
    smiles: list[str] = []
    family: list[int] = []
    seen_scaffolds: set[str] = set()
    seen: set[str] = set()
    fam = 0
    for ci in order:
        if fam >= n_fam and len(smiles) >= n_compounds:
            break
        t, r = cores[ci]
        template = lib.SCAFFOLDS[t][1]
        members: list[str] = []
        scaffold = None
        for _ in range(family_size * 20):
            if len(members) == family_size:
                break
            subs = {"R1": _RINGS[r], "R2": _ACYCLIC[rng.integers(len(_ACYCLIC))],
                    "R3": _ACYCLIC[rng.integers(len(_ACYCLIC))]}
            mol = Chem.MolFromSmiles(lib.fill_template(template, subs))
            if mol is None:
                continue
            can = Chem.MolToSmiles(mol)
            scaf = MurckoScaffold.MurckoScaffoldSmiles(mol=mol)
            if can in seen or (scaffold is not None and scaf != scaffold) or scaf in seen_scaffolds:
                continue
            scaffold = scaf
            members.append(can)
        if len(members) < min(3, family_size) or scaffold is None:
            continue
        seen_scaffolds.add(scaffold)
        seen.update(members)
        smiles += members
        family += [fam] * len(members)
        fam += 1
    if len(smiles) < n_compounds:
        raise RuntimeError(f"built {len(smiles)} family molecules, need {n_compounds}; lower n_compounds")
    return smiles[:n_compounds], np.asarray(family[:n_compounds])


def make_positive_control(
    n_compounds: int = 400,
    n_genes: int = 300,
    seed: int = 0,
    *,
    family_size: int = 8,
    latent_dim: int = 16,
    signal: float = 1.0,
    noise_sd: float = 0.25,
    replicates: int = 2,
) -> ExpressionSet:
    """An ExpressionSet whose responses are a smooth function of family-private Morgan bits.

    ``signal`` is the sd of the response around the per-gene level; ``noise_sd`` the replicate
    noise (the truth is the replicate mean). ``info`` holds ``family`` (the scaffold family of
    each compound) for checks.
    """
    from contest_scorer.weights import weights_from_stats
    from drugcell.chem.fingerprints import morgan_bits

    rng = np.random.default_rng(seed)
    smiles, family = _families(n_compounds, family_size, rng)
    fp = morgan_bits(smiles).astype(np.float64)
    # bits seen in more than one family carry nothing: responses cannot transfer across families
    fam_onehot = np.zeros((family.max() + 1, len(smiles)))
    fam_onehot[family, np.arange(len(smiles))] = 1.0
    n_fams_with_bit = ((fam_onehot @ fp) > 0).sum(axis=0)
    private = fp * (n_fams_with_bit == 1)[None, :]
    proj = rng.normal(0.0, 1.0, size=(fp.shape[1], latent_dim))
    h = private @ proj / np.sqrt(np.maximum(private.sum(axis=1, keepdims=True), 1.0))
    z = np.tanh(h)                                              # smooth in the fingerprint
    mix = rng.normal(0.0, 1.0, size=(latent_dim, n_genes))
    resp = z @ mix
    resp *= signal / resp.std()
    level = np.clip(rng.normal(5.0, 2.0, size=n_genes), 0.5, None)
    truth_rep = level + resp[:, None, :] + rng.normal(0.0, noise_sd, size=(len(smiles), replicates, n_genes))
    truth_rep = np.maximum(truth_rep, 0.0)
    mean = truth_rep.mean(axis=1)
    var = truth_rep.var(axis=1, ddof=1) if replicates > 1 else np.zeros_like(mean)
    flat = truth_rep.reshape(-1, n_genes)
    w = weights_from_stats(
        mean, var, np.full(len(smiles), replicates), flat.sum(axis=0), (flat * flat).sum(axis=0), flat.shape[0],
    )
    genes = np.array([f"ENSG{i:011d}" for i in np.sort(rng.choice(np.arange(1, 300_000), n_genes, replace=False))])
    ids = np.array([f"PC{i:06d}" for i in range(len(smiles))], dtype=object)
    control = level.astype(np.float32)
    return ExpressionSet(
        compounds=ids,
        genes=genes,
        expression=mean.astype(np.float32),
        weights=w.astype(np.float32),   # (G, C) as the official file
        n_replicates=np.full(len(smiles), replicates, dtype=np.int32),
        control=control,
        smiles=np.array(smiles, dtype=object),
        inchikey=np.array([""] * len(smiles), dtype=object),
        control_ids=np.array(["DMSO"], dtype=object),
        control_expression=control[None, :],
        control_weights=np.full((n_genes, 1), 1.0 / n_genes, dtype=np.float32),
        info={
            "source": "positive_control",
            "seed": seed,
            "n_families": int(family.max() + 1),
            "family": family.tolist(),
            "params": {"family_size": family_size, "latent_dim": latent_dim, "signal": signal,
                       "noise_sd": noise_sd, "replicates": replicates},
        },
    )
