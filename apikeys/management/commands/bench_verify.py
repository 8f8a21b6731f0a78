"""`manage.py bench_verify`: key verification time with 1,000 and 1,000,000 keys.

For `make bench` on the stack's PostgreSQL. Inserts keys for a throwaway org with COPY
(a sample of real keys, the rest random digests, which are indistinguishable to the
index), then times, for the same sample at each size:
- `db`: the database lookup by digest alone (`keycache.load_from_db`, one query);
- `cold`: `authenticate_key(raw)` with no cache entry (format, HMAC, Redis miss, database,
  cache fill);
- `second`: again (the cache entry gains its org part: one small query);
- `warm`: a third time (format, HMAC, one Redis round trip, no query).
Prints one JSON object; the rows are deleted afterwards unless --keep. `--sizes` and
`--sample` make it small (the test that keeps it working runs it so).

The rows are written with every column of the model's table, each from the field's own
default (or the values above), so that a column added to `ApiKey` later cannot break it.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import time
from itertools import pairwise
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection
from django.utils import timezone

from apikeys import keycache
from apikeys.authentication import authenticate_key
from apikeys.keys import display_form, generate_secret, key_digest
from apikeys.models import ApiKey
from orgs.models import Organization

SLUG = "bench-verify"
SIZES = (1_000, 1_000_000)
SAMPLE = 1_000


def _timings(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median_us": round(statistics.median(ordered) * 1e6, 1),
        "p99_us": round(ordered[int(len(ordered) * 0.99) - 1] * 1e6, 1),
        "mean_us": round(statistics.fmean(ordered) * 1e6, 1),
    }


def _table() -> str:
    """The keys' table, quoted."""
    return str(connection.ops.quote_name(ApiKey._meta.db_table))


class Command(BaseCommand):
    help = "Time API-key verification with 1,000 and 1,000,000 keys (PostgreSQL)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--keep", action="store_true", help="keep the inserted keys")
        parser.add_argument(
            "--sizes",
            default=",".join(str(size) for size in SIZES),
            help="the key counts to time at, comma-separated, ascending",
        )
        parser.add_argument(
            "--sample", type=int, default=SAMPLE, help="real keys inserted and timed"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        sample = options["sample"]
        try:
            sizes = [int(size) for size in options["sizes"].split(",")]
        except ValueError:
            raise CommandError("--sizes takes whole numbers, comma-separated.") from None
        ascending = all(small < large for small, large in pairwise(sizes))
        if sample < 1 or len(sizes) < 2 or not ascending or sizes[0] < sample:
            raise CommandError(
                "--sizes takes two or more strictly ascending counts, each at least --sample "
                "(>= 1)."
            )
        if connection.vendor != "postgresql":
            raise CommandError("bench_verify measures PostgreSQL: run it on `make stack`.")
        org, _ = Organization.objects.get_or_create(slug=SLUG, defaults={"name": "Bench verify"})
        self._delete(org)
        secrets = [generate_secret("test") for _ in range(sample)]
        self._copy(org, [(key_digest(s), display_form(s)) for s in secrets], start=0)
        results: dict[str, Any] = {}
        inserted = sample
        for size in sizes:
            if size > inserted:
                self._copy_random(org, size - inserted, start=inserted)
                inserted = size
            with connection.cursor() as cursor:
                cursor.execute(f"ANALYZE {_table()}")
            results[str(size)] = self._measure(secrets)
            self.stderr.write(f"{size:>9,} keys: {json.dumps(results[str(size)])}")
        small, large = results[str(sizes[0])], results[str(sizes[-1])]
        results["db_ratio_large_over_small"] = round(
            large["db"]["median_us"] / small["db"]["median_us"], 3
        )
        results["cold_ratio_large_over_small"] = round(
            large["cold"]["median_us"] / small["cold"]["median_us"], 3
        )
        if not options["keep"]:
            self._delete(org)
            org.delete()
        self.stdout.write(json.dumps(results))

    def _measure(self, secrets: list[str]) -> dict[str, dict[str, float]]:
        order = list(secrets)
        random.shuffle(order)
        digests = [key_digest(s) for s in order]
        for digest in digests[:50]:  # connection and plan warm-up
            keycache.load_from_db(digest)
        db = []
        for digest in digests:
            began = time.perf_counter()
            keycache.load_from_db(digest)
            db.append(time.perf_counter() - began)
        for digest in digests:
            keycache.invalidate_key(digest)
        cold, second, warm = [], [], []
        for raw in order:
            began = time.perf_counter()
            authenticate_key(raw)
            cold.append(time.perf_counter() - began)
        for raw in order:  # the org part of each entry is filled on the second request
            began = time.perf_counter()
            authenticate_key(raw)
            second.append(time.perf_counter() - began)
        for raw in order:
            began = time.perf_counter()
            authenticate_key(raw)
            warm.append(time.perf_counter() - began)
        return {
            "db": _timings(db),
            "cold": _timings(cold),
            "second": _timings(second),
            "warm": _timings(warm),
        }

    def _copy(self, org: Organization, rows: list[tuple[str, str]], *, start: int) -> None:
        """Insert a key of `org` for each (digest, display) with COPY: every column of the
        table, the rest from a key built with the model's defaults."""
        template = ApiKey(org=org, name="bench", environment="test", created_at=timezone.now())
        fields, base = [], []
        for field in ApiKey._meta.local_concrete_fields:
            if field.primary_key or field.generated:
                continue
            value = field.get_db_prep_save(field.pre_save(template, True), connection)
            if hasattr(value, "as_sql"):  # a database default (`db_default`): left to it
                continue
            fields.append(field)
            base.append(value)
        names = [field.column for field in fields]
        attnames = [field.attname for field in fields]
        public_at, digest_at, display_at = (
            attnames.index(name) for name in ("public_id", "digest", "display")
        )
        raw = connection.connection
        if raw is None:
            connection.ensure_connection()
            raw = connection.connection
        columns = ", ".join(connection.ops.quote_name(name) for name in names)
        with (
            raw.cursor() as cursor,
            cursor.copy(f"COPY {_table()} ({columns}) FROM STDIN") as copy,
        ):
            for offset, (digest, display) in enumerate(rows):
                row = list(base)
                row[public_at] = f"key_bench{start + offset}"
                row[digest_at], row[display_at] = digest, display
                copy.write_row(row)

    def _copy_random(self, org: Organization, count: int, *, start: int) -> None:
        self.stderr.write(f"inserting {count:,} keys with COPY ...")
        chunk = 100_000
        for first in range(0, count, chunk):
            rows = [
                (os.urandom(32).hex(), "lk_test_bench\u2026")
                for _ in range(min(chunk, count - first))
            ]
            self._copy(org, rows, start=start + first)

    def _delete(self, org: Organization) -> None:
        with connection.cursor() as cursor:
            cursor.execute(f"DELETE FROM {_table()} WHERE org_id = %s", [org.pk])  # noqa: S608
