"""API-key authentication: the key headers of the catalogue's `[wire]`, by default
`Authorization: Bearer <key>` or `X-API-Key: <key>`.

The order of checks is fixed (docs/api.md, "Authentication"):

1. credentials read from the headers, in the declared order (`conflicting_credentials`
   when two headers carry different keys, `invalid_api_key` for a malformed Authorization
   header or an empty one);
2. `parse_key` rejects a wrong shape or checksum before any cache or database lookup;
3. `resolve_api_key` turns the key into an immutable `ApiKeyPrincipal` (the one lookup
   function: the verification cache of the next layer sits in front of it);
4. the principal's state: deleted → `invalid_api_key`, revoked → `api_key_revoked`,
   expired or rotated past grace → `api_key_expired`; then the org: suspended →
   `org_suspended`.

`request.user` is an `ApiKeyUser` (not a person: audit records the key as the actor) and
`request.auth` the principal.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.http import HttpRequest
from django.utils import timezone
from rest_framework.authentication import BaseAuthentication
from rest_framework.request import Request

from apikeys import keycache
from apikeys.catalogue import AUTHORIZATION, current
from apikeys.errors import ApiError
from apikeys.keys import key_digest, parse_key
from apikeys.models import IpMode
from apikeys.networks import IPNetwork, allows, networks_of
from config.net import client_ip
from orgs.models import OrgStatus
from orgs.plans import Limits


@dataclass(frozen=True, slots=True)
class ApiKeyPrincipal:
    """What the API knows about the presenting key: small, immutable, cacheable.

    It holds no secret (the digest identifies the key in caches). `org_*` fields are empty
    and `limits` is None for system keys, which belong to no org.
    """

    key_id: int
    public_id: str
    name: str
    display: str
    environment: str
    scopes: frozenset[str]
    digest: str
    expires_at: datetime | None
    revoked_at: datetime | None
    deleted: bool
    org_id: int | None
    org_public_id: str
    org_slug: str
    org_name: str
    org_status: str
    org_plan: str
    org_kyc_status: str
    limits: Limits | None
    meta: Mapping[str, Any] = field(default_factory=dict, hash=False, compare=False)
    # The IP allowlist (empty: anywhere) and whether it only reports (apikeys.networks).
    allowed_networks: tuple[IPNetwork, ...] = ()
    ip_report_only: bool = False
    leaked: bool = False

    @property
    def is_system(self) -> bool:
        return self.org_id is None

    def failure_code(self, now: datetime | None = None) -> str | None:
        """Why this key is refused at `now` (default: the current time, read only for a
        key that expires), or None when it is accepted.

        Time-based states are decided here, not at lookup, so a cached principal turns
        expired at the right moment.
        """
        if self.deleted:
            return "invalid_api_key"
        if self.revoked_at is not None:
            return "api_key_revoked"
        if self.expires_at is not None and self.expires_at <= (now or timezone.now()):
            return "api_key_expired"
        if not self.is_system and self.org_status != OrgStatus.ACTIVE:
            return "org_suspended"
        return None


class ApiKeyUser:
    """`request.user` for key-authenticated requests: a key, never a person.

    It is authenticated (DRF's own checks pass) but has no user row, no staff powers, and
    is not an `accounts.User`, so audit events name the key as the actor.
    """

    is_authenticated = True
    is_anonymous = False
    is_active = True
    is_staff = False
    is_superuser = False
    pk = None
    id = None

    def __init__(self, principal: ApiKeyPrincipal) -> None:
        self.principal = principal

    def __str__(self) -> str:
        return f"API key {self.principal.public_id}"

    def has_perm(self, perm: str, obj: Any = None) -> bool:
        return False


def resolve_api_key(raw: str) -> ApiKeyPrincipal | None:
    """The principal for a well-formed key `raw`, or None when no such key exists.

    The single lookup function of the pipeline. The verification cache
    (`apikeys.keycache`, keyed by the digest, invalidated by `apikeys.cache`) answers it
    with one Redis round trip and no query when warm, and reads the database otherwise;
    the state checks that follow (`failure_code`) run on every request. The found key's
    digest is compared in constant time before it is trusted.
    """
    digest = key_digest(raw)
    return principal_for(keycache.resolve(digest), digest)


_principals: dict[bytes, ApiKeyPrincipal] = {}
_PRINCIPALS_MAX = 4096


def principal_for(resolved: keycache.Resolved | None, digest: str) -> ApiKeyPrincipal | None:
    """The principal of a resolved key whose digest matches `digest` (constant time).

    A principal read from a cache entry is built once per process and entry: entries are
    immutable values (any change writes a new one).
    """
    if resolved is None or not hmac.compare_digest(resolved.key.digest, digest):
        return None
    entry = resolved.entry
    if entry is not None:
        found = _principals.get(entry)
        if found is not None:
            return found
    key, org = resolved.key, resolved.org
    principal = ApiKeyPrincipal(
        key_id=key.pk,
        public_id=key.public_id,
        name=key.name,
        display=key.display,
        environment=key.environment,
        scopes=frozenset(key.scopes),
        digest=key.digest,
        expires_at=key.expires_at,
        revoked_at=key.revoked_at,
        deleted=key.deleted_at is not None,
        org_id=org.pk if org is not None else None,
        org_public_id=org.public_id if org is not None else "",
        org_slug=org.slug if org is not None else "",
        org_name=org.name if org is not None else "",
        org_status=org.status if org is not None else "",
        org_plan=org.plan if org is not None else "",
        org_kyc_status=org.kyc_status if org is not None else "",
        limits=org.limits if org is not None else None,
        meta=key.meta or {},
        allowed_networks=networks_of(key.allowed_ips) if key.allowed_ips else (),
        ip_report_only=key.allowed_ips_mode == IpMode.REPORT,
        leaked=key.leaked_at is not None,
    )
    if entry is not None:
        if len(_principals) >= _PRINCIPALS_MAX:
            _principals.clear()
        _principals[entry] = principal
    return principal


_BEARER = "bearer"


def credentials_from_headers(request: Request | HttpRequest) -> str | None:
    """The raw key the request presents, or None when it presents none.

    The catalogue's key headers are read in their declared order and the first one sent
    wins; `Authorization` means `Bearer <key>`. Raises `conflicting_credentials` when two
    headers carry different keys and `invalid_api_key` for an Authorization header that is
    not `Bearer <one token>` or an empty key header.
    """
    meta = request.META
    found: str | None = None
    found_in = ""
    for header, name in current().key_header_names:
        value = meta.get(name)
        if value is None:
            continue
        if header.lower() == AUTHORIZATION:
            parts = value.split()
            if len(parts) != 2 or parts[0].lower() != _BEARER:
                raise ApiError(
                    "invalid_api_key",
                    "The Authorization header must be 'Bearer <key>'.",
                )
            value = parts[1]
        else:
            value = value.strip()
            if not value:
                raise ApiError("invalid_api_key", f"The {header} header is empty.")
        if found is None:
            found, found_in = value, header
        elif not hmac.compare_digest(found.encode("latin-1"), value.encode("latin-1")):
            raise ApiError(
                "conflicting_credentials",
                f"{found_in} and {header} carry different keys; send one.",
            )
    return found


def missing_key_error() -> ApiError:
    return ApiError("missing_api_key", f"No API key was sent. Use {current().key_headers_text()}.")


def authenticate_key(raw: str, *, now: datetime | None = None) -> ApiKeyPrincipal:
    """Verify `raw` and return its principal, or raise the table's 401/403 error.

    Authentication only: no limit is checked or counted (the admission pipeline,
    `apikeys.guard`, does that for every door).
    """
    if parse_key(raw) is None:
        raise ApiError("invalid_api_key")
    principal = resolve_api_key(raw)
    failure = "invalid_api_key" if principal is None else principal.failure_code(now)
    if failure is not None:
        raise ApiError(failure)
    assert principal is not None
    return principal


class ApiKeyAuthentication(BaseAuthentication):
    """DRF authentication class: `(ApiKeyUser, ApiKeyPrincipal)` or None without a key.

    The API's views do not call it: their pipeline (`apikeys.guard`) verifies the key and
    sets `request.user` and `request.auth` itself. It declares the scheme for OpenAPI and
    authenticates any other DRF view that lists it, enforcing the key's IP allowlist but
    neither rate limits nor usage (for those, use `apikeys.public`).
    """

    def authenticate(self, request: Request) -> tuple[ApiKeyUser, ApiKeyPrincipal] | None:
        raw = credentials_from_headers(request)
        if raw is None:
            return None
        principal = authenticate_key(raw)
        if (
            principal.allowed_networks
            and not principal.ip_report_only
            and not allows(principal.allowed_networks, client_ip(request._request, strict=True))
        ):
            # The key's IP allowlist holds here too (report-only recording and limits are
            # the pipeline's: views that need them use `apikeys.public`).
            raise ApiError("ip_not_allowed")
        return ApiKeyUser(principal), principal

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="api"'
