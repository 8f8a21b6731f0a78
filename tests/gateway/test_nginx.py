"""Debian's nginx with the shipped docs/gateway/nginx.conf in front of a small upstream:
the client sees the API's statuses, bodies and headers; the upstream gets X-Latchkey-*."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from django.test import override_settings

from apikeys.services import apikey_create, apikey_revoke
from orgs.actors import Actor
from orgs.models import Organization
from tests.apikeys.guards.conftest import free_port, set_limits
from tests.programs import ENVSUBST, NGINX, require

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ROOT / "tests" / "apikeys" / "catalogues" / "product.toml"

pytestmark = pytest.mark.django_db(transaction=True)


class Upstream(BaseHTTPRequestHandler):
    seen: list[dict[str, str]] = []

    def _answer(self) -> None:
        Upstream.seen.append({k.lower(): v for k, v in self.headers.items()})
        body = b'{"upstream": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def upstream() -> Iterator[str]:
    Upstream.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def gateway(live_server: Any, upstream: str) -> Iterator[str]:
    nginx = require(NGINX)
    envsubst = require(ENVSUBST)
    port = free_port()
    prefix = Path(tempfile.mkdtemp(prefix="latchkey-nginx-"))
    (prefix / "temp").mkdir()
    latchkey = "http://127.0.0.1:" + live_server.url.rsplit(":", 1)[1]
    rendered = subprocess.run(
        [envsubst, "${LATCHKEY_ORIGIN} ${UPSTREAM_ORIGIN} ${LISTEN_PORT}"],
        input=(ROOT / "docs" / "gateway" / "nginx.conf").read_text(),
        env={"LATCHKEY_ORIGIN": latchkey, "UPSTREAM_ORIGIN": upstream, "LISTEN_PORT": str(port)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    conf = prefix / "nginx.conf"
    conf.write_text(rendered.replace("listen " + str(port), f"listen 127.0.0.1:{port}"))
    process = subprocess.Popen(
        [nginx, "-p", str(prefix), "-c", str(conf), "-g", "daemon off;"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = process.stdout.read().decode() if process.stdout else ""
            pytest.fail(f"nginx exited: {output}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    try:
        with override_settings(LATCHKEY_CATALOGUE=str(PRODUCT)):
            yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)
        shutil.rmtree(prefix, ignore_errors=True)


def call(url: str, method: str = "GET", **headers: str) -> tuple[int, dict[str, str], Any]:
    request = urllib.request.Request(
        url, method=method, headers=headers, data=b"" if method == "POST" else None
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers.items()), json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers.items()), json.loads(error.read())


def test_through_nginx_the_client_sees_the_apis_answers_and_the_upstream_the_caller(
    gateway: str, org: Organization
) -> None:
    set_limits(org, per_minute=3, burst=100, monthly=0)
    key, secret = apikey_create(
        actor=Actor.system(), org=org, name="Svc", environment="test", scopes=["payments:read"]
    )

    status, headers, body = call(gateway + "/v1/payments")
    assert status == 401
    assert body["error"]["code"] == "missing_api_key"
    assert headers["WWW-Authenticate"].startswith("Bearer")
    assert headers["X-Latchkey-Status"] == "401"

    status, headers, body = call(
        gateway + "/v1/payments/p1?expand=x", **{"X-Product-Key": secret, "X-Product-Actor": "u7"}
    )
    assert status == 200 and body == {"upstream": True}
    seen = Upstream.seen[-1]
    assert seen["x-latchkey-key-id"] == key.public_id
    assert seen["x-latchkey-org-id"] == org.public_id
    assert seen["x-latchkey-org-slug"] == org.slug
    assert seen["x-latchkey-environment"] == "test"
    assert seen["x-latchkey-scopes"] == "payments:read"
    assert seen["x-latchkey-actor-id"] == "u7"
    assert headers["X-RateLimit-Remaining"] == "2"

    status, headers, body = call(
        gateway + "/v1/payments/p1/refund", "POST", **{"X-Product-Key": secret}
    )
    assert status == 403
    assert body["error"]["code"] == "insufficient_scope"
    assert body["error"]["required_scope"] == "payments:write"

    status, headers, body = call(gateway + "/v1/customers", **{"X-Product-Key": secret})
    assert status == 404 and body["error"]["code"] == "route_not_found"

    # The two refusals above were not counted: two more requests fit in the minute.
    for _ in range(2):
        status, headers, body = call(gateway + "/v1/payments", **{"X-Product-Key": secret})
        assert status == 200
    status, headers, body = call(gateway + "/v1/payments", **{"X-Product-Key": secret})
    assert status == 429
    assert body["error"]["code"] == "rate_limited"
    assert int(headers["Retry-After"]) >= 1
    assert headers["X-RateLimit-Remaining"] == "0"

    # A client cannot pose as Latchkey to the upstream.
    set_limits(org, per_minute=0, burst=0, monthly=0)
    call(gateway + "/v1/payments", **{"X-Product-Key": secret, "X-Latchkey-Org-Id": "org_fake"})
    assert Upstream.seen[-1]["x-latchkey-org-id"] == org.public_id

    apikey_revoke(key=key, actor=Actor.system())
    status, headers, body = call(gateway + "/v1/payments", **{"X-Product-Key": secret})
    assert status == 401 and body["error"]["code"] == "api_key_revoked"
    assert body["error"]["request_id"] == headers["X-Request-Id"]


def test_through_nginx_an_allowlist_sees_the_client_nginx_saw(
    gateway: str, org: Organization
) -> None:
    """nginx appends the address it saw to X-Forwarded-For; with TRUSTED_PROXY_HOPS=1
    that is the client's, and what the client itself put in the header changes nothing."""
    set_limits(org, per_minute=0, burst=0, monthly=0)
    _, inside = apikey_create(
        actor=Actor.system(),
        org=org,
        name="Local",
        environment="test",
        scopes=["payments:read"],
        allowed_ips=["127.0.0.0/8"],
    )
    _, outside = apikey_create(
        actor=Actor.system(),
        org=org,
        name="Office",
        environment="test",
        scopes=["payments:read"],
        allowed_ips=["198.51.100.0/24"],
    )
    with override_settings(TRUSTED_PROXY_HOPS=1):
        status, _, body = call(gateway + "/v1/payments", **{"X-Product-Key": inside})
        assert status == 200 and body == {"upstream": True}
        status, headers, body = call(
            gateway + "/v1/payments",
            **{"X-Product-Key": outside, "X-Forwarded-For": "198.51.100.7"},
        )
        assert status == 403 and body["error"]["code"] == "ip_not_allowed"
        assert "127.0.0.1" in body["error"]["message"]
        assert headers["X-Latchkey-Status"] == "403"
