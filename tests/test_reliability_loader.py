"""Reliability of the VCPI loader, `synth --out` and the CV split record (issue #10): unparseable
SMILES, sparse long counts, unreadable concentrations and metadata-only samples are counted and
named; output locations and an official weights file are checked before the work; a fallback from
a scaffold to a random split is recorded as such everywhere the run states its split."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import drugcell.data.loader as loader_mod
from drugcell.data.expression_set import ExpressionSet
from drugcell.data.loader import LoadOptions, load_to_cache, load_vcpi
from drugcell.errors import DrugcellInputError
from drugcell.evaluation.cv import run_cv
from tests.test_cv import small_config, toy_es
from tests.test_loader import write_vcpi


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    return write_vcpi(tmp_path_factory.mktemp("vcpi_rel"))


def _load(paths: dict[str, Path], **opts):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        es, summary = load_vcpi(paths["counts"], paths["metadata"], paths["chemistry"], paths["gene_filter"],
                                options=LoadOptions(**opts), progress=False)
    return es, summary, [str(w.message) for w in caught]


def _with(data: dict[str, Path], d: Path, **frames: pd.DataFrame) -> dict[str, Path]:
    paths = dict(data)
    for key, frame in frames.items():
        paths[key] = d / f"{key}.parquet"
        frame.to_parquet(paths[key], index=False)
    return paths


def _no_work(monkeypatch) -> None:
    """Any start of the streaming pass fails the test: the checks must come first."""
    def boom(*a, **k):
        raise AssertionError("the pass started before the check")
    monkeypatch.setattr(loader_mod, "_stream", boom)


# ----------------------------------------------------------------------------- unparseable SMILES
def test_unparseable_training_smiles_are_counted_named_and_recorded(data, tmp_path):
    chem = pd.read_parquet(data["chemistry"])
    meta = pd.read_parquet(data["metadata"])
    chem.loc[chem.compound == "uuid-1", "smiles"] = "not_a_smiles"
    chem.loc[chem.compound == "uuid-5", "smiles"] = "C1CC"  # unclosed ring
    paths = _with(data, tmp_path, chemistry=chem)
    ids = sorted(meta.loc[meta.compound.isin(["uuid-1", "uuid-5"]), "user_compound_id"].unique())
    with pytest.warns(UserWarning, match=rf"2 compound\(s\) have a SMILES RDKit cannot parse .*{ids[0]}, {ids[1]}"):
        summary = load_to_cache(tmp_path / "cache", paths["counts"], paths["metadata"], paths["chemistry"],
                                paths["gene_filter"], progress=False)
    assert summary.n_unparsed_smiles == 2 and summary.unparsed_smiles == ids
    assert "2 with a SMILES RDKit cannot parse" in summary.format()
    manifest = json.loads((tmp_path / "cache" / "manifest.json").read_text())
    recorded = manifest["info"]["load_summary"]
    assert recorded["n_unparsed_smiles"] == 2 and recorded["unparsed_smiles"] == ids
    es = ExpressionSet.load(tmp_path / "cache")  # kept, with their SMILES as given
    assert {es.smiles[list(es.compounds).index(i)] for i in ids} == {"not_a_smiles", "C1CC"}


# ----------------------------------------------------------------------------- sparse long counts
def test_a_sparse_long_table_without_an_all_zero_well_loads_as_the_wide_one(data, tmp_path):
    wide = pd.read_parquet(data["counts"])
    meta = pd.read_parquet(data["metadata"])
    zero = meta.loc[meta.user_compound_id == "DMSO", "sequenced_id"].iloc[2]
    wide[zero] = 0  # an empty-library well: the sparse table has no row for it at all
    wide_paths = _with(data, tmp_path, counts=wide)
    long = wide.melt(id_vars="gene_id", var_name="sample", value_name="count")
    long = long[long["count"] > 0].sample(frac=1.0, random_state=3)
    assert zero not in set(long["sample"])
    long_path = tmp_path / "long.parquet"
    long.to_parquet(long_path, index=False)
    es_w, s_w, _ = _load(wide_paths)
    es_l, s_l, notes = _load(dict(data, counts=long_path))
    assert s_l.n_absent_from_long_counts == 1 and s_l.n_empty_library == s_w.n_empty_library == 1
    assert any("1 contest-condition sample(s)" in n and zero in n and "all-zero" in n for n in notes)
    np.testing.assert_array_equal(es_l.compounds, es_w.compounds)
    np.testing.assert_allclose(es_l.expression, es_w.expression, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(es_l.weights, es_w.weights, rtol=1e-5, atol=1e-8)
    assert s_l.controls == s_w.controls  # the empty DMSO well dropped in both
    # a wide table has a column per well: one missing is a wrong counts file, still refused
    with pytest.raises(DrugcellInputError, match=rf"1 contest-condition sample\(s\) with no column.*{zero}"):
        _load(_with(data, tmp_path, counts=wide.drop(columns=[zero])))




# ----------------------------------------------------------------------------- metadata-only samples
def test_metadata_samples_outside_the_condition_without_counts_are_counted_and_named(data, tmp_path):
    wide = pd.read_parquet(data["counts"])
    meta = pd.read_parquet(data["metadata"])
    sid = meta.loc[meta.cell_line == "HEK293", "sequenced_id"].iloc[0]
    es, summary, notes = _load(_with(data, tmp_path, counts=wide.drop(columns=[sid])))
    assert summary.n_metadata_only_out_of_condition == 1
    assert any("1 sample(s) outside the condition have no counts" in n and sid in n for n in notes)


# ----------------------------------------------------------------------------- concentrations
def test_an_unreadable_concentration_names_its_value(data, tmp_path):
    meta = pd.read_parquet(data["metadata"])
    meta["compound_concentration"] = meta["compound_concentration"].map(lambda v: f"{v:g}")  # text, as in a CSV
    lib = meta.index[(meta.cell_line == "THP-1") & (meta.timepoint == "24h") & ~meta.is_control
                     & (meta.compound_concentration == "10000")][:3]
    meta.loc[lib[0], "compound_concentration"] = "10 uM"
    meta.loc[lib[1], "compound_concentration"] = "ten"
    meta.loc[lib[2], "compound_concentration_unit"] = "mg/ml"
    unit2 = meta.at[lib[2], "compound_concentration"]
    _, summary, notes = _load(_with(data, tmp_path, metadata=meta))
    assert summary.n_unreadable_concentration == 3
    note = next(n for n in notes if "cannot be read in nM" in n)
    assert "3 well(s)" in note and "'10 uM' 'nM'" in note and "'ten' 'nM'" in note and f"'{unit2}' 'mg/ml'" in note
    assert summary.dropped_condition["concentration"] == 2 + 3  # the 1000 nM wells, and these three


# ----------------------------------------------------------------------------- output and weights checked first
def test_load_out_below_a_file_is_refused_before_the_pass(data, tmp_path, monkeypatch):
    _no_work(monkeypatch)
    blocker = tmp_path / "a_file"
    blocker.write_text("mine")
    with pytest.raises(DrugcellInputError, match="is a file, so no folder can be made below it"):
        load_to_cache(blocker / "cache", data["counts"], data["metadata"], data["chemistry"], data["gene_filter"],
                      progress=False)
    assert blocker.read_text() == "mine"


def test_load_out_in_an_unwritable_folder_is_refused_before_the_pass(data, tmp_path, monkeypatch):
    import drugcell.data.out_paths as out_paths

    _no_work(monkeypatch)
    monkeypatch.setattr(out_paths.os, "access", lambda p, mode: Path(p) != tmp_path)  # as for a non-root user
    with pytest.raises(DrugcellInputError, match="permission denied"):
        load_to_cache(tmp_path / "cache", data["counts"], data["metadata"], data["chemistry"], data["gene_filter"],
                      progress=False)


def test_a_missing_or_unreadable_weights_file_is_refused_before_the_pass(data, tmp_path, monkeypatch):
    _no_work(monkeypatch)
    opts = LoadOptions(weights_path=str(tmp_path / "nope.parquet"))
    with pytest.raises(DrugcellInputError, match="nope.parquet does not exist"):
        load_vcpi(data["counts"], data["metadata"], data["chemistry"], data["gene_filter"], options=opts)
    bad = tmp_path / "w.parquet"
    bad.write_text("not parquet")
    with pytest.raises(DrugcellInputError, match="cannot be read as parquet"):
        load_vcpi(data["counts"], data["metadata"], data["chemistry"], data["gene_filter"],
                  options=LoadOptions(weights_path=str(bad)))


def test_official_weights_not_summing_to_one_are_refused_naming_the_file(data, tmp_path):
    es, _, _ = _load(data)
    frame = pd.DataFrame(np.asarray(es.weights, dtype=np.float64) * 2.0, columns=[str(c) for c in es.compounds])
    frame.insert(0, "gene_id", np.asarray(es.genes, dtype=str))
    for j, c in enumerate(es.control_ids):
        frame[str(c)] = np.asarray(es.control_weights, dtype=np.float64)[:, j]
    path = tmp_path / "weights.parquet"
    frame.to_parquet(path, index=False)
    with pytest.raises(DrugcellInputError, match=rf"weights file {path}: weights of {es.n_compounds} compound\(s\) "
                                                 "do not sum to 1"):
        _load(data, weights_path=str(path))


# ----------------------------------------------------------------------------- synth --out
def test_synth_never_replaces_a_users_files_and_checks_before_the_work(tmp_path, monkeypatch):
    import drugcell.data.simulate.run as run_mod
    from drugcell.data.simulate import simulate_vcpi

    def boom(*a, **k):
        raise RuntimeError("work started")
    monkeypatch.setattr(run_mod, "build_world", boom)
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(DrugcellInputError, match="is a file, so no folder"):
        simulate_vcpi(blocker / "sim", preset="tiny")
    real = tmp_path / "vcpi_download"  # the user's real files: never replaced, even with overwrite
    real.mkdir()
    (real / "train_counts.parquet").write_text("the 1.5 GB download")
    for overwrite in (False, True):
        with pytest.raises(DrugcellInputError, match="not a `drugcell synth` output.*never replaces"):
            simulate_vcpi(real, preset="tiny", overwrite=overwrite)
    assert (real / "train_counts.parquet").read_text() == "the 1.5 GB download"
    earlier = tmp_path / "sim"  # an earlier simulation: replaced only with overwrite
    earlier.mkdir()
    (earlier / "gene_filter.csv").write_text("gene_id\n")
    (earlier / "synth_manifest.json").write_text(json.dumps({"command": "drugcell synth"}))
    with pytest.raises(DrugcellInputError, match="already holds a simulated data set.*--overwrite"):
        simulate_vcpi(earlier, preset="tiny")
    with pytest.raises(RuntimeError, match="work started"):
        simulate_vcpi(earlier, preset="tiny", overwrite=True)
    with pytest.raises(RuntimeError, match="work started"):  # files of other names beside: fine
        simulate_vcpi(real / "sub", preset="tiny")


# ----------------------------------------------------------------------------- the split actually used
def test_a_fallback_to_a_random_split_is_recorded_as_such(tmp_path):
    es = toy_es(n_templates=2, n_per=6, n_genes=8)  # 2 scaffold groups for 3 folds
    with pytest.warns(UserWarning, match="fell back to a RANDOM split"):
        res = run_cv(es, small_config(), tmp_path / "run", progress=False)
    used = "random (fallback from scaffold: only 2 scaffold groups for 3 folds)"
    assert res.split == used
    head = (tmp_path / "run" / "summary.md").read_text().splitlines()[2]
    assert f"3-fold {used} split" in head and "scaffold split" not in head
    assert json.loads((tmp_path / "run" / "manifest.json").read_text())["split"] == used
    assert json.loads((tmp_path / "run" / "audit.json").read_text())["split"]["split"] == used
    assert res.headline.startswith(f"**Split: {used}.**")
    ok = run_cv(toy_es(n_templates=6, n_per=4, n_genes=8), small_config(), tmp_path / "run2", progress=False)
    assert ok.split == "scaffold" and not ok.headline.startswith("**Split")
    assert "3-fold scaffold split" in (tmp_path / "run2" / "summary.md").read_text()

