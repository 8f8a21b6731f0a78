"""The guards' store: one protocol, a Redis and a local-memory implementation (ADR 0073).

Like Django's cache backends, the implementation is chosen once per settings
(`backend()`): `RedisBackend` on `REDIS_URL` (shared by every process; every rule is one
Lua script, so one round trip and atomic), `LocalBackend` on the embedded default (one
process; every rule is the same logic in Python under a lock, on the local-memory cache).
The layers above (`keycache`, `ratelimit`, `usage`) compute every name and argument and
never ask which implementation they talk to.

This module is organised by rule: each section holds the rule's Lua and, next to it, its
Python twin, so a change to a rule is made in one place, in both languages. Names reach
the scripts as KEYS; no script builds a name.

Rules:
- verification cache: `lookup`, `fill` (compare-and-set), `invalidate_key`,
  `invalidate_org` (ADR 0061, leases' markers of ADR 0065);
- check and count: the burst, minute and month windows of a request, its usage hash and
  its recent-request element (ADR 0060);
- lookup and count: the two above in one round trip, with an admission lease asked for
  (ADR 0064, ADR 0065); Redis only (`None` from the local store: the caller takes the
  two-step path, which costs nothing extra there);
- refund: give back what a request counted early took, once it is refused before the
  limiter;
- response status: a 4xx/5xx added to a counted request, its recent element corrected;
- recent requests: read a key's newest elements;
- fold: hand the pending usage counters to the database writer, exactly once.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Protocol

from django.core.cache import cache

from apikeys import redisconn

logger = logging.getLogger("apikeys.usage")

# Verdicts of the check-and-count rule.
ADMIT, BURST, MINUTE, QUOTA = 0, 1, 2, 3
CLASS_4XX = "c4"
CLASS_5XX = "c5"
# Not a status class: a request admitted from outside its key's IP allowlist in "report
# only" mode, counted in the same hash (`apikeys.networks_report`).
IP_REPORTED = "ipr"
# A recent-requests list is trimmed back to its cap once it is this much over.
RECENT_SLACK = 20
# A recent-requests list's expiry (its TTL, a week) is renewed once it has run down by
# this many seconds (at most half the TTL), not on every write: a key's list lives its
# TTL after its last request, less at most this. An `EXPIRE` is a write Redis propagates
# to its AOF and replicas; the `TTL` that decides costs a read.
RECENT_RENEW = 3600

# Lua shared by every script that adds to a recent list: trim it back to its cap once it
# is RECENT_SLACK over (readers look no further than that, and most writes need no
# LTRIM), and give it its expiry when it has none or renew it once it has run down by
# RECENT_RENEW. `length` is what LPUSH answered.
RECENT_LUA_FUNCTION = """
local function lk_keep_recent(name, length, cap, ttl)
  if length > cap + RECENT_SLACK then redis.call('LTRIM', name, 0, cap - 1) end
  -- (TTL answers -1 for a list without an expiry: renewed too.)
  if redis.call('TTL', name) <= ttl - math.min(RECENT_RENEW, math.floor(ttl / 2)) then
    redis.call('EXPIRE', name, ttl)
  end
end
""".replace("RECENT_SLACK", str(RECENT_SLACK)).replace("RECENT_RENEW", str(RECENT_RENEW))
# A lease takes at most this share of what is left in each window (ADR 0090): a quarter
# of the burst window (tokens idle in it die with its second), a sixteenth of the minute
# window, a 256th of the monthly quota (a refusal there reads "come back next month").
LEASE_DIVISORS = {"burst": 4, "minute": 16, "month": 256}


@dataclass(frozen=True, slots=True)
class Windows:
    """The names of one request's counters and records, and the limits of its windows."""

    burst: str
    minute: str
    month: str
    usage: str  # the key's usage hash for the hour
    pending: str  # the set of usage hashes waiting for the fold
    recent: str  # the key's recent-requests list
    burst_limit: int = 0
    minute_limit: int = 0
    month_limit: int = 0


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """What one request adds to usage, and the constants the rules need."""

    month_expiry: int  # when the month counter expires (epoch seconds)
    at: float
    ip: str
    version: str  # cleaned client version, or ""
    usage_ttl: int
    version_cap: int
    body: str  # the recent element's JSON, "" to push none
    status: int  # the status the element is pushed with
    recent_cap: int
    recent_ttl: int
    # The scopes the request needed, space-separated ("" for none): counted per scope.
    scopes: str = ""

    def args(self) -> list[object]:
        return [
            self.month_expiry,
            repr(self.at),
            self.ip,
            self.version,
            self.usage_ttl,
            self.version_cap,
            self.body,
            self.status,
            self.recent_cap,
            self.recent_ttl,
            self.scopes,
        ]


@dataclass(frozen=True, slots=True)
class Count:
    """The check-and-count verdict: ADMIT or the window that refused, and the minute
    window's count after it; `recent` is the local element pushed (to correct later)."""

    verdict: int
    minute_used: int
    recent: list[Any] | None = None


@dataclass(frozen=True, slots=True)
class LookedUpCount:
    """The lookup-and-count rule's answer when it counted: the cache entry, and the count
    (with `extra` tokens counted beyond this request for an admission lease)."""

    entry: bytes
    generation: bytes | None
    verdict: int
    minute_used: int
    extra: int
    # The lease epoch when the script ran (ADR 0091).
    epoch: int | None = None


@dataclass
class UsageDelta:
    """Counts of one key and hour not yet in the database."""

    key_pk: int
    org_pk: int | None
    hour: int
    requests: int = 0
    count_4xx: int = 0
    count_5xx: int = 0
    last_at: float = 0.0
    last_ip: str = ""
    versions: set[str] = field(default_factory=set)
    # Requests per scope they needed.
    scopes: dict[str, int] = field(default_factory=dict)
    # Requests from outside the key's report-only IP allowlist.
    ip_reported: int = 0

    @property
    def count_2xx(self) -> int:
        return self.requests - self.count_4xx - self.count_5xx

    def merge(self, other: UsageDelta) -> None:
        self.requests += other.requests
        self.count_4xx += other.count_4xx
        self.count_5xx += other.count_5xx
        if other.last_at >= self.last_at:
            self.last_at, self.last_ip = other.last_at, other.last_ip or self.last_ip
        self.versions |= other.versions
        self.add_scopes(other.scopes)
        self.ip_reported += other.ip_reported

    def add_scopes(self, scopes: dict[str, int]) -> None:
        for scope, count in scopes.items():
            self.scopes[scope] = self.scopes.get(scope, 0) + count


class Backend(Protocol):
    """The guards' store. Redis errors (`redisconn.REDIS_ERRORS`) propagate: each caller
    decides how it degrades.

    The verification cache's names (`entry`, `version`, `generation_*`) are in the default
    cache's namespace, as its API names them (`apikey:<digest>`); every other name is a
    guard name (`redisconn.rkey`)."""

    shared: bool  # True when every process sees the same counters (Redis)

    def lookup(
        self, entry: str, version: str, generation_prefix: str
    ) -> tuple[Any, bytes | None, bytes | None]: ...

    def generation(self, name: str) -> bytes | None: ...

    def fill(
        self,
        entry: str,
        version_name: str,
        generation_name: str | None,
        version: bytes | None,
        generation: bytes | None,
        value: bytes,
        ttl: int,
    ) -> None: ...

    def invalidate_key(
        self,
        entry: str,
        version_name: str,
        lease_marker: str,
        epoch: tuple[str, str],
        marker: bytes,
        ttl: int,
    ) -> int: ...

    def invalidate_org(
        self, generation_name: str, lease_marker: str, epoch: tuple[str, str], marker: bytes
    ) -> int: ...

    def count(
        self, w: Windows, record: RequestRecord, *, counting: bool, status_class: str
    ) -> Count: ...

    def lookup_and_count(
        self,
        entry: str,
        version: str,
        generation_prefix: str,
        key_pk: int,
        w: Windows,
        record: RequestRecord,
        now: float,
        lease: tuple[int, int, int, int, str, str, str, str],
    ) -> tuple[LookedUpCount | None, tuple[Any, bytes | None, bytes | None]]: ...

    def lease_ahead(
        self,
        asks: list[AheadAsk],
        *,
        generation_prefix: str,
        now: float,
        month_expiry: int,
        lease: tuple[int, int, int, str, str],
    ) -> tuple[int, list[tuple[bytes | None, int, int, int]]]:
        """Leases for the host on several keys at once, no request counted (ADR 0093):
        the lease epoch read and, per key, its entry, the tokens counted, the minute
        window's count and the windows counted in (bits as `leases` flags). `lease`:
        length and declared trust (ms), the newest epoch the host has read, the epoch's
        and the trust's names."""
        ...

    def refund(
        self,
        w: Windows,
        *,
        give_back: bool,
        status_class: str,
        usage_ttl: int,
        recent: tuple[str, str, list[Any] | None] | None,
    ) -> int: ...

    def record_status(
        self,
        usage: str,
        pending: str,
        usage_ttl: int,
        status_class: str,
        recent_name: str,
        recent: tuple[str, str, list[Any] | None] | None,
    ) -> None: ...

    def recent(self, name: str, count: int) -> list[tuple[int, str]]: ...

    def fold(self, write: Callable[[list[UsageDelta], str | None], int]) -> int: ...


# --- rule: verification-cache lookup ----------------------------------------------------

_LOOKUP_LUA = """
local e = redis.call('GET', KEYS[1])
local v = redis.call('GET', KEYS[2])
if not e then return {false, v, false} end
local nl = string.find(e, '\\n', 1, true)
if not nl or nl == 1 then return {e, v, false} end
return {e, v, redis.call('GET', ARGV[1] .. string.sub(e, 1, nl - 1))}
"""


def _lookup_local(
    entry_name: str, version_name: str, generation_prefix: str
) -> tuple[Any, bytes | None, bytes | None]:
    entry = cache.get(entry_name)
    version = cache.get(version_name)
    generation = None
    if isinstance(entry, bytes):
        head = entry.partition(b"\n")[0]
        if head.isdigit():
            found = cache.get(generation_prefix + head.decode())
            generation = found if isinstance(found, bytes) else None
    return entry, version, generation


# --- rule: fill the cache only if nothing changed since the database read ---------------

# KEYS: entry, version marker, [org generation]. ARGV: version, generation ('' meaning
# absent), value, TTL.
_FILL_LUA = """
local v = redis.call('GET', KEYS[2]) or ''
if v ~= ARGV[1] then return 0 end
if KEYS[3] then
  local g = redis.call('GET', KEYS[3]) or ''
  if g ~= ARGV[2] then return 0 end
end
redis.call('SET', KEYS[1], ARGV[3], 'EX', tonumber(ARGV[4]))
return 1
"""

_local_lock = threading.Lock()


def _fill_local(
    entry: str,
    version_name: str,
    generation_name: str | None,
    version: bytes | None,
    generation: bytes | None,
    value: bytes,
    ttl: int,
) -> None:
    with _local_lock:
        if cache.get(version_name) != version:
            return
        if generation_name is not None:
            current = cache.get(generation_name)
            if (current if isinstance(current, bytes) else None) != generation:
                return
        cache.set(entry, value, ttl)


# --- rule: invalidation (and how long admission leases may still be held) ---------------

# Both answer how long (ms) leases on what they changed may still be held by some host
# (ADR 0065), from the lease marker and Redis' clock, and when one may be, move the lease
# epoch on (ADR 0091): no host admits under a lease of an older epoch once it has read the
# new one. Markers stay: the invalidation at commit must find what the one made inside
# the transaction found.
# The wait is the shorter of the marker's rest and the longest trust in a reading of the
# epoch any granting host has declared (`lease:trust`, kept by the count script): it does
# not depend on the invalidating process's own settings.
_LEASE_LEFT_LUA = """
local function lk_lease_left(name, epoch, trust)
  local untl_ms = tonumber(redis.call('GET', name) or '0')
  local t = redis.call('TIME')
  local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local left = untl_ms - now_ms
  if left > 0 then
    -- Moved on to Redis' time in ms at least: an epoch lost with Redis' data comes back
    -- above every value hosts have read before.
    local e = tonumber(redis.call('GET', epoch) or '0') or 0
    redis.call('SET', epoch, string.format('%d', math.max(e + 1, now_ms)))
    return math.min(left, tonumber(redis.call('GET', trust) or '') or left)
  end
  return 0
end
"""

# The lease epoch as a host reads it: none yet (or lost with Redis' data) starts at Redis'
# time in ms; one older than the host has read (`seen`: Redis came back with older data)
# is raised to it. Either only ends leases sooner. Written back when it changed, or
# always (`always`: a reading that must be refused by a node that takes no writes).
EPOCH_LUA_FUNCTION = """
local function lk_epoch(name, seen, always)
  local held = tonumber(redis.call('GET', name) or '') or 0
  local ep = held
  if ep == 0 then
    local t = redis.call('TIME')
    ep = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  end
  local s = tonumber(seen) or 0
  if s > ep then ep = s end
  if always or ep ~= held then
    redis.call('SET', name, string.format('%d', ep))
  end
  return ep
end
"""

_INVALIDATE_KEY_LUA = (
    _LEASE_LEFT_LUA
    + """
redis.call('SET', KEYS[2], ARGV[1], 'EX', tonumber(ARGV[2]))
redis.call('DEL', KEYS[1])
return lk_lease_left(KEYS[3], KEYS[4], KEYS[5])
"""
)

_INVALIDATE_ORG_LUA = (
    _LEASE_LEFT_LUA
    + """
redis.call('SET', KEYS[1], ARGV[1])
return lk_lease_left(KEYS[2], KEYS[3], KEYS[4])
"""
)


def _invalidate_key_local(entry: str, version_name: str, marker: bytes, ttl: int) -> int:
    with _local_lock:
        cache.set(version_name, marker, ttl)
        cache.delete(entry)
    return 0  # no process holds a lease without a shared store


def _invalidate_org_local(generation_name: str, marker: bytes) -> int:
    with _local_lock:
        cache.set(generation_name, marker, None)
    return 0


# --- rule: check and count one request --------------------------------------------------

# `o` is the index in ARGV of the request's `RequestRecord.args()`: month-counter expiry,
# time, IP, client version, usage-hash TTL, version cap, recent body, status, recent cap,
# recent TTL, the scopes needed (space-separated). Only when every limited window has
# room are the counters incremented, so a refused request takes nothing; the usage hash
# (with a count per scope) and the recent list record it either way.
GUARD_LUA_FUNCTION = (
    RECENT_LUA_FUNCTION
    + """
local function lk_limits(kb, km, kq, kh, kp, kr, bl, ml, ql, counting, cls, o)
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
  for sc in string.gmatch(ARGV[o + 10], '%S+') do
    redis.call('HINCRBY', kh, 's:' .. sc, 1)
  end
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
    lk_keep_recent(kr, redis.call('LPUSH', kr, st .. ' ' .. body), tonumber(ARGV[o + 8]),
      tonumber(ARGV[o + 9]))
  end
  return {verdict, b, m, q}
end
"""
)

# KEYS: burst, minute, month counters, usage hash, pending set, recent list.
# ARGV: burst, minute, month limits, counting ('1'/'0'), status class, the record.
_COUNT_LUA = (
    GUARD_LUA_FUNCTION
    + """
return lk_limits(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6],
  tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4] == '1', ARGV[5], 6)
"""
)


class _LocalUsage:
    """The local twin of the usage hashes, the pending set and the recent lists."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.deltas: dict[tuple[int, int | None, int], UsageDelta] = {}
        self.recent: dict[str, deque[list[Any]]] = {}
        # Called after a request is recorded (the embedded default's periodic fold starts).
        self.on_record: Callable[[], None] = lambda: None

    def record(
        self,
        ids: tuple[int, int | None, int],
        *,
        record: RequestRecord | None,
        status_class: str,
    ) -> None:
        with self.lock:
            delta = self.deltas.get(ids)
            if delta is None:
                delta = self.deltas[ids] = UsageDelta(*ids)
            if record is not None:
                delta.requests += 1
                delta.last_at, delta.last_ip = record.at, record.ip or delta.last_ip
                if record.version and len(delta.versions) < record.version_cap:
                    delta.versions.add(record.version)
                for scope in record.scopes.split():
                    delta.scopes[scope] = delta.scopes.get(scope, 0) + 1
            if status_class == CLASS_4XX:
                delta.count_4xx += 1
            elif status_class == CLASS_5XX:
                delta.count_5xx += 1
            elif status_class == IP_REPORTED:
                delta.ip_reported += 1
        self.on_record()

    def push(self, name: str, status: int, body: str, cap: int) -> list[Any]:
        element: list[Any] = [status, body]
        with self.lock:
            entries = self.recent.get(name)
            if entries is None:
                entries = self.recent[name] = deque(maxlen=cap)
            entries.appendleft(element)
        return element


def usage_ids(name: str) -> tuple[int, int | None, int] | None:
    """(key, org, hour) of a usage hash's name `<prefix>:g:u:<key>:<org>:<hour>`."""
    parts = name.rsplit(":", 3)
    if len(parts) != 4:
        return None
    _, key, org, hour = parts
    try:
        return int(key), (None if org == "-" else int(org)), int(hour)
    except ValueError:
        return None


def _count_local(
    usage: _LocalUsage, w: Windows, record: RequestRecord, counting: bool, status_class: str
) -> Count:
    verdict = ADMIT
    with _local_lock:
        values = cache.get_many([w.burst, w.minute, w.month])
        b = int(values.get(w.burst, 0))
        m = int(values.get(w.minute, 0))
        q = int(values.get(w.month, 0))
        if counting:
            if w.month_limit and q >= w.month_limit:
                verdict = QUOTA
            elif w.minute_limit and m >= w.minute_limit:
                verdict = MINUTE
            elif w.burst_limit and b >= w.burst_limit:
                verdict = BURST
        if verdict == ADMIT and counting:
            if w.burst_limit:
                cache.set(w.burst, b + 1, 2)
            if w.minute_limit:
                m += 1
                cache.set(w.minute, m, 120)
            if w.month_limit:
                cache.set(w.month, q + 1, max(1, int(record.month_expiry - record.at)))
    ids = usage_ids(w.usage)
    if ids is not None:
        usage.record(
            ids, record=record, status_class=CLASS_4XX if verdict != ADMIT else status_class
        )
    element = None
    if record.body:
        status = 429 if verdict != ADMIT else record.status
        element = usage.push(w.recent, status, record.body, record.recent_cap)
    return Count(verdict, m, element)


# --- rule: look the key up and count the request in one round trip ----------------------

# Lua shared by the verification-and-count script and the lease-ahead script (ADR 0093).
# `lk_entry_limits`: a cache entry's org generation (false: none) and, when the entry is
# complete (key and org part), current (its generation is the org's), of key `kid` and
# acceptable at `now`, its org and limits from its third line
# `<key id>|<burst>|<minute>|<month>|<accept until>` (0: never, -1: no expiry); else no
# limits. `lk_lease`: a lease of `c` tokens (`keep` of them the asking request's own,
# already counted) for a host, at most a share of what each limited window has left after
# b, m, q; counted (a new counter gets its expiry), with the key's and org's lease markers
# and the longest trust a granting host declares. Answers the tokens counted beyond `keep`
# (0: none) and the minute window's count.
# `st`, one table for the whole call, holds what every lease of the call shares, so that a
# call for many keys does it once (ADR 0101): the org generations read (`gens`), the
# markers' end (`untl`: Redis' clock, read once as the first lease is counted, plus the
# lease length), the org markers already set (`orgs`) and whether the trust was
# declared. `fresh`: which of b and m the caller knows to be absent (bits 1 and 2),
# so that their counters are written with their expiry in one step.
LEASE_LUA_FUNCTIONS = """
local function lk_entry_limits(e, gprefix, kid, now, st)
  local nl = string.find(e, '\\n', 1, true)
  if not nl then return false end
  local org = string.sub(e, 1, nl - 1)
  local g = false
  if nl > 1 then
    g = st.gens[org]
    if g == nil then
      g = redis.call('GET', gprefix .. org)
      st.gens[org] = g
    end
  end
  local untl = 0
  local k, bl, ml, ql
  local nl2 = string.find(e, '\\n', nl + 1, true)
  if nl2 and (nl == 1 or string.sub(e, nl + 1, nl2 - 1) == (g or '')) then
    local nl3 = string.find(e, '\\n', nl2 + 1, true)
    if nl3 then
      k, bl, ml, ql, untl = string.match(string.sub(e, nl2 + 1, nl3 - 1),
        '^(%d+)|(%d+)|(%d+)|(%d+)|(%-?[%d.e+]+)$')
      untl = tonumber(untl) or 0
    end
  end
  if k ~= kid or untl == 0 or (untl > 0 and tonumber(now) >= untl) then return g end
  if org == '' then ql = '0' end
  return g, org, tonumber(bl), tonumber(ml), tonumber(ql)
end
local function lk_mark_lease(name, untl_ms)
  if untl_ms > tonumber(redis.call('GET', name) or '0') then
    redis.call('SET', name, string.format('%d', untl_ms))
  end
end
local function lk_count_ahead(name, n, limited, expire, at, fresh)
  if not limited then return 0 end
  if fresh and not at then
    redis.call('SET', name, n, 'EX', expire)
    return n
  end
  local v = redis.call('INCRBY', name, n)
  if v == n then
    if at then redis.call('EXPIREAT', name, expire) else redis.call('EXPIRE', name, expire) end
  end
  return v
end
local function lk_lease(kb, km, kq, bl, ml, ql, b, m, q, c, keep, key_marker, org_marker,
    org, length_ms, trust_ms, trust_name, month_expiry, st, fresh)
  c = tonumber(c) or 0
  if c <= keep then return 0, m end
  if bl > 0 then c = math.min(c, math.floor((bl - b) / BURST_DIVISOR)) end
  if ml > 0 then c = math.min(c, math.floor((ml - m) / MINUTE_DIVISOR)) end
  if ql > 0 then c = math.min(c, math.floor((ql - q) / MONTH_DIVISOR)) end
  if c <= keep then return 0, m end
  local n = c - keep
  if not st.untl then
    local t = redis.call('TIME')
    st.untl = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(length_ms)
  end
  lk_count_ahead(kb, n, bl > 0, 2, false, fresh % 2 == 1)
  if ml > 0 then m = lk_count_ahead(km, n, true, 120, false, fresh % 4 >= 2) end
  lk_count_ahead(kq, n, ql > 0, tonumber(month_expiry), true, false)
  -- The markers hold until when (ms, Redis' clock) a lease may be held; no expiry, so
  -- no eviction policy allowed for this deployment drops them (`lk_mark_lease`).
  lk_mark_lease(key_marker, st.untl)
  if org ~= '' and not st.orgs[org_marker] then
    lk_mark_lease(org_marker, st.untl)
    st.orgs[org_marker] = true
  end
  -- The longest trust a granting host declares, kept as long as its leases may live.
  if not st.trusted then
    local tr = tonumber(trust_ms) or 0
    if tr >= (tonumber(redis.call('GET', trust_name) or '0') or 0) then
      redis.call('SET', trust_name, string.format('%d', tr), 'PX', tonumber(length_ms) + 100)
    end
    st.trusted = true
  end
  return n, m
end
local function lk_call_state()
  return {gens = {}, orgs = {}, untl = false, trusted = false}
end
"""
for _window, _divisor in LEASE_DIVISORS.items():
    LEASE_LUA_FUNCTIONS = LEASE_LUA_FUNCTIONS.replace(f"{_window.upper()}_DIVISOR", str(_divisor))

# The warm path of a guarded request (ADR 0064): the lookup, and when the entry is
# complete (key and org part), current (its generation is the org's), of the expected key
# (ARGV[2]) and acceptable at ARGV[3], the check and count of `lk_limits` with the limits
# stored in the entry's third line `<key id>|<burst>|<minute>|<month>|<accept until>`
# (0: never, -1: no expiry). Anything else returns the lookup's answer alone.
# KEYS: entry, version marker, burst, minute, month counters, usage hash, pending set,
# recent list, the key's lease marker, the org's lease marker, the lease epoch, the
# longest trust in a reading of it (ms).
# ARGV: generation prefix, key id, now, the record (4..14), lease tokens wanted (0 or 1:
# none), lease length in ms, how long the host trusts a reading of the epoch (ms), the
# newest epoch the host has read.
_LOOKUP_COUNT_LUA = (
    GUARD_LUA_FUNCTION
    + EPOCH_LUA_FUNCTION
    + LEASE_LUA_FUNCTIONS
    + """
local e = redis.call('GET', KEYS[1])
if not e then return {false, redis.call('GET', KEYS[2]), false} end
local st = lk_call_state()
local g, org, bl, ml, ql = lk_entry_limits(e, ARGV[1], ARGV[2], ARGV[3], st)
if not bl then return {e, redis.call('GET', KEYS[2]), g} end
local r = lk_limits(KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8],
  bl, ml, ql, true, '', 4)
-- An admission lease (ADR 0065, 0090): when every limited window has room, count a block
-- of tokens at once for the calling host to admit locally until the lease ends.
local extra = 0
if r[1] == 0 then
  extra, r[3] = lk_lease(KEYS[3], KEYS[4], KEYS[5], bl, ml, ql, r[2], r[3], r[4],
    tonumber(ARGV[15]), 1, KEYS[9], KEYS[10], org, ARGV[16], ARGV[17], KEYS[12], ARGV[4],
    st, 0)
end
-- The epoch as this host reads it (`lk_epoch`).
return {e, false, g, r[1], r[3], extra, lk_epoch(KEYS[11], ARGV[18], false)}
"""
)
_LOOKUP_COUNT = redisconn.FastScript(_LOOKUP_COUNT_LUA)


# --- rule: leases asked for ahead of requests (ADR 0093) ----------------------------------

# A host's leases for the second that just began, on keys that were busy on it in the
# second before, asked for in one call: per key, when its entry is current and acceptable
# (as the verification-and-count script checks it), a lease of at most the tokens wanted
# and a share of what each window has left (`lk_lease`); nothing is counted for a request.
# KEYS: the lease epoch, the longest trust in a reading of it (ms); then per key
# (AHEAD_KEYS each): entry, burst, minute, month counters, the key's and the org's lease
# markers.
# ARGV: lease length in ms, how long the host trusts a reading of the epoch (ms), the
# newest epoch the host has read, generation prefix, now, the month counter's expiry; then
# per key (AHEAD_ARGS each): key id, tokens wanted.
# Answers the epoch as the host reads it (always written back, as the pusher's reading:
# a node that takes no writes refuses the call) and, per key, {entry (false: none),
# tokens counted, the minute window's count, which windows they were counted in (bits:
# burst 1, minute 2, month 4)}.
AHEAD_KEYS, AHEAD_ARGS = 6, 2
_LEASE_AHEAD_LUA = (
    EPOCH_LUA_FUNCTION
    + LEASE_LUA_FUNCTIONS
    + """
local out = {}
local st = lk_call_state()
for i = 0, (#KEYS - 2) / AHEAD_KEYS - 1 do
  local k, a = 2 + i * AHEAD_KEYS, 6 + i * AHEAD_ARGS
  local e = redis.call('GET', KEYS[k + 1])
  local got, m, w = 0, 0, 0
  if e then
    local _, org, bl, ml, ql = lk_entry_limits(e, ARGV[4], ARGV[a + 1], ARGV[5], st)
    if bl then
      local now = redis.call('MGET', KEYS[k + 2], KEYS[k + 3], KEYS[k + 4])
      m = tonumber(now[2] or '0')
      local fresh = 0
      if not now[1] then fresh = fresh + 1 end
      if not now[2] then fresh = fresh + 2 end
      got, m = lk_lease(KEYS[k + 2], KEYS[k + 3], KEYS[k + 4], bl, ml, ql,
        tonumber(now[1] or '0'), m, tonumber(now[3] or '0'), ARGV[a + 2], 0,
        KEYS[k + 5], KEYS[k + 6], org, ARGV[1], ARGV[2], KEYS[2], ARGV[6], st, fresh)
      if bl > 0 then w = w + 1 end
      if ml > 0 then w = w + 2 end
      if ql > 0 then w = w + 4 end
    end
  end
  out[i + 1] = {e or false, got, m, w}
end
return {lk_epoch(KEYS[1], ARGV[3], true), out}
""".replace("AHEAD_KEYS", str(AHEAD_KEYS)).replace("AHEAD_ARGS", str(AHEAD_ARGS))
)
_LEASE_AHEAD = redisconn.FastScript(_LEASE_AHEAD_LUA)


@dataclass(frozen=True, slots=True)
class AheadAsk:
    """One key's lease asked for ahead (`Backend.lease_ahead`)."""

    entry: str  # the verification cache's name of its entry
    key_pk: int
    counters: tuple[str, str, str]  # burst, minute, month counters of the second
    key_marker: str
    org_marker: str
    tokens: int


# --- rule: refund what a request counted early took --------------------------------------


def _status_lua(*, keys: int, args: int) -> str:
    """Lua shared by the refund and response scripts: count the status class ARGV[args]
    in the usage hash KEYS[keys] (TTL ARGV[args+1], listed in the pending set
    KEYS[keys+1]), and replace the recent element ARGV[args+2] by ARGV[args+3] in the
    recent list KEYS[keys+2]. An empty class or element skips its part."""
    k, a = keys, args
    return f"""
if ARGV[{a}] ~= '' then
  redis.call('HINCRBY', KEYS[{k}], ARGV[{a}], 1)
  redis.call('EXPIRE', KEYS[{k}], tonumber(ARGV[{a + 1}]))
  redis.call('SADD', KEYS[{k + 1}], KEYS[{k}])
end
if ARGV[{a + 2}] ~= '' then
  local items = redis.call('LRANGE', KEYS[{k + 2}], 0, -1)
  for i, v in ipairs(items) do
    if v == ARGV[{a + 2}] then
      redis.call('LSET', KEYS[{k + 2}], i - 1, ARGV[{a + 3}])
      break
    end
  end
end
"""


# A request counted by the lookup-and-count rule and then refused before the limiter
# (scope, key kind, org header, client headers): give back what it took from each window
# (only windows still alive: an expired window has nothing to give back), add its status
# class, and correct its recent element. Answers the minute window's count.
# KEYS: burst, minute, month counters, usage hash, pending set, recent list.
# ARGV: give back ('1'/'0'), burst, minute, month limits, status class, usage TTL, old
# element, new element.
_REFUND_LUA = (
    """
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
"""
    + _status_lua(keys=4, args=5)
    + """
return m
"""
)


def _refund_local(
    usage: _LocalUsage,
    w: Windows,
    give_back: bool,
    status_class: str,
    recent: tuple[str, str, list[Any] | None] | None,
) -> int:
    with _local_lock:
        m = int(cache.get(w.minute, 0)) if w.minute_limit else 0
        if give_back:
            for name, limit in (
                (w.burst, w.burst_limit),
                (w.minute, w.minute_limit),
                (w.month, w.month_limit),
            ):
                if limit:
                    try:
                        left = cache.decr(name)  # keeps the window's expiry
                    except ValueError:  # the window has ended: nothing to give back
                        continue
                    if name == w.minute:
                        m = left
    _status_local(usage, w.usage, status_class, recent)
    return m


# --- rule: the response's status for a counted request -----------------------------------

# KEYS: usage hash, pending set, recent list. ARGV: status class ('' for none), usage TTL,
# old element, new element ('' for none).
_RESPONSE_LUA = _status_lua(keys=1, args=1) + "return 1\n"


def _status_local(
    usage: _LocalUsage,
    usage_name: str,
    status_class: str,
    recent: tuple[str, str, list[Any] | None] | None,
) -> None:
    if status_class:
        ids = usage_ids(usage_name)
        if ids is not None:
            usage.record(ids, record=None, status_class=status_class)
    if recent is not None and recent[2] is not None:
        status = recent[1].partition(" ")[0]
        with usage.lock:
            recent[2][0] = int(status)


# --- rule: read a key's recent requests --------------------------------------------------


def _recent_local(usage: _LocalUsage, name: str, count: int) -> list[tuple[int, str]]:
    with usage.lock:
        raw = [tuple(e) for e in list(usage.recent.get(name, ()))[:count]]
    return [(int(status), str(body)) for status, body in raw]


# --- rule: fold the pending usage counters, exactly once ---------------------------------

# Claim up to ARGV[3] pending hashes: each is renamed under the batch and the batch is
# listed (with its time) so a fold that crashes is finished by the next one.
# KEYS: pending set, batches hash. ARGV: batch id, claimed prefix, chunk, now.
_CLAIM_LUA = """
local members = redis.call('SPOP', KEYS[1], tonumber(ARGV[3]))
local claimed = {}
for _, k in ipairs(members) do
  if redis.call('EXISTS', k) == 1 then
    redis.call('RENAME', k, ARGV[2] .. '|' .. k)
    table.insert(claimed, k)
  end
end
if #claimed > 0 then
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[4] .. ' ' .. table.concat(claimed, ' '))
end
return claimed
"""

# Claimed batches older than this are assumed abandoned by a crashed fold and finished.
ABANDONED_AFTER = 60
CLAIM_CHUNK = 1000


def _delta_from_hash(name: str, data: dict[bytes, bytes]) -> UsageDelta | None:
    ids = usage_ids(name)
    if ids is None or not data:
        return None
    fields = {k.decode(): v.decode() for k, v in data.items()}
    delta = UsageDelta(*ids)
    delta.requests = int(fields.get("n", 0))
    delta.count_4xx = int(fields.get(CLASS_4XX, 0))
    delta.count_5xx = int(fields.get(CLASS_5XX, 0))
    delta.last_at = float(fields.get("at", 0) or 0)
    delta.last_ip = fields.get("ip", "")
    delta.versions = {f[2:] for f in fields if f.startswith("v:")}
    delta.scopes = {f[2:]: int(v) for f, v in fields.items() if f.startswith("s:")}
    delta.ip_reported = int(fields.get(IP_REPORTED, 0))
    return delta


def _fold_local(usage: _LocalUsage, write: Callable[[list[UsageDelta], str | None], int]) -> int:
    with usage.lock:
        deltas = list(usage.deltas.values())
        usage.deltas.clear()
    if not deltas:
        return 0
    try:
        return write(deltas, None)
    except Exception:
        _put_back(usage, deltas)
        raise


def _put_back(usage: _LocalUsage, deltas: Iterable[UsageDelta]) -> None:
    with usage.lock:
        for delta in deltas:
            ids = (delta.key_pk, delta.org_pk, delta.hour)
            mine = usage.deltas.get(ids)
            if mine is None:
                usage.deltas[ids] = delta
            else:
                mine.merge(delta)


# --- the two implementations --------------------------------------------------------------


def _recent_arg(recent: tuple[str, str, list[Any] | None] | None) -> tuple[str, str]:
    return ("", "") if recent is None else (recent[0], recent[1])


class RedisBackend:
    """Every rule as one Lua script on the Redis of the default cache."""

    shared = True

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        # A name of the cache's namespace as Redis knows it (the cache's prefix and
        # version in front); memoised, as the hot path asks for the same few names.
        self._raw: Callable[[str], str] = lru_cache(maxsize=16384)(cache.make_key)

    def _script(self, source: str) -> Any:
        return redisconn.registered(self.conn, source)

    def lookup(
        self, entry: str, version: str, generation_prefix: str
    ) -> tuple[Any, bytes | None, bytes | None]:
        raw = self._raw
        found, marker, generation = self._script(_LOOKUP_LUA)(
            keys=[raw(entry), raw(version)], args=[raw(generation_prefix)]
        )
        return found, marker, generation

    def generation(self, name: str) -> bytes | None:
        value = self.conn.get(self._raw(name))
        return value if isinstance(value, bytes) else None

    def fill(
        self,
        entry: str,
        version_name: str,
        generation_name: str | None,
        version: bytes | None,
        generation: bytes | None,
        value: bytes,
        ttl: int,
    ) -> None:
        raw = self._raw
        keys = [raw(entry), raw(version_name)]
        if generation_name is not None:
            keys.append(raw(generation_name))
        self._script(_FILL_LUA)(keys=keys, args=[version or b"", generation or b"", value, ttl])

    def invalidate_key(
        self,
        entry: str,
        version_name: str,
        lease_marker: str,
        epoch: tuple[str, str],
        marker: bytes,
        ttl: int,
    ) -> int:
        return int(
            self._script(_INVALIDATE_KEY_LUA)(
                keys=[self._raw(entry), self._raw(version_name), lease_marker, *epoch],
                args=[marker, ttl],
            )
        )

    def invalidate_org(
        self, generation_name: str, lease_marker: str, epoch: tuple[str, str], marker: bytes
    ) -> int:
        # No expiry: entries embed it for up to their TTL, and one small key per org that
        # ever changed is cheap. Lost to eviction it only makes entries stale.
        return int(
            self._script(_INVALIDATE_ORG_LUA)(
                keys=[self._raw(generation_name), lease_marker, *epoch], args=[marker]
            )
        )

    def count(
        self, w: Windows, record: RequestRecord, *, counting: bool, status_class: str
    ) -> Count:
        verdict, _b, minute_used, _q = self._script(_COUNT_LUA)(
            keys=[w.burst, w.minute, w.month, w.usage, w.pending, w.recent],
            args=[
                w.burst_limit,
                w.minute_limit,
                w.month_limit,
                "1" if counting else "0",
                status_class,
                *record.args(),
            ],
        )
        return Count(int(verdict), int(minute_used))

    def lookup_and_count(
        self,
        entry: str,
        version: str,
        generation_prefix: str,
        key_pk: int,
        w: Windows,
        record: RequestRecord,
        now: float,
        lease: tuple[int, int, int, int, str, str, str, str],
    ) -> tuple[LookedUpCount | None, tuple[Any, bytes | None, bytes | None]]:
        tokens, length_ms, trust_ms, seen, key_marker, org_marker, epoch, trust = lease
        raw = self._raw
        reply = redisconn.run_script(
            self.conn,
            _LOOKUP_COUNT,
            keys=[
                raw(entry),
                raw(version),
                w.burst,
                w.minute,
                w.month,
                w.usage,
                w.pending,
                w.recent,
                key_marker,
                org_marker,
                epoch,
                trust,
            ],
            args=[
                raw(generation_prefix),
                key_pk,
                repr(now),
                *record.args(),
                tokens,
                length_ms,
                trust_ms,
                seen,
            ],
        )
        looked_up = (reply[0], reply[1], reply[2])
        if len(reply) > 3:
            return (
                LookedUpCount(
                    reply[0], reply[2], int(reply[3]), int(reply[4]), int(reply[5]), int(reply[6])
                ),
                looked_up,
            )
        return None, looked_up

    def lease_ahead(
        self,
        asks: list[AheadAsk],
        *,
        generation_prefix: str,
        now: float,
        month_expiry: int,
        lease: tuple[int, int, int, str, str],
    ) -> tuple[int, list[tuple[bytes | None, int, int, int]]]:
        length_ms, trust_ms, seen, epoch, trust = lease
        keys: list[Any] = [epoch, trust]
        args: list[Any] = [
            length_ms,
            trust_ms,
            seen,
            self._raw(generation_prefix),
            repr(now),
            month_expiry,
        ]
        for ask in asks:
            keys += [self._raw(ask.entry), *ask.counters, ask.key_marker, ask.org_marker]
            args += [ask.key_pk, ask.tokens]
        reply = redisconn.run_script(self.conn, _LEASE_AHEAD, keys=keys, args=args)
        return int(reply[0]), [(e or None, int(got), int(m), int(w)) for e, got, m, w in reply[1]]

    def refund(
        self,
        w: Windows,
        *,
        give_back: bool,
        status_class: str,
        usage_ttl: int,
        recent: tuple[str, str, list[Any] | None] | None,
    ) -> int:
        old, new = _recent_arg(recent)
        return int(
            self._script(_REFUND_LUA)(
                keys=[w.burst, w.minute, w.month, w.usage, w.pending, w.recent],
                args=[
                    "1" if give_back else "0",
                    w.burst_limit,
                    w.minute_limit,
                    w.month_limit,
                    status_class,
                    usage_ttl,
                    old,
                    new,
                ],
            )
        )

    def record_status(
        self,
        usage: str,
        pending: str,
        usage_ttl: int,
        status_class: str,
        recent_name: str,
        recent: tuple[str, str, list[Any] | None] | None,
    ) -> None:
        old, new = _recent_arg(recent)
        self._script(_RESPONSE_LUA)(
            keys=[usage, pending, recent_name if recent is not None else usage],
            args=[status_class, usage_ttl, old, new],
        )

    def recent(self, name: str, count: int) -> list[tuple[int, str]]:
        pairs = []
        for value in self.conn.lrange(name, 0, count - 1):
            text = value.decode() if isinstance(value, bytes) else str(value)
            status, _, body = text.partition(" ")
            if status.isdigit():
                pairs.append((int(status), body))
        return pairs

    def fold(self, write: Callable[[list[UsageDelta], str | None], int]) -> int:
        total = 0
        now = time.time()
        batches = redisconn.rkey("u", "batches")
        # An abandoned batch that cannot be written (again) must not hold back what was
        # counted since: it stays claimed for the next fold, the pending counters are
        # claimed and folded all the same, and its error is raised at the end (each
        # failed batch is logged).
        failed: Exception | None = None
        for batch_raw, value in self.conn.hgetall(batches).items():
            batch = batch_raw.decode()
            claimed_at, *originals = value.decode().split(" ")
            if now - int(claimed_at) >= ABANDONED_AFTER:
                try:
                    total += self._fold_batch(batch, originals, write)
                except Exception as exc:
                    logger.exception(
                        "Usage batch %s could not be folded; it is tried again.", batch
                    )
                    failed = failed or exc
        while True:
            batch = uuid.uuid4().hex
            claimed = self._script(_CLAIM_LUA)(
                keys=[redisconn.rkey("u", "pending"), batches],
                args=[batch, redisconn.rkey("uc", batch), CLAIM_CHUNK, int(time.time())],
            )
            originals = [c.decode() if isinstance(c, bytes) else c for c in claimed]
            if not originals:
                break
            total += self._fold_batch(batch, originals, write)
            if len(originals) < CLAIM_CHUNK:
                break
        if failed is not None:
            raise failed
        return total

    def _fold_batch(
        self,
        batch: str,
        originals: list[str],
        write: Callable[[list[UsageDelta], str | None], int],
    ) -> int:
        claimed = [redisconn.rkey("uc", batch) + "|" + name for name in originals]
        pipe = self.conn.pipeline(transaction=False)
        for name in claimed:
            pipe.hgetall(name)
        deltas = [
            d
            for d in (
                _delta_from_hash(name, data)
                for name, data in zip(originals, pipe.execute(), strict=True)
            )
            if d is not None
        ]
        written = write(deltas, batch)
        # Only once the batch is in the database: a crash before this leaves it for the
        # next fold, whose marker row tells whether it was already written.
        pipe = self.conn.pipeline(transaction=False)
        if claimed:
            pipe.delete(*claimed)
        pipe.hdel(redisconn.rkey("u", "batches"), batch)
        pipe.execute()
        return written


class LocalBackend:
    """Every rule's Python twin, on this process's memory (the embedded default)."""

    shared = False

    def __init__(self, usage: _LocalUsage) -> None:
        self.usage = usage

    def lookup(
        self, entry: str, version: str, generation_prefix: str
    ) -> tuple[Any, bytes | None, bytes | None]:
        return _lookup_local(entry, version, generation_prefix)

    def generation(self, name: str) -> bytes | None:
        value = cache.get(name)
        return value if isinstance(value, bytes) else None

    def fill(
        self,
        entry: str,
        version_name: str,
        generation_name: str | None,
        version: bytes | None,
        generation: bytes | None,
        value: bytes,
        ttl: int,
    ) -> None:
        _fill_local(entry, version_name, generation_name, version, generation, value, ttl)

    def invalidate_key(
        self,
        entry: str,
        version_name: str,
        lease_marker: str,
        epoch: tuple[str, str],
        marker: bytes,
        ttl: int,
    ) -> int:
        return _invalidate_key_local(entry, version_name, marker, ttl)

    def invalidate_org(
        self, generation_name: str, lease_marker: str, epoch: tuple[str, str], marker: bytes
    ) -> int:
        return _invalidate_org_local(generation_name, marker)

    def count(
        self, w: Windows, record: RequestRecord, *, counting: bool, status_class: str
    ) -> Count:
        return _count_local(self.usage, w, record, counting, status_class)

    def lookup_and_count(
        self,
        entry: str,
        version: str,
        generation_prefix: str,
        key_pk: int,
        w: Windows,
        record: RequestRecord,
        now: float,
        lease: tuple[int, int, int, int, str, str, str, str],
    ) -> tuple[LookedUpCount | None, tuple[Any, bytes | None, bytes | None]]:
        # No round trip to save: the caller looks up, then counts.
        return None, _lookup_local(entry, version, generation_prefix)

    def lease_ahead(
        self,
        asks: list[AheadAsk],
        *,
        generation_prefix: str,
        now: float,
        month_expiry: int,
        lease: tuple[int, int, int, str, str],
    ) -> tuple[int, list[tuple[bytes | None, int, int, int]]]:
        # No lease without a shared store.
        return 0, [(None, 0, 0, 0) for _ in asks]

    def refund(
        self,
        w: Windows,
        *,
        give_back: bool,
        status_class: str,
        usage_ttl: int,
        recent: tuple[str, str, list[Any] | None] | None,
    ) -> int:
        return _refund_local(self.usage, w, give_back, status_class, recent)

    def record_status(
        self,
        usage: str,
        pending: str,
        usage_ttl: int,
        status_class: str,
        recent_name: str,
        recent: tuple[str, str, list[Any] | None] | None,
    ) -> None:
        _status_local(self.usage, usage, status_class, recent)

    def recent(self, name: str, count: int) -> list[tuple[int, str]]:
        return _recent_local(self.usage, name, count)

    def fold(self, write: Callable[[list[UsageDelta], str | None], int]) -> int:
        return _fold_local(self.usage, write)


# The local store outlives settings changes (tests switch between Redis and local memory):
# what this process counted stays until it is folded or discarded.
local_usage = _LocalUsage()


class _Chosen(threading.local):
    generation = -1
    backend: Backend | None = None


_chosen = _Chosen()


def backend() -> Backend:
    """The store of the current settings: Redis with `REDIS_URL`, else local memory.

    Chosen once per settings (and thread: each keeps the client it was given).
    """
    chosen = _chosen
    if chosen.generation != redisconn.settings_generation() or chosen.backend is None:
        conn = redisconn.client()
        chosen.backend = LocalBackend(local_usage) if conn is None else RedisBackend(conn)
        chosen.generation = redisconn.settings_generation()
    return chosen.backend
