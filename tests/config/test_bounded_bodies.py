"""Request bodies are bounded before anything reads them (docs/product.md#reliability,
`MAX_REQUEST_BYTES`).

The declared `Content-Length` decides: a larger body is refused with 413 and never read,
so nothing is parsed or spooled to disk. Views that take document uploads allow
`MAX_UPLOAD_REQUEST_BYTES`.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.http import HttpRequest, HttpResponse
from django.test import Client
from django.test.client import FakePayload
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

from config.middleware import accepts_uploads

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
    assert b"Request too large" in response.content
    # No hop-by-hop header: a WSGI server refuses one from the application.
    assert not response.has_header("Connection")


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


@accepts_uploads
def host_upload_view(request: HttpRequest) -> HttpResponse:
    return HttpResponse(f"{len(request.body)} bytes")


def host_form_view(request: HttpRequest) -> HttpResponse:
    return HttpResponse(f"{len(request.body)} bytes")


urlpatterns = [
    path("host/upload/", csrf_exempt(host_upload_view)),
    path("host/form/", csrf_exempt(host_form_view)),
]


@pytest.mark.urls(__name__)
def test_a_host_function_view_can_take_the_upload_limit(settings: Any) -> None:
    settings.MAX_REQUEST_BYTES = 4096
    settings.MAX_UPLOAD_REQUEST_BYTES = 8192
    body = b"x" * 6000
    client = Client()
    taken = client.post("/host/upload/", body, content_type="application/octet-stream")
    assert taken.status_code == 200 and taken.content == b"6000 bytes"
    refused = client.post("/host/form/", body, content_type="application/octet-stream")
    assert refused.status_code == 413
    assert declared(client, "/host/upload/", 8193).status_code == 413


def test_a_refused_body_is_served_by_the_development_server(live_server: Any) -> None:
    """The 413 passes through a real WSGI server (Django's runserver handler), which
    refuses hop-by-hop headers from the application."""
    import socket
    from urllib.parse import urlsplit

    url = urlsplit(live_server.url)
    assert url.hostname is not None and url.port is not None
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        sock.sendall(
            b"POST /login/ HTTP/1.1\r\nHost: localhost\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n"
            + f"Content-Length: {HUGE}\r\n\r\n".encode()
            + b"email=a"  # the rest never comes: the server must answer without it
        )
        received = b""
        while b"</p>" not in received:
            chunk = sock.recv(4096)
            if not chunk:
                break
            received += chunk
    assert received.startswith(b"HTTP/1.1 413 ")
    assert b"Request too large" in received
