"""The simulator's output files, one writer per table, spelled with the contest's own column names.

Why apart: the layout is the contract with the loader and the scorer. Contest columns come from
:mod:`drugcell.data.vcpi` (input files) and :mod:`drugcell.defaults` (long tables), so simulator
and loader cannot drift apart; every file is written atomically and without run-dependent
metadata, so the same seed gives the same bytes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from drugcell.data import molecules_library as lib
from drugcell.data import vcpi
from drugcell.data.simulate.compounds import SPLIT_CONTROL, SPLIT_TEST, Compounds, is_active
from drugcell.data.simulate.config import STREAM_METADATA, SimConfig, stream
from drugcell.data.simulate.layout import ROW_LETTERS
from drugcell.data.simulate.truth import Tally, Truth
from drugcell.data.simulate.world import World
from drugcell.defaults import COMPOUND_COL, EXPRESSION_COL, GENE_COL
from drugcell.provenance import atomic_path, provenance, write_json

# ---- files only the simulator writes (the answer and the ground truth) --------------------------
TEST_TRUTH_FILE = "test_truth.parquet"
TEST_WEIGHTS_FILE = "test_weights.parquet"
SIM_COMPOUNDS_FILE = "sim_compounds.parquet"
SIM_PROGRAMS_FILE = "sim_programs.parquet"
MANIFEST_FILE = "synth_manifest.json"

#: The 26 metadata columns in file order (the contest's needed ones plus plausible others).
METADATA_COLUMNS: tuple[str, ...] = (
    vcpi.SAMPLE_COL, vcpi.COMPOUND_UUID_COL, vcpi.COMPOUND_KEY_COL, vcpi.COMPOUND_NAME_COL,
    vcpi.CONCENTRATION_COL, vcpi.CONCENTRATION_UNIT_COL, vcpi.CELL_LINE_COL, vcpi.TIMEPOINT_COL,
    vcpi.IS_CONTROL_COL, vcpi.CONTROL_TYPE_COL, vcpi.PLATE_COL, vcpi.WELL_COL, vcpi.ROW_COL,
    vcpi.COLUMN_COL, vcpi.IS_EDGE_COL, vcpi.REPLICATE_COL, vcpi.RELEASE_COL, vcpi.BATCH_COL,
    vcpi.ORGANISM_COL, vcpi.ASSAY_COL, vcpi.TOTAL_UMI_COL, vcpi.TOTAL_READS_COL, vcpi.NGENES_COL,
    vcpi.PERCENT_MITO_COL, vcpi.PERCENT_RIBO_COL, vcpi.SEQUENCING_DATE_COL,
)
CHEMISTRY_COLUMNS: tuple[str, ...] = (
    vcpi.CHEM_UUID_COL, vcpi.SMILES_COL, vcpi.INCHIKEY_COL, vcpi.MOLECULAR_WEIGHT_COL, vcpi.LOG_P_COL, vcpi.TPSA_COL,
)
TEST_COLUMNS: tuple[str, ...] = vcpi.TEST_COMPOUNDS_COLUMNS
assert len(METADATA_COLUMNS) == vcpi.N_METADATA_COLUMNS_REAL

RELEASES = ("tvc-bhr-009", "tvc-kdl-010", "tvc-qnu-012")
NAME_PREFIX = "SIM-"   # compound_name of a library compound: "SIM-<user_compound_id>"
MANIFEST_NOTES = (
    "gene_filter.csv: mean CPM >= 1 over the contest-condition training wells (library + "
    "controls at 10 uM/24 h, DMSO whatever its concentration), empty wells skipped; "
    "library sizes over all genes. test_truth.parquet: mean log2(CPM+1) of each test "
    "compound's wells on the scored genes."
)


def _write_parquet(path: Path, df: pd.DataFrame) -> Path:
    table = pa.Table.from_pandas(df, preserve_index=False)
    table = table.replace_schema_metadata(None)   # no pandas/version blob: same bytes every run
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return path


def _write_csv(path: Path, df: pd.DataFrame) -> Path:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)
    return path


# ----------------------------------------------------------------------------- counts
def _write_group(writer: pq.ParquetWriter, schema: pa.Schema, gene_ids: np.ndarray, block: np.ndarray) -> None:
    cols = [pa.array(gene_ids.tolist(), type=pa.string())]
    cols += [pa.array(np.ascontiguousarray(block[i]), type=pa.int32()) for i in range(block.shape[0])]
    writer.write_table(pa.Table.from_arrays(cols, schema=schema))


def write_counts(
    path: Path, sample_ids: list[str], gene_ids: np.ndarray, blocks: Iterable[np.ndarray], group_rows: int,
) -> Path:
    """train_counts.parquet, wide (``gene_id`` + one int32 column per sample), streamed.

    ``blocks`` yields (samples x genes) count blocks in gene order; they are gathered into row
    groups of ``group_rows`` genes, so memory holds one row group whatever the size.
    """
    schema = pa.schema([(vcpi.GENE_COL, pa.string())] + [(s, pa.int32()) for s in sample_ids])
    n_genes = len(gene_ids)
    with atomic_path(path) as tmp:
        writer = pq.ParquetWriter(
            tmp, schema, compression="snappy", use_dictionary=[vcpi.GENE_COL], write_statistics=[vcpi.GENE_COL],
        )
        try:
            buf = np.zeros((len(sample_ids), min(group_rows, n_genes)), dtype=np.int32)
            filled, group_g0 = 0, 0
            for block in blocks:
                buf[:, filled: filled + block.shape[1]] = block
                filled += block.shape[1]
                if filled == buf.shape[1] or group_g0 + filled == n_genes:
                    _write_group(writer, schema, gene_ids[group_g0: group_g0 + filled], buf[:, :filled])
                    group_g0 += filled
                    filled = 0
        finally:
            writer.close()
    return path


# ----------------------------------------------------------------------------- metadata
def _compound_columns(world: World, train_w: np.ndarray) -> dict[str, Any]:
    comps, w = world.comps, world.wells
    ci = w.compound[train_w]
    is_ctrl = comps.split[ci] == SPLIT_CONTROL
    names = np.array(comps.lims_id, dtype=object)
    ctrl_type = np.where(~is_ctrl, "none", np.where(names[ci] == vcpi.DMSO, "vehicle", "positive"))
    comp_name = np.where(is_ctrl, w.spelling[train_w], np.char.add(NAME_PREFIX, names[ci].astype(str)))
    return {
        vcpi.COMPOUND_UUID_COL: np.array(comps.uuid, dtype=object)[ci],
        vcpi.COMPOUND_KEY_COL: w.spelling[train_w],
        vcpi.COMPOUND_NAME_COL: comp_name.astype(object),
        vcpi.CONCENTRATION_COL: w.concentration[train_w],
        vcpi.CONCENTRATION_UNIT_COL: w.unit[train_w],
        vcpi.CELL_LINE_COL: vcpi.CONTEST_CELL_LINE,
        vcpi.TIMEPOINT_COL: w.timepoint[train_w],
        vcpi.IS_CONTROL_COL: is_ctrl,
        vcpi.CONTROL_TYPE_COL: ctrl_type.astype(object),
        vcpi.REPLICATE_COL: w.replicate[train_w].astype(np.int64),
        vcpi.ORGANISM_COL: "Homo sapiens",
        vcpi.ASSAY_COL: "DRUG-seq",
    }


def _plate_columns(world: World, train_w: np.ndarray) -> dict[str, Any]:
    w = world.wells
    plate = w.plate[train_w]
    n_plates = int(plate.max()) + 1
    release = np.array([RELEASES[min(2, p * 3 // n_plates)] for p in plate], dtype=object)
    dates = pd.Timestamp("2025-03-03") + pd.to_timedelta(plate // 8 * 7, unit="D")
    row, col = w.row[train_w], w.col[train_w]
    return {
        vcpi.PLATE_COL: [f"PLT{p + 1:05d}" for p in plate],
        vcpi.WELL_COL: [f"{ROW_LETTERS[r]}{c + 1:02d}" for r, c in zip(row, col)],
        vcpi.ROW_COL: [ROW_LETTERS[r] for r in row],
        vcpi.COLUMN_COL: (col + 1).astype(np.int64),
        vcpi.IS_EDGE_COL: w.is_edge[train_w],
        vcpi.RELEASE_COL: release,
        vcpi.BATCH_COL: [f"B{p // 4 + 1:03d}" for p in plate],
        vcpi.SEQUENCING_DATE_COL: [str(d.date()) for d in dates],
    }


def _qc_columns(cfg: SimConfig, libsize: np.ndarray, train_w: np.ndarray, tally: Tally) -> dict[str, Any]:
    rng = stream(cfg.seed, STREAM_METADATA)
    lib_tw = libsize[train_w]
    with np.errstate(divide="ignore", invalid="ignore"):
        pct_mt = np.where(lib_tw > 0, 100.0 * tally.mito[train_w] / np.maximum(lib_tw, 1), 0.0)
        pct_rb = np.where(lib_tw > 0, 100.0 * tally.ribo[train_w] / np.maximum(lib_tw, 1), 0.0)
    reads = np.round(lib_tw * np.exp(rng.normal(np.log(2.6), 0.15, size=len(train_w)))).astype(np.int64)
    return {
        vcpi.TOTAL_UMI_COL: lib_tw.astype(np.int64),
        vcpi.TOTAL_READS_COL: reads,
        vcpi.NGENES_COL: tally.ngenes3[train_w].astype(np.int64),
        vcpi.PERCENT_MITO_COL: pct_mt,
        vcpi.PERCENT_RIBO_COL: pct_rb,
    }


def write_metadata(
    path: Path, world: World, sample_ids: list[str], train_w: np.ndarray, libsize: np.ndarray, tally: Tally,
) -> Path:
    """train_metadata.parquet: one row per training well, the 26 columns of :data:`METADATA_COLUMNS`."""
    cols: dict[str, Any] = {vcpi.SAMPLE_COL: sample_ids}
    cols.update(_compound_columns(world, train_w))
    cols.update(_plate_columns(world, train_w))
    cols.update(_qc_columns(world.cfg, libsize, train_w, tally))
    assert set(cols) == set(METADATA_COLUMNS)
    return _write_parquet(path, pd.DataFrame({c: cols[c] for c in METADATA_COLUMNS}))


# ----------------------------------------------------------------------------- chemistry and genes
def write_chemistry(path: Path, comps: Compounds, desc: pd.DataFrame) -> Path:
    """train_chemistry.parquet: training compounds and controls, joined to metadata on the UUID."""
    train_or_ctrl = np.flatnonzero(comps.split != SPLIT_TEST)
    chem = pd.DataFrame({
        vcpi.CHEM_UUID_COL: np.array(comps.uuid, dtype=object)[train_or_ctrl],
        vcpi.SMILES_COL: np.array(comps.smiles, dtype=object)[train_or_ctrl],
    })
    chem = pd.concat([chem, desc.iloc[train_or_ctrl].reset_index(drop=True)], axis=1)
    return _write_parquet(path, chem[list(CHEMISTRY_COLUMNS)])


def write_gene_filter(path: Path, scored_ids: np.ndarray) -> Path:
    """gene_filter.csv: one column ``gene_id``, the scored genes."""
    return _write_csv(path, pd.DataFrame({vcpi.GENE_COL: scored_ids}))


# ----------------------------------------------------------------------------- test set
def _test_ids(comps: Compounds, truth: Truth) -> np.ndarray:
    return np.array(comps.lims_id, dtype=object)[truth.test_comp]


def _test_order(test_ids: np.ndarray) -> np.ndarray:
    """Test compounds sorted by id: the row order of the truth, the column order of the weights."""
    return np.argsort(test_ids.astype(str), kind="stable")


def write_test_compounds(path: Path, comps: Compounds, desc: pd.DataFrame, truth: Truth) -> Path:
    """test_compounds.csv in the contest's column order (:data:`vcpi.TEST_COMPOUNDS_COLUMNS`)."""
    test_ids = _test_ids(comps, truth)
    cols = {
        vcpi.TEST_COMPOUND_COL: test_ids,
        vcpi.COMPOUND_NAME_COL: np.char.add(NAME_PREFIX, test_ids.astype(str)).astype(object),
        vcpi.CONCENTRATION_COL: vcpi.TEST_CONCENTRATION_UM,
        vcpi.CONCENTRATION_UNIT_COL: vcpi.TEST_CONCENTRATION_UNIT,
        vcpi.CELL_LINE_COL: vcpi.CONTEST_CELL_LINE,
        vcpi.TIMEPOINT_COL: vcpi.CONTEST_TIMEPOINT,
        vcpi.SMILES_COL: np.array(comps.smiles, dtype=object)[truth.test_comp],
        vcpi.INCHIKEY_COL: desc[vcpi.INCHIKEY_COL].to_numpy()[truth.test_comp],
    }
    return _write_csv(path, pd.DataFrame({c: cols[c] for c in TEST_COLUMNS}))


def write_test_truth(path: Path, comps: Compounds, scored_ids: np.ndarray, truth: Truth) -> Path:
    """test_truth.parquet: the held-out answer, long (compound, gene_id, expression)."""
    test_ids = _test_ids(comps, truth)
    order = _test_order(test_ids)
    frame = pd.DataFrame({
        COMPOUND_COL: np.repeat(test_ids[order].astype(str), len(scored_ids)),
        GENE_COL: np.tile(scored_ids.astype(str), len(order)),
        EXPRESSION_COL: truth.test_expr[order].ravel(),
    })
    return _write_parquet(path, frame)


def write_test_weights(path: Path, comps: Compounds, scored_ids: np.ndarray, truth: Truth) -> Path:
    """test_weights.parquet in the official weights layout: ``gene_id`` + one column per test compound."""
    test_ids = _test_ids(comps, truth)
    order = _test_order(test_ids)
    wdf = pd.DataFrame(truth.test_weights[order].T.astype(np.float32), columns=test_ids[order].astype(str))
    wdf.insert(0, vcpi.GENE_COL, scored_ids.astype(str))
    return _write_parquet(path, wdf)


# ----------------------------------------------------------------------------- ground truth
def _template_name(t: int, from_file: bool) -> str:
    if t < 0:
        return ""
    return f"murcko_{t}" if from_file else lib.SCAFFOLDS[t][0]


def write_sim_compounds(path: Path, comps: Compounds, cfg: SimConfig) -> Path:
    """sim_compounds.parquet: per compound its split, template, Murcko group, potency and keys."""
    key_names = [k[0] for k in lib.PROGRAM_KEYS]
    from_file = cfg.smiles_file is not None
    sim = pd.DataFrame({
        vcpi.COMPOUND_UUID_COL: comps.uuid,
        vcpi.COMPOUND_KEY_COL: comps.lims_id,
        "split": comps.split,
        vcpi.SMILES_COL: comps.smiles,
        "template": comps.template,
        "template_name": [_template_name(t, from_file) for t in comps.template],
        "murcko_group": comps.murcko,
        "potency": comps.potency,
        "active": is_active(comps.potency, cfg),
        "keys": [";".join(n for n, on in zip(key_names, row) if on) for row in comps.keys],
    })
    return _write_parquet(path, sim)


def write_sim_programs(path: Path, world: World) -> Path:
    """sim_programs.parquet: the gene programs, long (program, gene_id, natural-log loading)."""
    progs = world.progs
    prog_idx, gene_idx = np.nonzero(progs.loadings)
    programs = pd.DataFrame({
        "program": np.array(progs.names, dtype=object)[prog_idx],
        GENE_COL: world.genes.ids[gene_idx],
        "loading": progs.loadings[prog_idx, gene_idx].astype(np.float64),
    })
    return _write_parquet(path, programs)


# ----------------------------------------------------------------------------- manifest
def summary(world: World, libsize: np.ndarray, train_w: np.ndarray, scored: np.ndarray) -> dict[str, Any]:
    """The headline numbers of a simulated set (printed by ``drugcell synth``, kept in the manifest)."""
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
        "n_active_compounds": int(is_active(world.comps.potency, world.cfg).sum()),
    }


def write_manifest(path: Path, cfg: SimConfig, files: dict[str, Path], summary: dict[str, Any]) -> Path:
    """synth_manifest.json: config, seed, the files written and the summary, with provenance."""
    manifest = provenance(
        config=asdict(cfg), seed=cfg.seed, command="drugcell synth",
        files={k: str(v.name) for k, v in files.items()},
        summary=summary,
        notes=MANIFEST_NOTES,
    )
    write_json(path, manifest)
    return path
