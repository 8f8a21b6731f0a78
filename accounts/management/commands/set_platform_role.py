"""`python manage.py set_platform_role EMAIL platform_admin|platform_owner|none`."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.models import PlatformRole
from accounts.services import AccountError, user_set_platform_role
from orgs.actors import Actor


class Command(BaseCommand):
    help = "Give a user a platform role (platform_admin, platform_owner) or take it away (none)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("email")
        parser.add_argument("role", choices=list(PlatformRole.values))

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            user = user_set_platform_role(
                email=options["email"], role=options["role"], actor=Actor.system()
            )
        except AccountError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(f"{user.email} now has platform role {user.platform_role}.")
