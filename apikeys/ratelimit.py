"""Per-key rate limits and the monthly org quota, with usage counting in the same trip.

Fixed windows (docs/api.md): a burst window of one second and a minute window, both
counted per key (the authenticated key's database id, never the raw header), and a monthly
window per org that resets on the 1st at 00:00 UTC. Limits come from the key's principal
(the org's plan, overridden by custom values; 0 means unlimited).

On Redis one Lua script checks all three counters and, only when every window has room,
increments them: the check and the increment are atomic, so with any number of processes
no more than the limit is admitted in a window, and a refused request (429) increments no
counter, so it never counts toward the monthly quota. The same script also records the
request in the key's usage hash for the hour (see `apikeys.usage`) and in the key's recent
requests (ADR 0060). On a warm verification cache the check-and-count runs inside the
verification script itself (`apikeys.backend`, ADR 0064): a guarded request is ONE
Redis round trip in all; `refund` gives back what a request refused before the limiter
took.

The rule itself (in Lua and in its Python twin for the embedded default, one process)
lives in `apikeys.backend`; this module computes the names, limits and figures.

If Redis is unreachable the limits fail open: the request is admitted, an error is logged
(at most every few seconds), and the response still carries the limit headers.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from apikeys import redisconn, usage
from apikeys.backend import (
    ADMIT,
    BURST,
    MINUTE,
    QUOTA,
    RequestRecord,
    Windows,
    backend,
)
from orgs.plans import Limits

RATE_LIMITED = "rate_limited"
QUOTA_EXCEEDED = "quota_exceeded"

BURST_WINDOW = 1
MINUTE_WINDOW = 60

# Verdicts of the check-and-count rule (`apikeys.backend`).
_ADMIT, _BURST, _MINUTE, _QUOTA = ADMIT, BURST, MINUTE, QUOTA


@dataclass(slots=True)
class LimitResult:
    """The verdict and the figures the response headers report. Treated as immutable
    (copies are made with `dataclasses.replace`); not frozen only because a frozen
    dataclass costs a `object.__setattr__` per field on every request."""

    allowed: bool
    code: str  # "", RATE_LIMITED or QUOTA_EXCEEDED
    retry_after: int
    burst: int
    per_minute: int
    monthly: int
    minute_used: int
    minute_reset: int  # UTC epoch seconds at which the minute window ends
    reset_in: int  # seconds until then (at least 1)
    degraded: bool = False  # Redis unreachable: admitted without counting
    # The request's element in the key's recent requests (to correct its status).
    recent: usage.RecentMark | None = None

    @property
    def minute_remaining(self) -> int:
        return max(0, self.per_minute - self.minute_used)

    def headers(self) -> dict[str, str]:
        """`X-RateLimit-*` and the IETF `RateLimit-Policy` / `RateLimit` fields.

        Windows without a limit (0) are left out: there is nothing to count down.
        """
        store: dict[str, tuple[str, str]] = {}
        self.write_headers(store)
        return dict(store.values())

    def write_headers(self, store: dict[str, tuple[str, str]]) -> None:
        """`headers()` written straight into a response's header store (Django's
        `ResponseHeaders._store`: lower-cased name -> (name, value)). The names and values
        are ASCII made here, which `response[name] = value` would check again at a cost on
        every request."""
        if self.per_minute:
            remaining = self.minute_remaining
            store["x-ratelimit-limit"] = ("X-RateLimit-Limit", str(self.per_minute))
            store["x-ratelimit-remaining"] = ("X-RateLimit-Remaining", str(remaining))
            store["x-ratelimit-reset"] = ("X-RateLimit-Reset", str(self.minute_reset))
            store["ratelimit"] = ("RateLimit", f'"minute";r={remaining};t={self.reset_in}')
        policy = _policy(self.burst, self.per_minute)
        if policy:
            store["ratelimit-policy"] = ("RateLimit-Policy", policy)
        if not self.allowed:
            store["retry-after"] = ("Retry-After", str(self.retry_after))


_policies: dict[tuple[int, int], str] = {}


def _policy(burst: int, per_minute: int) -> str:
    """The `RateLimit-Policy` value for these limits (made once per pair)."""
    found = _policies.get((burst, per_minute))
    if found is None:
        parts = []
        if burst:
            parts.append(f'"burst";q={burst};w={BURST_WINDOW}')
        if per_minute:
            parts.append(f'"minute";q={per_minute};w={MINUTE_WINDOW}')
        if len(_policies) > 1024:
            _policies.clear()
        found = _policies[(burst, per_minute)] = ", ".join(parts)
    return found


@dataclass(slots=True)
class UsageMeta:
    """What the usage counters record about a request besides its count. Treated as
    immutable (not frozen for the cost, as `LimitResult`)."""

    ip: str = ""
    client_version: str = ""
    # For the key's recent requests; without a method nothing is recorded there.
    method: str = ""
    path: str = ""
    request_id: str = ""
    # The scopes the request needed, space-separated: usage counts requests per scope.
    scopes: str = ""

    def recent_body(self, now: float) -> str:
        if not self.method:
            return ""
        return usage.recent_body(
            at=now,
            method=self.method,
            path=self.path,
            ip=self.ip,
            client_version=self.client_version,
            request_id=self.request_id,
        )


def clock() -> float:
    """The time the windows are counted in (UTC epoch seconds); one place to read it."""
    return time.time()


def next_month_start(now: float) -> int:
    """UTC epoch seconds of the 1st of the month after `now`, 00:00 UTC."""
    return _month(now)[1]


def month_expiry(now: float) -> int:
    """When the monthly counter of `now`'s month expires: a day after the month ends."""
    return _month(now)[1] + 86400


def month_label(now: float) -> str:
    return _month(now)[0]


_months: dict[int, tuple[str, int]] = {}


def _month(now: float) -> tuple[str, int]:
    """(`YYYYMM`, start of next month) of `now`; computed once per hour of time."""
    hour = int(now) // 3600
    found = _months.get(hour)
    if found is None:
        moment = datetime.fromtimestamp(hour * 3600, tz=UTC)
        year, month = (
            (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
        )
        start = int(datetime(year, month, 1, tzinfo=UTC).timestamp())
        if len(_months) > 64:
            _months.clear()
        found = _months[hour] = (moment.strftime("%Y%m"), start)
    return found


def counter_keys(key_pk: int, org_pk: int | None, now: float) -> tuple[str, str, str]:
    """The names of the key's burst, minute and monthly counters at `now`."""
    return _counter_names(_window_heads(key_pk, org_pk), now)


def _counter_names(heads: tuple[str, ...], now: float) -> tuple[str, str, str]:
    second = int(now)
    return (
        heads[0] + str(second),
        heads[1] + str(second // MINUTE_WINDOW),
        heads[2] + month_label(now),
    )


def usage_hash_name(key_pk: int, org_pk: int | None, hour: int) -> str:
    """`usage.redis_hash_key`, from the key's cached heads."""
    return _window_heads(key_pk, org_pk)[3] + str(hour)


def windows(key_pk: int, org_pk: int | None, limits: Limits, now: float) -> Windows:
    """The names of a request's counters and records at `now`, and its limits (the
    monthly quota counts org keys only)."""
    heads = _window_heads(key_pk, org_pk)
    burst, minute, month = _counter_names(heads, now)
    return Windows(
        burst=burst,
        minute=minute,
        month=month,
        usage=heads[3] + str(usage.hour_start(now)),
        pending=heads[4],
        recent=heads[5],
        burst_limit=limits.burst,
        minute_limit=limits.per_minute,
        month_limit=limits.monthly if org_pk is not None else 0,
    )


_heads: dict[tuple[int, int | None], tuple[str, str, str, str, str, str]] = {}
_heads_generation = -1


def _window_heads(key_pk: int, org_pk: int | None) -> tuple[str, str, str, str, str, str]:
    """The parts of a key's names that do not change with time (once per key and
    settings): the names of `counter_keys` and `usage` up to their time part."""
    # A new dict per settings generation, and names stored through this call's own
    # reference: a thread that built names under the old prefix (the pusher's, while a
    # setting changes) stores them in the old generation's dict, never in the new one's.
    global _heads, _heads_generation
    generation = redisconn.settings_generation()
    heads = _heads
    if _heads_generation != generation:
        heads = _heads = {}
        _heads_generation = generation
    found = heads.get((key_pk, org_pk))
    if found is None:
        org = org_pk if org_pk is not None else "-"
        if len(heads) >= 65536:
            heads.clear()
        found = heads[(key_pk, org_pk)] = (
            redisconn.rkey("rl", "b", key_pk, ""),
            redisconn.rkey("rl", "m", key_pk, ""),
            redisconn.rkey("rl", "q", org, ""),
            redisconn.rkey("u", key_pk, org, ""),
            usage.redis_pending_key(),
            usage.recent_redis_key(key_pk),
        )
    return found


def _result(
    verdict: int,
    limits: Limits,
    minute_used: int,
    now: float,
    degraded: bool = False,
    recent: usage.RecentMark | None = None,
) -> LimitResult:
    minute_end = (int(now) // MINUTE_WINDOW + 1) * MINUTE_WINDOW
    reset_in = max(1, math.ceil(minute_end - now))
    code = ""
    retry_after = 0
    if verdict == _QUOTA:
        code = QUOTA_EXCEEDED
        retry_after = max(1, math.ceil(next_month_start(now) - now))
    elif verdict == _MINUTE:
        code, retry_after = RATE_LIMITED, reset_in
    elif verdict == _BURST:
        code, retry_after = RATE_LIMITED, max(1, math.ceil(int(now) + BURST_WINDOW - now))
    return LimitResult(
        allowed=verdict == _ADMIT,
        code=code,
        retry_after=retry_after,
        burst=limits.burst,
        per_minute=limits.per_minute,
        monthly=limits.monthly,
        minute_used=minute_used,
        minute_reset=minute_end,
        reset_in=reset_in,
        degraded=degraded,
        recent=recent,
    )


UNLIMITED = Limits(per_minute=0, burst=0, monthly=0)


def check_limits(
    *,
    key_pk: int,
    org_pk: int | None,
    limits: Limits | None,
    meta: UsageMeta,
    status_class: str = "",
    count_limits: bool = True,
    status: int = 0,
    now: float | None = None,
) -> LimitResult:
    """Check and count one request of key `key_pk`, and record it in the usage counters.

    With `count_limits=False` (a request refused before the limiter, e.g. for scope) no
    window is checked or counted, only read for the headers, and the request is recorded
    for usage with its `status_class` (`c4`/`c5`). A request the limiter refuses is
    recorded as a 4xx by the limiter itself.

    With a `meta.method` the request is also pushed on the key's recent requests, with
    `status` (the response's, when known) or the method's provisional status; the result's
    `recent` lets `usage.record_status` correct it after the handler.
    """
    now = clock() if now is None else now
    effective = limits or UNLIMITED
    body = meta.recent_body(now)
    pushed = status or (usage.provisional_status(meta.method) if body else 0)
    try:
        count = backend().count(
            windows(key_pk, org_pk, effective, now),
            request_record(now, meta, body, pushed),
            counting=count_limits,
            status_class=status_class,
        )
    except redisconn.REDIS_ERRORS as exc:
        log_fail_open(exc)
        return _result(_ADMIT, effective, 0, now, degraded=True)
    return counted_result(
        key_pk, effective, now, count.verdict, count.minute_used, body, pushed, count.recent
    )


def leased_result(limits: Limits, now: float, minute_used: int) -> LimitResult:
    """Admitted under an admission lease (ADR 0065): `minute_used` is the minute window's
    count as this process knows it, its own unused tokens left out. `_result` for an
    admitted request, in fewer steps (every leased request): the minute ends at
    `minute_end`, and `ceil(minute_end - now)` is `minute_end - int(now)` (at least 1; for a
    clock past its first minute the float subtraction is exact, so the two agree)."""
    second = int(now)
    minute_end = second - second % MINUTE_WINDOW + MINUTE_WINDOW
    return LimitResult(
        True,
        "",
        0,
        limits.burst,
        limits.per_minute,
        limits.monthly,
        minute_used,
        minute_end,
        minute_end - second,
    )


def degraded_result(limits: Limits, now: float) -> LimitResult:
    """Redis unreachable: admitted without counting, the limits reported unused."""
    return _result(_ADMIT, limits, 0, now, degraded=True)


def log_fail_open(exc: BaseException) -> None:
    redisconn.error_log.error(
        "ratelimit", "Redis unreachable: rate limits fail open, usage not counted", exc
    )


def request_record(now: float, meta: UsageMeta, body: str, pushed: int) -> RequestRecord:
    """What the request at `now` adds to usage, for the check-and-count rule."""
    return RequestRecord(
        month_expiry=month_expiry(now),
        at=now,
        ip=meta.ip or "",
        version=usage.clean_version(meta.client_version),
        usage_ttl=usage.REDIS_HASH_TTL,
        version_cap=usage.MAX_VERSIONS,
        body=body,
        status=pushed,
        recent_cap=usage.RECENT_MAX,
        recent_ttl=usage.RECENT_TTL,
        scopes=meta.scopes,
    )


def counted_result(
    key_pk: int,
    limits: Limits,
    now: float,
    verdict: int,
    minute_used: int,
    body: str,
    pushed: int,
    local: list[Any] | None = None,
) -> LimitResult:
    """The result of a request the check-and-count rule counted (`apikeys.backend`)."""
    recent = None
    if body:
        status = 429 if verdict != _ADMIT else pushed
        recent = usage.RecentMark(key_pk, status, body, local=local)
    return _result(verdict, limits, minute_used, now, recent=recent)


def refund(
    *,
    key_pk: int,
    org_pk: int | None,
    result: LimitResult,
    now: float,
    status: int,
) -> LimitResult:
    """Undo the counting of a request the verification-and-count script admitted and the
    pipeline then refused before the limiter (ADR 0064); returns the result its headers
    report. A request the script refused (429) took nothing from any window, so only its
    usage and recent element are brought up to date.

    One round trip, on the refusal path only. A window that has meanwhile ended (its
    counter expired) has nothing to give back.
    """
    if result.degraded:
        return result
    status_class = usage.status_class(status) if result.allowed else ""
    limits = Limits(per_minute=result.per_minute, burst=result.burst, monthly=result.monthly)
    try:
        minute_used = backend().refund(
            windows(key_pk, org_pk, limits, now),
            give_back=result.allowed,
            status_class=status_class,
            usage_ttl=usage.REDIS_HASH_TTL,
            recent=usage.recent_fix(result.recent, status),
        )
    except redisconn.REDIS_ERRORS as exc:
        redisconn.error_log.error("ratelimit", "Redis unreachable: refund not made", exc)
        return result
    return replace(result, minute_used=max(0, int(minute_used)))
