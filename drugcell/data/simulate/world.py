"""The simulated world (compounds, genes, programs, wells, plate and edge effects) and its counts.

Why apart: :func:`batch_counts` is the one place counts are drawn; both passes of the run and the
tests call it, and it is a pure function of (seed, gene batch), so memory stays at one batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from drugcell.data.simulate.compounds import Compounds, make_compounds
from drugcell.data.simulate.config import STREAM_COUNTS, STREAM_WORLD, SimConfig, stream
from drugcell.data.simulate.genes import Genes, Programs, make_genes, make_programs
from drugcell.data.simulate.layout import Wells, make_wells


@dataclass
class World:
    """Everything drawn once per data set; counts are then drawn gene batch by gene batch."""

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


def build_world(cfg: SimConfig) -> World:
    """Draw compounds, genes, programs, wells, then plate and edge effects (each its own stream)."""
    comps = make_compounds(cfg)
    genes = make_genes(cfg)
    progs = make_programs(cfg, comps, genes)
    wells, is_off = make_wells(cfg, comps)
    rng = stream(cfg.seed, STREAM_WORLD)
    n_plates = int(wells.plate.max()) + 1
    plate_scores = rng.normal(0.0, 1.0, size=(n_plates, cfg.plate_factors)) * np.linspace(1.0, 0.4, cfg.plate_factors)
    plate_load = (rng.normal(0.0, cfg.plate_sd, size=(cfg.plate_factors, cfg.n_genes))).astype(np.float32)
    edge_load = rng.normal(0.0, cfg.edge_sd, size=cfg.n_genes).astype(np.float32)
    log_norm = _composition_norm(progs, genes, cfg.gene_batch)
    return World(cfg, comps, genes, progs, wells, is_off, plate_scores, plate_load, edge_load, log_norm)


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


def batch_counts(world: World, g0: int, g1: int, batch: int, *, library_only: bool = False) -> np.ndarray:
    """Counts (wells x genes) for genes [g0, g1); a pure function of (seed, batch).

    ``library_only`` returns just each well's total over the batch (pass 1). It skips only the
    last draw of the stream (which background gene each background UMI lands on), so both passes
    see identical counts.
    """
    cfg, wells, genes = world.cfg, world.wells, world.genes
    rng = stream(cfg.seed, STREAM_COUNTS, batch)
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


def gene_batches(n_genes: int, size: int) -> list[tuple[int, int]]:
    """``[g0, g1)`` of each gene batch; the batch index keys its random stream."""
    return [(a, min(a + size, n_genes)) for a in range(0, n_genes, size)]

