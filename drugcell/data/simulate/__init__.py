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
parquet writing); memory stays at one gene batch plus one parquet row group whatever the size.

Modules, in dependency order: :mod:`.config` (knobs, presets, random streams), :mod:`.compounds`,
:mod:`.genes` (genes and programs), :mod:`.layout` (plates and wells), :mod:`.world` (the drawn
world and :func:`~.world.batch_counts`), :mod:`.truth` (pass-2 tallies), :mod:`.writers` (one per
output file), :mod:`.run` (:func:`simulate_vcpi`) and :mod:`.reference` (the realism check).
"""

from __future__ import annotations

from drugcell.data.simulate.compounds import Compounds
from drugcell.data.simulate.config import FULL_N_GENES, PRESETS, SimConfig, config_for
from drugcell.data.simulate.genes import MT_GENES, Genes, Programs
from drugcell.data.simulate.layout import COLS, CONTROL_WELLS, LIBRARY_WELLS_PER_PLATE, ROW_LETTERS, ROWS, Wells
from drugcell.data.simulate.reference import ORGANISER_FIGURES, reference_figures
from drugcell.data.simulate.run import simulate_vcpi
from drugcell.data.simulate.writers import CHEMISTRY_COLUMNS, METADATA_COLUMNS, RELEASES, TEST_COLUMNS

__all__ = [
    "CHEMISTRY_COLUMNS", "COLS", "CONTROL_WELLS", "FULL_N_GENES", "LIBRARY_WELLS_PER_PLATE", "METADATA_COLUMNS",
    "MT_GENES", "ORGANISER_FIGURES", "PRESETS", "RELEASES", "ROWS", "ROW_LETTERS", "TEST_COLUMNS", "Compounds",
    "Genes", "Programs", "SimConfig", "Wells", "config_for", "reference_figures", "simulate_vcpi",
]
