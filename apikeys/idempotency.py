"""Idempotency keys for API mutations (docs/api.md, "Idempotency").

A POST, PATCH or DELETE must carry `Idempotency-Key` (plain `abc` or the quoted
structured-field form `"abc"`). Keys are scoped to the API key that sent them and kept
24 hours. Only a SHA-256 of the idempotency key is stored.

The protocol, on the `IdempotencyRecord` table:
1. Before the handler, a record `in_progress` with a 60-second claim is INSERTed in its own
   short transaction; the unique constraint (api key, key hash) makes a concurrent
   duplicate fail its insert and see the record: 409 `idempotency_key_in_use` while the
   claim runs, 422 `idempotency_key_reused` if method, path or body differ.
2. The handler runs in a transaction; if it succeeds (2xx) the record becomes `completed`
   with the status and the encrypted body IN THE SAME transaction, so the outcome is
   stored exactly when the writes are. The update is conditioned on still holding the
   claim, so a handler that outlived its claim rolls back instead of writing twice.
3. If the handler raised (rolled back) or answered 4xx/5xx, the record is deleted: nothing
   is stored and a corrected retry runs. Failures before the handler (authentication,
   scope, rate limit, a missing or invalid key) never create one.
4. A worker that died leaves its claim behind; after 60 seconds the next retry takes the
   claim over (a compare-and-set on the claim token) and runs.
5. A completed record is replayed: its status and body, `Idempotent-Replayed: true`.

Stored bodies are encrypted with AES-256-GCM under a key derived by HKDF-SHA256 from the
presenting API key's secret (known only while its request runs) and the idempotency key,
so a database dump reveals no response body (ADR 0063).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.db import IntegrityError, transaction
from django.http import HttpResponse
from django.utils import timezone

MUTATING_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
HEADER = "Idempotency-Key"
META_HEADER = "HTTP_IDEMPOTENCY_KEY"
MAX_LENGTH = 255
RETENTION = timedelta(hours=24)
CLAIM_TIME = timedelta(seconds=60)
REPLAYED_HEADER = "Idempotent-Replayed"

MISSING = "idempotency_key_missing"
INVALID = "idempotency_key_invalid"
IN_USE = "idempotency_key_in_use"
REUSED = "idempotency_key_reused"

_HKDF_SALT = b"latchkey/idempotency/v1"
_NONCE_BYTES = 12


class IdempotencyError(Exception):
    """A request refused by the idempotency layer; the pipeline renders it."""

    STATUS = {MISSING: 400, INVALID: 400, IN_USE: 409, REUSED: 422}
    MESSAGES = {
        MISSING: "This request changes data: send an Idempotency-Key header.",
        INVALID: (
            "Idempotency-Key must be 1 to 255 printable ASCII characters, plain or as a "
            'quoted string ("abc").'
        ),
        IN_USE: "A request with this Idempotency-Key is still running; retry shortly.",
        REUSED: (
            "This Idempotency-Key was already used for a different request (method, path "
            "or body); use a new key."
        ),
    }

    def __init__(self, code: str) -> None:
        super().__init__(self.MESSAGES[code])
        self.code = code
        self.status = self.STATUS[code]
        self.message = self.MESSAGES[code]
        self.headers = {"Retry-After": "1"} if code == IN_USE else {}


# --- the header -------------------------------------------------------------------------


def _printable(value: str) -> bool:
    return all(0x20 <= ord(c) <= 0x7E for c in value)


def parse_header(raw: str | None) -> str:
    """The idempotency key from the header value, or IdempotencyError.

    Accepts the plain form and the structured-field string form (RFC 8941 sf-string:
    double quotes, with `\\"` and `\\\\` as the only escapes).
    """
    if raw is None:
        raise IdempotencyError(MISSING)
    value = raw.strip(" \t")
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        value = _unquote(value[1:-1])
    elif value.startswith('"'):
        raise IdempotencyError(INVALID)
    if not value or len(value) > MAX_LENGTH or not _printable(value):
        raise IdempotencyError(INVALID)
    return value


def _unquote(inner: str) -> str:
    out = []
    chars = iter(inner)
    for char in chars:
        if char == "\\":
            escaped = next(chars, "")
            if escaped not in ('"', "\\"):
                raise IdempotencyError(INVALID)
            out.append(escaped)
        elif char == '"':
            raise IdempotencyError(INVALID)
        else:
            out.append(char)
    return "".join(out)


def key_hash(idempotency_key: str) -> str:
    return hashlib.sha256(idempotency_key.encode("ascii")).hexdigest()


def fingerprint(method: str, path: str, body: bytes) -> str:
    """SHA-256 over method, path (with query) and the canonical body.

    A JSON body is canonicalised (sorted keys, no insignificant whitespace), so the same
    document sent with different formatting is the same request; any other body is hashed
    as sent.
    """
    return fingerprint_of(method, path, body_hash(body))


def fingerprint_of(method: str, path: str, hashed_body: str) -> str:
    """`fingerprint` from the body's `body_hash`."""
    return hashlib.sha256(f"{method.upper()}\n{path}\n{hashed_body}".encode()).hexdigest()


def body_hash(body: bytes) -> str:
    """SHA-256 of the canonical body (see `fingerprint`)."""
    try:
        document = json.loads(body) if body.strip() else None
        canonical = json.dumps(
            document, sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode()
    except (ValueError, UnicodeDecodeError, RecursionError):
        canonical = b"raw:" + body
    return hashlib.sha256(canonical).hexdigest()


# Bodies up to this size are read whole (a JSON body is canonicalised; the API refuses
# larger JSON anyway); larger ones (multipart uploads) are hashed as a stream.
WHOLE_BODY_MAX = 1024 * 1024
_CHUNK = 64 * 1024


def request_body_hash(request: Any) -> str:
    """`body_hash` of a Django request's body, without holding a large body in memory.

    A body over WHOLE_BODY_MAX is read in chunks, hashed as sent (as `body_hash` hashes a
    non-JSON body) and spooled to a temporary file that becomes the request's stream, so
    the parsers read it after as if nothing had: a multipart upload of any size the
    request bound allows (`MAX_UPLOAD_REQUEST_BYTES`) gets its fingerprint. The caller
    closes the spool with `close_body_spool` once the request is handled.
    """
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length <= WHOLE_BODY_MAX:
        return body_hash(request.body)
    digest = hashlib.sha256(b"raw:")
    spool = tempfile.SpooledTemporaryFile(max_size=WHOLE_BODY_MAX)  # noqa: SIM115
    while chunk := request.read(_CHUNK):
        digest.update(chunk)
        spool.write(chunk)
    spool.seek(0)
    request._stream = spool
    request._read_started = False
    request._latchkey_spool = spool
    return digest.hexdigest()


def close_body_spool(request: Any) -> None:
    """Close (and so delete) the temporary file `request_body_hash` spooled the body to:
    once the handler has run, nothing reads it again."""
    spool = getattr(request, "_latchkey_spool", None)
    if spool is not None:
        spool.close()
        request._latchkey_spool = None


# --- encryption -------------------------------------------------------------------------


def _derive(api_key_secret: str, idempotency_key: str) -> bytes:
    hkdf = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=_HKDF_SALT,
        info=b"response:" + idempotency_key.encode("ascii"),
    )
    return hkdf.derive(api_key_secret.encode("utf-8"))


def seal(
    plaintext: bytes, *, api_key_secret: str, idempotency_key: str, associated: bytes
) -> bytes:
    """nonce || AES-256-GCM(plaintext), bound to `associated` (the record's fingerprint)."""
    nonce = os.urandom(_NONCE_BYTES)
    aead = AESGCM(_derive(api_key_secret, idempotency_key))
    return nonce + aead.encrypt(nonce, plaintext, associated)


def unseal(sealed: bytes, *, api_key_secret: str, idempotency_key: str, associated: bytes) -> bytes:
    """The plaintext; raises cryptography's InvalidTag for a wrong key or tampered data."""
    aead = AESGCM(_derive(api_key_secret, idempotency_key))
    return aead.decrypt(sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], associated)


# --- the record protocol ----------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    record_pk: int
    token: str


@dataclass(frozen=True)
class Replay:
    status: int
    content_type: str
    body: bytes


def _model() -> Any:
    from apikeys.models import IdempotencyRecord

    return IdempotencyRecord


def acquire(*, api_key_pk: int, khash: str, fp: str, now: datetime | None = None) -> Claim | Any:
    """Take the claim for (api key, key hash), or return the completed record to replay.

    Raises IdempotencyError(IN_USE) while another request holds the claim and
    IdempotencyError(REUSED) when the record belongs to a different request. Must run
    outside any transaction, so the claim is visible to concurrent duplicates at once.
    """
    model = _model()
    now = now or timezone.now()
    for _attempt in range(3):
        token = secrets.token_hex(16)
        try:
            with transaction.atomic():
                record = model.objects.create(
                    api_key_id=api_key_pk,
                    key_hash=khash,
                    fingerprint=fp,
                    state=model.State.IN_PROGRESS,
                    claim_token=token,
                    claim_expires_at=now + CLAIM_TIME,
                    created_at=now,
                    expires_at=now + RETENTION,
                )
            return Claim(record_pk=record.pk, token=token)
        except IntegrityError:
            pass
        existing = model.objects.filter(api_key_id=api_key_pk, key_hash=khash).first()
        if existing is None:
            continue  # deleted meanwhile (released or purged): try again
        if existing.expires_at <= now:
            model.objects.filter(pk=existing.pk, expires_at__lte=now).delete()
            continue
        if existing.fingerprint != fp:
            raise IdempotencyError(REUSED)
        if existing.state == model.State.COMPLETED:
            return existing
        if existing.claim_expires_at > now:
            raise IdempotencyError(IN_USE)
        # The holder died: take its lapsed claim over, if nobody else just did.
        taken = model.objects.filter(
            pk=existing.pk,
            state=model.State.IN_PROGRESS,
            claim_token=existing.claim_token,
            claim_expires_at__lte=now,
        ).update(claim_token=token, claim_expires_at=now + CLAIM_TIME)
        if taken:
            return Claim(record_pk=existing.pk, token=token)
        raise IdempotencyError(IN_USE)
    raise IdempotencyError(IN_USE)


class ClaimLost(Exception):
    """The handler outlived its claim and another request took it over."""


def complete(
    claim: Claim,
    *,
    status: int,
    content_type: str,
    body: bytes,
    api_key_secret: str,
    idempotency_key: str,
    fp: str,
) -> None:
    """Store the outcome; call inside the handler's transaction (same commit as its writes)."""
    sealed = seal(
        body, api_key_secret=api_key_secret, idempotency_key=idempotency_key, associated=fp.encode()
    )
    model = _model()
    updated = model.objects.filter(pk=claim.record_pk, claim_token=claim.token).update(
        state=model.State.COMPLETED,
        status_code=status,
        content_type=content_type[:100],
        response_body=sealed,
        claim_token="",
    )
    if not updated:
        raise ClaimLost()


def release(claim: Claim) -> None:
    """Drop the claim: nothing is stored, a retry runs."""
    _model().objects.filter(pk=claim.record_pk, claim_token=claim.token).delete()


def replay_response(record: Any, *, api_key_secret: str, idempotency_key: str) -> HttpResponse:
    body = unseal(
        bytes(record.response_body),
        api_key_secret=api_key_secret,
        idempotency_key=idempotency_key,
        associated=record.fingerprint.encode(),
    )
    response = HttpResponse(
        body, status=record.status_code, content_type=record.content_type or None
    )
    response[REPLAYED_HEADER] = "true"
    return response


def run(
    *,
    method: str,
    path: str,
    body: bytes | None = None,
    header: str | None,
    api_key_pk: int,
    api_key_secret: str,
    handler: Callable[[], HttpResponse],
    hashed_body: str | None = None,
) -> HttpResponse:
    """Run `handler` under the idempotency protocol; GET and other safe methods pass through.

    `handler` returns the response (rendered or renderable); exceptions it raises
    propagate after the claim is released, for the pipeline's exception handler.
    """
    if method.upper() not in MUTATING_METHODS:
        return handler()
    idempotency_key = parse_header(header)
    khash = key_hash(idempotency_key)
    if hashed_body is None:
        hashed_body = body_hash(body or b"")
    fp = fingerprint_of(method, path, hashed_body)
    outcome = acquire(api_key_pk=api_key_pk, khash=khash, fp=fp)
    if not isinstance(outcome, Claim):
        return replay_response(
            outcome, api_key_secret=api_key_secret, idempotency_key=idempotency_key
        )
    claim = outcome
    stored = False
    try:
        with transaction.atomic():
            response = handler()
            if 200 <= response.status_code < 300:
                render = getattr(response, "render", None)
                if callable(render):
                    render()
                complete(
                    claim,
                    status=response.status_code,
                    content_type=response.get("Content-Type", ""),
                    body=bytes(response.content),
                    api_key_secret=api_key_secret,
                    idempotency_key=idempotency_key,
                    fp=fp,
                )
                stored = True
    except ClaimLost:
        raise IdempotencyError(IN_USE) from None
    finally:
        if not stored:
            release(claim)
    return response


def purge_expired(*, now: datetime | None = None) -> int:
    """Delete records past their retention (24 hours); returns how many."""
    deleted, _ = _model().objects.filter(expires_at__lte=now or timezone.now()).delete()
    return int(deleted)
