from __future__ import annotations

from pathlib import Path

import pytest

from funnelvalue.errors import ConfigError
from funnelvalue.settings import load_settings


def test_precedence_cli_env_dotenv_file_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "funnelvalue.yaml").write_text(
        "ledger: sqlite:///file.db\noutput: file.csv\ninput: file-export.csv\n"
        "mapping: file-mapping.yaml\n"
    )
    (tmp_path / ".env").write_text(
        "FUNNELVALUE_OUTPUT=dotenv.csv\nFUNNELVALUE_INPUT=dotenv-export.csv\n"
        "GOOGLE_ADS_DEVELOPER_TOKEN=not-ours\n"
    )
    monkeypatch.setenv("FUNNELVALUE_INPUT", "env-export.csv")
    settings = load_settings(mapping=None, ledger="sqlite:///cli.db")
    assert settings.ledger == "sqlite:///cli.db"  # CLI
    assert settings.input == Path("env-export.csv")  # env over .env
    assert settings.output == Path("dotenv.csv")  # .env over file
    assert settings.mapping == Path("file-mapping.yaml")  # file over default
    assert settings.log_level == "INFO"  # default


def test_explicit_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    other = tmp_path / "other.yaml"
    other.write_text("output: other.csv\n")
    assert load_settings(other).output == Path("other.csv")
    monkeypatch.setenv("FUNNELVALUE_CONFIG", str(other))
    assert load_settings().output == Path("other.csv")
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "missing.yaml")


def test_every_problem_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "funnelvalue.yaml").write_text("outptu: x.csv\n")
    monkeypatch.setenv("FUNNELVALUE_LOG_LEVEL", "LOUD")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    text = str(caught.value)
    assert "outptu" in text
    assert "log_level" in text
    assert "FUNNELVALUE_LOG_LEVEL" in text


def test_broken_config_yaml(tmp_path: Path) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "funnelvalue.yaml").write_text("output: [unclosed\n")
    with pytest.raises(ConfigError, match="cannot read settings"):
        load_settings()
