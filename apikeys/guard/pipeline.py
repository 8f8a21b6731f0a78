"""The admission pipeline: one entry, `admit(facts) -> Admission`, for every door.

It reads top to bottom, in the order docs/api.md ("Authentication") fixes:

1. credentials    the key from the catalogue's key headers (or given: the verify API);
                  none → 401 `missing_api_key`
2. verification   format and checksum (not again for a key this process has verified in
                  a round trip, ADR 0097), then the verification cache (`apikeys.keycache`);
                  on a warm cache the same Redis round trip also checks and counts the
                  rate limits (ADR 0064), or an admission lease of this process admits it
                  with no trip at all (ADR 0065). Deleted, revoked, expired keys and
                  suspended orgs are refused here
3. org checks     the door's key kind (org, system, any), the org header, the key's IP
                  allowlist (403 `ip_not_allowed`, or recorded only in "report only"
                  mode), the client headers (client version, actor)
4. scope          what the door requires (a view's resource and action, a gateway route,
                  the scopes a verify call names) → 403 `insufficient_scope`
5. limits         burst, minute and the monthly quota → 429 `rate_limited` /
                  `quota_exceeded`: the verdict of step 2 when it was reached there, else
                  one round trip now (`apikeys.ratelimit.check_limits`)

A refusal is an `Admission` with an `error`, never an exception out of `admit`; it is
settled at once in `_refuse`, the one place where a request counted in step 2 and then
refused before step 5 gets its count back. The door then runs its handler and calls
`settle(admission, status)` once with the response's status: usage records the status
class and the key's recent request, and `admission.limits.headers()` are the rate-limit
headers of the response.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from django.http import HttpRequest

from apikeys import keycache, networks_report, ratelimit, usage
from apikeys.authentication import (
    ApiKeyPrincipal,
    credentials_from_headers,
    missing_key_error,
    principal_for,
)
from apikeys.catalogue import current
from apikeys.errors import ApiError, spec_for
from apikeys.guard.counting import Early, counting
from apikeys.keys import MAX_KEY_LENGTH, key_digest, well_formed
from apikeys.networks import allows
from apikeys.scopes import has_scope
from config.net import client_ip

# Caller-supplied header values kept for usage and audit.
MAX_CLIENT_HEADER_LENGTH = 255


class Door(Protocol):
    """What an endpoint asks of the key, beyond being valid (steps 3 and 4)."""

    def check_key_kind(self, principal: ApiKeyPrincipal) -> None:
        """Raise `ApiError` when this kind of key (org or system) may not pass."""

    def required_scopes(self) -> Sequence[str]:
        """The scopes the request needs (empty: any valid key). May raise `ApiError`
        (the gateway: no route matches)."""


@dataclass(slots=True)
class Facts:
    """What the pipeline is asked about one request. Treated as immutable (not frozen
    for the cost, as `ratelimit.LimitResult`)."""

    request: HttpRequest  # headers, client IP and request id are read from it
    door: Door
    # The request usage counts: the request itself, or the one a gateway asks about.
    method: str
    path: str
    # The key to verify when it does not come from the headers (the verify API), which
    # also reads no client headers and counts the request only at the limits step.
    key: str | None = field(default=None, repr=False)
    # The scopes the request needs as far as the door knows before the key is verified,
    # space-separated: usage counts the request under each, whatever the outcome.
    scopes: str = ""
    # The address the request came from when it is not the request's own (the verify
    # API is told it); None: `config.net.client_ip(request)`.
    client_ip: str | None = None


@dataclass(slots=True)
class _Ticket:
    """How the request was counted."""

    count: Early
    # Counted with the verification, before the limits step: a refusal in between gives
    # the count back.
    counted_early: bool = False


@dataclass(slots=True)
class Admission:
    """The pipeline's outcome: admitted (`error` is None) or refused with `error`."""

    # The verified key; None when the request was refused before it was known.
    principal: ApiKeyPrincipal | None = None
    error: ApiError | None = None
    # The windows as the response's rate-limit headers report them (None: no key).
    limits: ratelimit.LimitResult | None = None
    client_version: str = ""
    external_actor_id: str = ""
    facts: Facts | None = field(default=None, repr=False)
    _ticket: _Ticket | None = field(default=None, repr=False)
    _settled: bool = field(default=False, repr=False)

    @property
    def admitted(self) -> bool:
        return self.error is None and self.principal is not None

    def headers(self) -> dict[str, str]:
        """The rate-limit headers of the response (none before the key was known)."""
        return self.limits.headers() if self.limits is not None else {}

    def write_headers(self, store: dict[str, tuple[str, str]]) -> None:
        """`headers()` written straight into a response's header store
        (`ratelimit.LimitResult.write_headers`)."""
        if self.limits is not None:
            self.limits.write_headers(store)


def admit(facts: Facts) -> Admission:
    """Run steps 1-5 for the request of `facts`; never raises for a refusal."""
    admission = Admission(facts=facts)
    try:
        _admit(facts, admission)
    except ApiError as error:
        _refuse(facts, admission, error)
    except Exception:
        # A fault of ours (a 500): whatever was counted early is given back all the same.
        _refuse(facts, admission, ApiError("internal_error"))
        raise
    return admission


def _admit(facts: Facts, admission: Admission) -> None:
    # 1. credentials
    raw = facts.key if facts.key is not None else credentials_from_headers(facts.request)
    if raw is None:
        raise missing_key_error()
    # 2. verification. A key this process has verified in a round trip is well formed
    # (its digest is a stored key's): the format and checksum are checked for any other.
    if not isinstance(raw, str) or len(raw) > MAX_KEY_LENGTH:
        raise ApiError("invalid_api_key")
    digest = key_digest(raw)
    if not counting().knows(digest) and not well_formed(raw):
        raise ApiError("invalid_api_key")
    principal = principal_for(_verify_and_count(facts, admission, digest), digest)
    if principal is None:
        raise ApiError("invalid_api_key")
    failure = principal.failure_code()
    if failure is not None:
        raise ApiError(failure)
    admission.principal = principal
    # 3. org checks
    facts.door.check_key_kind(principal)
    _check_org_header(facts.request, principal)
    if principal.allowed_networks:
        _check_network(facts, principal)
    if facts.key is None:
        admission.client_version, admission.external_actor_id = _client_headers(facts.request)
    # 4. scope
    for scope in facts.door.required_scopes():
        if not has_scope(principal.scopes, scope):
            raise ApiError(
                "insufficient_scope",
                f"This request needs the scope '{scope}'.",
                required_scope=scope,
            )
    # 5. limits and quota
    ticket = admission._ticket
    if ticket is None:
        now = ratelimit.clock()
        admission.limits = ratelimit.check_limits(
            key_pk=principal.key_id,
            org_pk=principal.org_id,
            limits=principal.limits,
            meta=_usage_meta(facts, admission),
            now=now,
        )
        ticket = admission._ticket = _Ticket(
            Early(admission.limits, now, principal.key_id, principal.org_id)
        )
    ticket.counted_early = False  # past the limiter: nothing to give back
    assert admission.limits is not None
    if not admission.limits.allowed:
        raise ApiError(admission.limits.code, headers=admission.limits.headers())


def _verify_and_count(facts: Facts, admission: Admission, digest: str) -> Any:
    """The key with `digest` resolved and, on the warm path, the request checked and
    counted against its limits in the same step (`counting`). A counted request leaves
    its verdict in `admission`. A key given in the facts (the verify API) is only
    resolved: its request is counted at the limits step."""
    if facts.key is not None:
        return keycache.resolve(digest)
    now = ratelimit.clock()
    resolved, early = counting().verify(digest, now, lambda: _usage_meta(facts, admission))
    if early is not None:
        admission.limits = early.result
        admission._ticket = _Ticket(early, counted_early=True)
    return resolved


def _check_org_header(request: HttpRequest, principal: ApiKeyPrincipal) -> None:
    catalogue = current()
    named = request.META.get(catalogue.org_header_meta)
    if named is None:
        return
    named = named.strip()
    if principal.is_system or named not in (principal.org_public_id, principal.org_slug):
        raise ApiError(
            "org_mismatch",
            f"{catalogue.wire.org_header} names an organisation other than the key's.",
            param=catalogue.wire.org_header,
        )


def _client_address(facts: Facts) -> str:
    if facts.client_ip is not None:
        return facts.client_ip
    return client_ip(facts.request) or ""


def _check_network(facts: Facts, principal: ApiKeyPrincipal) -> None:
    """The key's IP allowlist: a request from elsewhere is refused, or in "report only"
    mode admitted and recorded (usage and audit: `apikeys.networks_report`)."""
    # The verify API must be told the client's address: its caller's own says nothing.
    told = facts.key is None or facts.client_ip is not None
    if facts.client_ip is not None:
        address = facts.client_ip
    elif told:
        address = client_ip(facts.request, strict=True) or ""
    else:
        address = ""
    if allows(principal.allowed_networks, address):
        return
    networks_report.outside(
        principal,
        ip=address,
        method=facts.method,
        path=facts.path,
        request=facts.request,
        refused=not principal.ip_report_only,
    )
    if principal.ip_report_only:
        return
    if not told:
        raise ApiError(
            "ip_not_allowed",
            "This key carries an IP allowlist: send the client's address in `ip`.",
            param="ip",
        )
    raise ApiError(
        "ip_not_allowed",
        f"This key may not be used from {address or 'an unknown address'}: it is outside "
        "the key's IP allowlist.",
    )


def _printable_ascii(value: str) -> bool:
    return all(" " <= ch <= "~" for ch in value)


def _client_headers(request: HttpRequest) -> tuple[str, str]:
    """(client version, actor id), validated."""
    meta = request.META
    (version_header, version_name), (actor_header, actor_name) = current().client_headers
    version, actor = meta.get(version_name), meta.get(actor_name)
    if version is None and actor is None:  # most requests send neither
        return "", ""
    return _client_header(version_header, version), _client_header(actor_header, actor)


def _client_header(header: str, value: str | None) -> str:
    if value is None:
        return ""
    value = value.strip()
    if len(value) > MAX_CLIENT_HEADER_LENGTH or not _printable_ascii(value):
        raise ApiError(
            "validation_error",
            f"{header} must be at most {MAX_CLIENT_HEADER_LENGTH} printable ASCII characters.",
            param=header,
        )
    return value


def _usage_meta(facts: Facts, admission: Admission) -> ratelimit.UsageMeta:
    """What usage records about the request besides its count."""
    request = facts.request
    version = admission.client_version
    if not version and facts.key is None:
        # Not validated yet (or refused by that step): `usage.clean_version` drops an
        # invalid one.
        version = request.META.get(current().client_version_meta, "")
    return ratelimit.UsageMeta(
        ip=_client_address(facts),
        client_version=version,
        method=facts.method,
        path=facts.path,
        request_id=str(getattr(request, "request_id", "") or ""),
        scopes=facts.scopes,
    )


def _refuse(facts: Facts, admission: Admission, error: ApiError) -> None:
    """Settle a refusal: the one place a request counted early gets its count back."""
    admission.error = error
    admission._settled = True
    ticket = admission._ticket
    principal = admission.principal
    status = spec_for(error.code).status
    if ticket is not None and ticket.counted_early:
        ticket.counted_early = False
        result = counting().give_back(
            ticket.count, status=status, meta=_usage_meta(facts, admission)
        )
        # A key refused at verification gets no rate-limit headers.
        admission.limits = result if principal is not None else None
        return
    if principal is not None and admission.limits is None and status != 401:
        # Refused before the limiter (key kind, org, client headers, scope): counted for
        # usage only, the windows read for the headers. A 401 (the verify door refusing a
        # system key) says the key is not accepted: nothing is recorded.
        admission.limits = ratelimit.check_limits(
            key_pk=principal.key_id,
            org_pk=principal.org_id,
            limits=principal.limits,
            meta=_usage_meta(facts, admission),
            status_class=usage.status_class(status),
            count_limits=False,
            status=status,
        )


def settle(admission: Admission, status: int) -> None:
    """Record an admitted request's response `status` in usage (once; a refusal was
    settled by `admit`)."""
    if admission._settled:
        return
    admission._settled = True
    principal, ticket, result = admission.principal, admission._ticket, admission.limits
    if principal is None or ticket is None or result is None or admission.facts is None:
        return
    facts = admission.facts
    counting().record(ticket.count, status=status, meta=lambda: _usage_meta(facts, admission))
