"""The mapping file's JSON Schema: what editors check while a marketer types."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from typer.testing import CliRunner

from funnelvalue.cli import app
from funnelvalue.mapping import STARTER, load_mapping, mapping_schema
from tests.conftest import REPO

GOOD_STAGE = {"name": "lead", "crm_values": ["New"], "conversion_action": "CRM lead", "value": 10}


def valid(document: Any) -> bool:
    validator = jsonschema.Draft202012Validator(mapping_schema())
    return not list(validator.iter_errors(document))


def test_the_schema_is_a_valid_draft_2020_12_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(mapping_schema())


@pytest.mark.parametrize(
    "path", ["config/mapping.yaml", "examples/config/mapping.yaml"], ids=["template", "example"]
)
def test_the_bundled_mappings_are_valid(path: str) -> None:
    document = yaml.safe_load((REPO / path).read_text())
    assert valid(document)
    load_mapping(REPO / path)  # and the models agree


def test_mapping_init_writes_the_editor_line_and_a_schema_that_accepts_it(
    tmp_path: Path,
) -> None:
    target = tmp_path / "config" / "mapping.yaml"
    result = CliRunner().invoke(app, ["mapping", "init", str(target)])
    assert result.exit_code == 0, result.output
    text = target.read_text()
    assert text.splitlines()[0] == "# yaml-language-server: $schema=./mapping.schema.json"
    schema = json.loads((target.parent / "mapping.schema.json").read_text())
    assert schema == json.loads(json.dumps(mapping_schema()))
    assert valid(yaml.safe_load(text))
    assert text.endswith(STARTER)
    printed = CliRunner().invoke(app, ["mapping", "schema"])
    assert json.loads(printed.stdout) == schema


def test_the_short_spellings_the_models_accept_are_valid() -> None:
    document = {
        "customer_id": 1234567890,
        "currency": "EUR",
        "phone_country_code": 49,
        "stages": [
            {**GOOD_STAGE, "crm_values": "New"},
            {**GOOD_STAGE, "name": "q", "value": "1.500,00"},
            {**GOOD_STAGE, "name": "e", "value": {"expected": {"default": 150}}},
            {**GOOD_STAGE, "name": "w", "value": {"from_column": "amount", "default": 1000}},
        ],
    }
    assert valid(document)


@pytest.mark.parametrize(
    "broken",
    [
        {"stages": [GOOD_STAGE]},  # no currency
        {"currency": "EUR", "stages": []},  # no stage
        {"currency": "EUR", "stages": [{**GOOD_STAGE, "value": -5}]},
        {"currency": "EUR", "stages": [{**GOOD_STAGE, "value": {"column": "amount"}}]},
        {"currency": "EUR", "stages": [{**GOOD_STAGE, "value": {"expected": {"window_days": 3}}}]},
        {"currency": "EUR", "stages": [{**GOOD_STAGE, "colour": "red"}]},  # unknown key
        {"currency": "EUR", "stages": [GOOD_STAGE], "lookback_days": 120},
        {"currency": "EUR", "stages": [{k: v for k, v in GOOD_STAGE.items() if k != "value"}]},
        {"currency": "EUR", "stages": [GOOD_STAGE], "consent_ad_user_data": "maybe"},
    ],
)
def test_broken_mappings_are_flagged(broken: dict[str, Any]) -> None:
    assert not valid(broken)


def test_every_field_is_described_for_the_editor() -> None:
    schema = mapping_schema()
    for name, field in schema["properties"].items():
        assert field.get("description"), name
    for name, field in schema["$defs"]["Stage"]["properties"].items():
        assert field.get("description"), name
