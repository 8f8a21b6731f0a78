"""Usage counters: counted without the database, folded into it exactly once."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from django.db import connection

from apikeys import backend as backend_module
from apikeys import redisconn, usage
from apikeys.backend import UsageDelta
from apikeys.models import ApiKey, KeyUsageHour, UsageFoldBatch
from apikeys.ratelimit import UsageMeta, check_limits
from orgs.models import Organization
from orgs.plans import Limits
from tests.apikeys.guards.conftest import RedisServer
from tests.factories import ApiKeyFactory

T0 = datetime(2030, 1, 15, 12, 0, 0, tzinfo=UTC).timestamp()
UNLIMITED = Limits(per_minute=0, burst=0, monthly=0)


def make_key(org: Organization) -> ApiKey:
    return ApiKeyFactory.create(org=org, name="Integration")


def count(
    key: ApiKey,
    now: float,
    *,
    status: int = 200,
    version: str = "",
    ip: str = "203.0.113.9",
    limits: Limits = UNLIMITED,
) -> bool:
    result = check_limits(
        key_pk=key.pk,
        org_pk=key.org_id,
        limits=limits,
        meta=UsageMeta(ip=ip, client_version=version),
        now=now,
    )
    if result.allowed:
        usage.record_status(
            key_pk=key.pk,
            org_pk=key.org_id,
            hour=usage.hour_start(now),
            status_class=usage.status_class(status),
        )
    return result.allowed


def test_requests_are_counted_by_status_class_and_folded(
    backend: str, org: Organization, django_assert_num_queries: Any
) -> None:
    key = make_key(org)
    with django_assert_num_queries(0):
        count(key, T0 + 1, version="sdk-1.2")
        count(key, T0 + 2, status=404, version="sdk-1.3")
        count(key, T0 + 3, status=500, ip="198.51.100.7")
        count(key, T0 + 4, status=201)
    assert not KeyUsageHour.objects.exists()
    assert usage.fold() == 4
    row = KeyUsageHour.objects.get(api_key=key)
    assert row.hour == datetime(2030, 1, 15, 12, tzinfo=UTC)
    assert row.org_id == org.pk
    assert (row.count_2xx, row.count_4xx, row.count_5xx) == (2, 1, 1)
    assert row.client_versions == ["sdk-1.2", "sdk-1.3"]
    assert row.last_used_at == datetime.fromtimestamp(T0 + 4, tz=UTC)
    assert row.last_used_ip == "203.0.113.9"
    key.refresh_from_db()
    assert key.last_used_at == datetime.fromtimestamp(T0 + 4, tz=UTC)
    assert key.last_used_ip == "203.0.113.9"


def test_requests_are_counted_per_scope_they_needed(backend: str, org: Organization) -> None:
    from apikeys.selectors import usage_scopes

    key = make_key(org)
    for scopes in ("payments:read", "payments:read", "invoices:execute payments:read", ""):
        check_limits(
            key_pk=key.pk,
            org_pk=key.org_id,
            limits=UNLIMITED,
            meta=UsageMeta(ip="203.0.113.9", scopes=scopes),
            now=T0 + 1,
        )
    assert usage.fold() == 4
    assert KeyUsageHour.objects.get(api_key=key).scopes == {
        "payments:read": 3,
        "invoices:execute": 1,
    }
    check_limits(
        key_pk=key.pk,
        org_pk=key.org_id,
        limits=UNLIMITED,
        meta=UsageMeta(scopes="payments:read"),
        now=T0 + 2,
    )
    usage.fold()
    since = datetime.fromtimestamp(T0 - 3600, tz=UTC)
    until = datetime.fromtimestamp(T0 + 3600, tz=UTC)
    assert usage_scopes(org=org, key=key, since=since, until=until) == {
        "invoices:execute": 1,
        "payments:read": 4,
    }


def test_folding_adds_to_what_is_already_folded(backend: str, org: Organization) -> None:
    key = make_key(org)
    count(key, T0 + 1)
    usage.fold()
    count(key, T0 + 2, status=429)
    count(key, T0 + 3)
    assert usage.fold() == 2
    assert usage.fold() == 0
    row = KeyUsageHour.objects.get(api_key=key)
    assert (row.count_2xx, row.count_4xx, row.count_5xx) == (2, 1, 0)


def test_each_hour_is_its_own_row(backend: str, org: Organization) -> None:
    key = make_key(org)
    count(key, T0 - 1)
    count(key, T0 + 1)
    count(key, T0 + 2)
    usage.fold()
    rows = list(KeyUsageHour.objects.filter(api_key=key).order_by("hour"))
    assert [r.count_2xx for r in rows] == [1, 2]


def test_refused_requests_count_as_4xx(backend: str, org: Organization) -> None:
    key = make_key(org)
    limits = Limits(per_minute=1, burst=0, monthly=0)
    assert count(key, T0 + 1, limits=limits)
    assert not count(key, T0 + 2, limits=limits)
    usage.fold()
    row = KeyUsageHour.objects.get(api_key=key)
    assert (row.count_2xx, row.count_4xx) == (1, 1)


def test_unprintable_or_overlong_client_versions_are_not_recorded(
    backend: str, org: Organization
) -> None:
    key = make_key(org)
    count(key, T0, version="x" * 65)
    count(key, T0, version="bad version")
    count(key, T0, version=" v2 ")
    usage.fold()
    assert KeyUsageHour.objects.get(api_key=key).client_versions == ["v2"]


def test_last_used_never_moves_backwards(backend: str, org: Organization) -> None:
    key = make_key(org)
    count(key, T0 + 100, ip="192.0.2.1")
    usage.fold()
    count(key, T0 + 50, ip="192.0.2.2")
    usage.fold()
    key.refresh_from_db()
    assert key.last_used_at == datetime.fromtimestamp(T0 + 100, tz=UTC)
    assert key.last_used_ip == "192.0.2.1"


def test_a_fold_runs_as_many_queries_for_forty_keys_as_for_two(
    backend: str, org: Organization
) -> None:
    """Writing usage costs a fixed number of statements per `WRITE_CHUNK` key-hours, not
    a few per key: a fold of 200 busy keys fits in its interval. Both when the rows are
    new and when the fold adds to rows already there."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    def fold_queries(keys: list[ApiKey]) -> int:
        for key in keys:
            count(key, T0 + 1)
            count(key, T0 + 3600, status=404)  # the next hour: a second row per key
        with CaptureQueriesContext(connection) as queries:
            assert usage.fold() == 2 * len(keys)
        return len(queries)

    few = [make_key(org) for _ in range(2)]
    many = [make_key(org) for _ in range(40)]
    assert fold_queries(few) == fold_queries(many)  # new rows
    assert fold_queries(few) == fold_queries(many)  # rows already there
    assert KeyUsageHour.objects.filter(api_key__in=many, count_2xx=2).count() == 40
    assert KeyUsageHour.objects.filter(api_key__in=many, count_4xx=2).count() == 40


def test_a_fold_larger_than_a_chunk_writes_every_row(
    backend: str, org: Organization, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(usage, "WRITE_CHUNK", 3)
    keys = [make_key(org) for _ in range(7)]
    for n, key in enumerate(keys):  # two hours a key: keys straddle the chunks
        count(key, T0 - 10 + n, ip=f"192.0.2.{n + 1}")
        count(key, T0 + n, ip=f"192.0.2.{n + 1}", status=500)
    assert usage.fold() == 14
    for n, key in enumerate(keys):
        key.refresh_from_db()
        assert key.last_used_ip == f"192.0.2.{n + 1}"
        rows = list(KeyUsageHour.objects.filter(api_key=key).order_by("hour"))
        assert [(r.count_2xx, r.count_5xx) for r in rows] == [(1, 0), (0, 1)]


@pytest.mark.django_db(transaction=True)  # the foreign key is checked at a real commit
def test_a_key_deleted_while_the_fold_writes_leaves_the_batch_to_fold_again(
    backend: str, org: Organization, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A key deleted by another transaction after the fold read which keys exist fails
    the foreign key at the fold's commit. The batch is not taken for written (its other
    keys' usage would be lost): it is folded again, without the deleted key. Here the
    delete runs inside the fold's transaction, then again for real."""
    from django.db import IntegrityError

    gone, kept = make_key(org), make_key(org)
    count(gone, T0 + 1)
    count(kept, T0 + 2)
    insert = KeyUsageHour.objects.bulk_create

    def deleted_first(*args: Any, **kwargs: Any) -> Any:
        ApiKey.objects.filter(pk=gone.pk).delete()
        return insert(*args, **kwargs)

    monkeypatch.setattr(KeyUsageHour.objects, "bulk_create", deleted_first)
    with pytest.raises(IntegrityError):
        usage.fold()
    monkeypatch.setattr(KeyUsageHour.objects, "bulk_create", insert)
    assert not KeyUsageHour.objects.exists()
    # The delete of another transaction, committed (the fold's own was rolled back).
    ApiKey.objects.filter(pk=gone.pk).delete()
    monkeypatch.setattr(backend_module, "ABANDONED_AFTER", 0)  # on Redis: retried at once
    assert usage.fold() == 1
    assert KeyUsageHour.objects.get().api_key_id == kept.pk
    assert usage.fold() == 0


@pytest.mark.django_db(transaction=True)  # two threads, two connections, real commits
def test_two_folds_of_the_same_rows_at_once_wait_for_each_other_and_never_deadlock(
    org: Organization, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ADR 0094: every fold locks its rows in key and hour order, whatever order its
    batch lists them in. Fold A locks the first key's row and stops before writing it;
    fold B, given the keys the other way round, must then wait for that row before it
    locks any other. A fold that locked the second key's row first would deadlock with A
    once A goes on (PostgreSQL then aborts one of them)."""
    if connection.vendor != "postgresql":
        pytest.skip("row locks: checked by the suite's PostgreSQL run")
    monkeypatch.setattr(usage, "WRITE_CHUNK", 1)  # one row a chunk: A can stop between two
    first, second = make_key(org), make_key(org)
    hour = int(usage.hour_start(T0))
    for key in (first, second):  # rows already there: the folds meet at their row locks
        KeyUsageHour.objects.create(
            api_key=key, org=org, hour=datetime.fromtimestamp(hour, tz=UTC), count_2xx=5
        )

    def batch(*keys: ApiKey) -> list[UsageDelta]:
        return [
            UsageDelta(key.pk, org.pk, hour, requests=1, last_at=T0, last_ip="192.0.2.1")
            for key in keys
        ]

    real_update = usage._update_each
    a_holds_a_row, a_may_go_on = threading.Event(), threading.Event()

    def stopping(model: Any, *args: Any, **kwargs: Any) -> None:
        if (
            model is KeyUsageHour
            and threading.current_thread().name == "fold-a"
            and not a_holds_a_row.is_set()
        ):
            a_holds_a_row.set()
            a_may_go_on.wait(30)
        real_update(model, *args, **kwargs)

    monkeypatch.setattr(usage, "_update_each", stopping)
    errors: list[BaseException] = []

    def fold(*keys: ApiKey) -> None:
        try:
            usage._write(batch(*keys), batch=None)
        except BaseException as exc:  # reported by the test, not lost in the thread
            errors.append(exc)
        finally:
            connection.close()

    fold_a = threading.Thread(target=fold, args=(first, second), name="fold-a")
    fold_b = threading.Thread(target=fold, args=(second, first), name="fold-b")
    fold_a.start()
    try:
        assert a_holds_a_row.wait(30)
        fold_b.start()
        # A goes on once B waits for a lock (A's row), as it must before locking any other.
        with connection.cursor() as cursor:
            for _ in range(300):
                cursor.execute(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
                if cursor.fetchone()[0]:
                    break
                time.sleep(0.05)
            else:
                pytest.fail("fold B never waited for fold A's row")
    finally:  # never leave A holding its lock past the test
        a_may_go_on.set()
        fold_a.join(30)
        if fold_b.ident is not None:
            fold_b.join(30)
    assert not fold_a.is_alive() and not fold_b.is_alive()
    assert errors == []
    assert sorted(KeyUsageHour.objects.values_list("api_key_id", "count_2xx")) == [
        (first.pk, 7),
        (second.pk, 7),
    ]


def test_one_fold_moves_each_keys_last_use_forward_only(backend: str, org: Organization) -> None:
    ahead, behind = make_key(org), make_key(org)
    count(ahead, T0 + 100, ip="192.0.2.1")
    count(behind, T0 + 10, ip="192.0.2.2")
    usage.fold()
    count(ahead, T0 + 50, ip="192.0.2.3")  # older than what is stored: ignored
    count(behind, T0 + 60, ip="192.0.2.4")  # newer: moves
    usage.fold()
    ahead.refresh_from_db()
    behind.refresh_from_db()
    assert (ahead.last_used_at, ahead.last_used_ip) == (
        datetime.fromtimestamp(T0 + 100, tz=UTC),
        "192.0.2.1",
    )
    assert (behind.last_used_at, behind.last_used_ip) == (
        datetime.fromtimestamp(T0 + 60, tz=UTC),
        "192.0.2.4",
    )
    rows = {row.api_key_id: row for row in KeyUsageHour.objects.all()}
    assert rows[ahead.pk].last_used_ip == "192.0.2.1"
    assert rows[behind.pk].last_used_ip == "192.0.2.4"
    assert rows[ahead.pk].count_2xx == rows[behind.pk].count_2xx == 2


def test_counters_of_another_process_are_folded(use_redis: RedisServer, org: Organization) -> None:
    """On Redis the counters are shared: what any process counted is folded by any other."""
    key = make_key(org)
    count(key, T0 + 1)
    usage.discard_local()  # nothing of it lives in this process
    assert usage.fold() == 1


def test_a_fold_that_crashed_before_writing_is_finished_by_the_next(
    use_redis: RedisServer, org: Organization, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = make_key(org)
    count(key, T0 + 1)
    count(key, T0 + 2)

    def crash(*args: Any, **kwargs: Any) -> int:
        raise RuntimeError("worker killed")

    monkeypatch.setattr(usage, "_write", crash)
    with pytest.raises(RuntimeError):
        usage.fold()
    monkeypatch.undo()
    count(key, T0 + 3)  # arrives while the claimed batch waits
    assert usage.fold() == 1  # the abandoned batch is not old enough to be taken yet
    monkeypatch.setattr(backend_module, "ABANDONED_AFTER", 0)
    assert usage.fold() == 2
    assert KeyUsageHour.objects.get(api_key=key).count_2xx == 3
    conn = redisconn.client()
    assert conn is not None and not conn.hgetall(usage._redis_batches_key())


def test_a_fold_that_crashed_after_writing_does_not_count_twice(
    use_redis: RedisServer, org: Organization, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = make_key(org)
    count(key, T0 + 1)
    conn = redisconn.client()
    assert conn is not None
    real_pipeline = conn.pipeline

    class CrashOnDelete:
        def __init__(self) -> None:
            self.pipe = real_pipeline(transaction=False)
            self.deleting = False

        def delete(self, *names: str) -> None:
            self.deleting = True

        def hgetall(self, name: str) -> None:
            self.pipe.hgetall(name)

        def hdel(self, *args: str) -> None:
            self.deleting = True

        def execute(self) -> Any:
            if self.deleting:
                raise ConnectionError("worker killed after the database commit")
            return self.pipe.execute()

    monkeypatch.setattr(conn, "pipeline", lambda transaction=False: CrashOnDelete())
    with pytest.raises(ConnectionError):
        usage.fold()
    monkeypatch.undo()
    assert KeyUsageHour.objects.get(api_key=key).count_2xx == 1
    monkeypatch.setattr(backend_module, "ABANDONED_AFTER", 0)
    usage.fold()
    assert KeyUsageHour.objects.get(api_key=key).count_2xx == 1
    assert not conn.hgetall(usage._redis_batches_key())


def test_counters_of_deleted_keys_are_dropped(backend: str, org: Organization) -> None:
    key = make_key(org)
    count(key, T0)
    ApiKey.objects.filter(pk=key.pk).delete()
    usage.fold()
    assert not KeyUsageHour.objects.exists()


def test_fold_markers_are_purged_after_a_week(db: None) -> None:
    old = UsageFoldBatch.objects.create(batch_id="a" * 32)
    UsageFoldBatch.objects.filter(pk=old.pk).update(folded_at=datetime(2020, 1, 1, tzinfo=UTC))
    UsageFoldBatch.objects.create(batch_id="b" * 32)
    assert usage.purge_fold_markers() == 1
    assert list(UsageFoldBatch.objects.values_list("batch_id", flat=True)) == ["b" * 32]


def test_a_recent_list_gets_its_expiry_and_renews_it_once_it_has_run_down(
    use_redis: RedisServer, org: Organization
) -> None:
    """A key's recent-requests list lives a week after its last request: a new list gets
    the week, a write renews it only once it has run down by `RECENT_RENEW` (a read, not a
    write to propagate, on most requests), and a list without an expiry gets one."""
    key = make_key(org)
    conn = redisconn.client()
    assert conn is not None
    name = usage.recent_redis_key(key.pk)

    def request(now: float) -> None:
        assert check_limits(
            key_pk=key.pk,
            org_pk=key.org_id,
            limits=UNLIMITED,
            meta=UsageMeta(ip="203.0.113.9", method="GET", path="/v1/items"),
            now=now,
        ).allowed

    request(T0)
    assert usage.RECENT_TTL - 5 <= conn.ttl(name) <= usage.RECENT_TTL
    almost = usage.RECENT_TTL - backend_module.RECENT_RENEW + 60
    conn.expire(name, almost)  # run down by less than RECENT_RENEW: kept as it is
    request(T0 + 1)
    assert almost - 5 <= conn.ttl(name) <= almost
    conn.expire(name, almost - 120)  # run down by more: renewed
    request(T0 + 2)
    assert usage.RECENT_TTL - 5 <= conn.ttl(name) <= usage.RECENT_TTL
    conn.persist(name)
    request(T0 + 3)
    assert usage.RECENT_TTL - 5 <= conn.ttl(name) <= usage.RECENT_TTL
    assert len(usage.recent_requests(key_pk=key.pk)) == 4


def test_an_abandoned_batch_that_keeps_failing_does_not_hold_back_the_counters_behind_it(
    use_redis: RedisServer,
    org: Organization,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A claimed batch whose write fails again is left for the next fold; what was counted
    since is claimed and folded all the same, and the failure is still raised."""
    stuck, fresh = make_key(org), make_key(org)
    count(stuck, T0 + 1)
    real_write = usage._write

    def crash(*args: Any, **kwargs: Any) -> int:
        raise RuntimeError("worker killed")

    monkeypatch.setattr(usage, "_write", crash)
    with pytest.raises(RuntimeError):
        usage.fold()
    monkeypatch.setattr(backend_module, "ABANDONED_AFTER", 0)

    def fails_for_stuck(deltas: list[Any], *, batch: str | None) -> int:
        if any(delta.key_pk == stuck.pk for delta in deltas):
            raise RuntimeError("this batch cannot be written")
        return real_write(deltas, batch=batch)

    monkeypatch.setattr(usage, "_write", fails_for_stuck)
    count(fresh, T0 + 2)
    with pytest.raises(RuntimeError, match="cannot be written"):
        usage.fold()
    assert "could not be folded" in caplog.text
    assert KeyUsageHour.objects.get(api_key=fresh).count_2xx == 1
    assert not KeyUsageHour.objects.filter(api_key=stuck).exists()
    monkeypatch.setattr(usage, "_write", real_write)
    assert usage.fold() == 1  # the stuck batch, once it can be written
    assert KeyUsageHour.objects.get(api_key=stuck).count_2xx == 1
    conn = redisconn.client()
    assert conn is not None and not conn.hgetall(usage._redis_batches_key())


@pytest.mark.parametrize(
    "fields",
    [
        {"at": 1_700_000_000.123456789, "method": "GET", "path": "/api/v1/me?page=2"},
        {"at": 0.0, "method": "POST", "path": '/é"\\\n\u2028/𝄞', "ip": "::1"},
        {"at": 1e-7, "method": "", "path": "", "ip": "", "request_id": ""},
        {"at": 1_767_225_599.9999995, "method": "DELETE" * 3, "path": "/" + "a" * 3000},
        {"client_version": " sdk/1.2 ", "request_id": "r\u00e9q\x00\x1f"},
        {"client_version": "not a version", "ip": "x" * 100, "request_id": "q" * 200},
    ],
)
def test_a_recent_requests_body_is_the_json_the_encoder_writes(fields: dict[str, Any]) -> None:
    """Written by hand for speed, it must stay byte for byte the standard JSON of the
    same truncated fields: readers parse it with `json.loads`."""
    values: dict[str, Any] = {
        "at": 1_700_000_000.5,
        "method": "GET",
        "path": "/v1/payments/pay_1/refund",
        "ip": "203.0.113.9",
        "client_version": "",
        "request_id": "req_1",
    }
    values.update(fields)
    body = usage.recent_body(**values)
    expected = json.dumps(
        [
            round(values["at"], 6),
            values["method"][:10],
            values["path"].split("?", 1)[0][: usage.MAX_RECENT_PATH],
            values["ip"][:64],
            usage.clean_version(values["client_version"]),
            values["request_id"][:128],
        ],
        separators=(",", ":"),
    )
    assert body == expected
    assert json.loads(body)[0] == round(values["at"], 6)
