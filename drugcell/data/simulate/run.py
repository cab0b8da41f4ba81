"""``simulate_vcpi``: draw the world, run the two passes over gene batches, write every file.

Why apart: the order of the steps (and which random stream each uses) is the whole contract of
"same config and seed, same bytes"; keeping it in one short function makes that order visible.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

import drugcell.data.simulate.writers as writers
from drugcell.data import vcpi
from drugcell.data.out_paths import check_synth_out
from drugcell.data.simulate.compounds import descriptors
from drugcell.data.simulate.config import config_for
from drugcell.data.simulate.layout import sample_ids
from drugcell.data.simulate.truth import Tally, Truth, WellSets
from drugcell.data.simulate.world import World, batch_counts, build_world, gene_batches

Batches = list[tuple[int, int]]
#: every file a simulation writes (checked before the work: see :func:`check_synth_out`)
OUTPUT_FILES = (
    vcpi.COUNTS_FILE, vcpi.METADATA_FILE, vcpi.CHEMISTRY_FILE, vcpi.GENE_FILTER_FILE, vcpi.TEST_COMPOUNDS_FILE,
    writers.TEST_TRUTH_FILE, writers.TEST_WEIGHTS_FILE, writers.SIM_COMPOUNDS_FILE, writers.SIM_PROGRAMS_FILE,
    writers.MANIFEST_FILE,
)


def _progress(progress: bool | Callable[[int], None], total: int) -> tuple[Callable[[], None], Callable[[], None]]:
    """(tick, close): a tqdm bar for ``progress=True``, the caller's callback, or nothing."""
    bar = None
    if progress is True:
        from drugcell.progress import bar as progress_bar

        bar = progress_bar(total=total, desc="synth gene batches", unit="batch")

    def tick() -> None:
        if bar is not None:
            bar.update(1)
        elif callable(progress):
            progress(1)

    def close() -> None:
        if bar is not None:
            bar.close()

    return tick, close


def _library_sizes(world: World, batches: Batches, sets: WellSets, tick: Callable[[], None]) -> np.ndarray:
    """Pass 1: every well's total over all genes (CPM, the gene filter and the weights need it)."""
    libsize = np.zeros(len(world.wells.compound), dtype=np.int64)
    for b, (g0, g1) in enumerate(batches):
        libsize += batch_counts(world, g0, g1, b, library_only=True)
        tick()
    if np.any(libsize[sets.test] <= 0):
        raise RuntimeError("a test well came out empty; use another seed")
    return libsize


def _training_blocks(
    world: World, batches: Batches, tally: Tally, train_w: np.ndarray, tick: Callable[[], None],
) -> Iterator[np.ndarray]:
    """Pass 2: the same counts again; each batch feeds the tally, its training wells go to the file."""
    for b, (g0, g1) in enumerate(batches):
        cnt = batch_counts(world, g0, g1, b)
        tally.add(cnt, g0, g1)
        yield cnt[train_w]
        tick()


def _write_tables(
    out: Path, world: World, sets: WellSets, samples: list[str], libsize: np.ndarray, tally: Tally, truth: Truth,
) -> dict[str, Path]:
    comps = world.comps
    desc = descriptors(comps.smiles)
    scored_ids = world.genes.ids[truth.scored]
    return {
        "train_metadata": writers.write_metadata(out / vcpi.METADATA_FILE, world, samples, sets.train, libsize, tally),
        "train_chemistry": writers.write_chemistry(out / vcpi.CHEMISTRY_FILE, comps, desc),
        "gene_filter": writers.write_gene_filter(out / vcpi.GENE_FILTER_FILE, scored_ids),
        "test_compounds": writers.write_test_compounds(out / vcpi.TEST_COMPOUNDS_FILE, comps, desc, truth),
        "test_truth": writers.write_test_truth(out / writers.TEST_TRUTH_FILE, comps, scored_ids, truth),
        "test_weights": writers.write_test_weights(out / writers.TEST_WEIGHTS_FILE, comps, scored_ids, truth),
        "sim_compounds": writers.write_sim_compounds(out / writers.SIM_COMPOUNDS_FILE, comps, world.cfg),
        "sim_programs": writers.write_sim_programs(out / writers.SIM_PROGRAMS_FILE, world),
    }


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
    overwrite: bool = False,
    **knobs: Any,
) -> dict[str, Path]:
    """Write a simulated VCPI data set into ``out_dir``; return ``{name: path}`` of the files.

    Files: train_counts.parquet, train_metadata.parquet, train_chemistry.parquet, gene_filter.csv,
    test_compounds.csv, test_truth.parquet (the held-out answer), test_weights.parquet (Mejia
    weights of the test compounds, official layout), sim_compounds.parquet (ground
    truth per compound: template, keys, potency), sim_programs.parquet (the gene programs:
    program, gene_id, natural-log loading) and synth_manifest.json.

    ``out_dir`` is checked before anything is drawn: files of these names are replaced only in an
    earlier `drugcell synth` output and only with ``overwrite`` (never a user's files).
    """
    cfg = config_for(
        preset, n_compounds=n_compounds, n_genes=n_genes, replicates=replicates, n_test=n_test,
        seed=seed, smiles_file=smiles_file, **knobs,
    )
    out = Path(out_dir)
    check_synth_out(out, OUTPUT_FILES, writers.MANIFEST_FILE, overwrite=overwrite)
    out.mkdir(parents=True, exist_ok=True)
    world = build_world(cfg)
    sets = WellSets.of(world)
    batches = gene_batches(cfg.n_genes, cfg.gene_batch)
    tick, close = _progress(progress, 2 * len(batches))

    libsize = _library_sizes(world, batches, sets, tick)
    tally = Tally(world, libsize, sets)
    samples = sample_ids(cfg, len(sets.train))
    paths = {"train_counts": writers.write_counts(
        out / vcpi.COUNTS_FILE, samples, world.genes.ids, _training_blocks(world, batches, tally, sets.train, tick),
        cfg.gene_batch * cfg.row_group_batches,
    )}
    close()
    truth = tally.truth()

    paths.update(_write_tables(out, world, sets, samples, libsize, tally, truth))
    numbers = writers.summary(world, libsize, sets.train, truth.scored)
    paths["manifest"] = writers.write_manifest(out / writers.MANIFEST_FILE, cfg, paths, numbers)
    return paths
