"""Google Ads API destination: UploadClickConversions with the official `google-ads` client.

Batches of at most 2,000, ``partial_failure=True``, a ``job_id`` per run, a timeout on every
call; every row gets its own outcome from Google's per-row errors (located by index, never
"the first error for all"). Transient failures are retried with exponential backoff and jitter;
configuration errors and the daily quota stop the run with the unsent rows left pending.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from functools import cache
from importlib import import_module
from pathlib import Path
from typing import Any

import pandas as pd

from funnelvalue.destinations.base import outcomes
from funnelvalue.destinations.sending import (
    CALL_TIMEOUT,
    TRANSIENT_GRPC,
    batches,
    call_rpc,
    grpc_code,
    send_in_batches,
)
from funnelvalue.errors import ConfigError, DestinationError
from funnelvalue.formatting import format_conversion_time
from funnelvalue.vocabulary import ClickIdKind, Outcome, Restatement

log = logging.getLogger(__name__)

API_VERSION = "v26"  # the one place to change before a version's sunset
RETRY_AFTER = pd.Timedelta(hours=6)
# Adjustments are accepted from right after the upload (since 9 September 2024; the 24-hour
# wait and its TOO_RECENT_* adjustment errors are gone) up to 54 days after the conversion.
RESTATE_MAX_AGE = pd.Timedelta(days=54)

DUPLICATE = {"CLICK_CONVERSION_ALREADY_EXISTS", "ORDER_ID_ALREADY_IN_USE"}
TOO_RECENT = {"TOO_RECENT_EVENT", "TOO_RECENT_CONVERSION_ACTION", "TOO_RECENT_CONVERSION"}
# Per-row errors that are about the account, not the row: the row is held (kept to send
# again), the rest of its batch stands, and later batches hold back the rows Google would
# refuse the same way (``_Held``) instead of sending them to be refused.
USER_DATA_REFUSALS = {
    "CUSTOMER_NOT_ACCEPTED_CUSTOMER_DATA_TERMS": "the Google Ads account has not accepted the "
    "customer data terms, so it takes no e-mail/phone conversions: accept them in Google Ads "
    "(Goals → Conversions → Settings → Customer data terms)",
    "CUSTOMER_NOT_ENABLED_ENHANCED_CONVERSIONS_FOR_LEADS": "enhanced conversions for leads are "
    "off in the Google Ads account, so it takes no e-mail/phone conversions: turn them on "
    "(Goals → Conversions → Settings → Enhanced conversions for leads)",
    "CUSTOMER_DATA_POLICY_PROHIBITS_ENHANCED_CONVERSIONS": "Google's customer data policy does "
    "not allow e-mail/phone conversions for this account (see the account's policy notice)",
}
ACTION_REFUSALS = {
    "NO_CONVERSION_ACTION_FOUND": "Google Ads no longer finds this conversion action (removed "
    "since the run started?): check the mapping against `funnelvalue mapping check --remote`",
    "INVALID_CONVERSION_ACTION_TYPE": "this conversion action is not an import (UPLOAD_CLICKS) "
    "action: point the stage at one in the mapping",
}
STOP_CONFIG = {
    *USER_DATA_REFUSALS,
    *ACTION_REFUSALS,
    "TOO_MANY_CONVERSIONS_IN_REQUEST",
    "CUSTOMER_NOT_ALLOWLISTED_FOR_THIS_FEATURE",
}
TRANSIENT_CODES = {"TRANSIENT_ERROR", "RESOURCE_TEMPORARILY_EXHAUSTED"}
PLAIN_WORDS = {
    "UNPARSEABLE_GCLID": "Google cannot read this gclid (truncated or altered on the form?)",
    "UNPARSEABLE_GBRAID": "Google cannot read this gbraid",
    "UNPARSEABLE_WBRAID": "Google cannot read this wbraid",
    "EXPIRED_EVENT": "the click is older than the conversion action's click-through window",
    "EVENT_NOT_FOUND": "Google has no click with this id for this account",
    "INVALID_USER_IDENTIFIER": "the hashed email/phone is not valid",
    "CONVERSION_PRECEDES_EVENT": "the conversion time is before the click: almost always a "
    "timezone mistake in the export or the mapping's timezone",
    "INVALID_CUSTOMER_FOR_CLICK": "the click belongs to another Google Ads account: check "
    "customer_id and login_customer_id",
    "UNAUTHORIZED_CUSTOMER": "these credentials may not upload for this account: check "
    "customer_id and login_customer_id",
}
ALLOWLIST_HELP = (
    "this developer token may not upload click conversions (NotAllowlistedError): since June "
    "2026 Google only allows tokens that uploaded before, and sends new advertisers to the Data "
    "Manager API. Use --destination data-manager (or the import file, --destination csv)"
)


@cache
def _api_types() -> dict[str, Any]:
    """Raw protobuf classes of API_VERSION (loaded once, on first upload)."""
    root = f"google.ads.googleads.{API_VERSION}"
    upload = import_module(f"{root}.services.types.conversion_upload_service")
    user_data = import_module(f"{root}.common.types.offline_user_data")
    consent = import_module(f"{root}.common.types.consent")
    status = import_module(f"{root}.enums.types.consent_status").ConsentStatusEnum.ConsentStatus
    errors = import_module(f"{root}.errors.types.errors")
    adjust = import_module(f"{root}.services.types.conversion_adjustment_upload_service")
    kind = import_module(f"{root}.enums.types.conversion_adjustment_type")
    return {
        "ConversionAdjustment": adjust.ConversionAdjustment.pb(),
        "RestatementValue": adjust.RestatementValue.pb(),
        "UploadConversionAdjustmentsRequest": adjust.UploadConversionAdjustmentsRequest.pb(),
        "adjustments_wrapper": adjust.UploadConversionAdjustmentsRequest,
        "RESTATEMENT": int(kind.ConversionAdjustmentTypeEnum.ConversionAdjustmentType.RESTATEMENT),
        "GoogleAdsFailure": errors.GoogleAdsFailure,
        "ClickConversion": upload.ClickConversion.pb(),
        "UploadClickConversionsRequest": upload.UploadClickConversionsRequest.pb(),
        "request_wrapper": upload.UploadClickConversionsRequest,
        "UserIdentifier": user_data.UserIdentifier.pb(),
        "Consent": consent.Consent.pb(),
        "consent_status": {member.name: int(member) for member in status},
    }


def credentials_configured(config_path: Path | None) -> bool:
    """Is there a google-ads.yaml at ``config_path``, or any GOOGLE_ADS_* variable?"""
    in_file = config_path is not None and config_path.is_file()
    return in_file or any(name.startswith("GOOGLE_ADS_") for name in os.environ)


def _client_from(config_path: Path | None) -> Any:
    """The client the way Google Ads users configure it: google-ads.yaml or GOOGLE_ADS_* env."""
    from google.ads.googleads.client import GoogleAdsClient
    from google.auth.exceptions import RefreshError

    try:
        if config_path is not None and config_path.is_file():
            client = GoogleAdsClient.load_from_storage(str(config_path), version=API_VERSION)
        elif credentials_configured(None):
            client = GoogleAdsClient.load_from_env(version=API_VERSION)
        else:
            raise ConfigError(
                f"no Google Ads credentials: create {config_path or 'config/google-ads.yaml'} "
                "(see config/google-ads.yaml.example) or set the GOOGLE_ADS_* variables"
            )
    except RefreshError as exc:
        if "invalid_grant" in str(exc):
            raise ConfigError(
                "Google refused the refresh token (invalid_grant): it expired or was revoked. "
                "Mint a new one (e.g. google-ads-python's generate_user_credentials.py example) "
                "and put it in refresh_token"
            ) from None
        raise ConfigError(f"Google Ads sign-in failed: {exc.__class__.__name__}") from None
    except (ValueError, OSError) as exc:
        raise ConfigError(f"Google Ads configuration is incomplete: {exc}") from None
    client.use_proto_plus = True
    return client


@dataclass
class GoogleAdsUpload:
    """Uploads conversions for one customer; one instance per run."""

    client: Any
    customer_id: str
    job_id: int
    validate_only: bool = False
    # The run's one clock (pipeline.execute's ``now``): conversion ages and retry times.
    now: pd.Timestamp = field(default_factory=lambda: pd.Timestamp.now(tz="UTC"))
    in_flight: int = 1  # requests sent at once (settings.requests_in_flight)
    _actions: dict[str, str] = field(default_factory=dict)
    _account_actions: list[Any] | None = None

    @classmethod
    def from_settings(
        cls,
        config_path: Path | None,
        customer_id: str,
        run_id: int,
        now: pd.Timestamp | None = None,
        in_flight: int = 1,
    ) -> GoogleAdsUpload:
        upload = cls(
            _client_from(config_path),
            customer_id,
            job_id=run_id % (2**31 - 1),
            in_flight=in_flight,
        )
        return upload if now is None else replace(upload, now=now)

    @property
    def name(self) -> str:
        return f"google-ads:{self.customer_id}"

    def close(self) -> None:
        return None

    # -- conversion actions ---------------------------------------------------------------

    def check_actions(self, wanted: Iterable[str]) -> tuple[list[dict[str, str]], list[str]]:
        """Look the mapping's actions up with one GAQL query: (a row per action, problems).

        Each is matched by name, numeric id or resource name; it must exist, be an import
        (UPLOAD_CLICKS) action and be enabled.
        """
        actions = self._actions_in_account()
        found: list[dict[str, str]] = []
        problems: list[str] = []
        for name in sorted(set(wanted)):
            match = next((a for a in actions if name in (a.name, str(a.id), a.resource_name)), None)
            problem = ""
            if match is None:
                problem = f"does not exist in account {self.customer_id}"
            elif match.type_.name != "UPLOAD_CLICKS":
                problem = f"is {match.type_.name}, not an import (UPLOAD_CLICKS) action"
            elif match.status.name != "ENABLED":
                problem = f"is {match.status.name}"
            if problem:
                problems.append(f"conversion action '{name}' {problem}")
            found.append(
                {
                    "mapping": name,
                    "resource_name": match.resource_name if match else "",
                    "type": match.type_.name if match else "",
                    "status": match.status.name if match else "",
                    "problem": problem,
                }
            )
        if problems:
            usable = (
                ", ".join(sorted(f"'{a.name}' ({a.type_.name}, {a.status.name})" for a in actions))
                or "none"
            )
            problems.append(f"actions in the account: {usable}")
        return found, problems

    def _actions_in_account(self) -> list[Any]:
        """Every conversion action of the account (one GAQL query per run, retried like an
        upload: one UNAVAILABLE at the start must not cost the day's run)."""
        if self._account_actions is None:
            service = self.client.get_service("GoogleAdsService")
            query = (
                "SELECT conversion_action.id, conversion_action.name, conversion_action.type, "
                "conversion_action.status FROM conversion_action"
            )
            rows = call_rpc(
                "Google Ads conversion action lookup",
                lambda: list(
                    service.search(customer_id=self.customer_id, query=query, timeout=CALL_TIMEOUT)
                ),
                _is_transient,
                _translate,
            )
            self._account_actions = [row.conversion_action for row in rows]
        return self._account_actions

    def action_identities(self, labels: Iterable[str], *, strict: bool) -> dict[str, str]:
        """Mapping labels (name, id or resource name) -> the action's numeric id, which is
        what Google counts a conversion under. ``strict``: every label must be a usable import
        action, or the run stops before anything is sent; otherwise unknown ones are left out."""
        wanted = sorted(set(labels))
        if strict:
            resources = self.resolve_actions(wanted)
            return {label: resources[label].rsplit("/", 1)[-1] for label in wanted}
        actions = self._actions_in_account()
        found: dict[str, str] = {}
        for label in wanted:
            match = next(
                (a for a in actions if label in (a.name, str(a.id), a.resource_name)), None
            )
            if match is not None:
                found[label] = str(match.id)
        return found

    def resolve_actions(self, wanted: Iterable[str]) -> dict[str, str]:
        """Mapping names -> resource names; anything unusable stops the run before sending."""
        missing = set(wanted) - set(self._actions)
        if missing:
            found, problems = self.check_actions(missing)
            if problems:
                raise ConfigError(
                    "the mapping names conversion actions Google Ads cannot use", problems
                )
            self._actions.update({row["mapping"]: row["resource_name"] for row in found})
        return self._actions

    def diagnostics(self) -> dict[str, list[dict[str, Any]]]:
        """Google's own view of our uploads (upload diagnostics), per client and per action."""
        service = self.client.get_service("GoogleAdsService")
        prefix = "offline_conversion_upload_"
        queries = {
            "clients": (
                f"SELECT {prefix}client_summary.client, {prefix}client_summary.status, "
                f"{prefix}client_summary.total_event_count, "
                f"{prefix}client_summary.successful_event_count, "
                f"{prefix}client_summary.success_rate, "
                f"{prefix}client_summary.last_upload_date_time, "
                f"{prefix}client_summary.alerts FROM {prefix}client_summary"
            ),
            "actions": (
                f"SELECT {prefix}conversion_action_summary.conversion_action_name, "
                f"{prefix}conversion_action_summary.status, "
                f"{prefix}conversion_action_summary.total_event_count, "
                f"{prefix}conversion_action_summary.successful_event_count, "
                f"{prefix}conversion_action_summary.last_upload_date_time, "
                f"{prefix}conversion_action_summary.alerts "
                f"FROM {prefix}conversion_action_summary"
            ),
        }
        result: dict[str, list[dict[str, Any]]] = {}
        for kind, query in queries.items():
            try:
                rows = list(
                    service.search(customer_id=self.customer_id, query=query, timeout=CALL_TIMEOUT)
                )
            except Exception as exc:
                raise _translate(exc) from exc
            field_name = (
                f"{prefix}client_summary"
                if kind == "clients"
                else (f"{prefix}conversion_action_summary")
            )
            result[kind] = [_summary(getattr(row, field_name), kind) for row in rows]
        return result

    # -- upload ---------------------------------------------------------------------------

    def validate(self, conversions: pd.DataFrame) -> pd.DataFrame:
        """Google's verdict per row (validate_only=True): nothing is recorded by Google."""
        return replace(self, validate_only=True, _actions=dict(self._actions)).upload(conversions)

    def upload(self, conversions: pd.DataFrame) -> pd.DataFrame:
        actions = self.resolve_actions(conversions["conversion_action"].unique())
        held = _Held()

        def send(batch: pd.DataFrame) -> pd.DataFrame:
            keep = held.holds(batch)
            parts = [held.outcomes(batch[keep])]
            if not keep.all():
                out = batch[~keep]
                parts.append(self._outcomes(out, self._send(self._request(out, actions)), held))
            return pd.concat(parts, ignore_index=True)

        return send_in_batches(batches(conversions), send, in_flight=self.in_flight)

    def restate(self, changed: pd.DataFrame) -> pd.DataFrame:
        """New values of conversions already in Google Ads, as RESTATEMENT adjustments.

        Never re-uploads (Google would answer "already exists"). Google accepts adjustments
        from right after the upload until the conversion is 54 days old, and none for wbraid
        conversions: those are reported and left as they are.
        """
        now = self.now
        age = now - changed["conversion_time"]
        too_old = (age > RESTATE_MAX_AGE) | (changed["click_id_kind"] == ClickIdKind.WBRAID)
        eligible = changed[~too_old]
        refused = outcomes(
            changed.loc[too_old, "key"],
            Outcome.REJECTED,
            "Google only restates conversions up to 54 days old, never wbraid ones: "
            "the new value is not sent",
            "NOT_ADJUSTABLE",
        )
        if eligible.empty:
            return refused
        actions = self.resolve_actions(eligible["conversion_action"].unique())
        stamp = format_conversion_time(pd.Series([now.floor("s")]), "UTC").iloc[0]

        def send(batch: pd.DataFrame) -> pd.DataFrame:
            response = self._send(
                self._adjustments(batch, actions, stamp),
                "ConversionAdjustmentUploadService",
                "upload_conversion_adjustments",
            )
            return self._outcomes(batch, response, success=Restatement.RESTATED)

        return send_in_batches(batches(eligible), send, first=refused, in_flight=self.in_flight)

    def _adjustments(self, batch: pd.DataFrame, actions: dict[str, str], stamp: str) -> Any:
        types = _api_types()
        restatement = types["RESTATEMENT"]
        adjustments = [
            types["ConversionAdjustment"](
                conversion_action=actions[action],
                order_id=order_id,
                adjustment_type=restatement,
                adjustment_date_time=stamp,
                restatement_value=types["RestatementValue"](
                    adjusted_value=float(value), currency_code=currency
                ),
            )
            for action, order_id, value, currency in zip(
                batch["conversion_action"],
                batch["order_id"],
                batch["value"],
                batch["currency"],
                strict=True,
            )
        ]
        request = types["UploadConversionAdjustmentsRequest"](
            customer_id=self.customer_id,
            conversion_adjustments=adjustments,
            partial_failure=True,
            validate_only=self.validate_only,
            job_id=self.job_id,
        )
        return types["adjustments_wrapper"].wrap(request)

    def _request(self, batch: pd.DataFrame, actions: dict[str, str]) -> Any:
        """The request for one batch, built as raw protobuf messages.

        Measured (benchmarks/bench_upload.py): proto-plus attribute setting costs ~150 us a
        conversion, raw protobuf constructors ~10 us; the request is wrapped, not copied.
        """
        types = _api_types()
        consent = types["consent_status"]
        conversions = []
        times = format_conversion_time(batch["conversion_time"], "UTC")
        for row, time in zip(batch.to_dict("records"), times, strict=True):
            fields: dict[str, Any] = {
                "conversion_action": actions[row["conversion_action"]],
                "conversion_date_time": time,
                "conversion_value": float(row["value"]),
                "currency_code": row["currency"],
                "order_id": row["order_id"],
            }
            kind = row["click_id_kind"]
            if kind == ClickIdKind.USER:
                fields["user_identifiers"] = [
                    types["UserIdentifier"](**{name: row[column]})
                    for name, column in (
                        ("hashed_email", "hashed_email"),
                        ("hashed_phone_number", "hashed_phone"),
                    )
                    if not pd.isna(row[column])
                ]
            else:
                fields[str(kind)] = row["click_id"]
            if not pd.isna(row["consent"]):
                fields["consent"] = types["Consent"](ad_user_data=consent[row["consent"]])
            conversions.append(types["ClickConversion"](**fields))
        request = types["UploadClickConversionsRequest"](
            customer_id=self.customer_id,
            conversions=conversions,
            partial_failure=True,
            validate_only=self.validate_only,
            job_id=self.job_id,
        )
        return types["request_wrapper"].wrap(request)

    def _send(
        self,
        request: Any,
        service_name: str = "ConversionUploadService",
        method: str = "upload_click_conversions",
    ) -> Any:
        service = self.client.get_service(service_name)
        return call_rpc(
            f"Google Ads {method}",
            lambda: getattr(service, method)(request=request, timeout=CALL_TIMEOUT),
            _is_transient,
            _translate,
        )

    def _outcomes(
        self,
        batch: pd.DataFrame,
        response: Any,
        held: _Held | None = None,
        success: str = Outcome.UPLOADED,
    ) -> pd.DataFrame:
        count = len(batch)
        status = [success] * count
        codes: list[str | None] = [None] * count
        messages: list[str | None] = [None] * count
        retry_at: list[pd.Timestamp | None] = [None] * count
        now = self.now
        for index, code, message in _row_errors(response.partial_failure_error):
            codes[index] = code
            if held is not None and code in USER_DATA_REFUSALS.keys() | ACTION_REFUSALS.keys():
                status[index], messages[index] = Outcome.HELD, held.learn(code, batch, index)
            elif code in STOP_CONFIG:
                raise DestinationError(_stop_message(code, message), transient=False)
            elif code in DUPLICATE:
                status[index], messages[index] = Outcome.DUPLICATE, "already in Google Ads"
            elif code in TOO_RECENT:
                status[index], retry_at[index] = Outcome.RETRY_AFTER, now + RETRY_AFTER
                messages[index] = "the click is too recent; sent again in 6 hours"
            else:
                status[index] = Outcome.REJECTED
                messages[index] = PLAIN_WORDS.get(code, message)
        return pd.DataFrame(
            {
                "key": batch["key"].to_numpy(),
                "status": status,
                "error_code": pd.Series(codes, dtype="string"),
                "message": pd.Series(messages, dtype="string"),
                "retry_at": pd.to_datetime(pd.Series(retry_at, dtype=object), utc=True),
            }
        )


@dataclass
class _Held:
    """What this run learnt Google refuses until the account changes: e-mail/phone rows
    (data terms, enhanced conversions for leads) or one conversion action's rows."""

    user_data: tuple[str, str] | None = None  # (error code, words) for e-mail/phone rows
    actions: dict[str, tuple[str, str]] = field(default_factory=dict)  # action -> (code, words)

    def learn(self, code: str, batch: pd.DataFrame, index: int) -> str:
        """Remember Google's refusal of row ``index``; returns the words for it."""
        if code in USER_DATA_REFUSALS:
            self.user_data = (code, USER_DATA_REFUSALS[code])
            return self.user_data[1]
        action = str(batch["conversion_action"].iloc[index])
        self.actions[action] = (code, f"'{action}': {ACTION_REFUSALS[code]}")
        return self.actions[action][1]

    def holds(self, batch: pd.DataFrame) -> pd.Series:
        """Rows of ``batch`` Google would refuse for what is already known: not sent."""
        held = batch["conversion_action"].isin(list(self.actions))
        if self.user_data is not None:
            held |= batch["click_id_kind"] == ClickIdKind.USER
        return held

    def outcomes(self, rows: pd.DataFrame) -> pd.DataFrame:
        """HELD outcomes for rows held back, with the code and words of what they wait for."""
        none = ("", "")  # (never: every held row has a cause)
        cause = [self.actions.get(a) or self.user_data or none for a in rows["conversion_action"]]
        frame = outcomes(rows["key"], Outcome.HELD)
        return frame.assign(
            error_code=pd.array([c[0] for c in cause], dtype="string"),
            message=pd.array([c[1] for c in cause], dtype="string"),
        )


def _summary(item: Any, kind: str) -> dict[str, Any]:
    total, ok = int(item.total_event_count), int(item.successful_event_count)
    alerts = []
    for alert in item.alerts:
        error = type(alert.error).pb(alert.error)
        which = error.WhichOneof("error_code")
        name = getattr(alert.error, which).name if which else "UNKNOWN"
        alerts.append(f"{name} ({alert.error_percentage:.0%})")
    return {
        "name": item.client.name if kind == "clients" else item.conversion_action_name,
        "status": item.status.name,
        "total": total,
        "successful": ok,
        "success_rate": ok / total if total else None,
        "last_upload": item.last_upload_date_time,
        "alerts": alerts,
    }


def _row_errors(status: Any) -> Iterable[tuple[int, str, str]]:
    """(row index, error code name, message) for each per-row error of a partial failure."""
    if status is None or status.code == 0:  # test the code, never the message's truthiness
        return
    failure_type = _api_types()["GoogleAdsFailure"]
    for detail in status.details:
        for error in failure_type.deserialize(detail.value).errors:
            elements = error.location.field_path_elements
            if elements:
                yield elements[0].index, _code_name(error), error.message


def _code_name(error: Any) -> str:
    code = type(error.error_code).pb(error.error_code)
    which = code.WhichOneof("error_code")
    return str(getattr(error.error_code, which).name) if which else "UNKNOWN"


def _failure_codes(exc: BaseException) -> list[str]:
    """Error codes of a whole-request failure: GoogleAdsException, or the GoogleAdsFailure in
    the trailing metadata of an api_core exception (google-ads 34 raises both kinds)."""
    failure = getattr(exc, "failure", None)
    if failure is None:
        call: Any = getattr(exc, "response", None)
        metadata = call.trailing_metadata() if hasattr(call, "trailing_metadata") else None
        for key, value in metadata or ():
            if key.endswith("googleadsfailure-bin"):
                failure = _api_types()["GoogleAdsFailure"].deserialize(value)
    return [_code_name(error) for error in failure.errors] if failure is not None else []


def _is_transient(exc: BaseException) -> bool:
    codes = set(_failure_codes(exc))
    if "RESOURCE_EXHAUSTED" in codes:  # the daily quota: never hot-retry
        return False
    return bool(codes & TRANSIENT_CODES) or grpc_code(exc) in TRANSIENT_GRPC


def _stop_message(code: str, message: str) -> str:
    if code == "CUSTOMER_NOT_ALLOWLISTED_FOR_THIS_FEATURE":
        return ALLOWLIST_HELP
    return f"Google Ads refused the upload ({code}): {message}; nothing more was sent"


def _translate(exc: BaseException) -> Exception:
    """Google's exceptions -> ours, so the pipeline decides from the type, not the text."""
    if isinstance(exc, ConfigError | DestinationError):
        return exc
    codes = _failure_codes(exc)
    status = grpc_code(exc)
    if "RESOURCE_EXHAUSTED" in codes:
        return DestinationError(
            "the Google Ads API daily quota is used up; the rest stays "
            "pending and goes out with the next run",
            transient=True,
        )
    if set(codes) & STOP_CONFIG:
        code = next(c for c in codes if c in STOP_CONFIG)
        return DestinationError(_stop_message(code, ""), transient=False)
    if status in {"UNAUTHENTICATED", "PERMISSION_DENIED"} or codes:
        return DestinationError(
            f"Google Ads refused the request ({', '.join(codes) or status}); check the "
            "developer token, customer_id and login_customer_id",
            transient=False,
        )
    return DestinationError(
        f"Google Ads is unavailable ({status or exc.__class__.__name__})"
        " after retries; the rows stay pending",
        transient=True,
    )
