"""Write examples/crm_leads.csv: a realistic CRM export with stage history over ~60 days.

Built from the public Maven Analytics "CRM Sales Opportunities" pipeline (examples/
sales_pipeline.csv: real stages, real lags, real deal values), moved so it ends today, with
deterministic synthetic click ids and contact details, and a few deliberately bad rows so that
`make run` shows the reject path too. ``--if-stale`` rewrites the file only when its newest row
is over a week old, so the demo keeps working as time passes (Google refuses clicks > 90 days).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import random
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

HERE = Path(__file__).parent
PIPELINE = HERE / "sales_pipeline.csv"
TARGET = HERE / "crm_leads.csv"
HEADER = [
    "Deal ID",
    "Deal Stage",
    "Stage Changed",
    "Created",
    "GCLID",
    "GBRAID",
    "Email",
    "Phone",
    "Amount",
    "Currency",
    "Consent",
]
LEADS = 300
SPAN_DAYS = 60


def click_id(seed: str, prefix: str = "Cj0KCQiA") -> str:
    body = hashlib.sha256(seed.encode()).hexdigest()
    return prefix + body[:60].replace("a", "A").replace("e", "_").replace("c", "-")


def rows(today: date) -> list[list[str]]:
    rng = random.Random(20261123)
    with PIPELINE.open(newline="", encoding="utf-8") as handle:
        deals = rng.sample(list(csv.DictReader(handle)), LEADS)
    end = datetime(today.year, today.month, today.day)  # midnight: never "in the future"
    out: list[list[str]] = []
    for number, deal in enumerate(deals, start=1):
        lead_id = f"D-{10000 + number}"
        created = end - timedelta(days=rng.uniform(1, SPAN_DAYS), hours=rng.uniform(0, 8))
        kind = rng.random()
        gclid = click_id(lead_id) if kind < 0.78 else ""
        gbraid = click_id(lead_id, "0AAAAAD") if 0.78 <= kind < 0.83 else ""
        email = (
            f"{deal['account'].lower().replace(' ', '.')}.{number}@example.com"
            if kind >= 0.83 or rng.random() < 0.3
            else ""
        )
        phone = f"+49 151 {rng.randint(1000000, 9999999)}" if kind >= 0.9 else ""
        consent = "GRANTED" if rng.random() < 0.9 else "DENIED"
        base = [lead_id]
        ids = [gclid, gbraid, email, phone]

        def row(
            stage: str,
            when: datetime,
            amount: str = "",
            *,
            b: list[str] = base,
            i: list[str] = ids,
            c: datetime = created,
            s: str = consent,
        ) -> list[str]:
            return [
                *b,
                stage,
                when.strftime("%Y-%m-%d %H:%M:%S"),
                c.strftime("%Y-%m-%d %H:%M:%S"),
                i[0],
                i[1],
                i[2],
                i[3],
                amount,
                "",
                s,
            ]

        out.append(row("Prospecting", created))
        engaged = created + timedelta(days=rng.uniform(0.5, 6))
        if deal["deal_stage"] in ("Engaging", "Won", "Lost") and engaged < end:
            out.append(row("Engaging", engaged))
            lag = (
                (
                    datetime.strptime(deal["close_date"], "%d-%m-%y")
                    - datetime.strptime(deal["engage_date"], "%d-%m-%y")
                ).days
                if deal["close_date"] and deal["engage_date"]
                else 30
            )
            closed = engaged + timedelta(days=min(max(lag, 1), 40) * rng.uniform(0.3, 0.8))
            if deal["deal_stage"] in ("Won", "Lost") and closed < end:
                out.append(
                    row(
                        deal["deal_stage"],
                        closed,
                        deal["close_value"] if deal["deal_stage"] == "Won" else "",
                    )
                )
    recent = (end - timedelta(days=3)).strftime("%Y-%m-%d %H:%M:%S")
    out += [
        # Deliberately bad rows: each shows up in the rejects with its reason.
        ["D-90001", "Prospecting", recent, recent, "not-a-gclid!", "", "", "", "", "", ""],
        ["D-90002", "Negotiation", recent, recent, click_id("D-90002"), "", "", "", "", "", ""],
        ["D-90003", "Engaging", "", recent, click_id("D-90003"), "", "", "", "", "", ""],
        ["D-90004", "Won", recent, recent, click_id("D-90004"), "", "", "", "n/a", "", ""],
        ["D-90005", "Prospecting", recent, recent, "", "", "", "", "", "", ""],
    ]
    return out


def newest(path: Path) -> datetime | None:
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            times = [r["Stage Changed"] for r in csv.DictReader(handle) if r["Stage Changed"]]
    except (OSError, KeyError):
        return None
    return max(datetime.strptime(t, "%Y-%m-%d %H:%M:%S") for t in times) if times else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--if-stale",
        action="store_true",
        help="only rewrite when the newest row is more than 7 days old",
    )
    parser.add_argument("--today", type=date.fromisoformat, default=datetime.now(UTC).date())
    parser.add_argument(
        "--output",
        type=Path,
        default=TARGET,
        help="where to write (make run writes an untracked copy, never the committed file)",
    )
    args = parser.parse_args()
    target: Path = args.output
    last = newest(target)
    if args.if_stale and last is not None and last > datetime.now() - timedelta(days=7):
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER)
        writer.writerows(rows(args.today))
    print(f"wrote {target} ({LEADS} leads, dated up to {args.today})")


if __name__ == "__main__":
    main()
