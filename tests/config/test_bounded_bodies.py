"""Request bodies are bounded before anything reads them (SPEC 15, `MAX_REQUEST_BYTES`).

The declared `Content-Length` decides: a larger body is refused with 413 and never read,
so nothing is parsed or spooled to disk. Views that take document uploads allow
`MAX_UPLOAD_REQUEST_BYTES`.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django.test.client import FakePayload

pytestmark = pytest.mark.django_db

HUGE = 150 * 1024 * 1024


def declared(client: Client, path: str, length: int, **extra: Any) -> Any:
    """POST `path` declaring `length` bytes while sending only a few: a server that read
    the body would fail on the short stream; one that refuses first never notices."""
    return client.generic(
        "POST",
        path,
        b"",
        content_type="multipart/form-data; boundary=xyz",
        **{"CONTENT_LENGTH": str(length), "wsgi.input": FakePayload(b"--xyz--"), **extra},
    )


def test_a_huge_body_to_the_sign_in_page_is_refused_unread() -> None:
    response = declared(Client(), "/login/", HUGE)
    assert response.status_code == 413
    assert response["Connection"] == "close"
    assert b"Request too large" in response.content


def test_the_api_refuses_a_huge_body_in_its_error_shape(org: Any) -> None:
    response = declared(Client(), "/api/v1/members", HUGE, HTTP_AUTHORIZATION="Bearer x")
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"
    assert response["X-Request-Id"].startswith("req_")


def test_the_limit_is_the_setting(settings: Any) -> None:
    settings.MAX_REQUEST_BYTES = 4096
    assert declared(Client(), "/login/", 4097).status_code == 413
    # At the limit the body is read as usual (a sign-in form with no email: 400).
    small = Client().post("/login/", {"email": ""})
    assert small.status_code == 400


def test_upload_views_allow_the_upload_limit_and_no_more(settings: Any) -> None:
    settings.MAX_REQUEST_BYTES = 4096
    settings.MAX_UPLOAD_REQUEST_BYTES = 8192
    # The KYC endpoint accepts uploads: over MAX_REQUEST_BYTES passes the bound (and is
    # then refused by the pipeline for its missing key), over the upload limit does not.
    passed = declared(Client(), "/api/v1/kyc", 8000)
    assert passed.status_code == 401
    refused = declared(Client(), "/api/v1/kyc", 8193)
    assert refused.status_code == 413
    # Other endpoints keep the small limit.
    assert declared(Client(), "/api/v1/members", 8000).status_code == 413


def test_a_malformed_content_length_is_400() -> None:
    response = declared(Client(), "/api/v1/members", 0, CONTENT_LENGTH="12x")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "validation_error"


def test_the_default_upload_limit_fits_every_document_at_its_largest(settings: Any) -> None:
    documents = settings.KYC_MAX_DOCUMENTS * settings.KYC_DOCUMENT_MAX_BYTES
    assert documents * 4 // 3 <= settings.MAX_UPLOAD_REQUEST_BYTES  # base64 in JSON
    assert settings.MAX_REQUEST_BYTES < 2 * 1024 * 1024
