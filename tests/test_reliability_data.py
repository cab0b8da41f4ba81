"""Issue #10, the data side: caches with checksums and a recomputed fingerprint, weights checked
wherever they enter, bad values named by file and compound, and a `drugcell cv` run folder that
appears complete or not at all (with a SIGKILL fault test). Test names carry the issue's defect
number (``test_defectN_*``) or ``test_also_*`` for the issue's "Also" list."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from drugcell.config import config_from_dict
from drugcell.data.expression_set import ExpressionSet
from drugcell.errors import DrugcellInputError
from drugcell.evaluation.cv import run_cv
from drugcell.models import Prediction, Predictor, register
from drugcell.provenance import Terminated, fingerprint_arrays
from tests.test_cv import toy_es

ROOT = Path(__file__).resolve().parent.parent
FILES = ["expression.npy", "weights.npy", "control.npy", "control_expression.npy", "control_weights.npy",
         "compounds.parquet", "genes.parquet", "controls.parquet"]


def staging_dir(out: Path) -> Path:
    """Where a run of ``out`` is staged (pinned here: the documented location)."""
    return out.parent / f".{out.name}.partial"


def small_es(**kw) -> ExpressionSet:
    return toy_es(n_templates=3, n_per=6, n_genes=12, **kw)


def cfg(predictors=("control", "mean", "wmean"), **cv):
    return config_from_dict({"cv": {"folds": 2, "bootstrap_resamples": 50, **cv},
                             "predictors": [{"name": p, "kind": p} for p in predictors]})


def write_toml(path: Path, predictors=("control", "mean", "wmean")) -> Path:
    body = "[cv]\nfolds = 2\nbootstrap_resamples = 50\n" + "".join(
        f'[[predictors]]\nname = "{p}"\nkind = "{p}"\n' for p in predictors)
    path.write_text(body)
    return path


def edit_manifest(root: Path, **changes) -> None:
    path = root / "manifest.json"
    m = json.loads(path.read_text())
    for k, v in changes.items():
        if v is None:
            m.pop(k, None)
        else:
            m[k] = v
    path.write_text(json.dumps(m))


def as_old_cache(root: Path) -> Path:
    """The cache as a version-3 drugcell wrote it: no checksums."""
    edit_manifest(root, format_version=3, checksums=None)
    return root


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ============================================================================ 1. checksums
def test_defect8_cache_records_the_sha256_of_every_file(tmp_path):
    root = small_es().save(tmp_path / "es")
    sums = json.loads((root / "manifest.json").read_text())["checksums"]
    assert sorted(sums) == sorted(FILES)
    for name, digest in sums.items():
        assert digest == hashlib.sha256((root / name).read_bytes()).hexdigest()


@pytest.mark.parametrize("mmap", [False, True])
def test_defect8_a_modified_cache_file_is_refused_by_checksum(tmp_path, mmap):
    """control.npy is in no fingerprint and has no value the old checks refuse: only its checksum
    tells that it changed. Main loaded it silently."""
    root = small_es().save(tmp_path / "es")
    control = np.load(root / "control.npy")
    np.save(root / "control.npy", control + 1.0)
    with pytest.raises(DrugcellInputError, match=re.escape(str(root / "control.npy")) + " is damaged or was modified"
                       r".*re-run `drugcell load`"):
        ExpressionSet.load(root, mmap=mmap)
    (root / "weights.npy").write_bytes((root / "weights.npy").read_bytes()[:64])  # truncated
    with pytest.raises(DrugcellInputError, match="control.npy|weights.npy"):
        ExpressionSet.load(root, mmap=mmap)


def test_defect8_a_version4_manifest_must_carry_its_checksums(tmp_path):
    root = small_es().save(tmp_path / "es")
    edit_manifest(root, checksums=None)
    with pytest.raises(DrugcellInputError, match="has no valid `checksums`.*damaged"):
        ExpressionSet.load(root)
    root = small_es().save(tmp_path / "es2")
    m = json.loads((root / "manifest.json").read_text())
    del m["checksums"]["control.npy"]
    (root / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(DrugcellInputError, match="control.npy was not written with this cache"):
        ExpressionSet.load(root)


def test_an_older_cache_without_checksums_still_loads(tmp_path):
    es = small_es()
    root = as_old_cache(es.save(tmp_path / "es"))
    back = ExpressionSet.load(root)
    np.testing.assert_array_equal(back.expression, es.expression)
    assert back.info["cache_format_version"] == 3 and back.fingerprint() == es.fingerprint()


# ============================================================================ 2. the fingerprint
def _shuffle_rows(root: Path, seed: int = 3) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Permute compounds.parquet rows, expression rows and weight columns together."""
    comp = pd.read_parquet(root / "compounds.parquet")
    perm = np.random.default_rng(seed).permutation(len(comp))
    comp = comp.iloc[perm].reset_index(drop=True)
    comp.to_parquet(root / "compounds.parquet", index=False)
    expr, w = np.load(root / "expression.npy")[perm], np.load(root / "weights.npy")[:, perm]
    np.save(root / "expression.npy", expr)
    np.save(root / "weights.npy", w)
    return comp, expr, w


def test_defect9_a_cache_with_shuffled_rows_is_refused_by_checksum(tmp_path):
    root = small_es().save(tmp_path / "es")
    _shuffle_rows(root)
    with pytest.raises(DrugcellInputError, match="(compounds.parquet|expression.npy) is damaged or was modified"):
        ExpressionSet.load(root)


def test_defect9_the_fingerprint_is_recomputed_never_copied(tmp_path):
    """Without checksums (an older cache) the shuffled cache is refused by its recomputed
    fingerprint, which the message reports next to the recorded one. Main reported the copied one."""
    es = small_es()
    recorded = es.fingerprint()
    root = as_old_cache(es.save(tmp_path / "es"))
    comp, expr, w = _shuffle_rows(root)
    genes = pd.read_parquet(root / "genes.parquet")["gene_id"].to_numpy(dtype=object)
    new = fingerprint_arrays(comp["compound"].to_numpy(dtype=object), genes, expr, w,
                             comp["smiles"].to_numpy(dtype=object))
    assert new != recorded
    with pytest.raises(DrugcellInputError, match=f"hash to data fingerprint {new}, but .*records {recorded}: the "
                                                 "cache is damaged or was modified"):
        ExpressionSet.load(root)
    edit_manifest(root, data_fingerprint=None)  # nothing recorded: the recomputed one is reported
    assert ExpressionSet.load(root).fingerprint() == new
    edit_manifest(root, data_fingerprint="0123456789abcdef")
    with pytest.raises(DrugcellInputError, match="records 0123456789abcdef"):
        ExpressionSet.load(root)


def test_also_a_subset_reports_its_own_fingerprint():
    es = small_es()
    es.fingerprint()
    sub = es.subset([4, 1, 7])
    assert sub.fingerprint() == fingerprint_arrays(sub.compounds, sub.genes, sub.expression, sub.weights, sub.smiles)
    assert sub.fingerprint() != es.fingerprint()


# ============================================================================ 3. weights
def _with(es: ExpressionSet, **arrays) -> dict:
    kw = {f: getattr(es, f) for f in ("compounds", "genes", "expression", "weights", "n_replicates", "control",
                                       "smiles", "inchikey")}
    kw.update(arrays)
    return kw


@pytest.mark.parametrize("edit, match", [
    (lambda w: w.__setitem__((slice(None), 2), w[:, 2] * 2), r"do not sum to 1 .*within 0.01.*700002: 2"),
    (lambda w: w.__setitem__((slice(None), 2), 0.0), r"do not sum to 1 .*700002: 0"),
    (lambda w: w.__setitem__((0, 2), -w[0, 2]), r"1 negative value\(s\), first in compound 700002"),
])
def test_defect5_the_constructor_refuses_weights_the_metric_cannot_use(edit, match):
    es = small_es()
    w = np.array(es.weights, dtype=np.float64, copy=True)
    edit(w)
    with pytest.raises(DrugcellInputError, match=match):
        ExpressionSet(**_with(es, weights=w))


def _weights_file(es: ExpressionSet, path: Path, edit=None) -> Path:
    frame = pd.DataFrame(es.weights.astype(np.float32), columns=es.compounds)
    if edit is not None:
        edit(frame)
    frame.insert(0, "gene_id", es.genes)
    frame.to_parquet(path, index=False)
    return path


@pytest.mark.parametrize("edit, match", [
    (lambda f: f.__setitem__("700003", -f["700003"]), r"weights contain 12 negative value\(s\), first in compound 700003"),
    (lambda f: f.__setitem__("700005", f["700005"] * 0.5), "do not sum to 1.*700005"),
    (lambda f: f.__setitem__("700001", 0.0), "do not sum to 1.*700001"),
])
def test_defect5_with_weights_parquet_checks_the_file_naming_compound_and_file(tmp_path, edit, match):
    es = small_es()
    path = _weights_file(es, tmp_path / "w.parquet", edit)
    with pytest.raises(DrugcellInputError, match=f"weights file {re.escape(str(path))}.*{match}"):
        es.with_weights_parquet(path)
    good = es.with_weights_parquet(_weights_file(es, tmp_path / "ok.parquet"))
    np.testing.assert_array_equal(good.weights, es.weights)


def test_defect5_a_weights_folder_is_never_concatenated(tmp_path):
    """pyarrow reads a folder as one table of every parquet file in it (the last column of a name
    won): main took the folder. Now: a folder is refused naming what it holds, unless it holds
    weights.parquet, which is then the file used."""
    es = small_es()
    folder = tmp_path / "wdir"
    folder.mkdir()
    _weights_file(es, folder / "a.parquet")
    _weights_file(small_es(seed=9), folder / "b.parquet")
    with pytest.raises(DrugcellInputError, match=r"folder without a weights.parquet .*a.parquet', 'b.parquet'"):
        es.with_weights_parquet(folder)
    with pytest.raises(DrugcellInputError, match="folder without a weights.parquet"):
        run_cv(es, with_weights(cfg(), folder), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists() and not staging_dir(tmp_path / "run").exists()
    _weights_file(es, folder / "weights.parquet", lambda f: f.__setitem__("700000", f["700000"][::-1].to_numpy()))
    used = es.with_weights_parquet(folder)
    assert used.info["weights_source"] == str(folder / "weights.parquet")
    np.testing.assert_array_equal(used.weights[:, 0], es.weights[::-1, 0])


def with_weights(config, path):
    from drugcell.config import with_overrides

    return with_overrides(config, weights_file=str(path))


def test_defect5_cv_weights_are_checked_before_the_data_is_loaded(tmp_path):
    """`drugcell cv --weights` names the bad file before loading (the cache path does not even exist)."""
    from drugcell.cli import app

    folder = tmp_path / "wdir"
    folder.mkdir()
    (folder / "x.parquet").write_bytes(b"")
    res = CliRunner().invoke(app, ["cv", "--data", str(tmp_path / "no_cache"), "--config",
                                   str(write_toml(tmp_path / "c.toml")), "--out", str(tmp_path / "run"),
                                   "--weights", str(folder), "--no-progress"])
    assert isinstance(res.exception, DrugcellInputError) and "x.parquet" in str(res.exception)


def test_defect5_cv_weights_with_a_negative_weight_is_refused_naming_the_compound(tmp_path):
    es = small_es()
    path = _weights_file(es, tmp_path / "w.parquet", lambda f: f.__setitem__("700004", -f["700004"]))
    with pytest.raises(DrugcellInputError, match=r"weights contain 12 negative value\(s\), first in compound 700004"):
        run_cv(es, with_weights(cfg(), path), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("dtype", ["int8", "int32", "uint16", "bool"])
def test_also_weights_export_refuses_non_float_dtypes(tmp_path, dtype):
    """Main wrote zeros with int8 (weights are fractions of 1)."""
    with pytest.raises(DrugcellInputError, match=f"weights dtype '{dtype}' is not a float type"):
        small_es().write_weights_parquet(tmp_path / "w.parquet", dtype=dtype)
    assert not (tmp_path / "w.parquet").exists()


# ============================================================================ 4. values
def _nan_cache(tmp_path: Path, *, old: bool) -> Path:
    es = small_es()
    root = es.save(tmp_path / "cache")
    expr = np.load(root / "expression.npy")
    expr[5, 3] = np.nan
    np.save(root / "expression.npy", expr)
    return as_old_cache(root) if old else root


@pytest.mark.parametrize("mmap", [False, True])
def test_defect9_nan_in_an_old_cache_is_named_by_file_and_compound(tmp_path, mmap):
    root = _nan_cache(tmp_path, old=True)
    with pytest.raises(DrugcellInputError, match=re.escape(str(root / "expression.npy")) +
                       r" has NaN/inf for 1 compound\(s\), e.g. 700005.*re-run `drugcell load`"):
        ExpressionSet.load(root, mmap=mmap)


@pytest.mark.parametrize("old", [False, True])
def test_defect9_fit_and_cv_refuse_a_nan_cache_before_any_output(tmp_path, old):
    """Main's messages did not name the cache file; fit must not save a model, cv leaves no run."""
    from drugcell.cli import app

    root = _nan_cache(tmp_path, old=old)
    res = CliRunner().invoke(app, ["fit", "--data", str(root), "--predictor", "mean", "--out", str(tmp_path / "m")])
    assert isinstance(res.exception, DrugcellInputError) and str(root / "expression.npy") in str(res.exception)
    assert not (tmp_path / "m").exists()
    res = CliRunner().invoke(app, ["cv", "--data", str(root), "--config", str(write_toml(tmp_path / "c.toml")),
                                   "--out", str(tmp_path / "run"), "--no-progress"])
    assert isinstance(res.exception, DrugcellInputError) and str(root / "expression.npy") in str(res.exception)
    assert not (tmp_path / "run").exists() and not staging_dir(tmp_path / "run").exists()


@pytest.mark.parametrize("field_name, value, match", [
    ("compounds", None, "1 empty or missing compound id"),
    ("compounds", "  ", "1 empty or missing compound id"),
    ("genes", float("nan"), "1 empty or missing gene id"),
    ("n_replicates", 1.5, r"n_replicates is not a whole number for 1 compound\(s\), e.g. 700002: 1.5"),
    ("n_replicates", float("nan"), "n_replicates is not a whole number"),
])
def test_also_the_expression_set_refuses_missing_ids_and_fractional_counts(field_name, value, match):
    """Main turned None into '' and truncated 1.5 wells to 1."""
    es = small_es()
    arr = np.array(getattr(es, field_name), dtype=object if field_name != "n_replicates" else float)
    arr[2] = value
    with pytest.raises(DrugcellInputError, match=match):
        ExpressionSet(**_with(es, **{field_name: arr}))


def test_also_control_ids_must_be_unique_and_apart_from_compounds():
    es = small_es()
    base = _with(es, control_expression=np.ones((2, es.n_genes)), control_weights=np.full((es.n_genes, 2), 0.1))
    with pytest.raises(DrugcellInputError, match="duplicate control ids: DMSO"):
        ExpressionSet(**base, control_ids=["DMSO", "DMSO"])
    with pytest.raises(DrugcellInputError, match=r"\['700001'\] are both a compound and a control"):
        ExpressionSet(**base, control_ids=["DMSO", "700001"])


# ============================================================================ 6. weighting made irrelevant
def test_also_load_refuses_a_weights_library_that_weights_make_irrelevant(tmp_path):
    """`load --weights-library all --weights FILE`: the library only shapes computed weights, so
    main ignored it silently; now refused before the pass (the counts path does not even exist)."""
    from drugcell.data.loader import LoadOptions, load_to_cache

    w = _weights_file(small_es(), tmp_path / "w.parquet")
    with pytest.raises(DrugcellInputError, match="weights library 'all'.*replaces them: drop one of the two"):
        load_to_cache(tmp_path / "cache", *(tmp_path / n for n in ("c", "m", "ch", "g")),
                      options=LoadOptions(weights_library="all", weights_path=str(w)))
    with pytest.raises(DrugcellInputError, match="folder without a weights.parquet"):
        load_to_cache(tmp_path / "cache", *(tmp_path / n for n in ("c", "m", "ch", "g")),
                      options=LoadOptions(weights_path=str(tmp_path)))


# ============================================================================ 5. the run folder
@register("test_fails_in_fold_1")
class FailsInFold1(Predictor):
    """Test-only: the training mean, raising ``self.params['error']`` on its second fit."""

    defaults = {"error": "runtime"}
    state_fields = ("profile_",)
    fits = 0

    def _fit(self, train, seed):
        type(self).fits += 1
        if type(self).fits % 2 == 0:
            if self.params["error"] == "sigint":
                raise KeyboardInterrupt
            if self.params["error"] == "sigterm":
                assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, None)  # never kill the test runner
                signal.raise_signal(signal.SIGTERM)
            raise RuntimeError("boom in fold 1")
        self.profile_ = train.expression.mean(axis=0)

    def _predict(self, smiles):
        return Prediction(mean=np.tile(self.profile_, (len(smiles), 1)), std=None, info={})


def _failing_cfg(error: str):
    return config_from_dict({"cv": {"folds": 2, "bootstrap_resamples": 50},
                             "predictors": [{"name": "mean", "kind": "mean"},
                                            {"name": "bad", "kind": "test_fails_in_fold_1", "error": error}]})


@pytest.mark.parametrize("error, exc", [("runtime", RuntimeError), ("sigint", KeyboardInterrupt),
                                        ("sigterm", Terminated)])
def test_defect2_a_failed_run_leaves_the_earlier_run_intact_and_its_fits_for_resume(tmp_path, error, exc):
    """Main cleared the earlier run first, then failed: with --overwrite the old run was lost and
    a half-written folder was left. Now the earlier run is intact and (#11) the staging folder with
    the three fits finished before the failure is kept for --resume, and the error says so."""
    from drugcell.evaluation.parts import finished_parts

    FailsInFold1.fits = 0
    handler = signal.getsignal(signal.SIGTERM)
    es = small_es()
    run = tmp_path / "run"
    run_cv(es, cfg(), run, progress=False)
    before = snapshot(run)
    with pytest.raises(exc) as info:
        run_cv(es, _failing_cfg(error), run, progress=False, overwrite=True)
    assert snapshot(run) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [".run.partial", "run"]
    assert finished_parts(staging_dir(run)) == 3  # fold 0: mean, bad; fold 1: mean
    assert any("--resume" in note for note in info.value.__notes__)
    FailsInFold1.fits = 0
    with pytest.raises(exc):
        run_cv(es, _failing_cfg(error), tmp_path / "new", progress=False)
    assert not (tmp_path / "new").exists() and sorted(p.name for p in tmp_path.iterdir()) == [
        ".new.partial", ".run.partial", "run"]
    assert signal.getsignal(signal.SIGTERM) == handler  # restored


def test_defect2_overwrite_swaps_the_complete_run_in(tmp_path, monkeypatch):
    from drugcell.evaluation.run_dir import MARKER

    es = small_es()
    run = tmp_path / "run"
    run_cv(es, cfg(seed=0), run, progress=False)
    res = run_cv(es, cfg(seed=1), run, progress=False, overwrite=True)
    assert res.out_dir == run and json.loads((run / "manifest.json").read_text())["seed"] == 1
    listed = json.loads((run / "manifest.json").read_text())["files"]
    assert sorted(p.name for p in run.iterdir()) == sorted(listed + ["manifest.json"]) and MARKER not in listed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    # where the atomic exchange is unavailable: two renames, the same result
    import drugcell.evaluation.run_dir as run_dir

    monkeypatch.setattr(run_dir, "_exchange", lambda a, b: False)
    run_cv(es, cfg(seed=2), run, progress=False, overwrite=True)
    assert json.loads((run / "manifest.json").read_text())["seed"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_defect2_stale_staging_is_cleared_only_when_it_is_drugcells(tmp_path):
    from drugcell.evaluation.run_dir import MARKER, clear_stale_staging

    run = tmp_path / "run"
    stage = staging_dir(run)
    stage.mkdir()
    (stage / MARKER).write_text(json.dumps({"pid": 2**22 + 12345}))  # a pid no live process has here
    (stage / "scores.parquet").write_text("half")
    assert "removed" in clear_stale_staging(run) and not stage.exists()
    stage.mkdir()
    (stage / "mine.txt").write_text("keep")
    with pytest.raises(DrugcellInputError, match="is in the way.*not written by `drugcell cv`"):
        run_cv(small_es(), cfg(), run, progress=False)
    assert (stage / "mine.txt").read_text() == "keep"
    (stage / "mine.txt").unlink()
    (stage / MARKER).write_text(json.dumps({"pid": os.getppid()}))  # a live process, not this one
    with pytest.raises(DrugcellInputError, match=r"another `drugcell cv` \(pid \d+\) is writing"):
        clear_stale_staging(run)


def test_defect2_an_earlier_run_set_aside_by_an_interrupted_swap_is_restored(tmp_path):
    from drugcell.evaluation.run_dir import clear_stale_staging

    es = small_es()
    run = tmp_path / "run"
    run_cv(es, cfg(), run, progress=False)
    before = snapshot(run)
    aside = staging_dir(run).with_name(staging_dir(run).name + "-old")
    os.rename(run, aside)  # a kill between the two renames of the fallback swap
    assert "restored the earlier run" in clear_stale_staging(run)
    assert snapshot(run) == before and not aside.exists()


@pytest.mark.slow
def test_defect2_sigkill_leaves_the_old_run_or_the_complete_new_one(tmp_path):
    """Fault test: `drugcell cv --overwrite` killed (SIGKILL) at seeded random points of its run;
    --out is then the old run byte for byte or the complete new run (the reference run with the same
    seed; manifest.json, summary.md and diagnostics.parquet carry wall times and are checked for
    completeness only). A rerun with --overwrite clears the staging folder a kill left (#11 keeps it
    for --resume), says so, and leaves none. On main the old run was removed first, so a kill left a
    partial folder."""
    from drugcell.cli import app

    es = small_es()
    cache = es.save(tmp_path / "cache")
    toml = write_toml(tmp_path / "c.toml")
    pristine, run = tmp_path / "pristine", tmp_path / "out" / "run"
    run_cv(es, cfg(seed=0), pristine, progress=False)
    old = snapshot(pristine)
    t0 = time.perf_counter()
    ref = run_cv(es, cfg(seed=1), tmp_path / "ref", progress=False).out_dir
    duration = time.perf_counter() - t0
    new = snapshot(ref)
    timed = {"manifest.json", "summary.md", "diagnostics.parquet"}  # wall times inside
    cmd = [sys.executable, "-m", "drugcell", "cv", "--data", str(cache), "--config", str(toml), "--out", str(run),
           "--seed", "1", "--overwrite", "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    rng = np.random.default_rng(2024)
    delays = [*rng.uniform(0, 2 * duration + 0.5, size=3), 0.0]  # the last leaves a staging folder
    outcomes = []
    for delay in delays:
        if run.exists():
            shutil.rmtree(run)
        shutil.copytree(pristine, run)
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while not staging_dir(run).exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        got = snapshot(run)
        if got == old:
            outcomes.append("old")
            continue
        assert set(got) == set(new), f"kill after {delay:.2f} s: --out holds neither run"
        assert all(got[f] == new[f] for f in got if f not in timed)
        manifest = json.loads(got["manifest.json"])
        assert manifest["command"] == "drugcell cv" and manifest["seed"] == 1
        outcomes.append("new")
    assert "old" in outcomes  # the kill right after staging began left the old run
    assert staging_dir(run).exists()  # ... and its staging folder, for the rerun to clear
    res = CliRunner().invoke(app, cmd[3:])
    assert res.exit_code == 0, res.output
    assert "removed" in res.output and "interrupted" in res.output
    assert sorted(p.name for p in run.parent.iterdir()) == ["run"]
    got = snapshot(run)
    assert [f for f in new if f not in timed and got[f] != new[f]] == [], outcomes


# ----------------------------------------------------------------------------- caches and models: atomic_dir after SIGKILL
def test_defect8_atomic_dir_recovers_what_a_sigkilled_write_left(tmp_path):
    """A cache or model folder written by atomic_dir: an old folder set aside between the two
    renames comes back, temporary folders of dead writers go, a live writer's and foreign ones stay."""
    import os
    import subprocess
    import sys

    from drugcell.provenance import atomic_dir

    final = tmp_path / "cache"
    aside = tmp_path / ".cache.old"
    aside.mkdir()
    (aside / "manifest.json").write_text("old")  # a kill fell between the two renames: no `cache`
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / ".cache.abc123"
    stale.mkdir()
    (stale / ".drugcell-writing").write_text(dead.stdout.strip())
    live = tmp_path / ".cache.live99"
    live.mkdir()
    (live / ".drugcell-writing").write_text(str(os.getpid()))
    foreign = tmp_path / ".cache.mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("user's")

    with pytest.raises(RuntimeError), atomic_dir(final) as tmp:
        raise RuntimeError("fail before the swap")
    assert (final / "manifest.json").read_text() == "old" and not aside.exists()  # restored, then left as it was
    assert not stale.exists() and live.exists() and (foreign / "notes.txt").exists()

    with atomic_dir(final) as tmp:
        (tmp / "manifest.json").write_text("new")
    assert sorted(p.name for p in final.iterdir()) == ["manifest.json"]  # the writer's marker never lands
    assert (final / "manifest.json").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".cache.live99", ".cache.mine", "cache"]
