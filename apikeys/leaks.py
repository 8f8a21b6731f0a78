"""Leak reports (docs/secret-scanning.md): two doors to `apikey_report_leaked`.

- `POST /api/v1/leaked-keys` (`LeakReportApi`): anyone, without a key, throttled per client
  IP, reports up to 100 strings and where they were found. The answer is 202 with the same
  body whatever the strings were, and every well-formed string costs the same lookup, so
  the endpoint tells nobody whether a string is a key.
- `POST /api/v1/secret-scanning/github` (`GithubSecretScanningApi`): GitHub's secret
  scanning partner alerts. The raw body's ECDSA P-256 / SHA-256 signature is verified
  against GitHub's published keys (`github_public_key`) before anything else is done; the
  answer labels each token `true_positive` or `false_positive` in GitHub's format.

Both find a string's key the same way (`find_key`: format and checksum, then the digest
lookup) and report only an organisation's key that still works (`ApiKey.is_usable`): the
service revokes it, or flags it under the organisation's "flag only" setting, once per key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import http.client
import io
import ipaddress
import json
import logging
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, ClassVar
from urllib.parse import urlsplit

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.core.cache import cache
from django.http import HttpRequest
from django_ratelimit.core import _get_window, _split_rate
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from accounts import throttles
from apikeys.api_base import MAX_BODY_BYTES, ApiJSONParser, PublicApiView, validated
from apikeys.errors import ApiError
from apikeys.keys import key_digest, parse_key
from apikeys.models import ApiKey
from apikeys.redisconn import ErrorLog
from apikeys.schema import ERROR_HEADERS, REQUEST_ID_HEADER, ApiAutoSchema, ApiErrorSerializer
from apikeys.selectors import apikey_get_by_digest
from apikeys.serializers import NamedEnumField, StrictCharField, StrictSerializer
from apikeys.services import apikey_report_leaked
from config.net import client_ip

logger = logging.getLogger("apikeys.leaks")

MAX_REPORTED_KEYS = 100
MAX_REPORTED_KEY_LENGTH = 200
MAX_REPORTED_URL_LENGTH = 2048
THROTTLE_GROUP = "apikeys.leaks.report.ip"

MAX_GITHUB_MATCHES = 1000
IDENTIFIER_HEADER = "Github-Public-Key-Identifier"
SIGNATURE_HEADER = "Github-Public-Key-Signature"
_IDENTIFIER_META = "HTTP_GITHUB_PUBLIC_KEY_IDENTIFIER"
_SIGNATURE_META = "HTTP_GITHUB_PUBLIC_KEY_SIGNATURE"
MAX_IDENTIFIER_LENGTH = 256
MAX_SIGNATURE_LENGTH = 512
TRUE_POSITIVE = "true_positive"
FALSE_POSITIVE = "false_positive"

# GitHub's keys document, shared by every process through the cache. GitHub allows 60
# unauthenticated requests an hour per address, so nothing a stranger sends may spend that
# allowance, and a fetch that fails must not stop real alerts:
# - the last good document is kept for KEYS_KEEP with the time it was fetched. It is fresh
#   for KEYS_TTL, then fetched again (at most once per REFETCH_INTERVAL); while that fails
#   the kept document stays in use. Only with no document at all is an alert refused (503).
# - an identifier the document does not hold (GitHub may have published a new key; anyone
#   can make one up) triggers a fetch at most once per UNKNOWN_REFETCH_INTERVAL.
KEYS_CACHE_KEY = "apikeys.leaks.github_keys.document"
KEYS_TTL = 60 * 60
KEYS_KEEP = 7 * 24 * 60 * 60
REFETCH_CACHE_KEY = "apikeys.leaks.github_keys.fetched"
REFETCH_INTERVAL = 60
UNKNOWN_REFETCH_CACHE_KEY = "apikeys.leaks.github_keys.unknown"
UNKNOWN_REFETCH_INTERVAL = 15 * 60
FETCH_TIMEOUT = 5.0
MAX_KEYS_DOCUMENT_BYTES = 256 * 1024
KEYS_RETRY_AFTER = 30


# ---- which key a string is -----------------------------------------------------------------


@dataclass(frozen=True)
class Found:
    """What a reported string is: `issued` when Latchkey issued it (whatever the key's
    state now); `live` the organisation key to report, when it still works."""

    issued: bool = False
    live: ApiKey | None = None


NOT_OURS = Found()


def find_key(raw: str) -> Found:
    """Format and checksum (no I/O), then one digest lookup for every well-formed string."""
    if parse_key(raw) is None:
        return NOT_OURS
    key = apikey_get_by_digest(key_digest(raw))
    if key is None:
        return NOT_OURS
    live = key if key.org_id is not None and key.is_usable() else None
    return Found(issued=True, live=live)


def report_leaked(key: ApiKey, *, source: str, url: str, request: HttpRequest) -> None:
    """`apikey_report_leaked`, one key at a time: a key whose report fails is logged (by
    its public id, never the string) and the others are still reported; the answer does
    not change. The service is atomic, so a failed report leaves that key as it was."""
    try:
        apikey_report_leaked(key=key, source=source, url=url, request=request)
    except Exception:
        logger.exception("Reporting leaked key %s (source %s) failed", key.public_id, source)


# ---- the schema of these two doors ----------------------------------------------------------


class _IntakeSchema(ApiAutoSchema):
    """ApiAutoSchema lists only 405/500/503 for a public operation; these take a body and
    refuse more, as `documented_errors` on the view says."""

    def _get_response_bodies(self, direction: Any = "response") -> dict[str, Any]:
        responses = super()._get_response_bodies(direction)
        error_ref = self.resolve_serializer(ApiErrorSerializer, "response").ref
        documented: Mapping[int, list[str]] = getattr(self.view, "documented_errors", {})
        for code, names in documented.items():
            if str(code) in responses:
                continue
            responses[str(code)] = {
                "description": "Error: " + ", ".join(f"`{name}`" for name in names) + ".",
                "content": {"application/json": {"schema": error_ref}},
                "headers": {**ERROR_HEADERS.get(code, {}), **REQUEST_ID_HEADER},
            }
        return dict(sorted(responses.items()))


class _IntakeApi(PublicApiView):
    """A public POST that reports leaks: answered at once, outside the idempotency protocol
    (which needs a key); a retried report does nothing twice (the service is once per
    key)."""

    idempotency_key_required = False
    # A list answer here is the whole answer (GitHub's format), never a page.
    pagination_class = None  # type: ignore[assignment]
    schema = _IntakeSchema()
    documented_errors: ClassVar[Mapping[int, list[str]]] = {}

    def post(self, request: Request) -> Response:
        raise NotImplementedError

    def run_handler(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        if (request.method or "").upper() == "POST":
            # A report comes from a stranger, never from a dashboard session that happens
            # to send its cookie; and the session must stay untouched, or its
            # `Vary: Cookie` would mark the answers that reported a real key.
            request._request.user = AnonymousUser()
            return self.post(request)
        return super().run_handler(request, *args, **kwargs)


# ---- POST leaked-keys ---------------------------------------------------------------------


class LeakReportSerializer(StrictSerializer):
    keys = serializers.ListField(
        child=StrictCharField(max_length=MAX_REPORTED_KEY_LENGTH),
        min_length=1,
        max_length=MAX_REPORTED_KEYS,
        help_text="The strings found (1 to 100, each at most 200 characters).",
    )
    url = StrictCharField(
        max_length=MAX_REPORTED_URL_LENGTH,
        required=False,
        allow_blank=True,
        help_text="Where they were found; passed on to the organisation's webhook.",
    )


class LeakReceiptSerializer(serializers.Serializer[Any]):
    received = serializers.IntegerField(
        min_value=1,
        max_value=MAX_REPORTED_KEYS,
        help_text="How many strings the report carried. The same answer whatever they were.",
    )


def _ip_key(group: str, request: HttpRequest) -> str:
    return throttle_address(client_ip(request))


def throttle_address(address: str | None) -> str:
    """Whom a report is counted against: an IPv4 address itself, an IPv6 address's /64
    (the least a single subscriber is given, so one network cannot take a fresh count per
    address), an IPv4-mapped IPv6 address as its IPv4 address.

    No address at all is "unknown", one count for all: the WSGI server sets REMOTE_ADDR and
    a trusted proxy forwards the client's, so only a broken setup gets there (a proxy on a
    Unix socket without TRUSTED_PROXY_HOPS). Anything else (a forwarded entry that is not
    an address) is counted as written."""
    if not address:
        return "unknown"
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))
    return str(ip)


def throttle_report(request: HttpRequest) -> None:
    """One report more from this client IP: 429 `rate_limited` once over LEAK_REPORT_RATE
    (the sign-in throttles' machinery, `accounts.throttles`)."""
    rate = settings.LEAK_REPORT_RATE
    if not throttles.limited(request, group=THROTTLE_GROUP, key=_ip_key, rate=rate):
        return
    _, period = _split_rate(rate)
    wait = _get_window(_ip_key(THROTTLE_GROUP, request), period) - int(time.time())
    raise ApiError(
        "rate_limited",
        "Too many leak reports from this address; retry later.",
        headers={"Retry-After": str(max(1, min(wait, period)))},
    )


class LeakReportApi(_IntakeApi):
    """Report strings found where they must not be. Needs no key."""

    documented_errors = {
        400: ["validation_error", "malformed_json"],
        413: ["request_too_large"],
        415: ["unsupported_media_type"],
        429: ["rate_limited"],
    }

    @extend_schema(
        request=LeakReportSerializer,
        responses={202: LeakReceiptSerializer},
        summary="Report leaked keys",
        tags=["leaked-keys"],
    )
    def post(self, request: Request) -> Response:
        """Each string that is a working key of this deployment is revoked at once (or
        flagged, under its organisation's "flag only" setting), and the organisation is
        told (audit `api_key.leaked`, webhook, email). The answer is the same whatever the
        strings were. Throttled per client IP (`LEAK_REPORT_RATE`)."""
        django_request = request._request
        throttle_report(django_request)
        data = validated(LeakReportSerializer, request.data)
        url = data.get("url", "")
        for raw in dict.fromkeys(data["keys"]):
            found = find_key(raw)
            if found.live is not None:
                report_leaked(found.live, source="report", url=url, request=django_request)
        return Response({"received": len(data["keys"])}, status=status.HTTP_202_ACCEPTED)


# ---- POST secret-scanning/github ---------------------------------------------------------


class AnyString(serializers.CharField):
    """Any JSON string, as sent: a scanner's match may hold what a form field may not."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(trim_whitespace=False, allow_blank=True, **kwargs)
        self.validators = []

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return data


class GithubMatchSerializer(serializers.Serializer[Any]):
    """One match of GitHub's alert. Fields GitHub may add later are ignored."""

    token = AnyString(help_text="The string that matched the registered pattern.")
    type = AnyString(required=False, help_text="The pattern's name, as registered with GitHub.")
    url = AnyString(required=False, help_text="Where it was found (may be empty).")
    # DRF moves declared fields off the class; the name only shadows Field's for mypy.
    source = AnyString(  # type: ignore[assignment]
        required=False, help_text="What it was found in: `content`, `commit`…"
    )


class GithubLabelSerializer(serializers.Serializer[Any]):
    token_hash = serializers.CharField(help_text="SHA-256 of the token, in hex.")
    token_type = serializers.CharField(help_text="The match's `type`, as sent.")
    # DRF moves declared fields off the class; the name only shadows Field's for mypy.
    label = NamedEnumField(  # type: ignore[assignment]
        enum_name="SecretScanningLabelEnum",
        choices=[TRUE_POSITIVE, FALSE_POSITIVE],
        help_text="`true_positive`: a key this deployment issued.",
    )


class GithubSecretScanningApi(_IntakeApi):
    """GitHub secret scanning partner alerts, signed by GitHub."""

    documented_errors = {
        400: ["validation_error", "malformed_json"],
        401: ["invalid_signature"],
        413: ["request_too_large"],
    }

    @extend_schema(
        request=GithubMatchSerializer(many=True),
        responses={200: GithubLabelSerializer(many=True)},
        parameters=[
            OpenApiParameter(
                IDENTIFIER_HEADER,
                str,
                OpenApiParameter.HEADER,
                required=True,
                description="The `key_identifier` of the GitHub key that signed the body.",
            ),
            OpenApiParameter(
                SIGNATURE_HEADER,
                {"type": "string", "pattern": "^[A-Za-z0-9+/]+={0,2}$"},
                OpenApiParameter.HEADER,
                required=True,
                description="Base64 of the DER ECDSA P-256 / SHA-256 signature of the raw body.",
            ),
        ],
        summary="GitHub secret scanning alert",
        tags=["leaked-keys"],
    )
    def post(self, request: Request) -> Response:
        """For GitHub only: the signature is verified against GitHub's published keys
        before anything else. Each token that is a working key of this deployment is
        reported leaked (source `github`); the answer labels every token."""
        django_request = request._request
        body = django_request.body
        if len(body) > MAX_BODY_BYTES:
            raise ApiError("request_too_large", f"The body is larger than {MAX_BODY_BYTES} bytes.")
        verify_github_signature(
            body,
            identifier=django_request.META.get(_IDENTIFIER_META, ""),
            signature=django_request.META.get(_SIGNATURE_META, ""),
        )
        matches = _github_matches(body)
        labels: dict[str, str] = {}
        answer = []
        for match in matches:
            token = match["token"]
            if token not in labels:
                found = find_key(token)
                if found.live is not None:
                    report_leaked(
                        found.live,
                        source="github",
                        url=match.get("url", ""),
                        request=django_request,
                    )
                labels[token] = TRUE_POSITIVE if found.issued else FALSE_POSITIVE
            answer.append(
                {
                    "token_hash": hashlib.sha256(
                        token.encode("utf-8", "surrogatepass")
                    ).hexdigest(),
                    "token_type": match.get("type", ""),
                    "label": labels[token],
                }
            )
        return Response(answer)


def _github_matches(body: bytes) -> list[dict[str, Any]]:
    parsed = ApiJSONParser().parse(io.BytesIO(body))
    if not isinstance(parsed, list):
        raise ApiError("validation_error", "The body must be a JSON array of matches.", param="")
    if len(parsed) > MAX_GITHUB_MATCHES:
        raise ApiError(
            "validation_error", f"At most {MAX_GITHUB_MATCHES} matches per request.", param=""
        )
    serializer = GithubMatchSerializer(data=parsed, many=True)
    serializer.is_valid(raise_exception=True)
    return [dict(match) for match in serializer.validated_data]


# ---- GitHub's signature ---------------------------------------------------------------------


def verify_github_signature(body: bytes, *, identifier: str, signature: str) -> None:
    """Raise 401 `invalid_signature` unless `signature` (base64 DER ECDSA) verifies `body`
    with the GitHub public key `identifier` names; 503 when GitHub's keys cannot be had.

    The headers are checked for shape before any key is looked up, so a request that could
    never verify costs nothing and makes no fetch."""
    identifier, signature = identifier.strip(), signature.strip()
    if not identifier or not signature:
        raise ApiError(
            "invalid_signature", f"Send {IDENTIFIER_HEADER} and {SIGNATURE_HEADER}.", param=""
        )
    if len(identifier) > MAX_IDENTIFIER_LENGTH or not identifier.isprintable():
        raise ApiError("invalid_signature", f"{IDENTIFIER_HEADER} is malformed.")
    try:
        if len(signature) > MAX_SIGNATURE_LENGTH:
            raise ValueError("too long")
        der = base64.b64decode(signature, validate=True)
        decode_dss_signature(der)
    except (ValueError, binascii.Error):
        raise ApiError("invalid_signature", f"{SIGNATURE_HEADER} is malformed.") from None
    public_key = github_public_key(identifier)
    if public_key is None:
        raise ApiError("invalid_signature", "The signing key is not one of GitHub's.")
    try:
        public_key.verify(der, body, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise ApiError("invalid_signature", "The signature does not verify.") from None


class KeysUnavailable(Exception):
    """GitHub's keys document could not be fetched or read."""


def github_public_key(identifier: str) -> ec.EllipticCurvePublicKey | None:
    """The GitHub secret scanning key `identifier` names, or None for an unknown one.

    GITHUB_SECRET_SCANNING_KEYS, when set, is the whole list. Otherwise the document at
    GITHUB_SECRET_SCANNING_KEYS_URL, kept and fetched again as the comment on KEYS_TTL
    says; with no document to be had, 503 `service_unavailable`, so GitHub retries."""
    configured = settings.GITHUB_SECRET_SCANNING_KEYS
    if configured:
        pem = _pems(configured).get(identifier)
        return None if pem is None else _load_key(pem)
    url = settings.GITHUB_SECRET_SCANNING_KEYS_URL
    if not url:
        return None
    pem = _github_pems(url, identifier).get(identifier)
    return None if pem is None else _load_key(pem)


def _github_pems(url: str, identifier: str) -> dict[str, str]:
    """The keys to check `identifier` against: the kept document, fetched again when it is
    stale, or when it lacks `identifier`, within the limits of the comment on KEYS_TTL."""
    kept = _kept_document()
    if kept is None:
        if not _may_fetch(REFETCH_CACHE_KEY, REFETCH_INTERVAL):
            raise _unavailable()  # a fetch failed a moment ago
        pems = _fetch_and_keep(url)
        if pems is None:
            raise _unavailable()
        return pems
    pems, age = kept
    if age >= KEYS_TTL:
        if _may_fetch(REFETCH_CACHE_KEY, REFETCH_INTERVAL):
            fetched = _fetch_and_keep(url)
            if fetched is None:
                logger.error(
                    "GitHub secret scanning keys: still using the document fetched %d s ago",
                    age,
                )
            pems = fetched or pems
    elif identifier not in pems and _may_fetch(UNKNOWN_REFETCH_CACHE_KEY, UNKNOWN_REFETCH_INTERVAL):
        pems = _fetch_and_keep(url) or pems  # GitHub may have published a new key
    return pems


def _now() -> float:
    """Wall-clock time: a kept document's age is read by every process, on every host."""
    return time.time()


def _kept_document() -> tuple[dict[str, str], float] | None:
    """The last good keys document and its age in seconds, unless older than KEYS_KEEP."""
    kept = _shared.get(KEYS_CACHE_KEY)
    if not isinstance(kept, dict):
        return None
    pems, fetched_at = kept.get("pems"), kept.get("fetched_at")
    if not isinstance(pems, dict) or not pems or not isinstance(fetched_at, int | float):
        return None
    age = _now() - fetched_at
    return (pems, age) if age < KEYS_KEEP else None


def _may_fetch(name: str, interval: int) -> bool:
    """True at most once per `interval` seconds for `name`, across processes.

    The time of the last fetch is kept under `name` (for `interval`); the next fetch is
    claimed by adding a marker named after that time, which only one process can add."""
    now = _now()
    last = _shared.get(name)
    if not isinstance(last, int | float):
        last = None
    elif 0 <= now - last < interval:
        return False
    if not _shared.add(f"{name}.after.{last}", interval):
        return False
    _shared.set(name, now, interval)
    return True


def _unavailable() -> ApiError:
    return ApiError(
        "service_unavailable",
        "GitHub's public keys cannot be fetched right now; retry later.",
        headers={"Retry-After": str(KEYS_RETRY_AFTER)},
    )


def _fetch_and_keep(url: str) -> dict[str, str] | None:
    """Fetch the document and keep it; None (logged) when it cannot be had or holds no
    usable key, and then the document kept before, if any, is left as it was."""
    try:
        pems = _pems(_fetch(url).get("public_keys"))
    except KeysUnavailable as exc:
        logger.error("GitHub secret scanning keys unavailable from %s: %s", url, exc)
        return None
    if not pems:
        logger.error("GitHub secret scanning keys document at %s holds no usable key", url)
        return None
    _shared.set(KEYS_CACHE_KEY, {"pems": pems, "fetched_at": _now()}, KEYS_KEEP)
    return pems


def _fetch(url: str) -> dict[str, Any]:
    if urlsplit(url).scheme not in ("https", "http"):
        raise KeysUnavailable("GITHUB_SECRET_SCANNING_KEYS_URL must be an http(s) URL")
    request = urllib.request.Request(  # noqa: S310  (the scheme is checked above)
        url, headers={"Accept": "application/json", "User-Agent": "Latchkey-secret-scanning"}
    )
    try:
        with urllib.request.urlopen(request, timeout=FETCH_TIMEOUT) as response:  # noqa: S310
            raw = response.read(MAX_KEYS_DOCUMENT_BYTES + 1)
    except (OSError, ValueError, http.client.HTTPException) as exc:
        raise KeysUnavailable(f"{type(exc).__name__}: {exc}") from None
    if len(raw) > MAX_KEYS_DOCUMENT_BYTES:
        raise KeysUnavailable("the document is too large")
    try:
        document = json.loads(raw.decode("utf-8"))
    except ValueError as exc:
        raise KeysUnavailable(f"not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise KeysUnavailable("not a JSON object")
    return document


def _pems(entries: Any) -> dict[str, str]:
    """identifier → PEM of every usable P-256 key in `entries` (`[{"key_identifier",
    "key"}, ...]`); anything else in the list is skipped."""
    pems: dict[str, str] = {}
    if not isinstance(entries, list):
        return pems
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        identifier, pem = entry.get("key_identifier"), entry.get("key")
        if isinstance(identifier, str) and isinstance(pem, str) and _load_key(pem) is not None:
            pems[identifier] = pem
    return pems


@lru_cache(maxsize=64)
def _load_key(pem: str) -> ec.EllipticCurvePublicKey | None:
    try:
        key = serialization.load_pem_public_key(pem.encode("utf-8"))
    except (ValueError, TypeError, UnicodeEncodeError):
        return None
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return key
    return None


class _SharedOrLocal:
    """The shared cache, or this process's memory while the cache is unreachable (as the
    sign-in throttles do): a Redis outage must not stop GitHub's alerts."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._local: dict[str, tuple[float, Any]] = {}
        self._errors = ErrorLog(logger_name="apikeys.leaks")

    def _shared(self, call: Callable[[], Any]) -> tuple[bool, Any]:
        try:
            return True, call()
        except throttles.CACHE_ERRORS as exc:
            self._errors.error("cache", "Cache unreachable: GitHub's keys kept in-process", exc)
            return False, None

    def get(self, name: str) -> Any:
        ok, value = self._shared(lambda: cache.get(name))
        if ok:
            return value
        with self._lock:
            expires, value = self._local.get(name, (0.0, None))
            return value if expires > time.monotonic() else None

    def set(self, name: str, value: Any, ttl: int) -> None:
        ok, _ = self._shared(lambda: cache.set(name, value, ttl))
        if not ok:
            with self._lock:
                self._local[name] = (time.monotonic() + ttl, value)

    def add(self, name: str, ttl: int) -> bool:
        """Set `name` unless it is set: True when this call set it."""
        ok, added = self._shared(lambda: cache.add(name, 1, ttl))
        if ok:
            return bool(added)
        with self._lock:
            expires, _ = self._local.get(name, (0.0, None))
            if expires > time.monotonic():
                return False
            self._local[name] = (time.monotonic() + ttl, 1)
            return True

    def clear_local(self) -> None:
        with self._lock:
            self._local.clear()


_shared = _SharedOrLocal()
