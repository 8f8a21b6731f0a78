"""factory_boy factories shared by the whole suite."""

from __future__ import annotations

from typing import Any

import factory
from factory.django import DjangoModelFactory

from accounts.models import User
from apikeys.models import ApiKey
from orgs.models import Membership, Organization, Role


class UserFactory(DjangoModelFactory[User]):
    class Meta:
        model = User
        django_get_or_create = ("email",)

    email = factory.Sequence(lambda n: f"user{n}@example.com")

    @classmethod
    def _create(cls, model_class: type[User], *args: object, **kwargs: object) -> User:
        return model_class.objects.create_user(*args, **kwargs)  # type: ignore[arg-type]


class OrganizationFactory(DjangoModelFactory[Organization]):
    class Meta:
        model = Organization

    name = factory.Sequence(lambda n: f"Org {n}")
    slug = factory.Sequence(lambda n: f"org-{n}")


class MembershipFactory(DjangoModelFactory[Membership]):
    class Meta:
        model = Membership

    org = factory.SubFactory(OrganizationFactory)
    user = factory.SubFactory(UserFactory)
    role = Role.MEMBER


class ApiKeyFactory(DjangoModelFactory[ApiKey]):
    """API keys made as the product makes them (`apikey_create`): a real secret, its
    digest, the creation audit event. The secret is on the instance as `secret` (tests
    only); `ApiKeyFactory.pair(...)` returns `(key, secret)`."""

    class Meta:
        model = ApiKey

    org = factory.SubFactory(OrganizationFactory)
    name = "CI deploys"
    environment = "test"
    scopes: list[str] = []

    @classmethod
    def _create(cls, model_class: type[ApiKey], *args: object, **kwargs: Any) -> ApiKey:
        from apikeys.services import apikey_create
        from orgs.actors import Actor

        kwargs.setdefault("actor", Actor.system())
        key, secret = apikey_create(**kwargs)
        key.secret = secret  # type: ignore[attr-defined]
        return key

    @classmethod
    def pair(cls, **kwargs: Any) -> tuple[ApiKey, str]:
        key = cls.create(**kwargs)
        return key, key.secret  # type: ignore[attr-defined]
