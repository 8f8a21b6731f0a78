"""Per-key rate limits and the monthly org quota, with usage counting in the same trip.

Fixed windows (SPEC section 6): a burst window of one second and a minute window, both
counted per key (the authenticated key's database id, never the raw header), and a monthly
window per org that resets on the 1st at 00:00 UTC. Limits come from the key's principal
(the org's plan, overridden by custom values; 0 means unlimited).

On Redis one Lua script checks all three counters and, only when every window has room,
increments them: the check and the increment are atomic, so with any number of processes
no more than the limit is admitted in a window, and a refused request (429) increments no
counter, so it never counts toward the monthly quota. The same script also records the
request in the key's usage hash for the hour (see `apikeys.usage`), so a guarded request
costs one Redis round trip here (ADR 0060).

Without Redis (the embedded default, one process) the same semantics run on the
local-memory cache under a process lock.

If Redis is unreachable the limits fail open: the request is admitted, an error is logged
(at most every few seconds), and the response still carries the limit headers.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from django.core.cache import cache

from apikeys import redisconn, usage
from orgs.plans import Limits

RATE_LIMITED = "rate_limited"
QUOTA_EXCEEDED = "quota_exceeded"

BURST_WINDOW = 1
MINUTE_WINDOW = 60

# Verdicts returned by the script.
_ADMIT, _BURST, _MINUTE, _QUOTA = 0, 1, 2, 3

_GUARD_LUA = """
local bl = tonumber(ARGV[1])
local ml = tonumber(ARGV[2])
local ql = tonumber(ARGV[3])
local b, m, q = 0, 0, 0
if bl > 0 then b = tonumber(redis.call('GET', KEYS[1]) or '0') end
if ml > 0 then m = tonumber(redis.call('GET', KEYS[2]) or '0') end
if ql > 0 then q = tonumber(redis.call('GET', KEYS[3]) or '0') end
local verdict = 0
local counting = ARGV[12] == '1'
if not counting then
elseif ql > 0 and q >= ql then verdict = 3
elseif ml > 0 and m >= ml then verdict = 2
elseif bl > 0 and b >= bl then verdict = 1 end
if verdict == 0 and counting then
  if bl > 0 then
    b = redis.call('INCR', KEYS[1])
    if b == 1 then redis.call('EXPIRE', KEYS[1], 2) end
  end
  if ml > 0 then
    m = redis.call('INCR', KEYS[2])
    if m == 1 then redis.call('EXPIRE', KEYS[2], 120) end
  end
  if ql > 0 then
    q = redis.call('INCR', KEYS[3])
    if q == 1 then redis.call('EXPIREAT', KEYS[3], tonumber(ARGV[4])) end
  end
end
if ARGV[5] == '1' then
  local h = KEYS[4]
  redis.call('HINCRBY', h, 'n', 1)
  local cls = ARGV[9]
  if verdict ~= 0 then cls = 'c4' end
  if cls ~= '' then redis.call('HINCRBY', h, cls, 1) end
  redis.call('HSET', h, 'at', ARGV[6], 'ip', ARGV[7])
  if ARGV[8] ~= '' then
    local f = 'v:' .. ARGV[8]
    if redis.call('HEXISTS', h, f) == 0 then
      if tonumber(redis.call('HGET', h, 'nv') or '0') < tonumber(ARGV[11]) then
        redis.call('HSET', h, f, '1')
        redis.call('HINCRBY', h, 'nv', 1)
      end
    end
  end
  redis.call('EXPIRE', h, tonumber(ARGV[10]))
  redis.call('SADD', KEYS[5], h)
end
if ARGV[13] ~= '' then
  local st = ARGV[14]
  if verdict ~= 0 then st = '429' end
  redis.call('LPUSH', KEYS[6], st .. ' ' .. ARGV[13])
  redis.call('LTRIM', KEYS[6], 0, tonumber(ARGV[15]) - 1)
  redis.call('EXPIRE', KEYS[6], tonumber(ARGV[16]))
end
return {verdict, b, m, q}
"""

_script_lock = threading.Lock()
_scripts: dict[int, object] = {}
# The local-memory twin: one lock makes check-and-increment atomic within the process.
_local_lock = threading.Lock()


@dataclass(frozen=True)
class LimitResult:
    """The verdict and the figures the response headers report."""

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
        result: dict[str, str] = {}
        policies = []
        if self.burst:
            policies.append(f'"burst";q={self.burst};w={BURST_WINDOW}')
        if self.per_minute:
            policies.append(f'"minute";q={self.per_minute};w={MINUTE_WINDOW}')
            result["X-RateLimit-Limit"] = str(self.per_minute)
            result["X-RateLimit-Remaining"] = str(self.minute_remaining)
            result["X-RateLimit-Reset"] = str(self.minute_reset)
            result["RateLimit"] = f'"minute";r={self.minute_remaining};t={self.reset_in}'
        if policies:
            result["RateLimit-Policy"] = ", ".join(policies)
        if not self.allowed:
            result["Retry-After"] = str(self.retry_after)
        return result


@dataclass(frozen=True)
class UsageMeta:
    """What the usage counters record about a request besides its count."""

    ip: str = ""
    client_version: str = ""
    # For the key's recent requests; without a method nothing is recorded there.
    method: str = ""
    path: str = ""
    request_id: str = ""

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
    moment = datetime.fromtimestamp(now, tz=UTC)
    year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
    return int(datetime(year, month, 1, tzinfo=UTC).timestamp())


def month_label(now: float) -> str:
    return datetime.fromtimestamp(now, tz=UTC).strftime("%Y%m")


def _counter_keys(key_pk: int, org_pk: int | None, now: float) -> tuple[str, str, str]:
    second = int(now)
    minute = second // MINUTE_WINDOW
    return (
        redisconn.rkey("rl", "b", key_pk, second),
        redisconn.rkey("rl", "m", key_pk, minute),
        redisconn.rkey("rl", "q", org_pk if org_pk is not None else "-", month_label(now)),
    )


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


def _script(conn: object) -> object:
    with _script_lock:
        script = _scripts.get(id(conn))
        if script is None:
            script = conn.register_script(_GUARD_LUA)  # type: ignore[attr-defined]
            _scripts[id(conn)] = script
        return script


UNLIMITED = Limits(per_minute=0, burst=0, monthly=0)


def guard(
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
    conn = redisconn.client()
    if conn is None:
        return _guard_local(
            key_pk, org_pk, effective, meta, status_class, count_limits, now, body, pushed
        )
    burst_key, minute_key, month_key = _counter_keys(key_pk, org_pk, now)
    quota = effective.monthly if org_pk is not None else 0
    hour = usage.hour_start(now)
    try:
        verdict, _b, minute_used, _q = _script(conn)(  # type: ignore[operator]
            keys=[
                burst_key,
                minute_key,
                month_key,
                usage.redis_hash_key(key_pk, org_pk, hour),
                usage.redis_pending_key(),
                usage.recent_redis_key(key_pk),
            ],
            args=[
                effective.burst,
                effective.per_minute,
                quota,
                next_month_start(now) + 86400,
                "1",
                repr(now),
                meta.ip or "",
                usage.clean_version(meta.client_version),
                status_class,
                usage.REDIS_HASH_TTL,
                usage.MAX_VERSIONS,
                "1" if count_limits else "0",
                body,
                pushed,
                usage.RECENT_MAX,
                usage.RECENT_TTL,
            ],
        )
    except redisconn.REDIS_ERRORS as exc:
        redisconn.error_log.error(
            "ratelimit", "Redis unreachable: rate limits fail open, usage not counted", exc
        )
        return _result(_ADMIT, effective, 0, now, degraded=True)
    verdict = int(verdict)
    recent = None
    if body:
        recent = usage.RecentMark(key_pk, 429 if verdict != _ADMIT else pushed, body)
    return _result(verdict, effective, int(minute_used), now, recent=recent)


def _guard_local(
    key_pk: int,
    org_pk: int | None,
    limits: Limits,
    meta: UsageMeta,
    status_class: str,
    count_limits: bool,
    now: float,
    body: str = "",
    pushed: int = 0,
) -> LimitResult:
    burst_key, minute_key, month_key = _counter_keys(key_pk, org_pk, now)
    quota = limits.monthly if org_pk is not None else 0
    with _local_lock:
        values = cache.get_many([burst_key, minute_key, month_key])
        b = int(values.get(burst_key, 0))
        m = int(values.get(minute_key, 0))
        q = int(values.get(month_key, 0))
        verdict = _ADMIT
        if not count_limits:
            pass
        elif quota and q >= quota:
            verdict = _QUOTA
        elif limits.per_minute and m >= limits.per_minute:
            verdict = _MINUTE
        elif limits.burst and b >= limits.burst:
            verdict = _BURST
        if verdict == _ADMIT and count_limits:
            if limits.burst:
                cache.set(burst_key, b + 1, 2)
            if limits.per_minute:
                m += 1
                cache.set(minute_key, m, 120)
            if quota:
                cache.set(month_key, q + 1, int(next_month_start(now) - now) + 86400)
    usage.local_record(
        key_pk=key_pk,
        org_pk=org_pk,
        hour=usage.hour_start(now),
        at=now,
        ip=meta.ip,
        client_version=meta.client_version,
        status_class="c4" if verdict != _ADMIT else status_class,
    )
    recent = None
    if body:
        status = 429 if verdict != _ADMIT else pushed
        element = usage.local_recent_push(key_pk=key_pk, status=status, body=body)
        recent = usage.RecentMark(key_pk, status, body, local=element)
    return _result(verdict, limits, m, now, recent=recent)
