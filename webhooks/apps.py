from django.apps import AppConfig


class WebhooksConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "webhooks"
    verbose_name = "Webhooks"

    def ready(self) -> None:
        from outbox.services import register
        from webhooks.delivery import BACKOFF, MAX_ATTEMPTS, WEBHOOK, send_delivery

        register(WEBHOOK, send_delivery, backoff=BACKOFF, max_attempts=MAX_ATTEMPTS)
