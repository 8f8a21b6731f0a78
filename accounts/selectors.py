"""Reads of the accounts app: factors of a user, sign-in links, platform roles."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import QuerySet
from django.utils import timezone
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts.models import (
    MagicLinkToken,
    PasskeyDevice,
    PlatformRole,
    RecoveryCode,
    RecoveryCodeDevice,
    User,
)
from accounts.services.magic_links import magic_link_digest, magic_link_token_is_well_formed


@dataclass(frozen=True)
class SecurityOverview:
    totp: TOTPDevice | None
    totp_pending: bool
    passkeys: list[PasskeyDevice]
    recovery_codes_remaining: int
    has_recovery_codes: bool

    @property
    def has_factor(self) -> bool:
        return self.totp is not None or bool(self.passkeys)


def user_has_second_factor(*, user: User) -> bool:
    """True when the user has a confirmed TOTP device, a passkey or recovery codes."""
    return (
        TOTPDevice.objects.filter(user=user, confirmed=True).exists()
        or PasskeyDevice.objects.filter(user=user, confirmed=True).exists()
        or RecoveryCodeDevice.objects.filter(user=user, confirmed=True).exists()
    )


def passkey_list(*, user: User) -> QuerySet[PasskeyDevice]:
    return PasskeyDevice.objects.filter(user=user, confirmed=True).order_by("created_at", "id")


def security_overview(*, user: User) -> SecurityOverview:
    totp_devices = list(TOTPDevice.objects.filter(user=user).order_by("-confirmed", "-id"))
    confirmed = next((d for d in totp_devices if d.confirmed), None)
    recovery = RecoveryCode.objects.filter(device__user=user)
    return SecurityOverview(
        totp=confirmed,
        totp_pending=confirmed is None and bool(totp_devices),
        passkeys=list(passkey_list(user=user)),
        recovery_codes_remaining=recovery.filter(used_at__isnull=True).count(),
        has_recovery_codes=recovery.exists(),
    )


def totp_pending_device(*, user: User) -> TOTPDevice | None:
    return TOTPDevice.objects.filter(user=user, confirmed=False).order_by("-id").first()


def magic_link_is_usable(*, token: str) -> bool:
    """Whether a sign-in link would work now (read only: GET shows, POST uses)."""
    if not magic_link_token_is_well_formed(token):
        return False
    return MagicLinkToken.objects.filter(
        token_hash=magic_link_digest(token), used_at__isnull=True, expires_at__gt=timezone.now()
    ).exists()


def platform_owner_count() -> int:
    return User.objects.filter(platform_role=PlatformRole.PLATFORM_OWNER).count()
