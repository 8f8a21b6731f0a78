"""Helpers for API-key tests: a frozen clock and a quick way to issue keys."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any
from unittest import mock

from django.utils import timezone

from apikeys.models import ApiKey
from orgs.models import Organization
from tests.factories import ApiKeyFactory


class FrozenClock:
    """`django.utils.timezone.now` pinned to a moment that the test moves by hand."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def advance(self, delta: timedelta) -> None:
        self.now += delta

    def __call__(self) -> datetime:
        return self.now


@contextmanager
def frozen_clock(start: datetime | None = None) -> Iterator[FrozenClock]:
    """Freeze the clock at `start` (default: the real present, so signed-in sessions,
    which expire by the same clock, stay valid)."""
    clock = FrozenClock(start or timezone.now().replace(microsecond=0))
    with mock.patch("django.utils.timezone.now", clock):
        yield clock


def make_key(org: Organization, **overrides: Any) -> tuple[ApiKey, str]:
    return ApiKeyFactory.pair(**{"org": org, "scopes": ["members:read"], **overrides})
