"""Under /api/ and /gateway/ every answer is the API's error shape, even with DEBUG on:
an API client never gets Django's HTML debug page."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "path", ["/api/admin", "/api", "/api/v2/me", "/api/schema/extra", "/gateway/nope"]
)
def test_unknown_paths_are_json_404_even_with_debug(settings: Any, path: str) -> None:
    settings.DEBUG = True
    response = Client().get(path)
    assert response.status_code == 404
    assert response["Content-Type"].startswith("application/json")
    assert response.json()["error"]["code"] == "not_found"


def test_pages_outside_the_api_keep_django_s_404(settings: Any) -> None:
    settings.DEBUG = False
    response = Client().get("/no-such-page/")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")
