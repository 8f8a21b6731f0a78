"""DRF endpoints of the public API (docs/api.md), mounted under /api/v1/.

Each view is built on a base of `apikeys.api_base` and declares the scope-registry
`resource` it guards; the base runs the whole pipeline (authentication, org checks, scope,
hooks) before any code here. Views validate input with a serializer, call one service or
selector, and shape the output. The org always comes from the key (`self.org`).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from django.db.models import QuerySet
from django.http import HttpResponse
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response

from apikeys import serializers as s
from apikeys.api_base import AnyKeyApiView, OrgApiView, PublicApiView, validated
from apikeys.errors import ApiError
from apikeys.models import ApiKey
from apikeys.scopes import (
    actions_in_use,
    all_resources,
    missing_scopes,
    preset_scopes,
    presets,
)
from apikeys.selectors import apikey_get_for_key, apikey_list_for_key
from apikeys.services import (
    apikey_create,
    apikey_delete,
    apikey_revoke,
    apikey_rotate,
    apikey_update,
)


class PingApi(PublicApiView):
    """Liveness: no key, no database. The benchmark's baseline."""

    @extend_schema(responses=s.OkSerializer, summary="Liveness check", tags=["meta"])
    def get(self, request: Request) -> Response:
        return Response({"ok": True})


class NotFoundApi(PublicApiView):
    """Every other path under /api/ and /gateway/: 404 `not_found` in the error shape, any
    method."""

    schema = None

    def run_handler(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        raise ApiError("not_found", "No such endpoint.")


class MeApi(AnyKeyApiView):
    """The presenting key, its organisation and its rate limits. Any valid key."""

    @extend_schema(responses=s.MeSerializer, summary="The calling key", tags=["meta"])
    def get(self, request: Request) -> HttpResponse:
        # The body depends on the principal only, an immutable value built once per process
        # and cache entry: it is rendered once per principal (docs/performance.md).
        p = self.principal
        found = _me_bodies.get(id(p))
        if found is None or found[0] is not p:
            if len(_me_bodies) >= _ME_BODIES_MAX:
                _me_bodies.clear()
            found = _me_bodies[id(p)] = (p, _ME_RENDERER.render(me_body(p)))
        return HttpResponse(found[1], content_type=_ME_RENDERER.media_type)


_ME_RENDERER = JSONRenderer()
_ME_BODIES_MAX = 4096
# id(principal) -> (principal, rendered body); the principal is kept so an id reused by
# another object after garbage collection can never match.
_me_bodies: dict[int, tuple[Any, bytes]] = {}


def me_body(p: Any) -> dict[str, Any]:
    """`GET me` in the schema's shape (`MeSerializer`, which documents it)."""
    body: dict[str, Any] = {
        "object": "me",
        "key": {
            "id": p.public_id,
            "name": p.name,
            "environment": p.environment,
            "scopes": sorted(p.scopes),
            "display": p.display,
            "expires_at": _iso(p.expires_at),
            "meta": dict(p.meta),
            "leaked": p.leaked,
        },
        "organization": None,
        "rate_limits": None,
    }
    if not p.is_system:
        body["organization"] = {
            "id": p.org_public_id,
            "slug": p.org_slug,
            "name": p.org_name,
            "plan": p.org_plan,
            "kyc_status": p.org_kyc_status,
            "status": p.org_status,
        }
    if p.limits is not None:
        body["rate_limits"] = {
            "per_minute": p.limits.per_minute,
            "burst": p.limits.burst,
            "monthly": p.limits.monthly,
        }
    return body


class ScopeCatalogueApi(AnyKeyApiView):
    """The resources, actions and presets keys of the caller's kind can hold. Any valid key."""

    @extend_schema(
        responses=s.ScopeCatalogueSerializer, summary="Scopes keys can hold", tags=["meta"]
    )
    def get(self, request: Request) -> Response:
        return Response(scope_catalogue(system=self.principal.is_system))


def scope_catalogue(*, system: bool) -> dict[str, Any]:
    """`GET scopes`: the registry as data (org resources, or system ones for system keys)."""
    return {
        "object": "scope_catalogue",
        "actions": actions_in_use(system),
        "resources": [
            {
                "name": r.name,
                "label": r.label,
                "description": r.description,
                "actions": list(r.actions),
                "implies": {a: sorted(r.grants(a) - {a}) for a in r.actions if r.grants(a) - {a}},
                "scopes": list(r.scopes),
            }
            for r in all_resources(system)
        ],
        "presets": [
            {
                "name": p.name,
                "label": p.label,
                "description": p.description,
                "scopes": preset_scopes(p),
            }
            for p in presets(system)
        ],
    }


def _iso(moment: datetime | None) -> str | None:
    """A datetime as DRF's `DateTimeField` writes it: ISO 8601 in UTC with `Z`."""
    if moment is None:
        return None
    text = moment.astimezone(UTC).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


# ---- API keys -------------------------------------------------------------------------------


class ApiKeyBase(OrgApiView):
    """Key endpoints. A test key sees and manages test keys only: live keys are a 404 to
    it, as another org's keys are (ADR 0043)."""

    resource = "api_keys"

    def visible_keys(
        self, *, environment: str | None = None, status: str | None = None
    ) -> QuerySet[ApiKey]:
        return apikey_list_for_key(
            org=self.org,
            viewer_environment=self.principal.environment,
            environment=environment,
            status=status,
        )

    def key(self, key_id: str) -> ApiKey:
        return apikey_get_for_key(
            org=self.org, viewer_environment=self.principal.environment, public_id=key_id
        )

    def check_may_hold(self, key: ApiKey) -> None:
        """A key acts on keys whose every scope it holds itself (no escalation)."""
        missing = missing_scopes(self.principal.scopes, key.scopes)
        if missing:
            raise ApiError(
                "insufficient_scope",
                f"The key making this request lacks the scope '{missing[0]}' that the "
                "target key holds.",
                required_scope=missing[0],
            )

    def created(self, key: ApiKey, secret: str) -> Response:
        data = s.ApiKeyWithSecretSerializer(key, context={"secret": secret}).data
        return Response(data, status=status.HTTP_201_CREATED)


class ApiKeyListApi(ApiKeyBase):
    """The organisation's keys (never their secrets); POST creates one."""

    @extend_schema(
        responses=s.ApiKeySerializer(many=True),
        parameters=[s.ApiKeyListQuerySerializer],
        summary="List API keys",
    )
    def get(self, request: Request) -> Response:
        """Filter by `status` (as of now) and `environment`; a test key sees test keys."""
        query = validated(s.ApiKeyListQuerySerializer, request.query_params)
        keys = self.visible_keys(environment=query.get("environment"), status=query.get("status"))
        return self.paginate(keys, s.ApiKeySerializer)

    @extend_schema(
        request=s.ApiKeyCreateSerializer,
        responses={201: s.ApiKeyWithSecretSerializer},
        summary="Create an API key",
    )
    def post(self, request: Request) -> Response:
        """Returns the secret once, in this response. The new key can hold only scopes the
        calling key holds; a test key creates test keys only; live keys need the
        organisation's KYC approved."""
        data = validated(s.ApiKeyCreateSerializer, request.data)
        key, secret = apikey_create(
            org=self.org,
            name=data["name"],
            environment=data["environment"],
            scopes=data["scopes"],
            expires_at=data["expires_at"],
            meta=data["meta"],
            allowed_ips=data["allowed_ips"],
            allowed_ips_mode=data["allowed_ips_mode"],
            actor=self.actor,
            request=request._request,
        )
        return self.created(key, secret)


class ApiKeyDetailApi(ApiKeyBase):
    """One key; PATCH edits its scopes and IP allowlist; DELETE removes it from every list
    and stops it at once."""

    @extend_schema(responses=s.ApiKeySerializer, summary="Get an API key")
    def get(self, request: Request, key_id: str) -> Response:
        return Response(s.ApiKeySerializer(self.key(key_id)).data)

    @extend_schema(
        request=s.ApiKeyUpdateSerializer,
        responses=s.ApiKeySerializer,
        summary="Edit an API key's scopes or IP allowlist",
    )
    def patch(self, request: Request, key_id: str) -> Response:
        """`scopes` replaces the key's scopes with a subset of the calling key's own (the
        calling key must also hold every scope the edited key holds now). `allowed_ips` and
        `allowed_ips_mode` set where it may be used from. In force from the next request,
        in every worker; audited as `api_key.updated`."""
        key = self.key(key_id)
        data = validated(s.ApiKeyUpdateSerializer, request.data)
        self.check_may_hold(key)
        apikey_update(
            key=key,
            actor=self.actor,
            request=request._request,
            **data,
        )
        return Response(s.ApiKeySerializer(_reload(self, key)).data)

    @extend_schema(responses={204: None}, summary="Delete an API key")
    def delete(self, request: Request, key_id: str) -> Response:
        key = self.key(key_id)
        apikey_delete(
            key=key,
            actor=self.actor,
            request=request._request,
        )
        return Response(status=status.HTTP_204_NO_CONTENT)


class ApiKeyRotateApi(ApiKeyBase):
    """Issue a successor with a new secret; the old key works for `grace_period` more."""

    @extend_schema(
        request=s.ApiKeyRotateSerializer,
        responses={201: s.ApiKeyWithSecretSerializer},
        summary="Rotate an API key",
    )
    def post(self, request: Request, key_id: str) -> Response:
        """Returns the successor and its secret once. The old key keeps working for
        `grace_period` seconds, then fails as expired. The calling key must hold every scope
        of the key it rotates."""
        key = self.key(key_id)
        data = validated(s.ApiKeyRotateSerializer, request.data)
        self.check_may_hold(key)
        successor, secret = apikey_rotate(
            key=key,
            grace=timedelta(seconds=data["grace_period"]),
            actor=self.actor,
            request=request._request,
        )
        return self.created(_reload(self, successor), secret)


class ApiKeyRevokeApi(ApiKeyBase):
    """Revoke a key at once and for good."""

    @extend_schema(
        request=s.EmptySerializer, responses=s.ApiKeySerializer, summary="Revoke an API key"
    )
    def post(self, request: Request, key_id: str) -> Response:
        key = self.key(key_id)
        validated(s.EmptySerializer, request.data)
        apikey_revoke(
            key=key,
            actor=self.actor,
            request=request._request,
        )
        return Response(s.ApiKeySerializer(_reload(self, key)).data)


# ---- helpers --------------------------------------------------------------------------------


def _reload(view: ApiKeyBase, key: ApiKey) -> ApiKey:
    """The key as lists show it (with creator and predecessor), after a write."""
    return view.visible_keys().get(pk=key.pk) if key.deleted_at is None else key
