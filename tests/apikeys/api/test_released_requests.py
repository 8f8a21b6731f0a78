"""A request's objects are freed by reference counting when its response is closed, not
left in reference cycles for the garbage collector (ADR 0104)."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from tests.apikeys.api.conftest import ApiClient
from tests.apikeys.helpers import cyclic_garbage

pytestmark = pytest.mark.django_db


def _status(response: Any, expected: int) -> Any:
    assert response.status_code == expected
    return response


def test_a_public_api_request_leaves_no_cycles() -> None:
    assert cyclic_garbage(lambda: _status(Client().get("/api/v1/ping"), 200)) == []


def test_a_keyed_api_request_leaves_no_cycles(full_client: ApiClient) -> None:
    full_client.get("me")  # warm
    assert cyclic_garbage(lambda: _status(full_client.get("me"), 200)) == []


def test_a_refused_api_request_leaves_no_cycles() -> None:
    refused = Client(HTTP_AUTHORIZATION="Bearer lk_test_" + "x" * 38)
    assert cyclic_garbage(lambda: _status(refused.get("/api/v1/me"), 401)) == []


def test_a_page_request_is_emptied_when_its_response_is_closed() -> None:
    """Every request, pages included: sessions, messages, the lazy user and the CSP nonce
    hang on it and hold it in cycles."""
    response = Client().get("/login/")
    assert response.status_code == 200
    assert response.wsgi_request.__dict__ == {}
