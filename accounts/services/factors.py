"""Second factors: TOTP enrolment, recovery codes, verification at sign-in."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone
from django_otp.models import Device, VerifyNotAllowed
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts.models import PasskeyDevice, RecoveryCode, RecoveryCodeDevice, User
from accounts.recovery import (
    RECOVERY_CODE_COUNT,
    looks_like_recovery_code,
    new_recovery_code,
    recovery_code_digest,
)
from accounts.services._common import AccountError, security_notice, sign_out_other_sessions
from orgs.actors import Actor
from orgs.services import audit_record

TOTP_DEVICE_NAME = "Authenticator app"


@dataclass(frozen=True)
class VerifyOutcome:
    """The result of checking a typed code; `device` is set on success."""

    device: Device | None = None
    locked_until: datetime | None = None
    recovery_codes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.device is not None


def _locked_until(device: Device) -> datetime | None:
    allowed, info = device.verify_is_allowed()
    if allowed or not info:
        return None
    if info.get("reason") == VerifyNotAllowed.N_FAILED_ATTEMPTS:
        until = info.get("locked_until")
        return until if isinstance(until, datetime) else timezone.now()
    return timezone.now()


def primary_factor_exists(*, user: User) -> bool:
    return (
        TOTPDevice.objects.filter(user=user, confirmed=True).exists()
        or PasskeyDevice.objects.filter(user=user, confirmed=True).exists()
    )


def _issue_recovery_codes(*, user: User, request: HttpRequest | None) -> list[str]:
    device, _ = RecoveryCodeDevice.objects.get_or_create(
        user=user, defaults={"name": "Recovery codes", "confirmed": True}
    )
    device.codes.all().delete()
    codes = [new_recovery_code() for _ in range(RECOVERY_CODE_COUNT)]
    RecoveryCode.objects.bulk_create(
        RecoveryCode(device=device, code_hash=recovery_code_digest(user_id=user.pk, code=code))
        for code in codes
    )
    device.throttle_reset(commit=True)
    audit_record(
        action="user.recovery_codes_generated",
        request=request,
        actor=Actor.for_user(user),
        target=user,
        details={"count": len(codes)},
    )
    return codes


def issue_recovery_codes_for_first_factor(*, user: User, request: HttpRequest | None) -> list[str]:
    """Issue the first set of codes when the user has none yet; else return []."""
    has_codes = RecoveryCode.objects.filter(device__user=user, used_at__isnull=True).exists()
    if has_codes:
        return []
    return _issue_recovery_codes(user=user, request=request)


def void_recovery_codes_without_factor(*, user: User) -> None:
    """With no TOTP and no passkey left, two-factor is off: the recovery codes go too."""
    if not primary_factor_exists(user=user):
        RecoveryCodeDevice.objects.filter(user=user).delete()


@transaction.atomic
def recovery_codes_regenerate(*, user: User, request: HttpRequest | None = None) -> list[str]:
    """A new set of 10 codes; the old set stops working. Needs a TOTP device or a passkey."""
    if not primary_factor_exists(user=user):
        raise AccountError("no_factor", "Set up an authenticator app or a passkey first.")
    codes = _issue_recovery_codes(user=user, request=request)
    security_notice(user=user, event="New recovery codes were generated", request=request)
    return codes


@transaction.atomic
def totp_enrolment_start(*, user: User) -> TOTPDevice:
    """An unconfirmed TOTP device with a fresh secret; enrolment ends at confirmation."""
    if TOTPDevice.objects.filter(user=user, confirmed=True).exists():
        raise AccountError("totp_exists", "An authenticator app is already set up.")
    TOTPDevice.objects.filter(user=user, confirmed=False).delete()
    return TOTPDevice.objects.create(user=user, name=TOTP_DEVICE_NAME, confirmed=False, tolerance=1)


@transaction.atomic
def totp_enrolment_confirm(
    *, user: User, token: str, request: HttpRequest | None = None
) -> VerifyOutcome:
    """Confirm the pending TOTP device with a correct code (one step of tolerance).

    On success the device is confirmed, the first set of recovery codes is issued if the
    user had none, the user is notified and the event audited. Failures are throttled.
    """
    device = TOTPDevice.objects.select_for_update().filter(user=user, confirmed=False).last()
    if device is None:
        raise AccountError("no_enrolment", "Start the authenticator app setup again.")
    locked = _locked_until(device)
    if locked is not None:
        return VerifyOutcome(locked_until=locked)
    if not device.verify_token(_digits(token)):
        return VerifyOutcome(locked_until=_locked_until(device))
    device.confirmed = True
    device.save(update_fields=["confirmed"])
    audit_record(
        action="user.totp_enabled", request=request, actor=Actor.for_user(user), target=user
    )
    security_notice(user=user, event="An authenticator app was set up", request=request)
    # Sessions signed in without this factor end; this one proved it (ADR 0077).
    sign_out_other_sessions(user=user, request=request)
    codes = issue_recovery_codes_for_first_factor(user=user, request=request)
    return VerifyOutcome(device=device, recovery_codes=codes)


@transaction.atomic
def totp_disable(*, user: User, request: HttpRequest | None = None) -> None:
    deleted, _ = TOTPDevice.objects.filter(user=user).delete()
    if not deleted:
        raise AccountError("no_totp", "No authenticator app is set up.")
    audit_record(
        action="user.totp_disabled", request=request, actor=Actor.for_user(user), target=user
    )
    security_notice(user=user, event="An authenticator app was removed", request=request)
    void_recovery_codes_without_factor(user=user)


def _digits(token: str) -> str:
    return "".join(ch for ch in token if not ch.isspace() and ch != "-")


@transaction.atomic
def second_factor_verify(
    *, user: User, token: str, request: HttpRequest | None = None
) -> VerifyOutcome:
    """Check a TOTP code or a recovery code typed at sign-in.

    Invariants: a TOTP time step is accepted once (django-otp `last_t`), a recovery code
    once; failures are throttled with exponential backoff per device and audited as
    `user.second_factor_failed`. The code itself is never recorded.
    """
    token = token.strip()[:64]
    method = "recovery_code" if looks_like_recovery_code(token) else "totp"
    device: Device | None
    if method == "recovery_code":
        device = RecoveryCodeDevice.objects.select_for_update().filter(user=user).first()
    else:
        token = _digits(token)
        device = TOTPDevice.objects.select_for_update().filter(user=user, confirmed=True).first()
    if device is not None:
        locked = _locked_until(device)
        if locked is not None:
            audit_record(
                action="user.second_factor_failed",
                request=request,
                actor=Actor.for_user(user),
                target=user,
                details={"method": method, "reason": "throttled"},
            )
            return VerifyOutcome(locked_until=locked)
        if device.verify_token(token):
            if method == "recovery_code":
                remaining = RecoveryCode.objects.filter(device=device, used_at__isnull=True).count()
                audit_record(
                    action="user.recovery_code_used",
                    request=request,
                    actor=Actor.for_user(user),
                    target=user,
                    details={"remaining": remaining},
                )
                security_notice(
                    user=user, event="A recovery code was used to sign in", request=request
                )
            return VerifyOutcome(device=device)
    audit_record(
        action="user.second_factor_failed",
        request=request,
        actor=Actor.for_user(user),
        target=user,
        details={"method": method},
    )
    return VerifyOutcome(locked_until=_locked_until(device) if device is not None else None)


@transaction.atomic
def user_signed_in_record(*, user: User, method: str, request: HttpRequest | None = None) -> None:
    audit_record(
        action="user.signed_in",
        request=request,
        actor=Actor.for_user(user),
        target=user,
        details={"method": method},
    )


@transaction.atomic
def user_signed_out_record(*, user: User, request: HttpRequest | None = None) -> None:
    audit_record(action="user.signed_out", request=request, actor=Actor.for_user(user), target=user)
