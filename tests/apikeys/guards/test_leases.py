"""Admission leases (ADR 0065, 0090): a key busy on this host is admitted by the host's
workers from a block of tokens counted up front, without a Redis call per request.

The limits stay exact (the tokens are counted when granted, unused ones go back), a
lease is sized by the key's demand on the host and takes at most a quarter of what a
window has left, every process of the host admits from it (with the key's state it saw
itself), revocation stays immediate (an invalidation waits out every lease that may be
held), and usage and recent requests are still counted.
"""

from __future__ import annotations

import fcntl
import logging
import os
import platform
import secrets
import select
import signal
import struct
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from django.core.cache import cache
from django.test import override_settings

from apikeys import backend, keycache, leases, ratelimit, redisconn, usage
from apikeys.guard import counting
from apikeys.keys import key_digest
from apikeys.models import ApiKey, KeyUsageHour
from apikeys.services import apikey_revoke
from orgs.actors import Actor
from orgs.models import Organization
from tests.apikeys.api.conftest import ApiClient
from tests.apikeys.guards.conftest import CommandLog, RedisServer, new_key, set_limits
from tests.clock import FrozenClock

HIGH = 10**9
# How long a host trusts its reading of the lease epoch (longer than the default's 200 ms,
# so that a slow machine does not see the readings of these tests grow old mid-test).
LEASE_MS = 1000
TRUST = LEASE_MS / 1000 * leases.HOLDER_FRACTION
# Tokens a worker takes at its first request under the 30-token lease `lease_up` makes:
# its own and a batch of the next ones (ADR 0092).
TAKEN = min(leases.BATCH_MAX, 30 - leases.BATCH_LEAVES)


@pytest.fixture
def leases_on(use_redis: RedisServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[RedisServer]:
    """Leases on; no pusher thread (the tests push when they mean to)."""
    leases.discard()
    monkeypatch.setattr(leases._pusher, "ensure_started", lambda: None)
    with override_settings(LATCHKEY_KEY_LEASE_MS=LEASE_MS, LATCHKEY_KEY_LEASE_TOKENS=64):
        yield use_redis
    leases.discard()


def redis_ms() -> int:
    seconds, micros = redis().time()
    return int(seconds) * 1000 + int(micros) // 1000


def marker_left(name: str) -> float:
    """Seconds a lease marker still covers, by Redis' clock."""
    return (int(redis().get(name) or 0) - redis_ms()) / 1000


def redis() -> Any:
    conn = redisconn.client()
    assert conn is not None
    return conn


def counters(key: ApiKey, org: Organization, now: float) -> list[int]:
    """The burst, minute and month counters in Redis."""
    conn = redis()
    return [int(v or 0) for v in conn.mget(ratelimit.counter_keys(key.pk, org.pk, now))]


def remaining(response: Any) -> int:
    return int(response["X-RateLimit-Remaining"])


def lease_up(api: ApiClient) -> list[int]:
    """Cold (key part), org part, the first warm request (after which this process knows
    the key's state), the first counted in the host's table, then the second, which is
    granted a lease: two requests in the first tenth of a second on this host ask for
    1 + 1.5 x (2 / 0.1 a second) = 31 tokens (that request and 30 more)."""
    seen = []
    for _ in range(5):
        response = api.get("me")
        assert response.status_code == 200
        seen.append(remaining(response))
    return seen


def leased_key(org: Organization) -> tuple[ApiKey, ApiClient]:
    """A key of `org`, given limits of 10^9, and leased up (`lease_up`)."""
    set_limits(org, per_minute=HIGH, burst=HIGH, monthly=HIGH)
    key, api = new_key(org)
    lease_up(api)
    return key, api


def served_without_redis(api: ApiClient, redis_commands: CommandLog, count: int) -> bool:
    """`count` requests of `api`'s key admitted with no Redis command at all."""
    redis_commands.clear()
    admitted = all(api.get("me").status_code == 200 for _ in range(count))
    return admitted and redis_commands.names == []


def test_a_high_limit_key_is_admitted_without_redis_calls_under_a_lease(
    leases_on: RedisServer, org: Organization, frozen_clock: Any, redis_commands: CommandLog
) -> None:
    set_limits(org, per_minute=HIGH, burst=HIGH, monthly=HIGH)
    key, api = new_key(org)
    assert lease_up(api) == [HIGH - i for i in range(1, 6)]
    # The fifth request counted itself and 30 more tokens for this host.
    assert counters(key, org, frozen_clock.now) == [35, 35, 35]
    redis_commands.clear()
    seen = [remaining(api.get("me")) for _ in range(10)]
    assert redis_commands.names == []
    assert seen == [HIGH - 6 - i for i in range(10)]
    # Its unused tokens go back: the windows count exactly the admitted requests.
    leases.release_all()
    assert counters(key, org, frozen_clock.now) == [15, 15, 15]


@pytest.mark.parametrize(
    ("limits", "window", "block"),
    [
        # 8 left in the burst window after the fifth request: a quarter is 2.
        ({"burst": 13}, 0, 2),
        # 64 left in the minute: a sixteenth is 4.
        ({"per_minute": 69}, 1, 4),
        # 768 left of the month's quota: a 256th is 3.
        ({"monthly": 773}, 2, 3),
    ],
)
def test_a_lease_takes_at_most_a_share_of_what_each_window_has_left(
    leases_on: RedisServer,
    org: Organization,
    frozen_clock: Any,
    redis_commands: CommandLog,
    limits: dict[str, int],
    window: int,
    block: int,
) -> None:
    set_limits(org, **{"per_minute": HIGH, "burst": HIGH, "monthly": HIGH, **limits})
    key, api = new_key(org)
    lease_up(api)
    # The fifth request and `block - 1` more.
    assert counters(key, org, frozen_clock.now)[window] == 4 + block
    for _ in range(block - 1):
        redis_commands.clear()
        assert api.get("me").status_code == 200
        assert redis_commands.names == []
    assert api.get("me").status_code == 200
    assert redis_commands.names == ["EVALSHA"]


def test_a_busy_growth_key_is_leased_a_quarter_of_its_burst(
    leases_on: RedisServer, org: Organization, frozen_clock: Any, redis_commands: CommandLog
) -> None:
    set_limits(org, per_minute=600, burst=50, monthly=2_000_000)
    key, api = new_key(org)
    lease_up(api)
    # 45 left in the burst window: 11 tokens (the fifth request and 10 more).
    assert counters(key, org, frozen_clock.now) == [15, 15, 15]
    assert served_without_redis(api, redis_commands, 10)
    # A lease this small leaves no worker a batch: its tokens stay the host's (ADR 0092).
    assert not leases._batches
    assert api.get("me").status_code == 200
    assert redis_commands.names == ["EVALSHA"]


def test_a_busy_key_is_leased_up_to_256_tokens_by_default(
    use_redis: RedisServer,
    monkeypatch: pytest.MonkeyPatch,
    org: Organization,
    frozen_clock: Any,
    redis_commands: CommandLog,
) -> None:
    """The default largest lease (`LATCHKEY_KEY_LEASE_TOKENS`, ADR 0098): a key busy at
    hundreds of requests a second makes one round trip per 256 requests on a host, not
    one per 64. Some 300 requests through the test client outlast a lease's trust on a
    loaded machine, so the steady clock is held still."""
    leases.discard()
    monkeypatch.setattr(leases._pusher, "ensure_started", lambda: None)
    steady = FrozenClock(time.monotonic())
    monkeypatch.setattr(leases, "time", steady)
    monkeypatch.setattr(counting, "time", steady)
    try:
        with override_settings(LATCHKEY_KEY_LEASE_MS=LEASE_MS):
            set_limits(org, per_minute=HIGH, burst=HIGH, monthly=HIGH)
            key, api = new_key(org)
            lease_up(api)
            assert counters(key, org, frozen_clock.now) == [35, 35, 35]
            assert served_without_redis(api, redis_commands, 30)
            # 36 requests in the second's first tenth: 360 a second predicted, capped.
            redis_commands.clear()
            assert api.get("me").status_code == 200
            assert redis_commands.names == ["EVALSHA"]
            assert counters(key, org, frozen_clock.now) == [35 + 256] * 3
            assert served_without_redis(api, redis_commands, 255)
    finally:
        leases.discard()


def test_a_quiet_key_gets_no_lease(
    leases_on: RedisServer, org: Organization, frozen_clock: Any, redis_commands: CommandLog
) -> None:
    """One request a second: nothing predicts a second one, so no tokens are held idle
    (and an invalidation of the key never waits)."""
    set_limits(org, per_minute=600, burst=50, monthly=2_000_000)
    key, api = new_key(org)
    for _ in range(2):  # cold: the key part, then the org part
        assert api.get("me").status_code == 200
        frozen_clock.advance(1)
    for _ in range(4):
        redis_commands.clear()
        assert api.get("me").status_code == 200
        assert redis_commands.names == ["EVALSHA"]
        assert counters(key, org, frozen_clock.now)[0] == 1
        frozen_clock.advance(1)
    assert redis().get(keycache.key_lease_name(key.digest)) is None


@pytest.mark.parametrize(
    ("previous", "current", "elapsed", "wanted"),
    [
        (0, 1, 0.5, 0),  # a first request says nothing about the next
        (1, 1, 0.0, 0),  # one a second, and this is it
        (8, 1, 0.0, 12),  # last second's 8: 7 more, half as much again, and this one
        (8, 6, 0.9, 4),  # 2 more expected
        (0, 3, 0.0, 46),  # 3 at once at the start of a second: 30 a second
        (0, 4, 0.5, 7),  # 8 a second, half a second left: 4 more
        (40, 50, 0.5, 76),  # running faster than last second: this second's rate
    ],
)
def test_a_lease_is_sized_by_the_keys_demand_on_the_host(
    previous: int, current: int, elapsed: float, wanted: int
) -> None:
    assert leases._wanted(previous, current, elapsed) == wanted


def test_every_process_of_the_host_admits_from_one_lease(
    leases_on: RedisServer, org: Organization, frozen_clock: Any, redis_commands: CommandLog
) -> None:
    key, api = leased_key(org)
    leases._forked()  # what a worker forked from here starts with: the host's table alone
    redis_commands.clear()
    # Its first request asks Redis (it has not seen the key's state yet), and asks for
    # no lease of its own: the host holds one.
    assert api.get("me").status_code == 200
    assert redis_commands.names == ["EVALSHA"]
    assert counters(key, org, frozen_clock.now) == [36, 36, 36]
    redis_commands.clear()
    seen = [remaining(api.get("me")) for _ in range(5)]
    assert redis_commands.names == []
    # The headers count what the lease knows: its own admissions since it was granted.
    assert seen == [HIGH - 6 - i for i in range(5)]
    leases.release_all()
    # The lease is its granter's and stays; what this worker's batch left (it took
    # `TAKEN` at its first leased request) goes back to the windows.
    assert counters(key, org, frozen_clock.now) == [36 - (TAKEN - 5)] * 3


def test_a_process_that_saw_another_state_of_the_key_does_not_use_the_hosts_lease(
    leases_on: RedisServer, org: Organization, frozen_clock: Any, redis_commands: CommandLog
) -> None:
    """A lease is used only with the key's state it was granted with: a worker holding an
    older state (other scopes, limits, the org's) asks Redis and gets the current one."""
    key, api = leased_key(org)
    current = leases._known[key.digest][1]
    leases.know(key.digest, replace(current, entry=b"an older entry of the key"))
    redis_commands.clear()
    assert api.get("me").status_code == 200
    assert redis_commands.names == ["EVALSHA"]
    redis_commands.clear()
    assert api.get("me").status_code == 200
    assert redis_commands.names == []  # now it holds the state the lease was granted with


def test_the_hosts_table_is_used_only_if_it_is_this_users_alone(
    leases_on: RedisServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def named(path: Path) -> Path:  # the file a setting of `path` names (ADR 0102)
        return Path(f"{path}.{leases._LAYOUT}")

    shared = tmp_path / "table"
    named(shared).write_bytes(b"")
    named(shared).chmod(0o666)
    link = tmp_path / "link"
    named(link).symlink_to(tmp_path / "elsewhere")
    linked = tmp_path / "linked"
    hard = tmp_path / "hard"
    linked.write_bytes(b"")
    linked.chmod(0o600)
    os.link(linked, named(hard))  # a second name of one of this user's files
    for path in (shared, link, hard):
        with override_settings(LATCHKEY_LEASE_TABLE=str(path)):
            with caplog.at_level(logging.ERROR, logger="apikeys.guards"):
                table = leases._table()
            assert "keeps its leases to itself" in caplog.text
            table.map[:4] = b"used"
            caplog.clear()
    assert named(shared).read_bytes() == b""
    assert linked.read_bytes() == b""
    assert not (tmp_path / "elsewhere").exists()
    mine = tmp_path / "mine"
    with override_settings(LATCHKEY_LEASE_TABLE=str(mine)):
        leases._table().map[:4] = b"used"
    assert not mine.exists()  # a release of another layout's file is never opened
    assert named(mine).stat().st_mode & 0o777 == 0o600
    assert named(mine).read_bytes()[:4] == b"used"


def test_never_more_than_the_quota_and_exactly_the_quota_once_tokens_are_back(
    leases_on: RedisServer, org: Organization, frozen_clock: Any
) -> None:
    set_limits(org, per_minute=HIGH, burst=HIGH, monthly=1000)
    key, api = new_key(org)
    statuses: Counter[int] = Counter()
    codes = set()
    for _ in range(1100):
        response = api.get("me")
        statuses[response.status_code] += 1
        if response.status_code == 429:
            codes.add(response.json()["error"]["code"])
    assert set(statuses) == {200, 429} and codes == {"quota_exceeded"}
    assert statuses[200] <= 1000
    leases.release_all()
    assert counters(key, org, frozen_clock.now)[2] == statuses[200]
    # Tokens a lease held and did not use are admitted after all, and then no more.
    while api.get("me").status_code == 200:
        statuses[200] += 1
    assert statuses[200] == 1000


def test_revocation_waits_out_the_leases_and_is_then_in_force(
    leases_on: RedisServer,
    org: Organization,
    frozen_clock: Any,
    monkeypatch: pytest.MonkeyPatch,
    django_capture_on_commit_callbacks: Any,
) -> None:
    waits: list[float] = []
    monkeypatch.setattr(keycache, "_wait", waits.append)
    key, api = leased_key(org)
    with django_capture_on_commit_callbacks(execute=True):
        apikey_revoke(key=key, actor=Actor.system())
    # A lease may be held (its marker lives for a second): the invalidation at commit moved
    # the lease epoch on and waited at most as long as a host trusts an older reading.
    assert len(waits) == 1 and 0 < waits[0] <= LEASE_MS / 1000 + keycache.LEASE_WAIT_MARGIN
    refused = api.get("me")
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "api_key_revoked"


def test_a_lease_lives_no_longer_than_its_marker(
    leases_on: RedisServer, org: Organization, frozen_clock: Any
) -> None:
    """What makes an invalidation move the epoch on: the marker outlives the lease."""
    key, _ = leased_key(org)
    (index,) = leases._granted
    lives = leases._table().read(index)[leases._TRUST] - time.monotonic()
    marker = marker_left(keycache.key_lease_name(key.digest))
    org_marker = marker_left(keycache.org_lease_name(org.pk))
    assert 0 < lives < marker and lives < org_marker
    assert lives <= leases.MARKER_MS / 1000 * leases.HOLDER_FRACTION
    # Trusted to the end of its second, whenever in it it was asked for (ADR 0093).
    assert lives > keycache.LEASE_LIFE_MS / 1000 * leases.HOLDER_FRACTION


def test_a_lease_is_used_only_while_the_hosts_reading_of_the_epoch_is_fresh(
    leases_on: RedisServer, org: Organization, frozen_clock: Any, redis_commands: CommandLog
) -> None:
    _, api = leased_key(org)
    _, asked_at = leases._table().epoch_reading()
    assert 0 < time.monotonic() - asked_at < TRUST
    redis_commands.clear()
    assert api.get("me").status_code == 200
    assert redis_commands.names == []
    # The reading grows old (no round trip on this host for longer than it is trusted).
    age_reading(TRUST)
    assert api.get("me").status_code == 200
    assert redis_commands.names == ["EVALSHA"]  # which reads the epoch again...
    redis_commands.clear()
    assert api.get("me").status_code == 200
    assert redis_commands.names == []  # ...and the lease is usable again


def test_an_invalidation_elsewhere_ends_the_hosts_leases_once_it_reads_the_new_epoch(
    leases_on: RedisServer, org: Organization, frozen_clock: Any, redis_commands: CommandLog
) -> None:
    """Another host revoked some key that held a lease: the epoch moved on. This host's
    leases, all of an older epoch, are not used once any round trip brought the new one
    (and not at all once the old reading is too old: the invalidation waits that out)."""
    set_limits(org, per_minute=HIGH, burst=HIGH, monthly=HIGH)
    _, api = new_key(org)
    _, other = new_key(org, name="Other")
    lease_up(api)
    redis().incr(keycache.lease_epoch_names()[0])
    for _ in range(3):  # the other key's first requests: cold, org part, then counted
        assert other.get("me").status_code == 200  # (a round trip that reads the epoch)
    redis_commands.clear()
    assert api.get("me").status_code == 200
    assert redis_commands.names == ["EVALSHA"]
    # That round trip was granted a lease of the new epoch: the key is leased again.
    assert served_without_redis(api, redis_commands, 3)


@pytest.mark.parametrize("lost", ["deleted", "older"])
def test_an_epoch_lost_with_redis_data_comes_back_above_the_old_one(
    leases_on: RedisServer,
    org: Organization,
    frozen_clock: Any,
    redis_commands: CommandLog,
    lost: str,
) -> None:
    """Redis restarted without its data, or with older data (a snapshot, a failover that
    lost the newest writes): the epoch comes back at least as high as what the hosts
    read before, so their leases resume instead of ending as soon as granted."""
    _, api = leased_key(org)
    name = keycache.lease_epoch_names()[0]
    before = int(redis().get(name))
    if lost == "deleted":
        redis().delete(name)
    else:
        redis().set(name, before - 5)
    time.sleep(0.002)
    leases._table().map[leases._HEADER_AT : leases._HEADER_AT + leases._HEADER.size] = (
        leases._HEADER.pack(0, before, 0.0)  # the reading grew old meanwhile
    )
    for _ in range(3):
        assert api.get("me").status_code == 200
    assert int(redis().get(name)) >= before
    assert served_without_redis(api, redis_commands, 3)


def test_a_reading_left_half_written_is_mended_by_the_next_one(
    leases_on: RedisServer, org: Organization, frozen_clock: Any, redis_commands: CommandLog
) -> None:
    """A worker killed while writing the host's reading leaves its sequence odd: readers
    trust nothing (the host's leases wait), and the next round trip's reading mends it."""
    _, api = leased_key(org)
    table = leases._table()
    epoch, _ = table.epoch_reading()
    sequence = leases._SEQUENCE.unpack_from(table.map, leases._HEADER_AT)[0]
    leases._SEQUENCE.pack_into(table.map, leases._HEADER_AT, sequence + 1)
    assert table.epoch_reading() == (0, 0.0)
    assert api.get("me").status_code == 200  # not leased: a round trip, read again
    assert table.epoch_reading()[0] == epoch
    assert leases._SEQUENCE.unpack_from(table.map, leases._HEADER_AT)[0] % 2 == 0
    redis_commands.clear()
    assert api.get("me").status_code == 200
    assert redis_commands.names == []


def test_no_wait_when_no_lease_is_held(
    leases_on: RedisServer,
    org: Organization,
    frozen_clock: Any,
    monkeypatch: pytest.MonkeyPatch,
    django_capture_on_commit_callbacks: Any,
) -> None:
    waits: list[float] = []
    monkeypatch.setattr(keycache, "_wait", waits.append)
    key, api = new_key(org)  # the starter plan: its burst of 10 leaves no block
    lease_up(api)
    with django_capture_on_commit_callbacks(execute=True):
        apikey_revoke(key=key, actor=Actor.system())
    assert waits == []
    assert api.get("me").status_code == 401


def test_another_process_lease_is_waited_for(
    leases_on: RedisServer, org: Organization, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The marker is what counts: a lease held by another worker (only its marker is
    visible here) delays the invalidation just the same, for a key and for an org."""
    waits: list[float] = []
    monkeypatch.setattr(keycache, "_wait", waits.append)
    digest = key_digest("lk_test_" + "B" * 38)
    conn = redis()
    conn.set(keycache.key_lease_name(digest), redis_ms() + 3000)
    conn.set(keycache.org_lease_name(org.pk), redis_ms() + 2000)
    epoch_name, trust_name = keycache.lease_epoch_names()
    conn.set(trust_name, 500)  # the longest trust in a reading any granting host declared
    epoch = int(conn.get(epoch_name) or 0)
    # This process runs with leases off: what it waits does not come from its settings.
    with override_settings(LATCHKEY_KEY_LEASE_MS=0):
        keycache._invalidate(("key", digest), wait=True)
        keycache._invalidate(("org", org.pk), wait=True)
    # Each moved the epoch on and waited as long as a host trusts an older reading.
    assert waits == [0.5 + keycache.LEASE_WAIT_MARGIN] * 2
    moved = int(conn.get(epoch_name))
    assert moved >= epoch + 2 and moved >= redis_ms() - 1000
    # A marker whose time has passed means no wait.
    conn.set(keycache.org_lease_name(org.pk), redis_ms() - 10)
    keycache._invalidate(("org", org.pk), wait=True)
    assert len(waits) == 2
    assert int(conn.get(epoch_name)) == moved


@pytest.mark.parametrize("batched", [False, True])
def test_a_suspension_ends_this_process_leases_and_batches_at_once(
    leases_on: RedisServer,
    org: Organization,
    frozen_clock: Any,
    redis_commands: CommandLog,
    staff_user: Any,
    batched: bool,
) -> None:
    from platform_admin.services import org_suspend

    key, api = batched_key(org, redis_commands) if batched else leased_key(org)
    org_suspend(org=org, actor=Actor.for_user(staff_user), reason="Unpaid invoices")
    assert key.digest not in leases._batches
    refused = api.get("me")
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "org_suspended"


def test_leased_requests_are_counted_in_usage_and_recent_requests(
    leases_on: RedisServer, org: Organization, other_org: Organization, frozen_clock: Any
) -> None:
    key, api = leased_key(org)
    for _ in range(5):
        assert api.get("me", headers={"X-Client-Version": "sdk-2.1"}).status_code == 200
    for _ in range(2):
        assert api.get("members").status_code == 200
    for _ in range(2):
        mismatch = api.get("me", headers={"X-Org-Id": other_org.public_id})
        assert mismatch.status_code == 403
    # Refused before the limiter: their tokens went back to the lease.
    assert remaining(api.get("me")) == HIGH - 13
    usage.fold()  # pushes this process's leased requests first, then folds
    row = KeyUsageHour.objects.get(api_key=key)
    assert (row.count_2xx, row.count_4xx) == (13, 2)
    assert "sdk-2.1" in row.client_versions
    assert row.scopes == {"members:read": 2}  # `me` needs no scope
    statuses = [r["status"] for r in usage.recent_requests(key_pk=key.pk)]
    assert statuses == [200, 403, 403] + [200] * 12
    leases.release_all()
    assert counters(key, org, frozen_clock.now)[1] == 13


@pytest.mark.stops_redis
def test_redis_down_under_a_lease_gives_no_500_and_loses_no_leased_usage(
    leases_on: RedisServer,
    org: Organization,
    frozen_clock: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    key, api = leased_key(org)
    leases_on.stop()
    try:
        with caplog.at_level(logging.ERROR, logger="apikeys.guards"):
            for _ in range(4):
                assert api.get("me").status_code == 200  # under the lease
            leases.push()  # cannot reach Redis: kept
            leases.forget(org_pk=org.pk)  # the lease has ended
            for _ in range(2):
                assert api.get("me").status_code == 200  # database, limits fail open
        assert "leased requests' usage kept for later" in caplog.text
    finally:
        leases_on.start()
    leases.push()
    conn = redis()
    hour = usage.hour_start(frozen_clock.now)
    pushed = conn.hget(usage.redis_hash_key(key.pk, org.pk, hour), "n")
    assert int(pushed) == 4


def test_a_push_whose_reply_was_lost_is_applied_once(
    leases_on: RedisServer, org: Organization, frozen_clock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis ran the batch but the reply never came (a timeout): sent again, it is skipped,
    so unused tokens are not given back twice (which would admit more than the limit)."""
    from redis.exceptions import TimeoutError as RedisTimeout

    key, api = leased_key(org)
    for _ in range(4):
        assert api.get("me").status_code == 200
    real_send = leases._send
    calls: list[str] = []

    def lost_reply(conn: Any, batch_id: str, payload: list[str | int]) -> None:
        calls.append(batch_id)
        real_send(conn, batch_id, payload)
        if len(calls) == 1:
            raise RedisTimeout("Timeout reading from socket")

    monkeypatch.setattr(leases, "_send", lost_reply)
    leases.release_all()  # sent, "timed out", kept
    assert leases._unsent
    leases.push()  # sent again under the same id: skipped
    assert calls[0] == calls[1] and not leases._unsent
    assert counters(key, org, frozen_clock.now) == [9, 9, 9]
    hour = usage.hour_start(frozen_clock.now)
    assert int(redis().hget(usage.redis_hash_key(key.pk, org.pk, hour), "n")) == 9


def test_one_push_writes_every_entry_list_and_return_of_its_batch(
    leases_on: RedisServer, frozen_clock: Any
) -> None:
    """The push script reads its flat arguments in order (ADR 0095): entries with and
    without versions, scopes or an IP, several lists, and token returns, one of them to
    a counter that has expired (nothing is taken back, nothing is made)."""
    from collections import deque

    conn = redis()
    now = frozen_clock.now
    hour, second = usage.hour_start(now), int(now)
    batch = leases._Pending()
    bare = usage.UsageDelta(901, 7, hour, requests=3, count_4xx=1, count_5xx=1)
    bare.last_at, bare.last_ip = now - 2, ""
    full = usage.UsageDelta(902, None, hour, requests=2)
    full.last_at, full.last_ip = now - 1, "192.0.2.1"
    full.versions = {"sdk-1", "sdk-2"}
    full.scopes = {"payments:read": 2, "payments:write": 1}
    batch.usage = {(901, 7, hour): bare, (902, None, hour): full}

    def meta(n: int) -> ratelimit.UsageMeta:
        return ratelimit.UsageMeta(ip="192.0.2.1", method="GET", path=f"/p{n}", request_id=f"r{n}")

    batch.recent = {
        901: deque([(200, now - 3, meta(1)), (404, now - 2, meta(2))]),
        902: deque([(500, now - 1, meta(3))]),
    }
    burst, minute, month = ratelimit.counter_keys(903, 7, now)
    conn.set(burst, 10, ex=60)
    conn.set(month, 20, ex=60)  # the minute counter has expired
    batch.returns = {(903, 7, second, True, True, True): 4}
    payload = leases._payload(batch)
    leases._send(conn, "one-push", payload)

    def fields(key_pk: int, org_pk: int | None) -> dict[str, str]:
        raw = conn.hgetall(usage.redis_hash_key(key_pk, org_pk, hour))
        return {k.decode(): v.decode() for k, v in raw.items()}

    assert fields(901, 7) == {"n": "3", "c4": "1", "c5": "1", "at": repr(now - 2), "ip": ""}
    assert fields(902, None) == {
        "n": "2",
        "at": repr(now - 1),
        "ip": "192.0.2.1",
        "v:sdk-1": "1",
        "v:sdk-2": "1",
        "nv": "2",
        "s:payments:read": "2",
        "s:payments:write": "1",
    }
    pending = {m.decode() for m in conn.smembers(usage.redis_pending_key())}
    assert {usage.redis_hash_key(901, 7, hour), usage.redis_hash_key(902, None, hour)} <= pending
    assert [r["path"] for r in usage.recent_requests(key_pk=901)] == ["/p2", "/p1"]
    assert [r["status"] for r in usage.recent_requests(key_pk=901)] == [404, 200]
    assert [r["status"] for r in usage.recent_requests(key_pk=902)] == [500]
    assert conn.ttl(usage.recent_redis_key(902)) > 0
    assert (conn.get(burst), conn.exists(minute), conn.get(month)) == (b"6", 0, b"16")
    leases._send(conn, "one-push", payload)  # the same batch again: applied once
    assert fields(901, 7)["n"] == "3"
    assert conn.get(month) == b"16"


def test_a_push_without_usage_gives_back_tokens_and_keeps_the_usage_for_the_next(
    leases_on: RedisServer, org: Organization, frozen_clock: Any
) -> None:
    """ADR 0100: the pusher gives back ended leases' tokens every `PUSH_INTERVAL`, and
    sends usage with every other push; a push without it leaves the usage pending."""
    key, api = leased_key(org)
    assert all(api.get("me").status_code == 200 for _ in range(3))  # under the lease
    (index,) = leases._granted
    unused = leases._table().read(index)[leases._TOKENS_UNUSED]
    unused += sum(batch.tokens for batch in leases._batches.values())
    counted = counters(key, org, frozen_clock.now)[1]
    name = usage.redis_hash_key(key.pk, org.pk, usage.hour_start(frozen_clock.now))
    before = int(redis().hget(name, "n") or 0)
    recent = len(usage.recent_requests(key_pk=key.pk))
    leased = sum(delta.requests for delta in leases._pending.usage.values())
    assert leased > 0
    frozen_clock.advance(1)  # the lease has ended
    leases.push(usage_too=False)
    assert counters(key, org, frozen_clock.now - 1)[1] == counted - unused
    assert int(redis().hget(name, "n") or 0) == before
    assert len(usage.recent_requests(key_pk=key.pk)) == recent
    assert leases._pending.usage and leases._pending.recent
    assert not leases._pending.returns
    leases.push()
    assert int(redis().hget(name, "n") or 0) == before + leased
    assert len(usage.recent_requests(key_pk=key.pk)) == recent + leased
    assert leases._pending.empty()


def test_the_pusher_sends_usage_with_every_other_push(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pushes: list[bool] = []

    def counted_push(*, usage_too: bool = True) -> None:
        pushes.append(usage_too)
        if len(pushes) == 6:
            raise _Stop

    monkeypatch.setattr(leases, "PUSH_INTERVAL", 0.2)
    monkeypatch.setattr(leases, "USAGE_PUSH_INTERVAL", 0.4)
    monkeypatch.setattr(leases, "refresh_epoch", lambda: False)
    monkeypatch.setattr(leases, "push", counted_push)
    monkeypatch.setattr(leases, "_ahead", {})
    with pytest.raises(_Stop):
        leases._Pusher()._run()
    # Usage never waits more than two pushes, and is not sent with every one.
    assert pushes[0] or pushes[1]
    assert all(pushes[i] or pushes[i + 1] for i in range(len(pushes) - 1))
    assert False in pushes


def test_a_push_renews_a_recent_lists_expiry_only_once_it_has_run_down(
    leases_on: RedisServer, frozen_clock: Any
) -> None:
    """As a round trip does (`lk_keep_recent`): a new list gets `RECENT_TTL`, a list that
    has run down by less than `RECENT_RENEW` keeps its expiry, one that has run down by
    more gets `RECENT_TTL` again."""
    from collections import deque

    conn = redis()
    name = usage.recent_redis_key(905)
    meta = ratelimit.UsageMeta(ip="192.0.2.1", method="GET", path="/p", request_id="r")

    def push(batch_id: str) -> None:
        batch = leases._Pending()
        batch.recent = {905: deque([(200, frozen_clock.now, meta)])}
        leases._send(conn, batch_id, leases._payload(batch))

    push("first")
    assert usage.RECENT_TTL - 5 <= conn.ttl(name) <= usage.RECENT_TTL
    almost = usage.RECENT_TTL - backend.RECENT_RENEW + 60
    conn.expire(name, almost)
    push("second")
    assert almost - 5 <= conn.ttl(name) <= almost
    conn.expire(name, almost - 120)
    push("third")
    assert usage.RECENT_TTL - 5 <= conn.ttl(name) <= usage.RECENT_TTL
    assert conn.llen(name) == 3


def test_a_batch_the_client_cannot_encode_is_dropped_not_kept_before_the_others(
    leases_on: RedisServer, frozen_clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    conn = redis()
    good = leases._Pending()
    good.usage = {(904, 7, 0): usage.UsageDelta(904, 7, 0, requests=1)}
    leases._unsent.extend([("bad", [None]), ("good", leases._payload(good))])  # type: ignore[list-item]
    with caplog.at_level(logging.ERROR, logger="apikeys.guards"):
        leases.push()
    assert not leases._unsent
    assert conn.hget(usage.redis_hash_key(904, 7, 0), "n") == b"1"
    assert "could not be encoded" in caplog.text


def test_a_worker_leaving_gives_back_what_its_leases_hold(
    leases_on: RedisServer, org: Organization, frozen_clock: Any
) -> None:
    key, api = leased_key(org)
    assert api.get("me").status_code == 200
    assert counters(key, org, frozen_clock.now) == [35, 35, 35]
    usage.fold_process()  # gunicorn's worker_exit
    assert not leases._granted
    assert counters(key, org, frozen_clock.now) == [6, 6, 6]
    hour = usage.hour_start(frozen_clock.now)
    assert int(redis().hget(usage.redis_hash_key(key.pk, org.pk, hour), "n")) == 6


def test_leased_requests_after_a_fold_start_a_pending_hash_of_their_own(
    leases_on: RedisServer, org: Organization, frozen_clock: Any
) -> None:
    """The fold claims the hour's hash; a push that then creates it again must put it in
    the pending set (and give it an expiry), or those requests would never be folded."""
    key, api = leased_key(org)
    usage.fold()
    for _ in range(4):
        assert api.get("me").status_code == 200
    leases.push()
    hour = usage.hour_start(frozen_clock.now)
    name = usage.redis_hash_key(key.pk, org.pk, hour)
    assert redis().ttl(name) > 0
    usage.fold()
    assert KeyUsageHour.objects.get(api_key=key).count_2xx == 9


def shm_path() -> Path:
    """A new file name of this test process in shared memory (`/dev/shm`, tmpfs)."""
    return Path("/dev/shm") / f"latchkey-test-{os.getpid()}-{time.monotonic_ns()}"


gil_keeping = pytest.mark.skipif(
    sys.platform != "linux"
    or platform.machine() not in ("x86_64", "aarch64")
    or struct.calcsize("P") != 8,
    reason="the GIL-keeping locks are used on 64-bit Linux with a 64-bit interpreter only",
)


@pytest.mark.parametrize("locks", [pytest.param("mutexes", marks=gil_keeping), "records"])
def test_two_processes_share_one_lease_without_losing_or_making_a_token(
    leases_on: RedisServer,
    org: Organization,
    frozen_clock: Any,
    locks: str,
    monkeypatch: pytest.MonkeyPatch,
    settings: Any,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    """A forked process and this one take and give back tokens of the same lease at the
    same time; the slot's locks (mutexes in memory, record locks elsewhere: ADR 0102)
    make every change count: the tokens left are exactly those of the grant, and
    draining it from both yields each token once."""
    if locks == "records":
        monkeypatch.setattr(leases, "_pthreads", None)
        table = tmp_path / "leases"
    else:
        table = shm_path()
    settings.LATCHKEY_LEASE_TABLE = str(table)
    request.addfinalizer(lambda: Path(leases.table_path()).unlink(missing_ok=True))
    assert bool(leases._table().mutexes) == (locks == "mutexes")
    key, _ = leased_key(org)
    (index,) = leases._granted
    granted = leases._table().read(index)[leases._TOKENS_UNUSED]
    assert granted == 30

    def churn_then_drain() -> int:
        for _ in range(3000):
            taken, _ = leases.take(key.digest, frozen_clock.now, 0, TRUST)
            if taken is not None:  # (none while the other drains)
                leases.give_back(taken[0])
        drained = 0
        while leases.take(key.digest, frozen_clock.now, 0, TRUST)[0] is not None:
            drained += 1
        return drained

    known = leases._known[key.digest]
    ready_r, ready_w = os.pipe()
    out_r, out_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: the host's table mapped, the key's state as it got it
        try:
            os.close(out_r)
            leases._known[key.digest] = known
            os.read(ready_r, 1)
            os.write(out_w, str(churn_then_drain()).encode())
        finally:
            os._exit(0)
    os.close(out_w)
    os.write(ready_w, b"x")
    mine = churn_then_drain()
    os.waitpid(pid, 0)
    theirs = int(os.read(out_r, 16) or b"-1")  # -1: the child failed
    assert mine + theirs == granted


def shm_table(path: Path | None = None) -> leases._Table:
    """A lease table in shared memory, as the default one (`/dev/shm`, tmpfs), kept
    mapped (closing it would drop this process's record locks); its file is removed
    unless `path` names it."""
    named = path
    path = path or shm_path()
    table = leases._Table(str(path))
    if named is None:
        path.unlink()  # the open descriptor and the mapping live on
    leases._kept.append(table)
    return table


@gil_keeping
def test_a_free_slot_is_locked_without_releasing_the_gil_and_a_held_one_is_waited_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ADR 0099: where the slots are guarded by record locks (ADR 0102: where libc's
    robust mutexes cannot be used), a free slot's record lock is taken (and given up)
    without the GIL-releasing `fcntl.lockf`, and is a real record lock another process
    sees; a slot another process holds is waited for (through `fcntl.lockf`) until it
    lets go."""
    monkeypatch.setattr(leases, "_pthreads", None)
    table = shm_table()
    assert table.keeps_gil
    assert not table.mutexes
    waited: list[int] = []
    lockf = fcntl.lockf

    def recording(fd: int, cmd: int, *args: int) -> Any:
        waited.append(cmd)
        return lockf(fd, cmd, *args)

    monkeypatch.setattr(fcntl, "lockf", recording)
    index, at = 7, 7 * leases.SLOT_SIZE
    to_child_r, to_child_w = os.pipe()
    to_parent_r, to_parent_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # another process of the host
        try:
            os.close(to_child_w)
            os.close(to_parent_r)
            for _ in range(2):
                os.read(to_child_r, 1)
                try:
                    lockf(table.fd, fcntl.LOCK_EX | fcntl.LOCK_NB, leases.SLOT_SIZE, at)
                except OSError:
                    os.write(to_parent_w, b"h")  # held by the parent
                else:
                    os.write(to_parent_w, b"t")  # taken: hold it until told
                    os.read(to_child_r, 1)
                    lockf(table.fd, fcntl.LOCK_UN, leases.SLOT_SIZE, at)
                    os.write(to_parent_w, b"r")
        finally:
            os._exit(0)
    os.close(to_child_r)  # the parent's copies: a child that dies ends every read
    os.close(to_parent_w)
    try:
        table.lock(index)
        os.write(to_child_w, b"?")
        assert os.read(to_parent_r, 1) == b"h"
        table.unlock(index)
        assert waited == []  # both without `fcntl.lockf`
        os.write(to_child_w, b"?")
        assert os.read(to_parent_r, 1) == b"t"
        locker = threading.Thread(target=table.lock, args=(index,))
        locker.start()
        deadline = time.monotonic() + 10
        while not waited and time.monotonic() < deadline:
            time.sleep(0.01)
        assert waited == [fcntl.LOCK_EX]  # waits through `fcntl.lockf`...
        locker.join(0.2)
        assert locker.is_alive()  # ...while the other process holds the slot
        os.write(to_child_w, b"!")
        assert os.read(to_parent_r, 1) == b"r"
        locker.join(5)
        assert not locker.is_alive()
        table.unlock(index)
    finally:
        os.close(to_child_w)  # a child still waiting for a word reads the end and leaves
        os.waitpid(pid, 0)
        os.close(to_parent_r)


def mutex_at(table: leases._Table, index: int) -> int:
    return table.mutexes + index * leases._MUTEX_STRIDE


def read_within(fd: int, seconds: float = 10) -> bytes:
    """A byte from `fd`, failing the test (not hanging it) if none comes in time."""
    ready, _, _ = select.select([fd], [], [], seconds)
    assert ready, "no answer in time"
    return os.read(fd, 16)


def in_child(work: Callable[[], bytes]) -> bytes:
    """What `work` answers in a forked process of the host (b"!": it failed)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_end)
            os.write(write_end, work())
        finally:
            os._exit(0)
    os.close(write_end)
    try:
        return read_within(read_end) or b"!"
    finally:
        os.close(read_end)
        os.kill(pid, signal.SIGKILL)  # (gone already unless it hangs)
        os.waitpid(pid, 0)


def tried_elsewhere(table: leases._Table, index: int) -> int:
    """What another process's try of slot `index`'s mutex answers (it lets go of what it
    took): 0 taken, 16 (EBUSY) held."""

    def attempt() -> bytes:
        done = leases._try_lock(mutex_at(table, index))
        if done == 0:
            leases._unlock_mutex(mutex_at(table, index))
        return str(done).encode()

    return int(in_child(attempt))


@gil_keeping
def test_slots_in_memory_are_guarded_by_robust_process_shared_mutexes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ADR 0102: in memory, a slot's lock is a process-shared mutex: a free one is taken
    and given up keeping the GIL (no waiting call, no record lock), another process sees
    it held, and one another process holds is waited for (the GIL released) until it
    lets go."""
    table = shm_table()
    assert table.keeps_gil and table.mutexes
    pthreads: Any = leases._pthreads
    waited: list[int] = []
    wait = pthreads.wait

    def recording(address: int) -> int:
        waited.append(address)
        return int(wait(address))

    monkeypatch.setattr(pthreads, "wait", recording)
    monkeypatch.setattr(fcntl, "lockf", lambda *args: pytest.fail("a record lock was used"))
    index = 7
    table.lock(index)
    assert tried_elsewhere(table, index) == 16
    table.unlock(index)
    assert tried_elsewhere(table, index) == 0
    assert waited == []
    # Another process holds it until told to let go.
    to_child_r, to_child_w = os.pipe()
    to_parent_r, to_parent_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(to_child_w)
            os.close(to_parent_r)
            done = leases._try_lock(mutex_at(table, index))
            os.write(to_parent_w, b"t" if done == 0 else b"n")
            os.read(to_child_r, 1)
            leases._unlock_mutex(mutex_at(table, index))
            os.write(to_parent_w, b"r")
        finally:
            os._exit(0)
    os.close(to_child_r)
    os.close(to_parent_w)
    taken, release = threading.Event(), threading.Event()

    def holder() -> None:  # a mutex is given up by the thread that took it
        table.lock(index)
        taken.set()
        release.wait(10)
        table.unlock(index)

    try:
        assert read_within(to_parent_r) == b"t"
        locker = threading.Thread(target=holder, daemon=True)
        locker.start()
        deadline = time.monotonic() + 10
        while not waited and time.monotonic() < deadline:
            time.sleep(0.01)
        assert waited == [mutex_at(table, index)]  # waits through the GIL-releasing call...
        assert not taken.wait(0.2)  # ...while the other process holds the slot
        os.write(to_child_w, b"!")
        assert read_within(to_parent_r) == b"r"
        assert taken.wait(5)
        release.set()
        locker.join(5)
        assert not locker.is_alive()
    finally:
        release.set()
        os.close(to_child_w)
        os.waitpid(pid, 0)
        os.close(to_parent_r)
    assert tried_elsewhere(table, index) == 0


@gil_keeping
def test_a_slot_whose_holder_died_holding_it_is_taken_and_usable_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """ADR 0102: a process killed while it holds a slot's mutex does not hold the slot
    for ever: the next process to lock it takes it, makes it consistent and uses the
    slot as it was left (as the kernel's release of a record lock did), and every
    process can take it again afterwards."""
    table = shm_table()
    index = 9

    def die_holding() -> bytes:
        table.lock(index)
        leases._TOKENS_FIELD.pack_into(table.map, index * leases.SLOT_SIZE + leases._TOKENS_AT, 5)
        os.kill(os.getpid(), signal.SIGKILL)
        return b""

    assert in_child(die_holding) == b"!"  # killed before it answered
    taken = threading.Event()

    def locker() -> None:
        table.lock(index)
        taken.set()
        table.unlock(index)

    with caplog.at_level(logging.WARNING, logger="apikeys.guards"):
        thread = threading.Thread(target=locker, daemon=True)
        thread.start()
        assert taken.wait(5), "the dead holder's slot was never taken"
        thread.join(5)
    assert "died holding lease slot 9" in caplog.text
    assert table.read(index)[leases._TOKENS_UNUSED] == 5  # as it was left
    assert tried_elsewhere(table, index) == 0  # consistent: usable by every process
    table.lock(index)
    table.unlock(index)


@gil_keeping
def test_a_slot_this_thread_already_holds_is_not_waited_for() -> None:
    """ADR 0102: a thread locking a slot it holds (a lock an exception left held) is not
    stuck waiting for itself: it holds the slot, as a process held its record lock, and
    the next unlock gives it up for every process."""
    table = shm_table()
    done = threading.Event()

    def twice() -> None:
        table.lock(4)
        table.lock(4)
        done.set()
        table.unlock(4)

    thread = threading.Thread(target=twice, daemon=True)
    thread.start()
    assert done.wait(5), "the thread waited for itself"
    thread.join(5)
    assert tried_elsewhere(table, 4) == 0


@gil_keeping
def test_a_tables_mutexes_are_made_once_and_outlive_a_clear() -> None:
    """ADR 0102: the process that creates the table makes its mutexes; one that opens
    it later uses them as they are (a slot held stays held), and emptying the table
    keeps them."""
    path = shm_path()
    try:
        first = shm_table(path)
        first.lock(3)
        try:
            later = shm_table(path)
            assert later.mutexes and later.mutexes != first.mutexes  # a mapping of its own
            assert tried_elsewhere(later, 3) == 16  # not made again: still held
            later.clear()
            assert tried_elsewhere(later, 3) == 16
        finally:
            first.unlock(3)
        assert tried_elsewhere(later, 3) == 0
    finally:
        path.unlink()


@gil_keeping
def test_a_table_keeps_the_kind_of_lock_it_was_made_with(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """ADR 0102: the first opener decides, once for the file, which locks guard its
    slots: record locks off tmpfs or without libc's mutexes, mutexes in memory. Every
    later opener uses that kind; one that cannot use a table's mutexes does not use the
    table (the slots would be guarded by two kinds of lock at once)."""
    with monkeypatch.context() as on_disk:
        on_disk.setattr(leases, "_on_tmpfs", lambda fd: False)
        table = leases._Table(str(tmp_path / "leases"))
        assert not table.mutexes
        os.close(table.fd)
    pthreads = leases._pthreads
    monkeypatch.setattr(leases, "_pthreads", None)
    made_with_records = shm_path()
    made_with_mutexes = shm_path()
    try:
        assert not shm_table(made_with_records).mutexes
        monkeypatch.setattr(leases, "_pthreads", pthreads)
        assert not shm_table(made_with_records).mutexes  # records still
        assert shm_table(made_with_mutexes).mutexes
        monkeypatch.setattr(leases, "_pthreads", None)
        with pytest.raises(OSError, match="guarded by mutexes"):
            leases._Table(str(made_with_mutexes))
    finally:
        made_with_records.unlink(missing_ok=True)
        made_with_mutexes.unlink(missing_ok=True)


def test_a_worker_that_only_uses_the_hosts_lease_pushes_its_usage(
    leases_on: RedisServer, org: Organization, frozen_clock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, api = leased_key(org)
    leases._forked()  # a worker that granted nothing
    started: list[bool] = []
    monkeypatch.setattr(leases._pusher, "ensure_started", lambda: started.append(True))
    assert api.get("me").status_code == 200  # its first: a round trip
    assert not started
    assert api.get("me").status_code == 200  # under the host's lease: usage to push
    assert started


def test_a_lease_is_not_used_in_the_next_second(
    leases_on: RedisServer, org: Organization, frozen_clock: Any, redis_commands: CommandLog
) -> None:
    _, api = leased_key(org)
    frozen_clock.advance(1)
    redis_commands.clear()
    assert api.get("me").status_code == 200
    assert redis_commands.names == ["EVALSHA"]


def _same_first_slot(key: ApiKey, org: Organization, offset: int = 1) -> str:
    """A digest whose first slot is `key`'s (same tag modulo the table size), known to this
    process with the state of a new key of `org` (another key id)."""
    tag = int(key.digest[:16], 16) + offset * leases.SLOTS
    other = f"{tag % 2**64:016x}" + key.digest[16:]
    assert other != key.digest
    assert leases._slot_of(other)[1] == leases._slot_of(key.digest)[1]
    new, api = new_key(org)
    for _ in range(3):  # the third is the first warm one (`lease_up`): its state known
        assert api.get("me").status_code == 200
    leases._known[other] = leases._known[new.digest]
    return other


def _grant_like(key: ApiKey, digest: str, org: Organization, now: float, tokens: int = 7) -> bool:
    """Grant `digest` a lease of `tokens` as a round trip would, in `key`'s epoch."""
    index = leases._slot_of(key.digest)[1]
    return leases.grant(
        digest=digest,
        resolved=leases._known[digest][1],
        limits=org.limits,
        now=now,
        asked_at=time.monotonic(),
        length_ms=LEASE_MS,
        tokens=tokens,
        minute_used=tokens,
        epoch=leases._table().read(index)[leases._EPOCH],
        epoch_trust=TRUST,
    )


def test_a_key_whose_first_slot_holds_another_keys_lease_uses_its_second(
    leases_on: RedisServer, org: Organization, frozen_clock: Any, redis_commands: CommandLog
) -> None:
    """Two busy keys whose digests fall on one slot both keep leases (ADR 0103): with one
    slot a key, the second would make a round trip on every request while the first's
    lease is live."""
    key, api = leased_key(org)
    first = leases._slot_of(key.digest)[1]
    other = _same_first_slot(key, org)
    left = leases._table().read(first)[leases._TOKENS_UNUSED]
    # Seen once: its second slot is taken for it (no lease yet), the first left alone.
    assert leases.take(other, frozen_clock.now, 64, TRUST) == (None, 0)
    assert leases._table().read(first ^ 1)[leases._TAG] == leases._slot_of(other)[0]
    assert _grant_like(key, other, org, frozen_clock.now)
    taken, _ = leases.take(other, frozen_clock.now, 64, TRUST)
    assert taken is not None
    assert taken[0].index == first ^ 1
    assert taken[0].key_pk != key.pk
    # The first key's lease gave none of its tokens, and still admits, in its first slot.
    assert leases._table().read(first)[leases._TOKENS_UNUSED] == left
    redis_commands.clear()
    assert api.get("me").status_code == 200
    assert redis_commands.names == []
    assert leases._table().read(first)[leases._TAG] == leases._slot_of(key.digest)[0]
    # Ending one key's leases leaves the other's.
    leases.forget(digest=other)
    assert leases.take(other, frozen_clock.now, 64, TRUST)[0] is None
    assert api.get("me").status_code == 200
    assert redis_commands.names == []


def test_a_key_whose_two_slots_hold_other_keys_leases_gets_none(
    leases_on: RedisServer, org: Organization, frozen_clock: Any, redis_commands: CommandLog
) -> None:
    key, api = leased_key(org)
    second = _same_first_slot(key, org, 1)
    leases.take(second, frozen_clock.now, 64, TRUST)
    assert _grant_like(key, second, org, frozen_clock.now)
    third = _same_first_slot(key, org, 2)
    assert leases.take(third, frozen_clock.now, 64, TRUST) == (None, 0)
    assert not _grant_like(key, third, org, frozen_clock.now)
    assert leases.take(third, frozen_clock.now, 64, TRUST) == (None, 0)
    # Both slots still hold their keys' leases, and those keys still admit from them.
    assert leases.take(second, frozen_clock.now, 64, TRUST)[0] is not None
    redis_commands.clear()
    assert api.get("me").status_code == 200
    assert redis_commands.names == []


def test_a_batch_from_the_second_slot_is_settled_there_after_the_key_moves(
    leases_on: RedisServer, org: Organization, frozen_clock: Any
) -> None:
    """A key whose batch came from its second slot and whose next request uses its first:
    the batch's unused tokens go back to the lease they came from, and from it to their
    windows when it ends, once."""
    key, _ = leased_key(org)
    first = leases._slot_of(key.digest)[1]
    other = _same_first_slot(key, org)
    now = frozen_clock.now
    leases.take(other, now, 64, TRUST)
    assert _grant_like(key, other, org, now, tokens=40)
    table = leases._table()
    taken, _ = leases.take(other, now, 64, TRUST)
    assert taken is not None and taken[0].index == first ^ 1
    unused = leases._batches[other].tokens
    assert unused > 0
    in_slot = table.read(first ^ 1)[leases._TOKENS_UNUSED]
    # The key's state as this process knows it changes (its batch no longer admits), and
    # its first slot is free with its tag in it: its next request uses the first.
    entry, resolved, fingerprint = leases._known[other]
    leases._known[other] = (entry, resolved, fingerprint + 1)
    with leases._lock:
        leases._end(table, first, lambda slot: True)
    table.write(first, leases._fresh(leases._slot_of(other)[0], int(now)))
    assert leases.take(other, now, 64, TRUST)[0] is None
    assert other not in leases._batches
    assert table.read(first ^ 1)[leases._TOKENS_UNUSED] == in_slot + unused
    returned = sum(leases._pending.returns.values())
    frozen_clock.advance(1)
    with leases._lock:
        leases._sweep(list(leases._granted), ended_only=True)
    assert table.read(first ^ 1)[leases._TOKENS_UNUSED] == 0
    assert sum(leases._pending.returns.values()) - returned == in_slot + unused


def test_ending_a_keys_leases_ends_them_in_both_its_slots(
    leases_on: RedisServer, org: Organization, frozen_clock: Any, redis_commands: CommandLog
) -> None:
    """Two workers that placed a key at once may each have put it in one of its slots: an
    invalidation made here ends both."""
    key, api = leased_key(org)
    first = leases._slot_of(key.digest)[1]
    table = leases._table()
    table.write(first ^ 1, table.read(first))  # the key in both, each with a live lease
    leases.forget(digest=key.digest)
    for index in (first, first ^ 1):
        assert table.read(index)[leases._TRUST] == 0.0
    redis_commands.clear()
    assert api.get("me").status_code == 200
    assert redis_commands.names == ["EVALSHA"]


def test_grants_of_the_same_second_and_state_add_up_in_one_lease(
    leases_on: RedisServer, org: Organization, frozen_clock: Any
) -> None:
    """Two workers that asked at once: the second grant adds its tokens to the lease the
    first wrote instead of replacing it (replaced tokens would sit unused)."""
    key, _ = leased_key(org)
    (index,) = leases._granted
    before = leases._table().read(index)
    resolved = leases._known[key.digest][1]
    leases.grant(
        digest=key.digest,
        resolved=resolved,
        limits=org.limits,
        now=frozen_clock.now,
        asked_at=time.monotonic(),
        length_ms=LEASE_MS,
        tokens=7,
        minute_used=42,
        epoch=before[leases._EPOCH],
        epoch_trust=TRUST,
    )
    after = leases._table().read(index)
    assert after[leases._TOKENS_UNUSED] == before[leases._TOKENS_UNUSED] + 7
    assert after[leases._SERIAL] == before[leases._SERIAL]
    assert after[leases._MINUTE_USED] == 42
    assert not leases._pending.returns


def test_a_key_this_process_has_not_verified_touches_no_slot(
    leases_on: RedisServer, frozen_clock: Any
) -> None:
    """Any string a client sends as a key reaches `take` before verification: it must not
    take slots over or count demand."""
    digest = key_digest("lk_test_" + "Z" * 38)
    _, index = leases._slot_of(digest)
    before = leases._table().read(index)
    assert leases.take(digest, frozen_clock.now, 64, TRUST) == (None, 0)
    assert leases._table().read(index) == before


def test_the_default_table_is_named_by_a_hash_keyed_with_the_secret_key(settings: Any) -> None:
    """Whoever lists /dev/shm learns nothing about `REDIS_URL` (it may hold a password)."""
    settings.LATCHKEY_LEASE_TABLE = ""
    first = leases.table_path()
    assert first.startswith("/dev/shm/latchkey-")
    settings.SECRET_KEY = "another secret key of fifty characters or more, for this test"
    assert leases.table_path() != first


def test_a_lease_is_trusted_no_longer_than_its_granting_worker_declared(
    leases_on: RedisServer, org: Organization, frozen_clock: Any
) -> None:
    """Workers of one host with different settings (a reload that raised the setting): a
    lease granted by a worker that trusts readings for 0.9 s is not used on an older
    reading by one that would trust it for 5 s (invalidations wait what was declared)."""
    key, _ = leased_key(org)
    table = leases._table()
    epoch, _ = table.epoch_reading()

    def reading_aged(seconds: float) -> None:
        table.map[leases._HEADER_AT : leases._HEADER_AT + leases._HEADER.size] = (
            leases._HEADER.pack(0, epoch, time.monotonic() - seconds)
        )

    reading_aged(TRUST / 2)
    assert leases.take(key.digest, frozen_clock.now, 0, 5.0)[0] is not None
    reading_aged(TRUST + 0.05)
    assert leases.take(key.digest, frozen_clock.now, 0, 5.0)[0] is None


def test_the_declared_trust_lives_only_as_long_as_the_leases_it_covers(
    leases_on: RedisServer, org: Organization, frozen_clock: Any
) -> None:
    leased_key(org)
    trust_name = keycache.lease_epoch_names()[1]
    assert int(redis().get(trust_name)) == LEASE_MS
    assert 0 < redis().pttl(trust_name) <= leases.MARKER_MS + 100


def test_a_late_grant_of_an_older_epoch_does_not_replace_a_newer_lease(
    leases_on: RedisServer, org: Organization, frozen_clock: Any
) -> None:
    key, _ = leased_key(org)
    (index,) = leases._granted
    before = leases._table().read(index)
    leases.grant(
        digest=key.digest,
        resolved=leases._known[key.digest][1],
        limits=org.limits,
        now=frozen_clock.now,
        asked_at=time.monotonic(),
        length_ms=keycache.LEASE_LIFE_MS,
        tokens=7,
        minute_used=42,
        epoch=before[leases._EPOCH] - 1,
        epoch_trust=TRUST,
    )
    assert leases._table().read(index) == before
    assert sum(leases._pending.returns.values()) == 7  # handed back


def age_reading(seconds: float) -> int:
    """Make the host's reading of the epoch `seconds` old; returns its epoch."""
    table = leases._table()
    epoch, _ = table.epoch_reading()
    table.map[leases._HEADER_AT : leases._HEADER_AT + leases._HEADER.size] = leases._HEADER.pack(
        0, epoch, time.monotonic() - seconds
    )
    return epoch


def test_the_pusher_renews_the_hosts_reading_so_leases_need_no_round_trip(
    leases_on: RedisServer,
    org: Organization,
    frozen_clock: Any,
    redis_commands: CommandLog,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """While this process admits under leases, its pusher reads the epoch again once the
    host's reading is half as old as it is trusted: a busy key's lease is not left unused
    (its requests sent on round trips) only because no trip read the epoch lately."""
    _, api = leased_key(org)
    assert api.get("me").status_code == 200
    age_reading(TRUST * leases.REFRESH_FRACTION / 2)  # young enough: nothing to do
    redis_commands.clear()
    assert not leases.refresh_epoch()
    assert redis_commands.names == []
    epoch = age_reading(TRUST)  # as old as it is trusted: the lease would not be used
    sent: list[float] = []
    run_script = redisconn.run_script

    def slow_script(*args: Any, **kwargs: Any) -> Any:
        sent.append(time.monotonic())
        time.sleep(0.02)
        return run_script(*args, **kwargs)

    monkeypatch.setattr(redisconn, "run_script", slow_script)
    assert leases.refresh_epoch()
    # One short script on this thread's own connection (loaded first if Redis lacks it).
    assert set(redis_commands.names) == {"EVALSHA"} | ({"SCRIPT"} & set(redis_commands.names))
    held_epoch, asked_at = leases._table().epoch_reading()
    # The reading counts from before it was sent, not from when the answer came.
    assert held_epoch == epoch and asked_at <= sent[0]
    assert served_without_redis(api, redis_commands, 3)


def test_a_renewed_reading_brings_an_invalidation_made_elsewhere(
    leases_on: RedisServer, org: Organization, frozen_clock: Any, redis_commands: CommandLog
) -> None:
    """The pusher's reading is a reading like a round trip's: an epoch moved on by
    another host's invalidation ends this host's older leases at once."""
    _, api = leased_key(org)
    assert served_without_redis(api, redis_commands, 1)
    redis().incr(keycache.lease_epoch_names()[0])
    age_reading(TRUST * 0.6)
    assert leases.refresh_epoch()
    redis_commands.clear()
    assert api.get("me").status_code == 200
    assert redis_commands.names == ["EVALSHA"]  # the old lease has ended; leased again
    assert served_without_redis(api, redis_commands, 3)


@pytest.mark.parametrize("found", ["deleted", "older", "not a number"])
def test_the_pushers_reading_mends_an_epoch_lost_with_redis_data(
    leases_on: RedisServer,
    org: Organization,
    frozen_clock: Any,
    redis_commands: CommandLog,
    found: str,
) -> None:
    """An epoch lost with Redis' data (or older, or garbage) comes back at least as high
    as the host's reading, as the count script brings it back: an older one is raised to
    it and the lease goes on; one started afresh (at Redis' time) ends the host's leases,
    and the key's next round trip leases it again."""
    _, api = leased_key(org)
    assert served_without_redis(api, redis_commands, 1)
    name = keycache.lease_epoch_names()[0]
    held = int(redis().get(name))
    if found == "deleted":
        redis().delete(name)
    else:
        redis().set(name, held - 5 if found == "older" else "x")
    age_reading(TRUST)
    assert leases.refresh_epoch()
    assert int(redis().get(name)) >= held
    assert leases._table().epoch_reading()[0] >= held
    if found != "older":
        redis_commands.clear()
        assert api.get("me").status_code == 200
        assert redis_commands.names == ["EVALSHA"]
    assert served_without_redis(api, redis_commands, 3)


def test_a_node_that_takes_no_writes_renews_no_reading(
    leases_on: RedisServer,
    org: Organization,
    frozen_clock: Any,
    redis_commands: CommandLog,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A replica, or a primary demoted by a failover, may still answer reads with an old
    epoch. The pusher reads by a script that writes, so such a node refuses it (here: a
    primary short of replicas, which refuses writes the same way); nothing is renewed,
    the error is logged, and the pusher leaves it for a while."""
    monkeypatch.setattr(redisconn.error_log, "_last", {})  # not held back by earlier logs
    _, api = leased_key(org)
    assert served_without_redis(api, redis_commands, 1)
    age_reading(TRUST)
    conn = redis()
    conn.config_set("min-replicas-to-write", 1)
    try:
        with caplog.at_level(logging.ERROR, logger="apikeys.guards"):
            assert not leases.refresh_epoch()
        assert "lease epoch not read" in caplog.text
        assert leases._table().epoch_reading()[1] < time.monotonic() - TRUST * 0.9
        redis_commands.clear()
        assert not leases.refresh_epoch()  # backing off: not even tried
        assert redis_commands.names == []
    finally:
        conn.config_set("min-replicas-to-write", 0)
    leases._watch.failed_until = 0.0
    assert leases.refresh_epoch()


def test_the_pusher_reads_the_epoch_only_while_this_process_uses_leases(
    leases_on: RedisServer, org: Organization, frozen_clock: Any, redis_commands: CommandLog
) -> None:
    set_limits(org, per_minute=HIGH, burst=HIGH, monthly=HIGH)
    key, api = new_key(org)
    with override_settings(LATCHKEY_KEY_LEASE_TOKENS=1):  # leases too small to grant
        for _ in range(6):  # known and counted in the host's table, never leased
            assert api.get("me").status_code == 200
    assert leases._table().read(leases._slot_of(key.digest)[1])[leases._CUR] >= 2
    assert leases.tick(time.monotonic()) == leases.PUSH_INTERVAL
    age_reading(TRUST)
    redis_commands.clear()
    assert not leases.refresh_epoch()
    assert redis_commands.names == []
    lease_up(api)
    assert served_without_redis(api, redis_commands, 1)
    now = time.monotonic()
    # While leases are in use it looks four times in the time a reading is trusted...
    assert leases.tick(now) == pytest.approx(TRUST * leases.REFRESH_FRACTION / 2)
    # ...and a quiet process looks only when it pushes, and reads nothing.
    later = now + leases.REFRESH_WHILE_USED + 0.1
    assert leases.tick(later) == leases.PUSH_INTERVAL
    leases._watch.used = time.monotonic() - leases.REFRESH_WHILE_USED - 0.1
    age_reading(TRUST)
    redis_commands.clear()
    assert not leases.refresh_epoch()
    assert redis_commands.names == []


def test_a_trust_too_short_to_renew_is_left_to_round_trips(
    leases_on: RedisServer, org: Organization, frozen_clock: Any, redis_commands: CommandLog
) -> None:
    _, api = leased_key(org)
    assert served_without_redis(api, redis_commands, 1)
    leases._watch.trust = leases.REFRESH_MIN_TRUST / 2
    assert leases.tick(time.monotonic()) == leases.PUSH_INTERVAL
    age_reading(1.0)
    redis_commands.clear()
    assert not leases.refresh_epoch()
    assert redis_commands.names == []


class _Stop(BaseException):
    pass


def test_the_pusher_goes_on_pushing_whatever_the_reading_of_the_epoch_raises(
    leases_on: RedisServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    pushes: list[float] = []

    def failing_refresh() -> bool:
        raise OSError("a lock the kernel refused")

    def counted_push(*, usage_too: bool = True) -> None:
        pushes.append(time.monotonic())
        if len(pushes) == 2:
            raise _Stop

    monkeypatch.setattr(redisconn.error_log, "_last", {})
    monkeypatch.setattr(leases, "PUSH_INTERVAL", 0.02)
    monkeypatch.setattr(leases, "refresh_epoch", failing_refresh)
    monkeypatch.setattr(leases, "push", counted_push)
    with caplog.at_level(logging.ERROR, logger="apikeys.guards"), pytest.raises(_Stop):
        leases._Pusher()._run()
    assert len(pushes) == 2
    assert "Reading the lease epoch failed" in caplog.text


# --- a worker's batch of the host's lease -----------------------------------------------


def batched_key(org: Organization, redis_commands: CommandLog) -> tuple[ApiKey, ApiClient]:
    """`leased_key`, then one request under the host's lease, which takes its token and a
    batch of the lease's next ones for this process (`TAKEN` in all, leaving the lease at
    least `BATCH_LEAVES` of its 30)."""
    key, api = leased_key(org)
    redis_commands.clear()
    assert api.get("me").status_code == 200
    assert redis_commands.names == []
    assert leases._batches[key.digest].tokens == TAKEN - 1
    return key, api


class LockCount:
    """Counts the record locks this process takes on the host's table."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.taken = 0
        original = leases._Table.lock

        def counted(table: Any, index: int) -> None:
            self.taken += 1
            original(table, index)

        monkeypatch.setattr(leases._Table, "lock", counted)


def test_a_batch_admits_with_no_lock_and_no_write_to_the_hosts_table(
    leases_on: RedisServer,
    org: Organization,
    frozen_clock: Any,
    redis_commands: CommandLog,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key, api = batched_key(org, redis_commands)
    index = leases._slot_of(key.digest)[1]
    slot_before = leases._table().read(index)
    assert slot_before[leases._TOKENS_UNUSED] == 30 - TAKEN
    locks = LockCount(monkeypatch)
    seen = [remaining(api.get("me")) for _ in range(TAKEN - 1)]
    assert redis_commands.names == []
    assert locks.taken == 0
    assert leases._table().read(index) == slot_before
    # The headers go on counting down, as from the slot.
    assert seen == [HIGH - 7 - i for i in range(TAKEN - 1)]
    # Spent: the next request takes the lock again.
    assert api.get("me").status_code == 200
    assert locks.taken == 1
    leases.release_all()
    assert counters(key, org, frozen_clock.now) == [6 + TAKEN] * 3


def test_the_sweep_locks_no_slot_whose_lease_is_current_and_gives_back_an_ended_one(
    leases_on: RedisServer,
    org: Organization,
    frozen_clock: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A push's sweep of ended leases passes a current lease by without its record lock
    (every worker pushes twice a second, over every key it leased), keeps tracking it, and
    gives back what it left unused once its second is over."""
    key, _ = leased_key(org)
    index = leases._slot_of(key.digest)[1]
    second = frozen_clock.now
    locks = LockCount(monkeypatch)
    leases.push()
    assert locks.taken == 0
    assert index in leases._granted
    assert leases._table().read(index)[leases._TOKENS_UNUSED] == 30
    frozen_clock.advance(1)
    leases.push()
    assert locks.taken == 1
    assert index not in leases._granted
    assert leases._table().read(index)[leases._TOKENS_UNUSED] == 0
    # The minute and month windows count exactly the five admitted requests (the burst
    # window of the second that ended has nothing to take back).
    assert counters(key, org, second)[1:] == [5, 5]


def test_a_slot_being_rewritten_is_swept_under_its_lock(
    leases_on: RedisServer,
    org: Organization,
    frozen_clock: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A writer rewrites a slot with its trust cleared first (`_Table.write`): a sweep that
    reads it then, without the lock, does not take it for a current lease; it reads it again
    under the lock and acts on what it finds there (here: no trust, so the lease has
    ended and its tokens go back)."""
    key, _ = leased_key(org)
    index = leases._slot_of(key.digest)[1]
    at = index * leases.SLOT_SIZE + leases._TRUST_SERIAL_AT
    table = leases._table()
    trust = leases._FLOAT.unpack_from(table.map, at)[0]
    leases._FLOAT.pack_into(table.map, at, 0.0)  # as `_Table.write` leaves it midway
    assert not leases._current_unlocked(table, index, int(frozen_clock.now), time.monotonic())
    leases._FLOAT.pack_into(table.map, at, trust)
    assert leases._current_unlocked(table, index, int(frozen_clock.now), time.monotonic())
    locks = LockCount(monkeypatch)
    leases._FLOAT.pack_into(table.map, at, 0.0)
    leases.push()
    assert locks.taken == 1
    assert index not in leases._granted
    assert table.read(index)[leases._TOKENS_UNUSED] == 0
    assert counters(key, org, frozen_clock.now) == [5, 5, 5]


def test_the_keys_demand_counts_a_batchs_requests_not_its_unused_tokens(
    leases_on: RedisServer, org: Organization, frozen_clock: Any, redis_commands: CommandLog
) -> None:
    key, api = leased_key(org)
    index = leases._slot_of(key.digest)[1]
    counted = leases._table().read(index)[leases._CUR]
    # The batch's tokens count as demand from when it is taken (the next lease is sized
    # with them)...
    assert api.get("me").status_code == 200
    assert leases._table().read(index)[leases._CUR] == counted + TAKEN
    assert api.get("me").status_code == 200
    assert api.get("me").status_code == 200
    # ...and what it left unused no longer once it is settled (here by the next second).
    frozen_clock.advance(1)
    assert api.get("me").status_code == 200
    slot = leases._table().read(index)
    assert slot[leases._PREV] == counted + 3
    assert slot[leases._CUR] == 1


def test_a_worker_leaving_gives_its_batch_back_to_the_windows_and_leaves_the_lease(
    leases_on: RedisServer, org: Organization, frozen_clock: Any, redis_commands: CommandLog
) -> None:
    """Its tokens go straight to their windows (the lease's granter may be leaving too,
    and could not give back what came back to the slot after it left); the host's lease
    is another worker's and stays."""
    key, _ = batched_key(org, redis_commands)
    index = leases._slot_of(key.digest)[1]
    before = leases._table().read(index)[leases._TOKENS_UNUSED]
    leases._granted.clear()  # another worker granted the lease; this one leaves
    leases.release_all()
    assert not leases._batches
    assert leases._table().read(index)[leases._TOKENS_UNUSED] == before
    assert counters(key, org, frozen_clock.now) == [35 - (TAKEN - 1)] * 3


def test_an_invalidation_on_this_host_ends_the_batches_of_every_worker(
    leases_on: RedisServer, org: Organization, frozen_clock: Any, redis_commands: CommandLog
) -> None:
    """Another worker of the host ends the lease (`forget`, as its invalidation does): this
    worker's batch, taken from that lease, admits no more."""
    key, api = batched_key(org, redis_commands)
    batch = leases._batches[key.digest]
    # The other worker's `forget`: the slot's lease ends; this process's batch is not its.
    leases._batches.clear()
    leases.forget(digest=key.digest)
    leases._batches[key.digest] = batch
    redis_commands.clear()
    assert api.get("me").status_code == 200
    assert redis_commands.names == ["EVALSHA"]
    # Its tokens went back to their windows with the lease's: the windows count exactly
    # the admitted requests, and the new lease's tokens once given back.
    assert key.digest not in leases._batches or leases._batches[key.digest] is not batch
    leases.release_all()
    assert counters(key, org, frozen_clock.now) == [7, 7, 7]


def _reading_too_old(clock: Any) -> None:
    age_reading(TRUST)


def _newer_epoch_read(clock: Any) -> None:
    epoch, _ = leases._table().epoch_reading()
    leases.observe(epoch + 1, time.monotonic())  # a round trip elsewhere read a newer one


def _next_second(clock: Any) -> None:
    clock.advance(1)


@pytest.mark.parametrize("change", [_reading_too_old, _newer_epoch_read, _next_second])
def test_a_batch_admits_nothing_once_its_lease_could_not(
    leases_on: RedisServer,
    org: Organization,
    frozen_clock: Any,
    redis_commands: CommandLog,
    change: Any,
) -> None:
    """The host's reading of the epoch too old, or newer than the lease's; the lease's
    second over: the next request is a round trip, and the batch is given up."""
    key, api = batched_key(org, redis_commands)
    change(frozen_clock)
    redis_commands.clear()
    assert api.get("me").status_code == 200
    assert redis_commands.names == ["EVALSHA"]
    assert key.digest not in leases._batches


def test_a_batch_is_trusted_no_longer_than_the_lease_declares(
    leases_on: RedisServer, org: Organization, frozen_clock: Any, redis_commands: CommandLog
) -> None:
    """A worker with a shorter setting added to the lease since the batch was taken: the
    batch trusts the reading no longer than that worker declared."""
    key, _ = batched_key(org, redis_commands)
    index = leases._slot_of(key.digest)[1]
    table = leases._table()
    table.lock(index)
    slot = table.read(index)
    slot[leases._DECLARED] = 0.05
    table.write(index, slot)
    table.unlock(index)
    age_reading(0.1)
    assert leases.take(key.digest, frozen_clock.now, 0, TRUST)[0] is None


def test_the_pusher_gives_back_what_a_batch_of_an_ended_second_holds(
    leases_on: RedisServer, org: Organization, frozen_clock: Any, redis_commands: CommandLog
) -> None:
    key, _ = batched_key(org, redis_commands)
    second = frozen_clock.now
    frozen_clock.advance(1)
    leases.push()
    assert not leases._batches
    leases.release_all()
    # The minute and month windows count exactly the six admitted requests.
    assert counters(key, org, second)[1:] == [6, 6]


def test_a_batch_taken_with_another_state_of_the_key_is_not_used(
    leases_on: RedisServer, org: Organization, frozen_clock: Any, redis_commands: CommandLog
) -> None:
    key, _ = batched_key(org, redis_commands)
    entry, resolved, fingerprint = leases._known[key.digest]
    leases._known[key.digest] = (entry, resolved, fingerprint + 1)
    assert leases.take(key.digest, frozen_clock.now, 0, TRUST)[0] is None


def test_a_request_refused_under_a_batch_gives_its_token_back_to_the_batch(
    leases_on: RedisServer, org: Organization, frozen_clock: Any, redis_commands: CommandLog
) -> None:
    key, api = batched_key(org, redis_commands)
    refused = api.get("me", headers={"X-Org-Id": "someone-else"})
    assert refused.status_code == 403
    assert leases._batches[key.digest].tokens == TAKEN - 1
    assert redis_commands.names == []
    leases.release_all()
    assert counters(key, org, frozen_clock.now) == [6, 6, 6]


def test_a_batch_whose_slot_another_key_took_is_not_used(
    leases_on: RedisServer, org: Organization, frozen_clock: Any, redis_commands: CommandLog
) -> None:
    key, _ = batched_key(org, redis_commands)
    tag, index = leases._slot_of(key.digest)
    table = leases._table()
    table.lock(index)
    table.write(index, leases._fresh(tag + 1, int(frozen_clock.now)))
    table.unlock(index)
    assert leases.take(key.digest, frozen_clock.now, 0, TRUST)[0] is None
    # The batch's tokens went back to their windows (the lease they came from is gone).
    leases.release_all()
    assert counters(key, org, frozen_clock.now)[1:] == [35 - (TAKEN - 1)] * 2


def test_threads_of_one_process_take_each_token_of_a_batch_once(
    leases_on: RedisServer, org: Organization, frozen_clock: Any, redis_commands: CommandLog
) -> None:
    """gthread workers run several threads: draining the key's lease and batches from four
    of them at once yields exactly the tokens the lease holds."""
    import threading

    key, _ = batched_key(org, redis_commands)
    index = leases._slot_of(key.digest)[1]
    held = leases._table().read(index)[leases._TOKENS_UNUSED] + leases._batches[key.digest].tokens
    taken: list[int] = []

    def drain() -> None:
        mine = 0
        while leases.take(key.digest, frozen_clock.now, 0, TRUST)[0] is not None:
            mine += 1
        taken.append(mine)

    threads = [threading.Thread(target=drain) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(taken) == held


def test_a_forked_worker_starts_without_its_parents_batches(
    leases_on: RedisServer, org: Organization, frozen_clock: Any, redis_commands: CommandLog
) -> None:
    batched_key(org, redis_commands)
    assert leases._ahead
    leases._forked()
    assert not leases._batches and not leases._ahead


def test_a_token_given_back_after_its_batch_was_settled_goes_back_to_the_lease(
    leases_on: RedisServer, org: Organization, frozen_clock: Any, redis_commands: CommandLog
) -> None:
    """As any leased request's: to the lease it came from (whose granter gives back what
    is left when it ends), not to a batch that no longer holds it."""
    key, _ = batched_key(org, redis_commands)
    taken, _ = leases.take(key.digest, frozen_clock.now, 0, TRUST)
    assert taken is not None
    lease = taken[0]
    index = leases._slot_of(key.digest)[1]
    frozen_clock.advance(1)
    leases.push()  # the batch of the ended second is settled
    assert not leases._batches
    before = leases._table().read(index)[leases._TOKENS_UNUSED]
    leases.give_back(lease)  # the request it admitted was refused after all
    assert leases._table().read(index)[leases._TOKENS_UNUSED] == before + 1
    assert index in leases._granted


def test_requests_from_a_batch_keep_the_pusher_renewing_the_hosts_reading(
    leases_on: RedisServer, org: Organization, frozen_clock: Any, redis_commands: CommandLog
) -> None:
    _, api = batched_key(org, redis_commands)
    leases._watch.used = leases._watch.trust = 0.0  # as if no lease had been used for long
    assert not leases.refresh_epoch()
    assert api.get("me").status_code == 200  # from the batch
    assert redis_commands.names == []
    age_reading(TRUST * leases.REFRESH_FRACTION + 0.01)
    assert leases.refresh_epoch()


# --- leases asked for ahead (ADR 0093) ----------------------------------------------------


def growth_key_busy(org: Organization, redis_commands: CommandLog) -> tuple[ApiKey, ApiClient]:
    """A Growth-limited key (600 a minute, a burst of 50) leased up and then sent its
    lease's other 10 requests: 12 requests in the host's table in this second, all
    tokens used (the windows count 15)."""
    set_limits(org, per_minute=600, burst=50, monthly=2_000_000)
    key, api = new_key(org)
    lease_up(api)
    assert served_without_redis(api, redis_commands, 10)
    return key, api


def test_a_key_busy_last_second_is_leased_ahead_and_makes_no_round_trip(
    leases_on: RedisServer, org: Organization, frozen_clock: Any, redis_commands: CommandLog
) -> None:
    key, api = growth_key_busy(org, redis_commands)
    frozen_clock.advance(1)
    redis_commands.clear()
    assert leases.lease_ahead() == 1
    # One script for the process's keys (loaded first on its first call). Asked for
    # 1 + 1.5 x 12 = 19 tokens; given a quarter of the empty burst window (12), counted
    # in every window, no request counted.
    assert set(redis_commands.names) <= {"EVALSHA", "SCRIPT"}
    assert counters(key, org, frozen_clock.now) == [12, 27, 27]
    burst_counter = ratelimit.counter_keys(key.pk, org.pk, frozen_clock.now)[0]
    assert 0 < redis().ttl(burst_counter) <= 2
    assert served_without_redis(api, redis_commands, 12)
    # Spent: the next request makes its round trip.
    assert api.get("me").status_code == 200
    assert redis_commands.names == ["EVALSHA"]
    leases.release_all()
    assert counters(key, org, frozen_clock.now)[0] == 13


@pytest.mark.parametrize(
    ("seconds", "demand"),
    [
        (2, None),  # no request at all in the second before
        (1, leases.AHEAD_MIN_DEMAND - 1),  # too few in it
    ],
)
def test_a_key_not_busy_last_second_is_not_leased_ahead(
    leases_on: RedisServer,
    org: Organization,
    frozen_clock: Any,
    redis_commands: CommandLog,
    seconds: int,
    demand: int | None,
) -> None:
    key, _ = growth_key_busy(org, redis_commands)
    if demand is not None:
        (index,) = leases._granted
        table = leases._table()
        slot = table.read(index)
        slot[leases._CUR] = demand
        table.write_demand(index, slot)
    frozen_clock.advance(seconds)
    redis_commands.clear()
    assert leases.lease_ahead() == 0
    assert redis_commands.names == []
    assert counters(key, org, frozen_clock.now) == [0, 15, 15]
    # Forgotten: asked for ahead again only once a round trip grants it a lease again.
    assert not leases._ahead


def test_a_lease_ahead_takes_at_most_a_share_of_what_the_burst_window_has_left(
    leases_on: RedisServer, org: Organization, frozen_clock: Any, redis_commands: CommandLog
) -> None:
    key, _ = growth_key_busy(org, redis_commands)
    frozen_clock.advance(1)
    burst_counter = ratelimit.counter_keys(key.pk, org.pk, frozen_clock.now)[0]
    redis().set(burst_counter, 40)  # another host's requests: 10 left, a quarter is 2
    assert leases.lease_ahead() == 1
    assert counters(key, org, frozen_clock.now)[0] == 42


def test_no_lease_ahead_for_a_revoked_key(
    leases_on: RedisServer,
    org: Organization,
    frozen_clock: Any,
    redis_commands: CommandLog,
    monkeypatch: pytest.MonkeyPatch,
    django_capture_on_commit_callbacks: Any,
) -> None:
    monkeypatch.setattr(keycache, "_wait", lambda seconds: None)
    key, api = growth_key_busy(org, redis_commands)
    with django_capture_on_commit_callbacks(execute=True):
        apikey_revoke(key=key, actor=Actor.system())
    frozen_clock.advance(1)
    assert leases.lease_ahead() == 0
    assert counters(key, org, frozen_clock.now) == [0, 15, 15]
    assert api.get("me").status_code == 401


def test_a_lease_ahead_on_a_state_of_the_key_this_process_has_not_seen_is_given_back(
    leases_on: RedisServer, org: Organization, frozen_clock: Any, redis_commands: CommandLog
) -> None:
    """Another process refilled the key's entry after a change (here: no burst limit any
    more): the tokens go back to the windows the script counted them in, and the key's
    next round trip learns the state."""
    key, api = growth_key_busy(org, redis_commands)
    name = cache.make_key(keycache.cache_key(key.digest))
    entry = redis().get(name)
    assert b"|50|600|" in entry
    redis().set(name, entry.replace(b"|50|600|", b"|0|600|"))
    frozen_clock.advance(1)
    burst_counter = ratelimit.counter_keys(key.pk, org.pk, frozen_clock.now)[0]
    redis().set(burst_counter, 5)  # another host's requests, before the change
    assert leases.lease_ahead() == 0
    # 1 + 1.5 x 12 = 19 tokens, in the minute and month windows only.
    assert sum(leases._pending.returns.values()) == 19
    assert counters(key, org, frozen_clock.now) == [5, 34, 34]
    redis_commands.clear()
    assert api.get("me").status_code == 200
    assert redis_commands.names == ["EVALSHA"]
    leases.release_all()
    assert counters(key, org, frozen_clock.now) == [5, 16, 16]


def test_one_call_asks_ahead_for_every_busy_key_of_the_process(
    leases_on: RedisServer, org: Organization, frozen_clock: Any, redis_commands: CommandLog
) -> None:
    first, _ = growth_key_busy(org, redis_commands)
    second, _ = growth_key_busy(org, redis_commands)
    frozen_clock.advance(1)
    # Loaded as an earlier test of the run may have left it (alone, this test would see
    # the NOSCRIPT reply, the load and the second try).
    redis().script_load(backend._LEASE_AHEAD.source)
    redis_commands.clear()
    assert leases.lease_ahead() == 2
    assert redis_commands.names == ["EVALSHA"]
    # Each key's own windows (the org's month counts both).
    assert counters(first, org, frozen_clock.now)[:2] == [12, 27]
    assert counters(second, org, frozen_clock.now) == [12, 27, 54]


def script_commands(sha: str, action: Callable[[], Any]) -> tuple[Any, list[str]]:
    """What `action` answers, and the commands the script `sha` ran inside it, as Redis'
    MONITOR shows them: a script's commands follow its call, and no other client's come
    between them (a script runs alone), so background threads of other tests do not
    count."""
    conn = redis()
    end = f"lk-monitor-end-{secrets.token_hex(4)}"
    with conn.monitor() as monitor:
        answer = action()
        conn.echo(end)
        seen = []
        while True:
            command = monitor.next_command()
            if command["command"] == f"ECHO {end}":
                break
            seen.append(command)
    (start,) = [
        i
        for i, c in enumerate(seen)
        if c["client_type"] != "lua" and c["command"].startswith(f"EVALSHA {sha} ")
    ]
    inside = []
    for command in seen[start + 1 :]:
        if command["client_type"] != "lua":
            break
        inside.append(command["command"])
    return answer, inside


def test_one_call_asking_ahead_does_once_what_its_leases_share(
    leases_on: RedisServer, org: Organization, frozen_clock: Any, redis_commands: CommandLog
) -> None:
    """Two keys of one org in one call (ADR 0101): Redis' clock is read once and both keys'
    markers end together, the org's generation is read and its marker set once, the trust
    declared once, and new burst and minute counters are written with their expiry in
    one step."""
    first, _ = growth_key_busy(org, redis_commands)
    second, _ = growth_key_busy(org, redis_commands)
    frozen_clock.advance(1)
    conn = redis()
    conn.script_load(backend._LEASE_AHEAD.source)
    conn.delete(keycache.lease_epoch_names()[1])
    for key in (first, second):  # as at the start of a minute
        conn.delete(ratelimit.counter_keys(key.pk, org.pk, frozen_clock.now)[1])
    seconds, micros = conn.time()
    before_ms = int(seconds) * 1000 + int(micros) // 1000
    granted, inside = script_commands(backend._LEASE_AHEAD.sha.decode(), leases.lease_ahead)
    assert granted == 2
    names = Counter(command.split(" ", 1)[0].upper() for command in inside)
    assert names["TIME"] == 1
    # The epoch, the trust, each key's entry and marker, the org's generation and marker
    # once (each key read all of them before).
    assert names["GET"] == 1 + 1 + 2 + 2 + 1 + 1
    assert names["INCRBY"] == 2  # the org's month counter, for each key
    assert names["EXPIRE"] == 0
    for key in (first, second):
        burst, minute, _ = ratelimit.counter_keys(key.pk, org.pk, frozen_clock.now)
        assert f"SET {burst} 12 EX 2" in inside
        assert 0 < conn.ttl(burst) <= 2
        assert 60 < conn.ttl(minute) <= 120
        assert counters(key, org, frozen_clock.now)[:2] == [12, 12]
    ends = {
        int(conn.get(name))
        for name in (
            keycache.key_lease_name(first.digest),
            keycache.key_lease_name(second.digest),
            keycache.org_lease_name(org.pk),
        )
    }
    (end,) = ends
    assert end >= before_ms + leases.MARKER_MS
    assert f"SET {keycache.lease_epoch_names()[1]} {min(LEASE_MS, keycache.LEASE_LIFE_MS)} PX" in (
        " ".join(c.split(" ")[:4]) for c in inside
    )


def test_a_key_with_the_seconds_lease_already_is_asked_for_the_next_one(
    leases_on: RedisServer, org: Organization, frozen_clock: Any, redis_commands: CommandLog
) -> None:
    """The pusher may look while the key's lease of this second is still there: the key is
    kept, and asked for ahead as the next second begins."""
    set_limits(org, per_minute=HIGH, burst=HIGH, monthly=HIGH)
    key, api = new_key(org)
    lease_up(api)  # 30 tokens left in this second's lease
    assert leases.lease_ahead() == 0
    assert list(leases._ahead.values()) == [key.digest]
    frozen_clock.advance(1)
    assert leases.lease_ahead() == 1


def test_a_late_reply_does_not_replace_the_lease_of_a_later_second(
    leases_on: RedisServer, org: Organization, frozen_clock: Any, redis_commands: CommandLog
) -> None:
    key, _ = growth_key_busy(org, redis_commands)
    frozen_clock.advance(1)
    assert leases.lease_ahead() == 1
    (index,) = leases._ahead
    before = leases._table().read(index)
    held = leases.grant(
        digest=key.digest,
        resolved=leases._known[key.digest][1],
        limits=org.limits,
        now=frozen_clock.now - 1,
        asked_at=time.monotonic(),
        length_ms=leases.MARKER_MS,
        tokens=3,
        minute_used=20,
        epoch=before[leases._EPOCH],
        epoch_trust=TRUST,
    )
    assert not held
    assert leases._table().read(index) == before
    assert sum(leases._pending.returns.values()) == 3


def test_a_node_that_takes_no_writes_leases_nothing_ahead_and_renews_no_reading(
    leases_on: RedisServer, org: Organization, frozen_clock: Any, redis_commands: CommandLog
) -> None:
    """Even a call that counts nothing (here: a full burst window) writes the epoch back,
    so a node that takes no writes (a primary short of replicas refuses them the same
    way as a replica) refuses it: no old reading is renewed from it."""
    key, _ = growth_key_busy(org, redis_commands)
    frozen_clock.advance(1)
    redis().set(ratelimit.counter_keys(key.pk, org.pk, frozen_clock.now)[0], 50)
    age_reading(TRUST)
    conn = redis()
    conn.config_set("min-replicas-to-write", 1)
    try:
        with pytest.raises(redisconn.REDIS_ERRORS):
            leases.lease_ahead()
    finally:
        conn.config_set("min-replicas-to-write", 0)
    assert leases._table().epoch_reading()[1] < time.monotonic() - TRUST * 0.9


def test_the_pusher_asks_ahead_once_just_before_each_second_begins(
    leases_on: RedisServer, org: Organization, frozen_clock: Any, redis_commands: CommandLog
) -> None:
    lead = leases.AHEAD_LEAD
    assert leases.ahead_wait(100.5) == pytest.approx(0.5 - lead)
    assert leases.ahead_wait(100.0) == pytest.approx(1 - lead)
    assert not leases.ahead_due(101 - lead / 2, 100)  # no key to ask for
    growth_key_busy(org, redis_commands)
    # Within the lead: for the second about to begin.
    assert leases.ahead_target(101 - lead / 2) == 101
    assert leases.ahead_due(101 - lead / 2, 100)
    assert not leases.ahead_due(101 - lead / 2, 101)  # asked for it already
    # Before the lead: too late for this second, too early for the next.
    assert leases.ahead_target(101 - 2 * lead) == 100
    assert not leases.ahead_due(101 - 2 * lead, 99)
    # A pusher that woke late still asks early in the second, not later.
    assert leases.ahead_due(101.01, 100)
    assert not leases.ahead_due(101 + leases.AHEAD_WINDOW + 0.01, 100)


def test_a_lease_asked_for_before_its_second_is_counted_in_it_and_held_as_it_begins(
    leases_on: RedisServer,
    org: Organization,
    frozen_clock: Any,
    redis_commands: CommandLog,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ADR 0100: asked for `AHEAD_LEAD` before its second, the lease is counted in that
    second's windows at once, but written into the host's table only as the second
    begins: until then the current second's lease serves the key's requests, and its
    unused tokens go back when the new one replaces it."""
    set_limits(org, per_minute=HIGH, burst=HIGH, monthly=HIGH)
    key, api = new_key(org)
    lease_up(api)  # the current second's lease, tokens left
    (index,) = leases._ahead
    second = int(frozen_clock.now)
    frozen_clock.advance(1 - leases.AHEAD_LEAD / 2)
    table = leases._table()
    seen: dict[str, Any] = {}

    def wait_for(start: float) -> None:
        seen["start"] = start
        # Counted in the next second's burst window; the current lease still held.
        seen["next_burst"] = counters(key, org, start)[0]
        seen["held_second"] = table.read(index)[leases._SECOND]
        seen["served"] = served_without_redis(api, redis_commands, 3)
        seen["unused"] = table.read(index)[leases._TOKENS_UNUSED]
        for _, batch in list(leases._batches.items()):
            seen["unused"] += batch.tokens  # this process's batch goes back too
        frozen_clock.advance(start - frozen_clock.now)

    monkeypatch.setattr(leases, "_wait_for", wait_for)
    returned = sum(leases._pending.returns.values())
    asked_from = time.monotonic()
    assert leases.lease_ahead() == 1
    assert seen["start"] == second + 1
    assert seen["next_burst"] > 0
    assert seen["held_second"] == second
    assert seen["served"]
    slot = table.read(index)
    assert slot[leases._SECOND] == second + 1
    assert slot[leases._TOKENS_UNUSED] == seen["next_burst"]
    # Trusted to the end of its second, though asked for before it began.
    assert slot[leases._TRUST] >= asked_from + 1 + leases.AHEAD_LEAD
    # The replaced lease's tokens go back (its batch's when the next request settles it).
    assert api.get("me").status_code == 200
    assert sum(leases._pending.returns.values()) == returned + seen["unused"]
    # The lease's other tokens admit the next requests with no Redis call.
    assert served_without_redis(api, redis_commands, seen["next_burst"] - 1)


def test_every_answer_asked_for_ahead_is_held_even_if_holding_one_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    held: list[str] = []

    def hold(answer: Any, now: float) -> int:
        held.append(answer)
        if answer == "first":
            raise OSError("a lock the kernel refused")
        return 1

    monkeypatch.setattr(leases, "_hold_ahead", hold)
    with pytest.raises(OSError):
        leases._hold_all(["first", "second", "third"], 0.0)  # type: ignore[list-item]
    assert held == ["first", "second", "third"]


def test_the_wait_for_a_second_to_begin_ends_with_it_or_after_the_lead() -> None:
    start = ratelimit.clock() + leases.AHEAD_LEAD / 2
    leases._wait_for(start)
    assert ratelimit.clock() >= start
    began = time.monotonic()
    leases._wait_for(ratelimit.clock() + 60)  # a clock that never gets there
    assert time.monotonic() - began < 1


def test_a_key_this_process_verified_skips_the_format_check_and_any_other_key_gets_it(
    leases_on: RedisServer,
    org: Organization,
    frozen_clock: Any,
    monkeypatch: pytest.MonkeyPatch,
    redis_commands: CommandLog,
) -> None:
    """The format and checksum prove nothing more about a key whose digest this process
    has seen resolved to a stored key; every other string still gets them, before any
    lookup."""
    from apikeys.guard import pipeline

    _, api = leased_key(org)
    assert api.secret is not None
    checked: list[str] = []
    real = pipeline.well_formed

    def watched(raw: object) -> bool:
        checked.append(str(raw))
        return real(raw)

    monkeypatch.setattr(pipeline, "well_formed", watched)
    assert api.get("me").status_code == 200
    assert checked == []
    last = api.secret[-1]
    typo = api.secret[:-1] + ("B" if last == "A" else "A")
    refused = new_key(org)[1]
    refused.headers["Authorization"] = f"Bearer {typo}"
    redis_commands.clear()
    response = refused.get("me")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"
    assert checked == [typo]
    assert redis_commands.names == []  # refused by the checksum, before any lookup


def test_a_push_larger_than_a_send_chunk_goes_in_pieces_and_is_applied_whole(
    leases_on: RedisServer, frozen_clock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The socket's timeout bounds each piece sent, not a whole large push (as redis-py
    sends a large command)."""
    conn = redis()
    big = leases._Pending()
    for key_pk in range(1, 2401):
        big.usage[(key_pk, 7, 0)] = usage.UsageDelta(
            key_pk, 7, 0, requests=2, last_at=1.5, last_ip="203.0.113.9"
        )
    payload = leases._payload(big)
    assert len(redisconn.pack(*payload)) > 2 * redisconn._SEND_CHUNK
    connection_class = conn.connection_pool.connection_class
    real = connection_class.send_packed_command
    pieces: list[int] = []

    def watched(self: Any, command: Any, check_health: bool = True) -> None:
        pieces.extend(len(piece) for piece in command)
        real(self, command, check_health)

    monkeypatch.setattr(connection_class, "send_packed_command", watched)
    leases._send(conn, "big-push", payload)
    assert len(pieces) >= 3
    assert max(pieces) <= redisconn._SEND_CHUNK
    monkeypatch.setattr(connection_class, "send_packed_command", real)
    for key_pk in (1, 1200, 2400):
        assert conn.hget(usage.redis_hash_key(key_pk, 7, 0), "n") == b"2"
    assert conn.scard(usage.redis_pending_key()) == 2400
