"""Errors that teach: every error links to its cause and fix (`doc_url`), and the errors
page explains every code of the table."""

from __future__ import annotations

import re

import pytest
from django.conf import settings
from django.test import Client

from apikeys.errors import ERRORS, FIXES
from tests.apikeys.api.conftest import ApiClient, assert_error

pytestmark = pytest.mark.django_db


def test_every_code_has_a_fix() -> None:
    assert set(FIXES) == set(ERRORS)
    assert all(len(fix) > 20 for fix in FIXES.values())


def test_an_error_links_to_its_section_of_the_errors_page() -> None:
    error = assert_error(ApiClient("lk_test_" + "A" * 38).get("me"), 401, "invalid_api_key")
    assert error["doc_url"] == f"{settings.SITE_URL}/api/docs/errors/#invalid_api_key"
    assert "prefix" in error["message"]  # the message says what to check
    missing = Client().get("/api/v1/me").json()["error"]
    assert missing["doc_url"].endswith("/api/docs/errors/#missing_api_key")


def test_the_errors_page_explains_every_code() -> None:
    page = Client().get("/api/docs/errors/")
    assert page.status_code == 200
    html = page.content.decode()
    anchors = set(re.findall(r'<section class="card" id="([a-z_]+)">', html))
    assert anchors == set(ERRORS)
    assert "New codes may appear" in html
    for code in ("rate_limited", "already_rotated"):
        assert FIXES[code].split("`")[0][:30] in html
