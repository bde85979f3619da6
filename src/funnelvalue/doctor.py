"""`funnelvalue doctor`: everything a scheduled run needs, checked before 3 a.m. finds out.

Like ``dbt debug``: one line per check with the fix, and nothing sent. A check that cannot
run because an earlier one failed (no settings, no mapping) says so instead of guessing.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy.engine import make_url

from funnelvalue.destinations.registry import Context, make_destination
from funnelvalue.errors import FunnelvalueError, LockedError
from funnelvalue.ledger import Ledger
from funnelvalue.mapping import Mapping, load_mapping
from funnelvalue.pipeline import customer_id_for
from funnelvalue.settings import Settings, load_settings
from funnelvalue.sources.registry import make_source


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""


def doctor(
    config: Path | None = None, project_dir: Path | None = None, **options: Any
) -> list[Check]:
    """Every check, in the order a run meets them; stops early only when nothing else can run."""
    checks: list[Check] = []
    try:
        settings = load_settings(config, project_dir=project_dir, **options)
    except FunnelvalueError as exc:
        return [Check("settings", False, str(exc), "fix the settings named above")]
    checks.append(Check("settings", True, _settings_origin(config, project_dir)))
    try:
        mapping = load_mapping(settings.mapping)
        customer_id = customer_id_for(settings, mapping)
    except FunnelvalueError as exc:
        fix = (
            f"write one with `funnelvalue mapping init {settings.mapping}` (or point "
            "mapping: at yours)"
            if not settings.mapping.exists()
            else "`funnelvalue mapping check` shows each problem with its line"
        )
        checks.append(Check("mapping", False, str(exc), fix))
        return [*checks, _ledger(settings, None)]
    checks.append(
        Check(
            "mapping",
            True,
            f"{settings.mapping}: {len(mapping.stages)} stages, currency {mapping.currency}, "
            f"account {customer_id}",
        )
    )
    checks.append(_ledger(settings, customer_id))
    if settings.destination == "csv":
        checks.append(_writable("output folder", settings.output.parent))
    checks.append(_source(settings, mapping))
    checks.append(_destination(settings, mapping, customer_id))
    return checks


def _settings_origin(config: Path | None, project_dir: Path | None) -> str:
    named = config or os.environ.get("FUNNELVALUE_CONFIG")
    where = named or (project_dir or Path()) / "config" / "funnelvalue.yaml"
    found = "" if Path(where).is_file() else " (not found: defaults and FUNNELVALUE_* only)"
    return f"{where}{found}"


def _guarded(name: str, probe: Callable[[], str], fix: str) -> Check:
    try:
        return Check(name, True, probe())
    except LockedError as exc:
        return Check(name, False, str(exc), "wait for that run to finish (or stop it)")
    except FunnelvalueError as exc:
        return Check(name, False, str(exc), fix)


def _ledger(settings: Settings, customer_id: str | None) -> Check:
    """Reachable; writable (the file and its folder, for SQLite); not locked by a run now."""

    def probe() -> str:
        with Ledger.open(settings.ledger, create=False) as ledger:
            where, exists = ledger.where, ledger.exists
            if exists and customer_id is not None:
                with ledger.lock(customer_id):
                    pass
            runs = ledger.views.last_runs(1)
        url = make_url(settings.ledger)
        if url.get_backend_name() == "sqlite" and url.database:
            path = Path(url.database)
            target = _nearest_existing(path)
            if not os.access(target, os.W_OK):
                raise FunnelvalueError(f"{target} is not writable by this user")
        if not exists:
            return f"{where}: none yet; the first run creates it (is this the right folder?)"
        last = f"last run #{runs[0].id} {runs[0].status}" if runs else "no runs yet"
        return f"{where}: {last}"

    return _guarded("ledger", probe, "check the ledger URL and the folder's permissions")


def _writable(name: str, folder: Path) -> Check:
    existing = _nearest_existing(folder)
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        return Check(name, False, f"{folder} cannot be created or written", "fix its permissions")
    if folder.exists():
        try:
            with tempfile.NamedTemporaryFile(dir=folder):
                pass
        except OSError as exc:
            return Check(name, False, f"{folder}: {exc.strerror}", "fix its permissions")
    return Check(name, True, f"{folder} is writable")


def _nearest_existing(path: Path) -> Path:
    """``path``, or the nearest folder above it that exists: what a run would write into."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _source(settings: Settings, mapping: Mapping) -> Check:
    """Read the source the way a run does: an export whole, an API for the last hour."""

    def probe() -> str:
        source = make_source(settings, mapping)
        since = pd.Timestamp.now(tz="UTC") - pd.Timedelta(hours=1) if source.incremental else None
        fetched = source.fetch(since.to_pydatetime() if since is not None else None)
        what = "rows" if not source.incremental else "changes in the last hour"
        return f"{source.name}: {len(fetched.leads):,} {what} read"

    return _guarded("source", probe, "see the message; credentials go in .env")


def _destination(settings: Settings, mapping: Mapping, customer_id: str) -> Check:
    """The destination's own check of the mapping's actions (for Google: one GAQL query with
    the credentials given, so a refused token or an unusable action shows here)."""

    def probe() -> str:
        context = Context(settings, mapping, customer_id, pd.Timestamp.now(tz="UTC"))
        destination = make_destination(context)
        try:
            labels = [stage.conversion_action for stage in mapping.stages]
            found = destination.action_identities(labels, strict=True)
        finally:
            destination.close()
        return f"{destination.name}: {len(found)} conversion actions usable"

    return _guarded("destination", probe, "see the message; README, 'Where conversions go'")
