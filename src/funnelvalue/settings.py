"""Run settings with one precedence: CLI option > FUNNELVALUE_* env > .env > config file > defaults.

A project folder holds ``config/funnelvalue.yaml`` (and usually ``.env``, ``state/``, ``out/``).
Paths in the settings file, the environment and the defaults are relative to it, the way dbt
and docker compose do it, so a job started from any folder finds the same mapping, export
and ledger; paths typed as command-line options are relative to where they are typed. The
project folder is ``--project-dir`` / ``FUNNELVALUE_PROJECT_DIR``; else the folder that holds
the ``config/`` folder of ``--config`` / ``FUNNELVALUE_CONFIG`` (or that file's own folder);
else the current folder. Everything is validated once, and every problem is reported together.
"""

from __future__ import annotations

import difflib
import os
import re
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from funnelvalue.errors import ConfigError
from funnelvalue.redact import remember
from funnelvalue.yamlfile import YamlDocument, load_yaml

DEFAULT_CONFIG = Path("config/funnelvalue.yaml")
_config_file: ContextVar[Path | None] = ContextVar("config_file", default=None)
_project: ContextVar[Path] = ContextVar("project", default=Path())


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


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HubSpotSettings(_Section):
    """``source: hubspot``: deals by pipeline stage, or contacts by lifecycle stage."""

    access_token: SecretStr | None = Field(
        default=None, description="private app token: FUNNELVALUE_HUBSPOT__ACCESS_TOKEN in .env"
    )
    object: Literal["deals", "contacts"] = "deals"
    pipelines: list[str] = Field(
        default_factory=list, description="deal pipelines (id or label); empty: all"
    )
    click_id_property: str = "hs_google_click_id"
    email_property: str = "email"
    phone_property: str = "phone"
    base_url: str = "https://api.hubapi.com"
    timeout_seconds: float = 60.0


class SalesforceSettings(_Section):
    """``source: salesforce``: Lead statuses and Opportunity stages (converted Leads joined)."""

    username: str | None = None
    password: SecretStr | None = None
    security_token: SecretStr | None = None
    domain: str = Field(default="login", description="login, test (sandbox) or a My Domain")
    instance_url: str | None = None
    access_token: SecretStr | None = Field(default=None, description="OAuth access token")
    consumer_key: str | None = None
    consumer_secret: SecretStr | None = None
    private_key_file: Path | None = None
    api_version: str = "62.0"
    objects: list[Literal["Lead", "Opportunity"]] = Field(
        default=["Lead", "Opportunity"], min_length=1, description="whose stages are read"
    )
    click_id_field: str = "GCLID__c"
    opportunity_click_id_field: str | None = Field(
        default=None, description="if Opportunities carry their own click id field"
    )
    timeout_seconds: float = 60.0


class SqlSourceSettings(_Section):
    """``source: sql``: a table or a query in any database SQLAlchemy reaches."""

    url: str | None = Field(default=None, description="SQLAlchemy URL; FUNNELVALUE_SQL__URL")
    query_file: Path | None = Field(default=None, description="SQL with a :since parameter")
    table: str | None = None
    watermark_column: str = Field(
        default="stage_changed_at", description="the column that says when a row changed"
    )
    chunk_size: int = Field(default=50_000, gt=0)


class DataManagerSettings(_Section):
    """``destination: data-manager``: Google's Data Manager API (IngestEvents)."""

    credentials_file: Path | None = Field(
        default=None,
        description="service-account key (JSON); else Application Default Credentials",
    )
    login_customer_id: str | None = Field(
        default=None, description="the manager account, when uploading through one"
    )
    action_ids: dict[str, str] = Field(
        default_factory=dict,
        description="conversion action name -> numeric id, for names used in the mapping",
    )
    endpoint: str | None = Field(default=None, description="API host (default Google's)")
    event_source: Literal["WEB", "APP", "IN_STORE", "PHONE", "MESSAGE", "OTHER"] | None = Field(
        default=None,
        description="where the conversions happen (Event.event_source); unset by default: "
        "a CRM stage is rarely a web event",
    )


# Paths (section, key) that hold secrets: accepted from the environment and .env only.
SECRETS = {
    ("hubspot", "access_token"),
    ("salesforce", "password"),
    ("salesforce", "security_token"),
    ("salesforce", "access_token"),
    ("salesforce", "consumer_secret"),
}


class _YamlWithoutSecrets(YamlConfigSettingsSource):
    """config/funnelvalue.yaml is meant to be committed: a token in it is refused, not read."""

    def __call__(self) -> dict[str, Any]:
        data = super().__call__()
        found = [
            f"{section}.{key}"
            for section, key in sorted(SECRETS)
            if isinstance(data.get(section), dict) and key in data[section]
        ]
        urls = {"ledger": data.get("ledger")}
        if isinstance(data.get("sql"), dict):
            urls["sql.url"] = data["sql"].get("url")
        found += [path for path, url in urls.items() if _has_password(url)]
        if found:
            raise ConfigError(
                "secrets do not belong in the config file (it is usually committed): move "
                "them to .env or the environment",
                [f"{path} -> FUNNELVALUE_{path.upper().replace('.', '__')}" for path in found],
            )
        return data


_URL_PASSWORD = re.compile(r"://[^:/@\s]*:([^@/\s]+)@")  # the password of user:password@


def _has_password(url: Any) -> bool:
    """A database URL with a password in it (``postgresql://user:secret@host/db``)."""
    return isinstance(url, str) and bool(_URL_PASSWORD.search(url))


def _remember_secrets(settings: Settings) -> None:
    """Every secret the settings hold is hidden wherever it might be echoed back."""
    sf, hub = settings.salesforce, settings.hubspot
    secrets = [hub.access_token, sf.password, sf.security_token, sf.access_token]
    remember(*(s.get_secret_value() for s in [*secrets, sf.consumer_secret] if s is not None))
    for url in (settings.sql.url, settings.ledger):
        match = _URL_PASSWORD.search(url or "")
        if match:
            remember(match.group(1))


class Settings(BaseSettings):
    """Where to read, where to write, where to remember. Credentials never live here in plain."""

    model_config = SettingsConfigDict(
        env_prefix="FUNNELVALUE_",
        env_file=".env",
        env_file_encoding="utf-8",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    mapping: Path = Path("config/mapping.yaml")
    source: str = Field(default="csv", description="csv, hubspot, salesforce or sql")
    source_overlap_hours: float = Field(
        default=24.0,
        ge=0,
        description="each run re-reads this much before the last watermark (late updates)",
    )
    hubspot: HubSpotSettings = Field(default_factory=HubSpotSettings)
    salesforce: SalesforceSettings = Field(default_factory=SalesforceSettings)
    sql: SqlSourceSettings = Field(default_factory=SqlSourceSettings)
    input: Path | None = Field(default=None, description="CRM export (CSV) for the csv source")
    destination: str = Field(
        default="csv",
        description="csv (Google Ads import file), google-ads (the API) or data-manager",
    )
    output: Path = Field(
        default=Path("out/google_ads_conversions.csv"),
        description="the import file a scheduled Google Ads import fetches (each run also "
        "writes its own file in runs/ beside it)",
    )
    import_window_days: int = Field(
        default=7,
        ge=1,
        le=90,
        description="the fetched import file holds every conversion written in this many days",
    )
    ledger: str = "sqlite:///state/funnelvalue.db"
    data_manager: DataManagerSettings = Field(default_factory=DataManagerSettings)
    google_ads_config: Path = Field(
        default=Path("config/google-ads.yaml"),
        description="google-ads.yaml for --destination google-ads (else GOOGLE_ADS_* env)",
    )
    customer_id: str | None = None
    requests_in_flight: int = Field(
        default=4,
        ge=1,
        le=16,
        description="Google API requests sent at once (both Google destinations): the network "
        "wait overlaps; 1 sends one batch after another",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] | None = Field(
        default=None,
        description="log lines on stderr from this level (unset: warnings and errors only; "
        "-v: DEBUG; scheduler/run.sh sets INFO for its log file)",
    )

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
        config_file = _config_file.get() or _project.get() / DEFAULT_CONFIG
        return (
            init_settings,
            env_settings,
            _OwnDotEnv(settings_cls, env_file=_project.get() / ".env"),
            _YamlWithoutSecrets(settings_cls, yaml_file=config_file),
            file_secret_settings,
        )


def project_folder(config: Path | None, project_dir: Path | None = None) -> Path:
    """The folder the settings' relative paths start from (see the module docstring)."""
    named = project_dir or _env_path("FUNNELVALUE_PROJECT_DIR")
    if named is not None:
        return named
    if config is not None:
        folder = config.parent
        return folder.parent if folder.name == "config" else folder
    return Path()


def _env_path(name: str) -> Path | None:
    return Path(os.environ[name]) if os.environ.get(name) else None


def load_settings(
    config: Path | None = None, *, project_dir: Path | None = None, **overrides: Any
) -> Settings:
    """Build settings; ``overrides`` are CLI options (None means "not given")."""
    explicit = config or _env_path("FUNNELVALUE_CONFIG")
    if explicit is not None and not explicit.is_file():
        raise ConfigError(f"config file {explicit} does not exist")
    project = project_folder(explicit, project_dir)
    if not project.is_dir():
        raise ConfigError(f"project folder {project} does not exist (--project-dir)")
    file = explicit or project / DEFAULT_CONFIG
    document = load_yaml(file, "settings file") if file.is_file() else None
    token, place = _config_file.set(explicit), _project.set(project)
    try:
        given = {k: v for k, v in overrides.items() if v is not None}
        settings = _anchored(Settings(**given), project, given)
        _remember_secrets(settings)
        return settings
    except ValidationError as exc:
        problems = [_describe(e, document) for e in exc.errors()]
        raise ConfigError(
            f"settings are invalid (options, FUNNELVALUE_* env, .env, {file})", problems
        ) from None
    except (yaml.YAMLError, OSError) as exc:  # a broken config file surfaces here
        where = explicit or project / DEFAULT_CONFIG
        raise ConfigError(f"cannot read settings from {where}: {exc}") from exc
    finally:
        _config_file.reset(token)
        _project.reset(place)


def _describe(error: Any, document: YamlDocument | None) -> str:
    """One settings problem with its line in the file (when it came from there), the variable
    it came from (when it came from the environment), and a suggestion for a misspelt key."""
    loc = [str(part) for part in error["loc"]]
    name = ".".join(loc) or "settings"
    variable = "FUNNELVALUE_" + "__".join(loc).upper()
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        section: Any = Settings
        for part in loc[:-1]:
            section = (
                section.model_fields[part].annotation if part in section.model_fields else None
            )
            if section is None:
                break
        allowed = list(getattr(section, "model_fields", {}))
        close = difflib.get_close_matches(loc[-1], allowed, n=1)
        message = f"unknown setting '{loc[-1]}'" + (
            f" — did you mean '{close[0]}'?" if close else f" (allowed: {', '.join(allowed)})"
        )
    line = document.line_of(loc) if document is not None and document.node_at(loc) else None
    if line is not None:
        return f"line {line}, {name}: {message}"
    if variable in os.environ or (loc and f"FUNNELVALUE_{loc[0].upper()}" in os.environ):
        return f"{name}: {message} (from the environment as {variable})"
    return f"{name}: {message}"


def _anchored(settings: Settings, project: Path, given: dict[str, Any]) -> Settings:
    """The settings' relative paths made relative to the project folder (command-line
    options excepted: they are relative to where they were typed)."""
    if project.resolve() == Path.cwd().resolve():
        return settings

    def at(path: Path | None) -> Path | None:
        return path if path is None or path.is_absolute() else project / path

    update: dict[str, Any] = {
        name: at(getattr(settings, name))
        for name in ("mapping", "input", "output", "google_ads_config")
        if name not in given
    }
    if "ledger" not in given:
        update["ledger"] = _anchored_sqlite(settings.ledger, project)
    update["sql"] = settings.sql.model_copy(update={"query_file": at(settings.sql.query_file)})
    update["salesforce"] = settings.salesforce.model_copy(
        update={"private_key_file": at(settings.salesforce.private_key_file)}
    )
    update["data_manager"] = settings.data_manager.model_copy(
        update={"credentials_file": at(settings.data_manager.credentials_file)}
    )
    return settings.model_copy(update=update)


def _anchored_sqlite(url: str, project: Path) -> str:
    """``sqlite:///state/x.db`` (a relative file) -> the same file in the project folder."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or url.startswith(prefix + "/") or url == "sqlite://":
        return url
    relative = url.removeprefix(prefix)
    if relative in ("", ":memory:") or relative.startswith(":"):
        return url
    return prefix + str((project / relative).resolve())
