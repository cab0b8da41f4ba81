"""Issue #11 item 2: resumable, interruptible `drugcell cv` runs. Each finished (fold, predictor) is
written as it completes; Ctrl-C and SIGTERM stop the run (RDKit's descriptor loop included) and
keep its staging folder; `--resume` finishes it with the same files as an uninterrupted run, and
refuses one started with other settings; an existing `--out` or interrupted run needs `--resume`
or `--overwrite`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from drugcell.config import config_from_dict, load_config
from drugcell.data.expression_set import ExpressionSet
from drugcell.errors import DrugcellInputError
from drugcell.evaluation.cv import run_cv
from drugcell.evaluation.engines import LocalEngine
from drugcell.evaluation.parts import PARTS, STATE, finished_parts
from drugcell.models import Prediction, Predictor, register
from drugcell.provenance import Terminated, terminate_raises
from tests.test_cv import toy_es
from tests.test_engines import TABLES

ROOT = Path(__file__).resolve().parent.parent
TOML = """[cv]
folds = 3
bootstrap_resamples = 200
[output]
uncertainty_sample = 500
save_predictions = true
[[predictors]]
name = "control"
kind = "control"
[[predictors]]
name = "wmean"
kind = "wmean"
[[predictors]]
name = "knn_k5"
kind = "knn"
k = 5
kernel = "tanimoto"
[[predictors]]
name = "ridge_fp"
kind = "ridge_fp"
"""


def staging_dir(out: Path) -> Path:
    return out.parent / f".{out.name}.partial"


def same_files(a: Path, b: Path, predictors) -> None:
    for name in TABLES:
        assert (a / f"{name}.parquet").read_bytes() == (b / f"{name}.parquet").read_bytes(), name
    for p in predictors:
        assert (a / f"predictions/{p}.npy").read_bytes() == (b / f"predictions/{p}.npy").read_bytes(), p
    assert (a / "choice.json").read_bytes() == (b / "choice.json").read_bytes()
    assert sorted(p.name for p in a.iterdir()) == sorted(p.name for p in b.iterdir())


# ----------------------------------------------------------------------------- Ctrl-C, then --resume
@pytest.mark.slow
def test_a_run_interrupted_by_sigint_and_resumed_equals_an_uninterrupted_run(plated_cache, tmp_path):
    """`drugcell cv` in a subprocess gets SIGINT once its first parts are on disk (seen by polling
    the staging folder); it stops, keeps them and says --resume; the resumed run's files equal an
    uninterrupted run's byte for byte. Main had no parts: a stopped run kept nothing."""
    from drugcell.cli import app

    (tmp_path / "c.toml").write_text(TOML)
    cfg = load_config(tmp_path / "c.toml")
    ref = run_cv(ExpressionSet.load(plated_cache), cfg, tmp_path / "ref", progress=False).out_dir
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "drugcell", "cv", "--data", str(plated_cache), "--config", str(tmp_path / "c.toml"),
           "--out", str(run), "--no-progress"]
    proc = subprocess.Popen(cmd, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,  # SIGINT as a terminal's Ctrl-C delivers it,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # even if we ignore it
    parts = staging_dir(run) / PARTS
    deadline = time.monotonic() + 300
    while proc.poll() is None and len(list(parts.glob("*.json"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0, err
    assert not run.exists(), "the run finished before the signal: nothing was interrupted"
    done = finished_parts(staging_dir(run))
    assert 2 <= done < 12 and "--resume" in err, err
    assert (staging_dir(run) / STATE).is_file()
    refused = CliRunner().invoke(app, cmd[3:])  # neither flag: the interrupted run is not replaced
    assert isinstance(refused.exception, DrugcellInputError) and "pass --resume to finish it" in str(refused.exception)
    res = CliRunner().invoke(app, [*cmd[3:], "--resume"])
    assert res.exit_code == 0, res.output
    same_files(ref, run, [p.name for p in cfg.predictors])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.toml", "ref", "run"]  # no staging left
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["resumed"]["fits_reused"] == done


# ----------------------------------------------------------------------------- in-process interruption
@register("test_interrupt_once")
class InterruptOnce(Predictor):
    """Test-only: the training mean with a std; while ``armed`` its fit number ``at`` raises what
    ``armed`` names (a Ctrl-C or a SIGTERM), once."""

    defaults = {"scale": 1.0}
    state_fields = ("profile_",)
    armed: str | None = None
    at = 3
    fits = 0

    def _fit(self, train, seed):
        cls = type(self)
        cls.fits += 1
        if cls.armed and cls.fits == cls.at:
            what, cls.armed = cls.armed, None
            if what == "sigterm":
                signal.raise_signal(signal.SIGTERM)
            raise KeyboardInterrupt
        self.profile_ = train.expression.mean(axis=0) * self.params["scale"]

    def _predict(self, smiles):
        mean = np.tile(self.profile_, (len(smiles), 1))
        return Prediction(mean=mean, std=np.full_like(mean, 0.5), info={})


def interrupt_cfg(seed=0, scale=1.0):
    return config_from_dict({"cv": {"folds": 3, "bootstrap_resamples": 50, "seed": seed},
                             "output": {"uncertainty_sample": 30, "save_predictions": True},
                             "predictors": [{"name": "mean", "kind": "mean"},
                                            {"name": "stopper", "kind": "test_interrupt_once", "scale": scale},
                                            {"name": "knn", "kind": "knn", "k": 3}]})


def interrupted(es, run: Path, what: str = "sigint", cfg=None):
    """Run until the stopper's third fit (fold 2) interrupts it; the exception raised."""
    InterruptOnce.fits, InterruptOnce.armed = 0, what
    with pytest.raises((KeyboardInterrupt, Terminated)) as info:
        run_cv(es, cfg or interrupt_cfg(), run, progress=False)
    return info.value


@pytest.mark.parametrize("what", ["sigint", "sigterm"])
def test_an_interrupted_run_keeps_its_parts_and_resumes_to_the_same_files(tmp_path, what):
    es = toy_es(n_templates=4, n_per=6)
    InterruptOnce.armed = None
    ref = run_cv(es, interrupt_cfg(), tmp_path / "ref", progress=False).out_dir
    run = tmp_path / "run"
    exc = interrupted(es, run, what)
    assert isinstance(exc, KeyboardInterrupt if what == "sigint" else Terminated)
    assert any("--resume" in n for n in exc.__notes__)
    assert not run.exists() and finished_parts(staging_dir(run)) == 7  # folds 0, 1 whole; fold 2: mean
    res = run_cv(es, interrupt_cfg(), run, progress=False, resume=True)
    same_files(ref, run, ["mean", "stopper", "knn"])
    assert not staging_dir(run).exists()
    assert json.loads((run / "manifest.json").read_text())["resumed"]["fits_reused"] == 7
    assert res.out_dir == run


def test_resume_with_other_settings_is_refused_naming_what_differs(tmp_path):
    es = toy_es(n_templates=4, n_per=6)
    run = tmp_path / "run"
    interrupted(es, run)
    before = sorted(p.name for p in (staging_dir(run) / PARTS).iterdir())
    cases = [
        (dict(cfg=interrupt_cfg(seed=1)), r"cv\.seed: 0 when it started, 1 now"),
        (dict(cfg=interrupt_cfg(scale=2.0)), r"predictors\[1\]\.scale: 1\.0 when it started, 2\.0 now"),
        (dict(es=toy_es(n_templates=4, n_per=6, seed=1)), "data_fingerprint: "),
        (dict(engine=LocalEngine(threads=2)), "threads: 1 when it started, 2 now"),
    ]
    for kwargs, match in cases:
        with pytest.raises(DrugcellInputError, match="--resume: the interrupted run .* other settings.*" + match):
            run_cv(kwargs.get("es", es), kwargs.get("cfg", interrupt_cfg()), run, progress=False, resume=True,
                   engine=kwargs.get("engine"))
    assert sorted(p.name for p in (staging_dir(run) / PARTS).iterdir()) == before  # untouched
    run_cv(es, interrupt_cfg(), run, progress=False, resume=True)  # as it started: finished
    assert (run / "scores.parquet").is_file() and not staging_dir(run).exists()


def test_a_damaged_or_lost_part_is_fitted_again(tmp_path):
    es = toy_es(n_templates=4, n_per=6)
    InterruptOnce.armed = None
    ref = run_cv(es, interrupt_cfg(), tmp_path / "ref", progress=False).out_dir
    run = tmp_path / "run"
    interrupted(es, run)
    stage = staging_dir(run)
    npz = stage / PARTS / "0__knn.npz"
    npz.write_bytes(npz.read_bytes()[:-7] + b"damaged")
    (stage / "predictions" / ".mean.npy.tmp").unlink()  # mean's saved rows are gone: its parts with them
    res = run_cv(es, interrupt_cfg(), run, progress=False, resume=True)
    same_files(ref, run, ["mean", "stopper", "knn"])
    reused = json.loads((run / "manifest.json").read_text())["resumed"]["fits_reused"]
    assert reused == 7 - 1 - 3 and res.out_dir == run  # 0__knn and mean's three parts fitted again


# ----------------------------------------------------------------------------- --out rules
def test_an_existing_out_needs_resume_or_overwrite(tmp_path):
    from drugcell.cli import app

    es = toy_es(n_templates=4, n_per=6)
    cache = es.save(tmp_path / "cache")
    (tmp_path / "c.toml").write_text('[cv]\nfolds = 2\nbootstrap_resamples = 20\n[[predictors]]\nname = "mean"\n'
                                     'kind = "mean"\n')
    run = tmp_path / "run"
    args = ["cv", "--data", str(cache), "--config", str(tmp_path / "c.toml"), "--out", str(run), "--no-progress"]

    def invoke(*extra):
        res = CliRunner().invoke(app, [*args, *extra])
        return str(res.exception) if isinstance(res.exception, DrugcellInputError) else res.exit_code

    assert invoke("--resume") == 0  # nothing to resume: the run starts (and says so)
    assert "already holds a `drugcell cv` run; pass --overwrite" in invoke()
    assert "holds a complete `drugcell cv` run: nothing to resume" in invoke("--resume")
    assert "pass one" in invoke("--resume", "--overwrite")
    assert invoke("--overwrite") == 0
    # an interrupted run: refused without a flag; --overwrite removes it first, so nothing of it is reused
    interrupted(es, tmp_path / "int")
    args[args.index("--out") + 1] = str(tmp_path / "int")
    assert "has an interrupted `drugcell cv` run" in invoke() and "pass --resume to finish it" in invoke()
    assert invoke("--overwrite") == 0
    assert "resumed" not in json.loads((tmp_path / "int" / "manifest.json").read_text())
    assert not staging_dir(tmp_path / "int").exists()


def test_a_failure_before_any_fit_leaves_no_staging_but_one_after_keeps_it(tmp_path, monkeypatch):
    """An error before the first part (here the leak audit) leaves nothing worth resuming; one
    after it keeps the finished fits (main removed the staging folder on every error)."""
    import drugcell.evaluation.cv as cv

    InterruptOnce.fits, InterruptOnce.armed = 0, None
    real = cv._folds_and_audit

    def leak(*a, **k):
        raise DrugcellInputError("leak")

    monkeypatch.setattr(cv, "_folds_and_audit", leak)
    with pytest.raises(DrugcellInputError, match="leak"):
        run_cv(toy_es(n_templates=3, n_per=6), interrupt_cfg(), tmp_path / "run", progress=False)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(cv, "_folds_and_audit", real)

    def disk_full(*a):
        raise RuntimeError("disk full")

    monkeypatch.setattr(cv, "_record", disk_full)
    with pytest.raises(RuntimeError, match="disk full") as info:
        run_cv(toy_es(n_templates=3, n_per=6), interrupt_cfg(), tmp_path / "run", progress=False)
    assert finished_parts(staging_dir(tmp_path / "run")) == 9 and "--resume" in info.value.__notes__[0]




# ----------------------------------------------------------------------------- featurisation
@pytest.mark.parametrize("sig, exc", [(signal.SIGINT, KeyboardInterrupt), (signal.SIGTERM, Terminated)])
def test_a_signal_inside_rdkits_descriptor_loop_stops_it(monkeypatch, sig, exc):
    """RDKit's CalcMolDescriptors runs each descriptor under a bare ``except:``: on main a Ctrl-C
    (or drugcell's Terminated) raised inside it was swallowed and the loop went on to the end."""
    from rdkit.Chem import Descriptors

    from drugcell.chem import descriptors

    smiles = [s for s in toy_es(n_templates=4, n_per=6).smiles][:20]
    calls = {"n": 0}
    name, fn = Descriptors._descList[10]

    def signalling(mol):
        calls["n"] += 1
        if calls["n"] == 3:  # inside the third molecule's descriptors
            signal.raise_signal(sig)
        return fn(mol)

    monkeypatch.setattr(Descriptors, "_descList", [*Descriptors._descList[:10], (name, signalling),
                                                   *Descriptors._descList[11:]])
    descriptors.clear_descriptor_cache()
    old = signal.signal(signal.SIGINT, signal.default_int_handler)  # a Ctrl-C raises, as in the CLI
    try:
        with terminate_raises(), pytest.raises(exc):
            descriptors.compute_descriptors(smiles)
    finally:
        signal.signal(signal.SIGINT, old)
    assert len(descriptors._CACHE) == 2  # stopped right after the molecule it came in
    descriptors.clear_descriptor_cache()
