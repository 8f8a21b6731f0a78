"""`manage.py create_api_key`."""

from __future__ import annotations

from datetime import UTC, datetime
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from apikeys.keys import key_digest, parse_key
from apikeys.models import ApiKey
from orgs.models import AuditEvent, KycStatus, Organization


def run(*args: str) -> list[str]:
    out = StringIO()
    call_command("create_api_key", *args, stdout=out)
    return out.getvalue().rstrip("\n").split("\n")


def test_prints_the_secret_alone_on_the_last_line(org: Organization) -> None:
    lines = run(
        "--org", "acme", "--name", "Deploy bot", "--env", "test",
        "--scope", "members:write", "--scope", "usage:read",
        "--expires-at", "2040-01-31T12:00:00Z",
    )  # fmt: skip
    secret = lines[-1]
    assert parse_key(secret) is not None and secret.startswith("lk_test_")
    assert all(secret not in line for line in lines[:-1])
    key = ApiKey.objects.get(digest=key_digest(secret))
    assert key.org == org and key.name == "Deploy bot"
    assert key.scopes == ["members:read", "members:write", "usage:read"]
    assert key.expires_at == datetime(2040, 1, 31, 12, tzinfo=UTC)
    assert key.public_id in "\n".join(lines[:-1])
    event = AuditEvent.objects.get(action="api_key.created")
    assert event.actor_type == "system" and secret not in repr(event.details)


def test_live_key_needs_kyc(org: Organization) -> None:
    with pytest.raises(CommandError, match="KYC"):
        run("--org", "acme", "--name", "x", "--env", "live", "--scope", "kyc:read")
    org.kyc_status = KycStatus.APPROVED
    org.save()
    assert run("--org", "acme", "--name", "x", "--env", "live", "--scope", "kyc:read")[
        -1
    ].startswith("lk_live_")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--org", "nope", "--env", "test", "--scope", "kyc:read"], "No organisation"),
        (["--org", "acme", "--env", "test", "--scope", "usage:write"], "usage:write"),
        (["--org", "acme", "--env", "test", "--scope", "bogus:read"], "bogus:read"),
        (["--org", "acme", "--env", "test"], "at least one --scope"),
        (
            ["--org", "acme", "--env", "test", "--scope", "kyc:read", "--expires-at", "soon"],
            "ISO 8601",
        ),
        (
            ["--org", "acme", "--env", "test", "--scope", "kyc:read", "--expires-at", "2001-01-01"],
            "future",
        ),
    ],
)
def test_errors_exit_with_a_clear_message(org: Organization, args: list[str], message: str) -> None:
    with pytest.raises(CommandError, match=message):
        run("--name", "x", *args)
    assert not ApiKey.objects.exists()


def test_errors_exit_non_zero_from_the_shell(org: Organization) -> None:
    from django.core.management import ManagementUtility

    with pytest.raises(SystemExit) as exc:
        ManagementUtility(
            ["manage.py", "create_api_key", "--org", "nope", "--name", "x", "--env", "test",
             "--scope", "kyc:read"]
        ).execute()  # fmt: skip
    assert exc.value.code != 0


def test_system_keys_come_from_the_shell(db: None) -> None:
    lines = run("--system", "--name", "Verifier", "--scope", "keys:verify")
    secret = lines[-1]
    assert secret.startswith("lk_sys_")
    key = ApiKey.objects.get(digest=key_digest(secret))
    assert key.org is None and key.environment == "sys" and key.scopes == ["keys:verify"]
    event = AuditEvent.objects.get(action="api_key.created")
    assert event.actor_type == "system"
    with pytest.raises(CommandError, match="only for organisation keys"):
        run("--system", "--name", "X", "--scope", "members:read")
    with pytest.raises(CommandError, match="no --org or --env"):
        run("--system", "--name", "X", "--env", "test", "--scope", "keys:verify")
    with pytest.raises(CommandError, match="Give --org and --env"):
        run("--name", "X", "--scope", "members:read")
