"""Reads of the accounts app: factors of a user, sessions, the personal security log,
sign-in links, platform roles."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.contrib.sessions.models import Session
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.utils import timezone
from django_otp.models import Device
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts.models import (
    MagicLinkToken,
    PasskeyDevice,
    PlatformRole,
    RecoveryCode,
    RecoveryCodeDevice,
    User,
    UserSession,
)
from accounts.services.magic_links import magic_link_digest, magic_link_token_is_well_formed
from accounts.session_store import session_key_digest
from accounts.useragents import describe_user_agent
from orgs.models import AuditEvent


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


@dataclass(frozen=True)
class SessionRow:
    session: UserSession
    is_current: bool

    @property
    def public_id(self) -> str:
        return self.session.public_id

    @property
    def browser(self) -> str:
        return describe_user_agent(self.session.user_agent)

    @property
    def seen_recently(self) -> bool:
        """Seen within the last two minutes (last seen is written once a minute)."""
        return timezone.now() - self.session.last_seen_at < timedelta(minutes=2)


def user_session_list(*, user: User, current_key: str | None) -> list[SessionRow]:
    """The user's live sessions, the current one first, then by last seen. A row whose
    session has expired or ended is not shown (`clearsessions` removes it later)."""
    live = Session.objects.filter(
        session_key=OuterRef("key_digest"), expire_date__gt=timezone.now()
    )
    current = session_key_digest(current_key) if current_key else ""
    rows = [
        SessionRow(session=row, is_current=row.key_digest == current)
        for row in UserSession.objects.filter(Exists(live), user=user).order_by(
            "-last_seen_at", "-id"
        )
    ]
    return sorted(rows, key=lambda row: not row.is_current)


# What the personal security log shows: the user's own sign-ins, factor changes, failed
# second factors and session sign-outs (events with no org, the user as the actor).
SECURITY_LOG_ACTIONS: dict[str, str] = {
    "user.signed_up": "Account created",
    "user.signed_in": "Signed in",
    "user.signed_out": "Signed out",
    "user.second_factor_failed": "Second factor failed",
    "user.recovery_code_used": "Recovery code used",
    "user.totp_enabled": "Authenticator app added",
    "user.totp_disabled": "Authenticator app removed",
    "user.passkey_added": "Passkey added",
    "user.passkey_removed": "Passkey removed",
    "user.recovery_codes_generated": "Recovery codes generated",
    "user.session_signed_out": "Another session signed out",
    "user.other_sessions_signed_out": "All other sessions signed out",
}
SECURITY_LOG_PAGE_SIZE = 15

_METHOD_WORDS = {
    "magic_link": "email link",
    "passkey": "passkey",
    "totp": "authenticator app",
    "recovery_code": "recovery code",
}


@dataclass(frozen=True)
class SecurityLogEntry:
    event: AuditEvent

    @property
    def title(self) -> str:
        return SECURITY_LOG_ACTIONS.get(self.event.action, self.event.action)

    @property
    def is_warning(self) -> bool:
        return self.event.action in ("user.second_factor_failed", "user.recovery_code_used")

    @property
    def detail(self) -> str:
        """What the event's details say, in words (never a secret: events hold none)."""
        details = self.event.details if isinstance(self.event.details, dict) else {}
        method = str(details.get("method", ""))
        if self.event.action == "user.signed_in" and method:
            steps = [_METHOD_WORDS.get(part, part) for part in method.split("+")]
            return "With " + " and ".join(steps)
        if self.event.action == "user.second_factor_failed" and method:
            reason = " (too many attempts)" if details.get("reason") == "throttled" else ""
            return f"Wrong {_METHOD_WORDS.get(method, method)}{reason}"
        if self.event.action in ("user.passkey_added", "user.passkey_removed"):
            return f"“{self.event.target_label}”" if self.event.target_label else ""
        if self.event.action == "user.recovery_code_used" and "remaining" in details:
            return f"{details['remaining']} left"
        if self.event.action == "user.session_signed_out":
            return self.event.target_label
        if self.event.action == "user.other_sessions_signed_out" and "count" in details:
            count = int(details["count"])
            return f"{count} session{'s' if count != 1 else ''}"
        return ""

    @property
    def browser(self) -> str:
        return describe_user_agent(self.event.user_agent) if self.event.user_agent else ""


@dataclass(frozen=True)
class SecurityLogPage:
    entries: list[SecurityLogEntry]
    older: str | None  # the `before` cursor of the next (older) page, if any
    is_first: bool


def security_event_list(
    *, user: User, before: str = "", limit: int = SECURITY_LOG_PAGE_SIZE
) -> SecurityLogPage:
    """The user's own security events, newest first, `limit` at a time. `before` is the
    public id of the last event of the previous page; an unknown or another user's id
    gives the first page."""
    events = AuditEvent.objects.filter(
        org__isnull=True, actor_user=user, action__in=SECURITY_LOG_ACTIONS
    )
    cursor = events.filter(public_id=before).first() if before else None
    if cursor is not None:
        events = events.filter(
            Q(created_at__lt=cursor.created_at) | Q(created_at=cursor.created_at, id__lt=cursor.pk)
        )
    page = list(events.order_by("-created_at", "-id")[: limit + 1])
    older = page[limit - 1].public_id if len(page) > limit else None
    return SecurityLogPage(
        entries=[SecurityLogEntry(event) for event in page[:limit]],
        older=older,
        is_first=cursor is None,
    )


def user_get_by_email(*, email: str) -> User | None:
    """The account with this email (case-insensitive, as sign-in matches), or None."""
    try:
        return User.objects.get_by_email(email)
    except User.DoesNotExist:
        return None


def confirmed_device_first(*, user: User) -> Device | None:
    """The user's first confirmed factor (passkey, then authenticator app, then recovery
    codes): what a session that verified a factor since removed falls back to."""
    for model in (PasskeyDevice, TOTPDevice, RecoveryCodeDevice):
        device: Device | None = model.objects.filter(user=user, confirmed=True).first()
        if device is not None:
            return device
    return None
