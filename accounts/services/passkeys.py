"""Passkeys (WebAuthn, py_webauthn 3): registration, sign-in, second factor, removal.

The relying party id and the accepted origins come from settings only
(`WEBAUTHN_RP_ID`, `WEBAUTHN_ORIGINS`), never from the request's Host header.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone
from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    options_to_json,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import (
    base64url_to_bytes,
    bytes_to_base64url,
    parse_authentication_credential_json,
    parse_client_data_json,
    parse_registration_credential_json,
)
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import (
    AuthenticationCredential,
    AuthenticatorSelectionCriteria,
    AuthenticatorTransport,
    PublicKeyCredentialDescriptor,
    RegistrationCredential,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)
from webauthn.registration.verify_registration_response import VerifiedRegistration

from accounts.models import (
    ChallengePurpose,
    PasskeyDevice,
    PasskeyUserHandle,
    User,
    WebAuthnChallenge,
)
from accounts.services._common import AccountError, security_notice, sign_out_other_sessions
from accounts.services.factors import (
    issue_recovery_codes_for_first_factor,
    void_recovery_codes_without_factor,
)
from orgs.actors import Actor
from orgs.services import audit_record

CHALLENGE_MAX_AGE = timedelta(minutes=5)
USER_HANDLE_BYTES = 64
MAX_PASSKEYS_PER_USER = 20
MAX_PASSKEY_NAME = 64
_CEREMONY_TIMEOUT_MS = 5 * 60 * 1000


class PasskeyError(AccountError):
    """A WebAuthn response was refused; `message` is safe to show."""


@dataclass(frozen=True)
class PasskeyRegistration:
    device: PasskeyDevice
    recovery_codes: list[str] = field(default_factory=list)


def _rp_id() -> str:
    return str(settings.WEBAUTHN_RP_ID)


def _origins() -> list[str]:
    return [str(origin).rstrip("/") for origin in settings.WEBAUTHN_ORIGINS]


def _new_challenge(*, purpose: str, user: User | None) -> WebAuthnChallenge:
    now = timezone.now()
    WebAuthnChallenge.objects.filter(expires_at__lt=now).delete()
    return WebAuthnChallenge.objects.create(
        purpose=purpose,
        challenge=bytes_to_base64url(secrets.token_bytes(32)),
        user=user,
        created_at=now,
        expires_at=now + CHALLENGE_MAX_AGE,
    )


@transaction.atomic
def _challenge_consume(*, challenge_id: str, purpose: str) -> WebAuthnChallenge | None:
    """Delete the challenge row and return it; committed on its own, before any check."""
    row = (
        WebAuthnChallenge.objects.select_for_update()
        .filter(public_id=challenge_id, purpose=purpose)
        .first()
    )
    if row is not None:
        row.delete()
    return row


def _challenge_take(*, challenge_id: str, purpose: str, user: User | None) -> bytes:
    """Use up the challenge (single use, even when it is then refused) and return it.

    The delete commits before any refusal is raised: raising inside the same atomic block
    would roll the delete back and leave an expired or wrong-user challenge usable.
    """
    row = _challenge_consume(challenge_id=challenge_id, purpose=purpose)
    if row is None:
        raise PasskeyError("challenge_invalid", "This passkey request has expired. Try again.")
    if row.expires_at <= timezone.now():
        raise PasskeyError("challenge_expired", "This passkey request has expired. Try again.")
    if user is not None and row.user_id != user.pk:
        raise PasskeyError("challenge_invalid", "This passkey request has expired. Try again.")
    return base64url_to_bytes(row.challenge)


def _refuse_cross_origin(client_data_json: bytes) -> None:
    try:
        client_data = parse_client_data_json(client_data_json)
    except WebAuthnException as exc:
        raise PasskeyError("invalid_credential", "The passkey response was malformed.") from exc
    if client_data.cross_origin:
        raise PasskeyError("cross_origin", "Passkeys cannot be used from an embedded page.")


def _user_handle(user: User) -> PasskeyUserHandle:
    handle, _ = PasskeyUserHandle.objects.get_or_create(
        user=user,
        defaults={"handle": bytes_to_base64url(secrets.token_bytes(USER_HANDLE_BYTES))},
    )
    return handle


def _descriptors(devices: list[PasskeyDevice]) -> list[PublicKeyCredentialDescriptor]:
    descriptors = []
    for device in devices:
        transports = []
        for value in device.transports or []:
            try:
                transports.append(AuthenticatorTransport(value))
            except ValueError:
                continue
        descriptors.append(
            PublicKeyCredentialDescriptor(
                id=base64url_to_bytes(device.credential_id), transports=transports or None
            )
        )
    return descriptors


@transaction.atomic
def passkey_registration_options(*, user: User) -> tuple[dict[str, Any], WebAuthnChallenge]:
    """Options for navigator.credentials.create(): a discoverable credential with user
    verification, excluding the user's existing passkeys."""
    handle = _user_handle(user)
    challenge = _new_challenge(purpose=ChallengePurpose.REGISTER, user=user)
    options = generate_registration_options(
        rp_id=_rp_id(),
        rp_name=str(settings.WEBAUTHN_RP_NAME),
        user_name=user.email,
        user_id=base64url_to_bytes(handle.handle),
        user_display_name=user.full_name or user.email,
        challenge=base64url_to_bytes(challenge.challenge),
        timeout=_CEREMONY_TIMEOUT_MS,
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.REQUIRED,
            user_verification=UserVerificationRequirement.REQUIRED,
        ),
        exclude_credentials=_descriptors(list(PasskeyDevice.objects.filter(user=user))),
    )
    return json.loads(options_to_json(options)), challenge


def _parse_registration(credential: Any) -> RegistrationCredential:
    if not isinstance(credential, dict):
        raise PasskeyError("invalid_credential", "The passkey response was malformed.")
    try:
        return parse_registration_credential_json(credential)
    except (WebAuthnException, ValueError, TypeError) as exc:
        raise PasskeyError("invalid_credential", "The passkey response was malformed.") from exc


def _parse_authentication(credential: Any) -> AuthenticationCredential:
    if not isinstance(credential, dict):
        raise PasskeyError("invalid_credential", "The passkey response was malformed.")
    try:
        return parse_authentication_credential_json(credential)
    except (WebAuthnException, ValueError, TypeError) as exc:
        raise PasskeyError("invalid_credential", "The passkey response was malformed.") from exc


def passkey_register(
    *,
    user: User,
    challenge_id: str,
    name: str,
    credential: Any,
    request: HttpRequest | None = None,
) -> PasskeyRegistration:
    """Verify a registration response and store the passkey.

    Invariants: the challenge is consumed first (a replay fails even if this attempt does);
    the response must come from one of the configured origins, for the configured RP id,
    with user verification, not cross-origin. The first factor brings recovery codes.
    """
    name = " ".join((name or "").split())[:MAX_PASSKEY_NAME] or "Passkey"
    expected_challenge = _challenge_take(
        challenge_id=challenge_id, purpose=ChallengePurpose.REGISTER, user=user
    )
    parsed = _parse_registration(credential)
    _refuse_cross_origin(parsed.response.client_data_json)
    try:
        verified = verify_registration_response(
            credential=parsed,
            expected_challenge=expected_challenge,
            expected_rp_id=_rp_id(),
            expected_origin=_origins(),
            require_user_verification=True,
        )
    except WebAuthnException as exc:
        raise PasskeyError("verification_failed", "The passkey could not be verified.") from exc
    return _passkey_store(user=user, name=name, verified=verified, parsed=parsed, request=request)


@transaction.atomic
def _passkey_store(
    *,
    user: User,
    name: str,
    verified: VerifiedRegistration,
    parsed: RegistrationCredential,
    request: HttpRequest | None,
) -> PasskeyRegistration:
    credential_id = bytes_to_base64url(verified.credential_id)
    if PasskeyDevice.objects.filter(credential_id=credential_id).exists():
        raise PasskeyError("already_registered", "This passkey is already registered.")
    if PasskeyDevice.objects.filter(user=user).count() >= MAX_PASSKEYS_PER_USER:
        raise PasskeyError("too_many", "You have reached the number of passkeys allowed.")
    transports = [str(getattr(t, "value", t)) for t in (parsed.response.transports or [])]
    device = PasskeyDevice.objects.create(
        user=user,
        name=name,
        confirmed=True,
        credential_id=credential_id,
        public_key=verified.credential_public_key,
        sign_count=verified.sign_count,
        transports=transports,
        aaguid=str(verified.aaguid or "")[:36],
        backed_up=bool(verified.credential_backed_up),
    )
    audit_record(
        action="user.passkey_added",
        request=request,
        actor=Actor.for_user(user),
        target=device,
        target_type="passkey",
        target_label=name,
    )
    security_notice(user=user, event=f"A passkey named “{name}” was added", request=request)
    # Sessions signed in without this factor end; this one proved it (ADR 0077).
    sign_out_other_sessions(user=user, request=request)
    codes = issue_recovery_codes_for_first_factor(user=user, request=request)
    return PasskeyRegistration(device=device, recovery_codes=codes)


@transaction.atomic
def passkey_authentication_options(
    *, purpose: str, user: User | None = None
) -> tuple[dict[str, Any], WebAuthnChallenge]:
    """Options for navigator.credentials.get().

    Sign-in (`user` None): discoverable credentials, user verification required, so the
    passkey alone is both factors. Second factor: the user's own passkeys, presence enough.
    """
    if purpose == ChallengePurpose.SIGN_IN:
        allow: list[PublicKeyCredentialDescriptor] = []
        verification = UserVerificationRequirement.REQUIRED
        user = None
    elif purpose == ChallengePurpose.SECOND_FACTOR and user is not None:
        devices = list(PasskeyDevice.objects.filter(user=user, confirmed=True))
        if not devices:
            raise PasskeyError("no_passkey", "You have no passkey registered.")
        allow = _descriptors(devices)
        verification = UserVerificationRequirement.PREFERRED
    else:
        raise PasskeyError("invalid_purpose", "Unknown passkey request.")
    challenge = _new_challenge(purpose=purpose, user=user)
    options = generate_authentication_options(
        rp_id=_rp_id(),
        challenge=base64url_to_bytes(challenge.challenge),
        timeout=_CEREMONY_TIMEOUT_MS,
        allow_credentials=allow,
        user_verification=verification,
    )
    return json.loads(options_to_json(options)), challenge


def passkey_authenticate(
    *,
    challenge_id: str,
    credential: Any,
    purpose: str,
    user: User | None = None,
    request: HttpRequest | None = None,
) -> PasskeyDevice:
    """Verify an assertion and return the passkey that made it.

    For sign-in, the credential must be discoverable (it returns our user handle) and the
    user verified; for a second factor it must belong to `user`. Sign-count regressions are
    refused unless both counts are zero (synced passkeys). The challenge is consumed first.
    """
    expected_challenge = _challenge_take(
        challenge_id=challenge_id,
        purpose=purpose,
        user=user if purpose == ChallengePurpose.SECOND_FACTOR else None,
    )
    parsed = _parse_authentication(credential)
    _refuse_cross_origin(parsed.response.client_data_json)
    try:
        return _passkey_verify_assertion(
            parsed=parsed,
            expected_challenge=expected_challenge,
            purpose=purpose,
            user=user,
            request=request,
        )
    except PasskeyError as exc:
        if purpose == ChallengePurpose.SECOND_FACTOR and user is not None:
            audit_record(
                action="user.second_factor_failed",
                request=request,
                actor=Actor.for_user(user),
                target=user,
                details={"method": "passkey", "reason": exc.code},
            )
        raise


@transaction.atomic
def _passkey_verify_assertion(
    *,
    parsed: AuthenticationCredential,
    expected_challenge: bytes,
    purpose: str,
    user: User | None,
    request: HttpRequest | None,
) -> PasskeyDevice:
    refused = PasskeyError("verification_failed", "The passkey could not be verified.")
    device = (
        PasskeyDevice.objects.select_for_update()
        .select_related("user")
        .filter(credential_id=bytes_to_base64url(parsed.raw_id), confirmed=True)
        .first()
    )
    if device is None or not device.user.is_active:
        raise PasskeyError("unknown_passkey", "This passkey is not registered here.")
    if purpose == ChallengePurpose.SIGN_IN:
        handle = PasskeyUserHandle.objects.filter(user=device.user).first()
        returned = parsed.response.user_handle
        if handle is None or returned is None or bytes_to_base64url(returned) != handle.handle:
            raise refused
    elif user is None or device.user_id != user.pk:
        raise refused
    try:
        verified = verify_authentication_response(
            credential=parsed,
            expected_challenge=expected_challenge,
            expected_rp_id=_rp_id(),
            expected_origin=_origins(),
            credential_public_key=bytes(device.public_key),
            credential_current_sign_count=device.sign_count,
            require_user_verification=purpose == ChallengePurpose.SIGN_IN,
        )
    except WebAuthnException as exc:
        raise refused from exc
    device.sign_count = verified.new_sign_count
    device.backed_up = bool(verified.credential_backed_up)
    device.last_used_at = timezone.now()
    device.save(update_fields=["sign_count", "backed_up", "last_used_at"])
    return device


@transaction.atomic
def passkey_delete(*, user: User, public_id: str, request: HttpRequest | None = None) -> None:
    device = PasskeyDevice.objects.filter(user=user, public_id=public_id).first()
    if device is None:
        raise AccountError("not_found", "No such passkey.")
    name = device.name
    target_id = device.public_id
    device.delete()
    audit_record(
        action="user.passkey_removed",
        request=request,
        actor=Actor.for_user(user),
        target_type="passkey",
        target_id=target_id,
        target_label=name,
    )
    security_notice(user=user, event=f"The passkey “{name}” was removed", request=request)
    void_recovery_codes_without_factor(user=user)
