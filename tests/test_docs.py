"""Every command has help text and an example in the README (sqlite-utils' test_docs idea)."""

from __future__ import annotations

import re
import shlex
from typing import Any

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from funnelvalue.cli import app
from tests.conftest import REPO

README = (REPO / "README.md").read_text()
COMMANDS = [
    "run",
    "preview",
    "export",
    "status",
    "doctor",
    "advise",
    "report",
    "mapping check",
    "mapping init",
    "mapping schema",
    "ledger prune",
]


def test_the_readme_lists_every_command() -> None:
    group = get_command(app)
    groups = ("mapping", "ledger")
    listed = {name for name in group.commands if name not in groups}  # type: ignore[attr-defined]
    for name in groups:
        listed |= {f"{name} {sub}" for sub in group.commands[name].commands}  # type: ignore[attr-defined]
    assert listed == set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_command_has_help_and_a_readme_example(command: str) -> None:
    result = CliRunner().invoke(app, [*command.split(), "--help"])
    assert result.exit_code == 0
    assert "Example: funnelvalue " + command in " ".join(result.output.split())
    assert re.search(rf"^funnelvalue {command}\b", README, re.MULTILINE), command


def test_readme_documents_exit_codes_and_the_two_commands() -> None:
    for code in ("| 0 |", "| 1 |", "| 2 |", "| 3 |", "| 70 |", "| 75 |", "| 130 |", "| 143 |"):
        assert code in README
    assert "make run" in README
    assert "make test" in README


def _examples() -> list[str]:
    """Every command line the README shows in a code block, without its comment."""
    lines: list[str] = []
    inside = False
    for line in README.splitlines():
        if line.startswith("```"):
            inside = not inside
            continue
        text = line.split("  #")[0].strip()
        if inside and text.startswith("funnelvalue "):
            lines.append(text)
    return lines


@pytest.mark.parametrize("example", _examples())
def test_every_readme_example_parses_with_the_real_cli(example: str) -> None:
    """An option renamed in the code and left in the README fails here, not at 3 a.m."""
    command: Any = get_command(app)
    args = shlex.split(example)[1:]
    while hasattr(command, "commands") and args and args[0] in command.commands:
        name, args = args[0], args[1:]
        command = command.commands[name]
    assert not hasattr(command, "commands"), f"{example}: no such command"
    command.make_context("funnelvalue", args)  # an unknown option or a bad value raises here


def test_the_readme_shows_examples() -> None:
    assert len(_examples()) >= 15
