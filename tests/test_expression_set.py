"""ExpressionSet: round trips through the cache dir and the official weights layout."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from drugcell.data.expression_set import FORMAT_VERSION, ExpressionSet
from drugcell.errors import DrugcellInputError


def make_es(n_comp=5, n_genes=4, seed=0) -> ExpressionSet:
    rng = np.random.default_rng(seed)
    w = rng.uniform(size=(n_genes, n_comp))
    return ExpressionSet(
        compounds=[str(1000 + i) for i in range(n_comp)],
        genes=[f"ENSG{i:011d}" for i in range(n_genes)],
        expression=rng.uniform(0, 10, size=(n_comp, n_genes)),
        weights=w / w.sum(0),
        n_replicates=np.full(n_comp, 2),
        control=rng.uniform(0, 10, size=n_genes),
        smiles=["CCO", "c1ccccc1", "", "CCN", "CC(=O)O"][:n_comp],
        inchikey=[""] * n_comp,
        control_ids=["DMSO"],
        control_expression=rng.uniform(size=(1, n_genes)),
        control_weights=np.full((n_genes, 1), 1 / n_genes),
        info={"source": "test"},
    )


def test_save_load_round_trip(tmp_path):
    es = make_es()
    es.save(tmp_path / "es")
    back = ExpressionSet.load(tmp_path / "es")
    for name in ("compounds", "genes", "smiles", "control_ids"):
        assert list(getattr(back, name)) == list(getattr(es, name))
    for name in ("expression", "weights", "control", "control_expression", "control_weights", "n_replicates"):
        np.testing.assert_array_equal(getattr(back, name), getattr(es, name))
    assert back.fingerprint() == es.fingerprint()
    mm = ExpressionSet.load(tmp_path / "es", mmap=True)
    np.testing.assert_array_equal(mm.expression, es.expression)


def test_save_over_existing_cache_replaces_it_only_with_overwrite(tmp_path):
    make_es(seed=0).save(tmp_path / "es")
    with pytest.raises(DrugcellInputError, match="already holds an ExpressionSet cache; pass --overwrite"):
        make_es(seed=1).save(tmp_path / "es")
    np.testing.assert_array_equal(ExpressionSet.load(tmp_path / "es").expression, make_es(seed=0).expression)
    make_es(seed=1).save(tmp_path / "es", overwrite=True)
    np.testing.assert_array_equal(ExpressionSet.load(tmp_path / "es").expression, make_es(seed=1).expression)
    assert [p.name for p in tmp_path.iterdir()] == ["es"]


def test_save_never_removes_what_drugcell_did_not_write(tmp_path):
    """#10 item 1: a user's folder or file at the path survives, even with overwrite."""
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("keep me")
    for overwrite in (False, True):
        with pytest.raises(DrugcellInputError, match="not an ExpressionSet cache; drugcell never replaces it"):
            make_es().save(user, overwrite=overwrite)
    assert (user / "notes.txt").read_text() == "keep me"
    f = tmp_path / "file"
    f.write_text("data")
    with pytest.raises(DrugcellInputError, match="is a file"):
        make_es().save(f, overwrite=True)
    assert f.read_text() == "data" and not (tmp_path / ".file.old").exists()


def test_subset_keeps_weight_columns_aligned():
    es = make_es()
    sub = es.subset([3, 1])
    assert list(sub.compounds) == ["1003", "1001"]
    np.testing.assert_array_equal(sub.weights, es.weights[:, [3, 1]])
    np.testing.assert_array_equal(sub.expression, es.expression[[3, 1]])
    assert list(es.subset(np.array([True, False, False, False, True])).compounds) == ["1000", "1004"]


def test_official_weights_layout_round_trip(tmp_path):
    es = make_es()
    es.write_weights_parquet(tmp_path / "weights.parquet", dtype="float32")
    frame = pd.read_parquet(tmp_path / "weights.parquet")
    assert list(frame.columns) == ["gene_id", *es.compounds, "DMSO"]
    zeroed = make_es()
    zeroed.weights[:] = 0
    back = zeroed.with_weights_parquet(tmp_path / "weights.parquet")
    np.testing.assert_array_equal(back.weights, es.weights)


def test_weights_file_missing_a_compound_is_refused(tmp_path):
    es = make_es()
    es.write_weights_parquet(tmp_path / "w.parquet")
    frame = pd.read_parquet(tmp_path / "w.parquet").drop(columns=["1002"])
    frame.to_parquet(tmp_path / "w2.parquet", index=False)
    with pytest.raises(DrugcellInputError, match="1002"):
        es.with_weights_parquet(tmp_path / "w2.parquet")


def test_shape_and_duplicate_checks():
    with pytest.raises(DrugcellInputError, match="expression"):
        ExpressionSet(compounds=["a"], genes=["g"], expression=np.zeros((2, 1)), weights=np.ones((1, 1)),
                      n_replicates=[1], control=[0], smiles=[""], inchikey=[""])
    with pytest.raises(DrugcellInputError, match="duplicate compound"):
        ExpressionSet(compounds=["a", "a"], genes=["g"], expression=np.zeros((2, 1)), weights=np.ones((1, 2)),
                      n_replicates=[1, 1], control=[0], smiles=["", ""], inchikey=["", ""])


def test_load_of_non_cache_dir_is_clear(tmp_path):
    with pytest.raises(DrugcellInputError, match="not an ExpressionSet cache"):
        ExpressionSet.load(tmp_path)


def _edit_manifest(root, **changes):
    """Rewrite the cache's manifest with ``changes`` (a value of None removes the key)."""
    path = root / "manifest.json"
    manifest = json.loads(path.read_text())
    for k, v in changes.items():
        if v is None:
            manifest.pop(k, None)
        else:
            manifest[k] = v
    path.write_text(json.dumps(manifest))


def test_cache_records_its_format_and_version(tmp_path):
    make_es().save(tmp_path / "es")
    manifest = json.loads((tmp_path / "es" / "manifest.json").read_text())
    # a log2cpm set keeps version 4's layout and number (version 5 is written for a signed scale only)
    assert manifest["format"] == "drugcell.expression_set" and manifest["format_version"] == 4
    assert FORMAT_VERSION == 5 and manifest["value_scale"] == "log2cpm"
    assert ExpressionSet.load(tmp_path / "es").info["cache_format_version"] == 4


def test_version_1_cache_reads_the_same_arrays(tmp_path):
    """A cache written before the version fields existed (version 1: same files, manifest without
    ``format``/``format_version``) reads back equal and is reported as version 1; saving it again
    writes the current version."""
    es = make_es()
    es.save(tmp_path / "v1")
    _edit_manifest(tmp_path / "v1", format=None, format_version=None)
    assert json.loads((tmp_path / "v1" / "manifest.json").read_text())["kind"] == "drugcell.ExpressionSet"
    back = ExpressionSet.load(tmp_path / "v1")
    for name in ("compounds", "genes", "smiles", "inchikey", "control_ids"):
        assert list(getattr(back, name)) == list(getattr(es, name))
    for name in ("expression", "weights", "control", "control_expression", "control_weights", "n_replicates"):
        np.testing.assert_array_equal(getattr(back, name), getattr(es, name))
    assert back.fingerprint() == es.fingerprint()
    assert back.info["cache_format_version"] == 1
    back.save(tmp_path / "again")
    manifest = json.loads((tmp_path / "again" / "manifest.json").read_text())
    assert manifest["format_version"] == 4 and "cache_format_version" not in manifest["info"]


def test_future_version_and_other_format_are_refused_naming_the_folder(tmp_path):
    root = tmp_path / "es"
    make_es().save(root)
    folder = re.escape(str(root))
    _edit_manifest(root, format_version=FORMAT_VERSION + 1)
    with pytest.raises(DrugcellInputError, match=f"{folder} has format version {FORMAT_VERSION + 1}, newer than this drugcell reads"):
        ExpressionSet.load(root)
    _edit_manifest(root, format_version=2, format="someone.elses_cache")
    with pytest.raises(DrugcellInputError, match=f"{folder} is not an ExpressionSet cache.*'someone.elses_cache'"):
        ExpressionSet.load(root)
    _edit_manifest(root, format=None, format_version=None, kind=None)  # no mark at all (e.g. a CV run's manifest)
    with pytest.raises(DrugcellInputError, match=f"{folder} is not an ExpressionSet cache"):
        ExpressionSet.load(root)
    _edit_manifest(root, format="drugcell.expression_set", format_version="2")
    with pytest.raises(DrugcellInputError, match=f"{folder}.*format_version '2', not a positive integer"):
        ExpressionSet.load(root)
    (root / "manifest.json").write_text("{not json")
    with pytest.raises(DrugcellInputError, match=f"{folder}.*cannot read"):
        ExpressionSet.load(root)


@pytest.mark.parametrize("missing", ["weights.npy", "control_weights.npy", "genes.parquet"])
def test_missing_cache_file_is_refused_naming_it(tmp_path, missing):
    root = tmp_path / "es"
    make_es().save(root)
    (root / missing).unlink()
    with pytest.raises(DrugcellInputError, match=f"{re.escape(str(root))} is incomplete: .*{re.escape(missing)} is "
                                                 "missing; re-run `drugcell load`"):
        ExpressionSet.load(root)


@pytest.mark.parametrize("damage, match", [
    (lambda root: (root / "expression.npy").write_bytes((root / "expression.npy").read_bytes()[:100]), "expression.npy is damaged"),
    (lambda root: (root / "compounds.parquet").write_bytes(b"not parquet"), "compounds.parquet is damaged"),
    (lambda root: pd.DataFrame({"x": [1]}).to_parquet(root / "genes.parquet"), "genes.parquet lacks column"),
])
def test_a_damaged_cache_file_is_named(tmp_path, damage, match):
    """#10 item 8: a truncated array or a corrupt table gave a raw traceback. (Here in a cache without
    checksums, as written before version 4; a version-4 cache refuses them by checksum first.)"""
    root = make_es().save(tmp_path / "es")
    _edit_manifest(root, format_version=3, checksums=None)
    damage(root)
    with pytest.raises(DrugcellInputError, match=match):
        ExpressionSet.load(root)


@pytest.mark.parametrize("field_name, value, match", [
    ("expression", np.nan, "expression has NaN/inf"),
    ("weights", np.inf, "weights contain 1 NaN/inf value"),
    ("weights", -0.1, "weights contain 1 negative value"),
    ("n_replicates", 0, "n_replicates is 0"),
])
def test_bad_values_are_refused_naming_a_compound(field_name, value, match):
    """#10 item 9 and the ExpressionSet list: NaN crashed cv later, blaming a predictor."""
    es = make_es()
    arr = np.array(getattr(es, field_name), copy=True)
    if arr.ndim == 2 and field_name == "weights":
        arr[0, 2] = value
    elif arr.ndim == 2:
        arr[2, 0] = value
    else:
        arr[2] = value
    kwargs = {f: getattr(es, f) for f in ("compounds", "genes", "expression", "weights", "n_replicates", "control",
                                           "smiles", "inchikey")}
    kwargs[field_name] = arr
    with pytest.raises(DrugcellInputError, match=match + r".*1002"):
        ExpressionSet(**kwargs)
