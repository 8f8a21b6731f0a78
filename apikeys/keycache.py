"""The key-verification cache: what a key digest resolves to, without the database.

One entry per key, keyed by the key's digest (the HMAC of the key; the key itself is never
cached): `apikey:<digest>` in the default cache's namespace, holding the key's `KeyState`
and its org's `OrgState` (status, plan limits with custom overrides) together with the
org's *generation* at the time the entry was filled.

- A lookup is ONE Redis round trip: a Lua script GETs the entry, reads the org id at its
  head and GETs the org's current generation. An entry whose generation differs is stale.
  For an API request `resolve_and_count` does the same and, when the entry is complete,
  current and the key acceptable, also checks and counts the rate limits in that same
  script (ADR 0064).
- `invalidate_key(digest)` (revoke, rotate, delete) deletes the entry and sets a fresh
  version marker for the digest; `invalidate_org(org_pk)` (suspension, reactivation, plan
  or limit change) sets a fresh generation for the org, so every entry of its keys turns
  stale at once without enumerating them.
- A fill after a miss is a compare-and-set: it is written only if the key's version marker
  and the org's generation are still what they were before the database was read. A
  request that read the database before a change therefore cannot write its stale result
  after the change's invalidation (ADR 0061). A cold miss (the lookup did not know the
  org yet) caches the key part only; the next request adds the org part. Each costs one
  query; from the third request on, none.
- Expiry and a rotation's grace end are checked against the cached `expires_at` at request
  time by the caller, so time needs no invalidation.

If Redis is unreachable verification falls back to the database (authentication never
fails open); a failed invalidation is retried in the background for as long as an entry
could live, so no stale entry outlasts an outage.

Without Redis (embedded default, one process) the same protocol runs on the local-memory
cache under a process lock; invalidation is in-process.
"""

from __future__ import annotations

import logging
import pickle
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import transaction

from apikeys import held, ratelimit, redisconn
from apikeys.backend import Backend, RequestRecord, backend
from orgs.models import OrgStatus
from orgs.plans import Limits

logger = logging.getLogger("apikeys.keycache")

ENTRY_TTL = 300
# Longer than any database read of a filler can take: see `_fill`.
MARKER_TTL = 900


@dataclass(frozen=True)
class OrgState:
    pk: int
    public_id: str
    slug: str
    name: str
    status: str
    plan: str
    kyc_status: str
    limits: Limits


@dataclass(frozen=True)
class KeyState:
    pk: int
    public_id: str
    digest: str
    name: str
    environment: str
    scopes: tuple[str, ...]
    display: str
    org_pk: int | None
    expires_at: datetime | None
    rotated_at: datetime | None
    revoked_at: datetime | None
    deleted_at: datetime | None
    # The key's `meta` object (None in entries written before keys had one).
    meta: dict[str, Any] | None = field(default=None, hash=False, compare=False)
    # The IP allowlist (normalised CIDR ranges; empty: anywhere) and its mode; entries
    # written before keys had one read as the defaults.
    allowed_ips: tuple[str, ...] = ()
    allowed_ips_mode: str = "enforce"
    leaked_at: datetime | None = None


@dataclass(frozen=True)
class Resolved:
    key: KeyState
    org: OrgState | None
    from_cache: bool
    # The cache entry it was read from (immutable: callers may memoize on it).
    entry: bytes | None = None


# --- names (in the default cache's namespace) -------------------------------------------


def cache_key(digest: str) -> str:
    return f"apikey:{digest}"


def _version_name(digest: str) -> str:
    return f"apikey-v:{digest}"


def _org_generation_name_prefix() -> str:
    return "apikey-org:"


def _org_generation_name(org_pk: int) -> str:
    return f"{_org_generation_name_prefix()}{org_pk}"


def key_lease_name(digest: str) -> str:
    """Marks, for as long as the newest admission lease on the key lasts, that some
    process may admit the key without asking Redis (ADR 0065)."""
    return redisconn.rkey("lease", "k", digest)


def org_lease_name(org_pk: int | str) -> str:
    return redisconn.rkey("lease", "o", org_pk)


def lease_epoch_names() -> tuple[str, str]:
    """The lease epoch (ADR 0091): moved on by every invalidation of something a lease may
    be held on; a host admits under a lease only while its newest reading of the epoch
    (from any round trip, at most `LATCHKEY_KEY_LEASE_MS` old) is the lease's. With it,
    the longest such trust any host has declared: what an invalidation waits."""
    return redisconn.rkey("lease", "epoch"), redisconn.rkey("lease", "trust")


# --- entries ----------------------------------------------------------------------------


def _accept_until(key: KeyState, org: OrgState | None) -> str:
    """Until when the entry's key is accepted: "0" never, "-1" without expiry, else the
    expiry as epoch seconds. The same rules as `ApiKeyPrincipal.failure_code`."""
    if key.deleted_at is not None or key.revoked_at is not None:
        return "0"
    if org is not None and org.status != OrgStatus.ACTIVE:
        return "0"
    if key.expires_at is not None:
        return repr(key.expires_at.timestamp())
    return "-1"


def _encode(key: KeyState, org: OrgState | None, generation: bytes) -> bytes:
    """`<org id>\\n<generation>\\n<counting line>\\n<pickle>`; the counting line (read by
    the verification-and-count script) is empty while the org part is missing."""
    head = b"" if key.org_pk is None else str(key.org_pk).encode()
    counting = ""
    if key.org_pk is None or org is not None:
        limits = org.limits if org is not None else None
        counting = "|".join(
            str(x)
            for x in (
                key.pk,
                limits.burst if limits else 0,
                limits.per_minute if limits else 0,
                limits.monthly if limits else 0,
                _accept_until(key, org),
            )
        )
    body = pickle.dumps((key, org), protocol=5)
    return head + b"\n" + generation + b"\n" + counting.encode() + b"\n" + body


_decoded: dict[bytes, tuple[bytes, KeyState, OrgState | None]] = {}
_DECODED_MAX = 4096


def _decode(value: Any) -> tuple[bytes, KeyState, OrgState | None] | None:
    """(generation, key, org) of an entry; None for anything that is not one of ours.

    Entries are immutable values, so each distinct one is unpickled once per process.
    """
    if not isinstance(value, bytes):
        return None
    found = _decoded.get(value)
    if found is not None:
        return found
    try:
        _, generation, _, body = value.split(b"\n", 3)
        key, org = pickle.loads(body)  # noqa: S301 - our own entries in our own cache
    except Exception:  # anything else stored under the name is simply not an entry
        return None
    if not isinstance(key, KeyState) or not (org is None or isinstance(org, OrgState)):
        return None
    if len(_decoded) >= _DECODED_MAX:
        _decoded.clear()
    decoded = _decoded[value] = (generation, key, org)
    return decoded


# --- loading from the database ----------------------------------------------------------


def key_state(key: Any) -> KeyState:
    return KeyState(
        pk=key.pk,
        public_id=key.public_id,
        digest=key.digest,
        name=key.name,
        environment=key.environment,
        scopes=tuple(key.scopes or ()),
        display=key.display,
        org_pk=key.org_id,
        expires_at=key.expires_at,
        rotated_at=key.rotated_at,
        revoked_at=key.revoked_at,
        deleted_at=key.deleted_at,
        meta=dict(key.meta or {}),
        allowed_ips=tuple(key.allowed_ips or ()),
        allowed_ips_mode=key.allowed_ips_mode,
        leaked_at=key.leaked_at,
    )


def org_state(org: Any) -> OrgState:
    return OrgState(
        pk=org.pk,
        public_id=org.public_id,
        slug=org.slug,
        name=org.name,
        status=org.status,
        plan=org.plan,
        kyc_status=org.kyc_status,
        limits=org.limits,
    )


def load_from_db(digest: str) -> tuple[KeyState, OrgState | None] | None:
    """The key with this digest and its org, in one query; None for an unknown digest."""
    from apikeys.selectors import apikey_get_by_digest

    key = apikey_get_by_digest(digest)
    if key is None:
        return None
    return key_state(key), (org_state(key.org) if key.org is not None else None)


def load_org_from_db(org_pk: int) -> OrgState | None:
    from orgs.models import Organization

    org = Organization.objects.filter(pk=org_pk).first()
    return org_state(org) if org is not None else None


def _marker() -> bytes:
    return secrets.token_hex(8).encode()


# --- resolving a digest -----------------------------------------------------------------


def resolve(digest: str) -> Resolved | None:
    """The state of the key with `digest` and of its org; None if no such key exists.

    Warm cache: one Redis round trip (none on local memory) and no database query. The
    caller decides from the states, at request time, whether the key is accepted.
    """
    if _check_pending and not _settle_pending():
        return _resolve_from_db(digest, _settle_error or _PENDING_UNSETTLED)
    store = backend()
    names = _names(digest)
    try:
        entry, version, generation = store.lookup(names[0], names[1], names[2])
    except redisconn.REDIS_ERRORS as exc:
        return _resolve_from_db(digest, exc)
    return _resolve_looked_up(store, digest, entry, version, generation)


@dataclass(frozen=True)
class Counted:
    """What the verification-and-count script decided about the request (ADR 0064)."""

    verdict: int
    minute_used: int
    # Tokens counted beyond this request for the caller's admission lease (ADR 0065).
    extra: int = 0
    # The lease epoch when the script ran (ADR 0091).
    epoch: int | None = None


def resolve_and_count(
    digest: str,
    *,
    now: float,
    record: RequestRecord,
    lease: tuple[int, int, int, int] = (0, 0, 0, 0),
) -> tuple[Resolved | None, Counted | None, BaseException | None]:
    """`resolve`, and on a warm, current entry of an acceptable key also the rate-limit
    check-and-count of the request, in the same single round trip.

    Returns (resolved, counted, redis_error). `counted` is None when the request was not
    counted (local memory, a cold or stale entry, a refused key, a key this process has
    not resolved before, Redis unreachable): the caller then counts it on the two-step
    path. `record` is `ratelimit.request_record` for the request at `now`. `lease`
    (tokens wanted, length in ms) asks for an admission lease (ADR 0065):
    `counted.extra` is what was granted.

    The counters' names are made here and passed to the script, so the key's and org's
    ids must be known before the call: they are remembered per digest from any earlier
    resolution in this process (a digest always names the same key), and the script
    counts nothing when the entry names another key.
    """
    if _check_pending and not _settle_pending():
        exc = _settle_error or _PENDING_UNSETTLED
        return _resolve_from_db(digest, exc), None, exc
    store = backend()
    names = _names(digest)
    ids = _ids.get(digest) if _ids_generation == redisconn.settings_generation() else None
    if ids is None:
        try:
            looked_up = store.lookup(names[0], names[1], names[2])
        except redisconn.REDIS_ERRORS as exc:
            return _resolve_from_db(digest, exc), None, exc
        resolved = _resolve_looked_up(store, digest, *looked_up)
        if resolved is not None:
            _remember(digest, resolved)
        return resolved, None, None
    key_pk, org_pk = ids
    try:
        counted, looked_up = store.lookup_and_count(
            names[0],
            names[1],
            names[2],
            key_pk,
            ratelimit.windows(key_pk, org_pk, ratelimit.UNLIMITED, now),
            record,
            now,
            (
                lease[0],
                lease[1],
                lease[2],
                lease[3],
                names[3],
                org_lease_name(org_pk if org_pk is not None else "-"),
                *lease_epoch_names(),
            ),
        )
    except redisconn.REDIS_ERRORS as exc:
        return _resolve_from_db(digest, exc), None, exc
    if counted is not None:
        decoded = _decode(counted.entry)
        if decoded is not None and decoded[1].digest == digest:
            _, key, org = decoded
            resolved = Resolved(key=key, org=org, from_cache=True, entry=counted.entry)
            return (
                resolved,
                Counted(counted.verdict, counted.minute_used, counted.extra, counted.epoch),
                None,
            )
    resolved = _resolve_looked_up(store, digest, *looked_up)
    if resolved is not None and (resolved.key.pk, resolved.key.org_pk) != ids:
        _remember(digest, resolved)  # the script counted nothing for a stale id
    return resolved, None, None


# digest -> (key id, org id): what the counters of the key's requests are named after.
_ids: dict[str, tuple[int, int | None]] = {}


_IDS_MAX = 65536
_ids_generation = -1


def _remember(digest: str, resolved: Resolved) -> None:
    global _ids_generation
    if _ids_generation != redisconn.settings_generation() or len(_ids) >= _IDS_MAX:
        _ids.clear()
        _ids_generation = redisconn.settings_generation()
    _ids[digest] = (resolved.key.pk, resolved.key.org_pk)


_names_memo: dict[str, tuple[str, str, str, str]] = {}
_names_generation = -1


def _names(digest: str) -> tuple[str, str, str, str]:
    """The names the verification cache uses for `digest`: entry, version marker and
    org-generation prefix (in the default cache's namespace, as its API names them), and
    the lease marker (a guard name); computed once per digest and settings."""
    global _names_generation
    if _names_generation != redisconn.settings_generation():
        _names_memo.clear()
        _names_generation = redisconn.settings_generation()
    found = _names_memo.get(digest)
    if found is None:
        if len(_names_memo) >= _DECODED_MAX:
            _names_memo.clear()
        found = _names_memo[digest] = (
            cache_key(digest),
            _version_name(digest),
            _org_generation_name_prefix(),
            key_lease_name(digest),
        )
    return found


def lease_names(digest: str) -> tuple[str, str, str]:
    """What a lease asked for ahead of requests needs (ADR 0093): the key's entry, the
    org-generation prefix and the key's lease marker."""
    names = _names(digest)
    return names[0], names[2], names[3]


def _resolve_from_db(digest: str, exc: BaseException) -> Resolved | None:
    _mark_outage()
    redisconn.error_log.error(
        "keycache", "Redis unreachable: verifying API keys against the database", exc
    )
    loaded = load_from_db(digest)
    return None if loaded is None else Resolved(*loaded, from_cache=False)


def _resolve_looked_up(
    store: Backend,
    digest: str,
    entry: Any,
    version: bytes | None,
    generation: bytes | None,
) -> Resolved | None:
    decoded = _decode(entry)
    if decoded is not None and decoded[1].digest == digest:
        embedded, key, org = decoded
        if key.org_pk is None:
            return Resolved(key=key, org=None, from_cache=True, entry=entry)
        if org is not None and embedded == (generation or b""):
            return Resolved(key=key, org=org, from_cache=True, entry=entry)
        # The key part is current (an invalidation would have deleted the entry); the
        # org part is missing or stale. The generation was read by the lookup, before
        # this query, so the org written back is never newer than its mark.
        org = load_org_from_db(key.org_pk)
        if org is None:
            return None
        _fill(store, key, org, version, generation)
        return Resolved(key=key, org=org, from_cache=False)

    # Cold: one query for the key and its org. Only the key part is cached: the lookup
    # could not read the org's generation without the org id, so the next request reads
    # the org once more (one small query) under a generation read before it.
    loaded = load_from_db(digest)
    if loaded is None:
        return None
    _fill(store, loaded[0], None, version, None)
    return Resolved(*loaded, from_cache=False)


def _fill(
    store: Backend,
    key: KeyState,
    org: OrgState | None,
    version: bytes | None,
    generation: bytes | None,
) -> None:
    value = _encode(key, org, generation or b"")
    names = _names(key.digest)
    generation_name = (
        _org_generation_name(key.org_pk) if org is not None and key.org_pk is not None else None
    )
    try:
        store.fill(names[0], names[1], generation_name, version, generation, value, ENTRY_TTL)
    except redisconn.REDIS_ERRORS as exc:
        redisconn.error_log.error("keycache", "Redis unreachable: key cache not filled", exc)


# --- invalidation -----------------------------------------------------------------------


def invalidate_key(digest: str) -> None:
    """Make every process re-read the key with `digest` on its next request.

    Inside a transaction it runs now and again when the transaction commits: a request
    that reads the database between the two sees the old row and may cache it, and the
    second invalidation removes that; the first makes the change visible at once to code
    running inside the same transaction (tests, multi-step services).
    """
    in_transaction = transaction.get_connection().in_atomic_block
    _invalidate(("key", digest), wait=not in_transaction)
    if in_transaction:
        transaction.on_commit(lambda: _invalidate(("key", digest), wait=True))


def invalidate_org(org_pk: int) -> None:
    """Make every process re-read the org (status, plan, limits) of all its keys.

    Like `invalidate_key`: now, and again at commit when inside a transaction.
    """
    in_transaction = transaction.get_connection().in_atomic_block
    _invalidate(("org", org_pk), wait=not in_transaction)
    if in_transaction:
        transaction.on_commit(lambda: _invalidate(("org", org_pk), wait=True))


def _apply(target: tuple[str, Any]) -> int:
    """Invalidate `target`; returns for how many ms an admission lease on it may still
    be held by some process (ADR 0065)."""
    kind, ident = target
    store = backend()
    if kind == "key":
        digest = str(ident)
        names = _names(digest)
        return store.invalidate_key(
            names[0], names[1], names[3], lease_epoch_names(), _marker(), MARKER_TTL
        )
    org_pk = int(ident)
    return store.invalidate_org(
        _org_generation_name(org_pk), org_lease_name(org_pk), lease_epoch_names(), _marker()
    )


# A lease lives at most this long from when it was asked for (to the end of its second;
# one asked for ahead is asked for up to `leases.AHEAD_LEAD` before its second begins,
# ADR 0100): what an invalidation that cannot reach Redis, and so cannot move the epoch
# on, waits for.
LEASE_LIFE_MS = 1050
# Added to the wait for leases: covers a Redis clock running slightly slower than ours.
LEASE_WAIT_MARGIN = 0.005


def _invalidate(target: tuple[str, Any], *, wait: bool) -> None:
    """Invalidate `target` and, with `wait`, return only once no process can still admit
    a request under an admission lease granted before the change (ADR 0065): the change is
    then in force for every worker's next request."""
    kind, ident = target
    if kind == "key":
        held.forget(digest=str(ident))
    else:
        held.forget(org_pk=int(ident))
    try:
        held_ms = _apply(target)
    except redisconn.REDIS_ERRORS as exc:
        logger.error(
            "Redis unreachable: cache invalidation will be retried (%s: %s)",
            type(exc).__name__,
            exc,
        )
        _remember_pending(target)
        _retrier.add(target)
        # Leases granted before the outage end with their second: the epoch could not be
        # moved on. The cache entry itself is invalidated only when the retrier gets
        # through (ADR 0061): a worker that still reaches Redis meanwhile may accept the
        # key from it.
        held_ms = LEASE_LIFE_MS
    # (Else, when a lease may still be held, the script moved the epoch on and answered
    # the longest trust any host declared in a reading of it: ADR 0091.)
    if wait and held_ms > 0:
        _wait(held_ms / 1000 + LEASE_WAIT_MARGIN)


# --- invalidations that outlive an outage and restarts (ADR 0078) -----------------------

# Set at start and after any Redis error: before this process trusts the cache again it
# applies the invalidations pending in the database (one query when there are none).
_check_pending = True
_settle_after = 0.0
_settle_error: BaseException | None = None
SETTLE_RETRY_SECONDS = 1.0
# Stands for the Redis error of the failed attempt, should it already be forgotten.
_PENDING_UNSETTLED = ConnectionError("Pending cache invalidations are not yet applied")
SETTLE_DB_RETRY_SECONDS = 5.0
PENDING_BATCH = 500


def _remember_pending(target: tuple[str, Any]) -> None:
    """Keep `target` in the database until some process gets it through to Redis."""
    from django.db import DatabaseError

    from apikeys.models import PendingInvalidation

    kind, ident = target
    try:
        # A savepoint: a failed insert must not abort the revoke's own transaction.
        with transaction.atomic():
            PendingInvalidation.objects.create(kind=kind, ident=str(ident))
    except DatabaseError:
        logger.exception("A pending cache invalidation could not be stored; retried in memory")


def apply_pending(*, limit: int = PENDING_BATCH) -> int:
    """Apply the invalidations pending in the database and delete them; returns how many.

    Raises `redisconn.REDIS_ERRORS` while Redis is still unreachable (nothing is deleted
    that was not applied)."""
    from apikeys.models import PendingInvalidation

    rows = list(
        PendingInvalidation.objects.order_by("pk").values_list("pk", "kind", "ident")[:limit]
    )
    done: list[int] = []
    try:
        for pk, kind, ident in rows:
            _apply((kind, ident if kind == "key" else int(ident)))
            done.append(pk)
    finally:
        if done:
            PendingInvalidation.objects.filter(pk__in=done).delete()
    return len(done)


def _settle_pending() -> bool:
    """Before the cache is trusted: apply what is pending, once per outage and start.

    Returns False while Redis is unreachable: the caller then resolves from the database,
    since the cache may hold an entry a pending invalidation is yet to remove. A failed
    attempt is not repeated for `SETTLE_RETRY_SECONDS` (Redis) or
    `SETTLE_DB_RETRY_SECONDS` (the database), so an outage costs no extra round trip per
    request. With the database unreachable the cache is trusted meanwhile: nothing can be
    read that says otherwise, and a revoke cannot be stored either.
    """
    from django.db import DatabaseError

    global _check_pending, _settle_after, _settle_error
    now = time.monotonic()
    if now < _settle_after:
        return _settle_error is None
    try:
        while apply_pending(limit=PENDING_BATCH) == PENDING_BATCH:
            pass
    except redisconn.REDIS_ERRORS as exc:  # counted from the failure: it may be a timeout
        _settle_after, _settle_error = time.monotonic() + SETTLE_RETRY_SECONDS, exc
        return False
    except DatabaseError as exc:
        _settle_after, _settle_error = time.monotonic() + SETTLE_DB_RETRY_SECONDS, None
        redisconn.error_log.error(
            "keycache-pending", "Pending cache invalidations could not be read", exc
        )
        return True
    _check_pending, _settle_after, _settle_error = False, 0.0, None
    return True


def _mark_outage() -> None:
    global _check_pending
    _check_pending = True


def _wait(seconds: float) -> None:
    time.sleep(seconds)


class _Retrier:
    """Retries failed invalidations every second for as long as an entry can live.

    An entry written before the failure expires after ENTRY_TTL at the latest, so retrying
    that long means no stale entry survives the end of an outage.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[tuple[str, Any], float] = {}
        self._thread: threading.Thread | None = None

    def add(self, target: tuple[str, Any]) -> None:
        with self._lock:
            self._pending[target] = time.monotonic() + ENTRY_TTL
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="keycache-retrier", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        while True:
            time.sleep(1.0)
            with self._lock:
                due = dict(self._pending)
            if not due:
                return
            now = time.monotonic()
            for target, deadline in due.items():
                done = now >= deadline
                if not done:
                    try:
                        _apply(target)
                        done = True
                    except redisconn.REDIS_ERRORS:
                        pass
                if done:
                    with self._lock:
                        if self._pending.get(target) == deadline:
                            del self._pending[target]


_retrier = _Retrier()
