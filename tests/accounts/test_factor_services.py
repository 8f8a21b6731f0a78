from __future__ import annotations

import hashlib
import re
import time
from datetime import timedelta
from typing import Any

import pytest
from django.core import mail
from django.utils import timezone
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts import services
from accounts.models import RecoveryCode, RecoveryCodeDevice, User
from accounts.recovery import recovery_code_digest
from orgs.models import AuditEvent
from tests.accounts.helpers import confirmed_totp, freeze_totp_clock, totp_code

pytestmark = pytest.mark.django_db

# The start of a 30-second step, so "previous"/"next" step arithmetic is exact.
STEP_START = (int(time.time()) // 30) * 30 + 0.5


def enrol_totp(user: User, monkeypatch: Any) -> tuple[TOTPDevice, list[str]]:
    device = services.totp_enrolment_start(user=user)
    freeze_totp_clock(monkeypatch, STEP_START)
    outcome = services.totp_enrolment_confirm(user=user, token=totp_code(device, at=STEP_START))
    assert outcome.ok
    assert isinstance(outcome.device, TOTPDevice)
    return outcome.device, outcome.recovery_codes


def test_totp_enrolment_needs_a_correct_code_and_issues_recovery_codes(
    user: User, monkeypatch: Any, django_capture_on_commit_callbacks: Any
) -> None:
    device = services.totp_enrolment_start(user=user)
    assert device.confirmed is False
    assert device.tolerance == 1
    freeze_totp_clock(monkeypatch, STEP_START)

    right = totp_code(device, at=STEP_START)
    wrong = services.totp_enrolment_confirm(
        user=user, token="000000" if right != "000000" else "111111"
    )
    assert not wrong.ok
    device.refresh_from_db()
    assert device.confirmed is False
    assert device.throttling_failure_count == 1

    device.throttling_failure_timestamp = timezone.now() - timedelta(minutes=1)
    device.save()
    with django_capture_on_commit_callbacks(execute=True):
        outcome = services.totp_enrolment_confirm(user=user, token=totp_code(device, at=STEP_START))
    assert outcome.ok
    device.refresh_from_db()
    assert device.confirmed is True
    assert len(outcome.recovery_codes) == 10
    assert AuditEvent.objects.filter(action="user.totp_enabled", actor_user=user).exists()
    assert AuditEvent.objects.filter(action="user.recovery_codes_generated").count() == 1
    assert any("authenticator app was set up" in m.body for m in mail.outbox)


def test_a_second_totp_device_cannot_be_started(user: User) -> None:
    confirmed_totp(user)
    with pytest.raises(services.AccountError):
        services.totp_enrolment_start(user=user)


def test_a_used_totp_step_is_refused(user: User, monkeypatch: Any) -> None:
    device, _ = enrol_totp(user, monkeypatch)
    clock = freeze_totp_clock(monkeypatch, STEP_START + 30)
    code = totp_code(device, at=clock.now)
    assert services.second_factor_verify(user=user, token=code).ok
    device.refresh_from_db()
    device.throttle_reset()
    # Same code, same step: a replay.
    assert not services.second_factor_verify(user=user, token=code).ok
    device.refresh_from_db()
    device.throttle_reset()
    # An older step than the last used one is refused too, even inside the tolerance.
    clock.now = STEP_START + 60
    assert not services.second_factor_verify(user=user, token=code).ok


def test_totp_tolerates_one_step_of_drift_and_no_more(user: User, monkeypatch: Any) -> None:
    device = confirmed_totp(user)
    now = STEP_START + 300
    freeze_totp_clock(monkeypatch, now)

    def check(offset_steps: int) -> bool:
        # Each try from a clean device: no used step, no learnt drift, no backoff.
        device.refresh_from_db()
        device.last_t = -1
        device.drift = 0
        device.throttle_reset()
        return services.second_factor_verify(
            user=user, token=totp_code(device, at=now + 30 * offset_steps)
        ).ok

    assert check(+2) is False
    assert check(-2) is False
    assert check(-1) is True  # previous step
    assert check(+1) is True  # next step
    assert check(0) is True


def test_totp_failures_are_throttled_with_backoff(user: User, monkeypatch: Any) -> None:
    device = confirmed_totp(user)
    freeze_totp_clock(monkeypatch, STEP_START)
    good = totp_code(device, at=STEP_START)
    bad = "999999" if good != "999999" else "111111"

    assert not services.second_factor_verify(user=user, token=bad).ok
    device.refresh_from_db()
    assert device.throttling_failure_count == 1

    # After five failures the next try must wait 16 seconds, even with the right code.
    device.throttling_failure_count = 5
    device.throttling_failure_timestamp = timezone.now()
    device.save()
    locked = services.second_factor_verify(user=user, token=good)
    assert not locked.ok
    assert locked.locked_until is not None
    assert locked.locked_until - timezone.now() > timedelta(seconds=10)

    device.throttling_failure_timestamp = timezone.now() - timedelta(seconds=17)
    device.save()
    assert services.second_factor_verify(user=user, token=good).ok
    device.refresh_from_db()
    assert device.throttling_failure_count == 0


def test_failed_second_factors_are_audited_without_the_code(user: User) -> None:
    confirmed_totp(user)
    services.second_factor_verify(user=user, token="123456")
    event = AuditEvent.objects.get(action="user.second_factor_failed")
    assert event.actor_user == user
    assert event.details == {"method": "totp"}
    assert "123456" not in str(event.__dict__)


def test_recovery_codes_are_ten_distinct_codes_stored_only_as_keyed_digests(
    user: User, monkeypatch: Any
) -> None:
    _, codes = enrol_totp(user, monkeypatch)
    assert len(codes) == len(set(codes)) == 10
    assert all(re.fullmatch(r"[a-z2-7]{5}-[a-z2-7]{5}", code) for code in codes)
    stored = list(
        RecoveryCode.objects.filter(device__user=user).values_list("code_hash", flat=True)
    )
    assert len(stored) == 10
    for code in codes:
        assert code not in stored
        assert code.replace("-", "") not in "".join(stored)
        assert hashlib.sha256(code.encode()).hexdigest() not in stored  # keyed, not plain
        assert recovery_code_digest(user_id=user.pk, code=code) in stored


def test_a_recovery_code_works_once_and_is_normalised(
    user: User, monkeypatch: Any, django_capture_on_commit_callbacks: Any
) -> None:
    _, codes = enrol_totp(user, monkeypatch)
    typed = " " + codes[0].upper().replace("-", " ") + " "
    with django_capture_on_commit_callbacks(execute=True):
        outcome = services.second_factor_verify(user=user, token=typed)
    assert outcome.ok and isinstance(outcome.device, RecoveryCodeDevice)
    event = AuditEvent.objects.get(action="user.recovery_code_used")
    assert event.details == {"remaining": 9}
    assert any("recovery code was used" in m.body for m in mail.outbox)

    RecoveryCodeDevice.objects.filter(user=user).update(throttling_failure_count=0)
    assert not services.second_factor_verify(user=user, token=codes[0]).ok
    RecoveryCodeDevice.objects.filter(user=user).update(throttling_failure_count=0)
    assert services.second_factor_verify(user=user, token=codes[1]).ok


def test_recovery_codes_of_one_user_do_not_work_for_another(user: User, monkeypatch: Any) -> None:
    _, codes = enrol_totp(user, monkeypatch)
    other = User.objects.create_user("bob@example.com")
    monkeypatch.undo()
    _, other_codes = enrol_totp(other, monkeypatch)
    assert not services.second_factor_verify(user=other, token=codes[0]).ok
    assert services.second_factor_verify(user=user, token=codes[0]).ok
    assert not set(codes) & set(other_codes)


def test_wrong_recovery_codes_are_throttled(user: User, monkeypatch: Any) -> None:
    _, codes = enrol_totp(user, monkeypatch)
    assert not services.second_factor_verify(user=user, token="aaaaa-aaaaa").ok
    device = RecoveryCodeDevice.objects.get(user=user)
    assert device.throttling_failure_count == 1
    # Immediately after a failure, even a right code waits for the backoff.
    device.throttling_failure_count = 4
    device.throttling_failure_timestamp = timezone.now()
    device.save()
    assert not services.second_factor_verify(user=user, token=codes[0]).ok
    assert RecoveryCode.objects.filter(device=device, used_at__isnull=True).count() == 10


def test_regenerating_recovery_codes_voids_the_old_set(
    user: User, monkeypatch: Any, django_capture_on_commit_callbacks: Any
) -> None:
    _, old = enrol_totp(user, monkeypatch)
    with django_capture_on_commit_callbacks(execute=True):
        new = services.recovery_codes_regenerate(user=user)
    assert len(new) == 10 and not set(new) & set(old)
    assert not services.second_factor_verify(user=user, token=old[0]).ok
    RecoveryCodeDevice.objects.filter(user=user).update(throttling_failure_count=0)
    assert services.second_factor_verify(user=user, token=new[0]).ok
    assert AuditEvent.objects.filter(action="user.recovery_codes_generated").count() == 2
    assert any("recovery codes were generated" in m.body for m in mail.outbox)


def test_recovery_codes_need_a_factor(user: User) -> None:
    with pytest.raises(services.AccountError):
        services.recovery_codes_regenerate(user=user)


def test_removing_the_only_factor_turns_two_factor_off(
    user: User, monkeypatch: Any, django_capture_on_commit_callbacks: Any
) -> None:
    enrol_totp(user, monkeypatch)
    with django_capture_on_commit_callbacks(execute=True):
        services.totp_disable(user=user)
    assert not TOTPDevice.objects.filter(user=user).exists()
    assert not RecoveryCodeDevice.objects.filter(user=user).exists()
    assert AuditEvent.objects.filter(action="user.totp_disabled", actor_user=user).exists()
    assert any("authenticator app was removed" in m.body for m in mail.outbox)
