"""Fixtures for API tests: keys with chosen scopes and a client that sends them."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client
from django.test.client import RequestFactory

from apikeys.models import ApiKey
from apikeys.scopes import all_scopes
from orgs.models import Organization
from tests.factories import ApiKeyFactory

ALL_ORG_SCOPES = all_scopes()


class ApiClient:
    """Django's test client speaking JSON with an API key: the one API client of the tests.

    Every mutation gets a fresh Idempotency-Key (docs/api.md requires one) unless the call
    names its own (`idempotency_key=`) or the client's `auto_idempotency` is False (tests of
    the idempotency rules themselves)."""

    # False: mutations carry only the Idempotency-Key a call names.
    auto_idempotency = True

    def __init__(self, secret: str | None = None, **headers: str) -> None:
        self.client = Client()
        self.secret = secret
        self.headers: dict[str, str] = dict(headers)
        if secret is not None:
            self.headers["Authorization"] = f"Bearer {secret}"

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | str | None = None,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
        query: dict[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> Any:
        all_headers = {**self.headers, **(headers or {})}
        if not path.startswith("/"):
            path = "/api/v1/" + path
        data: Any
        if raw is not None:
            data = raw
        elif body is not None:
            data = json.dumps(body)
        else:
            data = ""
        method = method.upper()
        if idempotency_key is not None:
            all_headers["Idempotency-Key"] = idempotency_key
        elif (
            self.auto_idempotency
            and method in ("POST", "PATCH", "DELETE")
            and "Idempotency-Key" not in all_headers
        ):
            all_headers["Idempotency-Key"] = uuid.uuid4().hex
        if method in ("GET", "HEAD"):
            handler = self.client.get if method == "GET" else self.client.head
            return handler(path, query or {}, headers=all_headers)
        return self.client.generic(
            method, path, data, content_type=content_type, headers=all_headers
        )

    # The same call under the name the guard tests use.
    call = request

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, body: Any = None, **kwargs: Any) -> Any:
        return self.request("POST", path, body, **kwargs)

    def patch(self, path: str, body: Any = None, **kwargs: Any) -> Any:
        return self.request("PATCH", path, body, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> Any:
        return self.request("DELETE", path, **kwargs)

    def multipart(self, path: str, data: dict[str, Any]) -> Any:
        """A multipart POST (KYC documents), with an Idempotency-Key."""
        return self.client.post(
            "/api/v1/" + path,
            data,
            headers={**self.headers, "Idempotency-Key": uuid.uuid4().hex},
        )


KeyMaker = Callable[..., tuple[ApiKey, str]]


@pytest.fixture
def make_api_key() -> KeyMaker:
    def make(
        org: Organization,
        scopes: list[str] | None = None,
        environment: str = "test",
        name: str = "Integration",
        **extra: Any,
    ) -> tuple[ApiKey, str]:
        return ApiKeyFactory.pair(
            org=org,
            name=name,
            environment=environment,
            scopes=ALL_ORG_SCOPES if scopes is None else scopes,
            **extra,
        )

    return make


@pytest.fixture
def full_key(org: Organization, make_api_key: KeyMaker) -> tuple[ApiKey, str]:
    return make_api_key(org, name="Full access")


@pytest.fixture
def full_client(full_key: tuple[ApiKey, str]) -> ApiClient:
    return ApiClient(full_key[1])


@pytest.fixture
def api_client_with_scopes(org: Organization, make_api_key: KeyMaker) -> Callable[..., ApiClient]:
    def build(
        *scopes: str, environment: str = "test", target_org: Organization | None = None
    ) -> ApiClient:
        _, secret = make_api_key(target_org or org, list(scopes), environment=environment)
        return ApiClient(secret)

    return build


@pytest.fixture
def rf() -> RequestFactory:
    return RequestFactory()


def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    """The response is docs/api.md's error shape with this status and code; returns it."""
    assert response.status_code == status, (response.status_code, response.content[:500])
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert error["code"] == code, error
    assert {"type", "code", "message", "request_id"} <= set(error)
    assert error["request_id"] and error["request_id"] == response["X-Request-Id"]
    assert "Traceback" not in response.content.decode("utf-8", "replace")
    if status == 401:
        assert response["WWW-Authenticate"].startswith("Bearer")
    return error
