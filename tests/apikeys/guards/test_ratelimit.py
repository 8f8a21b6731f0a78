"""The limiter itself: fixed windows, refusals that count nothing, headers, both backends."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import pytest

from apikeys import ratelimit, usage
from apikeys.ratelimit import QUOTA_EXCEEDED, RATE_LIMITED, UsageMeta, check_limits
from orgs.plans import PLAN_LIMITS, Limits, Plan
from tests.apikeys.guards.conftest import RedisServer, child_env, project_root

STARTER = PLAN_LIMITS[Plan.STARTER]
META = UsageMeta(ip="127.0.0.1", client_version="")
# 2030-01-15 12:00:00 UTC, a window boundary: tests pass `now` and never depend on the clock.
T0 = datetime(2030, 1, 15, 12, 0, 0, tzinfo=UTC).timestamp()


def hit(limits: Limits, now: float, key: int = 1, org: int | None = 1) -> ratelimit.LimitResult:
    return check_limits(key_pk=key, org_pk=org, limits=limits, meta=META, now=now)


def test_counter_and_usage_hash_names_follow_the_prefix_key_org_and_time(settings: Any) -> None:
    """The names the push and the leases asked ahead build from the key's cached heads
    are the ones the request path counts in, also after the prefix changes."""
    now = T0 + 61.5
    for prefix in ("lk", "other"):
        default = {**settings.CACHES["default"], "KEY_PREFIX": prefix}
        settings.CACHES = {**settings.CACHES, "default": default}
        for org, org_part in ((None, "-"), (7, "7"), (0, "0")):
            assert ratelimit.counter_keys(5, org, now) == (
                f"{prefix}:g:rl:b:5:{int(now)}",
                f"{prefix}:g:rl:m:5:{int(now) // 60}",
                f"{prefix}:g:rl:q:{org_part}:203001",
            )
            windows = ratelimit.windows(5, org, STARTER, now)
            assert (windows.burst, windows.minute, windows.month) == ratelimit.counter_keys(
                5, org, now
            )
            hour = usage.hour_start(now)
            assert ratelimit.usage_hash_name(5, org, hour) == usage.redis_hash_key(5, org, hour)
            assert ratelimit.usage_hash_name(5, org, hour) == f"{prefix}:g:u:5:{org_part}:{hour}"


def test_burst_admits_the_limit_per_second_then_refuses_with_retry_after(backend: str) -> None:
    results = [hit(STARTER, T0 + 0.1 + i / 100) for i in range(12)]
    assert [r.allowed for r in results] == [True] * 10 + [False] * 2
    refused = results[-1]
    assert refused.code == RATE_LIMITED
    assert refused.headers()["Retry-After"] == "1"
    # The next second is a new burst window.
    assert hit(STARTER, T0 + 1.2).allowed


def test_minute_window_admits_the_limit_then_refuses_until_the_minute_ends(backend: str) -> None:
    limits = Limits(per_minute=5, burst=0, monthly=0)
    results = [hit(limits, T0 + 10 + i) for i in range(7)]
    assert [r.allowed for r in results] == [True] * 5 + [False] * 2
    refused = results[5]
    assert refused.code == RATE_LIMITED
    assert refused.headers()["Retry-After"] == str(60 - 15)
    assert hit(limits, T0 + 60).allowed


def test_limits_are_per_key(backend: str) -> None:
    limits = Limits(per_minute=2, burst=0, monthly=0)
    assert [hit(limits, T0, key=1).allowed for _ in range(3)] == [True, True, False]
    assert hit(limits, T0, key=2).allowed


def test_monthly_quota_is_per_org_and_refusals_do_not_count(backend: str) -> None:
    limits = Limits(per_minute=0, burst=0, monthly=3)
    assert hit(limits, T0, key=1, org=7).allowed
    assert hit(limits, T0, key=2, org=7).allowed
    assert hit(limits, T0, key=3, org=7).allowed
    refused = hit(limits, T0 + 1, key=1, org=7)
    assert not refused.allowed
    assert refused.code == QUOTA_EXCEEDED
    # Retry-After runs to the 1st of next month, 00:00 UTC.
    february = datetime(2030, 2, 1, tzinfo=UTC).timestamp()
    assert refused.headers()["Retry-After"] == str(int(february - (T0 + 1)))
    # Another org has its own quota.
    assert hit(limits, T0, key=9, org=8).allowed
    # Raising the quota by one admits exactly one more: the refusals counted nothing.
    more = Limits(per_minute=0, burst=0, monthly=4)
    assert hit(more, T0 + 2, key=1, org=7).allowed
    assert not hit(more, T0 + 3, key=1, org=7).allowed


def test_refusals_do_not_use_up_the_minute_window(backend: str) -> None:
    limits = Limits(per_minute=3, burst=1, monthly=0)
    assert hit(limits, T0).allowed
    assert not hit(limits, T0 + 0.5).allowed  # burst
    assert not hit(limits, T0 + 0.6).allowed  # burst
    assert hit(limits, T0 + 1).allowed
    assert hit(limits, T0 + 2).allowed
    third = hit(limits, T0 + 3)
    assert not third.allowed
    assert third.minute_used == 3


def test_quota_resets_on_the_first_of_the_month(backend: str) -> None:
    limits = Limits(per_minute=0, burst=0, monthly=1)
    end_of_january = datetime(2030, 1, 31, 23, 59, 59, tzinfo=UTC).timestamp()
    assert hit(limits, end_of_january).allowed
    assert not hit(limits, end_of_january + 0.5).allowed
    assert hit(limits, end_of_january + 1).allowed  # 2030-02-01 00:00:00


def test_zero_means_unlimited(backend: str) -> None:
    limits = Limits(per_minute=0, burst=0, monthly=0)
    assert all(hit(limits, T0).allowed for _ in range(300))
    assert hit(limits, T0).headers() == {}


def test_headers_report_the_minute_window_and_the_policy(backend: str) -> None:
    now = T0 + 20.25
    first = hit(STARTER, now)
    headers = first.headers()
    reset = int(T0) + 60
    assert headers["X-RateLimit-Limit"] == "60"
    assert headers["X-RateLimit-Remaining"] == "59"
    assert headers["X-RateLimit-Reset"] == str(reset)
    assert headers["RateLimit-Policy"] == '"burst";q=10;w=1, "minute";q=60;w=60'
    assert headers["RateLimit"] == '"minute";r=59;t=40'
    assert "Retry-After" not in headers
    assert hit(STARTER, now + 0.1).headers()["X-RateLimit-Remaining"] == "58"


def test_peeking_reports_without_counting(backend: str) -> None:
    limits = Limits(per_minute=2, burst=0, monthly=0)
    hit(limits, T0)
    peek = check_limits(key_pk=1, org_pk=1, limits=limits, meta=META, count_limits=False, now=T0)
    assert peek.allowed
    assert peek.headers()["X-RateLimit-Remaining"] == "1"
    assert hit(limits, T0).allowed
    assert not hit(limits, T0).allowed


def test_concurrent_threads_never_exceed_the_limit(backend: str) -> None:
    limits = Limits(per_minute=0, burst=10, monthly=0)
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda _: hit(limits, T0 + 0.5).allowed, range(80)))
    assert results.count(True) == 10


@pytest.mark.stops_redis
def test_redis_unreachable_fails_open_with_an_error_logged(
    use_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    ratelimit.redisconn.error_log._last.clear()
    use_redis.stop()
    try:
        with caplog.at_level(logging.ERROR, logger="apikeys.guards"):
            limits = Limits(per_minute=1, burst=1, monthly=1)
            results = [hit(limits, T0) for _ in range(3)]
        assert all(r.allowed and r.degraded for r in results)
        assert results[0].headers()["X-RateLimit-Limit"] == "1"
        assert any("fail open" in r.getMessage() for r in caplog.records)
    finally:
        use_redis.start()


_CHILD = textwrap.dedent(
    """
    import sys
    from concurrent.futures import ThreadPoolExecutor
    import django
    django.setup()
    from apikeys.ratelimit import UsageMeta, check_limits
    from orgs.plans import Limits

    now = float(sys.argv[1])
    limits = Limits(per_minute=int(sys.argv[2]), burst=int(sys.argv[3]), monthly=0)

    def one(_):
        return check_limits(key_pk=42, org_pk=1, limits=limits, meta=UsageMeta(), now=now).allowed

    with ThreadPoolExecutor(max_workers=6) as pool:
        admitted = sum(pool.map(one, range(int(sys.argv[4]))))
    sys.stdout.write(f"{admitted}\\n")
    """
)


def _run_children(server: RedisServer, prefix: str, *args: str) -> list[int]:
    env = child_env(
        DJANGO_SETTINGS_MODULE="config.settings_test",
        REDIS_URL=server.url,
        CACHE_KEY_PREFIX=prefix,
    )
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD, *args],
            cwd=project_root(),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    counts = []
    for child in children:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err.decode()
        counts.append(int(out.decode().strip().splitlines()[-1]))
    return counts


def test_two_processes_together_admit_no_more_than_the_starter_burst(
    use_redis: RedisServer,
) -> None:
    counts = _run_children(use_redis, "lkg2p", repr(T0 + 0.5), "60", "10", "40")
    assert sum(counts) == 10


def test_two_processes_together_admit_no_more_than_the_starter_minute(
    use_redis: RedisServer,
) -> None:
    counts = _run_children(use_redis, "lkg2m", repr(T0 + 0.5), "60", "0", "50")
    assert sum(counts) == 60


@pytest.mark.parametrize(
    "now",
    [
        1_700_000_000.0,  # a whole second, on a minute's start
        1_700_000_040.0,
        1_700_000_059.0,  # the minute's last whole second
        1_700_000_059.999999,
        1_700_000_000.000001,
        1_700_000_017.25,
        1_767_225_599.5,  # the last second of a year
    ],
)
def test_a_leased_result_reports_what_the_general_rule_reports(now: float) -> None:
    limits = Limits(per_minute=600, burst=20, monthly=10**6)
    lean = ratelimit.leased_result(limits, now, 42)
    general = ratelimit._result(ratelimit._ADMIT, limits, 42, now)
    assert lean == general
    assert lean.headers() == general.headers()
    assert 1 <= lean.reset_in <= 60
