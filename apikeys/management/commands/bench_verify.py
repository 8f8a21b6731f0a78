"""`manage.py bench_verify`: key verification time with 1,000 and 1,000,000 keys.

For `make bench` on the stack's PostgreSQL. Inserts keys for a throwaway org with COPY
(a sample of real keys, the rest random digests, which are indistinguishable to the
index), then times, for the same sample at each size:
- `db`: the database lookup by digest alone (`keycache.load_from_db`, one query);
- `cold`: `authenticate_key(raw)` with no cache entry (format, HMAC, Redis miss, database,
  cache fill);
- `second`: again (the cache entry gains its org part: one small query);
- `warm`: a third time (format, HMAC, one Redis round trip, no query).
Prints one JSON object; the rows are deleted afterwards unless --keep.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection
from django.utils import timezone

from apikeys import keycache
from apikeys.authentication import authenticate_key
from apikeys.keys import display_form, generate_secret, key_digest
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


class Command(BaseCommand):
    help = "Time API-key verification with 1,000 and 1,000,000 keys (PostgreSQL)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--keep", action="store_true", help="keep the inserted keys")

    def handle(self, *args: Any, **options: Any) -> None:
        if connection.vendor != "postgresql":
            raise CommandError("bench_verify measures PostgreSQL: run it on `make stack`.")
        org, _ = Organization.objects.get_or_create(slug=SLUG, defaults={"name": "Bench verify"})
        self._delete(org)
        secrets = [generate_secret("test") for _ in range(SAMPLE)]
        self._copy(org, [(key_digest(s), display_form(s)) for s in secrets], start=0)
        results: dict[str, Any] = {}
        inserted = SAMPLE
        for size in SIZES:
            if size > inserted:
                self._copy_random(org, size - inserted, start=inserted)
                inserted = size
            with connection.cursor() as cursor:
                cursor.execute("ANALYZE apikeys_apikey")
            results[str(size)] = self._measure(secrets)
            self.stderr.write(f"{size:>9,} keys: {json.dumps(results[str(size)])}")
        small, large = results[str(SIZES[0])], results[str(SIZES[-1])]
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
        now = timezone.now()
        raw = connection.connection
        if raw is None:
            connection.ensure_connection()
            raw = connection.connection
        with (
            raw.cursor() as cursor,
            cursor.copy(
                "COPY apikeys_apikey (public_id, org_id, name, environment, scopes, digest, "
                "display, created_at) FROM STDIN"
            ) as copy,
        ):
            for offset, (digest, display) in enumerate(rows):
                copy.write_row(
                    (
                        f"key_bench{start + offset}",
                        org.pk,
                        "bench",
                        "test",
                        "[]",
                        digest,
                        display,
                        now,
                    )
                )

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
            cursor.execute("DELETE FROM apikeys_apikey WHERE org_id = %s", [org.pk])
