"""The `drugcell` command line. Thin: each command module parses options and calls one function.

Command modules live in ``drugcell/commands/`` and register themselves on :data:`app`.
"""

from __future__ import annotations

import importlib
import sys

import typer

from contest_scorer.errors import ScoringError
from drugcell.errors import DrugcellInputError

app = typer.Typer(
    name="drugcell",
    help=(
        "Predict transcriptome responses of unseen molecules and benchmark predictors "
        "honestly under the VCPI contest metric (scaffold-split CV, paired bootstrap)."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# One line per command module; each registers its commands on `app` when imported.
COMMAND_MODULES = [  # in the order of the flow, so --help reads like it
    "demo",
    "synth",
    "load",
    "cv",
    "calibrate",
    "submit",
    "predict",  # fit + predict
    "programs",
]


def _register() -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(f"drugcell.commands.{name}")


def main() -> None:
    """Entry point: run the app, turning input errors into a clear message and exit code 2."""
    _register()
    try:
        app()
    except (DrugcellInputError, ScoringError) as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(2)
