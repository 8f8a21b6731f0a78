"""A request's objects are freed by reference counting when its response is closed, not
left in reference cycles for the garbage collector (ADR 0104)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

import pytest
from django.core.files import uploadhandler
from django.core.files.uploadedfile import TemporaryUploadedFile
from django.test import Client, override_settings

from apikeys import api
from tests.apikeys.api.conftest import ApiClient
from tests.apikeys.helpers import cyclic_garbage
from tests.platform_admin.conftest import KYC_DATA, upload

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


@override_settings(FILE_UPLOAD_MAX_MEMORY_SIZE=16)
def test_uploaded_files_are_closed_and_deleted_when_the_response_is_closed(
    api_client_with_scopes: Callable[..., ApiClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The request is emptied only after its uploaded files are closed (a temporary file
    on disk is deleted when closed): emptying it first would leave them open."""
    spooled: list[TemporaryUploadedFile] = []

    class Watched(TemporaryUploadedFile):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            spooled.append(self)

    monkeypatch.setattr(uploadhandler, "TemporaryUploadedFile", Watched)
    api = api_client_with_scopes("kyc:write")
    document = upload("scan.jpg", b"\xff\xd8\xff\xe0" + b"0" * 4096, "image/jpeg")
    response = api.multipart("kyc", {**KYC_DATA, "documents": [document]})
    assert response.status_code == 201, response.content[:500]
    assert response.wsgi_request.__dict__ == {}
    [spool] = spooled
    assert spool.closed
    assert not os.path.exists(spool.temporary_file_path())


def test_a_page_request_is_emptied_when_its_response_is_closed() -> None:
    """Every request, pages included: sessions, messages, the lazy user and the CSP nonce
    hang on it and hold it in cycles."""
    response = Client().get("/login/")
    assert response.status_code == 200
    assert response.wsgi_request.__dict__ == {}


@pytest.mark.parametrize("keyed", [False, True], ids=["ping", "me"])
def test_a_request_answered_500_leaves_no_cycles(
    keyed: bool, full_client: ApiClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fault in a handler is answered 500 `internal_error`, and its request freed by
    reference counting all the same. The two log records of a 500 keep the request (the
    API's, through the traceback; Django's `django.request`, in its `extra`): the test's
    log capture would keep every request alive and hide a cycle, so both loggers are
    switched off here (the API's record is checked in test_errors.py)."""

    def fault(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a fault in the handler")

    view = api.MeApi if keyed else api.PingApi
    monkeypatch.setattr(view, "get", fault)
    for name in ("apikeys.api", "django.request"):
        monkeypatch.setattr(logging.getLogger(name), "disabled", True)

    def answer() -> Any:
        response = full_client.get("me") if keyed else Client().get("/api/v1/ping")
        assert response.status_code == 500
        assert response.json()["error"]["code"] == "internal_error"
        return response

    answer()  # warm
    assert cyclic_garbage(answer) == []
