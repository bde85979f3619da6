"""Any database SQLAlchemy reaches: for CRMs that land in a warehouse (Postgres, MySQL, SQLite,
BigQuery or Snowflake through their dialects).

Either a table (read where ``watermark_column >= :since``) or a query file that uses the
``:since`` parameter itself. ``since`` is bound as a naive time in the mapping's timezone, the
same rule that reads naive CRM timestamps; a full refresh binds 1970-01-01 so a query never has
to handle NULL. Rows are streamed in chunks (a server-side cursor where the driver has one) and
each chunk is normalised to compact Arrow-backed columns before the next is read, so the
driver's Python rows never all sit in memory at once.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import ClassVar
from zoneinfo import ZoneInfo

import pandas as pd
from sqlalchemy import DateTime, bindparam, column, create_engine, select, table, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, OperationalError
from sqlalchemy.sql.elements import TextClause
from sqlalchemy.sql.selectable import Select

from funnelvalue.errors import ConfigError
from funnelvalue.leads import (
    canonical_header,
    check_columns,
    normalise,
    parse_timestamps,
    rename_columns,
)
from funnelvalue.mapping import Mapping
from funnelvalue.retrying import Retryable
from funnelvalue.settings import Settings, SqlSourceSettings
from funnelvalue.sources.base import Reading, with_retries

log = logging.getLogger(__name__)

EVERYTHING = datetime(1970, 1, 1)
_TABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)?$")


@dataclass
class SqlSource(Reading):
    engine: Engine
    statement: Select[tuple[object]] | TextClause
    what: str  # the table or query file, for messages and the watermark's key
    config: SqlSourceSettings
    mapping: Mapping
    incremental: ClassVar[bool] = True

    @classmethod
    def from_settings(cls, settings: Settings, mapping: Mapping) -> SqlSource:
        config = settings.sql
        if not config.url:
            raise ConfigError(
                "source sql needs a database: set sql.url in config/funnelvalue.yaml or "
                "FUNNELVALUE_SQL__URL (e.g. postgresql+psycopg://user@host/crm)"
            )
        if (config.query_file is None) == (config.table is None):
            raise ConfigError(
                "source sql needs exactly one of sql.query_file (SQL using :since) or sql.table"
            )
        try:
            engine = create_engine(config.url)
        except (ArgumentError, NoSuchModuleError, ImportError) as exc:
            raise ConfigError(f"sql.url is not a usable database URL: {exc}") from exc
        if config.table is not None:
            return cls(engine, _table_query(config, mapping), config.table, config, mapping)
        return cls(engine, *_file_query(config.query_file), config, mapping)  # type: ignore[arg-type]

    @property
    def name(self) -> str:
        url = self.engine.url.render_as_string(hide_password=True)
        return f"sql:{url}#{self.what}"

    def _leads(self, since: datetime | None) -> pd.DataFrame:
        params = {}
        if "since" in _parameters(self.statement):
            params["since"] = EVERYTHING if since is None else _local_naive(since, self.mapping)
        elif since is not None:
            self._warnings.append(
                f"{self.what} has no :since parameter, so every run reads all of it; add "
                f"`WHERE <changed column> >= :since` to read only what changed"
            )
        try:
            where = str(self.engine.url.host or self.engine.url.database)
            chunks = with_retries("the sql source's database", where, lambda: self._read(params))
        except DBAPIError as exc:
            hint = (
                f" (sql.table is read where sql.watermark_column "
                f"'{self.config.watermark_column}' >= the watermark: set it to the table's "
                "change-time column, or map that column under the mapping's `columns:`)"
                if self.config.table
                else ""
            )
            raise ConfigError(f"the sql source's query failed: {_first_line(exc)}{hint}") from exc
        finally:
            self.engine.dispose()
        if not chunks:
            return normalise(
                pd.DataFrame(columns=["lead_id", "stage", "stage_changed_at", "source_row"]),
                timezone=self.mapping.timezone,
            )
        return pd.concat(chunks, ignore_index=True)

    def _read(self, params: dict[str, datetime]) -> list[pd.DataFrame]:
        chunks: list[pd.DataFrame] = []
        read = 0
        self._high_water = None
        try:
            connection = self.engine.connect()
        except OperationalError as exc:  # refused, unreachable, timed out: try again
            raise Retryable(_first_line(exc)) from exc
        with connection as conn, _lost_connection_retryable():
            streaming = conn.execution_options(
                stream_results=True, yield_per=self.config.chunk_size
            )
            with streaming.execute(self.statement, params) as result:
                names = result.keys()  # (iterating the result itself would read rows)
                columns = [str(name) for name in names]
                check_columns(
                    rename_columns(pd.DataFrame(columns=columns), self.mapping.columns), self.what
                )
                changed = self._change_column(columns)
                for part in result.partitions():
                    raw = pd.DataFrame.from_records(part, columns=columns)
                    if changed is not None:
                        self._advance(raw, changed)
                    raw["source_row"] = range(read + 1, read + len(raw) + 1)
                    read += len(raw)
                    chunks.append(self._normalised(raw))
        log.info("sql source %s: %d rows", self.what, read)
        return chunks

    def _normalised(self, raw: pd.DataFrame) -> pd.DataFrame:
        frame = rename_columns(raw, self.mapping.columns)
        for name in frame.columns:
            if name != "source_row" and frame[name].dtype == object:
                frame[name] = frame[name].astype("string[pyarrow]")
        return normalise(
            frame, timezone=self.mapping.timezone, timestamp_format=self.mapping.timestamp_format
        )

    def _change_column(self, columns: list[str]) -> str | None:
        """The result column that says when a row changed (sql.watermark_column), found once
        per read; without one the newest stage change becomes the watermark."""
        wanted = _source_column(self.config.watermark_column, self.mapping)
        found = next(
            (c for c in columns if c == wanted or canonical_header(c) == canonical_header(wanted)),
            None,
        )
        if found is None:
            self._warnings.append(
                f"{self.what} has no column '{wanted}' (sql.watermark_column); the newest "
                "stage change is used as the watermark instead"
            )
        return found

    def _advance(self, raw: pd.DataFrame, column: str) -> None:
        """Move ``high_water`` to the newest change in this chunk."""
        times, _ = parse_timestamps(
            raw[column], ZoneInfo(self.mapping.timezone), self.mapping.timestamp_format
        )
        newest = times.max()
        if pd.notna(newest) and (self._high_water is None or newest > self._high_water):
            self._high_water = newest


@contextmanager
def _lost_connection_retryable() -> Iterator[None]:
    """A connection dropped mid-read is worth another try; a wrong query is not."""
    try:
        yield
    except DBAPIError as exc:
        if exc.connection_invalidated:
            raise Retryable(_first_line(exc)) from exc
        raise


def _source_column(name: str, mapping: Mapping) -> str:
    """A canonical name the mapping renames to (``changed_at: stage_changed_at``) is the
    table's own column name in SQL."""
    renamed_from = {target: source for source, target in mapping.columns.items()}
    return renamed_from.get(name, name)


def _table_query(config: SqlSourceSettings, mapping: Mapping) -> Select[tuple[object]]:
    name = config.table or ""
    if not _TABLE_NAME.match(name):
        raise ConfigError(f"sql.table '{name}' is not a table name (schema.table or table)")
    schema, _, bare = name.rpartition(".")
    source = table(bare, schema=schema or None)
    return (
        select(text("*"))
        .select_from(source)
        .where(
            column(_source_column(config.watermark_column, mapping))
            >= bindparam("since", type_=DateTime())
        )
    )


def _file_query(path: Path) -> tuple[TextClause, str]:
    try:
        sql = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"sql.query_file {path} cannot be read: {exc}") from exc
    if not sql.strip():
        raise ConfigError(f"sql.query_file {path} is empty")
    statement = text(sql.strip().rstrip(";"))
    if "since" in _parameters(statement):
        # Typed, so every dialect binds it as a timestamp (SQLite: its text format).
        statement = statement.bindparams(bindparam("since", type_=DateTime()))
    return statement, str(path)


def _parameters(statement: Select[tuple[object]] | TextClause) -> set[str]:
    return set(statement.compile().params)


def _local_naive(moment: datetime, mapping: Mapping) -> datetime:
    stamp = pd.Timestamp(moment)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp
    local: datetime = stamp.tz_convert(mapping.timezone).tz_localize(None).to_pydatetime()
    return local


def _first_line(exc: DBAPIError) -> str:
    return str(exc.orig or exc).strip().splitlines()[0]
