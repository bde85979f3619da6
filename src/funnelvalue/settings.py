"""Run settings with one precedence: CLI option > FUNNELVALUE_* env > .env > config file > defaults.

The config file is ``config/funnelvalue.yaml`` unless ``--config`` / ``FUNNELVALUE_CONFIG`` names
another. Everything is validated once, and every problem is reported together.
"""

from __future__ import annotations

import os
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from funnelvalue.errors import ConfigError

DEFAULT_CONFIG = Path("config/funnelvalue.yaml")
_config_file: ContextVar[Path | None] = ContextVar("config_file", default=None)


class _OwnDotEnv(DotEnvSettingsSource):
    """The .env file is shared with other tools (GOOGLE_ADS_*...): only our keys are ours.

    Unknown FUNNELVALUE_* keys are kept so that a typo is reported instead of ignored.
    """

    def __call__(self) -> dict[str, Any]:
        return {
            key: value
            for key, value in super().__call__().items()
            if key in self.settings_cls.model_fields or key.startswith("funnelvalue_")
        }


class Settings(BaseSettings):
    """Where to read, where to write, where to remember. Credentials never live here in plain."""

    model_config = SettingsConfigDict(
        env_prefix="FUNNELVALUE_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="forbid",
        frozen=True,
    )

    mapping: Path = Path("config/mapping.yaml")
    source: str = Field(default="csv", description="csv")
    input: Path | None = Field(default=None, description="CRM export (CSV) for the csv source")
    destination: str = Field(
        default="csv", description="csv (Google Ads import file) or google-ads (the API)"
    )
    output: Path = Field(
        default=Path("out/google_ads_conversions.csv"),
        description="import file; {run_id} and {date} are replaced per run",
    )
    ledger: str = "sqlite:///state/funnelvalue.db"
    google_ads_config: Path = Field(
        default=Path("config/google-ads.yaml"),
        description="google-ads.yaml for --destination google-ads (else GOOGLE_ADS_* env)",
    )
    customer_id: str | None = None
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, raw: Any) -> Any:
        return raw.upper() if isinstance(raw, str) else raw

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        config_file = _config_file.get() or DEFAULT_CONFIG
        return (
            init_settings,
            env_settings,
            _OwnDotEnv(settings_cls),
            YamlConfigSettingsSource(settings_cls, yaml_file=config_file),
            file_secret_settings,
        )


def load_settings(config: Path | None = None, **overrides: Any) -> Settings:
    """Build settings; ``overrides`` are CLI options (None means "not given")."""
    explicit = config or (
        Path(os.environ["FUNNELVALUE_CONFIG"]) if os.environ.get("FUNNELVALUE_CONFIG") else None
    )
    if explicit is not None and not explicit.is_file():
        raise ConfigError(f"config file {explicit} does not exist")
    token = _config_file.set(explicit)
    try:
        given = {k: v for k, v in overrides.items() if v is not None}
        return Settings(**given)
    except ValidationError as exc:
        file = explicit or DEFAULT_CONFIG
        problems = [
            f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}"
            + (
                " (from the environment as FUNNELVALUE_" + str(e["loc"][0]).upper() + ")"
                if e["loc"] and f"FUNNELVALUE_{str(e['loc'][0]).upper()}" in os.environ
                else ""
            )
            for e in exc.errors()
        ]
        raise ConfigError(
            f"settings are invalid (options, FUNNELVALUE_* env, .env, {file})", problems
        ) from None
    except (yaml.YAMLError, OSError) as exc:  # a broken config file surfaces here
        raise ConfigError(f"cannot read settings from {explicit or DEFAULT_CONFIG}: {exc}") from exc
    finally:
        _config_file.reset(token)
