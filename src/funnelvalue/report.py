"""Terminal output: the run summary, the preview tables, the mapping and the ledger status.

Rendering only; every number comes from a RunReport or the ledger. What happened comes first
(one box), details after; empty tables are not shown; every table fits the console (80
columns in a cron mail) by dropping its least needed columns before any cell is cut.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console
from rich.markup import escape
from rich.measure import Measurement
from rich.table import Table

from funnelvalue.advice import Advice
from funnelvalue.doctor import Check
from funnelvalue.errors import EXIT_INVALID_ROWS, EXIT_MEANING, EXIT_OK
from funnelvalue.inspection import Status
from funnelvalue.ledger import RunSummary
from funnelvalue.mapping import Expected, FromColumn, Mapping, Stage
from funnelvalue.pipeline import RunReport
from funnelvalue.vocabulary import Outcome, RequestState, State

STATE_STYLE: dict[str, str] = {
    State.NEW: "green",
    State.SENT: "dim",
    State.CHANGED: "yellow",
    State.PENDING: "cyan",
    State.RETRY_DUE: "cyan",
    State.RETRY_LATER: "dim",
    State.REJECTED_BEFORE: "red",
    State.FIXED: "green",
}


STATE_ORDER = {
    state: rank
    for rank, state in enumerate(
        [
            State.NEW,
            State.PENDING,
            State.RETRY_DUE,
            State.FIXED,
            State.CHANGED,
            State.RETRY_LATER,
            State.REJECTED_BEFORE,
            State.SENT,
        ]
    )
}


def _money(value: float) -> str:
    return f"{value:,.2f}"


FOLDED = 12  # the narrowest a folding column is worth showing


def fitted(console: Console, table: Table, *droppable: str) -> Table:
    """The table without its ``droppable`` columns (first named, first dropped) as long as
    it is wider than the console: a column that may not wrap (ids, times, amounts) would
    otherwise be cut. Long text columns wrap instead."""
    for header in droppable:
        if _width_needed(console, table) <= console.width:
            break
        table.columns = [c for c in table.columns if c.header != header]
    return table


def _width_needed(console: Console, table: Table) -> int:
    """Borders and padding, each no-wrap column at its widest cell, each other column at
    its longest word (a folding column, for ids and paths, at a few characters a line)."""
    needed = 3 * len(table.columns) + 1
    for column in table.columns:
        sizes = [
            Measurement.get(console, console.options, cell)
            for cell in (column.header, *column.cells)
        ]
        widest = max(m.maximum if column.no_wrap else m.minimum for m in sizes)
        needed += (
            min(widest, FOLDED) if column.overflow == "fold" and not column.no_wrap else widest
        )
    return needed


def _count(n: int, thing: str) -> str:
    return f"{n:,} {thing}" + ("" if n == 1 else "s")


def verdict(report: RunReport) -> str:
    """The line under the summary box: the exit code and what it means for this run."""
    code = report.exit_code
    if report.dry_run and code in (EXIT_OK, EXIT_INVALID_ROWS):
        text = f"preview: would send {_count(len(report.to_send), 'conversion')}"
        if code == EXIT_INVALID_ROWS:
            text += f"; {_count(len(report.invalid), 'invalid row')} to fix in the CRM (below)"
    else:
        text = EXIT_MEANING.get(code, "failed")
    return f"exit {code}: {text}"


def summary_table(report: RunReport) -> Table:
    s = report.summary()
    title = (
        "Preview (nothing sent, nothing written)"
        if report.dry_run
        else f"Run #{report.run_id} → {report.destination}"
    )
    read = f"rows read from {report.source}"
    read += f" (changed since {s['since']})" if report.since is not None else ""
    if report.ledger:
        created = " (new: created by this run)" if report.ledger_created else ""
        title += f"\nledger: {escape(report.ledger)}{created}"
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("what")
    table.add_column("count", justify="right", no_wrap=True)
    rows: list[tuple[str, int, str]] = [
        (read, s["rows_read"], ""),
        ("ignored stages (mapping `ignore`)", s["ignored"], "dim"),
        ("conversions built", s["conversions_built"], ""),
        ("  of which backfilled skipped stages", s["backfilled"], "dim"),
        ("invalid rows to fix (see below)", s["invalid"], "red" if s["invalid"] else ""),
        ("skipped: not attributable to a click", s["skipped"], "dim"),
        ("already sent", s["already_sent"], "dim"),
        ("  of which aged out of the lookback since", s["aged_out"], "dim"),
        ("value changed since sent (not re-sent)", s["value_changed"], "yellow"),
        ("waiting to retry later", s["retry_later"], "dim"),
        ("rejected before, unchanged", s["rejected_before"], "dim"),
    ]
    if report.dry_run:
        rows.append(("would be sent", s["to_send"], "bold green"))
        if report.outcomes is not None:
            rows.append(("Google would accept (validate-only)", s["validated_ok"], "green"))
            rows.append(("Google would reject", s["rejected_by_destination"], "red"))
    else:
        sent = "written to the import file" if s["written"] else "sent"
        rows += [
            (sent, s["sent"], "bold green"),
            ("submitted (Google confirms later; see status)", s["submitted"], "green"),
            *[
                (
                    f"earlier requests {state}",
                    count,
                    "" if state != RequestState.FAILED else "yellow",
                )
                for state, count in sorted(s["requests_confirmed"].items())
            ],
            ("rejected by the destination", s["rejected_by_destination"], "red"),
            ("retry after (too recent)", s["retry_after"], "yellow"),
            ("held until the account is fixed (see below)", s["held"], "red"),
            ("pending for the next run", s["pending"], "yellow"),
        ]
    always = ("conversions built", "would be sent") + (() if s["submitted"] else ("sent",))
    for label, count, style in rows:
        if count or label in always:
            table.add_row(label, f"{count:,}", style=style or None)
    return table


def stage_totals(report: RunReport, mapping: Mapping) -> Table | None:
    """Per stage: the conversions built, and how many went out (a preview: would go out)
    with what value; None when nothing was built."""
    if report.conversions.empty:
        return None
    verb = "to send" if report.dry_run else "sent"
    totals = {(t["stage"], t["currency"]): t for t in report.value_totals("stage")}
    currencies = sorted({currency for _, currency in totals}) or [mapping.currency]
    single = len(currencies) == 1
    table = Table(title="Per stage", title_justify="left")
    table.add_column("stage")
    table.add_column("conversion action")
    table.add_column("built", justify="right", no_wrap=True)
    table.add_column(verb, justify="right", no_wrap=True)
    table.add_column(
        f"value {verb}" + (f" ({currencies[0]})" if single else ""), justify="right", no_wrap=True
    )
    if not single:
        table.add_column("currency", no_wrap=True)
    built = report.conversions["stage"].value_counts()
    for stage in mapping.stages:
        mine = sorted(c for name, c in totals if name == stage.name) or [currencies[0]]
        for currency in mine:
            total = totals.get((stage.name, currency), {"conversions": 0, "value": 0.0})
            table.add_row(
                _text(stage.name),
                _text(stage.conversion_action),
                f"{int(built.get(stage.name, 0)):,}",
                f"{total['conversions']:,}",
                _money(total["value"]),
                *([] if single else [currency]),
            )
    return table


def _first_rows(rows: pd.DataFrame, limit: int | None) -> pd.DataFrame:
    """The rows to show, by state (STATE_ORDER), then time. With a limit only the shown ones
    are ordered (a partial selection per state): a preview of a million rows shows 20."""
    priority = rows["state"].map(STATE_ORDER).fillna(len(STATE_ORDER)).to_numpy()
    if limit is None:
        return rows.iloc[np.lexsort((rows["conversion_time"].to_numpy(), priority))]
    parts: list[pd.DataFrame] = []
    left = limit
    for level in np.unique(priority):
        if left <= 0:
            break
        part = rows[priority == level]
        parts.append(part.nsmallest(left, "conversion_time", keep="first"))
        left -= len(parts[-1])
    return pd.concat(parts) if parts else rows.iloc[0:0]


def conversions_table(report: RunReport, timezone: str, limit: int | None) -> Table:
    # What would go out first, then what changed, then the rest: the interesting rows on top.
    rows = report.conversions
    shown = _first_rows(rows, limit)
    counts = rows["state"].value_counts()
    title = (
        f"Conversions ({len(rows):,}: "
        + ", ".join(f"{counts[state]:,} {state}" for state in STATE_ORDER if state in counts)
        + ")"
    )
    if limit is not None and len(rows) > limit:
        title += f" — first {limit}; --limit 0 shows all"
    table = Table(
        title=title, title_justify="left", caption=f"times in {timezone}", caption_justify="left"
    )
    verdicts = _verdicts(report)
    for column in ("lead", "stage", "action", "id", "time", "value", "ledger"):
        table.add_column(
            column,
            justify="right" if column == "value" else "left",
            no_wrap=column not in ("stage", "action"),
        )
    if verdicts:
        table.add_column("Google")
    times = shown["conversion_time"].dt.tz_convert(timezone).dt.strftime("%Y-%m-%d %H:%M")
    for row, time in zip(shown.to_dict("records"), times, strict=True):
        stage = f"{row['stage']} (backfilled)" if row["backfilled"] else str(row["stage"])
        state = str(row["state"])
        table.add_row(
            _text(row["lead_id"]),
            _text(stage),
            _text(row["conversion_action"]),
            str(row["click_id_kind"]),
            str(time),
            f"{_money(float(row['value']))} {row['currency']}",
            f"[{STATE_STYLE.get(state, '')}]{state}[/]",
            *([verdicts.get(str(row["key"]), "")] if verdicts else []),
        )
    return table


def _verdicts(report: RunReport) -> dict[str, str]:
    """Google's validate-only answer per conversion key, for the preview table."""
    if not report.dry_run or report.outcomes is None:
        return {}
    verdicts: dict[str, str] = {}
    for row in report.outcomes.to_dict("records"):
        status = str(row["status"])
        text = {Outcome.UPLOADED: "[green]ok[/]", Outcome.DUPLICATE: "already there"}.get(
            Outcome(status), status
        )
        if status not in (Outcome.UPLOADED, Outcome.DUPLICATE) and not pd.isna(row["error_code"]):
            text = f"[red]{_text(row['error_code'])}[/]: {_text(row['message'])}"
        verdicts[str(row["key"])] = text
    return verdicts


def rejects_table(rejects: pd.DataFrame, limit: int | None) -> Table:
    """The invalid rows: data someone must fix in the CRM (or the mapping)."""
    shown = rejects if limit is None else rejects.head(limit)
    title = f"Invalid rows to fix in the CRM ({len(rejects):,})"
    if limit is not None and len(rejects) > limit:
        title += f" — first {limit}; --limit 0 shows all"
    table = Table(title=title, title_justify="left", title_style="red")
    for column in ("row", "lead", "CRM stage", "reason"):
        table.add_column(column, overflow="fold", no_wrap=column in ("row", "lead"))
    for row in shown.itertuples(index=False):
        table.add_row(
            str(row.source_row), _text(row.lead_id), _text(row.crm_stage), _text(row.reason)
        )
    return table


def _refused(report: RunReport) -> pd.DataFrame:
    """Conversions the destination rejected in this run, with lead and stage for the reader."""
    if report.dry_run or report.outcomes is None or report.outcomes.empty:
        return pd.DataFrame()
    refused = report.outcomes[report.outcomes["status"] == Outcome.REJECTED]
    return refused.merge(report.to_send[["key", "lead_id", "stage"]], on="key", how="left")


def refused_table(refused: pd.DataFrame, limit: int | None) -> Table:
    shown = refused if limit is None else refused.head(limit)
    title = f"Rejected by the destination ({len(refused):,})"
    table = Table(title=title, title_justify="left", title_style="red")
    for column in ("lead", "stage", "code", "reason"):
        table.add_column(column, overflow="fold", no_wrap=column == "lead")
    for row in shown.to_dict("records"):
        table.add_row(
            _text(row["lead_id"]),
            _text(row["stage"]),
            _text(row["error_code"]),
            _text(row["message"]),
        )
    return table


def _text(value: object) -> str:
    """A cell from the CRM, the mapping or Google: shown as it is, never read as rich markup
    (a stage named '[/]' must not crash the summary)."""
    missing = value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value))
    return "" if missing else escape(str(value))


def render_run(
    console: Console, report: RunReport, mapping: Mapping, *, preview: bool, limit: int | None
) -> None:
    """What happened first (one box, its exit code and meaning, the error), then details."""
    console.print(summary_table(report))
    style = "bold green" if report.exit_code == EXIT_OK else "bold red"
    console.print(f"[{style}]{escape(verdict(report))}[/]", highlight=False)
    if report.error:
        console.print(f"[bold red]error:[/] {escape(report.error)}")
    totals = stage_totals(report, mapping)
    if totals is not None:
        console.print(fitted(console, totals, "conversion action"))
    if preview and not report.conversions.empty:
        table = conversions_table(report, mapping.timezone, limit)
        console.print(fitted(console, table, "action", "id", "ledger"))
    if len(report.invalid):
        console.print(fitted(console, rejects_table(report.invalid, limit), "CRM stage"))
    refused = _refused(report)
    if len(refused):
        console.print(fitted(console, refused_table(refused, limit), "stage"))
    if report.built.unknown_stages:
        listed = escape(", ".join(f"'{k}' ({v})" for k, v in report.built.unknown_stages.items()))
        console.print(
            f"[yellow]Unknown CRM stages:[/] {listed} — map them under a stage's "
            "crm_values or list them in `ignore`."
        )
    skipped = report.skipped
    if len(skipped):
        counts = skipped["reason"].str.split(":").str[0].value_counts()
        listed = "; ".join(f"{reason} ({count:,})" for reason, count in counts.items())
        console.print(f"[dim]skipped, not attributable to an ad click: {escape(listed)}[/]")
    for warning in report.warnings:
        console.print(f"[yellow]warning:[/] {escape(warning)}")
    if report.interrupted_runs:
        console.print(
            f"[yellow]note:[/] run(s) {report.interrupted_runs} were interrupted; "
            "their pending conversions were included in this run."
        )
    if report.restatements is not None:
        restated = report.summary()["restated"]
        console.print(
            f"[green]restated[/] {restated:,} changed conversion values in Google Ads "
            "(adjustments, never re-uploads)."
        )
        if waiting := len(report.restatements) - restated:
            console.print(
                f"[yellow]note:[/] {waiting:,} changed values could not be restated "
                "now (too recent: next run; older than 54 days or wbraid: never)."
            )
    elif report.state_count(State.CHANGED):
        console.print(
            "[yellow]note:[/] conversions whose value changed after they were sent are not "
            "re-uploaded (Google would refuse a duplicate); the import file cannot restate "
            "them, --destination google-ads sends them as adjustments."
        )


def mapping_table(mapping: Mapping) -> Table:
    table = Table(title="Stages (top of the funnel first)", title_justify="left")
    for column in ("#", "stage", "CRM values", "conversion action", "value"):
        table.add_column(column, no_wrap=column == "#")
    for position, stage in enumerate(mapping.stages, start=1):
        shown = describe_value(stage)
        table.add_row(
            str(position),
            stage.name,
            ", ".join(stage.crm_values),
            stage.conversion_action,
            f"{shown} {mapping.currency}",
        )
    return table


def describe_value(stage: Stage) -> str:
    """A stage's value rule in words (the currency is added by the caller)."""
    value = stage.value
    if isinstance(value, FromColumn):
        shown = f"from column {value.from_column}"
        shown += f" (default {_money(value.default)})" if value.default is not None else ""
    elif isinstance(value, Expected):
        shown = (
            f"expected over {value.window_days} days (default {_money(value.default)} below "
            f"{value.min_sample} leads)"
        )
    else:
        shown = _money(value)
    if stage.multiply_by is not None:
        factors = ", ".join(f"{k} x{v:g}" for k, v in stage.multiply_by.values.items())
        shown += (
            f", times {stage.multiply_by.column} ({factors}; else x{stage.multiply_by.default:g})"
        )
    return shown


def mapping_json(
    mapping: Mapping, remote: Sequence[dict[str, str]] | None = None
) -> dict[str, Any]:
    """`mapping check --json`: the stages as read, their value rules, the stages per
    conversion action and, when every value is a fixed number, what one lead reaching the last
    stage is credited with when all stages count in one goal (Google adds them up)."""
    fixed = [s.value for s in mapping.stages if isinstance(s.value, float)]
    every_fixed = len(fixed) == len(mapping.stages)
    actions: dict[str, list[str]] = {}
    for stage in mapping.stages:
        actions.setdefault(stage.conversion_action, []).append(stage.name)
    return {
        "valid": True,
        "currency": mapping.currency,
        "timezone": mapping.timezone,
        "value_strategy": mapping.value_strategy,
        "stages": [
            {
                "position": position,
                "name": stage.name,
                "crm_values": stage.crm_values,
                "conversion_action": stage.conversion_action,
                "value": stage.model_dump(mode="json")["value"],
                "value_described": describe_value(stage),
            }
            for position, stage in enumerate(mapping.stages, start=1)
        ],
        "stages_by_action": actions,
        "fixed_value_total": round(sum(fixed), 2) if every_fixed else None,
        "ignore": mapping.ignore,
        "advice": mapping_advice(mapping),
        "remote_actions": None if remote is None else list(remote),
    }


def mapping_advice(mapping: Mapping) -> list[str]:
    """Things that are valid but probably not meant: worth a second look before bidding."""
    advice: list[str] = []
    fixed = [(s.name, s.value) for s in mapping.stages if isinstance(s.value, float)]
    for (upper, upper_value), (lower, lower_value) in itertools.pairwise(fixed):
        if lower_value < upper_value:
            advice.append(
                f"stage '{lower}' is worth less ({_money(lower_value)}) than the "
                f"earlier stage '{upper}' ({_money(upper_value)}); values usually grow "
                "down the funnel"
            )
    if all(isinstance(s.value, float) and s.value == 0 for s in mapping.stages):
        advice.append("every stage is worth 0: value-based bidding needs values")
    if not mapping.backfill_skipped_stages and len(mapping.stages) > 2:
        advice.append(
            "backfill_skipped_stages is off: leads that jump stages in the CRM will "
            "not count for the stages they skipped"
        )
    return advice


def actions_table(rows: Sequence[dict[str, str]]) -> Table:
    """mapping check --remote: each conversion action as Google Ads knows it; a problem is
    said in the status column."""
    table = Table(title="Conversion actions in Google Ads", title_justify="left")
    table.add_column("mapping names")
    table.add_column("resource name", no_wrap=True)
    table.add_column("type", no_wrap=True)
    table.add_column("status")
    for row in rows:
        status = _text(row["status"])
        table.add_row(
            _text(row["mapping"]),
            _text(row["resource_name"]),
            _text(row["type"]),
            f"[red]{status}: {_text(row['problem'])}[/]"
            if row["problem"]
            else f"[green]{status}[/]",
        )
    return table


def diagnostics_table(diagnostics: dict[str, Any]) -> Table:
    """Google's own upload diagnostics, per upload client and per conversion action."""
    table = Table(title="Google's view (upload diagnostics)", title_justify="left")
    for column in ("what", "status", "events", "successful", "last upload", "alerts"):
        table.add_column(
            column, overflow="fold", no_wrap=column in ("status", "events", "successful")
        )
    for kind in ("clients", "actions"):
        for row in diagnostics.get(kind, []):
            style = {"EXCELLENT": "green", "GOOD": "green", "NEEDS_ATTENTION": "red"}.get(
                row["status"], ""
            )
            table.add_row(
                str(row["name"]),
                f"[{style}]{row['status']}[/]" if style else row["status"],
                f"{row['total']:,}",
                f"{row['successful']:,}",
                str(row["last_upload"]),
                "; ".join(row["alerts"]),
            )
    return table


def runs_table(runs: Sequence[RunSummary]) -> Table:
    table = Table(title="Last runs", title_justify="left")
    for column in (
        "run",
        "started (UTC)",
        "status",
        "exit",
        "read",
        "sent",
        "rejected",
        "pending",
        "message",
    ):
        table.add_column(column, overflow="fold", no_wrap=column != "message")
    for run in runs:
        s = run.summary
        table.add_row(
            str(run.id),
            run.started_at.strftime("%m-%d %H:%M"),
            run.status,
            "" if run.exit_code is None else str(run.exit_code),
            str(s.get("rows_read", "")),
            str(s.get("sent", "")),
            str(s.get("rejected", "")),
            str(s.get("pending", "")),
            (run.message or "")[:120],
        )
    return table


def render_doctor(console: Console, checks: Sequence[Check]) -> None:
    for check in checks:
        mark = "[green]✓[/]" if check.ok else "[bold red]✗[/]"
        fix = f"\n    [yellow]fix:[/] {_text(check.fix)}" if not check.ok and check.fix else ""
        console.print(f"{mark} {check.name}: {_text(check.detail)}{fix}", highlight=False)
    failed = sum(not c.ok for c in checks)
    console.print(
        "[green]ready for a scheduled run[/]"
        if not failed
        else f"[bold red]{failed} of {len(checks)} checks failed[/]: a scheduled run would not work"
    )


def status_json(status: Status) -> dict[str, Any]:
    """`status --json`: one object a monitoring system can read."""
    return {
        "ledger": status.ledger,
        "ledger_exists": status.exists,
        "conversions": status.counts,
        "destination_rejections": status.destination_rejections,
        "rejected_reasons": status.reasons,
        "watermarks": {source: mark.isoformat() for source, mark in status.watermarks.items()},
        "requests": status.requests,
        "requests_note": status.requests_note,
        "runs": [run.as_dict() for run in status.runs],
        "google": status.google,
        "google_note": status.google_note,
    }


def render_status(console: Console, status: Status) -> None:
    if not status.exists:
        console.print(
            f"[yellow]there is no ledger at {_text(status.ledger)}[/]: nothing has run with these "
            "settings yet (the wrong folder? pass --project-dir or --config)",
            highlight=False,
        )
    elif not status.runs:
        console.print(f"the ledger at {_text(status.ledger)} has no runs yet")
    else:
        console.print(f"Ledger: {_text(status.ledger)}", highlight=False)
        console.print(fitted(console, runs_table(status.runs), "read", "rejected", "exit"))
        counts = sorted(status.counts.items())
        console.print("Conversions by status: " + ", ".join(f"{k} {v:,}" for k, v in counts))
        if status.destination_rejections:
            codes = status.destination_rejections.items()
            console.print("Rejected by Google: " + ", ".join(f"{k} {v:,}" for k, v in codes))
        render_requests(console, status.requests, status.requests_note)
        for source, mark in sorted(status.watermarks.items()):
            console.print(
                f"Watermark {_text(source)}: {mark:%Y-%m-%d %H:%M} UTC (the next run reads "
                f"changes since {status.next_since[source]:%Y-%m-%d %H:%M})",
                highlight=False,
            )
        if status.reasons:
            console.print(f"Most common rows left out in run #{status.runs[0].id}:")
            for reason, count in status.reasons.items():
                console.print(f"  {count:>6,}  {reason}", highlight=False)
    if status.google and (status.google.get("clients") or status.google.get("actions")):
        table = diagnostics_table(status.google)
        console.print(fitted(console, table, "last upload", "successful", "events"))
    elif status.google_note:
        console.print(f"[dim]{_text(status.google_note)}[/]")


def render_requests(console: Console, summary: dict[str, Any], note: str | None) -> None:
    """Asynchronous uploads (Data Manager): what is still waiting for Google's answer."""
    by_status = summary.get("requests") or {}
    if not by_status:
        return
    waiting = by_status.get(RequestState.SUBMITTED)
    if waiting:
        console.print(
            f"[yellow]submitted, not yet confirmed:[/] {waiting['events']:,} conversions in "
            f"{waiting['requests']:,} requests (oldest submitted {summary['oldest_open']})",
            highlight=False,
        )
    done = ", ".join(
        f"{state} {info['requests']:,} ({info['events']:,} conversions)"
        for state, info in sorted(by_status.items())
        if state != RequestState.SUBMITTED
    )
    if done:
        console.print(f"Requests confirmed by Google: {done}", highlight=False)
    reasons = summary.get("failure_reasons") or {}
    if reasons:
        listed = ", ".join(f"{reason} {count:,}" for reason, count in reasons.items())
        console.print(f"Failures Google counted (not per row): {listed}", highlight=False)
    if note:
        console.print(f"[dim]{_text(note)}[/]")


def advice_table(advice: Advice) -> Table:
    """Per stage: volume, speed, how often it closes, and what it is worth on that evidence."""
    table = Table(
        title=f"Funnel: the {advice.cohort_leads:,} leads first seen in the last "
        f"{advice.window_days} days, followed until today (rates over {advice.history_days} "
        "days)",
        title_justify="left",
    )
    columns = {  # header: may wrap
        "stage": True,
        "reached": False,
        f"in {advice.window_days} d": False,
        "median lag": False,
        "p90 lag": False,
        "close rate": False,
        "90% interval": False,
        "configured": True,
        f"suggested ({advice.currency})": True,
        "incremental": False,
    }
    for column, wraps in columns.items():
        left = column in ("stage", "configured")
        table.add_column(column, justify="left" if left else "right", no_wrap=not wraps)
    for stage in advice.stages:
        known = stage.rate is not None
        table.add_row(
            _text(stage.name),
            f"{stage.reached:,}",
            f"{stage.conversions:,}",
            _days(stage.median_lag_days),
            _days(stage.p90_lag_days),
            f"{stage.rate:.0%} of {stage.leads:,}" if known else "—",
            f"{stage.rate_low:.0%} to {stage.rate_high:.0%}" if known else "—",
            _text(stage.configured),
            _money(stage.suggested) if stage.suggested is not None else f"[dim]{stage.note}[/]",
            "—" if stage.suggested_incremental is None else _money(stage.suggested_incremental),
        )
    return table


def render_advice(console: Console, advice: Advice) -> None:
    table = advice_table(advice)
    drop = ("p90 lag", "90% interval", f"in {advice.window_days} d", "configured", "incremental")
    console.print(fitted(console, table, *drop))
    match = "—" if advice.match_rate is None else f"{advice.match_rate:.0%}"
    console.print(
        f"{advice.leads:,} leads; {match} carry a click id or email/phone; average value of "
        f"the last stage: "
        + (
            "—"
            if advice.average_last_value is None
            else f"{_money(advice.average_last_value)} {advice.currency}"
        ),
        highlight=False,
    )
    if advice.credited_per_won_deal is not None and advice.average_last_value:
        console.print(
            f"Google credits a won deal {_money(advice.credited_per_won_deal)} and a lead "
            f"{_money(advice.credited_per_lead or 0)} {advice.currency} when every stage "
            f"counts in one goal; a deal brings {_money(advice.average_last_value)}, a lead "
            f"{_money(advice.revenue_per_lead or 0)}",
            highlight=False,
        )
    console.print(
        "[dim]reached = leads of the cohort that got at least that far (the youngest may "
        "still progress); in N d = conversions in the window; close rate = share of the "
        "stage's leads that reached the last stage (90% interval beside it); suggested = "
        "close rate x the last stage's average value; incremental = what the stage adds over "
        "the one before, so that the stages of one goal add up to the deal[/]"
    )
    for warning in advice.warnings:
        console.print(f"[yellow]advice:[/] {warning}", highlight=False)
    if not advice.warnings:
        console.print("[green]advice:[/] nothing to warn about")


def _days(value: float | None) -> str:
    return "—" if value is None else f"{value:g} d"
