"""Usage counting per key and hour, with no database write on the request path.

What is counted (docs/api.md): requests by status class (2xx, 4xx, 5xx), the client
versions seen (`X-Client-Version`), the last use time and IP.

Where the counters live:
- Redis (production): one hash per key and hour, `<prefix>:g:u:<key>:<org>:<hour>`, fields
  `n` (requests), `c4`/`c5` (4xx/5xx; 2xx is `n - c4 - c5`), `at`, `ip`, `v:<version>`.
  The rate-limit script (`apikeys.ratelimit`) writes it in the same round trip as the
  limit check and adds the hash to a pending set; a 4xx/5xx from the handler adds one
  HINCRBY afterwards.
- Local memory (embedded default): a dict in this process.

The rules (Lua and their Python twins: record, correct a status, read recent requests,
claim for the fold) live in `apikeys.backend`; this module names the records and writes
the database.

Folding into the database (`fold`): the Celery beat task `apikeys.tasks.fold_usage` runs
every 30 s. On Redis a Lua script atomically moves the pending hashes under a batch name
(RENAME), so increments arriving meanwhile start a fresh hash; the batch is written to the
database in one transaction together with a `UsageFoldBatch` row whose unique id makes a
retried or concurrent fold of the same batch a no-op; only then are the claimed hashes
deleted. A fold that crashed midway is finished by the next one. Nothing is counted twice
and nothing is lost (ADR 0062).

Without a worker (embedded default) a daemon thread folds every
`LATCHKEY_USAGE_FLUSH_SECONDS` and once more at interpreter exit (atexit).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction

from apikeys import backend as backend_module
from apikeys import held, redisconn
from apikeys.backend import RECENT_SLACK, UsageDelta, backend
from config.periodic import Periodic

logger = logging.getLogger("apikeys.usage")

HOUR = 3600
REDIS_HASH_TTL = 7 * 86400
MAX_VERSIONS = 20
MAX_VERSION_LENGTH = 64

CLASS_4XX = backend_module.CLASS_4XX
CLASS_5XX = backend_module.CLASS_5XX


def hour_start(now: float) -> int:
    return int(now) // HOUR * HOUR


def status_class(status: int) -> str:
    """`c5` for 5xx, `c4` for 4xx, "" for everything counted as success (2xx)."""
    if status >= 500:
        return CLASS_5XX
    if status >= 400:
        return CLASS_4XX
    return ""


def clean_version(value: str | None) -> str:
    """The client version as recorded: printable ASCII without spaces, at most 64 chars."""
    if not value:
        return ""
    value = value.strip()
    if len(value) > MAX_VERSION_LENGTH or not all(33 <= ord(c) <= 126 for c in value):
        return ""
    return value


def redis_hash_key(key_pk: int, org_pk: int | None, hour: int) -> str:
    return redisconn.rkey("u", key_pk, org_pk if org_pk is not None else "-", hour)


def redis_pending_key() -> str:
    return redisconn.rkey("u", "pending")


def _redis_batches_key() -> str:
    return redisconn.rkey("u", "batches")


# --- the local-memory store (embedded default) -------------------------------------------


def local_pending() -> list[UsageDelta]:
    """A copy of the counters this process has not folded yet (embedded default)."""
    local = backend_module.local_usage
    with local.lock:
        return [
            UsageDelta(
                d.key_pk,
                d.org_pk,
                d.hour,
                d.requests,
                d.count_4xx,
                d.count_5xx,
                d.last_at,
                d.last_ip,
                set(d.versions),
                dict(d.scopes),
                d.ip_reported,
            )
            for d in local.deltas.values()
        ]


def discard_local() -> None:
    """Forget unfolded local counters (tests start from a clean slate)."""
    local = backend_module.local_usage
    with local.lock:
        local.deltas.clear()


# --- recording the status class after the handler ---------------------------------------


@dataclass(frozen=True)
class RecentMark:
    """The recent-request element a request pushed, to correct its status afterwards."""

    key_pk: int
    status: int
    body: str
    local: list[Any] | None = None  # the element itself on the embedded default


def recent_fix(recent: RecentMark | None, status: int) -> tuple[str, str, list[Any] | None] | None:
    """(old element, new element, local element) to correct a recent element pushed with
    another status than the response's `status`; None when nothing needs correcting."""
    if recent is None or not status or status == recent.status:
        return None
    return f"{recent.status} {recent.body}", f"{status} {recent.body}", recent.local


def record_status(
    *,
    key_pk: int,
    org_pk: int | None,
    hour: int,
    status_class: str,
    status: int = 0,
    recent: RecentMark | None = None,
) -> None:
    """After the handler: add a 4xx/5xx to a request the limiter already counted (same
    hour as it used), and correct the status of its recent-request element when the
    response's `status` is not the one it was pushed with. A 2xx with the expected
    status costs nothing."""
    fix = recent_fix(recent, status)
    if not status_class and fix is None:
        return
    try:
        backend().record_status(
            redis_hash_key(key_pk, org_pk, hour),
            redis_pending_key(),
            REDIS_HASH_TTL,
            status_class,
            recent_redis_key(recent.key_pk) if recent is not None else "",
            fix,
        )
    except redisconn.REDIS_ERRORS as exc:
        redisconn.error_log.error("usage", "Redis unreachable: usage not counted", exc)


# --- recent requests per key ----------------------------------------------------------
#
# The last RECENT_MAX requests of each key, newest first, for the key's detail page. On
# Redis a capped list per key, `<prefix>:g:rr:<key>`, written by the rate-limit script in
# the round trip it already makes; each element is `<status> <json>`. The status is not
# known before the handler, so the script pushes the status the method usually answers
# (`provisional_status`) and a response with another status corrects its own element in
# the round trip that adds its status class (never on the common 2xx path). The JSON holds
# the time, method, path (never the query string), client IP, client version and request
# id: nothing secret.

RECENT_MAX = 50
RECENT_TTL = 7 * 86400
MAX_RECENT_PATH = 256


def provisional_status(method: str) -> int:
    """The status a request with `method` is recorded with until its response says else."""
    if method == "POST":
        return 201
    if method == "DELETE":
        return 204
    return 200


def recent_redis_key(key_pk: int) -> str:
    return redisconn.rkey("rr", key_pk)


def recent_body(
    *, at: float, method: str, path: str, ip: str, client_version: str, request_id: str
) -> str:
    """The JSON part of a recent-request element (everything but the status): the compact
    JSON array `[at, method, path, ip, client version, request id]`, written piece by
    piece with the encoder's own parts (a float's `repr`, the standard library's ASCII
    string quoting), byte for byte what `json.dumps(..., separators=(",", ":"))` writes,
    in about half the time (the lease pusher encodes one for each request it pushes)."""
    return (
        f"[{round(at, 6)!r},{_quote(method[:10])},"
        f"{_quote(path.split('?', 1)[0][:MAX_RECENT_PATH])},{_quote(ip[:64])},"
        f"{_quote(clean_version(client_version) if client_version else '')},"
        f"{_quote(request_id[:128])}]"
    )


# JSON's quoting of a string with every non-ASCII character escaped (`ensure_ascii`).
_quote = json.encoder.encode_basestring_ascii


def local_recent_push(*, key_pk: int, status: int, body: str) -> list[Any]:
    """Push one element on the local list of `key_pk`; returns it (to correct later)."""
    return backend_module.local_usage.push(recent_redis_key(key_pk), status, body, RECENT_MAX)


def _decode_recent(status: int, body: str) -> dict[str, Any] | None:
    try:
        at, method, path, ip, version, request_id = json.loads(body)
        return {
            "at": datetime.fromtimestamp(float(at), tz=UTC),
            "method": str(method),
            "path": str(path),
            "status": int(status),
            "ip": str(ip) or None,
            "client_version": str(version) or None,
            "request_id": str(request_id),
        }
    except (ValueError, TypeError):
        return None


def recent_requests(*, key_pk: int, limit: int = RECENT_MAX) -> list[dict[str, Any]]:
    """The last `limit` (at most RECENT_MAX) requests of key `key_pk`, newest first.

    Each is `{"at": datetime (UTC), "method", "path" (no query string), "status": int,
    "ip": str | None, "client_version": str | None, "request_id": str}`. Requests refused
    before the key was known (unknown or malformed key) are not there. On Redis the list
    is shared by every process and kept 7 days after the key's last request; on the
    embedded default it is this process's memory. Empty if Redis is unreachable.
    """
    limit = max(0, min(int(limit), RECENT_MAX))
    if limit == 0:
        return []
    try:
        # Requests admitted under admission leases arrive up to a push late (ADR 0065):
        # read the slack too and order by time.
        pairs = backend().recent(recent_redis_key(key_pk), RECENT_MAX + RECENT_SLACK)
    except redisconn.REDIS_ERRORS as exc:
        redisconn.error_log.error("usage", "Redis unreachable: recent requests unknown", exc)
        return []
    decoded = [_decode_recent(status, body) for status, body in pairs]
    entries = [entry for entry in decoded if entry is not None]
    entries.sort(key=lambda entry: entry["at"], reverse=True)  # stable: equal times keep order
    return entries[:limit]


def discard_recent_local() -> None:
    """Forget this process's recent requests (tests start from a clean slate)."""
    local = backend_module.local_usage
    with local.lock:
        local.recent.clear()


# --- folding into the database ----------------------------------------------------------


def _write(deltas: list[UsageDelta], *, batch: str | None) -> int:
    """Add `deltas` to the database in one transaction; returns the requests written.

    With `batch`, a `UsageFoldBatch` row with that id is inserted first: if it exists
    the batch was already written and nothing is added again. Any other error (a key
    deleted while the fold ran fails the foreign key at commit) is raised: the batch is
    kept and folded again, never taken for written.

    A fixed number of queries for every `WRITE_CHUNK` key-hours, however many keys
    (ADR 0094). Two folds at once take their locks in one order: first every missing
    row is inserted, in key and hour order (a row another fold inserted meanwhile is
    left alone); then each chunk's rows are read and locked in that order and written
    back; last, the keys' last use moves forward, in key order.
    """
    from apikeys.models import ApiKey, KeyUsageHour, UsageFoldBatch

    merged: dict[tuple[int, int], UsageDelta] = {}
    for delta in deltas:
        mine = merged.get((delta.key_pk, delta.hour))
        if mine is None:
            merged[(delta.key_pk, delta.hour)] = delta
        else:
            mine.merge(delta)
    with transaction.atomic():
        if batch is not None:
            try:
                with transaction.atomic():
                    UsageFoldBatch.objects.create(batch_id=batch)
            except IntegrityError:
                logger.info("Usage batch %s was already folded; skipped.", batch)
                return 0
        existing = set(
            ApiKey.objects.filter(pk__in={k for k, _ in merged}).values_list("pk", flat=True)
        )
        kept = {
            (key_pk, hour): delta
            for (key_pk, hour), delta in sorted(merged.items())
            if key_pk in existing
        }
        if not kept:
            return 0
        KeyUsageHour.objects.bulk_create(
            [
                KeyUsageHour(
                    api_key_id=key_pk,
                    hour=datetime.fromtimestamp(hour, tz=UTC),
                    org_id=delta.org_pk,
                )
                for (key_pk, hour), delta in kept.items()
            ],
            batch_size=WRITE_CHUNK,
            ignore_conflicts=True,
        )
        names = list(kept)
        written = 0
        for start in range(0, len(names), WRITE_CHUNK):
            chunk = {name: kept[name] for name in names[start : start + WRITE_CHUNK]}
            written += _add_to_rows(KeyUsageHour, chunk)
        _touch_keys(ApiKey, kept.values())
    return written


# Key-hours per statement: a fixed number of queries per this many.
WRITE_CHUNK = 500


def _add_to_rows(model: Any, deltas: dict[tuple[int, int], UsageDelta]) -> int:
    """(in the fold's transaction, its rows inserted) Add `deltas` (by key id and hour,
    in that order) to their rows: one statement locks exactly those rows, one writes
    them back. Returns the requests written."""
    from django.db.models import Q

    keys_by_hour: dict[int, list[int]] = {}
    for key_pk, hour in deltas:
        keys_by_hour.setdefault(hour, []).append(key_pk)
    exact = Q()
    for hour, keys in keys_by_hour.items():
        exact |= Q(hour=datetime.fromtimestamp(hour, tz=UTC), api_key_id__in=keys)
    rows = {
        (row.api_key_id, int(row.hour.timestamp())): row
        for row in model.objects.select_for_update().filter(exact).order_by("api_key_id", "hour")
    }
    ordered = [rows[name] for name in deltas]
    for row, delta in zip(ordered, deltas.values(), strict=True):
        _add(row, delta)
    _update_each(
        model, _ROW_FIELDS, [(row.pk, [getattr(row, f) for f in _ROW_FIELDS]) for row in ordered]
    )
    return sum(delta.requests for delta in deltas.values())


def _update_each(
    model: Any,
    fields: Sequence[str],
    rows: Sequence[tuple[int, Sequence[Any]]],
    *,
    only_if_newer: bool = False,
) -> None:
    """Write `fields` of each of `rows` (primary key, the fields' values in that order) in
    one `executemany`: one batch of a single statement, not a statement built per row
    (Django's `bulk_update` compiles a CASE per row and field, which cost more than the
    queries it saved). Each value is prepared by its field, as `save` prepares it.
    `only_if_newer`: a row is written only where the first field's stored value is NULL
    or older than the new one (a time that only moves forward)."""
    from django.db import connection

    quote = connection.ops.quote_name
    opts = model._meta
    columns = [opts.get_field(name) for name in fields]
    first = quote(columns[0].column)
    # Only quoted names of this model are formatted in; every value is a parameter.
    sql = "UPDATE {} SET {} WHERE {} = %s{}".format(  # noqa: S608
        quote(opts.db_table),
        ", ".join(f"{quote(column.column)} = %s" for column in columns),
        quote(opts.pk.column),
        f" AND ({first} IS NULL OR {first} < %s)" if only_if_newer else "",
    )
    params = []
    for pk, row in rows:
        values = [
            column.get_db_prep_save(value, connection)
            for column, value in zip(columns, row, strict=True)
        ]
        params.append([*values, pk, *(values[:1] if only_if_newer else [])])
    with connection.cursor() as cursor:
        cursor.executemany(sql, params)


_ROW_FIELDS = (
    "count_2xx",
    "count_4xx",
    "count_5xx",
    "client_versions",
    "scopes",
    "ip_reported",
    "last_used_at",
    "last_used_ip",
)


def _add(row: Any, delta: UsageDelta) -> None:
    """Add `delta` to a `KeyUsageHour` row (not saved)."""
    row.count_2xx += delta.count_2xx
    row.count_4xx += delta.count_4xx
    row.count_5xx += delta.count_5xx
    row.client_versions = sorted(set(row.client_versions) | delta.versions)[:MAX_VERSIONS]
    if delta.scopes:
        scopes = dict(row.scopes or {})
        for scope, count in delta.scopes.items():
            scopes[scope] = int(scopes.get(scope, 0)) + count
        row.scopes = scopes
    row.ip_reported += delta.ip_reported
    if delta.last_at:
        last = datetime.fromtimestamp(delta.last_at, tz=UTC)
        if row.last_used_at is None or last > row.last_used_at:
            row.last_used_at, row.last_used_ip = last, delta.last_ip or None


def _touch_keys(api_key_model: Any, deltas: Iterable[UsageDelta]) -> None:
    """Move `last_used_at`/`last_used_ip` of each key forward (never backward), in one
    batch: a key's new values apply only where its stored time is older."""
    latest: dict[int, UsageDelta] = {}
    for delta in deltas:
        if delta.last_at and (
            delta.key_pk not in latest or delta.last_at > latest[delta.key_pk].last_at
        ):
            latest[delta.key_pk] = delta
    keys = [
        (key_pk, [datetime.fromtimestamp(delta.last_at, tz=UTC), delta.last_ip or None])
        for key_pk, delta in sorted(latest.items())
    ]
    if keys:
        _update_each(api_key_model, ("last_used_at", "last_used_ip"), keys, only_if_newer=True)


_fold_lock = threading.Lock()


def fold() -> int:
    """Fold every pending counter into the database; returns the requests folded.

    On Redis this folds what every process counted; on local memory, this process's.
    """
    with _fold_lock:
        held.push()  # what this process admitted under leases, first (ADR 0065)
        return backend().fold(lambda deltas, batch: _write(deltas, batch=batch))


# --- the in-process fold of the embedded default -------------------------------------

# Folds local counters every `LATCHKEY_USAGE_FLUSH_SECONDS` and at exit (ADR 0062), started
# by the first counted request of a process on the embedded default.
_local_folder = Periodic(
    "usage-folder",
    fold,
    lambda: float(getattr(settings, "LATCHKEY_USAGE_FLUSH_SECONDS", 30)),
    at_exit=True,
)
backend_module.local_usage.on_record = _local_folder.ensure_started


MARKER_RETENTION = 8 * 86400


def purge_fold_markers(*, now: float | None = None) -> int:
    """Delete `UsageFoldBatch` markers older than any batch that could still be pending."""
    from apikeys.models import UsageFoldBatch

    cutoff = datetime.fromtimestamp((now or time.time()) - MARKER_RETENTION, tz=UTC)
    deleted, _ = UsageFoldBatch.objects.filter(folded_at__lt=cutoff).delete()
    return int(deleted)


# --- reading usage (the API and the dashboard) ------------------------------------------

HOURLY = "hour"
DAILY = "day"


@dataclass
class UsageBucket:
    key_id: str
    period_start: datetime
    count_2xx: int = 0
    count_4xx: int = 0
    count_5xx: int = 0
    client_versions: set[str] = field(default_factory=set)
    last_used_at: datetime | None = None
    last_used_ip: str | None = None

    @property
    def requests(self) -> int:
        return self.count_2xx + self.count_4xx + self.count_5xx


def usage_series(
    *,
    org: Any,
    since: datetime,
    until: datetime,
    granularity: str = HOURLY,
    key_pk: int | None = None,
) -> list[UsageBucket]:
    """The org's folded usage in [since, until), per key and hour or day, oldest first.

    Figures are those folded into the database, at most a minute behind the live
    counters (the fold interval).
    """
    from apikeys.models import KeyUsageHour

    rows = KeyUsageHour.objects.filter(org=org, hour__gte=since, hour__lt=until)
    if key_pk is not None:
        rows = rows.filter(api_key_id=key_pk)
    buckets: dict[tuple[str, datetime], UsageBucket] = {}
    for row in rows.values(
        "api_key__public_id",
        "hour",
        "count_2xx",
        "count_4xx",
        "count_5xx",
        "client_versions",
        "last_used_at",
        "last_used_ip",
    ).order_by("hour", "api_key_id"):
        hour: datetime = row["hour"].astimezone(UTC)
        start = hour.replace(hour=0) if granularity == DAILY else hour
        bucket_key = (row["api_key__public_id"], start)
        bucket = buckets.get(bucket_key)
        if bucket is None:
            bucket = buckets[bucket_key] = UsageBucket(row["api_key__public_id"], start)
        bucket.count_2xx += row["count_2xx"]
        bucket.count_4xx += row["count_4xx"]
        bucket.count_5xx += row["count_5xx"]
        bucket.client_versions |= set(row["client_versions"] or ())
        last = row["last_used_at"]
        if last is not None and (bucket.last_used_at is None or last > bucket.last_used_at):
            bucket.last_used_at, bucket.last_used_ip = last, row["last_used_ip"]
    return sorted(buckets.values(), key=lambda b: (b.period_start, b.key_id))


def usage_key_pk(*, org: Any, public_id: str) -> int | None:
    """The database id of the org's key `public_id` (deleted keys too: their usage stays)."""
    from apikeys.models import ApiKey

    return ApiKey.objects.filter(org=org, public_id=public_id).values_list("pk", flat=True).first()


def fold_process() -> int:
    """Fold what only this process holds, for server shutdown hooks: the local counters
    on the embedded default; on Redis, the usage of requests admitted under admission
    leases and their unused tokens (ADR 0065), pushed to Redis for the fold."""
    if backend().shared:
        held.release_all()
        return 0
    return fold()
