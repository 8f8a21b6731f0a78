"""Leak reports (docs/secret-scanning.md): `POST leaked-keys` from anyone, GitHub's signed
secret scanning alerts, and the scanner rules of the doc, held to the real key format."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import math
import re
import sys
import threading
import tomllib
import types
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.conf import settings as django_settings
from django.core import mail
from django.test import Client

from accounts.models import PlatformRole, User
from apikeys import keys, leaks
from apikeys.models import ApiKey
from apikeys.services import apikey_delete, apikey_revoke, system_apikey_create
from orgs.actors import Actor
from orgs.models import AuditEvent, KycStatus, Organization, Role
from tests.apikeys.api.conftest import KeyMaker, assert_error
from tests.clock import FrozenClock
from tests.factories import MembershipFactory, UserFactory
from webhooks.models import WebhookDelivery
from webhooks.services import endpoint_create

pytestmark = pytest.mark.django_db

REPORT = "/api/v1/leaked-keys"
GITHUB = "/api/v1/secret-scanning/github"
DOC = Path(django_settings.BASE_DIR) / "docs" / "secret-scanning.md"
# How GitHub's keys are kept (apikeys/leaks.py): fresh for an hour, kept for a week, and an
# unknown identifier fetches them again at most once per 15 minutes.
FIFTEEN_MINUTES, HOUR, WEEK = 15 * 60, 60 * 60, 7 * 24 * 60 * 60


def report(body: Any, *, ip: str = "203.0.113.7", raw: bytes | None = None, **extra: Any) -> Any:
    """A report as a stranger sends it: no key, no Idempotency-Key."""
    data = raw if raw is not None else json.dumps(body)
    return Client().post(
        REPORT, data=data, content_type="application/json", REMOTE_ADDR=ip, **extra
    )


def leaked_events() -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action="api_key.leaked"))


def exposed_mail() -> list[Any]:
    return [m for m in mail.outbox if "exposed" in m.subject]


def live_key(org: Organization, make_api_key: KeyMaker) -> tuple[ApiKey, str]:
    """A live key: its organisation's KYC approved first, as the product requires."""
    org.kyc_status = KycStatus.APPROVED
    org.save(update_fields=["kyc_status"])
    return make_api_key(org, environment="live")


@pytest.fixture
def endpoint(org: Organization, settings: Any) -> None:
    settings.WEBHOOK_ALLOW_PRIVATE = True
    endpoint_create(
        org=org, url="http://127.0.0.1:9/hooks", actor=Actor.system()
    )  # never reached in tests


@pytest.fixture
def system_secret(db: None) -> str:
    staff = UserFactory.create(
        email="root@latchkey.test", platform_role=PlatformRole.PLATFORM_OWNER
    )
    _, secret = system_apikey_create(
        name="Platform bot", scopes=["platform_organizations:read"], actor=Actor.for_user(staff)
    )
    return secret


# ---- POST leaked-keys ---------------------------------------------------------------------


def test_a_reported_live_key_is_revoked_audited_announced_and_its_admins_told(
    org: Organization,
    owner: User,
    admin_user: User,
    endpoint: None,
    make_api_key: KeyMaker,
    django_capture_on_commit_callbacks: Any,
) -> None:
    member = MembershipFactory.create(org=org, role=Role.MEMBER).user
    key, secret = live_key(org, make_api_key)
    found = "https://gist.example.com/someone/abc"
    with django_capture_on_commit_callbacks(execute=True):
        response = report({"keys": [secret], "url": found})
    assert response.status_code == 202
    assert response.json() == {"received": 1}
    key.refresh_from_db()
    assert key.revoked_at is not None
    (event,) = leaked_events()
    assert event.target_id == key.public_id
    assert event.details["source"] == "report" and event.details["url"] == found
    (delivery,) = WebhookDelivery.objects.filter(event_type="api_key.leaked")
    assert delivery.payload["data"]["api_key"]["id"] == key.public_id
    assert delivery.payload["data"]["url"] == found
    told = sorted(address for message in exposed_mail() for address in message.to)
    assert told == sorted([owner.email, admin_user.email])
    assert member.email not in told
    # The revoked key no longer opens the API.
    me = Client().get("/api/v1/me", headers={"Authorization": f"Bearer {secret}"})
    assert_error(me, 401, "api_key_revoked")


def test_the_answer_is_the_same_whatever_the_strings_are(
    org: Organization,
    other_org: Organization,
    make_api_key: KeyMaker,
    system_secret: str,
) -> None:
    live, live_secret = make_api_key(org)
    revoked, revoked_secret = make_api_key(org, name="Old")
    apikey_revoke(key=revoked, actor=Actor.system())
    deleted, deleted_secret = make_api_key(org, name="Gone")
    apikey_delete(key=deleted, actor=Actor.system())
    foreign, foreign_secret = make_api_key(other_org, name="Globex CI")
    well_formed_unknown = keys.generate_secret("live")
    bad_checksum = live_secret[:-1] + ("A" if live_secret[-1] != "A" else "B")
    reports = [
        ["not a key at all"],
        [well_formed_unknown],
        [bad_checksum],
        [revoked_secret],
        [deleted_secret],
        [system_secret],
        [foreign_secret],
        [live_secret],
    ]
    responses = [
        report({"keys": strings}, ip=f"198.51.100.{i}") for i, strings in enumerate(reports)
    ]
    assert {r.status_code for r in responses} == {202}
    assert {r.content for r in responses} == {b'{"received":1}'}
    shapes = {
        tuple(sorted((k, v) for k, v in r.headers.items() if k.lower() != "x-request-id"))
        for r in responses
    }
    assert len(shapes) == 1, shapes
    for key in (live, foreign):
        key.refresh_from_db()
        assert key.revoked_at is not None
    # Only the two working keys were reported; the revoked and deleted ones were not again.
    assert sorted(e.target_id for e in leaked_events()) == sorted(
        [live.public_id, foreign.public_id]
    )
    system = ApiKey.objects.get(digest=keys.key_digest(system_secret))
    assert system.revoked_at is None  # system keys are for platform staff to revoke


def test_a_report_sent_with_a_dashboard_session_is_still_a_strangers(
    org: Organization, owner: User, make_api_key: KeyMaker
) -> None:
    from tests.conftest import signed_in_client

    key, secret = make_api_key(org)
    browser = signed_in_client(owner)
    response = browser.post(
        REPORT, data=json.dumps({"keys": [secret]}), content_type="application/json"
    )
    assert response.status_code == 202 and response.content == b'{"received":1}'
    assert "Vary" not in response.headers  # the session was not even read
    (event,) = leaked_events()
    assert event.actor_type == "system" and event.actor_user is None
    assert event.target_id == key.public_id


def test_a_mixed_report_reports_only_its_working_keys(
    org: Organization, make_api_key: KeyMaker
) -> None:
    first, first_secret = make_api_key(org, name="One")
    second, second_secret = make_api_key(org, name="Two")
    untouched, _ = make_api_key(org, name="Three")
    strings = ["junk", first_secret, keys.generate_secret("test"), second_secret, first_secret]
    response = report({"keys": strings, "url": ""})
    assert response.status_code == 202 and response.json() == {"received": 5}
    for key in (first, second, untouched):
        key.refresh_from_db()
    assert first.revoked_at is not None and second.revoked_at is not None
    assert untouched.revoked_at is None
    assert len(leaked_events()) == 2  # the duplicate string changed nothing


def test_a_report_needs_no_idempotency_key_and_a_repeat_does_nothing_more(
    org: Organization, make_api_key: KeyMaker
) -> None:
    _, secret = make_api_key(org)
    assert report({"keys": [secret]}).status_code == 202
    assert report({"keys": [secret]}).content == b'{"received":1}'
    assert len(leaked_events()) == 1


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"keys": ["x"] * 101}, "keys"),
        ({"keys": []}, "keys"),
        ({"keys": "lk_live_abc"}, "keys"),
        ({"keys": {"a": "b"}}, "keys"),
        ({"keys": [7]}, "keys.0"),
        ({"keys": ["x" * 201]}, "keys.0"),
        ({"keys": ["x"], "url": 5}, "url"),
        ({"keys": ["x"], "url": "u" * 2049}, "url"),
        ({"keys": ["x"], "source": "me"}, "source"),
        ({}, "keys"),
        (["lk_live_abc"], ""),
    ],
)
def test_a_malformed_report_is_a_validation_error(body: Any, param: str) -> None:
    error = assert_error(report(body), 400, "validation_error")
    assert error.get("param", "") == param


def test_a_report_that_is_not_json_is_refused_in_the_error_shape() -> None:
    assert_error(report(None, raw=b"{nope"), 400, "malformed_json")
    response = Client().post(REPORT, data="keys=x", content_type="text/plain")
    assert_error(response, 415, "unsupported_media_type")
    assert_error(Client().get(REPORT), 405, "method_not_allowed")


def test_reports_are_throttled_per_client_ip(settings: Any, org: Organization) -> None:
    settings.LEAK_REPORT_RATE = "3/h"
    for _ in range(3):
        assert report({"keys": ["x"]}, ip="192.0.2.1").status_code == 202
    error = assert_error(report({"keys": ["x"]}, ip="192.0.2.1"), 429, "rate_limited")
    assert "leak reports" in error["message"]
    limited = report({"keys": ["x"]}, ip="192.0.2.1")
    assert 1 <= int(limited["Retry-After"]) <= 3600
    # An invalid report counts too: probing is throttled like reporting.
    assert_error(report({"nope": 1}, ip="192.0.2.1"), 429, "rate_limited")
    assert report({"keys": ["x"]}, ip="192.0.2.2").status_code == 202


def test_the_throttle_counts_the_forwarded_address_only_behind_a_trusted_proxy(
    settings: Any,
) -> None:
    settings.LEAK_REPORT_RATE = "1/h"
    proxy = "10.0.0.1"
    assert report({"keys": ["x"]}, ip=proxy, HTTP_X_FORWARDED_FOR="192.0.2.10").status_code == 202
    # Without a trusted proxy the forwarded header is ignored: same client, throttled.
    second = report({"keys": ["x"]}, ip=proxy, HTTP_X_FORWARDED_FOR="192.0.2.11")
    assert_error(second, 429, "rate_limited")
    settings.TRUSTED_PROXY_HOPS = 1
    for client in ("192.0.2.12", "192.0.2.13"):
        response = report({"keys": ["x"]}, ip=proxy, HTTP_X_FORWARDED_FOR=client)
        assert response.status_code == 202


def test_the_throttle_counts_an_ipv6_client_per_64_network(settings: Any) -> None:
    settings.LEAK_REPORT_RATE = "2/h"
    assert report({"keys": ["x"]}, ip="2001:db8:1:2::1").status_code == 202
    assert report({"keys": ["x"]}, ip="2001:db8:1:2:ffff:ffff:ffff:fffe").status_code == 202
    # Another address of the same /64 is the same client: no fresh count per address.
    assert_error(report({"keys": ["x"]}, ip="2001:db8:1:2::abcd"), 429, "rate_limited")
    assert report({"keys": ["x"]}, ip="2001:db8:1:3::1").status_code == 202


def test_the_throttle_counts_an_ipv4_mapped_address_as_its_ipv4_address(settings: Any) -> None:
    settings.LEAK_REPORT_RATE = "1/h"
    assert report({"keys": ["x"]}, ip="192.0.2.50").status_code == 202
    assert_error(report({"keys": ["x"]}, ip="::ffff:192.0.2.50"), 429, "rate_limited")
    assert report({"keys": ["x"]}, ip="192.0.2.51").status_code == 202


@pytest.mark.parametrize(
    ("address", "counted_as"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("2001:DB8:1:2::", "2001:db8:1:2::/64"),
        ("fe80::1%eth0", "fe80::/64"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("::1", "::/64"),
        ("not an address", "not an address"),
        ("", "unknown"),
        (None, "unknown"),
    ],
)
def test_the_throttle_address_of_a_client(address: str | None, counted_as: str) -> None:
    assert leaks.throttle_address(address) == counted_as


def test_a_report_of_a_flag_only_organisation_leaves_the_key_working(
    org: Organization, make_api_key: KeyMaker
) -> None:
    from orgs.models import LeakResponse

    org.leak_response = LeakResponse.FLAG
    org.save(update_fields=["leak_response"])
    key, secret = make_api_key(org)
    assert report({"keys": [secret]}).status_code == 202
    key.refresh_from_db()
    assert key.revoked_at is None and key.leaked_at is not None
    assert len(leaked_events()) == 1


def fail_the_first_report(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """`apikey_report_leaked` raising for the first key it is given (as a database error
    would); returns the public ids of the keys it was given."""
    real = leaks.apikey_report_leaked
    given: list[str] = []

    def flaky(*, key: ApiKey, **kwargs: Any) -> bool:
        given.append(key.public_id)
        if len(given) == 1:
            raise RuntimeError("the database went away")
        return real(key=key, **kwargs)

    monkeypatch.setattr(leaks, "apikey_report_leaked", flaky)
    return given


def assert_logged_failure(caplog: pytest.LogCaptureFixture, key: ApiKey, *secrets: str) -> None:
    (record,) = [r for r in caplog.records if r.name == "apikeys.leaks"]
    assert record.levelno == logging.ERROR and record.exc_info is not None
    assert key.public_id in record.getMessage()
    for secret in secrets:
        assert secret not in caplog.text


def test_a_report_that_fails_for_one_key_still_reports_the_others(
    org: Organization,
    make_api_key: KeyMaker,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    first, first_secret = make_api_key(org, name="One")
    second, second_secret = make_api_key(org, name="Two")
    given = fail_the_first_report(monkeypatch)
    with caplog.at_level(logging.ERROR, logger="apikeys.leaks"):
        response = report({"keys": [first_secret, "noise", second_secret]})
    assert response.status_code == 202 and response.content == b'{"received":3}'
    assert given == [first.public_id, second.public_id]
    first.refresh_from_db()
    second.refresh_from_db()
    assert first.revoked_at is None and second.revoked_at is not None
    assert [e.target_id for e in leaked_events()] == [second.public_id]
    assert_logged_failure(caplog, first, first_secret, second_secret)


# ---- POST secret-scanning/github ----------------------------------------------------------


@dataclass
class Signer:
    identifier: str
    private_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )

    @property
    def public_pem(self) -> str:
        return (
            self.private_key.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )

    def entry(self) -> dict[str, Any]:
        return {"key_identifier": self.identifier, "key": self.public_pem, "is_current": True}

    def sign(self, body: bytes) -> str:
        signature = self.private_key.sign(body, ec.ECDSA(hashes.SHA256()))
        return base64.b64encode(signature).decode()


@pytest.fixture
def github(settings: Any) -> Signer:
    signer = Signer(identifier="90a421169f0a406205f1563a953312f0be898d3c7b6c06b681aa86a874555f4a")
    settings.GITHUB_SECRET_SCANNING_KEYS = [signer.entry()]
    return signer


def alert(
    matches: Any,
    signer: Signer | None,
    *,
    body: bytes | None = None,
    signed_body: bytes | None = None,
    identifier: str | None = None,
    signature: str | None = None,
) -> Any:
    """GitHub's request: the raw JSON body, its key identifier and signature."""
    raw = body if body is not None else json.dumps(matches).encode()
    headers = {}
    if signer is not None:
        headers["Github-Public-Key-Identifier"] = identifier or signer.identifier
        headers["Github-Public-Key-Signature"] = signature or signer.sign(
            signed_body if signed_body is not None else raw
        )
    return Client().generic("POST", GITHUB, raw, content_type="application/json", headers=headers)


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def match(
    token: str, url: str = "https://github.com/octocat/hello/blob/abc/.env"
) -> dict[str, str]:
    return {"token": token, "type": "latchkey_api_key", "url": url, "source": "content"}


def test_a_signed_alert_reports_our_key_and_answers_in_githubs_format(
    github: Signer,
    org: Organization,
    owner: User,
    endpoint: None,
    make_api_key: KeyMaker,
    django_capture_on_commit_callbacks: Any,
) -> None:
    key, secret = live_key(org, make_api_key)
    stranger = "lk_live_" + "x" * 38
    place = "https://github.com/octocat/hello/blob/abc/.env"
    with django_capture_on_commit_callbacks(execute=True):
        response = alert([match(secret, place), match(stranger)], github)
    assert response.status_code == 200, response.content
    assert response.json() == [
        {"token_hash": sha256(secret), "token_type": "latchkey_api_key", "label": "true_positive"},
        {
            "token_hash": sha256(stranger),
            "token_type": "latchkey_api_key",
            "label": "false_positive",
        },
    ]
    assert secret not in response.content.decode()
    key.refresh_from_db()
    assert key.revoked_at is not None
    (event,) = leaked_events()
    assert event.details["source"] == "github" and event.details["url"] == place
    assert WebhookDelivery.objects.filter(event_type="api_key.leaked").count() == 1
    assert [m.to for m in exposed_mail()] == [[owner.email]]


def test_an_already_revoked_key_is_still_ours_and_reported_only_once(
    github: Signer, org: Organization, make_api_key: KeyMaker
) -> None:
    key, secret = make_api_key(org)
    assert alert([match(secret)], github).json()[0]["label"] == "true_positive"
    again = alert([match(secret, "https://github.com/elsewhere")], github)
    assert again.json()[0]["label"] == "true_positive"
    revoked, revoked_secret = make_api_key(org, name="Old")
    apikey_revoke(key=revoked, actor=Actor.system())
    assert alert([match(revoked_secret)], github).json()[0]["label"] == "true_positive"
    assert [e.target_id for e in leaked_events()] == [key.public_id]


def test_an_alert_that_fails_for_one_key_still_reports_the_others(
    github: Signer,
    org: Organization,
    make_api_key: KeyMaker,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    first, first_secret = make_api_key(org, name="One")
    second, second_secret = make_api_key(org, name="Two")
    given = fail_the_first_report(monkeypatch)
    with caplog.at_level(logging.ERROR, logger="apikeys.leaks"):
        response = alert([match(first_secret), match("noise"), match(second_secret)], github)
    assert response.status_code == 200, response.content
    assert response.json() == [
        {"token_hash": sha256(token), "token_type": "latchkey_api_key", "label": label}
        for token, label in (
            (first_secret, "true_positive"),
            ("noise", "false_positive"),
            (second_secret, "true_positive"),
        )
    ]
    assert given == [first.public_id, second.public_id]
    first.refresh_from_db()
    second.refresh_from_db()
    assert first.revoked_at is None and second.revoked_at is not None
    assert_logged_failure(caplog, first, first_secret, second_secret)


@pytest.mark.parametrize(
    "tamper",
    ["other_key", "altered_body", "unknown_identifier", "garbage_signature", "not_der"],
)
def test_an_alert_that_does_not_verify_is_refused_and_changes_nothing(
    tamper: str,
    github: Signer,
    org: Organization,
    make_api_key: KeyMaker,
    django_assert_num_queries: Any,
) -> None:
    key, secret = make_api_key(org)
    body = json.dumps([match(secret)]).encode()
    forger = Signer(identifier=github.identifier)
    tampered: dict[str, dict[str, Any]] = {
        "other_key": {"signature": forger.sign(body)},
        "altered_body": {"signed_body": body.replace(b"content", b"commit")},
        "unknown_identifier": {"identifier": "f" * 64},
        "garbage_signature": {"signature": "not base64 at all!"},
        "not_der": {"signature": base64.b64encode(b"\x30\x02\x01").decode()},
    }
    kwargs = tampered[tamper]
    with django_assert_num_queries(0):  # verification comes before any database work
        response = alert(None, github, body=body, **kwargs)
    assert_error(response, 401, "invalid_signature")
    key.refresh_from_db()
    assert key.revoked_at is None and not leaked_events()


def test_an_alert_without_its_signature_headers_is_refused(
    github: Signer, org: Organization, make_api_key: KeyMaker
) -> None:
    key, secret = make_api_key(org)
    assert_error(alert([match(secret)], None), 401, "invalid_signature")
    body = json.dumps([match(secret)]).encode()
    only_identifier = Client().generic(
        "POST",
        GITHUB,
        body,
        content_type="application/json",
        headers={"Github-Public-Key-Identifier": github.identifier},
    )
    assert_error(only_identifier, 401, "invalid_signature")
    key.refresh_from_db()
    assert key.revoked_at is None


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b'{"token": "x"}', "validation_error"),
        (b"[1]", "validation_error"),
        (b'[{"type": "latchkey_api_key"}]', "validation_error"),
        (b'[{"token": 5}]', "validation_error"),
        (b"[{", "malformed_json"),
        (json.dumps([{"token": "x"}] * 1001).encode(), "validation_error"),
    ],
)
def test_a_signed_but_malformed_alert_is_a_400(github: Signer, body: bytes, code: str) -> None:
    assert_error(alert(None, github, body=body), 400, code)


def test_a_signed_alert_takes_unknown_fields_and_odd_tokens(github: Signer) -> None:
    body = json.dumps([{"token": " \u0000odd", "added_later": 1}, {"token": ""}]).encode()
    response = alert(None, github, body=body)
    assert response.status_code == 200
    assert [entry["label"] for entry in response.json()] == ["false_positive"] * 2
    assert response.json()[1] == {
        "token_hash": sha256(""),
        "token_type": "",
        "label": "false_positive",
    }


# ---- both endpoints answer as the OpenAPI document says ----------------------------------


def test_both_endpoints_answer_as_documented(
    github: Signer, org: Organization, make_api_key: KeyMaker, settings: Any
) -> None:
    """Known-good calls and their refusals conform to /api/schema/ (statuses, shapes,
    headers), as tests/apikeys/api/test_schemathesis.py checks for the other endpoints."""
    import schemathesis

    from tests.apikeys.api.test_schema import _Request, _Response, _validator
    from tests.apikeys.api.test_schemathesis import CHECKS
    from tests.wsgi import application

    settings.LEAK_REPORT_RATE = "2/h"
    _, secret = make_api_key(org)
    schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", application)
    operation = schema[REPORT]["POST"]
    cases: list[tuple[Any, int]] = [
        ({"keys": [secret, "noise"], "url": "https://example.com/paste"}, 202),
        ({"keys": [secret], "extra": True}, 400),
        ({"keys": [secret]}, 429),
    ]
    for body, expected in cases:
        response = operation.Case(body=body).call_and_validate(checks=CHECKS)
        assert response.status_code == expected, response.text[:300]

    document = Client().get("/api/schema/?format=json").json()
    validator = _validator(document)
    _, other_secret = make_api_key(org, name="Other")
    for answer, expected in (
        (alert([match(other_secret), match("noise")], github), 200),
        (alert([match(other_secret)], None), 401),
        (alert(None, github, body=b"{}"), 400),
    ):
        assert answer.status_code == expected, answer.content
        validator.validate_response(_Request("POST", GITHUB), _Response(answer))


# ---- GitHub's keys fetched from GITHUB_SECRET_SCANNING_KEYS_URL ------------------------------


class KeysServer:
    """GitHub's keys document on 127.0.0.1, counting the times it is fetched."""

    def __init__(self) -> None:
        self.document: dict[str, Any] = {"public_keys": []}
        self.status = 200
        self.hits = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.hits += 1
                body = json.dumps(server.document).encode()
                self.send_response(server.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = (
            f"http://127.0.0.1:{self.httpd.server_address[1]}/meta/public_keys/secret_scanning"
        )
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FrozenClock:
    """The wall clock `apikeys.leaks` reads (`_now`), moved by the test."""
    clock = FrozenClock()
    monkeypatch.setattr(leaks, "_now", clock)
    return clock


@pytest.fixture
def keys_server(settings: Any) -> Iterator[KeysServer]:
    server = KeysServer()
    settings.GITHUB_SECRET_SCANNING_KEYS = []
    settings.GITHUB_SECRET_SCANNING_KEYS_URL = server.url
    leaks._shared.clear_local()
    yield server
    server.close()
    leaks._shared.clear_local()


def test_keys_are_fetched_from_the_url_and_cached(
    keys_server: KeysServer, org: Organization, make_api_key: KeyMaker
) -> None:
    signer = Signer(identifier="a" * 64)
    keys_server.document = {"public_keys": [signer.entry(), {"key_identifier": "junk", "key": "x"}]}
    key, secret = make_api_key(org)
    response = alert([match(secret)], signer)
    assert response.status_code == 200 and response.json()[0]["label"] == "true_positive"
    assert keys_server.hits == 1
    for _ in range(3):
        assert alert([match("noise")], signer).status_code == 200
    assert keys_server.hits == 1  # served from the cache
    key.refresh_from_db()
    assert key.revoked_at is not None


def test_an_unknown_identifier_fetches_the_keys_again_at_most_once_per_15_minutes(
    keys_server: KeysServer, clock: FrozenClock
) -> None:
    current, rotated, newer = (Signer(identifier=c * 64) for c in "abc")
    keys_server.document = {"public_keys": [current.entry()]}
    assert alert([match("noise")], current).status_code == 200
    assert keys_server.hits == 1
    # GitHub publishes a new key and signs an alert with it: the keys are fetched again.
    keys_server.document = {"public_keys": [current.entry(), rotated.entry()]}
    clock.advance(60)
    assert alert([match("noise")], rotated).status_code == 200
    assert keys_server.hits == 2
    # Another new identifier within 15 minutes of that fetch: not fetched again.
    keys_server.document["public_keys"].append(newer.entry())
    clock.advance(FIFTEEN_MINUTES - 1)
    assert_error(alert([match("noise")], newer), 401, "invalid_signature")
    assert keys_server.hits == 2
    clock.advance(1)
    assert alert([match("noise")], newer).status_code == 200
    assert keys_server.hits == 3


def test_unknown_identifiers_from_strangers_cost_at_most_one_fetch_per_15_minutes(
    keys_server: KeysServer, clock: FrozenClock
) -> None:
    """GitHub allows 60 unauthenticated requests an hour: a stranger who sends a made-up
    identifier now and then must not spend them, or the hourly refresh would fail."""
    current = Signer(identifier="a" * 64)
    keys_server.document = {"public_keys": [current.entry()]}
    assert alert([match("noise")], current).status_code == 200
    assert keys_server.hits == 1
    step = (FIFTEEN_MINUTES - 1) / 20
    for i in range(20):
        stranger = Signer(identifier=f"{i:064x}")
        assert_error(alert([match("noise")], stranger), 401, "invalid_signature")
        clock.advance(step)
    assert keys_server.hits <= 2  # at most one extra fetch
    fetched = keys_server.hits
    assert alert([match("noise")], current).status_code == 200
    # The hourly refresh still happens, and succeeds.
    clock.advance(HOUR)
    assert alert([match("noise")], current).status_code == 200
    assert keys_server.hits == fetched + 1


def test_a_failed_refresh_keeps_the_stale_keys_in_use(
    keys_server: KeysServer,
    clock: FrozenClock,
    org: Organization,
    make_api_key: KeyMaker,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kept_for: dict[str, int] = {}
    shared_set = leaks._shared.set

    def spy(name: str, value: Any, ttl: int) -> None:
        kept_for[name] = ttl
        shared_set(name, value, ttl)

    monkeypatch.setattr(leaks._shared, "set", spy)
    signer = Signer(identifier="a" * 64)
    keys_server.document = {"public_keys": [signer.entry()]}
    key, secret = make_api_key(org)
    assert alert([match("noise")], signer).status_code == 200
    assert keys_server.hits == 1
    # The cache keeps the document well past its freshness, for this to fall back on.
    assert kept_for[leaks.KEYS_CACHE_KEY] == WEEK
    # GitHub fails from now on, and the keys fetched are no longer fresh.
    keys_server.status = 500
    clock.advance(HOUR)
    with caplog.at_level(logging.ERROR, logger="apikeys.leaks"):
        response = alert([match(secret)], signer)
    assert response.status_code == 200, response.content
    assert response.json()[0]["label"] == "true_positive"
    assert keys_server.hits == 2  # the refresh was tried
    assert "still using the document fetched 3600 s ago" in caplog.text
    key.refresh_from_db()
    assert key.revoked_at is not None
    # Tried again at most once a minute meanwhile; the stale keys answer every alert.
    assert alert([match("noise")], signer).status_code == 200
    assert keys_server.hits == 2
    clock.advance(leaks.REFETCH_INTERVAL)
    assert alert([match("noise")], signer).status_code == 200
    assert keys_server.hits == 3
    # GitHub answers again: the keys are fresh for another hour.
    keys_server.status = 200
    clock.advance(leaks.REFETCH_INTERVAL)
    assert alert([match("noise")], signer).status_code == 200
    assert keys_server.hits == 4
    clock.advance(HOUR - 1)
    assert alert([match("noise")], signer).status_code == 200
    assert keys_server.hits == 4
    # Kept keys are used for a week at most.
    keys_server.status = 500
    clock.advance(WEEK)
    assert_error(alert([match("noise")], signer), 503, "service_unavailable")


def test_with_no_keys_ever_fetched_a_failed_fetch_is_a_503_so_github_retries(
    keys_server: KeysServer, clock: FrozenClock
) -> None:
    signer = Signer(identifier="a" * 64)
    keys_server.document = {"public_keys": [signer.entry()]}
    keys_server.status = 500
    response = alert([match("noise")], signer)
    error = assert_error(response, 503, "service_unavailable")
    assert "GitHub" in error["message"]
    assert response["Retry-After"] == str(leaks.KEYS_RETRY_AFTER)
    assert keys_server.hits == 1
    # Not fetched again within the minute: the same 503.
    again = alert([match("noise")], signer)
    assert_error(again, 503, "service_unavailable")
    assert again["Retry-After"] == str(leaks.KEYS_RETRY_AFTER)
    assert keys_server.hits == 1
    keys_server.status = 200
    clock.advance(leaks.REFETCH_INTERVAL)
    assert alert([match("noise")], signer).status_code == 200
    assert keys_server.hits == 2


def test_a_keys_document_without_usable_keys_is_a_503(keys_server: KeysServer) -> None:
    signer = Signer(identifier="a" * 64)
    rsa_like = {"key_identifier": signer.identifier, "key": "-----BEGIN PUBLIC KEY-----\nAAAA\n"}
    keys_server.document = {"public_keys": [rsa_like]}
    assert_error(alert([match("noise")], signer), 503, "service_unavailable")


# ---- the doc's scanner rules and checksum, run against the real key format -----------------


def _blocks(language: str) -> list[str]:
    text = DOC.read_text()
    return re.findall(rf"^```{language}\n(.*?)^```$", text, flags=re.DOTALL | re.MULTILINE)


def _generated() -> list[str]:
    return [keys.generate_secret(env) for env in ("live", "test") for _ in range(200)]


def _corrupted(secret: str) -> str:
    last = secret[-1]
    return secret[:-1] + ("0" if last != "0" else "1")


@pytest.fixture
def checksum_module(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """The doc's `latchkey_checksum.py`, importable as the doc's other snippets expect."""
    (source,) = [block for block in _blocks("python") if "def has_valid_checksum" in block]
    module = types.ModuleType("latchkey_checksum")
    exec(compile(source, str(DOC), "exec"), module.__dict__)
    monkeypatch.setitem(sys.modules, "latchkey_checksum", module)
    return module


def _exec_block(marker: str) -> dict[str, Any]:
    (source,) = [block for block in _blocks("python") if marker in block]
    namespace: dict[str, Any] = {"__name__": "doc_snippet"}
    exec(compile(source, str(DOC), "exec"), namespace)
    return namespace


def test_the_docs_checksum_agrees_with_the_key_module(checksum_module: types.ModuleType) -> None:
    checksum: Callable[[str, str, str], str] = checksum_module.checksum
    has_valid: Callable[[str], bool] = checksum_module.has_valid_checksum
    for secret in _generated():
        parsed = keys.parse_key(secret)
        assert parsed is not None
        assert checksum(parsed.prefix, parsed.word, parsed.body) == keys.checksum(
            parsed.prefix, parsed.word, parsed.body
        )
        assert has_valid(secret)
        assert not has_valid(_corrupted(secret))
    # Small CRCs are padded, as the key module pads them.
    for body in ("0" * 32, "A" * 32, "z" * 32):
        for prefix, word in (("lk", "live"), ("rk", "sandbox"), ("acme_pay", "prod")):
            assert checksum(prefix, word, body) == keys.checksum(prefix, word, body)
            assert has_valid(f"{prefix}_{word}_{body}{checksum(prefix, word, body)}")
    assert not has_valid("lk_live_short")


def test_the_gitleaks_rule_matches_generated_keys_and_only_them() -> None:
    (toml_block,) = _blocks("toml")
    (rule,) = tomllib.loads(toml_block)["rules"]
    assert rule["id"] == "latchkey-api-key"
    pattern = re.compile(rule["regex"])
    for secret in _generated():
        found = pattern.search(f'LATCHKEY_KEY="{secret}"\n')
        assert found is not None and found.group(rule["secretGroup"]) == secret
        assert any(keyword in secret for keyword in rule["keywords"])
        assert _entropy(secret) > rule["entropy"]
    assert pattern.search("lk_live_" + "A" * 39) is None  # too long to be a key
    assert pattern.search("lk_prod_" + "A" * 38) is None
    assert _entropy("lk_live_" + "0" * 38) < rule["entropy"]  # a placeholder is dropped


def _entropy(text: str) -> float:
    """Shannon entropy in bits per character, as gitleaks computes it."""
    counts = Counter(text)
    return -sum(n / len(text) * math.log2(n / len(text)) for n in counts.values())


def test_the_trufflehog_detector_matches_generated_keys() -> None:
    (yaml_block,) = [b for b in _blocks("yaml") if "detectors:" in b]
    (detector,) = yaml.safe_load(yaml_block)["detectors"]
    patterns = [re.compile(regex) for regex in detector["regex"].values()]
    for secret in _generated():
        line = f"export LATCHKEY_KEY={secret}"
        assert any(keyword in line for keyword in detector["keywords"])
        for pattern in patterns:
            found = pattern.search(line)
            assert found is not None and found.group(1) == secret
        assert _entropy(secret) > detector["entropy"]


def test_the_trufflehog_verifier_and_gitleaks_filter_keep_only_valid_checksums(
    checksum_module: types.ModuleType,
) -> None:
    secret = keys.generate_secret("live")
    any_valid = _exec_block("def any_valid")["any_valid"]
    assert any_valid({"Latchkey API key": {"key": [secret, secret]}})
    assert not any_valid({"Latchkey API key": {"key": [_corrupted(secret)] * 2}})
    assert not any_valid(["not", "a", "payload"])
    keep = _exec_block("def keep")["keep"]
    findings = [
        {"RuleID": "latchkey-api-key", "Secret": secret},
        {"RuleID": "latchkey-api-key", "Secret": _corrupted(secret)},
        {"RuleID": "aws-access-token", "Secret": "AKIA…"},
    ]
    assert keep(findings) == [findings[0], findings[2]]


def test_the_github_regex_in_the_doc_matches_generated_keys() -> None:
    text = DOC.read_text()
    (github_regex,) = re.findall(r"the regular expression, `([^`]+)`", text)
    for secret in _generated():
        found = re.search(github_regex, f"key: {secret}")
        assert found is not None and found.group(1) == secret
