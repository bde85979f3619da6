"""The `funnelvalue` command: parse options, call the library, render, exit with a clear code.

Exit codes (funnelvalue.errors): 0 all sent · 1 sent, some rows invalid (fix them in the CRM) ·
2 nothing sent: configuration, usage or unusable input · 3 try later (rows stay pending) ·
70 internal error (traceback in a crash log) · 75 another run holds the lock ·
130 / 143 stopped by SIGINT / SIGTERM after recording what Google acknowledged.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
import typer
from rich.console import Console
from rich.markup import escape

from funnelvalue import __version__, inspection, progress, report, stopping
from funnelvalue.doctor import doctor as run_doctor
from funnelvalue.errors import EXIT_INTERNAL, ConfigError, FunnelvalueError
from funnelvalue.mapping import STARTER, load_mapping, mapping_schema
from funnelvalue.pipeline import execute
from funnelvalue.redact import RedactingFilter, scrub
from funnelvalue.settings import Settings, load_settings

app = typer.Typer(
    help="Turn CRM funnel stages into valued Google Ads offline conversions.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)
SCHEMA_FILE = "mapping.schema.json"  # written beside the mapping by `mapping init`
mapping_app = typer.Typer(
    help="Check or create the stage-to-value mapping file.", no_args_is_help=True
)
app.add_typer(mapping_app, name="mapping")
ledger_app = typer.Typer(help="Look after the ledger.", no_args_is_help=True)
app.add_typer(ledger_app, name="ledger")

# Tables fit a terminal's own width, 80 columns in a cron mail, a pipe or a log file
# (COLUMNS wins). Sentences are never broken into lines: one message stays one line to grep.
_SIZED = "COLUMNS" in os.environ
out = Console(width=None if sys.stdout.isatty() or _SIZED else 80, soft_wrap=True)
err = Console(stderr=True, width=None if sys.stderr.isatty() or _SIZED else 80, soft_wrap=True)

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config", help="Settings file (default config/funnelvalue.yaml).", show_default=False
    ),
]
ProjectOpt = Annotated[
    Path | None,
    typer.Option(
        "--project-dir",
        help="The project folder: the settings' relative paths start here (default: the "
        "folder holding --config's config/ folder, else the current one; "
        "FUNNELVALUE_PROJECT_DIR).",
        show_default=False,
    ),
]
MappingOpt = Annotated[
    Path | None,
    typer.Option(
        "--mapping", "-m", help="Mapping file (default config/mapping.yaml).", show_default=False
    ),
]
InputOpt = Annotated[
    Path | None, typer.Option("--input", "-i", help="CRM export (CSV).", show_default=False)
]
SourceOpt = Annotated[
    str | None,
    typer.Option(
        "--source",
        "-s",
        help="Where leads come from: csv (default), hubspot, salesforce or sql.",
        show_default=False,
    ),
]


def _when(text: str) -> datetime:
    """An ISO 8601 day or time, as people write it: 2026-11-01, 2026-11-01T06:00,
    2026-11-01 06:00:00+01:00 or ...Z."""
    try:
        return datetime.fromisoformat(text.strip())
    except ValueError:
        raise typer.BadParameter(
            f"{text!r} is not a day or time: write 2026-11-01, 2026-11-01T06:00 or "
            "2026-11-01T06:00+01:00"
        ) from None


SinceOpt = Annotated[
    datetime | None,
    typer.Option(
        "--since",
        help="Read changes since this day or time instead of the watermark minus the overlap: "
        "2026-11-01, 2026-11-01T06:00 or 2026-11-01T06:00+01:00 (UTC unless an offset is "
        "given).",
        parser=_when,
        metavar="WHEN",
        show_default=False,
    ),
]
FullRefreshOpt = Annotated[
    bool,
    typer.Option(
        "--full-refresh",
        help="Read everything the source has, ignoring the watermark (the ledger still "
        "keeps what was sent from going out twice).",
    ),
]
DestinationOpt = Annotated[
    str | None,
    typer.Option(
        "--destination",
        "-d",
        help="Where to send: csv (Google Ads import file), google-ads (the Google Ads API) "
        "or data-manager (the Data Manager API).",
        show_default=False,
    ),
]
OutputOpt = Annotated[
    Path | None,
    typer.Option(
        "--output",
        "-o",
        help="Import file path; {run_id} and {date} are filled in.",
        show_default=False,
    ),
]
GoogleAdsConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--google-ads-config",
        help="google-ads.yaml for --destination google-ads (default config/google-ads.yaml).",
        show_default=False,
    ),
]
LedgerOpt = Annotated[
    str | None,
    typer.Option(
        "--ledger",
        help="Ledger database URL (default sqlite:///state/funnelvalue.db).",
        show_default=False,
    ),
]
JsonOpt = Annotated[
    bool,
    typer.Option("--json", help="Print the result as one JSON object on stdout, nothing else."),
]
LimitOpt = Annotated[int, typer.Option("--limit", help="Rows shown per table (0 = all).", min=0)]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging on stderr.")]


def _logging(settings: Settings | None, verbose: bool) -> None:
    """Warnings and errors on stderr; the run's log lines with -v (or a log_level setting,
    which scheduler/run.sh sets to INFO for its log file)."""
    configured = settings.log_level if settings else None
    level = "DEBUG" if verbose else (configured or "WARNING")
    # One line per API call from the google-ads library is noise in a daily cron mail.
    logging.getLogger("google.ads.googleads").setLevel("INFO" if verbose else "WARNING")
    logging.basicConfig(
        level=level,
        stream=sys.stderr,
        force=True,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for handler in logging.getLogger().handlers:  # a token or an address never reaches a log
        handler.addFilter(RedactingFilter())


@contextmanager
def _user_errors(as_json: bool = False) -> Iterator[None]:
    """Expected failures become one clear message and the documented exit code; anything
    else is a bug: one line, the traceback in a crash log, exit 70 (never 0 or 1). SIGINT and
    SIGTERM stop the job at a safe point (funnelvalue.stopping)."""
    try:
        with stopping.handling_signals():
            yield
    except FunnelvalueError as exc:
        if as_json:
            print(json.dumps({"error": str(exc), "exit_code": exc.exit_code}))
        err.print(f"[bold red]error:[/] {escape(str(exc))}", markup=True, highlight=False)
        raise typer.Exit(exc.exit_code) from None
    except typer.Exit:
        raise
    except Exception as exc:
        where = _crash_log(scrub(traceback.format_exc()))
        message = (
            f"internal error ({type(exc).__name__}): a bug in funnelvalue, not in your data or "
            f"settings. The traceback is in {where}; please report it. A run that had started "
            "is marked failed; the next run finishes the job without duplicates"
        )
        if as_json:
            print(json.dumps({"error": message, "exit_code": EXIT_INTERNAL, "crash_log": where}))
        err.print(f"[bold red]error:[/] {escape(message)}", markup=True, highlight=False)
        raise typer.Exit(EXIT_INTERNAL) from None


def _crash_log(text: str) -> str:
    """Write a traceback where the operator will look (FUNNELVALUE_LOG_DIR, else state/, else
    the temp folder); readable by the owner only, since a message may quote an input row."""
    stamp = pd.Timestamp.now(tz="UTC").strftime("%Y%m%dT%H%M%SZ")
    name = f"funnelvalue-crash-{stamp}-{os.getpid()}.log"
    for folder in (os.environ.get("FUNNELVALUE_LOG_DIR"), "state", tempfile.gettempdir()):
        if not folder:
            continue
        path = Path(folder) / name
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
        except OSError:
            continue
        return str(path)
    return "(no writable folder for the crash log; run with -v to see it)"


def _settings(
    config: Path | None, verbose: bool, project_dir: Path | None = None, **options: Any
) -> Settings:
    settings = load_settings(config, project_dir=project_dir, **options)
    _logging(settings, verbose)
    return settings


def _job(
    *,
    dry_run: bool,
    validate_only: bool = False,
    as_json: bool,
    limit: int,
    config: Path | None,
    verbose: bool,
    since: datetime | None = None,
    full_refresh: bool = False,
    **options: Any,
) -> None:
    """run and preview: the same job, with or without sending; rendered, then exit."""
    with _user_errors(as_json):
        settings = _settings(config, verbose, **options)
        loaded = load_mapping(settings.mapping)
        # A bar for a person at a terminal only: never in --json, a pipe or a cron mail.
        listener = progress.Bar(err) if err.is_terminal and not as_json else progress.Nobody()
        with progress.listening(listener):
            result = execute(
                settings,
                dry_run=dry_run,
                mapping=loaded,
                validate_only=validate_only,
                since=since,
                full_refresh=full_refresh,
            )
        if as_json:
            print(json.dumps(result.summary()))
        else:
            report.render_run(out, result, loaded, preview=dry_run, limit=limit or None)
    raise typer.Exit(result.exit_code)


@app.command()
def run(
    config: ConfigOpt = None,
    project_dir: ProjectOpt = None,
    mapping: MappingOpt = None,
    source: SourceOpt = None,
    input: InputOpt = None,
    since: SinceOpt = None,
    full_refresh: FullRefreshOpt = False,
    destination: DestinationOpt = None,
    output: OutputOpt = None,
    ledger: LedgerOpt = None,
    google_ads_config: GoogleAdsConfigOpt = None,
    as_json: JsonOpt = False,
    limit: LimitOpt = 20,
    verbose: VerboseOpt = False,
) -> None:
    """The daily job: read the CRM (or its export), map stages to values, send what is new,
    record it. API sources read what changed since the last run, minus an overlap.

    Example: funnelvalue run --input export.csv --mapping config/mapping.yaml
    """
    _job(
        project_dir=project_dir,
        dry_run=False,
        as_json=as_json,
        limit=limit,
        config=config,
        verbose=verbose,
        since=since,
        full_refresh=full_refresh,
        mapping=mapping,
        source=source,
        input=input,
        destination=destination,
        output=output,
        ledger=ledger,
        google_ads_config=google_ads_config,
    )


@app.command()
def preview(
    config: ConfigOpt = None,
    project_dir: ProjectOpt = None,
    mapping: MappingOpt = None,
    source: SourceOpt = None,
    input: InputOpt = None,
    since: SinceOpt = None,
    full_refresh: FullRefreshOpt = False,
    ledger: LedgerOpt = None,
    destination: DestinationOpt = None,
    output: OutputOpt = None,
    google_ads_config: GoogleAdsConfigOpt = None,
    validate_only: Annotated[
        bool,
        typer.Option(
            "--validate-only",
            help="Ask Google to check every row (validate_only=True); nothing is recorded.",
        ),
    ] = False,
    as_json: JsonOpt = False,
    limit: LimitOpt = 50,
    verbose: VerboseOpt = False,
) -> None:
    """Dry run: what would be sent, with values and ledger state, and every rejected row.

    Writes nothing: not the ledger, not the import file. Takes every option `run` takes, so
    a cron line with `run` changed to `preview` shows what that run would do.
    Example: funnelvalue preview --input export.csv --limit 0
    """
    _job(
        project_dir=project_dir,
        dry_run=True,
        validate_only=validate_only,
        as_json=as_json,
        limit=limit,
        config=config,
        verbose=verbose,
        since=since,
        full_refresh=full_refresh,
        mapping=mapping,
        source=source,
        input=input,
        ledger=ledger,
        destination=destination,
        output=output,
        google_ads_config=google_ads_config,
    )


@mapping_app.command("check")
def mapping_check(
    config: ConfigOpt = None,
    project_dir: ProjectOpt = None,
    mapping: MappingOpt = None,
    remote: Annotated[
        bool,
        typer.Option(
            "--remote", help="Also check the conversion actions in Google Ads (one query)."
        ),
    ] = False,
    google_ads_config: GoogleAdsConfigOpt = None,
    as_json: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Validate the mapping file and list every problem at once, with its line.

    Example: funnelvalue mapping check --mapping config/mapping.yaml --remote
    """
    with _user_errors(as_json):
        settings = _settings(
            config,
            verbose,
            project_dir,
            mapping=mapping,
            google_ads_config=google_ads_config,
        )
        loaded = load_mapping(settings.mapping)
        actions = inspection.check_remote(settings, loaded) if remote else None
    if as_json:
        print(
            json.dumps({"mapping": str(settings.mapping), **report.mapping_json(loaded, actions)})
        )
        return
    if actions is not None:
        out.print(report.fitted(out, report.actions_table(actions), "type"))
    out.print(report.fitted(out, report.mapping_table(loaded), "#", "CRM values"))
    for advice in report.mapping_advice(loaded):
        out.print(f"[yellow]advice:[/] {advice}")
    out.print(
        f"[green]✓[/] {settings.mapping} is valid: {len(loaded.stages)} stages, "
        f"currency {loaded.currency}, timezone {loaded.timezone}"
    )


@mapping_app.command("init")
def mapping_init(
    path: Annotated[Path, typer.Argument(help="Where to write it.")] = Path("config/mapping.yaml"),
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Write a commented starter mapping file to edit.

    Example: funnelvalue mapping init config/mapping.yaml
    """
    schema = path.parent / SCHEMA_FILE
    with _user_errors(as_json):
        if path.exists() and not force:
            raise ConfigError(f"{path} exists; pass --force to overwrite it")
        # Editors with the YAML language server (VS Code's YAML extension, ...) read this
        # line and complete and check the file while it is typed.
        line = f"# yaml-language-server: $schema=./{SCHEMA_FILE}\n"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            schema.write_text(json.dumps(mapping_schema(), indent=2) + "\n", encoding="utf-8")
            path.write_text(line + STARTER, encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot write {exc.filename or path}: {exc.strerror}") from None
    if as_json:
        print(json.dumps({"mapping": str(path), "schema": str(schema)}))
        return
    out.print(
        f"wrote {path} (and {schema}, for editors); edit it, then run: "
        f"funnelvalue mapping check --mapping {path}"
    )


@mapping_app.command("schema")
def mapping_schema_command() -> None:
    """Print the mapping file's JSON Schema (for editors and CI checks).

    Example: funnelvalue mapping schema > config/mapping.schema.json
    """
    print(json.dumps(mapping_schema(), indent=2))


@app.command()
def status(
    config: ConfigOpt = None,
    project_dir: ProjectOpt = None,
    ledger: LedgerOpt = None,
    mapping: MappingOpt = None,
    google_ads_config: GoogleAdsConfigOpt = None,
    runs: Annotated[int, typer.Option("--runs", help="How many runs to list.", min=1)] = 10,
    google: Annotated[
        bool,
        typer.Option(
            "--google/--no-google",
            help="Also show Google's upload diagnostics (when credentials are configured).",
        ),
    ] = True,
    as_json: JsonOpt = False,
) -> None:
    """The ledger at a glance: last runs, conversions per status, rejections, Google's view.

    Example: funnelvalue status --runs 5
    """
    with _user_errors(as_json):
        settings = _settings(
            config,
            False,
            project_dir,
            ledger=ledger,
            mapping=mapping,
            google_ads_config=google_ads_config,
        )
        found = inspection.status(settings, runs=runs, google=google)
    if as_json:
        print(json.dumps(report.status_json(found)))
    else:
        report.render_status(out, found)


@ledger_app.command("prune")
def ledger_prune(
    older_than: Annotated[
        int,
        typer.Option(
            "--older-than",
            help="Days (more than 90): finished conversions that happened before are "
            "forgotten; Google takes none that old, so none can be sent twice.",
        ),
    ],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count what would go; delete nothing.")
    ] = False,
    config: ConfigOpt = None,
    project_dir: ProjectOpt = None,
    ledger: LedgerOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Forget finished conversions too old to matter, and old runs' rejected-row reports.

    Rows not finished (pending, held, retry, submitted) and the runs are always kept.

    Example: funnelvalue ledger prune --older-than 180 --dry-run
    """
    with _user_errors(as_json):
        settings = _settings(config, False, project_dir, ledger=ledger)
        pruned = inspection.prune_ledger(settings, older_than, dry_run=dry_run)
    data = {
        "cutoff": pruned.cutoff.isoformat(),
        "conversions": pruned.conversions,
        "rejected_rows": pruned.rejected_rows,
        "dry_run": pruned.dry_run,
    }
    if as_json:
        print(json.dumps(data))
        return
    verb = "would forget" if dry_run else "forgot"
    out.print(
        f"{verb} {pruned.conversions:,} finished conversions from before "
        f"{pruned.cutoff:%Y-%m-%d} and {pruned.rejected_rows:,} rejected-row reports of runs "
        "that old",
        highlight=False,
    )


@app.command()
def doctor(
    config: ConfigOpt = None,
    project_dir: ProjectOpt = None,
    mapping: MappingOpt = None,
    source: SourceOpt = None,
    input: InputOpt = None,
    destination: DestinationOpt = None,
    ledger: LedgerOpt = None,
    google_ads_config: GoogleAdsConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Check everything a scheduled run needs, one line per check with the fix: settings,
    mapping, ledger (reachable, writable, not locked), output folder, source, destination
    credentials and conversion actions. Sends nothing. Exit 0 when all pass, else 2.

    Example: funnelvalue doctor --project-dir /srv/funnelvalue
    """
    with _user_errors(as_json):
        _logging(None, False)
        checks = run_doctor(
            config,
            project_dir,
            mapping=mapping,
            source=source,
            input=input,
            destination=destination,
            ledger=ledger,
            google_ads_config=google_ads_config,
        )
    healthy = all(check.ok for check in checks)
    if as_json:
        print(json.dumps({"healthy": healthy, "checks": [vars(c) for c in checks]}))
    else:
        report.render_doctor(out, checks)
    raise typer.Exit(0 if healthy else 2)


@app.command("export")
def export(
    since: Annotated[
        datetime,
        typer.Option(
            "--since",
            help="Write the conversions written to import files since this day or time: "
            "2026-11-01 or 2026-11-01T06:00 (UTC unless an offset is given).",
            parser=_when,
            metavar="WHEN",
        ),
    ],
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Where to write (default out/google_ads_conversions-since-DATE.csv).",
            show_default=False,
        ),
    ] = None,
    config: ConfigOpt = None,
    project_dir: ProjectOpt = None,
    mapping: MappingOpt = None,
    ledger: LedgerOpt = None,
    as_json: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Write an import file again from the ledger: every conversion written since a day, with
    its Order ID (importing it twice is harmless). Sends nothing, records nothing.

    Example: funnelvalue export --since 2026-11-01 --output out/november.csv
    """
    with _user_errors(as_json):
        settings = _settings(config, verbose, project_dir, mapping=mapping, ledger=ledger)
        loaded = load_mapping(settings.mapping)
        given = pd.Timestamp(since)
        start = given.tz_localize("UTC") if given.tzinfo is None else given.tz_convert("UTC")
        path = output or Path(f"out/google_ads_conversions-since-{start:%Y-%m-%d}.csv")
        rows = inspection.export_written(settings, loaded, start, path)
    if as_json:
        print(json.dumps({"output": str(path), "conversions": rows, "since": start.isoformat()}))
        return
    out.print(f"wrote {escape(str(path))}: {rows:,} conversions written since {start:%Y-%m-%d}")


WindowOpt = Annotated[
    int, typer.Option("--window-days", min=1, help="Counts and lags over this many days.")
]
HistoryOpt = Annotated[
    int,
    typer.Option(
        "--history-days", min=7, help="Close rates and average values over this many days."
    ),
]


@app.command()
def advise(
    config: ConfigOpt = None,
    project_dir: ProjectOpt = None,
    mapping: MappingOpt = None,
    source: SourceOpt = None,
    input: InputOpt = None,
    ledger: LedgerOpt = None,
    window_days: WindowOpt = 30,
    history_days: HistoryOpt = 365,
    write_mapping: Annotated[
        Path | None,
        typer.Option(
            "--write-mapping",
            help="Write a copy of the mapping file with the suggested values.",
            show_default=False,
        ),
    ] = None,
    as_json: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """What to bid on: per stage volume, lag, close rate and a suggested value, with the
    full-funnel rules of thumb as warnings. Reads the CRM and the ledger; sends nothing.

    Example: funnelvalue advise --input export.csv --write-mapping config/mapping.suggested.yaml
    """
    with _user_errors(as_json):
        settings = _settings(
            config, verbose, project_dir, mapping=mapping, source=source, input=input, ledger=ledger
        )
        found, changes = inspection.advise(
            settings,
            load_mapping(settings.mapping),
            window_days=window_days,
            history_days=history_days,
            write_to=write_mapping,
        )
    if as_json:
        print(json.dumps({**found.as_dict(), "written": changes}))
        return
    report.render_advice(out, found)
    if write_mapping is not None:
        listed = "; ".join(changes or []) or "no value changed"
        out.print(f"wrote {write_mapping} ({listed}); check it with `funnelvalue mapping check`")


@app.command("report")
def html_report(
    html: Annotated[
        Path, typer.Option("--html", help="Where to write the report (one HTML file).")
    ],
    config: ConfigOpt = None,
    project_dir: ProjectOpt = None,
    mapping: MappingOpt = None,
    source: SourceOpt = None,
    input: InputOpt = None,
    ledger: LedgerOpt = None,
    window_days: WindowOpt = 30,
    history_days: HistoryOpt = 365,
    as_json: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """A self-contained HTML report: what was sent, the funnel, the credited-vs-revenue
    check, lags, uploads, the rows to fix, advice.

    Example: funnelvalue report --html out/report.html
    """
    with _user_errors(as_json):
        settings = _settings(
            config, verbose, project_dir, mapping=mapping, source=source, input=input, ledger=ledger
        )
        size = inspection.write_report(
            settings,
            load_mapping(settings.mapping),
            html,
            window_days=window_days,
            history_days=history_days,
        )
    if as_json:
        print(json.dumps({"html": str(html), "bytes": size}))
        return
    out.print(f"wrote {escape(str(html))} ({size / 1024:,.0f} KB; opens without a network)")


@app.callback(invoke_without_command=True)
def _version(
    version: Annotated[bool, typer.Option("--version", help="Print the version.")] = False,
) -> None:
    if version:
        out.print(__version__)
        raise typer.Exit()


def main() -> None:
    app()
