"""Every command has help text and an example in the README (sqlite-utils' test_docs idea)."""

from __future__ import annotations

import re

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
    "advise",
    "report",
    "mapping check",
    "mapping init",
]


def test_the_readme_lists_every_command() -> None:
    group = get_command(app)
    listed = {name for name in group.commands if name != "mapping"}  # type: ignore[attr-defined]
    listed |= {f"mapping {name}" for name in group.commands["mapping"].commands}  # type: ignore[attr-defined]
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
