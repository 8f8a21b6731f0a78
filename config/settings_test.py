"""Test settings: the production module with fast hashing, captured email and eager tasks.

DATABASE_URL and REDIS_URL still apply, so the same suite runs on the embedded defaults and
on PostgreSQL + Redis.
"""

from config.settings import *  # noqa: F403
from config.settings import CACHES, REDIS_URL, env

EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
CELERY_TASK_ALWAYS_EAGER = True
CELERY_BROKER_URL = "memory://"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# The outbox's retry thread of the embedded default (no beat) stays off: from its own
# thread it would reach the database between tests and while the run exits (a test that
# needs it sets an interval).
LATCHKEY_OUTBOX_RETRY_SECONDS = 0
# The suite tests the exact one-trip path everywhere and admission leases (ADR 0065) in
# tests of their own, which turn them on.
LATCHKEY_KEY_LEASE_MS = env.int("LATCHKEY_KEY_LEASE_MS", default=0)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
if REDIS_URL:
    # A prefix of its own so a test run never reads another run's counters.
    CACHES["default"]["KEY_PREFIX"] = env.str("CACHE_KEY_PREFIX", default="lktest")
