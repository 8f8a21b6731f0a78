"""No issued secret reaches the database, the session, a cookie, the cache or a log."""

from __future__ import annotations

import logging
from io import StringIO

import pytest
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.sessions.models import Session
from django.core.cache import cache
from django.core.management import call_command
from django.db import connection
from django.test import Client

from apikeys.keys import key_digest, parse_key
from apikeys.models import ApiKey
from orgs.models import Organization


def all_text_in_database() -> list[str]:
    """Every non-null value of every column of every table, as text."""
    values: list[str] = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names(cursor):
            columns = [
                c.name for c in connection.introspection.get_table_description(cursor, table)
            ]
            quoted = ", ".join(connection.ops.quote_name(c) for c in columns)
            cursor.execute(f"SELECT {quoted} FROM {connection.ops.quote_name(table)}")
            for row in cursor.fetchall():
                for value in row:
                    if value is None:
                        continue
                    if isinstance(value, bytes | memoryview):
                        values.append(bytes(value).decode("latin-1"))
                    else:
                        values.append(str(value))
    # Session payloads are encoded: decode them too.
    for session in Session.objects.all():
        values.append(repr(SessionStore().decode(session.session_data)))
    return values


def secret_from(response_html: str) -> str:
    start = response_html.index('id="api-key-secret">') + len('id="api-key-secret">')
    return response_html[start : response_html.index("<", start)]


def test_no_issued_secret_is_stored_anywhere(
    admin_client_: Client, org: Organization, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    org.kyc_status = "approved"
    org.save()
    secrets: list[str] = []

    created = admin_client_.post(
        f"/o/{org.slug}/api-keys/new/",
        {"name": "Dashboard key", "environment": "live", "expiry": "never",
         "scope": ["members:write", "kyc:read"]},
    )  # fmt: skip
    secrets.append(secret_from(created.content.decode()))
    key = ApiKey.objects.get(digest=key_digest(secrets[0]))
    rotated = admin_client_.post(
        f"/o/{org.slug}/api-keys/{key.public_id}/rotate/", {"grace": "86400"}
    )
    secrets.append(secret_from(rotated.content.decode()))
    out = StringIO()
    call_command(
        "create_api_key", "--org", org.slug, "--name", "CLI key", "--env", "test",
        "--scope", "usage:read", stdout=out,
    )  # fmt: skip
    secrets.append(out.getvalue().strip().splitlines()[-1])
    # Follow-up pages (where a message or a session write could leak it) are visited too.
    admin_client_.get(f"/o/{org.slug}/api-keys/")
    admin_client_.post(f"/o/{org.slug}/api-keys/{key.public_id}/revoke/")
    admin_client_.get(f"/o/{org.slug}/api-keys/{key.public_id}/")

    assert len(set(secrets)) == 3 and all(parse_key(s) for s in secrets)
    assert ApiKey.objects.count() == 3

    stored = all_text_in_database()
    assert stored, "the scan must see rows"
    assert any(key.digest in value for value in stored)  # the scan does see the key table
    for secret in secrets:
        body = parse_key(secret).body  # type: ignore[union-attr]
        assert not any(body in value for value in stored), "a secret reached the database"
        assert all(secret not in c.value for c in admin_client_.cookies.values())
        for record in caplog.records:
            assert body not in record.getMessage()
        # The local-memory cache holds pickled values: none may contain the secret.
        local = getattr(cache, "_cache", {})
        assert all(body.encode() not in bytes(v) for v in local.values() if v is not None)
