"""Admission leases: a high-limit key's requests admitted without a Redis call each (ADR 0065).

A guarded request normally makes one Redis round trip (ADR 0064): the key's verification
and the check-and-count of its rate limits, atomically. For a key whose limits leave a lot
of room, the verification-and-count script may count a *block* of tokens at once and grant
the calling process an admission lease on them:

- **Never more than the limit.** The tokens are counted in the shared windows (burst,
  minute, monthly quota) when the lease is granted, so with any number of processes no
  more than the limit is admitted in a window. A lease takes at most 1/256 of what is left
  in any window (`keycache.LEASE_DIVISOR`) and at most `LATCHKEY_KEY_LEASE_TOKENS`; a key
  with less room left than that (every standard plan's burst window) gets no lease and
  keeps the exact one-trip path. A lease lives in one burst window (one second) and at
  most `LATCHKEY_KEY_LEASE_MS`; tokens it did not use go back to the minute and monthly
  windows (the monthly quota counts admitted requests only).
- **Revocation stays immediate.** While a lease may be held, a marker for the key and its
  org lives in Redis for the lease's length. An invalidation (revoke, rotation, delete,
  suspension, limit change: `keycache.invalidate_*`) reads how long the newest marker has
  left and returns only after that, so once it has returned no process accepts the key
  under a lease granted before the change. A holder trusts its lease for 90 % of its
  length, measured from before it asked: the margin covers clock-rate differences.
- **Usage is still counted.** Requests admitted under a lease are counted in this
  process (per key and hour: count, status classes, client versions, last time and IP;
  and the key's recent requests) and pushed to Redis every half second, when a lease
  ends, before a usage fold in this process, and at exit (gunicorn's `worker_exit`,
  `atexit`): a graceful shutdown loses none.

With leases off (`LATCHKEY_KEY_LEASE_MS=0`) or without Redis nothing here runs. The
pipeline reaches this module only through `apikeys.guard.counting.Leasing`, a wrapper of
the one-trip path; the layers below reach it only through `apikeys.held`.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from apikeys import held, keycache, ratelimit, redisconn, usage
from orgs.plans import Limits

logger = logging.getLogger("apikeys.guards")

# A holder trusts its lease for this fraction of the length Redis keeps its marker.
HOLDER_FRACTION = 0.9
PUSH_INTERVAL = 0.5


@dataclass
class Lease:
    """Tokens counted in the shared windows for this process to admit locally."""

    digest: str
    resolved: keycache.Resolved
    limits: Limits
    key_pk: int
    org_pk: int | None
    second: int
    valid_until: float  # time.monotonic()
    tokens: int
    minute_used: int  # the minute counter after the grant, every token included
    generation: int  # redisconn.settings_generation() at the grant


@dataclass
class _Pending:
    """What requests admitted under leases added, not yet pushed to Redis."""

    usage: dict[tuple[int, int | None, int], usage.UsageDelta] = field(default_factory=dict)
    # Per key, its newest requests (status, time, meta), encoded only when pushed: the
    # list in Redis keeps the newest `usage.RECENT_MAX` anyway.
    recent: dict[int, deque[tuple[int, float, ratelimit.UsageMeta]]] = field(default_factory=dict)
    # (key, org, second, burst?, minute?, month?) -> tokens to give back.
    returns: dict[tuple[int, int | None, int, bool, bool, bool], int] = field(default_factory=dict)

    def empty(self) -> bool:
        return not (self.usage or self.recent or self.returns)


_lock = threading.Lock()
_leases: dict[str, Lease] = {}
_pending = _Pending()


def take(digest: str, now: float) -> tuple[Lease, int] | None:
    """A token of this process's lease on `digest`, with the minute window's count to
    report, or None when there is no usable lease (the caller asks Redis)."""
    with _lock:
        lease = _leases.get(digest)
        if lease is None:
            return None
        if (
            lease.tokens > 0
            and int(now) == lease.second
            and time.monotonic() < lease.valid_until
            and lease.generation == redisconn.settings_generation()
        ):
            lease.tokens -= 1
            return lease, lease.minute_used - lease.tokens
        del _leases[digest]
        _retire(lease)
    return None


def grant(
    *,
    digest: str,
    resolved: keycache.Resolved,
    limits: Limits,
    now: float,
    asked_at: float,
    length_ms: int,
    tokens: int,
    minute_used: int,
) -> None:
    """Hold the `tokens` the script counted beyond the request that asked (`asked_at`:
    `time.monotonic()` before the call)."""
    org = resolved.org
    lease = Lease(
        digest=digest,
        resolved=resolved,
        limits=limits,
        key_pk=resolved.key.pk,
        org_pk=org.pk if org is not None else None,
        second=int(now),
        valid_until=asked_at + length_ms / 1000 * HOLDER_FRACTION,
        tokens=tokens,
        minute_used=minute_used,
        generation=redisconn.settings_generation(),
    )
    with _lock:
        previous = _leases.get(digest)
        _leases[digest] = lease
        if previous is not None:
            _retire(previous)
    _pusher.ensure_started()


def give_back(lease: Lease) -> None:
    """A request admitted under `lease` was refused before the limiter: its token is
    unused."""
    with _lock:
        if _leases.get(lease.digest) is lease:
            lease.tokens += 1
        else:
            _add_return(lease, 1)


def record(
    lease: Lease, *, now: float, meta: ratelimit.UsageMeta, status: int, status_class: str
) -> None:
    """Count a request admitted under `lease` for usage and the key's recent requests."""
    hour = usage.hour_start(now)
    version = usage.clean_version(meta.client_version)
    with _lock:
        name = (lease.key_pk, lease.org_pk, hour)
        delta = _pending.usage.get(name)
        if delta is None:
            delta = _pending.usage[name] = usage.UsageDelta(lease.key_pk, lease.org_pk, hour)
        delta.requests += 1
        delta.last_at, delta.last_ip = now, meta.ip or delta.last_ip
        if version and len(delta.versions) < usage.MAX_VERSIONS:
            delta.versions.add(version)
        for scope in meta.scopes.split():
            delta.scopes[scope] = delta.scopes.get(scope, 0) + 1
        if status_class == usage.CLASS_4XX:
            delta.count_4xx += 1
        elif status_class == usage.CLASS_5XX:
            delta.count_5xx += 1
        if meta.method:
            recent = _pending.recent.get(lease.key_pk)
            if recent is None:
                recent = _pending.recent[lease.key_pk] = deque(maxlen=usage.RECENT_MAX)
            recent.append((status, now, meta))


def _retire(lease: Lease) -> None:
    """(under `_lock`) An ended lease's unused tokens go back to their windows."""
    if lease.tokens > 0:
        _add_return(lease, lease.tokens)
        lease.tokens = 0


def _add_return(lease: Lease, tokens: int) -> None:
    limits = lease.limits
    name = (
        lease.key_pk,
        lease.org_pk,
        lease.second,
        limits.burst > 0,
        limits.per_minute > 0,
        limits.monthly > 0 and lease.org_pk is not None,
    )
    _pending.returns[name] = _pending.returns.get(name, 0) + tokens


# --- pushing to Redis -------------------------------------------------------------------

# One batch in one script, applied at most once: a batch whose reply was lost (a timeout
# after Redis ran it) is sent again under the same id and skipped, so unused tokens are
# never given back twice (that would admit more than the limit) and usage never counted
# twice. KEYS[1]: the batch's marker. ARGV[1]: the batch as JSON:
# r: [burst, minute, month counter, tokens, 1/0 per window] - tokens given back (a window
#    that has ended, its counter expired, has nothing to take back);
# u: [hash, pending set, requests, 4xx, 5xx, last time, last IP, hash TTL, version cap,
#    versions, {scope: requests}] - usage per key and hour;
# l: [list, cap, TTL, elements oldest first] - recent requests.
_PUSH_LUA = """
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', 86400) then return 0 end
local batch = cjson.decode(ARGV[1])
for _, r in ipairs(batch.r) do
  for i = 1, 3 do
    if r[4 + i] == 1 and redis.call('EXISTS', r[i]) == 1 then
      redis.call('DECRBY', r[i], r[4])
    end
  end
end
for _, u in ipairs(batch.u) do
  local h = u[1]
  redis.call('HINCRBY', h, 'n', u[3])
  if u[4] > 0 then redis.call('HINCRBY', h, 'c4', u[4]) end
  if u[5] > 0 then redis.call('HINCRBY', h, 'c5', u[5]) end
  if tonumber(u[6]) >= tonumber(redis.call('HGET', h, 'at') or '0') then
    redis.call('HSET', h, 'at', u[6], 'ip', u[7])
  end
  for _, v in ipairs(u[10]) do
    local f = 'v:' .. v
    if redis.call('HEXISTS', h, f) == 0 then
      if tonumber(redis.call('HGET', h, 'nv') or '0') < u[9] then
        redis.call('HSET', h, f, '1')
        redis.call('HINCRBY', h, 'nv', 1)
      end
    end
  end
  for sc, n in pairs(u[11]) do
    redis.call('HINCRBY', h, 's:' .. sc, n)
  end
  redis.call('EXPIRE', h, u[8])
  redis.call('SADD', u[2], h)
end
for _, l in ipairs(batch.l) do
  redis.call('LPUSH', l[1], unpack(l[4]))
  redis.call('LTRIM', l[1], 0, l[2] - 1)
  redis.call('EXPIRE', l[1], l[3])
end
return 1
"""

_push_lock = threading.Lock()
# Batches not known to have reached Redis, oldest first: (id, JSON).
_unsent: list[tuple[str, str]] = []


def push() -> None:
    """Send what leased requests added (usage, recent requests, unused tokens) to Redis.

    Also retires leases that have ended. A batch that may not have arrived (Redis down, a
    timeout) is kept and sent again under its id, which Redis applies at most once.
    Called every `PUSH_INTERVAL` by a thread, before a usage fold and at exit.
    """
    conn = redisconn.client()
    if conn is None:
        return
    with _push_lock:
        global _pending
        with _lock:
            clock = time.monotonic()
            second = int(ratelimit.clock())
            for digest, lease in list(_leases.items()):
                if clock >= lease.valid_until or second != lease.second:
                    del _leases[digest]
                    _retire(lease)
            batch, _pending = _pending, _Pending()
        if not batch.empty():
            _unsent.append((uuid.uuid4().hex, _payload(batch)))
        while _unsent:
            batch_id, payload = _unsent[0]
            try:
                _send(conn, batch_id, payload)
            except Exception as exc:  # kept for the next push, whatever went wrong
                redisconn.error_log.error(
                    "leases", "Redis unreachable: leased requests' usage kept for later", exc
                )
                return
            _unsent.pop(0)


def _send(conn: Any, batch_id: str, payload: str) -> None:
    redisconn.registered(conn, _PUSH_LUA)(keys=[redisconn.rkey("push", batch_id)], args=[payload])


def _payload(batch: _Pending) -> str:
    returns = [
        [
            *ratelimit.counter_keys(key_pk, org_pk, float(second)),
            tokens,
            int(burst),
            int(minute),
            int(month),
        ]
        for (key_pk, org_pk, second, burst, minute, month), tokens in batch.returns.items()
    ]
    counts = [
        [
            usage.redis_hash_key(delta.key_pk, delta.org_pk, delta.hour),
            usage.redis_pending_key(),
            delta.requests,
            delta.count_4xx,
            delta.count_5xx,
            repr(delta.last_at),
            delta.last_ip,
            usage.REDIS_HASH_TTL,
            usage.MAX_VERSIONS,
            sorted(delta.versions),
            delta.scopes,
        ]
        for delta in batch.usage.values()
    ]
    recent = [
        [
            usage.recent_redis_key(key_pk),
            usage.RECENT_MAX,
            usage.RECENT_TTL,
            [f"{status} {meta.recent_body(at)}" for status, at, meta in requests],
        ]
        for key_pk, requests in batch.recent.items()
        if requests
    ]
    return json.dumps({"r": returns, "u": counts, "l": recent}, separators=(",", ":"))


def forget(*, digest: str | None = None, org_pk: int | None = None) -> None:
    """End this process's leases on the key with `digest` or the keys of `org_pk` at
    once (an invalidation made here; other processes' end by time, which it waits for)."""
    with _lock:
        for name, lease in list(_leases.items()):
            if name == digest or (org_pk is not None and lease.org_pk == org_pk):
                del _leases[name]
                _retire(lease)


def release_all() -> None:
    """End every lease of this process and push (a worker leaving, tests)."""
    with _lock:
        for lease in _leases.values():
            _retire(lease)
        _leases.clear()
    push()


def discard() -> None:
    """Forget leases and unpushed work (tests start from a clean slate)."""
    global _pending
    with _lock:
        _leases.clear()
        _pending = _Pending()
    with _push_lock:
        _unsent.clear()


class _Pusher:
    """The thread that pushes every `PUSH_INTERVAL`, started by this process's first lease."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid = 0

    def ensure_started(self) -> None:
        if self._pid == os.getpid():
            return
        with self._lock:
            if self._pid == os.getpid():
                return
            self._pid = os.getpid()
            threading.Thread(target=self._run, name="lease-pusher", daemon=True).start()
            atexit.register(release_all)

    def _run(self) -> None:
        while True:
            time.sleep(PUSH_INTERVAL)
            try:
                push()
            except Exception:
                logger.exception("Pushing leased requests' usage to Redis failed; will retry.")


_pusher = _Pusher()


class _Holder:
    """This module as a holder of `apikeys.held`."""

    def forget(self, *, digest: str | None = None, org_pk: int | None = None) -> None:
        forget(digest=digest, org_pk=org_pk)

    def push(self) -> None:
        push()

    def release_all(self) -> None:
        release_all()


held.register(_Holder())
