"""One self-contained HTML file a marketer opens first: what was sent in the window, whether
the values add up to the revenue, the advice, the funnel by cohort, the lags, the uploads and
the CRM rows to fix.

Charts are drawn by matplotlib as SVG and inlined, styles are inline too: the file opens with
no network and can be mailed or archived as it is. Each chart sits in a
``<figure data-chart="...">`` and says the window it covers; every axis names its unit.
"""

from __future__ import annotations

import html
import io
from collections.abc import Callable
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: a cron job, a container

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure

from funnelvalue.advice import OVER_COUNT, Advice
from funnelvalue.ledger import RunSummary
from funnelvalue.mapping import Mapping
from funnelvalue.vocabulary import DONE, RunStatus

COLOURS = ["#2f6db3", "#e08a1e", "#3a9d5d", "#b8473d", "#7a5bb5", "#6b7b8c"]
STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;
max-width:1100px;color:#1d2630;padding:0 1rem}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.2rem;margin-top:2.2rem}
.meta{color:#5b6875}table{border-collapse:collapse;margin:.6rem 0;font-size:.92rem}
th,td{border-bottom:1px solid #dde3e8;padding:.35rem .7rem;text-align:right}
th:first-child,td:first-child,th.text,figure{margin:1rem 0}figcaption{color:#5b6875;font-size:.9rem}
.warn{background:#fff6e5;border-left:4px solid #e08a1e;padding:.5rem .8rem;margin:.4rem 0}
.ok{background:#eaf6ee;border-left:4px solid #3a9d5d;padding:.5rem .8rem}
svg{max-width:100%;height:auto}
.headline{display:flex;gap:2.5rem;margin:.6rem 0}.headline div{font-size:.9rem;color:#5b6875}
.headline b{display:block;font-size:1.9rem;color:#1d2630}
td.text{text-align:left}
"""
SHOWN_INVALID = 500  # rows to fix listed in the report; the rest are counted


def render(
    *,
    mapping: Mapping,
    advice: Advice,
    rows: pd.DataFrame,
    sent: pd.DataFrame,
    runs: list[RunSummary],
    rejections: dict[str, int],
    reasons: dict[str, int],
    source: str,
    now: pd.Timestamp,
    invalid: pd.DataFrame | None = None,
) -> str:
    """The whole page as a string."""
    names = [s.name for s in mapping.stages]
    days = advice.window_days
    start = now - pd.Timedelta(days=days)
    window = f"{start:%Y-%m-%d} to {now:%Y-%m-%d}"
    recent = _sent_between(sent, start, now)
    currency = advice.currency
    sections = [
        f"<h1>funnelvalue report</h1><p class='meta'>{_e(source)} · generated "
        f"{now:%Y-%m-%d %H:%M} UTC · window {days} days ({window}) · currency "
        f"{_e(currency)}</p>",
        f"<h2>Sent to Google in the last {days} days</h2>"
        + _headline_html(recent, names, currency)
        + _to_fix_note(invalid),
        "<h2>Does the value add up?</h2>"
        + _figure(
            "credited-vs-revenue",
            lambda: _credited_chart(advice),
            _credited_caption(advice),
        ),
        "<h2>Advice</h2>" + _advice_html(advice),
        "<h2>Funnel</h2>"
        + _figure("funnel", lambda: _funnel_chart(advice), _funnel_caption(advice))
        + _stage_table(advice),
        "<h2>Value sent per day</h2>"
        + _figure(
            "value-per-day",
            lambda: _value_chart(recent, names, currency, start, now),
            f"Value of the conversions that went out to Google, per stage, by the day they "
            f"were sent ({window}, UTC days); the bars add up to the totals above.",
        ),
        "<h2>How long each stage takes</h2>"
        + _figure(
            "lag",
            lambda: _lag_chart(rows, names),
            "Days from the lead (or its first stage) to each stage, for the leads of the "
            f"last {advice.history_days} days.",
        ),
        "<h2>Uploads</h2>"
        + _figure(
            "outcomes",
            lambda: _outcome_chart(runs),
            ("The last run" if len(runs) == 1 else f"The last {len(runs)} runs")
            + ": conversions sent, rejected before sending, refused by Google, pending.",
        )
        + _reasons_html(runs, rejections, reasons),
        _invalid_html(invalid if invalid is not None else pd.DataFrame()),
    ]
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width,initial-scale=1'>"
        f"<title>funnelvalue report</title><style>{STYLE}</style></head><body>"
        + "".join(sections)
        + "</body></html>"
    )


# -- charts -------------------------------------------------------------------------------


def _figure(name: str, draw: Callable[[], Figure], caption: str) -> str:
    figure = draw()
    buffer = io.StringIO()
    # Labels as SVG text, not outlines: selectable, read by screen readers, found by tests.
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        figure.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(figure)
    svg = buffer.getvalue()
    svg = svg[svg.index("<svg") :]  # drop the XML prolog and doctype: inline SVG
    return f"<figure data-chart='{name}'>{svg}<figcaption>{_e(caption)}</figcaption></figure>"


def _canvas(height: float = 3.2) -> tuple[Figure, Any]:
    figure, axes = plt.subplots(figsize=(9, height))
    axes.spines[["top", "right"]].set_visible(False)
    return figure, axes


def _funnel_chart(advice: Advice) -> Figure:
    figure, axes = _canvas(0.6 + 0.55 * len(advice.stages))
    names = [s.name for s in advice.stages][::-1]
    counts = [s.reached for s in advice.stages][::-1]
    bars = axes.barh(names, counts, color=COLOURS[0])
    top = max(counts) or 1
    for bar, count in zip(bars, counts, strict=True):
        axes.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f"  {count:,}", va="center")
    axes.set_xlabel(
        f"leads first seen in the last {advice.window_days} days that reached at least the "
        "stage (followed until today), count"
    )
    axes.set_xlim(0, top * 1.35)
    return figure


def _funnel_caption(advice: Advice) -> str:
    rates = ", ".join(
        f"{s.name} → last stage {s.rate:.0%}" for s in advice.stages[:-1] if s.rate is not None
    )
    cohort = (
        f"The {advice.cohort_leads:,} leads first seen in the last {advice.window_days} days, "
        "by the deepest stage they reached until today (the youngest may still progress)."
    )
    return f"{cohort} {rates}." if rates else cohort


def _sent_between(sent: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    """The conversions that went out to Google (or into an import file) in [start, end]."""
    done = sent[sent["status"].isin(DONE) & sent["sent_at"].notna()]
    return done[(done["sent_at"] >= start) & (done["sent_at"] <= end)]


def _value_chart(
    recent: pd.DataFrame,
    names: list[str],
    currency: str,
    start: pd.Timestamp,
    end: pd.Timestamp,
) -> Figure:
    figure, axes = _canvas()
    mine = recent[recent["currency"].fillna(currency) == currency]
    if mine.empty:
        axes.text(
            0.5,
            0.5,
            f"nothing sent in {currency} from {start:%Y-%m-%d} to {end:%Y-%m-%d}",
            ha="center",
            transform=axes.transAxes,
        )
        axes.set_axis_off()
        return figure
    daily = (
        mine.assign(day=mine["sent_at"].dt.tz_convert(None).dt.floor("D"))
        .pivot_table(index="day", columns="stage", values="value", aggfunc="sum", fill_value=0)
        .reindex(columns=[n for n in names if n in set(mine["stage"])])
    )
    bottom = pd.Series(0.0, index=daily.index)
    for i, stage in enumerate(daily.columns):
        axes.bar(daily.index, daily[stage], bottom=bottom, label=stage, color=COLOURS[i % 6])
        bottom += daily[stage]
    axes.legend(frameon=False, ncols=min(len(daily.columns), 4))
    axes.set_ylabel(f"value sent ({currency})")
    axes.set_xlabel("day sent (UTC)")
    axes.set_xlim(start.tz_convert(None).floor("D"), end.tz_convert(None).ceil("D"))
    figure.autofmt_xdate()
    return figure


def _credited_chart(advice: Advice) -> Figure:
    """What Google credits when every stage counts in one goal, beside what the CRM earns:
    per won deal and per lead."""
    figure, axes = _canvas(2.6)
    pairs = [
        ("per won deal", advice.credited_per_won_deal, advice.average_last_value),
        ("per lead", advice.credited_per_lead, advice.revenue_per_lead),
    ]
    shown = [
        (label, float(c), float(r)) for label, c, r in pairs if c is not None and r is not None
    ]
    if not shown:
        axes.text(
            0.5, 0.5, "not enough won deals to compare", ha="center", transform=axes.transAxes
        )
        axes.set_axis_off()
        return figure
    labels = [label for label, _, _ in shown][::-1]
    credited = [c for _, c, _ in shown][::-1]
    revenue = [r for _, _, r in shown][::-1]
    positions = list(range(len(labels)))
    height = 0.38
    up = [p + height / 2 for p in positions]
    down = [p - height / 2 for p in positions]
    axes.barh(up, credited, height, color=COLOURS[1], label="credited by Google (every stage adds)")
    axes.barh(down, revenue, height, color=COLOURS[2], label="revenue in the CRM")
    for y, value in [*zip(up, credited, strict=True), *zip(down, revenue, strict=True)]:
        axes.text(value, y, f"  {value:,.2f}", va="center")
    axes.set_yticks(positions, labels)
    axes.set_xlabel(f"value ({advice.currency})")
    axes.set_xlim(0, max(credited + revenue) * 1.3 or 1)
    axes.legend(frameon=False, loc="lower right")
    return figure


def _credited_caption(advice: Advice) -> str:
    credited, deal = advice.credited_per_won_deal, advice.average_last_value
    basis = (
        f"Leads of the last {advice.history_days} days; when every stage's conversion action "
        "counts in one bidding goal Google adds their values up."
    )
    if credited is None or not deal:
        return basis
    ratio = credited / deal
    if ratio > OVER_COUNT:
        verdict = (
            f"A won deal is credited {ratio:.2f}x its revenue: the mapping over-counts (see the "
            "advice for the two fixes)."
        )
    else:
        verdict = f"A won deal is credited {ratio:.2f}x its revenue: the values add up."
    return f"{basis} {verdict}"


def _lag_chart(rows: pd.DataFrame, names: list[str]) -> Figure:
    figure, axes = _canvas()
    lags = [rows.loc[rows["stage_position"] == i, "lag_days"].dropna() for i in range(len(names))]
    shown = [(name, lag) for name, lag in zip(names, lags, strict=True) if len(lag)]
    if not shown:
        axes.text(0.5, 0.5, "no stage data", ha="center", transform=axes.transAxes)
        axes.set_axis_off()
        return figure
    top = max(float(lag.quantile(0.98)) for _, lag in shown) or 1.0
    bins = [top * k / 30 for k in range(31)]
    for i, (name, lag) in enumerate(shown):
        axes.hist(lag.clip(upper=top), bins=bins, alpha=0.55, label=name, color=COLOURS[i % 6])
    axes.set_xlabel("days after the lead (98% of conversions shown; the rest in the last bin)")
    axes.set_ylabel("conversions")
    axes.legend(frameon=False)
    return figure


def _outcome_chart(runs: list[RunSummary]) -> Figure:
    figure, axes = _canvas()
    ordered = [r for r in reversed(runs) if r.summary]
    if not ordered:
        axes.text(0.5, 0.5, "no runs yet", ha="center", transform=axes.transAxes)
        axes.set_axis_off()
        return figure
    parts: dict[str, Callable[[dict[str, Any]], int]] = {
        "sent": lambda s: int(s.get("sent", 0)) + int(s.get("submitted", 0)),
        "rejected before sending": lambda s: int(s.get("rejected", 0)),
        "refused by Google": lambda s: int(s.get("rejected_by_destination", 0)),
        "pending": lambda s: int(s.get("pending", 0)),
    }
    labels = [f"#{r.id}\n{r.started_at:%m-%d}" for r in ordered]
    bottom = [0] * len(ordered)
    for i, (label, count) in enumerate(parts.items()):
        values = [count(r.summary) for r in ordered]
        axes.bar(labels, values, bottom=bottom, label=label, color=COLOURS[[2, 1, 3, 5][i]])
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    axes.set_ylabel("conversions")
    axes.set_xlabel("run (number, day started UTC)")
    axes.legend(frameon=False, ncols=4, loc="upper center", bbox_to_anchor=(0.5, -0.3))
    return figure


# -- tables and text ----------------------------------------------------------------------


def _headline_html(recent: pd.DataFrame, names: list[str], currency: str) -> str:
    """The totals first: conversions and value sent in the window, then per stage (and per
    currency when rows carried their own)."""
    if recent.empty:
        return "<p class='warn'>Nothing was sent in this window.</p>"
    rows = recent.assign(currency=recent["currency"].fillna(currency))
    mine = rows[rows["currency"] == currency]
    big = (
        f"<div class='headline'><div><b>{len(rows):,}</b>conversions sent</div>"
        f"<div><b>{mine['value'].sum():,.2f} {_e(currency)}</b>value sent</div>"
        f"<div><b>{rows['lead_id'].nunique():,}</b>leads</div></div>"
    )
    grouped = rows.groupby(["stage", "currency"], sort=False)["value"].agg(["size", "sum"])
    order = {name: i for i, name in enumerate(names)}
    keys = sorted(grouped.index, key=lambda k: (order.get(k[0], len(order)), k[1]))
    body = "".join(
        f"<tr><td>{_e(stage)}</td><td>{int(grouped.loc[(stage, cur), 'size']):,}</td>"
        f"<td>{float(grouped.loc[(stage, cur), 'sum']):,.2f}</td>"
        f"<td class='text'>{_e(cur)}</td></tr>"
        for stage, cur in keys
    )
    return (
        big
        + "<table data-table='sent-by-stage'><tr><th>stage</th><th>conversions</th>"
        + f"<th>value</th><th>currency</th></tr>{body}</table>"
    )


def _to_fix_note(invalid: pd.DataFrame | None) -> str:
    if invalid is None or invalid.empty:
        return ""
    return (
        f"<p class='warn'>{len(invalid):,} "
        + ("row of the CRM holds" if len(invalid) == 1 else "rows of the CRM hold")
        + " invalid data, not sent until fixed: <a href='#to-fix'>the rows to fix</a>, with "
        "their lead ids, are at the end.</p>"
    )


def _invalid_html(invalid: pd.DataFrame) -> str:
    """The CRM rows to fix, with the line (CSV) or position (API read) and the lead id."""
    if invalid.empty:
        return ""
    shown = invalid.head(SHOWN_INVALID)
    body = "".join(
        f"<tr><td>{_e(row.source_row)}</td><td class='text'>{_e(row.lead_id)}</td>"
        f"<td class='text'>{_e(row.crm_stage)}</td><td class='text'>{_e(row.reason)}</td></tr>"
        for row in shown.itertuples(index=False)
    )
    more = (
        f"<p class='meta'>First {SHOWN_INVALID:,} of {len(invalid):,}; `funnelvalue preview "
        "--limit 0` lists them all.</p>"
        if len(invalid) > SHOWN_INVALID
        else ""
    )
    return (
        f"<h2 id='to-fix'>Rows to fix in the CRM ({len(invalid):,})</h2><p class='meta'>"
        "Invalid data in today's read of the CRM: these rows are not sent until fixed; the "
        "next run picks "
        "them up.</p><table data-table='invalid'><tr><th>line</th><th class='text'>lead</th>"
        f"<th class='text'>CRM stage</th><th class='text'>reason</th></tr>{body}</table>{more}"
    )


def _advice_html(advice: Advice) -> str:
    if not advice.warnings:
        return "<p class='ok'>Nothing to warn about.</p>"
    return "".join(f"<p class='warn'>{_e(w)}</p>" for w in advice.warnings)


def _stage_table(advice: Advice) -> str:
    head = (
        "<table><tr><th>stage</th><th>reached</th><th>median lag</th><th>p90 lag</th>"
        f"<th>→ last stage</th><th>configured</th><th>suggested ({_e(advice.currency)})</th>"
        "<th>incremental</th></tr>"
    )
    body = "".join(
        "<tr>"
        f"<td>{_e(s.name)}</td><td>{s.reached:,}</td><td>{_days(s.median_lag_days)}</td>"
        f"<td>{_days(s.p90_lag_days)}</td>"
        f"<td>{'—' if s.rate is None else f'{s.rate:.0%} of {s.leads:,}'}</td>"
        f"<td>{_e(s.configured)}</td>"
        f"<td>{'—' if s.suggested is None else f'{s.suggested:,.2f}'}</td>"
        f"<td>{_amount(s.suggested_incremental)}</td></tr>"
        for s in advice.stages
    )
    return head + body + "</table>"


def _reasons_html(
    runs: list[RunSummary], rejections: dict[str, int], reasons: dict[str, int]
) -> str:
    parts = []
    if reasons:
        rows = "".join(f"<tr><td>{_e(k)}</td><td>{v:,}</td></tr>" for k, v in reasons.items())
        parts.append(
            "<h3>Rows rejected before sending (latest run), by reason</h3><table><tr>"
            f"<th>reason</th><th>rows</th></tr>{rows}</table>"
        )
    if rejections:
        rows = "".join(f"<tr><td>{_e(k)}</td><td>{v:,}</td></tr>" for k, v in rejections.items())
        parts.append(
            "<h3>Refused by Google, by reason</h3><table><tr><th>reason</th><th>conversions"
            f"</th></tr>{rows}</table>"
        )
    failed = [r for r in runs if r.status in (RunStatus.FAILED, RunStatus.INTERRUPTED)]
    if failed:
        rows = "".join(
            f"<tr><td>#{r.id} {r.started_at:%Y-%m-%d %H:%M}</td><td>{_e(r.status)}</td>"
            f"<td style='text-align:left'>{_e(r.message or '')}</td></tr>"
            for r in failed
        )
        parts.append(
            "<h3>Runs that stopped</h3><table><tr><th>run</th><th>status</th><th>why</th></tr>"
            f"{rows}</table>"
        )
    return "".join(parts)


def _amount(value: float | None) -> str:
    return "—" if value is None else f"{value:,.2f}"


def _days(value: float | None) -> str:
    return "—" if value is None else f"{value:g} d"


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)
