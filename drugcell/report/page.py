"""The report page: every section in one self-contained HTML file, written atomically.

Self-contained means one file a reader can mail or open offline: inline CSS, figures as inline
PNG, no script, nothing fetched. The run folder is only read; the page goes to ``RUN/report.html``
or ``--out``. An existing file is replaced only with ``overwrite``, and a file inside the run that
is not an earlier report (one of the run's own files) never is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from drugcell import __version__
from drugcell.errors import DrugcellInputError
from drugcell.outputs import check_out_location
from drugcell.provenance import write_text
from drugcell.report.audit import audit_section
from drugcell.report.calibration import calibration_section
from drugcell.report.estimate import estimate_section
from drugcell.report.html import Section, esc
from drugcell.report.metric_moves import metric_moves_section
from drugcell.report.provenance import choice_section, provenance_section
from drugcell.report.ranking import ranking_section
from drugcell.report.run import Run, read_run

DEFAULT_NAME = "report.html"
GENERATOR = "drugcell report"
#: The sections in page order: what to submit first, how it was made last.
SECTIONS: list[Callable[[Run], Section]] = [
    choice_section, ranking_section, metric_moves_section, calibration_section, estimate_section,
    audit_section, provenance_section,
]

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 0 auto;
       max-width: 1200px; padding: 1.5em 2em; color: #1a1a1a; background: #ffffff; line-height: 1.45; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
nav { margin: 1em 0; font-size: 0.95em; } nav a { margin-right: 1em; }
.sub { color: #555; margin-top: 0; }
figure { margin: 1em 0; } img { max-width: 100%; height: auto; border: 1px solid #eee; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.55em; vertical-align: top; }
th { background: #f4f4f4; text-align: left; } td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.chosen td { background: #fdecea; font-weight: 600; }
table.kv th { width: 12em; }
caption { caption-side: bottom; color: #555; text-align: left; padding-top: 0.3em; }
.caption { color: #444; font-size: 0.92em; }
.note { background: #fff8e1; border-left: 4px solid #f0b400; padding: 0.5em 0.8em; }
.choice { font-size: 1.2em; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
"""


@dataclass
class ReportResult:
    """Where the page went, and the sections that carry a note (something the run lacks or says)."""

    path: Path
    sections: list[str]
    with_notes: list[str]


def render_report(run: Run) -> tuple[str, list[Section]]:
    """The page's HTML and its sections (each section shows a note for what the run lacks)."""
    sections = [build(run) for build in SECTIONS]
    nav = " ".join(f'<a href="#{esc(s.id)}">{esc(s.title)}</a>' for s in sections)
    made = datetime.now(UTC).isoformat(timespec="seconds")
    body = "\n".join(s.html() for s in sections)
    page = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="generator" content="{GENERATOR}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>drugcell report: {esc(run.path.name)}</title>
<style>{CSS}</style>
</head>
<body>
<h1>drugcell report: {esc(run.path.name)}</h1>
<p class="sub">Cross-validation run {esc(run.path)}. Every metric value is a weighted mean squared error (wMSE) of
log2(CPM+1) expression; lower is better. Page written {esc(made)} by drugcell {esc(__version__)}.</p>
<nav>{nav}</nav>
{body}
</body>
</html>
"""
    return page, sections


def _is_report(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return False
    return f'name="generator" content="{GENERATOR}"'.encode() in head


def check_out(run_dir: Path, out: Path, overwrite: bool) -> None:
    """Refuse an --out drugcell must not write: a folder, an existing file without ``overwrite``, or a
    file of the run itself (anything in the run folder that is not an earlier report, even with
    ``overwrite``)."""
    check_out_location(out)
    if out.is_dir():
        raise DrugcellInputError(f"--out {out} is a folder; give a file name such as {out / DEFAULT_NAME}")
    if not out.exists():
        return
    inside = out.resolve().parent == run_dir.resolve() or run_dir.resolve() in out.resolve().parents
    if inside and not _is_report(out):
        raise DrugcellInputError(f"--out {out} is one of the run's own files; the report never modifies the run "
                                 f"(even with --overwrite): choose another name, e.g. {run_dir / DEFAULT_NAME}")
    if not overwrite:
        raise DrugcellInputError(f"{out} already exists; pass --overwrite to replace it, or choose another --out")


def write_report(run_dir: str | Path, out: str | Path | None = None, *, overwrite: bool = False) -> ReportResult:
    """Write the report page of a `drugcell cv` run (default ``RUN/report.html``) in one piece.

    Refuses a folder that is not a `drugcell cv` run, and an --out that :func:`check_out` refuses,
    before any work.
    """
    run = read_run(run_dir)
    target = Path(out) if out is not None else run.path / DEFAULT_NAME
    check_out(run.path, target, overwrite)
    page, sections = render_report(run)
    write_text(target, page)
    return ReportResult(path=target, sections=[s.title for s in sections],
                        with_notes=[s.title for s in sections if 'class="note"' in s.body])
