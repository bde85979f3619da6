"""The one place that knows the order: source -> mapping -> ledger -> destination -> ledger.

``execute`` is the daily job and the preview alike (``dry_run``); it returns a RunReport that
the CLI renders and that Python callers can inspect. Library code never prints or exits.
"""

from __future__ import annotations

import logging
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pandas as pd
from sqlalchemy.exc import SQLAlchemyError

from funnelvalue import advice, progress, stopping
from funnelvalue.conversions import Built, build
from funnelvalue.destinations.base import (
    Asynchronous,
    Destination,
    KnowsOutcomeFirst,
    PublishesWindow,
    Restates,
    Validates,
)
from funnelvalue.destinations.registry import Context, check_destination, make_destination
from funnelvalue.errors import (
    EXIT_CONFIG,
    EXIT_INTERNAL,
    EXIT_INVALID_ROWS,
    EXIT_OK,
    EXIT_TRY_LATER,
    ConfigError,
    FunnelvalueError,
    Interrupted,
    LedgerError,
    SourceError,
)
from funnelvalue.frames import member, use_returning_allocator
from funnelvalue.increments import incremental
from funnelvalue.ledger import Ledger
from funnelvalue.ledger.engine import database_error
from funnelvalue.ledger.runs import StagingAhead
from funnelvalue.mapping import Mapping, load_mapping
from funnelvalue.order_ids import order_ids
from funnelvalue.redact import scrub
from funnelvalue.settings import Settings
from funnelvalue.sources.base import Source
from funnelvalue.sources.registry import make_source
from funnelvalue.vocabulary import (
    DELIVERED,
    DONE,
    TO_SEND,
    Outcome,
    Reason,
    Restatement,
    RowKind,
    RunStatus,
    State,
)

log = logging.getLogger(__name__)


@dataclass
class RunReport:
    """What happened (or, for a preview, what would happen), for people and for --json."""

    dry_run: bool
    source: str
    destination: str
    built: Built
    conversions: pd.DataFrame  # every built conversion with its ledger ``state``
    # what goes out, order_id included (a preview that sends nothing leaves a new one's empty:
    # hashing 900k keys was 15% of a preview, for ids it never shows)
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
    ledger: str = ""  # where the ledger is (no password)
    ledger_created: bool = False  # this run started a new, empty ledger
    aged_out: int = 0  # rows past the lookback that were sent before: not a problem
    moved: int = 0  # new conversions of leads and stages already sent under another action
    # (outcomes frame, its count per status): a summary asks a dozen counts of 900k outcomes
    _counted: tuple[pd.DataFrame, dict[str, int]] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    @property
    def rejects(self) -> pd.DataFrame:
        return self.built.rejects

    @property
    def invalid(self) -> pd.DataFrame:
        """Rows someone must fix in the CRM or the mapping: these make exit code 1."""
        return self.rejects[self.rejects["kind"] == RowKind.INVALID]

    @property
    def skipped(self) -> pd.DataFrame:
        """Rows that are simply not attributable to an ad click: counted, not alarming."""
        return self.rejects[self.rejects["kind"] == RowKind.SKIPPED]

    def state_count(self, state: State) -> int:
        return int((self.conversions["state"] == state).sum())

    def outcome_count(self, *statuses: Outcome) -> int:
        if self.outcomes is None:
            return 0
        counted = self._counted
        if counted is None or counted[0] is not self.outcomes:  # counted once per frame
            statuses_found = self.outcomes["status"].value_counts()
            counted = (self.outcomes, {str(k): int(v) for k, v in statuses_found.items()})
            self._counted = counted
        return sum(counted[1].get(str(status), 0) for status in set(statuses))

    @property
    def pending(self) -> int:
        """Conversions that stay pending in the ledger for the next run."""
        if self.dry_run:
            return 0
        if self.outcomes is None:
            return len(self.to_send)
        return (
            len(self.to_send)
            - len(self.outcomes)
            + self.outcome_count(Outcome.FAILED, Outcome.HELD)
        )

    def going_out(self) -> pd.DataFrame:
        """The conversions a preview would send, or a run sent (uploaded, already at Google,
        written to the import file, submitted): what the value totals count."""
        if self.dry_run:
            return self.to_send
        return self.sent_with(*DELIVERED, Outcome.SUBMITTED)

    def sent_with(self, *statuses: Outcome) -> pd.DataFrame:
        """The rows of ``to_send`` whose outcome is one of ``statuses`` (none before any)."""
        if self.outcomes is None or self.outcomes.empty:
            return self.to_send.iloc[0:0]
        every = self.outcome_count(*statuses) == len(self.outcomes)
        if every and len(self.outcomes) == len(self.to_send):  # one outcome a row
            return self.to_send
        chosen = self.outcomes["status"].isin(statuses)
        return self.to_send[member(self.to_send["key"], self.outcomes.loc[chosen, "key"])]

    def value_totals(self, by: str, rows: pd.DataFrame | None = None) -> list[dict[str, Any]]:
        """Conversions and value going out (``rows``: going_out(), when the caller has it) per
        ``by`` (stage or conversion_action) and currency, top of the funnel first."""
        rows = self.going_out() if rows is None else rows
        if rows.empty:
            return []
        grouped = (
            rows.groupby([by, "currency"], sort=False, observed=True)
            .agg(
                conversions=("value", "size"),
                value=("value", "sum"),
                position=("stage_position", "min"),
            )
            .sort_values("position", kind="stable")
        )
        return [
            {
                by: str(name),
                "currency": str(currency),
                "conversions": int(n),
                "value": round(float(v), 2),
            }
            for (name, currency), n, v in zip(
                grouped.index, grouped["conversions"], grouped["value"], strict=True
            )
        ]

    def summary(self) -> dict[str, Any]:
        """The counts an operator (or a monitoring system) needs, as plain JSON types."""
        out = self.going_out()
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
            "invalid": len(self.invalid),
            "skipped": len(self.skipped),
            "skipped_reasons": {
                str(k): int(v) for k, v in self.skipped["reason_code"].value_counts().items()
            },
            "aged_out": self.aged_out,
            "moved_to_new_action": self.moved,
            "unknown_stages": {scrub(k): v for k, v in self.built.unknown_stages.items()},
            "already_sent": self.state_count(State.SENT),
            "value_changed": self.state_count(State.CHANGED),
            "retry_later": self.state_count(State.RETRY_LATER),
            "rejected_before": self.state_count(State.REJECTED_BEFORE),
            "to_send": len(self.to_send),
            "sent": 0 if self.dry_run else self.outcome_count(*DELIVERED),
            "written": 0 if self.dry_run else self.outcome_count(Outcome.WRITTEN),
            "submitted": self.outcome_count(Outcome.SUBMITTED),
            "requests_confirmed": self.confirmed,
            "expected_values": {stage: value for stage, (value, _) in self.expected_values.items()},
            "validated_ok": self.outcome_count(Outcome.UPLOADED, Outcome.DUPLICATE)
            if self.dry_run
            else 0,
            "rejected_by_destination": self.outcome_count(Outcome.REJECTED),
            "retry_after": self.outcome_count(Outcome.RETRY_AFTER),
            "held": self.outcome_count(Outcome.HELD),
            "restated": 0
            if self.restatements is None
            else int((self.restatements["status"] == Restatement.RESTATED).sum()),
            "pending": self.pending,
            "value_by_stage": self.value_totals("stage", out),
            "value_by_action": self.value_totals("conversion_action", out),
            "output": self.destination.removeprefix("csv:")
            if self.destination.startswith("csv:")
            else None,
            "interrupted_runs": self.interrupted_runs,
            "ledger": self.ledger,
            "ledger_created": self.ledger_created,
            "warnings": [scrub(w) for w in self.warnings],
            "error": None if self.error is None else scrub(self.error),
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

    A run holds the account's lock on the ledger from start to end (LockedError when another
    run has it). ``validate_only`` (with ``dry_run``) asks the destination to check the rows
    without recording them anywhere: Google's verdict per row comes back in ``outcomes``.
    The source is asked for changes since its watermark minus the overlap; ``since``
    overrides that, ``full_refresh`` reads everything.
    """
    if since is not None and full_refresh:
        raise ConfigError("--since and --full-refresh contradict each other: pass one")
    mapping = mapping or load_mapping(settings.mapping)
    customer_id = customer_id_for(settings, mapping)
    now = now or pd.Timestamp.now(tz="UTC")
    use_returning_allocator()
    check_destination(settings.destination)
    source = make_source(settings, mapping)
    ledger = Ledger.open(settings.ledger, create=not dry_run)
    job = Job(settings, source, ledger, mapping, customer_id, now)
    job.window = Window(settings.source_overlap_hours, since, full_refresh)
    try:
        if dry_run:
            return job.preview(validate_only)
        with ledger.lock(customer_id):
            return job.run()
    except SQLAlchemyError as exc:  # a ledger read that failed (writes translate their own)
        raise database_error(exc, ledger.where, "the ledger failed") from exc
    finally:
        ledger.close()


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


@dataclass
class Job:
    """One run or preview: the parts it works with, and the one clock it reads (``now``)."""

    settings: Settings
    source: Source
    ledger: Ledger
    mapping: Mapping
    customer_id: str
    now: pd.Timestamp
    window: Window = field(default_factory=lambda: Window(24.0))

    # -- preview ----------------------------------------------------------------------------

    def context(self, run_id: int = 0) -> Context:
        return Context(self.settings, self.mapping, self.customer_id, self.now, run_id)

    def preview(self, validate_only: bool) -> RunReport:
        destination = make_destination(self.context())
        try:
            identities, warnings = self._identities(destination, dry_run=True)
            report = self._plan(
                identities,
                dry_run=True,
                destination=self.settings.destination,
                order_ids_needed=validate_only,  # Google checks them; nothing else reads them
            )
            report.warnings += warnings
            if not self.ledger.exists:
                report.warnings.append(
                    f"there is no ledger at {self.ledger.where} yet: every conversion counts "
                    "as new (the first run creates it; the wrong folder? --project-dir)"
                )
            if validate_only:
                if not isinstance(destination, Validates):
                    raise ConfigError(
                        "--validate-only asks Google to check the rows; the "
                        f"{self.settings.destination} destination cannot: use "
                        "--destination google-ads"
                    )
                report.outcomes = destination.validate(report.to_send)
                if report.outcome_count(Outcome.REJECTED) and report.exit_code == EXIT_OK:
                    report.exit_code = EXIT_INVALID_ROWS
                if report.outcome_count(Outcome.HELD):  # the account must change first
                    report.error = _held_message(report.outcomes, None)
                    report.exit_code = EXIT_CONFIG
            return report
        finally:
            destination.close()

    # -- identity ---------------------------------------------------------------------------

    def _identities(
        self, destination: Destination, *, dry_run: bool
    ) -> tuple[dict[str, str], list[str]]:
        """The mapping's actions as Google counts them (stops the run when one is unusable or
        two stages name one action), and the ledger's rows from before stable keys re-keyed."""
        labels = [stage.conversion_action for stage in self.mapping.stages]
        identities = destination.action_identities(labels, strict=True)
        stages_of: dict[str, list[str]] = {}
        for stage in self.mapping.stages:
            stages_of.setdefault(identities[stage.conversion_action], []).append(stage.name)
        shared = {ident: names for ident, names in stages_of.items() if len(names) > 1}
        if shared:
            raise ConfigError(
                "two stages name the same conversion action; Google counts one conversion per "
                "lead and action, so each stage needs its own action",
                [
                    f"stages {', '.join(repr(n) for n in names)} all send to action {ident}"
                    for ident, names in shared.items()
                ],
            )
        adopted, unresolved = self.ledger.adopt_legacy(
            self.customer_id,
            lambda old: destination.action_identities(old, strict=False),
            dry_run=dry_run,
        )
        warnings = []
        if unresolved:
            warnings.append(
                "the ledger has conversions from before stable keys under actions this "
                f"destination cannot find ({', '.join(unresolved)}); they stay as they are"
            )
        if adopted:
            log.info("%d ledger rows re-keyed to the actions Google counts", adopted)
        return identities, warnings

    # -- planning ---------------------------------------------------------------------------

    def _plan(
        self,
        identities: dict[str, str],
        *,
        dry_run: bool,
        destination: str,
        order_ids_needed: bool = True,
    ) -> RunReport:
        ledger, mapping, now = self.ledger, self.mapping, self.now
        # Only sources that can say "changed since" have a watermark: a CSV export is read whole.
        incremental = self.source.incremental
        previous = ledger.runs.watermark(self.source.name) if incremental else None
        since = self.window.start(previous) if incremental else None
        log.info(
            "reading %s %s", self.source.name, f"since {since}" if since is not None else "in full"
        )
        needs_funnel = bool(mapping.expected_stages)
        progress.phase(f"reading {self.source.name}")
        # No name for the lead frame: build() may let it go as soon as it has taken what it needs.
        fetched = self.source.fetch(since)
        progress.phase(f"building conversions from {len(fetched.leads):,} rows")
        built = build(
            fetched.leads,
            mapping,
            now,
            self.customer_id,
            identities=identities,
            keep_funnel=needs_funnel,
            # An account with nothing in the ledger yet sends every conversion it builds
            # (a first run): their ids are hashed on another core while the build goes on.
            order_ids=order_ids_needed and ledger.knows_nothing_of(self.customer_id),
        )
        if not incremental and built.rows_read == 0:
            raise SourceError(
                f"{self.source.name.removeprefix('csv:')} has a header but no data rows: "
                "nothing to send (an export that came out empty?)"
            )
        expected = self._expected_values(built) if needs_funnel else {}
        # An expected value is fixed when first sent: tomorrow's estimate is not a correction.
        estimated = built.conversions["stage_position"].isin(list(expected))
        progress.phase(f"checking {len(built.conversions):,} conversions against the ledger")
        known = ledger.known(built.conversions)
        if mapping.value_strategy == "incremental":
            self._increments(built, known)
        classified = ledger.classify(built.conversions, now, estimated=estimated, known=known)
        conversions = built.conversions.assign(
            state=classified["state"], ledger_order_id=classified["ledger_order_id"]
        )
        aged_out = self._drop_aged_out(built)
        fresh = conversions[conversions["state"].isin(TO_SEND)].drop(columns="state")
        moved = ledger.sent_under_other_action(fresh[fresh["ledger_order_id"].isna()])
        # An order id is computed once, when a conversion first goes out; after that the
        # ledger's copy is the truth (a replay or restatement must carry what Google has).
        known_id = fresh["ledger_order_id"]
        new = known_id.isna().to_numpy()
        if order_ids_needed and new.any():
            computed = (
                order_ids(fresh.loc[new, "key"])
                if built.order_ids is None
                else built.order_ids.loc[fresh.index[new]]
            )
            # A first run: no fill over a column of nothing
            known_id = computed if new.all() else known_id.fillna(computed)
        fresh = fresh.assign(order_id=known_id).drop(columns="ledger_order_id")
        leftover = ledger.due_elsewhere(self.customer_id, conversions["key"], now)
        if not leftover.empty:
            log.info(
                "%d pending conversions are no longer in the input; sending the ledger's copy",
                len(leftover),
            )
        to_send = pd.concat([fresh, leftover], ignore_index=True) if not leftover.empty else fresh
        newest = fetched.high_water
        if newest is None and incremental:  # e.g. a query without a change-time column
            newest = built.latest_change
        report = RunReport(
            dry_run=dry_run,
            source=self.source.name,
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
            warnings=list(fetched.warnings) + built.notes + _moved_warnings(moved, fresh),
            ledger=ledger.where,
            ledger_created=ledger.created,
            aged_out=aged_out,
            moved=len(moved),
        )
        report.exit_code = _input_exit_code(report)
        if report.exit_code == EXIT_CONFIG:
            report.error = _all_invalid_message(report.invalid)
        return report

    def _increments(self, built: Built, known: pd.DataFrame) -> None:
        """value_strategy incremental: each conversion's value becomes its stage's worth
        minus what Google already credits the lead (increments.py), from what the ledger
        says was sent for its earlier stages, in this input or not."""
        frame = built.conversions
        if frame.empty:
            return
        sent = (
            known.loc[known["status"].isin(DONE)].drop_duplicates("key").set_index("key")["value"]
        )
        sent_value = frame["key"].map(sent.astype("float64")).astype("float64")
        positions = {stage.name: n for n, stage in enumerate(self.mapping.stages)}
        leads = frame["lead_id"].astype(str).unique().tolist()
        others = self.ledger.sent_of_leads(self.customer_id, leads)
        others = others.assign(stage_position=others["stage"].map(positions))
        others = others[others["stage_position"].notna()].astype({"stage_position": "int64"})
        # only stages this input does not carry: the others are in the frame already
        carried = frame[["lead_id", "stage_position"]].astype({"lead_id": str})
        others = others.astype({"lead_id": str}).merge(
            carried, on=["lead_id", "stage_position"], how="left", indicator=True
        )
        others = others[others["_merge"] == "left_only"].drop(columns="_merge")
        result = incremental(frame, sent_value, others, len(self.mapping.stages) - 1)
        built.conversions = frame.assign(value=result.values)
        if result.floored:
            built.notes.append(
                f"{result.floored:,} conversions are worth less than their lead was already "
                "credited (value_strategy incremental): they are sent at 0, never negative"
            )

    def _drop_aged_out(self, built: Built) -> int:
        """Rows now past the click lookback that were sent when they were young: already
        done, not a problem to report every day of a cumulative export."""
        rejects = built.rejects
        old = rejects["key"].notna() & (rejects["reason_code"] == Reason.EXPIRED)
        if not old.any():
            return 0
        sent = member(rejects["key"], self.ledger.sent_keys(rejects.loc[old, "key"].tolist())) & old
        built.rejects = rejects[~sent].reset_index(drop=True)
        return int(sent.sum())

    def _expected_values(self, built: Built) -> dict[int, tuple[float, str]]:
        """The ``expected`` stages' values, from this read plus the ledger's history, put on
        the built conversions (times each row's multiply_by factor): the second half of
        building, since the estimate needs the funnel that building produced."""
        assert built.funnel is not None
        history = self.ledger.views.funnel_history(self.customer_id)
        rows = advice.combine(built.funnel, history, self.mapping)
        built.funnel = None
        expected = advice.expected_values(rows, self.mapping, self.now)
        frame = built.conversions
        value = frame["value"].copy()
        for position, (estimate, how) in expected.items():
            mine = frame["stage_position"] == position
            value[mine] = (estimate * frame.loc[mine, "value_factor"]).round(2)
            log.info(
                "expected value of '%s': %s (%s)", self.mapping.stages[position].name, estimate, how
            )
        built.conversions = frame.assign(value=value)
        return expected

    # -- the run ----------------------------------------------------------------------------

    def run(self) -> RunReport:
        ledger = self.ledger
        run_id, interrupted = ledger.runs.start(
            "run", self.source.name, self.settings.destination, self.customer_id
        )
        if interrupted:
            log.warning(
                "run(s) %s did not finish; their pending conversions are sent now",
                ", ".join(map(str, interrupted)),
            )
        try:
            destination = make_destination(self.context(run_id))
            try:
                return self._send(destination, run_id, interrupted)
            finally:
                destination.close()
        except FunnelvalueError as exc:
            _close_failed(ledger, run_id, exc.exit_code, str(exc), interrupted=exc)
            raise
        except Exception as exc:
            _close_failed(
                ledger,
                run_id,
                EXIT_INTERNAL,
                f"internal error ({type(exc).__name__}); the traceback is in the crash log",
            )
            raise

    def _send(self, destination: Destination, run_id: int, interrupted: list[int]) -> RunReport:
        ledger = self.ledger
        confirmed, confirm_warnings = confirm_requests(ledger, destination)
        identities, identity_warnings = self._identities(destination, dry_run=False)
        report = self._plan(identities, dry_run=False, destination=destination.name)
        report.confirmed = confirmed
        report.warnings += confirm_warnings + identity_warnings
        report.run_id, report.interrupted_runs = run_id, interrupted
        direct = isinstance(destination, KnowsOutcomeFirst)
        # Rows written with their outcome known first are staged for the ledger on a thread
        # while the destination writes them; the others are written pending before they go.
        staging = ledger.runs.staging_ahead(report.to_send) if direct else nullcontext(None)
        # From here a signal waits for the request in flight.
        with stopping.deferred(), staging as ahead:
            if not direct:
                ledger.runs.mark_pending(run_id, report.to_send, destination.name)
            log.info(
                "run %d: %d conversions to send to %s",
                run_id,
                len(report.to_send),
                destination.name,
            )
            try:
                progress.phase(f"sending to {destination.name}", total=len(report.to_send))
                report.outcomes = destination.upload(report.to_send)
                if isinstance(destination, PublishesWindow):
                    self._publish(destination, report)
                stopping.check()
            except FunnelvalueError as exc:
                if report.outcomes is None:  # stopped inside: what went through before it
                    report.outcomes = exc.outcomes
                return self._stopped(report, run_id, exc, destination.name, direct, ahead)
            try:
                report.restatements = self._restate(destination, report)
            except FunnelvalueError as exc:  # every upload went through: keep its outcomes
                report.restatements = self._with_values(report, exc.outcomes)
                return self._stopped(report, run_id, exc, destination.name, direct, ahead)
            if report.outcome_count(Outcome.REJECTED) and report.exit_code == EXIT_OK:
                report.exit_code = EXIT_INVALID_ROWS
            if failed := report.outcome_count(Outcome.FAILED):
                report.error = (
                    f"{failed:,} conversions could not be sent now ({destination.name} said "
                    "failed); they stay pending and go out with the next run"
                )
                report.exit_code = EXIT_TRY_LATER
            if report.outcome_count(Outcome.HELD):  # someone must act: outranks "try later"
                report.error = _held_message(report.outcomes, report.error)
                report.exit_code = EXIT_CONFIG
            watermark = report.watermark
            summary = report.summary()  # once: 0.3 s per 900k conversions
            outcomes, written = _split_written(report, destination.name, direct)
            assert outcomes is not None  # the upload returned
            try:
                ledger.runs.finish(
                    run_id,
                    outcomes=outcomes,
                    written=written,
                    restatements=report.restatements,
                    rejects=report.rejects,
                    watermark=None if watermark is None else (self.source.name, watermark),
                    summary=summary,
                    exit_code=report.exit_code,
                    ahead=ahead,
                )
            except LedgerError as exc:
                return _not_recorded(report, exc)
        log.info(
            "run %d finished: %s",
            run_id,
            {k: v for k, v in summary.items() if isinstance(v, int) and v},
        )
        if stopping.requested():  # the signal came during the last request: all recorded
            try:
                stopping.check()
            except Interrupted as stop:
                report.error = f"stopped by {stop.signal_name} after the last request; all recorded"
                report.exit_code = stop.exit_code
        return report

    def _publish(self, destination: PublishesWindow, report: RunReport) -> None:
        """The fetched import file: every conversion written in the window, this run's too."""
        assert report.outcomes is not None
        since = self.now - pd.Timedelta(days=destination.window_days)
        earlier = self.ledger.written_since(self.customer_id, since, destination=report.destination)
        mine = report.sent_with(Outcome.WRITTEN)
        if earlier.empty:  # a first run: this run's rows as they are, no 900k-row copy
            destination.publish(mine.reset_index(drop=True))
            return
        recent = pd.concat([earlier[~member(earlier["key"], mine["key"])], mine], ignore_index=True)
        destination.publish(recent)

    def _restate(self, destination: Destination, report: RunReport) -> pd.DataFrame | None:
        """Value changes of conversions already sent, as adjustments (never re-uploads), with
        the order ids Google has."""
        changed = report.conversions[report.conversions["state"] == State.CHANGED]
        if not isinstance(destination, Restates) or changed.empty:
            return None
        # Sent before, so the ledger has the order id Google knows it by: the one to adjust.
        changed = changed.drop(columns="state").rename(columns={"ledger_order_id": "order_id"})
        return self._with_values(report, destination.restate(changed))

    @staticmethod
    def _with_values(report: RunReport, restated: pd.DataFrame | None) -> pd.DataFrame | None:
        """Restatement outcomes with the new value and currency the ledger takes on."""
        if restated is None:
            return None
        changed = report.conversions[report.conversions["state"] == State.CHANGED]
        return restated.merge(changed[["key", "value", "currency"]], on="key", how="left")

    def _stopped(
        self,
        report: RunReport,
        run_id: int,
        exc: FunnelvalueError,
        destination: str,
        direct: bool,
        ahead: StagingAhead | None,
    ) -> RunReport:
        """The destination stopped (outage, quota, refusal) or a signal did: record what went
        through (rows already written included), keep the rest pending, say so."""
        report.error = str(exc)
        report.exit_code = exc.exit_code
        status = RunStatus.INTERRUPTED if isinstance(exc, Interrupted) else RunStatus.FAILED
        outcomes, written = _split_written(report, destination, direct)
        try:
            self.ledger.runs.fail(
                run_id,
                exc.exit_code,
                str(exc),
                report.summary(),
                report.rejects,
                outcomes,
                status=status,
                restatements=report.restatements,
                written=written,
                ahead=ahead,
            )
        except LedgerError as failure:
            return _not_recorded(report, failure)
        log.error("run %d: %s; %d conversions stay pending", run_id, exc, report.pending)
        return report


def _split_written(
    report: RunReport, destination: str, direct: bool
) -> tuple[pd.DataFrame | None, tuple[pd.DataFrame, str, str] | None]:
    """(outcomes to record over pending rows, rows to write once as written): a destination
    that knows its outcome first had nothing marked pending, so its written rows are
    inserted with their outcome (ledger.runs._write_rows) rather than updated."""
    outcomes = report.outcomes
    if not direct or outcomes is None:
        return outcomes, None
    done = outcomes["status"] == Outcome.WRITTEN
    message = str(outcomes["message"].iloc[0]) if done.any() else ""
    return outcomes[~done], (report.sent_with(Outcome.WRITTEN), destination, message)


def _held_message(outcomes: pd.DataFrame, failed: str | None) -> str:
    """What the account must change before the held conversions can go (the destination's
    words, one per cause), and what happens to them meanwhile."""
    held = outcomes[outcomes["status"] == Outcome.HELD]
    causes = held.groupby(held["message"].fillna("refused"), sort=False).size()
    parts = [f"{count:,} conversions held: {cause}" for cause, count in causes.items()]
    parts.append("they stay pending and go out with the first run after that is fixed")
    return "; ".join([*parts, failed] if failed else parts)


def _input_exit_code(report: RunReport) -> int:
    """Invalid rows are exit 1; an input with nothing usable at all is exit 2."""
    if len(report.invalid) and report.conversions.empty:
        return EXIT_CONFIG
    return EXIT_INVALID_ROWS if len(report.invalid) else EXIT_OK


def _all_invalid_message(invalid: pd.DataFrame) -> str:
    top = invalid["reason_code"].value_counts()
    code = str(top.index[0])
    example = invalid.loc[invalid["reason_code"] == code, "reason"].iloc[0]
    hints: dict[str, str] = {  # (unreadable times and values name their fix themselves)
        Reason.UNKNOWN_STAGE: " — add the CRM's stage names to crm_values or ignore",
    }
    hint = hints.get(code, "")
    return (
        f"every row of the input is invalid, nothing was sent; most common ({int(top.iloc[0]):,} "
        f"rows): {example}{hint}"
    )


def _moved_warnings(moved: pd.DataFrame, fresh: pd.DataFrame) -> list[str]:
    if moved.empty:
        return []
    now = moved.merge(fresh[["key", "conversion_action"]], on="key")
    groups = now.groupby(["stage", "previous_action", "conversion_action"]).size()
    return [
        f"{count:,} conversions of stage '{names[0]}' were sent under action '{names[1]}' and "
        f"would go out again under '{names[2]}': Google counts them as new conversions there"
        for names, count in zip(groups.index.tolist(), groups.tolist(), strict=True)
    ]


def _not_recorded(report: RunReport, exc: LedgerError) -> RunReport:
    """Google has the rows, the ledger could not say so: never "nothing was sent"."""
    report.error = (
        f"sent, but the outcomes could not be recorded ({exc}); the next run sends them "
        "again with the same order ids, which Google recognises as duplicates"
    )
    report.exit_code = EXIT_TRY_LATER
    log.error(report.error)
    return report


def _close_failed(
    ledger: Ledger,
    run_id: int,
    exit_code: int,
    message: str,
    interrupted: FunnelvalueError | None = None,
) -> None:
    """Mark the run failed (or interrupted); a ledger that cannot even do that is logged,
    and the original error is what the operator sees."""
    status = RunStatus.INTERRUPTED if isinstance(interrupted, Interrupted) else RunStatus.FAILED
    try:
        ledger.runs.fail(run_id, exit_code, message, status=status)
    except LedgerError as exc:
        log.error("run %d could not be marked %s in the ledger: %s", run_id, status, exc)
    except SQLAlchemyError as exc:  # one line, never the SQL and its parameters
        failure = database_error(exc, ledger.where, "ledger write failed")
        log.error("run %d could not be marked %s in the ledger: %s", run_id, status, failure)


def confirm_requests(ledger: Ledger, destination: Destination) -> tuple[dict[str, int], list[str]]:
    """An asynchronous destination's earlier requests: ask what became of them and record it
    before planning, so rows of a request that failed as a whole go out again in this run."""
    if not isinstance(destination, Asynchronous):
        return {}, []
    open_requests = ledger.requests.open(destination.name)
    if not open_requests:
        return {}, []
    try:
        statuses = destination.poll(open_requests)
    except FunnelvalueError as exc:
        message = (
            f"could not check {len(open_requests)} submitted requests ({exc}); "
            "they are checked again by the next run"
        )
        log.warning(message)
        return {}, [message]
    counts = ledger.requests.record(statuses)
    log.info("checked %d submitted requests: %s", len(open_requests), counts)
    return counts, []
