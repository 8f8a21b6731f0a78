"""Fixtures shared by every test: users, orgs, signed-in clients, a clean cache."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.core.cache import cache
from django.test import Client

from accounts.models import User
from orgs.models import Membership, Organization, Role
from tests.factories import MembershipFactory, OrganizationFactory, UserFactory
from tests.programs import PROGRAMS, REQUIRE_ALL_VARIABLE


@pytest.fixture(scope="session", autouse=True)
def lease_table_of_the_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The host's lease table (ADR 0090) of this test run: one file for the run, not a
    new one for every Redis server the tests start. It is in shared memory where the
    machine has it, as a host's default table is, so that its slots are guarded as in
    production (by mutexes, ADR 0102), and removed at the end."""
    from django.conf import settings

    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        folder = Path(tempfile.mkdtemp(prefix="latchkey-tests-", dir=shm))
    else:
        folder = tmp_path_factory.mktemp("leases")
    settings.LATCHKEY_LEASE_TABLE = str(folder / "table")
    yield
    if folder.parent == shm:
        shutil.rmtree(folder, ignore_errors=True)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say plainly how many tests a missing program skipped, and how to get it."""
    counts: dict[str, int] = {}
    for report in terminalreporter.stats.get("skipped", []):
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        for program in PROGRAMS:
            if program.reason in reason:
                counts[program.reason] = counts.get(program.reason, 0) + 1
    if not counts:
        return
    terminalreporter.section("skipped for missing programs")
    for reason, count in counts.items():
        terminalreporter.write_line(f"{count} skipped: {reason}")
    terminalreporter.write_line(
        f"Install them to run everything; {REQUIRE_ALL_VARIABLE}=1 makes such a skip a failure."
    )


def _reset_process_state() -> None:
    from apikeys import keycache, usage

    cache.clear()
    # Pending invalidations live in each test's own database: nothing carries over. A test
    # of ADR 0078 sets the flag itself.
    keycache._check_pending = False
    keycache._settle_after, keycache._settle_error = 0.0, None
    # In-process usage counters and recent requests (the embedded default): SQLite reuses
    # ids after a rollback, so leftovers would be credited to the next test's keys.
    usage.discard_local()
    usage.discard_recent_local()


@pytest.fixture(autouse=True)
def _clean_cache() -> Iterator[None]:
    """Counters, throttles and caches must not leak from one test into the next."""
    _reset_process_state()
    yield
    _reset_process_state()


@pytest.fixture
def user(db: None) -> User:
    return UserFactory.create(email="alice@example.com")


@pytest.fixture
def org(db: None) -> Organization:
    return OrganizationFactory.create(name="Acme", slug="acme")


@pytest.fixture
def other_org(db: None) -> Organization:
    return OrganizationFactory.create(name="Globex", slug="globex")


@pytest.fixture
def owner(org: Organization) -> User:
    membership = MembershipFactory.create(
        org=org, user=UserFactory.create(email="owner@acme.test"), role=Role.OWNER
    )
    return membership.user


@pytest.fixture
def admin_user(org: Organization) -> User:
    membership = MembershipFactory.create(
        org=org, user=UserFactory.create(email="admin@acme.test"), role=Role.ADMIN
    )
    return membership.user


@pytest.fixture
def member_user(org: Organization) -> User:
    membership = MembershipFactory.create(
        org=org, user=UserFactory.create(email="member@acme.test"), role=Role.MEMBER
    )
    return membership.user


def signed_in_client(user: User) -> Client:
    """A test client whose session is fully authenticated (first and second factor)."""
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def owner_client(owner: User) -> Client:
    return signed_in_client(owner)


@pytest.fixture
def admin_client_(admin_user: User) -> Client:
    return signed_in_client(admin_user)


@pytest.fixture
def member_client(member_user: User) -> Client:
    return signed_in_client(member_user)


@pytest.fixture
def membership_of() -> object:
    def get(user: User, org: Organization) -> Membership:
        return Membership.objects.get(user=user, org=org)

    return get


def verified_client(user: User) -> Client:
    """A signed-in client whose session passed a second factor (a confirmed TOTP device),
    as django-otp records it. Platform staff need this to reach /platform/."""
    from django_otp import DEVICE_ID_SESSION_KEY
    from django_otp.plugins.otp_totp.models import TOTPDevice

    device = TOTPDevice.objects.filter(user=user, confirmed=True).first()
    if device is None:
        device = TOTPDevice.objects.create(user=user, name="Authenticator app", confirmed=True)
    client = signed_in_client(user)
    session = client.session
    session[DEVICE_ID_SESSION_KEY] = device.persistent_id
    session.save()
    return client


@pytest.fixture
def staff_user(db: None) -> User:
    from accounts.models import PlatformRole

    return UserFactory.create(
        email="staff@latchkey.test", platform_role=PlatformRole.PLATFORM_ADMIN
    )


@pytest.fixture
def staff_client(staff_user: User) -> Client:
    return verified_client(staff_user)
