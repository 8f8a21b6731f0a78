"""`manage.py bench_verify`, the part of `make bench` that shows key verification flat
from 1,000 to 1,000,000 keys (docs/performance.md, "Key verification"): run small here,
so that a change to the keys' table cannot break it unseen. Its COPY writes every column
of the table (a column added without a database default once broke it)."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from apikeys.models import ApiKey
from orgs.models import Organization

pytestmark = pytest.mark.django_db


def run(*args: str) -> dict[str, object]:
    out = StringIO()
    call_command("bench_verify", *args, stdout=out, stderr=StringIO())
    return dict(json.loads(out.getvalue().strip().splitlines()[-1]))


def test_times_verification_at_each_size_with_real_keys_and_removes_them() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("COPY into PostgreSQL: checked by the suite's PostgreSQL run")
    result = run("--sizes", "40,120", "--sample", "15")
    for size in ("40", "120"):
        figures = result[size]
        assert isinstance(figures, dict)
        # Each step timed for every sample key; `authenticate_key` raises for a key it
        # cannot verify, so the sample keys were real ones at both sizes.
        for step in ("db", "cold", "second", "warm"):
            assert figures[step]["median_us"] > 0
    assert isinstance(result["db_ratio_large_over_small"], float)
    # The inserted keys and the throwaway org are gone.
    assert not Organization.objects.filter(slug="bench-verify").exists()
    assert not ApiKey.objects.filter(public_id__startswith="key_bench").exists()


def test_keeps_the_keys_when_asked() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("COPY into PostgreSQL: checked by the suite's PostgreSQL run")
    run("--sizes", "10,30", "--sample", "10", "--keep")
    org = Organization.objects.get(slug="bench-verify")
    keys = ApiKey.objects.filter(org=org)
    assert keys.count() == 30
    # Every column from the model's defaults, as a key made by the model would have it.
    key = keys.get(public_id="key_bench29")
    assert (key.meta, key.allowed_ips, key.allowed_ips_mode) == ({}, [], "enforce")
    assert key.scopes == [] and key.environment == "test" and key.revoked_at is None


@pytest.mark.parametrize(
    "args",
    [
        ("--sizes", "100"),
        ("--sizes", "200,100"),
        ("--sizes", "100,100"),
        ("--sizes", "5,100", "--sample", "10"),
        ("--sizes", "ten,100"),
        ("--sample", "0", "--sizes", "10,20"),
    ],
)
def test_refuses_sizes_it_cannot_time(args: tuple[str, ...]) -> None:
    with pytest.raises(CommandError, match="--sizes"):
        run(*args)


def test_says_it_measures_postgresql_alone() -> None:
    if connection.vendor == "postgresql":
        pytest.skip("the other database: checked by the suite's SQLite run")
    with pytest.raises(CommandError, match="PostgreSQL"):
        run("--sizes", "10,20", "--sample", "10")
