"""Helpers for API-key tests: Django's clock frozen (`tests.clock`) and a quick way to issue
keys."""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any
from unittest import mock

from django.http import HttpRequest, HttpResponseBase
from django.utils import timezone
from rest_framework.request import Request
from rest_framework.views import APIView

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


# What a request leaves behind when its cycles are not broken.
_REQUEST_OBJECTS = (HttpRequest, Request, APIView, HttpResponseBase)


def cyclic_garbage(call: Callable[[], Any]) -> list[str]:
    """Run `call` (a request through the test client, answering its response) with the
    collector off, then answer the request objects it left that only the collector could
    free (kept for inspection with `DEBUG_SAVEALL`). The test client's own cycle on the
    response (`json`, a partial of it) is dropped first."""
    gc.collect()
    gc.disable()
    try:
        call().__dict__.pop("json", None)
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        return sorted(type(o).__name__ for o in gc.garbage if isinstance(o, _REQUEST_OBJECTS))
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
