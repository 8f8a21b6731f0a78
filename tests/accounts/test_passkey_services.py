from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.test import override_settings
from django.utils import timezone

from accounts import services
from accounts.models import (
    ChallengePurpose,
    PasskeyDevice,
    PasskeyUserHandle,
    RecoveryCode,
    User,
    WebAuthnChallenge,
)
from accounts.services import PasskeyError
from orgs.models import AuditEvent
from tests.accounts.authenticator import SoftAuthenticator, b64url_decode

ORIGIN = "https://latchkey.example"
RP_ID = "latchkey.example"

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.usefixtures("webauthn_settings"),
]


@pytest.fixture
def webauthn_settings() -> Any:
    with override_settings(WEBAUTHN_RP_ID=RP_ID, WEBAUTHN_ORIGINS=[ORIGIN]):
        yield


@pytest.fixture
def soft() -> SoftAuthenticator:
    return SoftAuthenticator(origin=ORIGIN)


def register(user: User, soft: SoftAuthenticator, **kwargs: Any) -> services.PasskeyRegistration:
    options, challenge = services.passkey_registration_options(user=user)
    return services.passkey_register(
        user=user,
        challenge_id=challenge.public_id,
        name="Laptop",
        credential=soft.register(options, **kwargs),
    )


def sign_in(soft: SoftAuthenticator, **kwargs: Any) -> PasskeyDevice:
    options, challenge = services.passkey_authentication_options(purpose=ChallengePurpose.SIGN_IN)
    return services.passkey_authenticate(
        challenge_id=challenge.public_id,
        credential=soft.assert_(options, **kwargs),
        purpose=ChallengePurpose.SIGN_IN,
    )


def test_registration_options_use_settings_and_a_random_64_byte_user_handle(user: User) -> None:
    options, challenge = services.passkey_registration_options(user=user)
    assert options["rp"] == {"id": RP_ID, "name": "Latchkey"}
    handle = PasskeyUserHandle.objects.get(user=user)
    assert len(b64url_decode(handle.handle)) == 64
    assert options["user"]["id"] == handle.handle
    assert options["authenticatorSelection"]["residentKey"] == "required"
    assert options["authenticatorSelection"]["userVerification"] == "required"
    assert options["challenge"] == challenge.challenge
    assert challenge.expires_at - challenge.created_at == timedelta(minutes=5)
    # A second user gets a different handle.
    other = User.objects.create_user("bob@example.com")
    other_options, _ = services.passkey_registration_options(user=other)
    assert other_options["user"]["id"] != options["user"]["id"]


def test_register_then_sign_in_with_a_discoverable_passkey(
    user: User, soft: SoftAuthenticator
) -> None:
    result = register(user, soft)
    assert result.device.user == user
    assert result.device.name == "Laptop"
    assert len(result.recovery_codes) == 10  # first factor brings recovery codes
    assert AuditEvent.objects.filter(action="user.passkey_added", actor_user=user).exists()

    device = sign_in(soft)
    assert device == result.device
    device.refresh_from_db()
    assert device.sign_count == 1
    assert device.last_used_at is not None


def test_second_passkey_gets_no_new_recovery_codes_and_existing_ones_are_excluded(
    user: User, soft: SoftAuthenticator
) -> None:
    register(user, soft)
    codes_before = set(RecoveryCode.objects.values_list("code_hash", flat=True))
    options, challenge = services.passkey_registration_options(user=user)
    assert [c["id"] for c in options["excludeCredentials"]] == [
        PasskeyDevice.objects.get(user=user).credential_id
    ]
    second = services.passkey_register(
        user=user,
        challenge_id=challenge.public_id,
        name="Phone",
        credential=soft.register(options),
    )
    assert second.recovery_codes == []
    assert set(RecoveryCode.objects.values_list("code_hash", flat=True)) == codes_before
    assert PasskeyDevice.objects.filter(user=user).count() == 2


def test_registration_from_a_wrong_origin_is_refused(user: User, soft: SoftAuthenticator) -> None:
    with pytest.raises(PasskeyError):
        register(user, soft, origin="https://evil.example")
    assert not PasskeyDevice.objects.exists()


def test_registration_for_a_wrong_rp_id_is_refused(user: User, soft: SoftAuthenticator) -> None:
    with pytest.raises(PasskeyError):
        register(user, soft, rp_id="evil.example")
    assert not PasskeyDevice.objects.exists()


def test_registration_without_user_verification_is_refused(
    user: User, soft: SoftAuthenticator
) -> None:
    with pytest.raises(PasskeyError):
        register(user, soft, user_verified=False)
    assert not PasskeyDevice.objects.exists()


def test_registration_marked_cross_origin_is_refused(user: User, soft: SoftAuthenticator) -> None:
    with pytest.raises(PasskeyError) as excinfo:
        register(user, soft, cross_origin=True)
    assert excinfo.value.code == "cross_origin"
    assert not PasskeyDevice.objects.exists()


def test_a_registration_challenge_works_once(user: User, soft: SoftAuthenticator) -> None:
    options, challenge = services.passkey_registration_options(user=user)
    credential = soft.register(options)
    services.passkey_register(
        user=user, challenge_id=challenge.public_id, name="A", credential=credential
    )
    with pytest.raises(PasskeyError):
        services.passkey_register(
            user=user, challenge_id=challenge.public_id, name="A", credential=credential
        )


def test_a_registration_challenge_of_another_user_is_refused(
    user: User, soft: SoftAuthenticator
) -> None:
    other = User.objects.create_user("mallory@example.com")
    options, challenge = services.passkey_registration_options(user=other)
    with pytest.raises(PasskeyError):
        services.passkey_register(
            user=user,
            challenge_id=challenge.public_id,
            name="A",
            credential=soft.register(options),
        )


def test_an_expired_challenge_is_refused(user: User, soft: SoftAuthenticator) -> None:
    register(user, soft)
    options, challenge = services.passkey_authentication_options(purpose=ChallengePurpose.SIGN_IN)
    WebAuthnChallenge.objects.filter(pk=challenge.pk).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    with pytest.raises(PasskeyError) as excinfo:
        services.passkey_authenticate(
            challenge_id=challenge.public_id,
            credential=soft.assert_(options),
            purpose=ChallengePurpose.SIGN_IN,
        )
    assert excinfo.value.code in {"challenge_expired", "challenge_invalid"}


def test_sign_in_from_a_wrong_origin_is_refused(user: User, soft: SoftAuthenticator) -> None:
    register(user, soft)
    with pytest.raises(PasskeyError):
        sign_in(soft, origin="https://evil.example")


def test_sign_in_for_a_wrong_rp_id_is_refused(user: User, soft: SoftAuthenticator) -> None:
    register(user, soft)
    with pytest.raises(PasskeyError):
        sign_in(soft, rp_id="evil.example")


def test_passwordless_sign_in_without_user_verification_is_refused(
    user: User, soft: SoftAuthenticator
) -> None:
    register(user, soft)
    with pytest.raises(PasskeyError):
        sign_in(soft, user_verified=False)


def test_sign_in_marked_cross_origin_is_refused(user: User, soft: SoftAuthenticator) -> None:
    register(user, soft)
    with pytest.raises(PasskeyError) as excinfo:
        sign_in(soft, cross_origin=True)
    assert excinfo.value.code == "cross_origin"


def test_a_replayed_sign_in_challenge_is_refused(user: User, soft: SoftAuthenticator) -> None:
    register(user, soft)
    options, challenge = services.passkey_authentication_options(purpose=ChallengePurpose.SIGN_IN)
    services.passkey_authenticate(
        challenge_id=challenge.public_id,
        credential=soft.assert_(options),
        purpose=ChallengePurpose.SIGN_IN,
    )
    with pytest.raises(PasskeyError):
        services.passkey_authenticate(
            challenge_id=challenge.public_id,
            credential=soft.assert_(options),
            purpose=ChallengePurpose.SIGN_IN,
        )


def test_a_failed_attempt_still_uses_up_the_challenge(user: User, soft: SoftAuthenticator) -> None:
    register(user, soft)
    options, challenge = services.passkey_authentication_options(purpose=ChallengePurpose.SIGN_IN)
    with pytest.raises(PasskeyError):
        services.passkey_authenticate(
            challenge_id=challenge.public_id,
            credential=soft.assert_(options, origin="https://evil.example"),
            purpose=ChallengePurpose.SIGN_IN,
        )
    with pytest.raises(PasskeyError):
        services.passkey_authenticate(
            challenge_id=challenge.public_id,
            credential=soft.assert_(options),
            purpose=ChallengePurpose.SIGN_IN,
        )


def test_a_sign_count_regression_is_refused(user: User, soft: SoftAuthenticator) -> None:
    register(user, soft)
    sign_in(soft, sign_count=5)
    with pytest.raises(PasskeyError):
        sign_in(soft, sign_count=5)
    with pytest.raises(PasskeyError):
        sign_in(soft, sign_count=3)
    assert PasskeyDevice.objects.get(user=user).sign_count == 5
    sign_in(soft, sign_count=6)


def test_an_all_zero_sign_count_is_accepted_for_synced_passkeys(
    user: User, soft: SoftAuthenticator
) -> None:
    register(user, soft)
    sign_in(soft, sign_count=0)
    sign_in(soft, sign_count=0)
    assert PasskeyDevice.objects.get(user=user).sign_count == 0


def test_sign_in_with_a_user_handle_of_someone_else_is_refused(
    user: User, soft: SoftAuthenticator
) -> None:
    register(user, soft)
    with pytest.raises(PasskeyError):
        sign_in(soft, user_handle=b"\x01" * 64)


def test_an_unknown_credential_is_refused(user: User) -> None:
    stranger = SoftAuthenticator(origin=ORIGIN)
    options, _ = services.passkey_registration_options(user=user)
    stranger.register(options)  # never sent to the server
    with pytest.raises(PasskeyError) as excinfo:
        sign_in(stranger)
    assert excinfo.value.code == "unknown_passkey"


def test_malformed_credentials_are_refused_cleanly(user: User, soft: SoftAuthenticator) -> None:
    register(user, soft)
    for bad in (None, "text", {"id": "x"}, {"id": 1, "rawId": [], "response": "x"}):
        _, challenge = services.passkey_authentication_options(purpose=ChallengePurpose.SIGN_IN)
        with pytest.raises(PasskeyError):
            services.passkey_authenticate(
                challenge_id=challenge.public_id, credential=bad, purpose=ChallengePurpose.SIGN_IN
            )


def test_second_factor_accepts_only_the_users_own_passkey_and_audits_failures(
    user: User, soft: SoftAuthenticator
) -> None:
    register(user, soft)
    options, challenge = services.passkey_authentication_options(
        purpose=ChallengePurpose.SECOND_FACTOR, user=user
    )
    assert [c["id"] for c in options["allowCredentials"]] == [
        PasskeyDevice.objects.get(user=user).credential_id
    ]
    device = services.passkey_authenticate(
        challenge_id=challenge.public_id,
        credential=soft.assert_(options, user_verified=False),  # presence is enough here
        purpose=ChallengePurpose.SECOND_FACTOR,
        user=user,
    )
    assert device.user == user

    other = User.objects.create_user("eve@example.com")
    other_soft = SoftAuthenticator(origin=ORIGIN)
    register(other, other_soft)
    options, challenge = services.passkey_authentication_options(
        purpose=ChallengePurpose.SECOND_FACTOR, user=user
    )
    with pytest.raises(PasskeyError):
        services.passkey_authenticate(
            challenge_id=challenge.public_id,
            credential=other_soft.assert_(options),
            purpose=ChallengePurpose.SECOND_FACTOR,
            user=user,
        )
    event = AuditEvent.objects.get(action="user.second_factor_failed", actor_user=user)
    assert event.details["method"] == "passkey"


def test_deleting_the_last_factor_removes_recovery_codes(
    user: User, soft: SoftAuthenticator
) -> None:
    result = register(user, soft)
    assert RecoveryCode.objects.filter(device__user=user).count() == 10
    services.passkey_delete(user=user, public_id=result.device.public_id)
    assert not PasskeyDevice.objects.filter(user=user).exists()
    assert not RecoveryCode.objects.filter(device__user=user).exists()
    assert AuditEvent.objects.filter(action="user.passkey_removed", actor_user=user).exists()


def test_a_user_cannot_delete_someone_elses_passkey(user: User, soft: SoftAuthenticator) -> None:
    result = register(user, soft)
    other = User.objects.create_user("eve@example.com")
    with pytest.raises(services.AccountError):
        services.passkey_delete(user=other, public_id=result.device.public_id)
    assert PasskeyDevice.objects.filter(pk=result.device.pk).exists()


def test_a_passkey_verifies_the_session_like_any_django_otp_device(
    user: User, soft: SoftAuthenticator
) -> None:
    from django_otp.models import Device

    device = register(user, soft).device
    loaded = Device.from_persistent_id(device.persistent_id)
    assert loaded == device
    assert device.verify_token("123456") is False


def test_an_expired_challenge_is_used_up_when_refused(user: User, soft: SoftAuthenticator) -> None:
    register(user, soft)
    options, challenge = services.passkey_authentication_options(purpose=ChallengePurpose.SIGN_IN)
    WebAuthnChallenge.objects.filter(pk=challenge.pk).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    with pytest.raises(PasskeyError) as excinfo:
        services.passkey_authenticate(
            challenge_id=challenge.public_id,
            credential=soft.assert_(options),
            purpose=ChallengePurpose.SIGN_IN,
        )
    assert excinfo.value.code == "challenge_expired"
    assert not WebAuthnChallenge.objects.filter(pk=challenge.pk).exists()


def test_another_users_challenge_is_used_up_when_refused(
    user: User, soft: SoftAuthenticator
) -> None:
    register(user, soft)
    other = User.objects.create_user("mallory@example.com")
    register(other, SoftAuthenticator(origin=soft.origin))
    options, challenge = services.passkey_authentication_options(
        purpose=ChallengePurpose.SECOND_FACTOR, user=other
    )
    with pytest.raises(PasskeyError) as excinfo:
        services.passkey_authenticate(
            challenge_id=challenge.public_id,
            credential=soft.assert_(options),
            purpose=ChallengePurpose.SECOND_FACTOR,
            user=user,
        )
    assert excinfo.value.code == "challenge_invalid"
    assert not WebAuthnChallenge.objects.filter(pk=challenge.pk).exists()
