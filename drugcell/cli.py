"""The `drugcell` command line. Thin: each command module parses options and calls one function.

The command list below is explicit (no registration by import side effect): a command is a plain
function in ``drugcell/commands/<name>.py``, and this file is the one place that says which
commands exist and in which order ``--help`` shows them (the order of the flow).

Start-up stays cheap (``drugcell --help`` imports neither pandas nor torch): command modules
import their work inside the function, and the error types of heavier modules are recognised
here only once those modules are loaded (:func:`_known_error`).
"""

from __future__ import annotations

import errno
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import click
import typer
from typer.core import TyperCommand, TyperGroup

from drugcell import progress
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


def _flags_as_flags(params: list[click.Parameter]) -> None:
    """Show a boolean flag as a flag (``--overwrite``, ``--std/--no-std``), not as ``--overwrite <bool>``."""
    for p in params:
        if getattr(p, "is_flag", False):
            p.metavar = ""


class _Command(TyperCommand):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _flags_as_flags(self.params)

    def get_help_option(self, ctx: click.Context) -> click.Option | None:
        opt = super().get_help_option(ctx)
        if opt is not None:
            _flags_as_flags([opt])
        return opt


class _Group(TyperGroup):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _flags_as_flags(self.params)

    def get_help_option(self, ctx: click.Context) -> click.Option | None:
        opt = super().get_help_option(ctx)
        if opt is not None:
            _flags_as_flags([opt])
        return opt


def _print_version(value: bool) -> None:
    if value:
        from drugcell import __version__

        typer.echo(f"drugcell {__version__}")
        raise typer.Exit()


def _root(
    version: Annotated[bool, typer.Option(
        "--version", is_eager=True, callback=_print_version, help="Print drugcell's version and exit.")] = False,
) -> None:
    """Predict transcriptome responses of unseen molecules and benchmark predictors honestly under the VCPI
    contest metric (scaffold-split CV, paired bootstrap)."""


def build_app() -> typer.Typer:
    """A fresh typer app holding every command of :data:`COMMANDS` and :data:`GROUPS`."""
    new = typer.Typer(
        name="drugcell",
        cls=_Group,
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
    )
    new.callback()(_root)
    for name, fn in COMMANDS:
        new.command(name, cls=_Command)(fn)
    for name, group in GROUPS:
        for info in group.registered_commands:
            if info.cls in (None, TyperCommand):
                info.cls = _Command
        new.add_typer(group, name=name, cls=_Group)
    return new


app = build_app()


def _known_error(exc: BaseException) -> str | None:
    """How the CLI reports an exception: "input" (exit 2), "terminated" (128 + signal), or None
    (a bug: the traceback is shown). Modules not loaded yet cannot have raised their errors."""
    if isinstance(exc, DrugcellInputError):
        return "input"
    scorer = sys.modules.get("contest_scorer.errors")
    if scorer is not None and isinstance(exc, scorer.ScoringError):
        return "input"
    prov = sys.modules.get("drugcell.provenance")
    if prov is not None and isinstance(exc, prov.Terminated):
        return "terminated"
    if isinstance(exc, OSError) and exc.errno in _SYSTEM_ERRNOS:
        return "system"
    return None


#: file-system refusals the user can act on (no permission, read-only, disk or quota full): named, not a traceback
_SYSTEM_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT})


_PACKAGE_DIR = Path(__file__).resolve().parent


def _format_warning(message, category, filename, lineno, line=None) -> str:  # noqa: ANN001
    """drugcell's own warnings as ``warning: ...`` lines (no source line); others as Python shows them."""
    try:
        ours = Path(filename).resolve().is_relative_to(_PACKAGE_DIR)
    except (OSError, ValueError):
        ours = False
    if ours:
        return f"warning: {message}\n"
    return _python_format_warning(message, category, filename, lineno, line)


_python_format_warning = warnings.formatwarning


def main() -> None:
    """Entry point: run the app with progress lines on stderr, turning input errors into a clear
    message and exit code 2, and a SIGTERM/SIGHUP during a write (temporary files already removed)
    into 128 + the signal number."""
    progress.set_enabled(True)
    warnings.formatwarning = _format_warning
    try:
        app()
    except SystemExit as exc:
        if exc.code in (0, None):
            progress.finish()
        raise
    except BaseException as exc:
        kind = _known_error(exc)
        if kind == "input":
            typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
            sys.exit(2)
        if kind == "system":
            where = f" ({exc.filename})" if exc.filename else ""
            typer.secho(f"error: {exc.strerror}{where}; free some space, or choose a location you may write to",
                        fg=typer.colors.RED, err=True)
            sys.exit(2)
        if kind == "terminated":
            typer.secho(f"stopped: {exc}; no half-written file was left (its temporary files were removed)",
                        fg=typer.colors.RED, err=True)
            sys.exit(128 + exc.signum)
        raise
    finally:
        progress.set_enabled(False)
        warnings.formatwarning = _python_format_warning
