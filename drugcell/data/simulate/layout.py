"""Plate design: which compound sits in which well of which 384-well plate, at what condition and depth.

Why apart: the layout is what a contest user sees in the metadata (plates, edges, replicates,
control spellings, off-condition wells, library sizes); the count model only reads it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from drugcell.data import molecules_library as lib
from drugcell.data import vcpi
from drugcell.data.simulate.compounds import SPLIT_TEST, SPLIT_TRAIN, Compounds
from drugcell.data.simulate.config import STREAM_SAMPLE_IDS, STREAM_WELLS, SimConfig, stream

ROWS, COLS = 16, 24
ROW_LETTERS = "ABCDEFGHIJKLMNOP"
#: control wells on every training plate (test plates hold library compounds only)
CONTROL_WELLS = {vcpi.DMSO: 32, "Staurosporine": 5, "Brefeldin A": 5, "Rigosertib": 5, "Trichostatin A": 5}
LIBRARY_WELLS_PER_PLATE = ROWS * COLS - sum(CONTROL_WELLS.values())  # 332
#: library wells per test plate (as if the controls' 52 wells were kept free)
TEST_WELLS_PER_PLATE = ROWS * COLS - 52
#: the two off-condition kinds: (concentration nM, timepoint, effect multiplier); alternating
OFF_LOW_DOSE = (1000.0, 0.3)
OFF_EARLY = ("6h", 0.5)


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
        return edge_mask(self.row, self.col)


def edge_mask(row: np.ndarray, col: np.ndarray) -> np.ndarray:
    """True for wells on the plate's outer ring."""
    return (row == 0) | (row == ROWS - 1) | (col == 0) | (col == COLS - 1)


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


def _place(cfg: SimConfig, comps: Compounds, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Wells as (compound, plate, row, col) rows, the test flag, and the off-condition compounds."""
    train = np.flatnonzero(comps.split == SPLIT_TRAIN)
    test = np.flatnonzero(comps.split == SPLIT_TEST)
    reps = _replicate_counts(cfg, len(train), rng)
    lib_wells = np.repeat(train, reps)
    off = rng.choice(train, size=min(cfg.n_offcondition, len(train)), replace=False)
    lib_wells = np.concatenate([lib_wells, off])
    n_train_plates = max(2, math.ceil(len(lib_wells) / LIBRARY_WELLS_PER_PLATE))
    rows = _plates(lib_wells, n_train_plates, 0, True, comps, rng)
    n_train_wells = len(rows)
    test_wells = np.repeat(test, _replicate_counts(cfg, len(test), rng))
    n_test_plates = max(1, math.ceil(len(test_wells) / TEST_WELLS_PER_PLATE))
    rows += _plates(test_wells, n_test_plates, n_train_plates, False, comps, rng)
    arr = np.array(rows, dtype=np.int64)
    is_test = np.arange(len(arr)) >= n_train_wells
    return arr, is_test, off


def _off_condition(compound: np.ndarray, is_test: np.ndarray, off: np.ndarray) -> np.ndarray:
    """One training well of each chosen compound (its last) becomes an off-condition well."""
    is_off = np.zeros(len(compound), dtype=bool)
    for cidx in off:
        cand = np.flatnonzero((compound == cidx) & ~is_test & ~is_off)
        is_off[cand[-1]] = True
    return is_off


def _conditions(
    compound: np.ndarray, is_off: np.ndarray, comps: Compounds,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Concentration, unit, timepoint and effect multiplier per well."""
    w = len(compound)
    conc = np.full(w, vcpi.CONTEST_CONCENTRATION_NM)
    unit = np.full(w, vcpi.CONCENTRATION_UNIT_NM, dtype=object)
    tp = np.full(w, vcpi.CONTEST_TIMEPOINT, dtype=object)
    mult = np.ones(w)
    for j, i in enumerate(np.flatnonzero(is_off)):
        if j % 2 == 0:
            conc[i], mult[i] = OFF_LOW_DOSE
        else:
            tp[i], mult[i] = OFF_EARLY
    dmso = compound == comps.lims_id.index(vcpi.DMSO)
    conc[dmso], unit[dmso] = vcpi.DMSO_CONCENTRATION, vcpi.DMSO_CONCENTRATION_UNIT
    return conc, unit, tp, mult


def _spellings(compound: np.ndarray, comps: Compounds, rng: np.random.Generator) -> np.ndarray:
    """``user_compound_id`` as written per well: controls in one of their variant spellings."""
    spelling = np.array([comps.lims_id[c] for c in compound], dtype=object)
    for name, (_, variants) in lib.CONTROLS.items():
        m = compound == comps.lims_id.index(name)
        spelling[m] = rng.choice(np.array(variants, dtype=object), size=int(m.sum()))
    return spelling


def _depths(
    cfg: SimConfig, comps: Compounds, arr: np.ndarray, is_test: np.ndarray, rng: np.random.Generator,
) -> np.ndarray:
    """Target UMIs: median, plate factor, well lognormal, edge loss, failed wells, cell-killing controls."""
    compound, plate, row, col = arr.T
    w = len(compound)
    n_plates = int(plate.max()) + 1
    plate_depth = np.exp(rng.normal(0.0, cfg.plate_depth_sd, size=n_plates))
    depth = cfg.median_umis * plate_depth[plate] * np.exp(rng.normal(0.0, cfg.depth_sd, size=w))
    depth[edge_mask(row, col)] *= 0.85
    depth[compound == comps.lims_id.index("Staurosporine")] *= 0.5
    failed = rng.random(w) < cfg.failed_fraction
    depth[failed] *= rng.uniform(0.003, 0.2, size=int(failed.sum()))
    dmso_train = np.flatnonzero((compound == comps.lims_id.index(vcpi.DMSO)) & ~is_test)
    if cfg.empty_wells > 0:
        depth[rng.choice(dmso_train, size=min(cfg.empty_wells, len(dmso_train)), replace=False)] = 0.0
    return depth


def make_wells(cfg: SimConfig, comps: Compounds) -> tuple[Wells, np.ndarray]:
    """Plate layout, depths and conditions; also returns off-condition flags."""
    rng = stream(cfg.seed, STREAM_WELLS)
    arr, is_test, off = _place(cfg, comps, rng)
    compound, plate, row, col = arr.T
    is_off = _off_condition(compound, is_test, off)
    conc, unit, tp, mult = _conditions(compound, is_off, comps)
    # replicate number within (compound, condition)
    key = pd.DataFrame({"c": compound, "t": is_test, "o": is_off})
    replicate = key.groupby(["c", "t", "o"]).cumcount().to_numpy() + 1
    spelling = _spellings(compound, comps, rng)
    depth = _depths(cfg, comps, arr, is_test, rng)
    wells = Wells(
        compound=compound, plate=plate, row=row, col=col, depth=depth, effect_mult=mult,
        concentration=conc, unit=unit, timepoint=tp, is_test=is_test, replicate=replicate,
        spelling=spelling,
    )
    return wells, is_off


def sample_ids(cfg: SimConfig, n: int) -> list[str]:
    """Distinct 8-digit ``sequenced_id`` values for the ``n`` training wells."""
    rng = stream(cfg.seed, STREAM_SAMPLE_IDS)
    ids = 10_000_000 + rng.choice(89_999_999, size=n, replace=False)
    return [str(x) for x in ids]
