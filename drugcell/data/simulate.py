"""Simulated DRUG-seq in the exact VCPI layout a contest user holds (``drugcell synth``).

Why: every stage downstream (loader, CV, submission, scorer) can be run end to end, at any size,
on data whose ground truth is known, and whose chemistry signal is real but imperfect.

Generative model (natural-log rates; one well ``w`` of compound ``c`` on plate ``p``, gene ``g``):

    log rate[w,g] = log depth[w] + log p[g] + E[c,g] + plate[p,g] + edge[w]*e[g] + bio[w,g]
    count[w,g]    ~ Poisson(rate)            bio ~ N(-s^2/2, s^2), s^2 = bio_sd[g]^2 + log(1+phi)

The lognormal-Poisson mixture has the negative-binomial variance ``mu + phi*mu^2`` to first order
(``phi`` the common dispersion, 0.002 by default) plus per-gene biological variation. Compound
effects ``E`` are a sum of gene programs: substructure keys (SMARTS in
:mod:`drugcell.data.molecules_library`, graded strength: transferable chemistry signal), a
program per scaffold template (specific to the chemotype: does not transfer to unseen
scaffolds), compound-private factors (unpredictable), and a shared stress response; all scaled by
a potency that is low for most compounds and high for a few hundred. Plate effects are low rank
plus noise and dominate control wells. Genes are "expressed" (full model, ~17 %) or "background"
(rank-one Poisson, sampled sparsely: the cheap bulk of 78k genes).

Library sizes are only known after every gene is drawn, so the counts are drawn twice from the
same per-batch seeds (pass 1: library sizes only; pass 2: gene filter, test truth, QC columns,
parquet writing);
memory stays at one gene batch plus one parquet row group whatever the size.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from contest_scorer.weights import minmax_square_normalize, t_vs_rest
from drugcell.data import molecules_library as lib
from drugcell.errors import DrugcellInputError
from drugcell.provenance import atomic_path, provenance, write_json

FULL_N_GENES = 78_778
ROWS, COLS = 16, 24
ROW_LETTERS = "ABCDEFGHIJKLMNOP"
CONTROL_WELLS = {"DMSO": 32, "Staurosporine": 5, "Brefeldin A": 5, "Rigosertib": 5, "Trichostatin A": 5}
LIBRARY_WELLS_PER_PLATE = ROWS * COLS - sum(CONTROL_WELLS.values())  # 332
RELEASES = ("tvc-bhr-009", "tvc-kdl-010", "tvc-qnu-012")
#: Real Ensembl ids of the 13 mitochondrially encoded genes (so percent_mitochondrial is real).
MT_GENES = (
    "ENSG00000198888", "ENSG00000198763", "ENSG00000198804", "ENSG00000198712", "ENSG00000228253",
    "ENSG00000198899", "ENSG00000198938", "ENSG00000198840", "ENSG00000212907", "ENSG00000198886",
    "ENSG00000198786", "ENSG00000198695", "ENSG00000198727",
)

METADATA_COLUMNS = (
    "sequenced_id", "compound", "user_compound_id", "compound_name", "compound_concentration",
    "compound_concentration_unit", "cell_line", "timepoint", "is_control", "control_type",
    "container_id", "well_id", "row_id", "column_id", "is_edge", "replicate", "release", "batch_id",
    "organism", "assay", "total_umi_count", "total_read_count", "ngenes3", "percent_mitochondrial",
    "percent_ribosomal", "sequencing_date",
)
CHEMISTRY_COLUMNS = ("compound", "smiles", "inchi_key", "molecular_weight", "log_p", "tpsa")
TEST_COLUMNS = (
    "compound", "compound_name", "compound_concentration", "compound_concentration_unit",
    "cell_line", "timepoint", "smiles", "inchi_key",
)

PRESETS: dict[str, dict[str, int]] = {
    "tiny": {"n_compounds": 150, "n_genes": 1500, "n_test": 24},
    "small": {"n_compounds": 1500, "n_genes": 8000, "n_test": 150},
    "full": {"n_compounds": 14_026, "n_genes": FULL_N_GENES, "n_test": 1_064},
}


@dataclass(frozen=True)
class SimConfig:
    """Every knob of the simulator; the defaults were tuned against the organisers' figures."""

    n_compounds: int = 1500
    n_genes: int = 8000
    replicates: int = 2
    n_test: int = 150
    seed: int = 0
    smiles_file: str | None = None
    #: median UMIs per well (real VCPI-like wells: about 2 M)
    median_umis: float = 2e6
    depth_sd: float = 0.30                # well-to-well lognormal depth sd
    plate_depth_sd: float = 0.35          # plate-level depth sd
    failed_fraction: float = 0.004        # wells at 0.3-20 % of their depth
    empty_wells: int = 1                  # DMSO wells with no counts at all
    scored_fraction: float = 0.167        # genes at >= 1 CPM, noise-free; realised ~0.165
    expressed_log10_mean: float = 0.9     # switched-on genes: log10 abundance (shift cancels)
    expressed_log10_sd: float = 1.05      # ... and its spread
    upper_tail: float = 0.0               # extra upper tail (tried: worsens the reference figures)
    program_abundance_bias: float = 0.0   # responsive genes ~ abundance**bias (tried: worsens them)
    mito_share: float = 0.06              # fraction of UMIs on the 13 MT genes
    dispersion: float = 0.002             # NB common dispersion
    bio_sd: float = 0.10                  # median per-gene biological log sd per well
    plate_factors: int = 4                # rank of the plate effect
    plate_sd: float = 0.15                # plate factor loading sd (log scale)
    plate_noise_sd: float = 0.05          # plate x gene independent noise
    edge_sd: float = 0.08                 # edge-well effect per gene
    effect_scale: float = 0.42            # all compound effects (the main realism knob)
    key_program_genes: float = 0.04       # fraction of expressed genes in a key/scaffold program
    scaffold_strength: float = 0.8        # chemotype (template) program: crosses Murcko splits in part
    murcko_strength: float = 0.35         # per-Murcko-scaffold factors: never transfer across a scaffold split
    idio_strength: float = 0.15           # compound-private factors (unpredictable)
    stress_strength: float = 0.7          # shared stress response ~ potency^2
    weak_potency: float = 0.18            # potency of an inactive compound
    active_threshold: float = 1.6         # latent activity where compounds turn clearly active
    n_offcondition: int = 6               # wells at 1 uM or 6 h (the loader must drop them)
    gene_batch: int = 2048                # genes drawn at once (sets the random stream: keep fixed)
    row_group_batches: int = 4            # gene batches per parquet row group


def config_for(preset: str | None = None, **overrides: Any) -> SimConfig:
    """A SimConfig from a preset name plus explicit overrides (None values are ignored)."""
    base: dict[str, Any] = {}
    if preset is not None:
        if preset not in PRESETS:
            raise DrugcellInputError(f"unknown preset {preset!r}; use one of {', '.join(PRESETS)}")
        base.update(PRESETS[preset])
    base.update({k: v for k, v in overrides.items() if v is not None})
    unknown = sorted(set(base) - set(SimConfig.__dataclass_fields__))
    if unknown:
        raise DrugcellInputError(f"unknown simulator option(s) {unknown}; see drugcell.data.simulate.SimConfig")
    cfg = SimConfig(**base)
    _check_config(cfg)
    return cfg


def _check_config(cfg: SimConfig) -> None:
    if cfg.n_compounds < 10:
        raise DrugcellInputError(f"--n-compounds must be at least 10, got {cfg.n_compounds}")
    if cfg.n_genes < 200:
        raise DrugcellInputError(f"--n-genes must be at least 200, got {cfg.n_genes}")
    if cfg.replicates < 1:
        raise DrugcellInputError(f"--replicates must be at least 1, got {cfg.replicates}")
    if cfg.n_test < 1:
        raise DrugcellInputError(f"--n-test must be at least 1, got {cfg.n_test}")


def _rng(seed: int, *key: int) -> np.random.Generator:
    """An independent stream per purpose, so changing one part never shifts another's draws."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=key)))


# ----------------------------------------------------------------------------- chemistry
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
    rng = _rng(cfg.seed, 1)
    if cfg.smiles_file is None:
        mols = lib.enumerate_molecules(need, rng)
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
    pick = np.sort(rng.choice(len(canon), size=need, replace=False))
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


def _compounds(cfg: SimConfig) -> Compounds:
    smiles, template = _molecules(cfg)
    rng = _rng(cfg.seed, 2)
    n_lib = cfg.n_compounds
    order = rng.permutation(len(smiles))            # which molecules are held out is random
    smiles = [smiles[i] for i in order]
    template = template[order]
    split = np.array(["train"] * n_lib + ["test"] * cfg.n_test, dtype=object)
    keys = _key_matrix(smiles)
    murcko = _murcko_codes(smiles)
    strength = np.array([k[2] for k in lib.PROGRAM_KEYS], dtype=np.float64)
    n_templates = int(template.max()) + 1
    template_bias = rng.normal(0.0, 0.5, size=n_templates)
    # latent activity: graded key strengths + chemotype bias + compound luck
    z = keys.astype(np.float64) @ strength + template_bias[template] + rng.normal(0.0, 0.7, size=len(smiles))
    active = 1.0 / (1.0 + np.exp(-2.5 * (z - cfg.active_threshold - 0.8)))
    potency = cfg.weak_potency * np.exp(rng.normal(0.0, 0.35, size=len(smiles))) + active * np.exp(
        rng.normal(0.0, 0.3, size=len(smiles))
    )
    lims = 9_000_000 + rng.choice(400_000, size=len(smiles), replace=False)
    ctrl_names = list(lib.CONTROLS)
    all_smiles = smiles + [lib.CONTROLS[k][0] for k in ctrl_names]
    n_all = len(all_smiles)
    uuids = [str(uuid.UUID(bytes=rng.bytes(16), version=4)) for _ in range(n_all)]
    return Compounds(
        smiles=all_smiles,
        template=np.concatenate([template, -np.ones(len(ctrl_names), dtype=np.int64)]),
        split=np.concatenate([split, np.array(["control"] * len(ctrl_names), dtype=object)]),
        uuid=uuids,
        lims_id=[str(x) for x in lims] + ctrl_names,
        keys=np.vstack([keys, np.zeros((len(ctrl_names), keys.shape[1]), dtype=np.float32)]),
        potency=np.concatenate([potency, np.zeros(len(ctrl_names))]),
        murcko=np.concatenate([murcko, -np.ones(len(ctrl_names), dtype=np.int64)]),
    )


def _murcko_codes(smiles: list[str]) -> np.ndarray:
    from rdkit.Chem.Scaffolds import MurckoScaffold

    scaf = [MurckoScaffold.MurckoScaffoldSmiles(s) for s in smiles]
    return pd.factorize(pd.Series(scaf))[0].astype(np.int64)


# ----------------------------------------------------------------------------- genes
@dataclass
class Genes:
    ids: np.ndarray           # sorted Ensembl-like ids
    log_p: np.ndarray         # log relative abundance (sums to 1 over genes in linear scale)
    expressed: np.ndarray     # bool: full model; else rank-one background
    mito: np.ndarray          # bool
    ribo: np.ndarray          # bool
    bio_sd: np.ndarray        # per-gene total log-scale noise sd (biological + NB dispersion)


def _on_abundances(n_on: int, cfg: SimConfig) -> np.ndarray:
    """Stratified lognormal quantiles: the same shape at any size, no lucky giant gene."""
    from scipy.special import ndtri

    z = ndtri((np.arange(n_on) + 0.5) / n_on)
    # a heavier upper tail: the few hundred very abundant transcripts (ribosomal proteins, ...)
    return 10 ** (cfg.expressed_log10_mean + cfg.expressed_log10_sd * z + cfg.upper_tail * np.maximum(z - 1.5, 0.0))


def _n_on_genes(n_other: int, n_total: int, cfg: SimConfig) -> int:
    """How many genes to switch on so that ``scored_fraction`` of all genes reach 1 CPM."""
    best = n_other
    for n_on in range(max(1, int(cfg.scored_fraction * n_other)), n_other + 1, max(1, n_other // 2000)):
        c = _on_abundances(n_on, cfg)
        cpm = c * 1e6 * (1 - cfg.mito_share) / c.sum()
        if (cpm >= 1.0).sum() >= cfg.scored_fraction * n_total:
            best = n_on
            break
    return best


def _genes(cfg: SimConfig) -> Genes:
    rng = _rng(cfg.seed, 3)
    n = cfg.n_genes
    mt = list(MT_GENES)
    mt_nums = {int(x[4:]) for x in mt}
    nums = 1 + rng.choice(299_999, size=n + 64, replace=False)
    nums = [int(x) for x in nums if int(x) not in mt_nums][: n - len(mt)]
    ids = np.array(sorted([f"ENSG{x:011d}" for x in nums] + mt), dtype=object)
    mito = np.isin(ids, mt)
    other_idx = np.flatnonzero(~mito)
    n_on = _n_on_genes(len(other_idx), n, cfg)
    on = rng.choice(other_idx, size=n_on, replace=False)
    cpm = np.zeros(n)
    cpm[on] = rng.permutation(_on_abundances(n_on, cfg))
    # the 13 mitochondrial genes carry mito_share of the library, scaled like any other gene mass
    on_mass = cpm.sum()
    mt_w = np.exp(rng.normal(0.0, 0.6, size=len(mt)))
    cpm[mito] = on_mass * cfg.mito_share / (1 - cfg.mito_share) * mt_w / mt_w.sum()
    off = np.ones(n, dtype=bool)
    off[on] = False
    off &= ~mito
    # switched-off genes sit well below 1 CPM of the final file, whatever its size
    cpm[off] = 10 ** rng.normal(-1.6, 0.45, size=int(off.sum())) * cpm.sum() / 1e6
    p = cpm / cpm.sum()
    # full model where a gene could reach the filter; rank-one background below 0.3 CPM
    expressed = (p * 1e6 >= 0.3) | mito
    ribo = np.zeros(n, dtype=bool)
    n_ribo = max(1, int(round(80 * n / FULL_N_GENES)))
    top = np.argsort(-np.where(expressed & ~mito, p, -1.0))[: 4 * n_ribo]
    ribo[rng.choice(top, size=n_ribo, replace=False)] = True
    bio = cfg.bio_sd * np.exp(rng.normal(0.0, 0.4, size=n))
    bio_sd = np.sqrt(bio**2 + np.log1p(cfg.dispersion))
    return Genes(ids=ids, log_p=np.log(p), expressed=expressed, mito=mito, ribo=ribo, bio_sd=bio_sd)


# ----------------------------------------------------------------------------- programs
@dataclass
class Programs:
    """Gene programs (P, G) and each compound's coefficients on them (C, P)."""

    loadings: np.ndarray
    coef: np.ndarray
    names: list[str]


def _sparse_program(
    rng: np.random.Generator, expressed: np.ndarray, frac: float, scale: float, pick_p: np.ndarray | None = None
) -> np.ndarray:
    g = len(expressed)
    out = np.zeros(g, dtype=np.float32)
    idx = np.flatnonzero(expressed)
    k = max(3, int(round(frac * len(idx))))
    pick = rng.choice(idx, size=k, replace=False, p=pick_p)
    # mostly-same-sign programs (a pathway goes up or down), heavy-ish tails
    sign = np.where(rng.random(k) < 0.7, 1.0, -1.0) * (1 if rng.random() < 0.5 else -1)
    out[pick] = (sign * scale * rng.gamma(2.0, 0.5, size=k)).astype(np.float32)
    return out


def _programs(cfg: SimConfig, comps: Compounds, genes: Genes) -> Programs:
    rng = _rng(cfg.seed, 4)
    expressed = genes.expressed & ~genes.mito
    # responsive genes lean towards the more abundant ones (abundance ** bias)
    pick_w = np.exp(cfg.program_abundance_bias * genes.log_p[expressed])
    pick_p = pick_w / pick_w.sum()
    strength = np.array([k[2] for k in lib.PROGRAM_KEYS])
    n_keys = len(strength)
    n_templates = int(comps.template.max()) + 1
    n_idio = 24
    loadings, names, cols = [], [], []
    c = len(comps.smiles)
    pot = comps.potency * cfg.effect_scale
    for i in range(n_keys):
        loadings.append(_sparse_program(rng, expressed, cfg.key_program_genes, 1.0, pick_p))
        names.append(f"key:{lib.PROGRAM_KEYS[i][0]}")
        cols.append(pot * strength[i] * comps.keys[:, i])
    template_scale = np.exp(rng.normal(0.0, 0.5, size=n_templates)) * cfg.scaffold_strength
    for t in range(n_templates):
        loadings.append(_sparse_program(rng, expressed, cfg.key_program_genes, 1.0, pick_p))
        names.append(f"scaffold:{t}")
        cols.append(pot * template_scale[t] * (comps.template == t))
    # effects shared by one Bemis-Murcko scaffold only: they never cross a scaffold split
    n_murcko = int(comps.murcko.max()) + 1
    u = rng.normal(0.0, cfg.murcko_strength, size=(n_murcko + 1, n_idio))
    u[-1] = 0.0                                  # controls (code -1)
    mcoef = u[comps.murcko]
    for j in range(n_idio):
        loadings.append(_sparse_program(rng, expressed, 2 * cfg.key_program_genes, 1.0, pick_p))
        names.append(f"murcko:{j}")
        cols.append(pot * mcoef[:, j])
    idio = rng.normal(0.0, cfg.idio_strength, size=(c, n_idio))
    for j in range(n_idio):
        loadings.append(_sparse_program(rng, expressed, 2 * cfg.key_program_genes, 1.0, pick_p))
        names.append(f"private:{j}")
        cols.append(pot * idio[:, j])
    # shared stress response: grows faster than linearly with potency (only actives show it)
    loadings.append(_sparse_program(rng, expressed, 0.10, 0.6, pick_p))
    names.append("stress")
    cols.append(cfg.stress_strength * pot**2)
    ctrl_strength = {"Staurosporine": 3.0, "Brefeldin A": 2.2, "Rigosertib": 1.6, "Trichostatin A": 2.6}
    for name, s in ctrl_strength.items():
        loadings.append(_sparse_program(rng, expressed, 0.08, 1.0, pick_p))
        names.append(f"control:{name}")
        col = np.zeros(c)
        col[comps.lims_id.index(name)] = s
        cols.append(col)
    stress_idx = names.index("stress")
    for name in ("Staurosporine", "Trichostatin A"):
        cols[stress_idx][comps.lims_id.index(name)] = 1.5
    return Programs(
        loadings=np.vstack(loadings).astype(np.float32),
        coef=np.column_stack(cols).astype(np.float32),
        names=names,
    )


# ----------------------------------------------------------------------------- plate design
@dataclass
class Wells:
    """One row per simulated well (training plates first, then test plates)."""

    compound: np.ndarray      # index into Compounds
    plate: np.ndarray
    row: np.ndarray
    col: np.ndarray
    depth: np.ndarray         # target UMIs (0 = empty well)
    effect_mult: np.ndarray   # scales the compound effect (off-condition wells)
    concentration: np.ndarray
    unit: np.ndarray
    timepoint: np.ndarray
    is_test: np.ndarray
    replicate: np.ndarray
    spelling: np.ndarray      # user_compound_id as written in this well

    @property
    def is_edge(self) -> np.ndarray:
        return (self.row == 0) | (self.row == ROWS - 1) | (self.col == 0) | (self.col == COLS - 1)


def _replicate_counts(cfg: SimConfig, n: int, rng: np.random.Generator) -> np.ndarray:
    reps = np.full(n, cfg.replicates, dtype=np.int64)
    if cfg.replicates >= 2:
        u = rng.random(n)
        reps[u < 0.03] += 1
        reps[(u >= 0.03) & (u < 0.05)] -= 1
    return reps


def _plates(
    lib_wells: np.ndarray, n_plates: int, plate0: int, with_controls: bool, comps: Compounds, rng: np.random.Generator
) -> list[tuple[int, int, int, int]]:
    """(compound, plate, row, col) per well; library wells spread evenly over the plates."""
    out = []
    ctrl_index = {name: comps.lims_id.index(name) for name in CONTROL_WELLS}
    chunks = np.array_split(rng.permutation(lib_wells), n_plates)
    for k, chunk in enumerate(chunks):
        pos = rng.permutation(ROWS * COLS)
        i = 0
        if with_controls:
            for name, m in CONTROL_WELLS.items():
                for _ in range(m):
                    out.append((ctrl_index[name], plate0 + k, pos[i] // COLS, pos[i] % COLS))
                    i += 1
        for cidx in chunk:
            out.append((int(cidx), plate0 + k, pos[i] // COLS, pos[i] % COLS))
            i += 1
    return out


def _wells(cfg: SimConfig, comps: Compounds) -> tuple[Wells, np.ndarray]:
    """Plate layout, depths and conditions; also returns off-condition flags."""
    rng = _rng(cfg.seed, 5)
    train = np.flatnonzero(comps.split == "train")
    test = np.flatnonzero(comps.split == "test")
    reps = _replicate_counts(cfg, len(train), rng)
    lib_wells = np.repeat(train, reps)
    off = rng.choice(train, size=min(cfg.n_offcondition, len(train)), replace=False)
    lib_wells = np.concatenate([lib_wells, off])
    n_train_plates = max(2, math.ceil(len(lib_wells) / LIBRARY_WELLS_PER_PLATE))
    rows = _plates(lib_wells, n_train_plates, 0, True, comps, rng)
    n_train_wells = len(rows)
    test_wells = np.repeat(test, _replicate_counts(cfg, len(test), rng))
    n_test_plates = max(1, math.ceil(len(test_wells) / (ROWS * COLS - 52)))
    rows += _plates(test_wells, n_test_plates, n_train_plates, False, comps, rng)
    arr = np.array(rows, dtype=np.int64)
    w = len(arr)
    compound, plate, row, col = arr.T
    is_test = np.arange(w) >= n_train_wells
    # off-condition wells: the last len(off) library wells of each kind are marked by identity
    is_off = np.zeros(w, dtype=bool)
    for cidx in off:  # one well of each chosen compound becomes an off-condition well
        cand = np.flatnonzero((compound == cidx) & ~is_test & ~is_off)
        is_off[cand[-1]] = True
    conc = np.full(w, 10000.0)
    unit = np.full(w, "nM", dtype=object)
    tp = np.full(w, "24h", dtype=object)
    mult = np.ones(w)
    off_idx = np.flatnonzero(is_off)
    for j, i in enumerate(off_idx):
        if j % 2 == 0:
            conc[i], mult[i] = 1000.0, 0.3
        else:
            tp[i], mult[i] = "6h", 0.5
    dmso = compound == comps.lims_id.index("DMSO")
    conc[dmso], unit[dmso] = 0.15, "%"
    # replicate number within (compound, condition)
    key = pd.DataFrame({"c": compound, "t": is_test, "o": is_off})
    replicate = key.groupby(["c", "t", "o"]).cumcount().to_numpy() + 1
    spelling = np.array([comps.lims_id[c] for c in compound], dtype=object)
    for name, (_, variants) in lib.CONTROLS.items():
        m = compound == comps.lims_id.index(name)
        spelling[m] = rng.choice(np.array(variants, dtype=object), size=int(m.sum()))
    # depth: median, plate factor, well lognormal, edge loss, failed wells, cell-killing controls
    n_plates = int(plate.max()) + 1
    plate_depth = np.exp(rng.normal(0.0, cfg.plate_depth_sd, size=n_plates))
    depth = cfg.median_umis * plate_depth[plate] * np.exp(rng.normal(0.0, cfg.depth_sd, size=w))
    edge = (row == 0) | (row == ROWS - 1) | (col == 0) | (col == COLS - 1)
    depth[edge] *= 0.85
    depth[compound == comps.lims_id.index("Staurosporine")] *= 0.5
    failed = rng.random(w) < cfg.failed_fraction
    depth[failed] *= rng.uniform(0.003, 0.2, size=int(failed.sum()))
    dmso_train = np.flatnonzero(dmso & ~is_test)
    if cfg.empty_wells > 0:
        depth[rng.choice(dmso_train, size=min(cfg.empty_wells, len(dmso_train)), replace=False)] = 0.0
    wells = Wells(
        compound=compound, plate=plate, row=row, col=col, depth=depth, effect_mult=mult,
        concentration=conc, unit=unit, timepoint=tp, is_test=is_test, replicate=replicate,
        spelling=spelling,
    )
    return wells, is_off


# ----------------------------------------------------------------------------- counts
@dataclass
class _World:
    cfg: SimConfig
    comps: Compounds
    genes: Genes
    progs: Programs
    wells: Wells
    is_off: np.ndarray
    plate_scores: np.ndarray   # (n_plates, F)
    plate_load: np.ndarray     # (F, G)
    edge_load: np.ndarray      # (G,)
    log_norm: np.ndarray       # (C,) log of each compound's composition total (keeps libraries at depth)


def _world(cfg: SimConfig) -> _World:
    comps = _compounds(cfg)
    genes = _genes(cfg)
    progs = _programs(cfg, comps, genes)
    wells, is_off = _wells(cfg, comps)
    rng = _rng(cfg.seed, 6)
    n_plates = int(wells.plate.max()) + 1
    plate_scores = rng.normal(0.0, 1.0, size=(n_plates, cfg.plate_factors)) * np.linspace(1.0, 0.4, cfg.plate_factors)
    plate_load = (rng.normal(0.0, cfg.plate_sd, size=(cfg.plate_factors, cfg.n_genes))).astype(np.float32)
    edge_load = rng.normal(0.0, cfg.edge_sd, size=cfg.n_genes).astype(np.float32)
    log_norm = _composition_norm(progs, genes, cfg.gene_batch)
    return _World(cfg, comps, genes, progs, wells, is_off, plate_scores, plate_load, edge_load, log_norm)


def _composition_norm(progs: Programs, genes: Genes, batch: int) -> np.ndarray:
    """log sum_g p_g exp(E[c,g]) per compound: a compound that switches genes on must take reads
    from the others (UMIs are a fixed budget per well), so rates are divided by this total."""
    p = np.exp(genes.log_p)
    touched = np.flatnonzero(np.any(progs.loadings != 0, axis=0))
    z = np.full(progs.coef.shape[0], p.sum() - p[touched].sum())
    for a in range(0, len(touched), batch):
        gi = touched[a: a + batch]
        z += np.exp(progs.coef.astype(np.float64) @ progs.loadings[:, gi]) @ p[gi]
    return np.log(z)


def _batch_counts(world: _World, g0: int, g1: int, batch: int, *, library_only: bool = False) -> np.ndarray:
    """Counts (wells x genes) for genes [g0, g1); a pure function of (seed, batch).

    ``library_only`` returns just each well's total over the batch (pass 1). It skips only the
    last draw of the stream (which background gene each background UMI lands on), so both passes
    see identical counts.
    """
    cfg, wells, genes = world.cfg, world.wells, world.genes
    rng = _rng(cfg.seed, 100, batch)
    n_w = len(wells.compound)
    b = g1 - g0
    sl = slice(g0, g1)
    expr = np.flatnonzero(genes.expressed[sl])
    bg = np.flatnonzero(~genes.expressed[sl])
    log_depth = np.log(np.maximum(wells.depth, 1e-300)).astype(np.float32)
    expr_counts = None
    if len(expr):
        gi = g0 + expr
        comp_eff = world.progs.coef @ world.progs.loadings[:, gi]                      # (C, B)
        plate_rng = rng.normal(0.0, cfg.plate_noise_sd, size=(len(world.plate_scores), len(gi)))
        plate_eff = (world.plate_scores @ world.plate_load[:, gi] + plate_rng).astype(np.float32)
        s = genes.bio_sd[gi].astype(np.float32)
        logr = rng.standard_normal((n_w, len(gi)), dtype=np.float32)
        logr *= s
        logr += (genes.log_p[gi] - 0.5 * s.astype(np.float64) ** 2).astype(np.float32)
        logr += comp_eff[wells.compound] * wells.effect_mult[:, None].astype(np.float32)
        logr -= (world.log_norm[wells.compound] * wells.effect_mult)[:, None].astype(np.float32)
        logr += plate_eff[wells.plate]
        logr += np.outer(wells.is_edge.astype(np.float32), world.edge_load[gi])
        logr += log_depth[:, None]
        np.exp(logr, out=logr)
        logr[wells.depth <= 0] = 0.0
        expr_counts = rng.poisson(logr)
    per_well_bg = np.zeros(n_w, dtype=np.int64)
    if len(bg):
        # rank-one Poisson field: UMIs per well, then (last draw) the gene of each UMI
        p_g = np.exp(genes.log_p[g0 + bg])
        per_well_bg = rng.poisson(np.maximum(wells.depth, 0.0) * p_g.sum())
    if library_only:
        total = per_well_bg.copy()
        if expr_counts is not None:
            total += expr_counts.sum(axis=1)
        return total
    out = np.zeros((n_w, b), dtype=np.int32)
    if expr_counts is not None:
        out[:, expr] = expr_counts
    if len(bg):
        cum = np.cumsum(p_g / p_g.sum())
        gj = np.minimum(np.searchsorted(cum, rng.random(int(per_well_bg.sum())), side="right"), len(bg) - 1)
        wi = np.repeat(np.arange(n_w), per_well_bg)
        np.add.at(out.reshape(-1), wi * b + bg[gj], 1)
    return out


def _gene_batches(n_genes: int, size: int) -> list[tuple[int, int]]:
    return [(a, min(a + size, n_genes)) for a in range(0, n_genes, size)]


# ----------------------------------------------------------------------------- public API
def simulate_vcpi(
    out_dir: str | Path,
    *,
    n_compounds: int | None = None,
    n_genes: int | None = None,
    replicates: int | None = None,
    n_test: int | None = None,
    seed: int = 0,
    smiles_file: str | None = None,
    preset: str | None = None,
    progress: bool | Callable[[int], None] = False,
    **knobs: Any,
) -> dict[str, Path]:
    """Write a simulated VCPI data set into ``out_dir``; return ``{name: path}`` of the files.

    Files: train_counts.parquet, train_metadata.parquet, train_chemistry.parquet, gene_filter.csv,
    test_compounds.csv, test_truth.parquet (the held-out answer), test_weights.parquet (Mejia
    weights of the test compounds, official layout), sim_compounds.parquet (ground
    truth per compound: template, keys, potency), sim_programs.parquet (the gene programs:
    program, gene_id, natural-log loading) and synth_manifest.json.
    """
    cfg = config_for(
        preset, n_compounds=n_compounds, n_genes=n_genes, replicates=replicates, n_test=n_test,
        seed=seed, smiles_file=smiles_file, **knobs,
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    world = _world(cfg)
    w = world.wells
    n_w = len(w.compound)
    train_w = np.flatnonzero(~w.is_test)
    test_w = np.flatnonzero(w.is_test)
    contest_w = train_w[~world.is_off[train_w]]
    batches = _gene_batches(cfg.n_genes, cfg.gene_batch)

    bar = None
    if progress is True:
        from tqdm import tqdm

        bar = tqdm(total=2 * len(batches), desc="synth gene batches", unit="batch")

    def tick() -> None:
        if bar is not None:
            bar.update(1)
        elif callable(progress):
            progress(1)

    # pass 1: library sizes (everything else needs them)
    libsize = np.zeros(n_w, dtype=np.int64)
    for b, (g0, g1) in enumerate(batches):
        libsize += _batch_counts(world, g0, g1, b, library_only=True)
        tick()
    if np.any(libsize[test_w] <= 0):
        raise RuntimeError("a test well came out empty; use another seed")

    # pass 2: exact gene filter, test truth, QC counters, counts parquet
    ngenes3 = np.zeros(n_w, dtype=np.int64)
    mito = np.zeros(n_w, dtype=np.int64)
    ribo = np.zeros(n_w, dtype=np.int64)
    sample_ids = _sample_ids(cfg, len(train_w))
    ok = contest_w[libsize[contest_w] > 0]
    inv_ok = 1e6 / libsize[ok].astype(np.float64)
    inv_test = 1e6 / libsize[test_w].astype(np.float64)
    test_codes, test_comp = pd.factorize(w.compound[test_w], sort=True)
    test_n = np.bincount(test_codes).astype(np.float64)
    keep_genes: list[np.ndarray] = []
    test_sums: list[np.ndarray] = []
    test_abs_t: list[np.ndarray] = []
    # Mejia weights of the test compounds (the leaderboard's weights for them): t vs every other
    # contest-condition well, train and test, with the library over all genes (pass 1's sizes).
    all_w = np.concatenate([ok, test_w])
    inv_all = 1e6 / libsize[all_w].astype(np.float64)
    counts_path = out / "train_counts.parquet"
    schema = pa.schema([("gene_id", pa.string())] + [(s, pa.int32()) for s in sample_ids])
    group_rows = cfg.gene_batch * cfg.row_group_batches
    with atomic_path(counts_path) as tmp:
        writer = pq.ParquetWriter(
            tmp, schema, compression="snappy", use_dictionary=["gene_id"], write_statistics=["gene_id"],
        )
        try:
            buf = np.zeros((len(train_w), min(group_rows, cfg.n_genes)), dtype=np.int32)
            filled, group_g0 = 0, 0
            for b, (g0, g1) in enumerate(batches):
                cnt = _batch_counts(world, g0, g1, b)
                ngenes3 += (cnt >= 3).sum(axis=1)
                mito += cnt[:, world.genes.mito[g0:g1]].sum(axis=1, dtype=np.int64)
                ribo += cnt[:, world.genes.ribo[g0:g1]].sum(axis=1, dtype=np.int64)
                mean_cpm = (cnt[ok].T.astype(np.float64) @ inv_ok) / len(ok)
                passed = mean_cpm >= 1.0
                keep_genes.append(g0 + np.flatnonzero(passed))
                lt = np.log2(cnt[test_w][:, passed].astype(np.float64) * inv_test[:, None] + 1.0)
                sums = np.zeros((len(test_comp), int(passed.sum())))
                np.add.at(sums, test_codes, lt)
                mean_p = sums / test_n[:, None]
                test_sums.append(mean_p)
                ss = np.zeros_like(sums)
                np.add.at(ss, test_codes, (lt - mean_p[test_codes]) ** 2)
                var_p = ss / np.maximum(test_n - 1.0, 1.0)[:, None]
                la = np.log2(cnt[all_w][:, passed].astype(np.float64) * inv_all[:, None] + 1.0)
                test_abs_t.append(np.abs(t_vs_rest(mean_p, var_p, test_n, la.sum(0), (la * la).sum(0), len(all_w))))
                buf[:, filled: filled + (g1 - g0)] = cnt[train_w]
                filled += g1 - g0
                if filled == buf.shape[1] or g1 == cfg.n_genes:
                    _write_group(writer, schema, world.genes.ids[group_g0: group_g0 + filled], buf[:, :filled])
                    group_g0 += filled
                    filled = 0
                tick()
        finally:
            writer.close()
    if bar is not None:
        bar.close()
    scored = np.concatenate(keep_genes)
    test_expr = np.hstack(test_sums)
    test_weights = minmax_square_normalize(np.hstack(test_abs_t))  # test compounds x scored genes

    paths = {"train_counts": counts_path}
    paths.update(_write_tables(out, cfg, world, sample_ids, train_w, libsize, ngenes3, mito, ribo,
                               scored, test_comp, test_expr, test_weights))
    manifest = provenance(
        config=asdict(cfg), seed=cfg.seed, command="drugcell synth",
        files={k: str(v.name) for k, v in paths.items()},
        summary=_summary(world, libsize, train_w, scored),
        notes=(
            "gene_filter.csv: mean CPM >= 1 over the contest-condition training wells (library + "
            "controls at 10 uM/24 h, DMSO whatever its concentration), empty wells skipped; "
            "library sizes over all genes. test_truth.parquet: mean log2(CPM+1) of each test "
            "compound's wells on the scored genes."
        ),
    )
    write_json(out / "synth_manifest.json", manifest)
    paths["manifest"] = out / "synth_manifest.json"
    return paths


def _sample_ids(cfg: SimConfig, n: int) -> list[str]:
    rng = _rng(cfg.seed, 7)
    ids = 10_000_000 + rng.choice(89_999_999, size=n, replace=False)
    return [str(x) for x in ids]


def _write_group(writer: pq.ParquetWriter, schema: pa.Schema, gene_ids: np.ndarray, block: np.ndarray) -> None:
    cols = [pa.array(gene_ids.tolist(), type=pa.string())]
    cols += [pa.array(np.ascontiguousarray(block[i]), type=pa.int32()) for i in range(block.shape[0])]
    writer.write_table(pa.Table.from_arrays(cols, schema=schema))


def _descriptors(smiles: list[str]) -> pd.DataFrame:
    from rdkit import Chem
    from rdkit.Chem import Crippen, Descriptors, rdMolDescriptors

    rows = []
    for s in smiles:
        mol = Chem.MolFromSmiles(s)
        rows.append((
            Chem.MolToInchiKey(mol), float(Descriptors.MolWt(mol)), float(Crippen.MolLogP(mol)),
            float(rdMolDescriptors.CalcTPSA(mol)),
        ))
    return pd.DataFrame(rows, columns=["inchi_key", "molecular_weight", "log_p", "tpsa"])


def _write_parquet(path: Path, df: pd.DataFrame) -> None:
    table = pa.Table.from_pandas(df, preserve_index=False)
    table = table.replace_schema_metadata(None)   # no pandas/version blob: same bytes every run
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def _write_tables(
    out: Path, cfg: SimConfig, world: _World, sample_ids: list[str], train_w: np.ndarray,
    libsize: np.ndarray, ngenes3: np.ndarray, mito: np.ndarray, ribo: np.ndarray,
    scored: np.ndarray, test_comp: np.ndarray, test_expr: np.ndarray, test_weights: np.ndarray,
) -> dict[str, Path]:
    comps, w, genes = world.comps, world.wells, world.genes
    rng = _rng(cfg.seed, 8)
    desc = _descriptors(comps.smiles)
    ci = w.compound[train_w]
    is_ctrl = comps.split[ci] == "control"
    names = np.array(comps.lims_id, dtype=object)
    ctrl_type = np.where(~is_ctrl, "none", np.where(names[ci] == "DMSO", "vehicle", "positive"))
    plate = w.plate[train_w]
    n_plates = int(plate.max()) + 1
    release = np.array([RELEASES[min(2, p * 3 // n_plates)] for p in plate], dtype=object)
    lib_tw = libsize[train_w]
    with np.errstate(divide="ignore", invalid="ignore"):
        pct_mt = np.where(lib_tw > 0, 100.0 * mito[train_w] / np.maximum(lib_tw, 1), 0.0)
        pct_rb = np.where(lib_tw > 0, 100.0 * ribo[train_w] / np.maximum(lib_tw, 1), 0.0)
    reads = np.round(lib_tw * np.exp(rng.normal(np.log(2.6), 0.15, size=len(train_w)))).astype(np.int64)
    dates = pd.Timestamp("2025-03-03") + pd.to_timedelta(plate // 8 * 7, unit="D")
    row, col = w.row[train_w], w.col[train_w]
    comp_name = np.where(is_ctrl, w.spelling[train_w], np.char.add("SIM-", names[ci].astype(str)))
    meta = pd.DataFrame({
        "sequenced_id": sample_ids,
        "compound": np.array(comps.uuid, dtype=object)[ci],
        "user_compound_id": w.spelling[train_w],
        "compound_name": comp_name.astype(object),
        "compound_concentration": w.concentration[train_w],
        "compound_concentration_unit": w.unit[train_w],
        "cell_line": "THP-1",
        "timepoint": w.timepoint[train_w],
        "is_control": is_ctrl,
        "control_type": ctrl_type.astype(object),
        "container_id": [f"PLT{p + 1:05d}" for p in plate],
        "well_id": [f"{ROW_LETTERS[r]}{c + 1:02d}" for r, c in zip(row, col)],
        "row_id": [ROW_LETTERS[r] for r in row],
        "column_id": (col + 1).astype(np.int64),
        "is_edge": w.is_edge[train_w],
        "replicate": w.replicate[train_w].astype(np.int64),
        "release": release,
        "batch_id": [f"B{p // 4 + 1:03d}" for p in plate],
        "organism": "Homo sapiens",
        "assay": "DRUG-seq",
        "total_umi_count": lib_tw.astype(np.int64),
        "total_read_count": reads,
        "ngenes3": ngenes3[train_w].astype(np.int64),
        "percent_mitochondrial": pct_mt,
        "percent_ribosomal": pct_rb,
        "sequencing_date": [str(d.date()) for d in dates],
    })
    assert tuple(meta.columns) == METADATA_COLUMNS
    paths: dict[str, Path] = {}
    paths["train_metadata"] = out / "train_metadata.parquet"
    _write_parquet(paths["train_metadata"], meta)

    train_or_ctrl = np.flatnonzero(comps.split != "test")
    chem = pd.DataFrame({
        "compound": np.array(comps.uuid, dtype=object)[train_or_ctrl],
        "smiles": np.array(comps.smiles, dtype=object)[train_or_ctrl],
    })
    chem = pd.concat([chem, desc.iloc[train_or_ctrl].reset_index(drop=True)], axis=1)
    paths["train_chemistry"] = out / "train_chemistry.parquet"
    _write_parquet(paths["train_chemistry"], chem[list(CHEMISTRY_COLUMNS)])

    paths["gene_filter"] = out / "gene_filter.csv"
    with atomic_path(paths["gene_filter"]) as tmp:
        pd.DataFrame({"gene_id": genes.ids[scored]}).to_csv(tmp, index=False)

    test_ids = names[test_comp]
    test_df = pd.DataFrame({
        "compound": test_ids,
        "compound_name": np.char.add("SIM-", test_ids.astype(str)).astype(object),
        "compound_concentration": 10.0,
        "compound_concentration_unit": "uM",
        "cell_line": "THP-1",
        "timepoint": "24h",
        "smiles": np.array(comps.smiles, dtype=object)[test_comp],
        "inchi_key": desc["inchi_key"].to_numpy()[test_comp],
    })
    paths["test_compounds"] = out / "test_compounds.csv"
    with atomic_path(paths["test_compounds"]) as tmp:
        test_df.to_csv(tmp, index=False)

    order = np.argsort(test_ids.astype(str), kind="stable")
    truth = pd.DataFrame({
        "compound": np.repeat(test_ids[order].astype(str), len(scored)),
        "gene_id": np.tile(genes.ids[scored].astype(str), len(order)),
        "expression": test_expr[order].ravel(),
    })
    paths["test_truth"] = out / "test_truth.parquet"
    _write_parquet(paths["test_truth"], truth)
    # the official weights layout: gene_id + one column per test compound
    wdf = pd.DataFrame(test_weights[order].T.astype(np.float32), columns=test_ids[order].astype(str))
    wdf.insert(0, "gene_id", genes.ids[scored].astype(str))
    paths["test_weights"] = out / "test_weights.parquet"
    _write_parquet(paths["test_weights"], wdf)

    key_names = [k[0] for k in lib.PROGRAM_KEYS]
    sim = pd.DataFrame({
        "compound": comps.uuid,
        "user_compound_id": comps.lims_id,
        "split": comps.split,
        "smiles": comps.smiles,
        "template": comps.template,
        "template_name": [lib.SCAFFOLDS[t][0] if (t >= 0 and cfg.smiles_file is None) else ("" if t < 0 else f"murcko_{t}") for t in comps.template],
        "murcko_group": comps.murcko,
        "potency": comps.potency,
        "active": comps.potency > cfg.weak_potency * 3,
        "keys": [";".join(n for n, on in zip(key_names, row) if on) for row in comps.keys],
    })
    paths["sim_compounds"] = out / "sim_compounds.parquet"
    _write_parquet(paths["sim_compounds"], sim)

    prog_idx, gene_idx = np.nonzero(world.progs.loadings)
    programs = pd.DataFrame({
        "program": np.array(world.progs.names, dtype=object)[prog_idx],
        "gene_id": genes.ids[gene_idx],
        "loading": world.progs.loadings[prog_idx, gene_idx].astype(np.float64),
    })
    paths["sim_programs"] = out / "sim_programs.parquet"
    _write_parquet(paths["sim_programs"], programs)
    return paths


def _summary(world: _World, libsize: np.ndarray, train_w: np.ndarray, scored: np.ndarray) -> dict[str, Any]:
    w = world.wells
    lt = libsize[train_w]
    return {
        "n_train_wells": int(len(train_w)),
        "n_test_wells": int(w.is_test.sum()),
        "n_plates_train": int(w.plate[train_w].max() + 1),
        "n_genes": int(world.cfg.n_genes),
        "n_scored_genes": int(len(scored)),
        "fraction_scored": float(len(scored) / world.cfg.n_genes),
        "median_umis": float(np.median(lt[lt > 0])),
        "n_failed_wells": int(((lt > 0) & (lt < 0.25 * np.median(lt))).sum()),
        "n_empty_wells": int((lt == 0).sum()),
        "n_offcondition_wells": int(world.is_off.sum()),
        "n_active_compounds": int((world.comps.potency > world.cfg.weak_potency * 3).sum()),
    }


# ----------------------------------------------------------------------------- realism check
ORGANISER_FIGURES = {
    "truth": 0.0, "truth_plus_N(0,0.1)": 0.010, "per_gene_training_mean": 0.507,
    "random_training_compound": 0.701, "truth_plus_N(0,1)": 1.003,
    "global_constant_training_mean": 5.785, "constant_5": 8.345,
}


def reference_figures(data_dir: str | Path, *, n_holdout: int = 200, seed: int = 0) -> dict[str, float]:
    """The organisers' reference table recomputed on a simulated set (in memory: small sizes only).

    Uses the contest scorer for the target and the official-build Mejia weights (all contest
    training wells, controls as columns), then scores simple predictors on ``n_holdout`` random
    library compounds, as the organisers did with 200 held-out training compounds.
    """
    from contest_scorer import compute_mejia_weights, counts_to_expression, per_compound_wmse

    d = Path(data_dir)
    meta = pd.read_parquet(d / "train_metadata.parquet")
    counts = pd.read_parquet(d / "train_counts.parquet")
    genes = pd.read_csv(d / "gene_filter.csv")["gene_id"].astype(str).tolist()
    dmso = meta["user_compound_id"] == "DMSO"
    contest = (meta["timepoint"] == "24h") & ((meta["compound_concentration"] == 10000.0) | dmso)
    meta = meta.loc[contest].copy()
    canon = {lib._norm(v): k for k, (_, vs) in lib.CONTROLS.items() for v in vs}
    meta["key"] = [canon.get(lib._norm(u), u) for u in meta["user_compound_id"]]
    counts = counts[["gene_id", *meta["sequenced_id"].tolist()]]
    truth = counts_to_expression(counts, meta, compound_col="key", gene_filter=genes)
    mat = truth.pivot(index="compound", columns="gene_id", values="expression")
    weights = compute_mejia_weights(counts, meta, compound_col="key", gene_filter=genes)
    weights = weights.loc[mat.columns, mat.index]
    library = np.array([c for c in mat.index if c not in lib.CONTROLS])
    rng = np.random.default_rng(seed)
    hold = rng.choice(library, size=min(n_holdout, len(library) // 2), replace=False)
    train = np.setdiff1d(library, hold)
    t = mat.loc[hold].to_numpy()
    tr = mat.loc[train].to_numpy()
    w = weights[hold].to_numpy()
    preds = {
        "truth": t,
        "truth_plus_N(0,0.1)": t + rng.normal(0, 0.1, size=t.shape),
        "per_gene_training_mean": np.broadcast_to(tr.mean(axis=0), t.shape),
        "random_training_compound": tr[rng.integers(0, len(tr), size=len(hold))],
        "truth_plus_N(0,1)": t + rng.normal(0, 1.0, size=t.shape),
        "global_constant_training_mean": np.full(t.shape, tr.mean()),
        "constant_5": np.full(t.shape, 5.0),
    }
    return {k: float(per_compound_wmse(t, p, w).mean()) for k, p in preds.items()}
