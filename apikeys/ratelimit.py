"""Per-key rate limits and the monthly org quota, with usage counting in the same trip.

Fixed windows (SPEC section 6): a burst window of one second and a minute window, both
counted per key (the authenticated key's database id, never the raw header), and a monthly
window per org that resets on the 1st at 00:00 UTC. Limits come from the key's principal
(the org's plan, overridden by custom values; 0 means unlimited).

On Redis one Lua script checks all three counters and, only when every window has room,
increments them: the check and the increment are atomic, so with any number of processes
no more than the limit is admitted in a window, and a refused request (429) increments no
counter, so it never counts toward the monthly quota. The same script also records the
request in the key's usage hash for the hour (see `apikeys.usage`) and in the key's recent
requests (ADR 0060). On a warm verification cache the check-and-count runs inside the
verification script itself (`GUARD_LUA_FUNCTION`, ADR 0064): a guarded request is ONE
Redis round trip in all; `refund` gives back what a request refused before the limiter
took.

Without Redis (the embedded default, one process) the same semantics run on the
local-memory cache under a process lock.

If Redis is unreachable the limits fail open: the request is admitted, an error is logged
(at most every few seconds), and the response still carries the limit headers.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, replace
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

# The check-and-count of one request, as a Lua function shared by the guard script below
# and the verification-and-count script of `apikeys.keycache` (ADR 0064). `o` is the index
# in ARGV of the request's common arguments (`request_args`): month-counter expiry, time,
# IP, client version, usage-hash TTL, version cap, recent body, provisional status, recent
# cap, recent TTL.
GUARD_LUA_FUNCTION = """
local function lk_guard(kb, km, kq, kh, kp, kr, bl, ml, ql, counting, cls, o)
  local b, m, q = 0, 0, 0
  if bl > 0 or ml > 0 or ql > 0 then
    local now = redis.call('MGET', kb, km, kq)
    if bl > 0 then b = tonumber(now[1] or '0') end
    if ml > 0 then m = tonumber(now[2] or '0') end
    if ql > 0 then q = tonumber(now[3] or '0') end
  end
  local verdict = 0
  if counting then
    if ql > 0 and q >= ql then verdict = 3
    elseif ml > 0 and m >= ml then verdict = 2
    elseif bl > 0 and b >= bl then verdict = 1 end
    if verdict == 0 then
      if bl > 0 then
        b = redis.call('INCR', kb)
        if b == 1 then redis.call('EXPIRE', kb, 2) end
      end
      if ml > 0 then
        m = redis.call('INCR', km)
        if m == 1 then redis.call('EXPIRE', km, 120) end
      end
      if ql > 0 then
        q = redis.call('INCR', kq)
        if q == 1 then redis.call('EXPIREAT', kq, tonumber(ARGV[o])) end
      end
    end
  end
  -- A new usage hash (first request of the hour, or first since the fold claimed the
  -- last one) gets its expiry and joins the pending set; later ones are already there.
  if redis.call('HINCRBY', kh, 'n', 1) == 1 then
    redis.call('EXPIRE', kh, tonumber(ARGV[o + 4]))
    redis.call('SADD', kp, kh)
  end
  if verdict ~= 0 then cls = 'c4' end
  if cls ~= '' then redis.call('HINCRBY', kh, cls, 1) end
  redis.call('HSET', kh, 'at', ARGV[o + 1], 'ip', ARGV[o + 2])
  local ver = ARGV[o + 3]
  if ver ~= '' then
    local f = 'v:' .. ver
    if redis.call('HEXISTS', kh, f) == 0 then
      if tonumber(redis.call('HGET', kh, 'nv') or '0') < tonumber(ARGV[o + 5]) then
        redis.call('HSET', kh, f, '1')
        redis.call('HINCRBY', kh, 'nv', 1)
      end
    end
  end
  local body = ARGV[o + 6]
  if body ~= '' then
    local st = ARGV[o + 7]
    if verdict ~= 0 then st = '429' end
    -- Trimmed back to the cap once it is RECENT_SLACK over: readers look no further
    -- than that, and most pushes need no LTRIM.
    local cap = tonumber(ARGV[o + 8])
    if redis.call('LPUSH', kr, st .. ' ' .. body) > cap + RECENT_SLACK then
      redis.call('LTRIM', kr, 0, cap - 1)
    end
    redis.call('EXPIRE', kr, tonumber(ARGV[o + 9]))
  end
  return {verdict, b, m, q}
end
""".replace("RECENT_SLACK", "20")

# KEYS: burst, minute, month counters, usage hash, pending set, recent list.
# ARGV: burst, minute, month limits, counting ('1'/'0'), status class, request args.
_GUARD_LUA = (
    GUARD_LUA_FUNCTION
    + """
return lk_guard(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6],
  tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4] == '1', ARGV[5], 6)
"""
)

# A request counted by the verification-and-count script and then refused before the
# limiter (scope, key kind, `X-Org-Id`, client headers): give back what it took from each
# window (only windows still alive: an expired window has nothing to give back), add its
# status class, and correct its recent-request element.
# KEYS: burst, minute, month counters, usage hash, pending set, recent list.
# ARGV: refund ('1'/'0'), burst, minute, month limits, status class, usage TTL, old, new.
_REFUND_LUA = """
local b, m = 0, 0
if ARGV[1] == '1' then
  if tonumber(ARGV[2]) > 0 and redis.call('EXISTS', KEYS[1]) == 1 then
    b = redis.call('DECR', KEYS[1])
  end
  if tonumber(ARGV[3]) > 0 and redis.call('EXISTS', KEYS[2]) == 1 then
    m = redis.call('DECR', KEYS[2])
  end
  if tonumber(ARGV[4]) > 0 and redis.call('EXISTS', KEYS[3]) == 1 then
    redis.call('DECR', KEYS[3])
  end
elseif tonumber(ARGV[3]) > 0 then
  m = tonumber(redis.call('GET', KEYS[2]) or '0')
end
if ARGV[5] ~= '' then
  redis.call('HINCRBY', KEYS[4], ARGV[5], 1)
  redis.call('EXPIRE', KEYS[4], tonumber(ARGV[6]))
  redis.call('SADD', KEYS[5], KEYS[4])
end
if ARGV[7] ~= '' then
  local items = redis.call('LRANGE', KEYS[6], 0, -1)
  for i, v in ipairs(items) do
    if v == ARGV[7] then
      redis.call('LSET', KEYS[6], i - 1, ARGV[8])
      break
    end
  end
end
return m
"""

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
        if self.per_minute:
            remaining = self.minute_remaining
            result["X-RateLimit-Limit"] = str(self.per_minute)
            result["X-RateLimit-Remaining"] = str(remaining)
            result["X-RateLimit-Reset"] = str(self.minute_reset)
            result["RateLimit"] = f'"minute";r={remaining};t={self.reset_in}'
        policy = _policy(self.burst, self.per_minute)
        if policy:
            result["RateLimit-Policy"] = policy
        if not self.allowed:
            result["Retry-After"] = str(self.retry_after)
        return result


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
    return _month(now)[1]


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
    burst_key, minute_key, month_key = counter_keys(key_pk, org_pk, now)
    quota = effective.monthly if org_pk is not None else 0
    try:
        verdict, _b, minute_used, _q = redisconn.registered(conn, _GUARD_LUA)(
            keys=[
                burst_key,
                minute_key,
                month_key,
                usage.redis_hash_key(key_pk, org_pk, usage.hour_start(now)),
                usage.redis_pending_key(),
                usage.recent_redis_key(key_pk),
            ],
            args=[
                effective.burst,
                effective.per_minute,
                quota,
                "1" if count_limits else "0",
                status_class,
                *request_args(now, meta, body, pushed),
            ],
        )
    except redisconn.REDIS_ERRORS as exc:
        log_fail_open(exc)
        return _result(_ADMIT, effective, 0, now, degraded=True)
    return counted_result(key_pk, effective, now, int(verdict), int(minute_used), body, pushed)


def leased_result(limits: Limits, now: float, minute_used: int) -> LimitResult:
    """Admitted under an admission lease (ADR 0065): `minute_used` is the minute window's
    count as this process knows it, its own unused tokens left out."""
    return _result(_ADMIT, limits, minute_used, now)


def degraded_result(limits: Limits, now: float) -> LimitResult:
    """Redis unreachable: admitted without counting, the limits reported unused."""
    return _result(_ADMIT, limits, 0, now, degraded=True)


def log_fail_open(exc: BaseException) -> None:
    redisconn.error_log.error(
        "ratelimit", "Redis unreachable: rate limits fail open, usage not counted", exc
    )


def request_args(now: float, meta: UsageMeta, body: str, pushed: int) -> list[object]:
    """The request's common arguments of `GUARD_LUA_FUNCTION` (its `o` .. `o + 9`)."""
    return [
        _month(now)[1] + 86400,
        repr(now),
        meta.ip or "",
        usage.clean_version(meta.client_version),
        usage.REDIS_HASH_TTL,
        usage.MAX_VERSIONS,
        body,
        pushed,
        usage.RECENT_MAX,
        usage.RECENT_TTL,
    ]


def counted_result(
    key_pk: int,
    limits: Limits,
    now: float,
    verdict: int,
    minute_used: int,
    body: str,
    pushed: int,
) -> LimitResult:
    """The result of a request the script checked and counted (see `GUARD_LUA_FUNCTION`)."""
    recent = None
    if body:
        recent = usage.RecentMark(key_pk, 429 if verdict != _ADMIT else pushed, body)
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
    refunding = result.allowed and not result.degraded
    status_class = usage.status_class(status) if result.allowed else ""
    conn = redisconn.client()
    if conn is None or result.degraded:
        return result
    quota = result.monthly if org_pk is not None else 0
    recent = result.recent
    old = new = ""
    if recent is not None and status != recent.status:
        old, new = f"{recent.status} {recent.body}", f"{status} {recent.body}"
    burst_key, minute_key, month_key = counter_keys(key_pk, org_pk, now)
    try:
        minute_used = redisconn.registered(conn, _REFUND_LUA)(
            keys=[
                burst_key,
                minute_key,
                month_key,
                usage.redis_hash_key(key_pk, org_pk, usage.hour_start(now)),
                usage.redis_pending_key(),
                usage.recent_redis_key(key_pk),
            ],
            args=[
                "1" if refunding else "0",
                result.burst,
                result.per_minute,
                quota,
                status_class,
                usage.REDIS_HASH_TTL,
                old,
                new,
            ],
        )
    except redisconn.REDIS_ERRORS as exc:
        redisconn.error_log.error("ratelimit", "Redis unreachable: refund not made", exc)
        return result
    return replace(result, minute_used=max(0, int(minute_used)))


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
    burst_key, minute_key, month_key = counter_keys(key_pk, org_pk, now)
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
