"""`drugcell report RUN`: the page's sections and numbers against the run's own tables (recomputed
here by plain loops), graceful notes for what a run lacks, the run folder left untouched, the
refusals, and the page rendered in headless Chromium (every image loads, the page is not blank)."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import warnings
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from drugcell.cli import app
from drugcell.config import config_from_dict
from drugcell.errors import DrugcellInputError
from drugcell.report.page import write_report
from tests.test_cv import toy_es

SECTION_IDS = ["choice", "ranking", "metrics", "calibration", "estimate", "audit", "provenance"]
METRICS = ["mejia", "proxy", "variance"]


# ----------------------------------------------------------------------------- runs to report on
@pytest.fixture(scope="module")
def plate_run(tmp_path_factory) -> Path:
    """A small simulated set on 3 usable plates: 3 metrics, two knn with a std, calibrated."""
    from drugcell.calibration.report import calibrate_run
    from drugcell.data.expression_set import ExpressionSet
    from drugcell.data.loader import load_to_cache
    from drugcell.data.simulate import simulate_vcpi
    from drugcell.evaluation.cv import run_cv

    root = tmp_path_factory.mktemp("report_plates")
    files = simulate_vcpi(root / "sim", n_compounds=420, n_genes=1500, n_test=24, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        load_to_cache(root / "cache", files["train_counts"], files["train_metadata"], files["train_chemistry"],
                      files["gene_filter"], progress=False)
    es = ExpressionSet.load(root / "cache")
    assert es.plates is not None and es.plates.usable().sum() >= 3
    cfg = config_from_dict({
        "cv": {"folds": 3, "bootstrap_resamples": 400, "metrics": METRICS},
        "output": {"uncertainty_sample": 2000},
        "estimate": {"test_plates": 1, "test_compounds": 24, "resamples": 200},
        "predictors": [{"name": "control", "kind": "control"}, {"name": "mean", "kind": "mean"},
                       {"name": "wmean", "kind": "wmean"}, {"name": "knn_k5", "kind": "knn", "k": 5},
                       {"name": "knn_soft", "kind": "knn", "k": 10, "kernel": "softmax"}],
    })
    run_cv(es, cfg, root / "run", progress=False)
    calibrate_run(root / "run")
    return root / "run"


@pytest.fixture(scope="module")
def bare_run(tmp_path_factory) -> Path:
    """No plates, no std, one metric: the sections that need them must show notes."""
    from drugcell.evaluation.cv import run_cv

    root = tmp_path_factory.mktemp("report_bare")
    cfg = config_from_dict({"cv": {"folds": 3, "bootstrap_resamples": 300, "metrics": ["mejia"]},
                            "predictors": [{"name": p, "kind": p} for p in ("control", "mean", "wmean")]})
    run_cv(toy_es(), cfg, root / "run", progress=False)
    return root / "run"


@pytest.fixture(scope="module")
def plate_page(plate_run, tmp_path_factory):
    """The plate run copied, its files' digests, then its report written to the default place."""
    run = _copy(plate_run, tmp_path_factory.mktemp("report_page") / "run")
    before = _tree_digest(run)
    return run, before, write_report(run)


def _copy(run: Path, dest: Path) -> Path:
    shutil.copytree(run, dest)
    (dest / "report.html").unlink(missing_ok=True)
    return dest


# ----------------------------------------------------------------------------- reading the page
class _Page(HTMLParser):
    """Section id -> its text, and the cell texts of every table row in it."""

    def __init__(self) -> None:
        super().__init__()
        self.text: dict[str, str] = {}
        self.rows: dict[str, list[list[str]]] = {}
        self.section: str | None = None
        self.row: list[str] | None = None
        self.cell: list[str] | None = None
        self.imgs: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "section":
            self.section = a["id"]
            self.text[self.section], self.rows[self.section] = "", []
        elif tag == "tr" and self.section:
            self.row = []
        elif tag in ("td", "th") and self.row is not None:
            self.cell = []
        elif tag == "img":
            self.imgs.append(a.get("src", ""))

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self.cell is not None:
            self.row.append("".join(self.cell).strip())
            self.cell = None
        elif tag == "tr" and self.row is not None:
            self.rows[self.section].append(self.row)
            self.row = None
        elif tag == "section":
            self.section = None

    def handle_data(self, data):
        if self.section:
            self.text[self.section] += data
        if self.cell is not None:
            self.cell.append(data)


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text())
    return page


def _row(page: _Page, section: str, first: str, col: int = 0) -> list[str]:
    return next(r for r in page.rows[section] if len(r) > col and r[col] == first)


def _tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------- the page's content
def test_page_has_every_section_and_the_runs_numbers(plate_page):
    run, before, res = plate_page
    assert res.path == run / "report.html" and res.with_notes == []
    after = _tree_digest(run)
    assert after.pop("report.html") and after == before  # the run's own files untouched, nothing else added

    html = res.path.read_text()
    page = _parse(res.path)
    assert list(page.text) == SECTION_IDS
    # self-contained: four inline PNG figures, no script, nothing fetched
    assert len(page.imgs) == 4 and all(s.startswith("data:image/png;base64,") for s in page.imgs)
    assert "<script" not in html and "<link" not in html and not re.search(r"(src|href)=\"(https?:|//)", html)
    assert "wMSE of log2(CPM+1)" in html

    scores = pd.read_parquet(run / "scores.parquet")
    mejia = scores[scores.metric == "mejia"].pivot(index="compound", columns="predictor", values="wmse").sort_index()
    means = mejia.mean()
    choice = json.loads((run / "choice.json").read_text())["mejia"]
    chosen = choice["predictor"]
    assert f"{chosen} under mejia: mean wMSE {means[chosen]:.4f}" in " ".join(page.text["choice"].split())
    assert choice["reason"] in page.text["choice"]

    # ranking: order, mean and the compound bootstrap interval by a plain loop (seed 0, 400 resamples)
    rng = np.random.default_rng(0)
    n = len(mejia)
    boot = np.array([mejia.to_numpy()[rng.integers(0, n, size=n)].mean(axis=0) for _ in range(400)])
    lo, hi = np.quantile(boot, [0.025, 0.975], axis=0)
    ranked = [r[1] for r in page.rows["ranking"][1:]]
    assert ranked == sorted(means.index, key=lambda p: (means[p], p))
    for j, p in enumerate(mejia.columns):
        row = _row(page, "ranking", p, col=1)
        assert row[2] == f"{means[p]:.4f}" and row[3] == f"[{lo[j]:.4f}, {hi[j]:.4f}]", (p, row)
        if p != "wmean":  # the reference: the paired difference's point value
            assert row[5].startswith(f"{means[p] - means['wmean']:+.4f} ["), (p, row)
    assert "chosen" in _row(page, "ranking", chosen, col=1)[-1]

    # metric moves: Kendall tau between the metric rankings by counting pairs
    by_metric = scores.groupby(["metric", "predictor"])["wmse"].mean().unstack("predictor")
    for a, b in itertools.combinations(METRICS, 2):
        pairs = list(itertools.combinations(by_metric.columns, 2))
        s = sum(np.sign(by_metric.loc[a, x] - by_metric.loc[a, y]) * np.sign(by_metric.loc[b, x] - by_metric.loc[b, y])
                for x, y in pairs)
        assert [a, b, "5", f"{s / len(pairs):.3f}"] in [r[:4] for r in page.rows["metrics"]]

    # calibration: the saved scale and the raw coverage, from the sampled cells by hand
    unc = pd.read_parquet(run / "uncertainty.parquet")
    for p in ("knn_k5", "knn_soft"):
        u = unc[unc.predictor == p]
        z = u.error.to_numpy(np.float64) / u["std"].to_numpy(np.float64)
        row = _row(page, "calibration", p)
        saved = json.loads((run / "calibrators" / f"{p}.json").read_text())["scale"]
        assert row[1] == f"{len(u):,}" and row[5] == f"{np.mean(np.abs(z) <= 1):.3f}"
        assert row[-2] == f"{np.sqrt(np.mean(z ** 2)):.3f}" == f"{saved:.3f}" == row[-1]

    # estimate: the floor and every predictor's estimate and interval
    est = pd.read_parquet(run / "leaderboard_estimate.parquet").query("metric == 'mejia'")
    assert f"floor, {est.floor.iloc[0]:.4f}" in page.text["estimate"]
    assert "no plate layout" not in page.text["estimate"]
    for r in est.itertuples():
        assert _row(page, "estimate", r.predictor)[1:3] == [f"{r.estimate:.4f}", f"[{r.ci_low:.4f}, {r.ci_high:.4f}]"]

    # audit: fold sizes from folds.parquet
    folds = pd.read_parquet(run / "folds.parquet")
    for k, size in folds.groupby("fold").size().items():
        row = _row(page, "audit", str(k))
        assert row[1:3] == [f"{len(folds) - size:,}", f"{size:,}"] and row[-1] == "0"

    manifest = json.loads((run / "manifest.json").read_text())
    for key in ("data_fingerprint", "drugcell_version", "created_utc"):
        assert str(manifest[key]) in page.text["provenance"]
    assert "knn_soft" in page.text["provenance"]  # the config


def test_a_run_without_std_plates_or_second_metric_renders_with_notes(bare_run, tmp_path):
    run = _copy(bare_run, tmp_path / "run")
    res = write_report(run, tmp_path / "page.html")
    page = _parse(res.path)
    assert list(page.text) == SECTION_IDS
    assert set(res.with_notes) == {"How the ranking moves between metrics", "Calibration of the predicted std",
                                   "Leaderboard estimate against the noise floor"}
    assert "no uncertainty.parquet" in page.text["calibration"]
    assert "one metric (mejia)" in page.text["metrics"]
    est = " ".join(page.text["estimate"].split())
    assert "This run has no plate layout (the data set records no plates" in est and "optimistic" in est
    assert len(page.imgs) == 2  # ranking and estimate (CV mean with its interval)
    assert not (run / "report.html").exists()


def test_an_older_or_damaged_run_gets_notes_not_a_traceback(plate_run, tmp_path):
    run = _copy(plate_run, tmp_path / "run")
    for name in ("leaderboard_estimate.parquet", "uncertainty.parquet", "choice.json", "agreement.parquet"):
        (run / name).unlink()
    (run / "comparisons.parquet").write_bytes(b"not parquet")
    (run / "audit.json").write_text("[1, 2]")
    res = CliRunner().invoke(app, ["report", str(run)])
    assert res.exit_code == 0, res.output
    page = _parse(run / "report.html")
    assert list(page.text) == SECTION_IDS
    assert "choice.json is missing" in page.text["choice"]
    assert "comparisons.parquet could not be read" in page.text["ranking"]
    assert "agreement.parquet is missing" in page.text["metrics"]
    assert "no uncertainty.parquet" in page.text["calibration"]
    assert "leaderboard_estimate.parquet is missing" in page.text["estimate"]
    assert "audit.json is not a JSON object" in page.text["audit"]
    assert len(page.imgs) == 2  # the ranking (intervals from scores) and the rank heatmap still draw
    assert "sections with a note" in res.output


def test_without_scores_the_interval_comes_from_the_fold_means(bare_run, tmp_path):
    run = _copy(bare_run, tmp_path / "run")
    scores = pd.read_parquet(run / "scores.parquet")
    (run / "scores.parquet").unlink()
    page = _parse(write_report(run).path)
    assert "scores.parquet is missing" in page.text["ranking"]
    for p, sub in scores.groupby("predictor"):
        fold_means = sub.groupby("fold")["wmse"].mean()
        half = 1.96 * fold_means.std(ddof=1) / np.sqrt(len(fold_means))
        mean = sub["wmse"].mean()
        assert _row(page, "ranking", p, col=1)[2:4] == [f"{mean:.4f}", f"[{mean - half:.4f}, {mean + half:.4f}]"]


def test_refusals_overwrite_and_the_runs_own_files(bare_run, tmp_path):
    run = _copy(bare_run, tmp_path / "run")
    write_report(run)
    first = (run / "report.html").read_bytes()
    with pytest.raises(DrugcellInputError, match="--overwrite"):
        write_report(run)
    assert (run / "report.html").read_bytes() == first
    write_report(run, overwrite=True)
    summary_md = (run / "summary.md").read_bytes()
    with pytest.raises(DrugcellInputError, match="one of the run's own files"):
        write_report(run, run / "summary.md", overwrite=True)
    assert (run / "summary.md").read_bytes() == summary_md
    with pytest.raises(DrugcellInputError, match="is a folder"):
        write_report(run, tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DrugcellInputError, match="no manifest.json"):
        write_report(tmp_path / "empty")
    other = tmp_path / "other"
    other.mkdir()
    (other / "manifest.json").write_text(json.dumps({"command": "calibrate"}))
    with pytest.raises(DrugcellInputError, match="not a `drugcell cv` run"):
        write_report(other)
    assert not list(tmp_path.glob("*.html")) and not (other / "report.html").exists()


def test_cli_refuses_a_folder_that_is_not_a_run_with_exit_code_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "drugcell", "report", str(tmp_path)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "is not a `drugcell cv` run" in proc.stderr and "Traceback" not in proc.stderr


# ----------------------------------------------------------------------------- in a real browser
def _chromium() -> str:
    """Debian's chromium (`make test` installs it); skip without it, but fail under CI or
    DRUGCELL_REQUIRE_SHARED=1 so a missing browser can never pass silently."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    msg = "headless Chromium not found (`make test` installs Debian's chromium as root: apt-get install -y chromium)"
    if os.environ.get("DRUGCELL_REQUIRE_SHARED") == "1" or os.environ.get("CI"):
        pytest.fail(msg + "; CI / DRUGCELL_REQUIRE_SHARED=1 forbids skipping")
    pytest.skip(msg)


PROBE = """<script>
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var loaded = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  var out = document.createElement("pre");
  out.id = "probe";
  out.textContent = JSON.stringify({images: imgs.length, loaded: loaded, text: document.body.innerText.length,
                                    sections: document.querySelectorAll("section").length});
  document.body.appendChild(out);
});
</script>"""


def _browser(chromium: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180)


@pytest.fixture(scope="module")
def chromium() -> str:
    return _chromium()


def test_page_renders_in_headless_chromium_with_every_image_loaded(chromium, plate_page, tmp_path):
    res = plate_page[2]
    probe = tmp_path / "probe.html"
    probe.write_text(res.path.read_text().replace("</body>", PROBE + "\n</body>"))
    proc = _browser(chromium, tmp_path, "--dump-dom", probe.as_uri())
    found = re.search(r'<pre id="probe">(.*?)</pre>', proc.stdout, flags=re.S)
    assert found, (proc.returncode, proc.stderr[-2000:])
    counts = json.loads(found.group(1).replace("&quot;", '"'))
    assert counts["images"] == 4 and counts["loaded"] == 4, counts
    assert counts["sections"] == len(SECTION_IDS) and counts["text"] > 2000, counts

    shot = tmp_path / "shot.png"
    proc = _browser(chromium, tmp_path, "--window-size=1280,2400", f"--screenshot={shot}", res.path.as_uri())
    assert shot.is_file(), proc.stderr[-2000:]
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=np.float64)
    assert pixels.shape[:2] == (2400, 1280)
    assert pixels.std() > 10 and len(np.unique(pixels.reshape(-1, 3)[::7], axis=0)) > 50  # not one colour
