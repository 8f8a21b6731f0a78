from __future__ import annotations

from typing import Any, ClassVar

from django.contrib.auth.models import AbstractBaseUser, BaseUserManager, PermissionsMixin
from django.db import models
from django.db.models.functions import Lower
from django.utils import timezone


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
        if not email:
            raise ValueError("An email is required.")
        user = self.model(email=normalize_email(email), **extra)
        if password:
            user.set_password(password)
        else:
            user.set_unusable_password()
        user.save(using=self._db)
        return user

    def create_superuser(self, email: str, password: str | None = None, **extra: Any) -> User:
        extra.setdefault("is_staff", True)
        extra.setdefault("is_superuser", True)
        extra.setdefault("platform_role", PlatformRole.PLATFORM_OWNER)
        return self.create_user(email, password, **extra)


class User(AbstractBaseUser, PermissionsMixin):
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

    def clean(self) -> None:
        super().clean()
        self.email = normalize_email(self.email)

    @property
    def is_platform_staff(self) -> bool:
        return self.platform_role in (PlatformRole.PLATFORM_ADMIN, PlatformRole.PLATFORM_OWNER)

    @property
    def is_platform_owner(self) -> bool:
        return self.platform_role == PlatformRole.PLATFORM_OWNER
