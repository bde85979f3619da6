"""What the commands besides run and preview ask: status, the remote mapping check, the study
behind `advise` and `report`, and the export of written rows. None of them sends a conversion;
`status` records Google's verdicts on submitted requests, the only write here.

Each is one function the CLI calls and renders (cli.py stays a parser and a renderer).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from funnelvalue import advice
from funnelvalue.conversions import build
from funnelvalue.destinations.base import Asynchronous, ChecksActions, Diagnoses
from funnelvalue.destinations.registry import Context, make_destination
from funnelvalue.errors import ConfigError, FunnelvalueError
from funnelvalue.ledger import Ledger, RunSummary
from funnelvalue.ledger.prune import Pruned, prune
from funnelvalue.mapping import Mapping, load_mapping
from funnelvalue.pipeline import confirm_requests, customer_id_for
from funnelvalue.settings import Settings
from funnelvalue.sources.registry import make_source
from funnelvalue.vocabulary import RequestState, RowKind

GOOGLE_ADS = "google-ads"  # the destination whose API answers action checks and diagnostics


@dataclass
class Status:
    """The ledger at a glance, and what Google says when it can be asked."""

    ledger: str
    exists: bool
    runs: list[RunSummary]
    counts: dict[str, int]  # conversions per ledger status
    destination_rejections: dict[str, int]  # per Google error code
    reasons: dict[str, int]  # the last run's rows left out, per reason code
    watermarks: dict[str, pd.Timestamp]
    next_since: dict[str, pd.Timestamp]  # per source: where the next run starts reading
    requests: dict[str, Any]  # ledger.requests.summary()
    requests_note: str | None = None
    google: dict[str, Any] | None = None
    google_note: str | None = None
    warnings: list[str] = field(default_factory=list)


def status(settings: Settings, *, runs: int = 10, google: bool = True) -> Status:
    """Confirm submitted requests with Google (when the destination can), then read the
    ledger; Google's upload diagnostics when asked for and configured."""
    poll_note = _confirm_open_requests(settings)
    overlap = pd.Timedelta(hours=settings.source_overlap_hours)
    with Ledger.open(settings.ledger, create=False) as book:
        views = book.views
        last = views.last_runs(runs)
        marks = views.watermarks()
        found = Status(
            ledger=book.where,
            exists=book.exists,
            runs=last,
            counts=views.status_counts(),
            destination_rejections=views.destination_rejections(),
            reasons=views.rejected_reasons(last[0].id) if last else {},
            watermarks=marks,
            next_since={source: mark - overlap for source, mark in marks.items()},
            requests=book.requests.summary(),
            requests_note=poll_note,
        )
    if google:
        found.google, found.google_note = _google_diagnostics(settings)
    return found


def _context(settings: Settings, mapping: Mapping | None = None) -> Context:
    mapping = mapping or load_mapping(settings.mapping)
    return Context(settings, mapping, customer_id_for(settings, mapping), pd.Timestamp.now("UTC"))


def _confirm_open_requests(settings: Settings) -> str | None:
    """Ask the destination about the requests it submitted and record the verdicts; a reason
    when it cannot (no credentials, another destination configured now, API down)."""
    with Ledger.open(settings.ledger, create=False) as book:
        summary = book.requests.summary()
    if not summary.get("requests", {}).get(RequestState.SUBMITTED):
        return None
    try:
        destination = make_destination(_context(settings))
    except FunnelvalueError as exc:
        return f"submitted requests not checked now: {exc}"
    try:
        if not isinstance(destination, Asynchronous):
            return (
                f"submitted requests not checked now: the configured destination "
                f"({settings.destination}) does not submit requests; choose the destination "
                "that sent them (e.g. --destination data-manager)"
            )
        with Ledger.open(settings.ledger) as book:
            counts, warnings = confirm_requests(book, destination)
    finally:
        destination.close()
    if warnings:
        return f"submitted requests not checked now: {warnings[0]}"
    checked = sum(counts.values())
    return f"checked {checked} submitted requests with Google" if checked else None


def _google_diagnostics(settings: Settings) -> tuple[dict[str, Any] | None, str | None]:
    """Google's upload diagnostics when credentials are configured; otherwise why not."""
    from funnelvalue.destinations.google_ads import credentials_configured

    if not credentials_configured(settings.google_ads_config):
        return None, "Google's upload diagnostics: no Google Ads credentials configured"
    try:
        destination = make_destination(_context(settings), GOOGLE_ADS)
    except FunnelvalueError as exc:
        return None, f"Google's upload diagnostics unavailable: {exc}"
    try:
        assert isinstance(destination, Diagnoses)
        return destination.diagnostics(), None
    except FunnelvalueError as exc:
        return None, f"Google's upload diagnostics unavailable: {exc}"
    finally:
        destination.close()


def check_remote(settings: Settings, mapping: Mapping) -> list[dict[str, str]]:
    """Look the mapping's conversion actions up in Google Ads: one row per action; raises
    ConfigError naming every action Google Ads cannot use."""
    destination = make_destination(_context(settings, mapping), GOOGLE_ADS)
    try:
        assert isinstance(destination, ChecksActions)
        found, problems = destination.check_actions(s.conversion_action for s in mapping.stages)
    finally:
        destination.close()
    if problems:
        raise ConfigError("the mapping names conversion actions Google Ads cannot use", problems)
    return found


@dataclass
class Study:
    """What `advise` and `report` look at: the funnel rows, the ledger's history, the advice."""

    rows: pd.DataFrame  # advice.combine(): one row per lead per stage reached
    sent: pd.DataFrame  # LedgerViews.funnel_history()
    advice: advice.Advice
    source: str
    warnings: list[str]
    runs: list[RunSummary] = field(default_factory=list)  # the last 30, newest first
    rejections: dict[str, int] = field(default_factory=dict)  # by Google, per error code
    reasons: dict[str, int] = field(default_factory=dict)  # the last run's, per reason code
    invalid: pd.DataFrame = field(default_factory=pd.DataFrame)  # the CRM's rows to fix now


def study(
    settings: Settings,
    mapping: Mapping,
    *,
    now: pd.Timestamp | None = None,
    window_days: int = 30,
    history_days: int = 365,
) -> Study:
    """Read the CRM (incremental sources: what changed in ``history_days``) and the ledger,
    and work out the funnel statistics and suggested values. Writes nothing."""
    now = now or pd.Timestamp.now(tz="UTC")
    customer_id = customer_id_for(settings, mapping)
    source = make_source(settings, mapping)
    since = now - pd.Timedelta(days=history_days) if source.incremental else None
    with Ledger.open(settings.ledger, create=False) as ledger:
        fetched = source.fetch(since)
        built = build(fetched.leads, mapping, now, customer_id, keep_funnel=True)
        sent = ledger.views.funnel_history(customer_id)
        runs = ledger.views.last_runs(30)
        rejections = ledger.views.destination_rejections()
        reasons = ledger.views.rejected_reasons(runs[0].id, top=10) if runs else {}
    assert built.funnel is not None
    rows = advice.combine(built.funnel, sent, mapping)
    found = advice.analyse(
        rows, mapping, now, window_days=window_days, history_days=history_days, sent=sent
    )
    return Study(
        rows,
        sent,
        found,
        source.name,
        list(fetched.warnings) + built.notes,
        runs=runs,
        rejections=rejections,
        reasons=reasons,
        invalid=built.rejects[built.rejects["kind"] == RowKind.INVALID],
    )


def advise(
    settings: Settings,
    mapping: Mapping,
    *,
    window_days: int = 30,
    history_days: int = 365,
    write_to: Path | None = None,
) -> tuple[advice.Advice, list[str] | None]:
    """The study's advice, and (with ``write_to``) a copy of the mapping file with the
    suggested values: the changes made, in words. Never overwrites the mapping in use."""
    if write_to is not None and write_to.resolve() == settings.mapping.resolve():
        raise ConfigError(
            "--write-mapping would overwrite the mapping file in use (and its comments): "
            "write a copy, compare, then replace it yourself"
        )
    found = study(settings, mapping, window_days=window_days, history_days=history_days).advice
    changes = advice.write_mapping(settings.mapping, write_to, found) if write_to else None
    return found, changes


def write_report(
    settings: Settings,
    mapping: Mapping,
    path: Path,
    *,
    now: pd.Timestamp | None = None,
    window_days: int = 30,
    history_days: int = 365,
) -> int:
    """The self-contained HTML report at ``path`` (written whole, then moved in place);
    returns its size in bytes."""
    from funnelvalue import htmlreport

    now = now or pd.Timestamp.now(tz="UTC")
    seen = study(settings, mapping, now=now, window_days=window_days, history_days=history_days)
    page = htmlreport.render(
        mapping=mapping,
        advice=seen.advice,
        rows=seen.rows,
        sent=seen.sent,
        runs=seen.runs,
        rejections=seen.rejections,
        reasons=seen.reasons,
        invalid=seen.invalid,
        source=seen.source,
        now=now,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(path.suffix + ".tmp")
    partial.write_text(page, encoding="utf-8")
    partial.replace(path)
    return len(page.encode("utf-8"))


def export_written(settings: Settings, mapping: Mapping, since: pd.Timestamp, output: Path) -> int:
    """Write the conversions the ledger has as written to import files since ``since`` to a
    new import file at ``output``; returns how many. Sends and records nothing."""
    from funnelvalue.destinations.csv_import import write_import_file

    customer_id = customer_id_for(settings, mapping)
    with Ledger.open(settings.ledger, create=False) as ledger:
        if not ledger.exists:
            raise ConfigError(f"there is no ledger at {ledger.where}: nothing was written yet")
        rows = ledger.written_since(customer_id, since)
    write_import_file(output, rows, mapping.timezone)
    return len(rows)


def prune_ledger(
    settings: Settings, older_than_days: int, *, dry_run: bool, now: pd.Timestamp | None = None
) -> Pruned:
    """``funnelvalue ledger prune``: forget finished conversions too old for Google to take
    again (ledger/prune.py). Safe beside a run: a run never looks such rows up (it rejects
    anything older than the lookback before asking the ledger)."""
    now = now or pd.Timestamp.now(tz="UTC")
    with Ledger.open(settings.ledger, create=False) as ledger:
        if not ledger.exists:
            raise ConfigError(f"there is no ledger at {ledger.where}: nothing to prune")
        return prune(ledger.db, older_than_days, now, dry_run=dry_run)
