"""Every write of the accounts app. Keyword-only, typed, atomic, audited."""

from accounts.services._common import AccountError, security_notice
from accounts.services.factors import (
    VerifyOutcome,
    primary_factor_exists,
    recovery_codes_regenerate,
    second_factor_verify,
    totp_disable,
    totp_enrolment_confirm,
    totp_enrolment_start,
    user_signed_in_record,
    user_signed_out_record,
)
from accounts.services.magic_links import (
    MagicLinkSignIn,
    SignInLink,
    magic_link_consume,
    magic_link_digest,
    magic_link_request,
    sign_in_link_create,
)
from accounts.services.passkeys import (
    PasskeyError,
    PasskeyRegistration,
    passkey_authenticate,
    passkey_authentication_options,
    passkey_delete,
    passkey_register,
    passkey_registration_options,
)
from accounts.services.roles import user_set_platform_role
from accounts.services.sessions import (
    user_session_end,
    user_session_touch,
    user_sessions_end_others,
)

__all__ = [
    "AccountError",
    "MagicLinkSignIn",
    "PasskeyError",
    "PasskeyRegistration",
    "SignInLink",
    "VerifyOutcome",
    "magic_link_consume",
    "magic_link_digest",
    "magic_link_request",
    "passkey_authenticate",
    "passkey_authentication_options",
    "passkey_delete",
    "passkey_register",
    "passkey_registration_options",
    "primary_factor_exists",
    "recovery_codes_regenerate",
    "second_factor_verify",
    "security_notice",
    "sign_in_link_create",
    "totp_disable",
    "totp_enrolment_confirm",
    "totp_enrolment_start",
    "user_session_end",
    "user_session_touch",
    "user_sessions_end_others",
    "user_set_platform_role",
    "user_signed_in_record",
    "user_signed_out_record",
]
