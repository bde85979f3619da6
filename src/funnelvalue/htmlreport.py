"""One self-contained HTML file: the funnel, the value sent, the lags, the uploads, the advice.

Charts are drawn by matplotlib as SVG and inlined, styles are inline too: the file opens with
no network and can be mailed or archived as it is. Each chart sits in a
``<figure data-chart="...">`` so tests (and curious readers) can find it.
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

from funnelvalue.advice import Advice
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
th:first-child,td:first-child{text-align:left}
figure{margin:1rem 0}figcaption{color:#5b6875;font-size:.9rem}
.warn{background:#fff6e5;border-left:4px solid #e08a1e;padding:.5rem .8rem;margin:.4rem 0}
.ok{background:#eaf6ee;border-left:4px solid #3a9d5d;padding:.5rem .8rem}
svg{max-width:100%;height:auto}
"""


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
) -> str:
    """The whole page as a string."""
    names = [s.name for s in mapping.stages]
    sections = [
        f"<h1>funnelvalue report</h1><p class='meta'>{_e(source)} · generated "
        f"{now:%Y-%m-%d %H:%M} UTC · window {advice.window_days} days · currency "
        f"{_e(advice.currency)}</p>",
        "<h2>Advice</h2>" + _advice_html(advice),
        "<h2>Funnel</h2>"
        + _figure("funnel", lambda: _funnel_chart(advice), _funnel_caption(advice))
        + _stage_table(advice),
        "<h2>Value sent per stage per day</h2>"
        + _figure(
            "value-per-day",
            lambda: _value_chart(sent, names, now),
            "Value of the conversions that went out, by the day they were reached (last 60 days).",
        ),
        "<h2>How long each stage takes</h2>"
        + _figure(
            "lag",
            lambda: _lag_chart(rows, names),
            "Days from the lead (or its first stage) to each stage, over the history.",
        ),
        "<h2>Uploads</h2>"
        + _figure(
            "outcomes",
            lambda: _outcome_chart(runs),
            "Per run: conversions sent, rejected before sending, refused by Google, pending.",
        )
        + _reasons_html(runs, rejections, reasons),
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
        "stage (followed until today)"
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


def _value_chart(sent: pd.DataFrame, names: list[str], now: pd.Timestamp) -> Figure:
    figure, axes = _canvas()
    done = sent[sent["status"].isin(DONE)]
    recent = done[done["reached_at"] >= now - pd.Timedelta(days=60)]
    if recent.empty:
        axes.text(
            0.5, 0.5, "nothing sent in the last 60 days", ha="center", transform=axes.transAxes
        )
        axes.set_axis_off()
        return figure
    daily = (
        recent.assign(day=recent["reached_at"].dt.tz_convert(None).dt.floor("D"))
        .pivot_table(index="day", columns="stage", values="value", aggfunc="sum", fill_value=0)
        .reindex(columns=[n for n in names if n in set(recent["stage"])])
    )
    bottom = pd.Series(0.0, index=daily.index)
    for i, stage in enumerate(daily.columns):
        axes.bar(daily.index, daily[stage], bottom=bottom, label=stage, color=COLOURS[i % 6])
        bottom += daily[stage]
    axes.legend(frameon=False, ncols=min(len(daily.columns), 4))
    axes.set_ylabel("value sent")
    figure.autofmt_xdate()
    return figure


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
    axes.set_xlabel("days after the lead")
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
    axes.legend(frameon=False, ncols=4, loc="upper center", bbox_to_anchor=(0.5, -0.18))
    return figure


# -- tables and text ----------------------------------------------------------------------


def _advice_html(advice: Advice) -> str:
    if not advice.warnings:
        return "<p class='ok'>Nothing to warn about.</p>"
    return "".join(f"<p class='warn'>{_e(w)}</p>" for w in advice.warnings)


def _stage_table(advice: Advice) -> str:
    head = (
        "<table><tr><th>stage</th><th>reached</th><th>median lag</th><th>p90 lag</th>"
        "<th>→ last stage</th><th>configured</th><th>suggested</th></tr>"
    )
    body = "".join(
        "<tr>"
        f"<td>{_e(s.name)}</td><td>{s.reached:,}</td><td>{_days(s.median_lag_days)}</td>"
        f"<td>{_days(s.p90_lag_days)}</td>"
        f"<td>{'—' if s.rate is None else f'{s.rate:.0%} of {s.leads:,}'}</td>"
        f"<td>{_e(s.configured)}</td>"
        f"<td>{'—' if s.suggested is None else f'{s.suggested:,.2f}'}</td></tr>"
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


def _days(value: float | None) -> str:
    return "—" if value is None else f"{value:g} d"


def _e(text: str) -> str:
    return html.escape(str(text), quote=True)
