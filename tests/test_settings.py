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
    assert settings.log_level is None  # default: warnings only, -v for more


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
    with pytest.raises(
        ConfigError, match=r"not valid YAML: line 2: a .list. or .set. opened on line 1"
    ):
        load_settings()


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("outptu: x.csv\n", "line 1, outptu: unknown setting 'outptu' — did you mean 'output'?"),
        ("sql:\n  urll: x\n", "line 2, sql.urll: unknown setting 'urll' — did you mean 'url'?"),
        ("log_level: INFO\nsource_overlap_hours: lots\n", "line 2, source_overlap_hours: Input"),
        ("output: x.csv\noutput: y.csv\n", "line 2: key 'output' appears twice"),
        (
            "mapping: config/mapping.yaml\n\tsource: csv\n",
            "line 2: a tab: YAML indents with spaces",
        ),
    ],
)
def test_settings_file_mistakes_name_the_line_and_the_fix(
    tmp_path: Path, text: str, words: str
) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "funnelvalue.yaml").write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert words in str(caught.value)


def test_paths_are_relative_to_the_project_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "srv" / "fv"
    (project / "config").mkdir(parents=True)
    config = project / "config" / "funnelvalue.yaml"
    config.write_text("input: exports/leads.csv\nsql:\n  query_file: config/leads.sql\n")
    (project / ".env").write_text("FUNNELVALUE_OUTPUT=out/from-dotenv.csv\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("FUNNELVALUE_GOOGLE_ADS_CONFIG", "config/google-ads.yaml")
    settings = load_settings(config, ledger=None, mapping=Path("typed.yaml"))
    assert settings.input == project / "exports" / "leads.csv"  # from the file
    assert settings.output == project / "out" / "from-dotenv.csv"  # .env of the project
    assert settings.google_ads_config == project / "config" / "google-ads.yaml"  # from the env
    assert settings.mapping == Path("typed.yaml")  # typed: relative to where it was typed
    assert settings.ledger == f"sqlite:///{(project / 'state' / 'funnelvalue.db').resolve()}"
    assert settings.sql.query_file == project / "config" / "leads.sql"
    named = load_settings(project_dir=project)  # --project-dir finds config/funnelvalue.yaml
    assert named.input == project / "exports" / "leads.csv"
    monkeypatch.setenv("FUNNELVALUE_PROJECT_DIR", str(project))
    assert load_settings().input == project / "exports" / "leads.csv"
    with pytest.raises(ConfigError, match=r"project folder .* does not exist"):
        load_settings(project_dir=tmp_path / "missing")


def test_absolute_paths_and_other_databases_are_left_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "p"
    (project / "config").mkdir(parents=True)
    (project / "config" / "funnelvalue.yaml").write_text(
        f"input: {tmp_path / 'abs.csv'}\nledger: postgresql+psycopg://u@h/db\n"
    )
    monkeypatch.chdir(tmp_path)
    settings = load_settings(project / "config" / "funnelvalue.yaml")
    assert settings.input == tmp_path / "abs.csv"
    assert settings.ledger == "postgresql+psycopg://u@h/db"
