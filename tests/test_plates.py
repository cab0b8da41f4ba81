"""The plate layout: recorded by the loader (checked against the metadata and a hand log2(CPM+1)),
carried by the ExpressionSet (subset, save, load, format 3), refused when damaged."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from drugcell.data import vcpi
from drugcell.data.expression_set import ExpressionSet
from drugcell.data.plates import PLATES_FILE, PlateLayout
from drugcell.errors import DrugcellInputError
from drugcell.evaluation.leaderboard import MIN_CLASS, LeaderboardEstimator, PlateModel, TestLayout


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from drugcell.data.loader import load_to_cache
    from drugcell.data.simulate import simulate_vcpi

    root = tmp_path_factory.mktemp("plates")
    files = simulate_vcpi(root / "sim", preset="tiny", seed=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        load_to_cache(root / "cache", files["train_counts"], files["train_metadata"], files["train_chemistry"],
                      files["gene_filter"], progress=False)
    return files, root / "cache"


def test_loader_records_the_plate_layout_as_the_metadata_and_counts_say(tiny):
    files, cache = tiny
    es = ExpressionSet.load(cache)
    p = es.plates
    assert p is not None and es.info["cache_format_version"] == 4
    meta = pd.read_parquet(files["train_metadata"])
    lib = meta[meta[vcpi.COMPOUND_KEY_COL].astype(str).isin(set(es.compounds))]
    lib = lib[pd.to_numeric(lib[vcpi.CONCENTRATION_COL], errors="coerce") == vcpi.CONTEST_CONCENTRATION_NM]
    lib = lib[lib[vcpi.TIMEPOINT_COL] == vcpi.CONTEST_TIMEPOINT]
    cross = pd.crosstab(lib[vcpi.COMPOUND_KEY_COL].astype(str), lib[vcpi.PLATE_COL].astype(str))
    cross = cross.reindex(index=list(es.compounds), columns=list(p.plate_ids), fill_value=0)
    np.testing.assert_array_equal(p.compound_counts, cross.to_numpy())
    # DMSO mean and variance on one plate, by hand from the raw counts
    counts = pd.read_parquet(files["train_counts"]).set_index(vcpi.GENE_COL)
    plate = p.plate_ids[0]
    dmso = meta[(meta[vcpi.COMPOUND_KEY_COL] == vcpi.DMSO) & (meta[vcpi.PLATE_COL].astype(str) == plate)]
    cols = [s for s in dmso[vcpi.SAMPLE_COL].astype(str) if counts[s].sum() > 0]
    c = counts[cols].to_numpy(dtype=np.float64)
    log_expr = np.log2(c / c.sum(axis=0) * 1e6 + 1.0)
    rows = counts.index.get_indexer(es.genes)
    np.testing.assert_allclose(p.control_mean[0], log_expr[rows].mean(axis=1), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(p.control_var[0], log_expr[rows].var(axis=1, ddof=1), rtol=1e-4, atol=1e-5)
    assert p.control_n[0] == len(cols)


def test_expression_set_carries_plates_through_subset_save_and_load(tiny, tmp_path):
    _, cache = tiny
    es = ExpressionSet.load(cache)
    sub = es.subset(np.array([4, 0, 7]))
    np.testing.assert_array_equal(sub.plates.compound_counts, es.plates.compound_counts[[4, 0, 7]])
    back = ExpressionSet.load(sub.save(tmp_path / "sub"))
    np.testing.assert_array_equal(back.plates.compound_counts, sub.plates.compound_counts)
    np.testing.assert_array_equal(back.plates.control_mean, sub.plates.control_mean)
    with pytest.raises(DrugcellInputError, match="plate layout is for"):
        ExpressionSet(compounds=es.compounds[:3], genes=es.genes, expression=es.expression[:3],
                      weights=es.weights[:, :3], n_replicates=es.n_replicates[:3], control=es.control,
                      smiles=es.smiles[:3], inchikey=es.inchikey[:3], plates=es.plates)


def test_a_damaged_plates_file_is_refused_by_name(tiny, tmp_path):
    _, cache = tiny
    es = ExpressionSet.load(cache)
    folder = es.save(tmp_path / "copy")
    data = (folder / PLATES_FILE).read_bytes()
    (folder / PLATES_FILE).write_bytes(data[: len(data) // 3])
    with pytest.raises(DrugcellInputError, match=f"{PLATES_FILE} is damaged"):
        ExpressionSet.load(folder)


def test_expected_mixes_one_plate_and_spread_compounds_in_the_test_layout():
    rng = np.random.default_rng(5)
    n_comp, n_plates, n_genes = 80, 6, 3
    counts = np.zeros((n_comp, n_plates), dtype=int)
    for i in range(n_comp):  # the first 20 compounds: both wells on one plate; the rest spread
        p = rng.choice(n_plates, size=2, replace=i >= 20)
        p = [p[0], p[0]] if i < 20 else ([p[0], (p[0] + 1) % n_plates] if p[0] == p[1] else p)
        np.add.at(counts[i], p, 1)
    lay = PlateLayout([f"P{i}" for i in range(n_plates)], counts, rng.normal(0, 0.3, (n_plates, n_genes)),
                      np.full((n_plates, n_genes), 0.02), np.full(n_plates, 8))
    model = PlateModel.from_layout(lay, TestLayout(plates=6, replicates=2, compounds=50))
    est = LeaderboardEstimator(n_comp, model, resamples=20)
    base = rng.uniform(0.2, 0.4, n_comp)
    cv = base + np.where(np.arange(n_comp) < 20, 0.5, 0.1)
    got = est._expected(base, cv, model.test_fraction())
    one = model.A.max(axis=1) >= 1.0
    assert one.sum() == 20 and (~one).sum() == 60 and min(20, 60) >= MIN_CLASS  # the class path, not the fallback
    np.testing.assert_allclose(got, base + (1 / 6) * 0.5 + (5 / 6) * 0.1)
