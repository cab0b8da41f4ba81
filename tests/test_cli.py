"""The CLI's explicit command list: every command module is listed once, help works for each."""

from __future__ import annotations

import pkgutil
import re

from typer.testing import CliRunner

import drugcell.commands
from drugcell.cli import COMMANDS, GROUPS, app, build_app


def test_every_command_module_is_listed_exactly_once():
    modules = {m.name for m in pkgutil.iter_modules(drugcell.commands.__path__)}
    listed = {fn.__module__.rsplit(".", 1)[1] for _, fn in COMMANDS}
    listed |= {"weights"} if any(name == "weights" for name, _ in GROUPS) else set()
    assert listed == modules, f"unlisted: {modules - listed}, listed but missing: {listed - modules}"
    names = [name for name, _ in COMMANDS]
    assert len(names) == len(set(names))
    # one command per module: no module provides two commands
    assert len({fn.__module__ for _, fn in COMMANDS}) == len(COMMANDS)


def test_help_lists_the_commands_in_flow_order_and_each_has_help():
    runner = CliRunner()
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0, res.output
    found = [re.search(rf"^\W*{name}\s", res.output, flags=re.M) for name, _ in COMMANDS]
    assert all(found), res.output
    positions = [m.start() for m in found]
    assert positions == sorted(positions), res.output
    for name, _ in COMMANDS:
        sub = runner.invoke(app, [name, "--help"])
        assert sub.exit_code == 0 and "Usage" in sub.output, (name, sub.output)
    assert runner.invoke(app, ["weights", "export", "--help"]).exit_code == 0


def test_build_app_is_fresh_each_time():
    assert build_app() is not build_app()
