from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
from django.test import Client

from accounts.models import PlatformRole, User
from orgs.models import AuditEvent, Organization
from orgs.plans import PLAN_LIMITS
from orgs.services import audit_record


def test_ping_needs_no_key_and_no_database(
    client: Client, db: None, django_assert_num_queries: Any
) -> None:
    with django_assert_num_queries(0):
        response = client.get("/api/v1/ping")
    assert response.status_code == 200
    assert response.json() == {"ok": True}
    assert response["X-Request-Id"].startswith("req_")


def test_request_id_is_taken_from_a_sane_header_and_replaced_when_not(client: Client) -> None:
    sane = client.get("/api/v1/ping", HTTP_X_REQUEST_ID="abc-123-def-456")
    assert sane["X-Request-Id"] == "abc-123-def-456"
    hostile = client.get("/api/v1/ping", HTTP_X_REQUEST_ID="<script>alert(1)</script>")
    assert hostile["X-Request-Id"].startswith("req_")


@pytest.mark.django_db
def test_healthz_reports_each_dependency(client: Client) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["cache"] == "ok"
    assert body["checks"]["broker"] in {"ok", "eager"}


@pytest.mark.django_db
def test_pages_carry_security_headers(client: Client) -> None:
    response = client.get("/")
    assert response.status_code == 200
    csp = response["Content-Security-Policy"]
    assert "script-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert response["X-Frame-Options"] == "DENY"
    assert response["Referrer-Policy"] == "same-origin"


@pytest.mark.django_db
def test_base_template_shows_current_user_and_sign_out(client: Client) -> None:
    user = User.objects.create_user("Bob@Example.com")
    client.force_login(user)
    html = client.get("/", follow=True).content.decode()
    assert '<span id="current-user">bob@example.com</span>' in html
    assert 'id="sign-out"' in html
    response = client.post("/logout/")
    assert response.status_code == 302
    assert 'id="current-user"' not in client.get("/", follow=True).content.decode()


@pytest.mark.django_db
def test_logout_refuses_get(client: Client) -> None:
    assert client.get("/logout/").status_code == 405


@pytest.mark.django_db
def test_user_email_is_case_insensitively_unique() -> None:
    user = User.objects.create_user("Carol@Example.COM")
    assert user.email == "carol@example.com"
    assert not user.has_usable_password()
    assert user.platform_role == PlatformRole.NONE
    from django.db import IntegrityError, transaction

    with pytest.raises(IntegrityError), transaction.atomic():
        User.objects.create(email="CAROL@example.com")


@pytest.mark.django_db
def test_org_limits_follow_the_plan_and_custom_overrides() -> None:
    org = Organization.objects.create(name="Acme", slug="acme")
    assert org.public_id.startswith("org_") and len(org.public_id) == 28
    assert org.limits == PLAN_LIMITS["starter"]
    org.custom_per_minute = 0
    assert org.limits.per_minute == 0
    assert org.limits.burst == PLAN_LIMITS["starter"].burst


@pytest.mark.django_db
def test_audit_events_are_append_only_and_refuse_secrets(rf) -> None:
    org = Organization.objects.create(name="Acme", slug="acme")
    user = User.objects.create_user("dana@example.com")
    request = rf.get("/", HTTP_USER_AGENT="pytest-agent", REMOTE_ADDR="203.0.113.9")
    request.request_id = "req_test"
    request.user = user
    event = audit_record(action="org.created", org=org, request=request, target=org)
    assert event.public_id.startswith("evt_")
    assert event.actor_label == "dana@example.com"
    assert event.ip == "203.0.113.9"
    assert event.user_agent == "pytest-agent"
    assert event.request_id == "req_test"
    assert event.target_id == org.public_id

    event.action = "tampered"
    with pytest.raises(PermissionError):
        event.save()
    with pytest.raises(PermissionError):
        event.delete()
    with pytest.raises(PermissionError):
        AuditEvent.objects.filter(pk=event.pk).update(action="x")
    with pytest.raises(PermissionError):
        AuditEvent.objects.all().delete()
    with pytest.raises(ValueError):
        audit_record(action="x", org=org, details={"secret": "lk_live_abc"})
    assert AuditEvent.objects.get().action == "org.created"


def test_production_refuses_to_start_on_development_secrets() -> None:
    code = "import django; django.setup()"
    env = {"DEBUG": "False", "PATH": "", "DJANGO_SETTINGS_MODULE": "config.settings"}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr
    assert "API_KEY_PEPPER" in result.stderr
    assert "REDIS_URL" in result.stderr

    env.update(
        {
            "SECRET_KEY": "s" * 50,
            "API_KEY_PEPPER": "p" * 50,
            "REDIS_URL": "redis://127.0.0.1:1/0",
        }
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.django_db
def test_shell_hides_admin_only_links_from_members(
    member_client: Client, admin_client_: Client
) -> None:
    member_html = member_client.get("/o/acme/").content.decode()
    assert 'href="/o/acme/api-keys/"' in member_html
    assert 'href="/o/acme/usage/"' in member_html
    assert 'href="/o/acme/audit/"' not in member_html
    assert 'href="/o/acme/settings/"' not in member_html
    admin_html = admin_client_.get("/o/acme/").content.decode()
    assert 'href="/o/acme/audit/"' in admin_html
    assert 'href="/o/acme/settings/"' in admin_html
