from django.urls import path

import config.converters  # noqa: F401  (registers <pid>, <token>)
from accounts import views

urlpatterns = [
    path("login/", views.login_view, name="login"),
    path("login/magic/<token:token>/", views.magic_link_view, name="magic-link"),
    path("login/2fa/", views.second_factor_view, name="second-factor"),
    path(
        "login/2fa/passkey/options/",
        views.second_factor_passkey_options,
        name="second-factor-passkey-options",
    ),
    path(
        "login/2fa/passkey/verify/",
        views.second_factor_passkey_verify,
        name="second-factor-passkey-verify",
    ),
    path("login/passkey/options/", views.passkey_sign_in_options, name="passkey-sign-in-options"),
    path("login/passkey/verify/", views.passkey_sign_in_verify, name="passkey-sign-in-verify"),
    path("logout/", views.logout_view, name="logout"),
    path("account/security/", views.security_view, name="account-security"),
    path(
        "account/sessions/<pid:public_id>/sign-out/",
        views.session_sign_out_view,
        name="session-sign-out",
    ),
    path(
        "account/sessions/sign-out-others/",
        views.sessions_sign_out_others_view,
        name="sessions-sign-out-others",
    ),
    path("account/totp/start/", views.totp_start_view, name="totp-start"),
    path("account/totp/", views.totp_setup_view, name="totp-setup"),
    path("account/totp/disable/", views.totp_disable_view, name="totp-disable"),
    path(
        "account/recovery-codes/regenerate/",
        views.recovery_codes_regenerate_view,
        name="recovery-codes-regenerate",
    ),
    path(
        "account/passkeys/register/options/",
        views.passkey_register_options,
        name="passkey-register-options",
    ),
    path("account/passkeys/register/", views.passkey_register, name="passkey-register"),
    path(
        "account/passkeys/<pid:public_id>/delete/",
        views.passkey_delete_view,
        name="passkey-delete",
    ),
]
