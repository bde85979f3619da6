"""One run at a time per ledger and account, enforced by locks a killed process cannot leave.

PostgreSQL: a session advisory lock keyed on the account, held on its own connection for the
run; many accounts run in parallel from many machines (Kubernetes CronJobs), one account never
twice, and the server drops the lock when the process dies and its connection closes.
SQLite: ``flock`` on a file beside the database, one per account; the kernel drops it when the
process dies, so a ``kill -9`` never leaves a stale lock (unlike a pid file or a lock row).

Migrations take a ledger-wide lock of the same kind inside their transaction, so two first
runs on a new ledger do not race to create the tables.
"""

from __future__ import annotations

import json
import os
import socket
import zlib
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, text

from funnelvalue.errors import LedgerError, LockedError

LOCK_NAMESPACE = 0x46560001  # "FV" + 1: keeps our advisory locks apart from other apps'
MIGRATION_KEY = 0


def account_key(customer_id: str) -> int:
    """The account as a signed 32-bit advisory lock key (never 0, the migration's)."""
    value = zlib.crc32(customer_id.encode()) & 0x7FFFFFFF
    return value or 1


def holder_info() -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": datetime.now(UTC).isoformat(timespec="seconds"),
    }


class RunLock:
    """Held for the length of one run; ``release`` is idempotent."""

    def __init__(self, release: Callable[[], None]) -> None:
        self._release: Callable[[], None] | None = release

    def release(self) -> None:
        if self._release is not None:
            release, self._release = self._release, None
            release()

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def acquire(engine: Engine, customer_id: str, describe: Callable[[], str]) -> RunLock:
    """Take the account's run lock or raise LockedError naming the holder (``describe``)."""
    if engine.dialect.name == "postgresql":
        return _acquire_advisory(engine, customer_id, describe)
    database = engine.url.database
    if not database or database == ":memory:":
        return RunLock(lambda: None)  # one process owns an in-memory ledger
    return _acquire_file(Path(f"{database}.{customer_id}.lock"), customer_id, describe)


def _acquire_advisory(engine: Engine, customer_id: str, describe: Callable[[], str]) -> RunLock:
    conn = engine.connect()
    try:
        got = conn.scalar(
            text("SELECT pg_try_advisory_lock(:ns, :key)"),
            {"ns": LOCK_NAMESPACE, "key": account_key(customer_id)},
        )
        conn.commit()  # the lock is the session's; no transaction stays open
    except Exception:
        conn.close()
        raise
    if not got:
        conn.close()
        raise LockedError(_locked_message(customer_id, describe()))

    def release() -> None:
        try:
            conn.execute(
                text("SELECT pg_advisory_unlock(:ns, :key)"),
                {"ns": LOCK_NAMESPACE, "key": account_key(customer_id)},
            )
            conn.commit()
        finally:
            conn.close()  # closing the session releases it in any case

    return RunLock(release)


def _acquire_file(path: Path, customer_id: str, describe: Callable[[], str]) -> RunLock:
    import fcntl

    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise LedgerError(f"cannot create the run lock {path}: {exc.strerror}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        held = os.read(fd, 4096).decode("utf-8", "replace")
        os.close(fd)
        raise LockedError(_locked_message(customer_id, describe() or _from_file(held))) from None
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps(holder_info()).encode())
    os.fsync(fd)

    def release() -> None:
        try:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    return RunLock(release)


def _from_file(content: str) -> str:
    try:
        info = json.loads(content)
    except ValueError:
        return ""
    return f"pid {info.get('pid')} on {info.get('host')} since {info.get('since')}"


def _locked_message(customer_id: str, holder: str) -> str:
    who = holder or "another process"
    return (
        f"another run holds the lock for account {customer_id} ({who}); this run did "
        "nothing. It exits on its own; if that process is gone, the lock is already free"
    )


def lock_for_migration(conn: Connection) -> None:
    """Serialise migrations: inside the migrating transaction, before reading what is applied."""
    if conn.dialect.name == "postgresql":
        conn.execute(
            text("SELECT pg_advisory_xact_lock(:ns, :key)"),
            {"ns": LOCK_NAMESPACE, "key": MIGRATION_KEY},
        )
    # SQLite: the migrating transaction starts with BEGIN IMMEDIATE (Ledger.open), which
    # holds the database's write lock from its first statement.
