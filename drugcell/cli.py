"""The `drugcell` command line. Thin: each command module parses options and calls one function.

The command list below is explicit (no registration by import side effect): a command is a plain
function in ``drugcell/commands/<name>.py``, and this file is the one place that says which
commands exist and in which order ``--help`` shows them (the order of the flow).
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import typer

from contest_scorer.errors import ScoringError
from drugcell.commands import (
    calibrate,
    cv,
    demo,
    fit,
    load,
    predict,
    programs,
    report,
    score,
    submit,
    synth,
    tune,
    weights,
)
from drugcell.errors import DrugcellInputError
from drugcell.provenance import Terminated

#: (name, function), in the order of the flow.
COMMANDS: list[tuple[str, Callable[..., None]]] = [
    ("demo", demo.demo),
    ("synth", synth.synth),
    ("load", load.load_command),
    ("cv", cv.cv),
    ("tune", tune.tune),
    ("calibrate", calibrate.calibrate),
    ("report", report.report),
    ("submit", submit.submit),
    ("score", score.score),
    ("fit", fit.fit),
    ("predict", predict.predict),
    ("programs", programs.programs),
]
#: (name, sub-app): command groups.
GROUPS: list[tuple[str, typer.Typer]] = [("weights", weights.app)]


def build_app() -> typer.Typer:
    """A fresh typer app holding every command of :data:`COMMANDS` and :data:`GROUPS`."""
    new = typer.Typer(
        name="drugcell",
        help=(
            "Predict transcriptome responses of unseen molecules and benchmark predictors "
            "honestly under the VCPI contest metric (scaffold-split CV, paired bootstrap)."
        ),
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
    )
    for name, fn in COMMANDS:
        new.command(name)(fn)
    for name, group in GROUPS:
        new.add_typer(group, name=name)
    return new


app = build_app()


def main() -> None:
    """Entry point: run the app, turning input errors into a clear message and exit code 2, and a
    SIGTERM/SIGHUP during a write (temporary files already removed) into 128 + the signal number."""
    try:
        app()
    except (DrugcellInputError, ScoringError) as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(2)
    except Terminated as exc:
        typer.secho(f"stopped: {exc}; no half-written file was left (its temporary files were removed)",
                    fg=typer.colors.RED, err=True)
        sys.exit(128 + exc.signum)
