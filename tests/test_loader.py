"""The streaming loader against independent computations: the in-memory contest_scorer recipe,
a plain per-gene/per-compound loop, and hand-checked cases; plus every bad input it must refuse."""

from __future__ import annotations

import json
import math
import statistics
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import contest_scorer as cs
from drugcell.data import vcpi
from drugcell.data.expression_set import ExpressionSet
from drugcell.data.loader import LoadOptions, fingerprint_input, load_vcpi
from drugcell.errors import DrugcellInputError


# ----------------------------------------------------------------------------- hand-made data
def write_vcpi(d: Path, *, seed: int = 0, n_genes: int = 40, n_lib: int = 10, n_dmso: int = 9,
               extra_rows: bool = True) -> dict[str, Path]:
    """A tiny contest-layout data set: unsorted genes, replicates 1-3, DMSO at 0.15 %, positive
    controls under varied spellings, a few wells outside the condition, one compound without SMILES."""
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows: list[dict] = []

    def add(key: str, uuid: str, n: int, conc: float = 10000.0, unit: str = "nM", tp: str = "24h",
            cell: str = "THP-1", ctrl: bool = False) -> None:
        for _ in range(n):
            rows.append(dict(sequenced_id=str(500000 + 3 * len(rows)), compound=uuid, user_compound_id=key,
                             compound_concentration=conc, compound_concentration_unit=unit, cell_line=cell,
                             timepoint=tp, is_control=ctrl, container_id=f"P{len(rows) % 3}"))

    for i in range(n_lib):
        add(str(9100000 + 13 * i), f"uuid-{i}", int(rng.choice([1, 2, 2, 3])))
    # interleave the spellings so replicates of a control are not adjacent in the files
    add("DMSO", "uuid-dmso", n_dmso // 2, conc=0.15, unit="%", ctrl=True)
    add("Staurosporin", "uuid-st1", 2, ctrl=True)
    add("DMSO", "uuid-dmso", n_dmso - n_dmso // 2, conc=0.15, unit="%", ctrl=True)
    add("staurosporine", "uuid-st2", 2, ctrl=True)
    add("Brefeldin-A", "uuid-bfa", 3, ctrl=True)
    add("Trichostatin A", "uuid-tsa", 1, conc=10.0, unit="uM", ctrl=True)
    if extra_rows:
        add(str(9100000), "uuid-0", 2, conc=1000.0)      # other concentration
        add(str(9100013), "uuid-1", 1, tp="6h")          # other timepoint
        add(str(9100026), "uuid-2", 1, cell="HEK293")    # other cell line
    meta = pd.DataFrame(rows).sample(frac=1.0, random_state=seed).reset_index(drop=True)
    genes = [f"ENSG{i:011d}" for i in rng.permutation(n_genes)]
    mu = np.exp(rng.normal(1.0, 2.0, n_genes))
    depth = rng.lognormal(0.0, 0.6, len(meta))
    counts = rng.poisson(mu[:, None] * depth[None, :]).astype(np.int32)
    wide = pd.DataFrame(counts, columns=meta["sequenced_id"].tolist())
    wide.insert(0, "gene_id", genes)
    paths = {k: d / v for k, v in dict(counts=vcpi.COUNTS_FILE, metadata=vcpi.METADATA_FILE,
                                        chemistry=vcpi.CHEMISTRY_FILE, gene_filter=vcpi.GENE_FILTER_FILE).items()}
    wide.to_parquet(paths["counts"], index=False)
    meta.to_parquet(paths["metadata"], index=False)
    uuids = [f"uuid-{i}" for i in range(n_lib) if i != 3] + ["uuid-dmso", "uuid-st1"]  # uuid-3: no SMILES
    chem = pd.DataFrame({"compound": uuids, "smiles": ["C" * (k + 1) for k in range(len(uuids))],
                         "inchi_key": [f"KEY{k}" for k in range(len(uuids))]})
    chem.to_parquet(paths["chemistry"], index=False)
    scored = rng.choice(genes, n_genes // 2, replace=False)
    pd.DataFrame({"gene_id": scored}).to_csv(paths["gene_filter"], index=False)
    return paths


def _load(paths: dict[str, Path], **opts) -> tuple[ExpressionSet, object]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_vcpi(paths["counts"], paths["metadata"], paths["chemistry"], paths["gene_filter"],
                         options=LoadOptions(**opts), progress=False)


def _contest_frames(paths: dict[str, Path]) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """Counts and metadata of the contest condition, controls under one canonical key, in memory."""
    meta = pd.read_parquet(paths["metadata"])
    counts = pd.read_parquet(paths["counts"])
    ctrl = meta["user_compound_id"].map(vcpi.control_id)
    keep = (meta.cell_line == "THP-1") & (meta.timepoint == "24h") & (
        (meta.compound_concentration * meta.compound_concentration_unit.map({"nM": 1, "uM": 1000, "%": np.nan})
         == 10000) | (ctrl == "DMSO"))
    m = meta[keep].copy()
    m["key"] = [c or k for c, k in zip(ctrl[keep], m.user_compound_id)]
    genes = pd.read_csv(paths["gene_filter"]).gene_id.tolist()
    return counts[["gene_id", *m.sequenced_id]], m, genes


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    return write_vcpi(tmp_path_factory.mktemp("vcpi"))


# ----------------------------------------------------------------------------- equivalence
@pytest.mark.parametrize("library", ["scored", "all"])
@pytest.mark.parametrize("batch_size", [1, 4, 512])
def test_equals_in_memory_contest_recipe(data, library, batch_size):
    es, summary = _load(data, weights_library=library, batch_size=batch_size)
    counts, meta, genes = _contest_frames(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        truth = cs.counts_to_expression(counts, meta, compound_col="key", gene_filter=genes)
        w_counts = counts.set_index("gene_id").loc[sorted(genes)].reset_index() if library == "scored" else counts
        w = cs.compute_mejia_weights(w_counts, meta, compound_col="key", gene_filter=genes, library=library)
    t = truth.pivot(index="compound", columns="gene_id", values="expression")
    assert list(es.genes) == sorted(genes)
    lib = es.compounds.astype(str)
    np.testing.assert_allclose(es.expression, t.loc[lib, es.genes].to_numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(es.weights, w.loc[es.genes, lib].to_numpy(), rtol=1e-5, atol=1e-8)
    ctrl = es.control_ids.astype(str)
    np.testing.assert_allclose(es.control_expression, t.loc[ctrl, es.genes].to_numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(es.control_weights, w.loc[es.genes, ctrl].to_numpy(), rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(es.weights.sum(axis=0), 1.0, rtol=1e-5)
    assert summary.n_samples_used == len(meta)


def _plain_weights(L: dict[str, list[list[float]]]) -> dict[str, list[float]]:
    """The spec's Welch t / min-max / square / normalise, gene by gene, with the statistics module."""
    everything = [row for rows in L.values() for row in rows]
    n_genes = len(everything[0])
    out = {}
    for p, rows in L.items():
        rest = [row for q, rr in L.items() if q != p for row in rr]
        t = []
        for g in range(n_genes):
            xp, xr, xa = [r[g] for r in rows], [r[g] for r in rest], [r[g] for r in everything]
            vg = statistics.variance(xa)
            vp = vg if len(xp) < 2 else max(statistics.variance(xp), vg)
            vr = max(statistics.variance(xr), vg)
            se = max(math.sqrt(vp / len(xp) + vr / len(xr)), 1e-12)
            t.append(abs(statistics.fmean(xp) - statistics.fmean(xr)) / se)
        lo, hi = min(t), max(t)
        s = [((a - lo) / (hi - lo)) ** 2 for a in t]
        out[p] = [v / sum(s) for v in s]
    return out


def test_weights_and_target_equal_a_plain_loop(tmp_path):
    """Independent of contest_scorer: log2(CPM+1) and Mejia weights recomputed with plain Python."""
    paths = write_vcpi(tmp_path, seed=3, n_genes=12, n_lib=5, n_dmso=4, extra_rows=False)
    es, _ = _load(paths, batch_size=2, weights_library="scored")
    counts, meta, genes = _contest_frames(paths)
    genes = sorted(genes)
    c = counts.set_index("gene_id")
    L_t: dict[str, list[list[float]]] = {}
    L_w: dict[str, list[list[float]]] = {}
    for sid, key in zip(meta.sequenced_id, meta.key):
        col = [int(v) for v in c[sid]]
        lib_all = sum(col)
        sc = [int(c.at[g, sid]) for g in genes]
        lib_s = sum(sc)
        L_t.setdefault(key, []).append([math.log2(1e6 * v / lib_all + 1) for v in sc])
        L_w.setdefault(key, []).append([math.log2(1e6 * v / lib_s + 1) for v in sc])
    want = _plain_weights(L_w)
    for j, comp in enumerate(es.compounds):
        mean = [statistics.fmean(r[g] for r in L_t[comp]) for g in range(len(genes))]
        np.testing.assert_allclose(es.expression[j], mean, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(es.weights[:, j], want[comp], rtol=1e-5, atol=1e-8)
    for j, comp in enumerate(es.control_ids):
        np.testing.assert_allclose(es.control_weights[:, j], want[comp], rtol=1e-5, atol=1e-8)


def test_hand_example_three_genes(tmp_path):
    """Counts small enough to do by hand: CPM = 1e6 * count / library over all genes."""
    d = tmp_path
    genes = ["G2", "G1", "G3"]  # G3 is not scored but counts toward the library
    wide = pd.DataFrame({"gene_id": genes, "s1": [1, 3, 4], "s2": [0, 1, 1], "s3": [2, 2, 0], "s4": [5, 5, 0]})
    wide.to_parquet(d / "c.parquet", index=False)
    meta = pd.DataFrame({"sequenced_id": ["s1", "s2", "s3", "s4"], "compound": ["u1", "u1", "ud", "ud"],
                         "user_compound_id": ["7", "7", "DMSO", "DMSO"], "compound_concentration": [10000, 10000, 0.1, 0.1],
                         "cell_line": "THP-1", "timepoint": "24h"})
    meta.to_parquet(d / "m.parquet", index=False)
    pd.DataFrame({"compound": ["u1"], "smiles": ["CCO"]}).to_parquet(d / "ch.parquet", index=False)
    pd.DataFrame({"gene_id": ["G2", "G1"]}).to_csv(d / "g.csv", index=False)
    es, _ = _load(dict(counts=d / "c.parquet", metadata=d / "m.parquet", chemistry=d / "ch.parquet",
                       gene_filter=d / "g.csv"), weights_library="scored")
    # s1: library 8 -> G1 3/8, G2 1/8; s2: library 2 -> G1 1/2, G2 0
    g1 = (math.log2(3e6 / 8 + 1) + math.log2(1e6 / 2 + 1)) / 2
    g2 = (math.log2(1e6 / 8 + 1) + 0.0) / 2
    np.testing.assert_allclose(es.expression[0], [g1, g2], rtol=1e-6)
    d1 = (math.log2(2e6 / 4 + 1) + math.log2(5e6 / 10 + 1)) / 2
    np.testing.assert_allclose(es.control, [d1, d1], rtol=1e-6)
    assert list(es.genes) == ["G1", "G2"] and list(es.compounds) == ["7"] and es.smiles[0] == "CCO"
    assert es.n_replicates.tolist() == [2] and list(es.control_ids) == ["DMSO"]
    # two groups of two: |t| is the same for both, and with 2 genes min-max gives weights (1, 0) or (0, 1)
    assert sorted(es.weights[:, 0].tolist()) == [0.0, 1.0]


def test_controls_condition_and_structures(data):
    es, summary = _load(data)
    counts, meta, _ = _contest_frames(data)
    assert list(es.control_ids) == ["DMSO", "Staurosporine", "Brefeldin A", "Trichostatin A"]
    assert summary.controls == {"DMSO": 9, "Staurosporine": 4, "Brefeldin A": 3, "Trichostatin A": 1}
    np.testing.assert_array_equal(es.control, es.control_expression[0])
    # library compounds: replicates counted inside the condition only
    n = meta[meta.key.map(vcpi.control_id).isna()].groupby("key").size()
    assert dict(zip(es.compounds, es.n_replicates)) == n.to_dict()
    assert summary.dropped_condition == {"cell_line": 1, "timepoint": 1, "concentration": 2}
    # SMILES through the compound UUID; uuid-3 has none -> "" and counted
    meta_all = pd.read_parquet(data["metadata"])
    key3 = meta_all.loc[meta_all.compound == "uuid-3", "user_compound_id"].iloc[0]
    j = list(es.compounds).index(key3)
    assert es.smiles[j] == "" and summary.n_missing_smiles == 1
    assert sum(s == "" for s in es.smiles) == 1


def test_long_layout_equals_wide(data, tmp_path):
    es_wide, _ = _load(data)
    wide = pd.read_parquet(data["counts"]).set_index("gene_id")
    long = wide.stack().rename("count").reset_index()
    long.columns = ["gene_id", "sample", "count"]
    long = long[long["count"] > 0].sample(frac=1.0, random_state=1)  # sparse rows, any order
    for name in ("long.parquet", "long.csv"):
        p = tmp_path / name
        long.to_parquet(p, index=False) if name.endswith("parquet") else long.to_csv(p, index=False)
        es_long, summary = _load(dict(data, counts=p), batch_size=3)
        assert summary.counts_layout.startswith("long")
        np.testing.assert_array_equal(es_long.compounds, es_wide.compounds)
        np.testing.assert_allclose(es_long.expression, es_wide.expression, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(es_long.weights, es_wide.weights, rtol=1e-5, atol=1e-8)


def test_empty_library_dropped_with_count(data, tmp_path):
    wide = pd.read_parquet(data["counts"])
    meta = pd.read_parquet(data["metadata"])
    dmso = meta.loc[meta.user_compound_id == "DMSO", "sequenced_id"].iloc[0]
    wide[dmso] = 0
    p = tmp_path / "c.parquet"
    wide.to_parquet(p, index=False)
    with pytest.warns(UserWarning, match="1 sample"):
        es, summary = load_vcpi(p, data["metadata"], data["chemistry"], data["gene_filter"], progress=False)
    assert summary.n_empty_library == 1 and summary.controls["DMSO"] == 8
    # the result equals loading without that well at all
    es_ref, _ = _load(dict(data, counts=_drop_sample(wide, dmso, tmp_path), metadata=_drop_meta(meta, dmso, tmp_path)))
    np.testing.assert_allclose(es.control, es_ref.control, rtol=1e-6)
    np.testing.assert_allclose(es.weights, es_ref.weights, rtol=1e-5, atol=1e-8)


def _drop_sample(wide: pd.DataFrame, sid: str, d: Path) -> Path:
    p = d / "c_drop.parquet"
    wide.drop(columns=[sid]).to_parquet(p, index=False)
    return p


def _drop_meta(meta: pd.DataFrame, sid: str, d: Path) -> Path:
    p = d / "m_drop.parquet"
    meta[meta.sequenced_id != sid].to_parquet(p, index=False)
    return p


def test_compound_with_only_empty_wells_is_dropped(data, tmp_path):
    wide = pd.read_parquet(data["counts"])
    meta = pd.read_parquet(data["metadata"])
    key = str(9100000 + 13 * 4)
    for sid in meta.loc[(meta.user_compound_id == key), "sequenced_id"]:
        wide[sid] = 0
    p = tmp_path / "c.parquet"
    wide.to_parquet(p, index=False)
    es, summary = _load(dict(data, counts=p))
    assert key not in set(es.compounds) and summary.n_compounds_dropped_empty == 1
    assert es.weights.shape == (es.n_genes, es.n_compounds)


# ----------------------------------------------------------------------------- bad input
def _bad(data, tmp_path, match, **changes):
    paths = dict(data)
    for key, frame in changes.items():
        p = tmp_path / (f"{key}.csv" if key == "gene_filter" else f"{key}.parquet")
        frame.to_csv(p, index=False) if key == "gene_filter" else frame.to_parquet(p, index=False)
        paths[key] = p
    with pytest.raises(DrugcellInputError, match=match):
        _load(paths)


def test_missing_columns_named(data, tmp_path):
    meta = pd.read_parquet(data["metadata"])
    _bad(data, tmp_path, r"metadata file .*missing column\(s\) \['timepoint'\]", metadata=meta.drop(columns="timepoint"))
    chem = pd.read_parquet(data["chemistry"])
    _bad(data, tmp_path, r"chemistry file .*missing column\(s\) \['smiles'\]", chemistry=chem.drop(columns="smiles"))
    _bad(data, tmp_path, r"gene filter file .*missing column\(s\) \['gene_id'\]",
         gene_filter=pd.DataFrame({"gene": ["x"]}))


def test_sample_id_mismatches(data, tmp_path):
    wide = pd.read_parquet(data["counts"])
    meta = pd.read_parquet(data["metadata"])
    _bad(data, tmp_path, r"1 sample\(s\) absent from metadata.*: 999", counts=wide.assign(**{"999": 1}))
    sid = meta.loc[meta.user_compound_id == "DMSO", "sequenced_id"].iloc[0]
    _bad(data, tmp_path, rf"contest-condition sample\(s\) with no column.*{sid}", counts=wide.drop(columns=[sid]))
    dup = pd.concat([meta, meta.iloc[[0]]], ignore_index=True)
    _bad(data, tmp_path, rf"duplicate sequenced_id value\(s\) {meta.sequenced_id.iloc[0]}", metadata=dup)


def test_bad_count_values(data, tmp_path):
    wide = pd.read_parquet(data["counts"])
    sid = wide.columns[3]
    neg = wide.copy()
    neg.loc[5, sid] = -2
    _bad(data, tmp_path, rf"sample '{sid}' has negative counts", counts=neg)
    frac = wide.astype({sid: float})
    frac.loc[2, sid] = 1.5
    _bad(data, tmp_path, rf"sample '{sid}' has non-integer counts \(e.g. 1.5\)", counts=frac)
    nan = wide.astype({sid: float})
    nan.loc[2, sid] = np.nan
    _bad(data, tmp_path, rf"sample '{sid}' has .*NaN", counts=nan)
    ok_float = wide.astype({sid: float})  # whole-number floats are fine
    es, _ = _load(dict(data, counts=_write(ok_float, tmp_path / "f.parquet")))
    es_ref, _ = _load(data)
    np.testing.assert_array_equal(es.expression, es_ref.expression)


def _write(frame: pd.DataFrame, p: Path) -> Path:
    frame.to_parquet(p, index=False)
    return p


def test_gene_problems(data, tmp_path):
    wide = pd.read_parquet(data["counts"])
    genes = pd.read_csv(data["gene_filter"])
    extra = pd.concat([genes, pd.DataFrame({"gene_id": ["ENSG_NOT_THERE"]})])
    _bad(data, tmp_path, r"names 1 gene\(s\) absent from counts.*ENSG_NOT_THERE", gene_filter=extra)
    dupg = wide.copy()
    dupg.loc[1, "gene_id"] = dupg.loc[0, "gene_id"]
    _bad(data, tmp_path, rf"duplicate gene_id row\(s\) {wide.gene_id[0]}", counts=dupg)
    _bad(data, tmp_path, r"gene filter file .*duplicate gene_id", gene_filter=pd.concat([genes, genes.iloc[[0]]]))


def test_no_dmso_and_nothing_in_condition(data, tmp_path):
    meta = pd.read_parquet(data["metadata"])
    _bad(data, tmp_path, "no DMSO well", metadata=meta.assign(
        user_compound_id=meta.user_compound_id.replace("DMSO", "vehicle")))
    with pytest.raises(DrugcellInputError, match="no sample .* is in the contest condition"):
        _load(data, condition=vcpi.ConditionFilter(cell_line="A549"))


def test_control_spellings_normalised():
    for s in ("Staurosporin", "STAUROSPORINE", "stauro sporine"):
        assert vcpi.control_id(s) == "Staurosporine"
    assert vcpi.control_id("Brefeldin-A") == vcpi.control_id("brefeldin a") == "Brefeldin A"
    assert vcpi.control_id("trichostatin_A") == "Trichostatin A"
    assert vcpi.control_id(" dmso ") == "DMSO"
    assert vcpi.control_id("9251300") is None and vcpi.control_id("Rigosertibb") is None


# ----------------------------------------------------------------------------- CLI and cache
def test_cli_load_cache_manifest_and_weights_roundtrip(data, tmp_path):
    from drugcell.cli import app

    runner = CliRunner()
    out = tmp_path / "cache"
    args = ["load", "--data", str(data["counts"].parent), "--out", str(out), "--no-progress", "--batch-size", "5"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "controls           DMSO 9" in res.output
    es = ExpressionSet.load(out)
    ref, _ = _load(data, batch_size=5)
    np.testing.assert_array_equal(es.expression, ref.expression)
    np.testing.assert_array_equal(es.weights, ref.weights)
    manifest = json.loads((out / "manifest.json").read_text())
    from drugcell.provenance import fingerprint_arrays

    assert manifest["data_fingerprint"] == fingerprint_arrays(es.compounds, es.genes, es.expression, es.weights, es.smiles)
    inputs = manifest["info"]["inputs"]
    assert inputs["counts"] == fingerprint_input(data["counts"])
    assert manifest["info"]["loader"]["options"]["weights_library"] == "scored"
    assert manifest["info"]["loader"]["options"]["condition"]["concentration_nm"] == 10000.0
    # an existing cache is not replaced without --overwrite
    res = runner.invoke(app, args)
    assert res.exit_code != 0 and "--overwrite" in str(res.exception)
    # export official-layout weights, then load again using them instead of computing
    wfile = tmp_path / "weights.parquet"
    res = runner.invoke(app, ["weights", "export", "--data", str(out), "--out", str(wfile), "--dtype", "float32"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, [*args[:-2], "--batch-size", "5", "--overwrite", "--weights", str(wfile),
                              "--weights-library", "all"])  # #10: 'all' would be silently ignored: refused
    assert isinstance(res.exception, DrugcellInputError) and "drop one of the two" in str(res.exception)
    res = runner.invoke(app, [*args[:-2], "--batch-size", "5", "--overwrite", "--weights", str(wfile)])
    assert res.exit_code == 0, res.output
    es2 = ExpressionSet.load(out)
    np.testing.assert_array_equal(es2.weights, es.weights)  # from the file, not the 'all' recipe
    np.testing.assert_array_equal(es2.control_weights, es.control_weights)
    assert "weights" in json.loads((out / "manifest.json").read_text())["info"]["inputs"]


def test_cli_bad_input_exit_code(data, tmp_path):
    import subprocess
    import sys

    meta = pd.read_parquet(data["metadata"]).drop(columns="cell_line")
    bad = tmp_path / "m.parquet"
    meta.to_parquet(bad, index=False)
    res = subprocess.run([sys.executable, "-m", "drugcell", "load", "--data", str(data["counts"].parent),
                          "--metadata", str(bad), "--out", str(tmp_path / "x")], capture_output=True, text=True)
    assert res.returncode == 2
    assert "missing column(s) ['cell_line']" in res.stderr and str(bad) in res.stderr
    assert not (tmp_path / "x").exists()


def test_simulated_vcpi_equals_in_memory_recipe(tmp_path):
    """The simulator's exact layout (26 metadata columns, gene-batch row groups, control spellings,
    off-condition wells, failed wells) loads to the in-memory recipe's numbers."""
    from drugcell.data.simulate import simulate_vcpi

    simulate_vcpi(tmp_path / "sim", n_compounds=40, n_genes=400, n_test=5, seed=1)
    paths = {k: tmp_path / "sim" / f for k, f in dict(counts=vcpi.COUNTS_FILE, metadata=vcpi.METADATA_FILE,
                                                      chemistry=vcpi.CHEMISTRY_FILE,
                                                      gene_filter=vcpi.GENE_FILTER_FILE).items()}
    es, summary = _load(paths, batch_size=16)
    meta = pd.read_parquet(paths["metadata"])
    ctrl = vcpi.control_ids_of(meta["user_compound_id"])
    meta = meta[vcpi.ConditionFilter().mask(meta, ctrl == "DMSO")].copy()
    meta["key"] = [c if isinstance(c, str) else k for c, k in zip(ctrl[meta.index], meta["user_compound_id"])]
    counts = pd.read_parquet(paths["counts"])[["gene_id", *meta["sequenced_id"].astype(str)]]
    genes = sorted(pd.read_csv(paths["gene_filter"])["gene_id"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        truth = cs.counts_to_expression(counts, meta, compound_col="key", gene_filter=genes)
        w = cs.compute_mejia_weights(counts.set_index("gene_id").loc[genes].reset_index(), meta,
                                     compound_col="key", gene_filter=genes)
    t = truth.pivot(index="compound", columns="gene_id", values="expression")
    lib = es.compounds.astype(str)
    assert es.n_compounds == 40 and set(es.control_ids) == set(vcpi.CONTROL_IDS)
    np.testing.assert_allclose(es.expression, t.loc[lib].to_numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(es.weights, w[lib].to_numpy(), rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(es.control_weights, w[es.control_ids.astype(str)].to_numpy(), rtol=1e-5, atol=1e-8)
    assert summary.n_out_of_condition > 0 and all(s != "" for s in es.smiles)


def test_chunked_fingerprint_equals_one_piece_digest(data):
    """The cache's data fingerprint is hashed in row chunks (no whole-array copy of the
    Fortran-order weights); it must equal hashing each array's C-order bytes in one piece."""
    import hashlib

    from drugcell.provenance import fingerprint_arrays

    es, _ = _load(data)
    assert not es.weights.flags.c_contiguous  # (G, C) view of the (C, G) buffer: Fortran order
    args = (es.compounds, es.genes, es.expression, es.weights, es.smiles)
    h = hashlib.sha256()
    for a in args:
        h.update(str(a.dtype).encode())
        h.update(str(a.shape).encode())
        h.update("\x1f".join(map(str, a.ravel().tolist())).encode() if a.dtype.kind in "OUS" else a.tobytes())
    assert fingerprint_arrays(*args, rows=3) == h.hexdigest()[:16]
    es.info.pop("fingerprint", None)
    assert es.fingerprint() == fingerprint_arrays(*args)


def test_csv_metadata_and_chemistry_equal_parquet(data, tmp_path):
    """Ids, booleans and numbers read from CSV text give the same load as the parquet files."""
    for key in ("metadata", "chemistry"):
        pd.read_parquet(data[key]).to_csv(tmp_path / f"{key}.csv", index=False)
    es_csv, s_csv = _load(dict(data, metadata=tmp_path / "metadata.csv", chemistry=tmp_path / "chemistry.csv"))
    es, s = _load(data)
    np.testing.assert_array_equal(es_csv.compounds, es.compounds)
    np.testing.assert_array_equal(es_csv.smiles, es.smiles)
    np.testing.assert_array_equal(es_csv.expression, es.expression)
    assert s_csv.dropped_condition == s.dropped_condition and s_csv.controls == s.controls


def test_real_gene_filter_reads():
    """The contest's own gene_filter.csv: 12,995 unique Ensembl ids, returned sorted."""
    from drugcell.data.loader import read_gene_filter
    from tests.conftest import require_shared

    path = require_shared("vcpi_contest_public", "gene_filter.csv")
    genes = read_gene_filter(path)
    assert len(genes) == 12_995 and len(set(genes)) == 12_995
    assert all(g.startswith("ENSG") for g in genes) and list(genes) == sorted(genes)


@pytest.mark.parametrize("dtype", ["int32", "int64", "uint16"])
def test_block_decode_equals_plain_sums_over_row_groups(tmp_path, dtype):
    """The whole-batch Arrow decode (several row groups, so several chunks per column) gives the
    same libraries and scored counts as plain numpy on the full matrix, and as the per-column path."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from drugcell.data.counts import _WideParquet

    rng = np.random.default_rng(3)
    counts = rng.poisson(7.0, (50, 6)).astype(dtype)
    names = [f"s{j}" for j in range(6)]
    table = pa.table({"gene_id": [f"G{i}" for i in range(50)], **{n: counts[:, j] for j, n in enumerate(names)}})
    path = tmp_path / "c.parquet"
    pq.write_table(table, path, row_group_size=8)
    src = _WideParquet(path)
    scored = np.array([0, 3, 9, 17, 31, 49], dtype=np.int64)
    src.bind(scored)
    cols = ["s4", "s1", "s5"]
    fetched = src.fetch(cols)
    assert pq.ParquetFile(path).metadata.num_row_groups == 7
    lib, sub, lib_s = src.decode(fetched)
    want = counts[:, [4, 1, 5]].astype(np.int64)
    np.testing.assert_array_equal(lib, want.sum(axis=0))
    np.testing.assert_array_equal(sub, want[scored].T)
    np.testing.assert_array_equal(lib_s, want[scored].sum(axis=0))
    for a, b in zip(src._decode_columns(fetched), (lib, sub, lib_s)):
        np.testing.assert_array_equal(a, b)
    chunked = pa.Table.from_batches(fetched.to_batches(max_chunksize=8))  # as big files read
    assert chunked.column(0).num_chunks == 7
    for a, b in zip(src.decode(chunked), (lib, sub, lib_s)):
        np.testing.assert_array_equal(a, b)


def test_block_decode_refuses_negative_outside_scored_genes(tmp_path):
    """A negative count in a gene that is not scored still names its sample (the check covers
    every gene, since the library size does)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from drugcell.data.counts import _WideParquet

    counts = np.ones((20, 3), dtype=np.int64)
    counts[13, 2] = -4
    table = pa.table({"gene_id": [f"G{i}" for i in range(20)], **{f"s{j}": counts[:, j] for j in range(3)}})
    path = tmp_path / "c.parquet"
    pq.write_table(table, path, row_group_size=8)
    src = _WideParquet(path)
    src.bind(np.array([0, 1], dtype=np.int64))
    with pytest.raises(DrugcellInputError, match=r"sample 's2' has negative counts \(min -4\)"):
        src.read(["s0", "s2"])


def test_weights_in_small_threaded_chunks_equal_one_chunk(data, monkeypatch):
    """The Mejia weights computed in compound chunks over two threads equal one chunk."""
    import functools

    from drugcell.data import loader

    es_one, _ = _load(data, batch_size=4)
    monkeypatch.setattr(loader, "_finish_weights", functools.partial(loader._finish_weights, chunk=3))
    es_many, _ = _load(data, batch_size=4)
    assert es_one.n_compounds > 6
    np.testing.assert_array_equal(es_many.weights, es_one.weights)
    np.testing.assert_array_equal(es_many.control_weights, es_one.control_weights)


def test_numpy_hugepage_switch_is_restored():
    """The load turns numpy's huge-page advice off and gives back whatever setting it found."""
    from drugcell.data.memory import _no_numpy_hugepages

    switch = getattr(np._core.multiarray, "_set_madvise_hugepage", None)
    if switch is None:
        pytest.skip("this numpy has no huge-page switch")
    for start in (True, False):
        switch(start)
        with _no_numpy_hugepages():
            assert switch(False) is False
        assert switch(True) is start


def test_load_decodes_with_the_system_pool_and_restores_the_default(data):
    """The load switches Arrow to its system-allocator pool (mimalloc's release/refault cycle cost
    a third of the wall time at full scale) and gives the previous default pool back afterwards."""
    import pyarrow as pa

    from drugcell.data import loader

    seen = []
    real = loader._load_vcpi

    def spy(*args, **kwargs):
        seen.append(pa.default_memory_pool().backend_name)
        return real(*args, **kwargs)

    before = pa.default_memory_pool().backend_name
    loader._load_vcpi = spy
    try:
        _load(data)
    finally:
        loader._load_vcpi = real
    assert seen == [pa.system_memory_pool().backend_name]
    assert pa.default_memory_pool().backend_name == before


def test_float32_mejia_rows_equal_the_float64_recipe_and_ignore_the_shift():
    """``contest_scorer.mejia_weight_rows`` (the loader's float32 arithmetic) equals
    ``weights_from_stats`` (float64) on replicate-level data with single replicates and a compound
    without replicate variance; shifting every mean and the totals by a per-gene constant changes
    nothing, and so does cutting the compounds into chunks."""
    from contest_scorer.weights import weights_from_stats

    rng = np.random.default_rng(7)
    n_genes, sizes = 30, [1, 2, 2, 3, 5, 2, 1, 4]
    x = [rng.normal(8.0, 1.0, (k, n_genes)) for k in sizes]
    x[5][:] = 8.0  # replicates that agree exactly: the variance floor V_g takes over
    allx = np.vstack(x)
    mean = np.array([a.mean(0) for a in x])
    var = np.array([a.var(0, ddof=1) if len(a) > 1 else np.full(n_genes, np.nan) for a in x])
    n = np.array(sizes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = weights_from_stats(mean, var, n, allx.sum(0), (allx * allx).sum(0), len(allx)).T
    totals = cs.GeneTotals.from_sums(allx.sum(0), (allx * allx).sum(0), len(allx))
    got = cs.mejia_weight_rows(mean, var, n, totals)
    assert got.dtype == np.float32 and got.shape == (len(sizes), n_genes)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-7)
    shift = allx[0]
    u = allx - shift
    shifted = cs.mejia_weight_rows(mean - shift, var, n, cs.GeneTotals.from_sums(u.sum(0), (u * u).sum(0), len(u)))
    np.testing.assert_allclose(shifted, want, rtol=1e-4, atol=1e-7)
    halves = np.vstack([cs.mejia_weight_rows(mean[s], var[s], n[s], totals) for s in (slice(0, 3), slice(3, None))])
    np.testing.assert_array_equal(halves, got)  # rows are independent: any chunking gives the same bits
