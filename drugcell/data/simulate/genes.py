"""Simulated genes (ids, abundance, noise) and the gene programs compounds act through.

Why apart: genes and programs are the "biology" half of the model; both are drawn once per data
set and then only read by the count generator (:mod:`.world`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from drugcell.data import molecules_library as lib
from drugcell.data.simulate.compounds import Compounds
from drugcell.data.simulate.config import FULL_N_GENES, STREAM_GENES, STREAM_PROGRAMS, SimConfig, stream

#: Real Ensembl ids of the 13 mitochondrially encoded genes (so percent_mitochondrial is real).
MT_GENES = (
    "ENSG00000198888", "ENSG00000198763", "ENSG00000198804", "ENSG00000198712", "ENSG00000228253",
    "ENSG00000198899", "ENSG00000198938", "ENSG00000198840", "ENSG00000212907", "ENSG00000198886",
    "ENSG00000198786", "ENSG00000198695", "ENSG00000198727",
)
#: Program strength of each positive control (DMSO has none).
CONTROL_STRENGTH = {"Staurosporine": 3.0, "Brefeldin A": 2.2, "Rigosertib": 1.6, "Trichostatin A": 2.6}
#: Positive controls that also trigger the shared stress response, and how strongly.
CONTROL_STRESS = {"Staurosporine": 1.5, "Trichostatin A": 1.5}


@dataclass
class Genes:
    """All simulated genes, sorted by id; the order of every gene axis in the model."""

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


def make_genes(cfg: SimConfig) -> Genes:
    """Ids, abundances (so that ``scored_fraction`` pass the filter), noise, MT and ribosomal flags."""
    rng = stream(cfg.seed, STREAM_GENES)
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


def make_programs(cfg: SimConfig, comps: Compounds, genes: Genes) -> Programs:
    """Key, template, Murcko, private, stress and control programs, and who carries them how much."""
    rng = stream(cfg.seed, STREAM_PROGRAMS)
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
    for name, s in CONTROL_STRENGTH.items():
        loadings.append(_sparse_program(rng, expressed, 0.08, 1.0, pick_p))
        names.append(f"control:{name}")
        col = np.zeros(c)
        col[comps.lims_id.index(name)] = s
        cols.append(col)
    stress_idx = names.index("stress")
    for name, s in CONTROL_STRESS.items():
        cols[stress_idx][comps.lims_id.index(name)] = s
    return Programs(
        loadings=np.vstack(loadings).astype(np.float32),
        coef=np.column_stack(cols).astype(np.float32),
        names=names,
    )

