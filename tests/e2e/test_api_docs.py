"""The interactive API docs at /api/docs/ render in Chromium from the sidecar's files,
under the site's Content-Security-Policy, without a single violation."""

from __future__ import annotations

from typing import Any

from playwright.sync_api import Page, expect


def test_swagger_ui_renders_without_csp_violations(page: Page, live_server: Any) -> None:
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    response = page.goto(f"{live_server.url}/api/docs/")
    assert response is not None and response.status == 200
    assert "script-src 'self'" in response.headers["content-security-policy"]
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("Latchkey API")
    expect(page.locator(".opblock-summary-path", has_text="/api/v1/api-keys").first).to_be_visible()
    expect(page.locator(".swagger-ui .btn.authorize")).to_be_visible()
    assert page.csp_violations == []  # type: ignore[attr-defined]
    assert all(url.startswith(live_server.url) for url in requested), requested
