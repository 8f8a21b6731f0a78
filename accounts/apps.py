from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "Accounts"

    def ready(self) -> None:
        from django.contrib.auth.signals import user_logged_in

        from accounts.emails import EMAIL, send_email
        from accounts.signin import on_user_logged_in
        from outbox.services import register

        register(EMAIL, send_email)

        # Factor changes need a recent sign-in; every login() stamps the session.
        user_logged_in.connect(on_user_logged_in, dispatch_uid="accounts_stamp_signed_in")
