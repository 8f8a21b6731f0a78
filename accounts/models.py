from __future__ import annotations

from typing import Any, ClassVar

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, BaseUserManager, PermissionsMixin
from django.db import models
from django.db.models.functions import Lower
from django.utils import timezone
from django.utils.crypto import constant_time_compare, salted_hmac
from django_otp.models import Device, ThrottlingMixin, TimestampMixin

from orgs.ids import new_public_id


class PlatformRole(models.TextChoices):
    NONE = "none", "None"
    PLATFORM_ADMIN = "platform_admin", "Platform admin"
    PLATFORM_OWNER = "platform_owner", "Platform owner"


def normalize_email(email: str) -> str:
    """Emails are identities: compared and stored trimmed and lower-cased."""
    return email.strip().lower()


class UserManager(BaseUserManager["User"]):
    use_in_migrations = True

    def get_by_email(self, email: str) -> User:
        return self.get(email=normalize_email(email))

    def create_user(self, email: str, password: str | None = None, **extra: Any) -> User:
        """A passwordless user. `password` is accepted for Django's signature (the
        `createsuperuser` command passes one) and ignored: nobody signs in with a password,
        so none is ever stored (ADR 0015)."""
        if not email:
            raise ValueError("An email is required.")
        user = self.model(email=normalize_email(email), **extra)
        user.set_unusable_password()
        user.save(using=self._db)
        return user

    def create_superuser(self, email: str, password: str | None = None, **extra: Any) -> User:
        extra.setdefault("is_staff", True)
        extra.setdefault("is_superuser", True)
        extra.setdefault("platform_role", PlatformRole.PLATFORM_OWNER)
        return self.create_user(email, password, **extra)


class User(AbstractBaseUser, PermissionsMixin):  # type: ignore[django-manager-missing]
    """A person, identified by email. Sign-in is passwordless (magic link, passkey)."""

    email = models.EmailField(max_length=254, unique=True)
    full_name = models.CharField(max_length=150, blank=True)
    platform_role = models.CharField(
        max_length=20, choices=PlatformRole.choices, default=PlatformRole.NONE
    )
    is_active = models.BooleanField(default=True)
    # Access to Django's admin site only; platform staff powers come from platform_role.
    is_staff = models.BooleanField(default=False)
    date_joined = models.DateTimeField(default=timezone.now)
    # Part of every session's auth hash: replacing it signs out each session of the user
    # whose hash was made before (ADR 0077). Empty until the first replacement, which
    # keeps the hash of sessions made before this field existed.
    session_stamp = models.CharField(max_length=32, blank=True, default="", editable=False)

    objects: ClassVar[UserManager] = UserManager()

    USERNAME_FIELD = "email"
    EMAIL_FIELD = "email"
    REQUIRED_FIELDS: ClassVar[list[str]] = []

    class Meta:
        constraints = [
            models.UniqueConstraint(Lower("email"), name="accounts_user_email_ci_unique"),
        ]

    def __str__(self) -> str:
        return self.email

    def _get_session_auth_hash(self, secret: str | None = None) -> str:
        """Django's session hash (an HMAC of the password field), with `session_stamp`."""
        value = self.password if not self.session_stamp else f"{self.password}:{self.session_stamp}"
        return salted_hmac(
            "django.contrib.auth.models.AbstractBaseUser.get_session_auth_hash",
            value,
            secret=secret,
            algorithm="sha256",
        ).hexdigest()

    def clean(self) -> None:
        super().clean()
        self.email = normalize_email(self.email)

    @property
    def is_platform_staff(self) -> bool:
        return self.platform_role in (PlatformRole.PLATFORM_ADMIN, PlatformRole.PLATFORM_OWNER)

    @property
    def is_platform_owner(self) -> bool:
        return self.platform_role == PlatformRole.PLATFORM_OWNER


def new_passkey_id() -> str:
    return new_public_id("pk")


def new_challenge_id() -> str:
    return new_public_id("chl")


def new_session_id() -> str:
    return new_public_id("ses")


class MagicLinkToken(models.Model):
    """A sign-in link sent by email. Only the SHA-256 digest of the token is stored.

    `next_url` is the same-site path the sign-in continues to (validated when stored and
    again when used). A token is single use (`used_at`) and voided by a newer request.
    """

    email = models.EmailField(max_length=254, db_index=True)
    token_hash = models.CharField(max_length=64, unique=True)
    next_url = models.CharField(max_length=1024, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(db_index=True)
    used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"sign-in link for {self.email}"


class PasskeyUserHandle(models.Model):
    """The random 64-byte WebAuthn user handle of a user (base64url), one per user.

    Authenticators store it with a discoverable credential and return it at sign-in; it
    reveals nothing about the account (unlike an email or a database id).
    """

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="passkey_handle"
    )
    handle = models.CharField(max_length=88, unique=True)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"passkey handle of user {self.user_id}"


class PasskeyDevice(TimestampMixin, Device):
    """A WebAuthn credential, registered as a django-otp device.

    Being a django-otp device lets a passkey verify the session exactly like TOTP does
    (`django_otp.login`), so `request.user.is_verified()` holds after a passkey.
    """

    # django-otp's Device is untyped, so the field types are spelled out for mypy.
    public_id: models.CharField[str, str] = models.CharField(
        max_length=32, unique=True, default=new_passkey_id, editable=False
    )
    credential_id: models.CharField[str, str] = models.CharField(max_length=1400, unique=True)
    public_key: models.BinaryField[bytes, bytes] = models.BinaryField()
    sign_count: models.PositiveBigIntegerField[int, int] = models.PositiveBigIntegerField(default=0)
    transports = models.JSONField(default=list, blank=True)
    aaguid: models.CharField[str, str] = models.CharField(max_length=36, blank=True)
    backed_up: models.BooleanField[bool, bool] = models.BooleanField(default=False)

    class Meta(Device.Meta):
        verbose_name = "passkey"
        ordering = ["created_at", "id"]

    def verify_token(self, token: Any) -> bool:
        # A passkey proves itself through a WebAuthn assertion, never a typed token.
        return False


class RecoveryCodeDevice(ThrottlingMixin, TimestampMixin, Device):
    """The user's set of single-use recovery codes (one device per user).

    Codes are stored only as keyed digests (`RecoveryCode.code_hash`); a code is consumed by
    a successful verification. Failed attempts are throttled with exponential backoff.
    """

    class Meta(Device.Meta):
        verbose_name = "recovery code set"

    def get_throttle_factor(self) -> int:
        return int(getattr(settings, "OTP_RECOVERY_THROTTLE_FACTOR", 1))

    def verify_token(self, token: Any) -> bool:
        from accounts.recovery import recovery_code_digest

        allowed, _ = self.verify_is_allowed()
        if not allowed:
            return False
        digest = recovery_code_digest(user_id=self.user_id, code=str(token))
        matched: RecoveryCode | None = None
        for candidate in self.codes.filter(used_at__isnull=True):
            # Compare every candidate so the time taken does not depend on which matched.
            if constant_time_compare(candidate.code_hash, digest) and matched is None:
                matched = candidate
        if matched is None:
            self.throttle_increment(commit=True)
            return False
        matched.used_at = timezone.now()
        matched.save(update_fields=["used_at"])
        self.throttle_reset(commit=False)
        self.set_last_used_timestamp(commit=False)
        self.save()
        return True


class RecoveryCode(models.Model):
    device = models.ForeignKey(RecoveryCodeDevice, on_delete=models.CASCADE, related_name="codes")
    code_hash = models.CharField(max_length=64)
    used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["device", "code_hash"], name="accounts_recovery_code_unique"
            ),
        ]

    def __str__(self) -> str:
        return f"recovery code {self.pk} ({'used' if self.used_at else 'unused'})"


class ChallengePurpose(models.TextChoices):
    REGISTER = "register", "Register a passkey"
    SIGN_IN = "sign_in", "Sign in with a passkey"
    SECOND_FACTOR = "second_factor", "Passkey as second factor"


class WebAuthnChallenge(models.Model):
    """A WebAuthn challenge kept server-side: five-minute life, deleted when used."""

    public_id = models.CharField(
        max_length=32, unique=True, default=new_challenge_id, editable=False
    )
    purpose = models.CharField(max_length=20, choices=ChallengePurpose.choices)
    challenge = models.CharField(max_length=128, unique=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(db_index=True)

    def __str__(self) -> str:
        return f"{self.purpose} challenge {self.public_id}"


class UserSession(models.Model):
    """A signed-in browser session of a user, as the security page lists it (ADR 0082).

    Keyed by `key_digest`, the digest under which the session store keeps the session row
    (`accounts.session_store`): the session key itself is never stored. Deleting the
    session row through the store deletes this row too. `ip` and `user_agent` are those of
    the latest request, `last_seen_at` is refreshed at most once a minute.
    """

    public_id = models.CharField(max_length=32, unique=True, default=new_session_id, editable=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="signed_in_sessions"
    )
    key_digest = models.CharField(max_length=40, unique=True)
    user_agent = models.CharField(max_length=512, blank=True)
    ip = models.GenericIPAddressField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    last_seen_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-last_seen_at", "-id"]
        indexes = [
            models.Index(fields=["user", "-last_seen_at"], name="accounts_session_user_seen")
        ]

    def __str__(self) -> str:
        return f"session {self.public_id} of user {self.user_id}"
