"""Helpers for API-key tests: Django's clock frozen (`tests.clock`) and a quick way to issue
keys."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any
from unittest import mock

from django.utils import timezone

from apikeys.models import ApiKey
from orgs.models import Organization
from tests.clock import FrozenClock
from tests.factories import ApiKeyFactory

__all__ = ["FrozenClock", "frozen_clock", "make_key"]


@contextmanager
def frozen_clock(start: datetime | None = None) -> Iterator[FrozenClock]:
    """Freeze the clock at `start` (default: the real present, so signed-in sessions,
    which expire by the same clock, stay valid)."""
    clock = FrozenClock((start or timezone.now().replace(microsecond=0)).timestamp())
    with mock.patch("django.utils.timezone.now", clock.datetime):
        yield clock


def make_key(org: Organization, **overrides: Any) -> tuple[ApiKey, str]:
    return ApiKeyFactory.pair(**{"org": org, "scopes": ["members:read"], **overrides})
