"""The one place that knows the order: source -> mapping -> ledger -> destination -> ledger.

``execute`` is the daily job and the preview alike (``dry_run``); it returns a RunReport that
the CLI renders and that Python callers can inspect. Library code never prints or exits.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pandas as pd

from funnelvalue import advice
from funnelvalue import ledger as states
from funnelvalue.conversions import Built, build, order_ids
from funnelvalue.destinations.base import Destination, check_destination, make_destination
from funnelvalue.errors import ConfigError, FunnelvalueError
from funnelvalue.ledger import Ledger
from funnelvalue.mapping import Mapping, load_mapping
from funnelvalue.settings import Settings
from funnelvalue.sources.base import Source, make_source

log = logging.getLogger(__name__)

EXIT_OK, EXIT_REJECTS, EXIT_CONFIG, EXIT_UNAVAILABLE = 0, 1, 2, 3


@dataclass
class RunReport:
    """What happened (or, for a preview, what would happen), for people and for --json."""

    dry_run: bool
    source: str
    destination: str
    built: Built
    conversions: pd.DataFrame  # every built conversion with its ledger ``state``
    to_send: pd.DataFrame
    run_id: int | None = None
    outcomes: pd.DataFrame | None = None
    restatements: pd.DataFrame | None = None  # value changes sent as adjustments
    interrupted_runs: list[int] = field(default_factory=list)
    confirmed: dict[str, int] = field(default_factory=dict)  # async requests polled, by state
    expected_values: dict[str, tuple[float, str]] = field(default_factory=dict)  # stage -> why
    since: pd.Timestamp | None = None  # what the source was asked for (None: everything)
    watermark: pd.Timestamp | None = None  # recorded for the next run when this one finishes
    warnings: list[str] = field(default_factory=list)
    error: str | None = None
    exit_code: int = EXIT_OK

    @property
    def rejects(self) -> pd.DataFrame:
        return self.built.rejects

    def state_count(self, state: str) -> int:
        return int((self.conversions["state"] == state).sum())

    def outcome_count(self, *statuses: str) -> int:
        if self.outcomes is None:
            return 0
        return int(self.outcomes["status"].isin(statuses).sum())

    @property
    def pending(self) -> int:
        """Conversions that stay pending in the ledger for the next run."""
        if self.dry_run:
            return 0
        if self.outcomes is None:
            return len(self.to_send)
        return len(self.to_send) - len(self.outcomes) + self.outcome_count("failed")

    def summary(self) -> dict[str, Any]:
        """The counts an operator (or a monitoring system) needs, as plain JSON types."""
        data: dict[str, Any] = {
            "run_id": self.run_id,
            "dry_run": self.dry_run,
            "source": self.source,
            "since": None if self.since is None else self.since.isoformat(),
            "destination": self.destination,
            "rows_read": self.built.rows_read,
            "ignored": self.built.ignored,
            "conversions_built": len(self.conversions),
            "backfilled": self.built.backfilled,
            "duplicates_merged": self.built.merged_duplicates,
            "rejected": len(self.rejects),
            "unknown_stages": self.built.unknown_stages,
            "already_sent": self.state_count(states.SENT),
            "value_changed": self.state_count(states.CHANGED),
            "retry_later": self.state_count(states.RETRY_LATER),
            "rejected_before": self.state_count(states.REJECTED_BEFORE),
            "to_send": len(self.to_send),
            "sent": 0 if self.dry_run else self.outcome_count("uploaded", "duplicate"),
            "submitted": self.outcome_count("submitted"),
            "requests_confirmed": self.confirmed,
            "expected_values": {stage: value for stage, (value, _) in self.expected_values.items()},
            "validated_ok": self.outcome_count("uploaded", "duplicate") if self.dry_run else 0,
            "rejected_by_destination": self.outcome_count("rejected"),
            "retry_after": self.outcome_count("retry_after"),
            "restated": 0
            if self.restatements is None
            else int((self.restatements["status"] == "restated").sum()),
            "pending": self.pending,
            "output": self.destination.removeprefix("csv:")
            if self.destination.startswith("csv:")
            else None,
            "interrupted_runs": self.interrupted_runs,
            "warnings": self.warnings,
            "error": self.error,
            "exit_code": self.exit_code,
        }
        return data


def customer_id_for(settings: Settings, mapping: Mapping) -> str:
    """The Google Ads account, digits only: from settings/env, else the mapping file."""
    customer_id = settings.customer_id or mapping.customer_id
    if not customer_id:
        raise ConfigError(
            "no Google Ads customer id: set `customer_id:` in the mapping file "
            "or FUNNELVALUE_CUSTOMER_ID (it is part of every idempotency key)"
        )
    return customer_id.replace("-", "")


def execute(
    settings: Settings,
    *,
    dry_run: bool,
    mapping: Mapping | None = None,
    now: pd.Timestamp | None = None,
    validate_only: bool = False,
    since: datetime | None = None,
    full_refresh: bool = False,
) -> RunReport:
    """Run the daily job (or preview it). Raises FunnelvalueError for what stops it early.

    ``validate_only`` (with ``dry_run``) asks the destination to check the rows without
    recording them anywhere: Google's verdict per row comes back in ``outcomes``.
    The source is asked for changes since its watermark minus the overlap; ``since``
    overrides that, ``full_refresh`` reads everything.
    """
    if since is not None and full_refresh:
        raise ConfigError("--since and --full-refresh contradict each other: pass one")
    mapping = mapping or load_mapping(settings.mapping)
    customer_id = customer_id_for(settings, mapping)
    now = now or pd.Timestamp.now(tz="UTC")
    check_destination(settings.destination)
    source = make_source(settings, mapping)
    ledger = Ledger.open(settings.ledger, create=not dry_run)
    window = Window(settings.source_overlap_hours, since, full_refresh)
    try:
        if dry_run:
            report = _plan(
                source,
                ledger,
                mapping,
                customer_id,
                now,
                window,
                dry_run=True,
                destination=settings.destination,
            )
            if validate_only:
                report.outcomes = _validate(settings, mapping, customer_id, report.to_send)
                if report.outcome_count("rejected"):
                    report.exit_code = EXIT_REJECTS
            return report
        return _run(
            settings=settings,
            source=source,
            ledger=ledger,
            mapping=mapping,
            customer_id=customer_id,
            now=now,
            window=window,
        )
    finally:
        ledger.close()


def _validate(
    settings: Settings, mapping: Mapping, customer_id: str, to_send: pd.DataFrame
) -> pd.DataFrame:
    destination = make_destination(settings, mapping, 0, customer_id)
    try:
        validate = getattr(destination, "validate", None)
        if validate is None:
            raise ConfigError(
                f"--validate-only asks Google to check the rows; the {settings.destination} "
                "destination cannot: use --destination google-ads"
            )
        outcomes: pd.DataFrame = validate(to_send.assign(order_id=order_ids(to_send["key"])))
        return outcomes
    finally:
        destination.close()


def _expected_values(
    built: Built, ledger: Ledger, mapping: Mapping, customer_id: str, now: pd.Timestamp
) -> dict[int, tuple[float, str]]:
    """Compute the ``expected`` stages' values from this read plus the ledger's history and
    put them (times each row's multiply_by factor) on the built conversions."""
    assert built.funnel is not None
    rows = advice.combine(built.funnel, ledger.funnel_history(customer_id), mapping)
    built.funnel = None
    expected = advice.expected_values(rows, mapping, now)
    frame = built.conversions
    for position, (value, how) in expected.items():
        mine = frame["stage_position"] == position
        frame.loc[mine, "value"] = (value * frame.loc[mine, "value_factor"]).round(2)
        log.info("expected value of '%s': %s (%s)", mapping.stages[position].name, value, how)
    return expected


@dataclass(frozen=True)
class Window:
    """Which changes to ask the source for."""

    overlap_hours: float
    since: datetime | None = None
    full_refresh: bool = False

    def start(self, watermark: pd.Timestamp | None) -> pd.Timestamp | None:
        """Watermark minus the overlap: late-arriving updates are read again, which the
        ledger makes free (what was sent is recognised, not re-sent)."""
        if self.full_refresh:
            return None
        if self.since is not None:
            given = pd.Timestamp(self.since)
            return given.tz_localize("UTC") if given.tzinfo is None else given.tz_convert("UTC")
        if watermark is None:
            return None
        return watermark - pd.Timedelta(hours=self.overlap_hours)


def _plan(
    source: Source,
    ledger: Ledger,
    mapping: Mapping,
    customer_id: str,
    now: pd.Timestamp,
    window: Window,
    *,
    dry_run: bool,
    destination: str,
) -> RunReport:
    # Only sources that can say "changed since" have a watermark: a CSV export is read whole.
    incremental = hasattr(source, "high_water")
    previous = ledger.watermark(source.name) if incremental else None
    since = window.start(previous) if incremental else None
    log.info("reading %s %s", source.name, f"since {since}" if since is not None else "in full")
    # No name for the lead frame: build() may let it go as soon as it has taken what it needs.
    needs_funnel = bool(mapping.expected_stages)
    built = build(source.fetch(since), mapping, now, customer_id, keep_funnel=needs_funnel)
    expected = _expected_values(built, ledger, mapping, customer_id, now) if needs_funnel else {}
    conversions = built.conversions.assign(state=ledger.classify(built.conversions, now))
    if expected:
        # An expected value is fixed when first sent: tomorrow's estimate is not a correction.
        recomputed = conversions["stage_position"].isin(list(expected))
        conversions.loc[recomputed & (conversions["state"] == states.CHANGED), "state"] = (
            states.SENT
        )
    fresh = conversions[conversions["state"].isin(states.TO_SEND)].drop(columns="state")
    leftover = ledger.due_elsewhere(customer_id, conversions["key"], now)
    if not leftover.empty:
        log.info(
            "%d pending conversions are no longer in the input; sending the ledger's copy",
            len(leftover),
        )
    to_send = pd.concat([fresh, leftover], ignore_index=True) if not leftover.empty else fresh
    newest = getattr(source, "high_water", None)
    if newest is None and incremental:  # e.g. a query without a change-time column
        newest = built.latest_change
    report = RunReport(
        dry_run=dry_run,
        source=source.name,
        destination=destination,
        built=built,
        conversions=conversions,
        to_send=to_send,
        since=since,
        # A watermark never moves back (an explicit --since may read older changes).
        watermark=newest
        if previous is None or (newest is not None and newest > previous)
        else None,
        expected_values={mapping.stages[p].name: v for p, v in expected.items()},
        warnings=list(source.warnings) + built.notes,
    )
    report.exit_code = EXIT_REJECTS if len(built.rejects) else EXIT_OK
    return report


def _run(
    *,
    settings: Settings,
    source: Source,
    ledger: Ledger,
    mapping: Mapping,
    customer_id: str,
    now: pd.Timestamp,
    window: Window,
) -> RunReport:
    run_id, interrupted = ledger.start_run("run", source.name, settings.destination)
    if interrupted:
        log.warning(
            "run(s) %s did not finish; their pending conversions are sent now",
            ", ".join(map(str, interrupted)),
        )
    try:
        destination = make_destination(settings, mapping, run_id, customer_id)
    except FunnelvalueError as exc:
        ledger.fail_run(run_id, exc.exit_code, str(exc))
        raise
    try:
        return _send(
            ledger, source, destination, mapping, customer_id, now, window, run_id, interrupted
        )
    finally:
        destination.close()


def _confirm(ledger: Ledger, destination: Destination) -> tuple[dict[str, int], list[str]]:
    """An asynchronous destination's earlier requests: ask what became of them and record it
    before planning, so rows of a request that failed as a whole go out again in this run."""
    poll = getattr(destination, "poll", None)
    open_requests = ledger.open_requests(destination.name) if poll is not None else []
    if not open_requests:
        return {}, []
    try:
        statuses = poll(open_requests)  # type: ignore[misc]
    except FunnelvalueError as exc:
        message = (
            f"could not check {len(open_requests)} submitted requests ({exc}); "
            "they are checked again by the next run"
        )
        log.warning(message)
        return {}, [message]
    counts = ledger.confirm_requests(statuses)
    log.info("checked %d submitted requests: %s", len(open_requests), counts)
    return counts, []


def _send(
    ledger: Ledger,
    source: Source,
    destination: Destination,
    mapping: Mapping,
    customer_id: str,
    now: pd.Timestamp,
    window: Window,
    run_id: int,
    interrupted: list[int],
) -> RunReport:
    try:
        confirmed, confirm_warnings = _confirm(ledger, destination)
        report = _plan(
            source,
            ledger,
            mapping,
            customer_id,
            now,
            window,
            dry_run=False,
            destination=destination.name,
        )
        report.confirmed = confirmed
        report.warnings += confirm_warnings
        prepare = getattr(destination, "prepare", None)  # e.g. resolve conversion actions
        if prepare is not None and len(report.to_send):
            prepare(report.to_send)
    except FunnelvalueError as exc:
        ledger.fail_run(run_id, exc.exit_code, str(exc))
        raise
    report.run_id, report.interrupted_runs = run_id, interrupted
    # Only what is sent needs an order_id: hashing every key would slow the daily no-op run.
    report.to_send = report.to_send.assign(order_id=order_ids(report.to_send["key"]))
    ledger.mark_pending(run_id, report.to_send, destination.name)
    log.info("run %d: %d conversions to send to %s", run_id, len(report.to_send), destination.name)
    try:
        report.outcomes = destination.upload(report.to_send)
        restate = getattr(destination, "restate", None)  # value changes, never re-uploads
        changed = report.conversions[report.conversions["state"] == states.CHANGED]
        if restate is not None and len(changed):
            changed = changed.drop(columns="state")
            report.restatements = restate(changed.assign(order_id=order_ids(changed["key"])))
            report.restatements = report.restatements.merge(
                changed[["key", "value", "currency"]], on="key", how="left"
            )
    except FunnelvalueError as exc:
        report.error = str(exc)
        report.exit_code = exc.exit_code
        report.outcomes = getattr(exc, "outcomes", None)  # batches that went through
        ledger.fail_run(
            run_id, exc.exit_code, str(exc), report.summary(), report.rejects, report.outcomes
        )
        log.error("run %d: %s; %d conversions stay pending", run_id, exc, report.pending)
        return report
    destination_rejects = report.outcome_count("rejected")
    if len(report.rejects) or destination_rejects:
        report.exit_code = EXIT_REJECTS
    watermark = report.watermark
    ledger.finish_run(
        run_id,
        outcomes=report.outcomes,
        restatements=report.restatements,
        rejects=report.rejects,
        watermark=None if watermark is None else (source.name, watermark),
        summary=report.summary(),
        exit_code=report.exit_code,
    )
    log.info(
        "run %d finished: %s",
        run_id,
        {k: v for k, v in report.summary().items() if isinstance(v, int) and v},
    )
    return report


@dataclass
class Study:
    """What `advise` and `report` look at: the funnel rows, the ledger's history, the advice."""

    rows: pd.DataFrame  # advice.combine(): one row per lead per stage reached
    sent: pd.DataFrame  # Ledger.funnel_history()
    advice: advice.Advice
    source: str
    warnings: list[str]


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
    since = now - pd.Timedelta(days=history_days) if hasattr(source, "high_water") else None
    with Ledger.open(settings.ledger, create=False) as ledger:
        built = build(source.fetch(since), mapping, now, customer_id, keep_funnel=True)
        sent = ledger.funnel_history(customer_id)
    assert built.funnel is not None
    rows = advice.combine(built.funnel, sent, mapping)
    found = advice.analyse(
        rows, mapping, now, window_days=window_days, history_days=history_days, sent=sent
    )
    return Study(rows, sent, found, source.name, list(source.warnings) + built.notes)
