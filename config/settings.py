"""Latchkey settings: one module, driven by environment variables.

Every variable has a development default so that `make run` works on a fresh machine
(SQLite under var/, local-memory cache, eager Celery, console email). With DEBUG=False
the defaults that are unsafe in production are refused at start-up (see `_refuse_insecure`).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import django_stubs_ext
import environ
from django.core.exceptions import ImproperlyConfigured

# Lets admin.ModelAdmin[Model] and friends be subscripted at run time (typing only).
django_stubs_ext.monkeypatch()

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"

env = environ.Env()

DEV_SECRET_KEY = "dev-only-insecure-secret-key-change-me"
DEV_API_KEY_PEPPER = "dev-only-insecure-api-key-pepper-change-me"

DEBUG = env.bool("DEBUG", default=True)
SECRET_KEY = env.str("SECRET_KEY", default=DEV_SECRET_KEY)
API_KEY_PEPPER = env.str("API_KEY_PEPPER", default=DEV_API_KEY_PEPPER)
# Empty: the catalogue's `[wire] prefix`, else `lk` (apikeys.catalogue.Catalogue.prefix).
API_KEY_PREFIX = env.str("API_KEY_PREFIX", default="")
# The operator's product: resources, presets, routes and wire words (docs/catalogue.md).
LATCHKEY_CATALOGUE = env.str("LATCHKEY_CATALOGUE", default="")
REDIS_URL = env.str("REDIS_URL", default="")
# Redis behind Sentinel (docs/deployment.md, "Redis high availability"): the Sentinels as
# `host:port,host:port`; REDIS_URL then names the monitored service instead of a server,
# `redis://<service>/<db>` (e.g. `redis://latchkey/0`). Every process asks the Sentinels
# for the primary and follows a failover by itself.


def _sentinel_address(text: str) -> tuple[str, int]:
    """`host:port`, `[v6]:port` or a bare host (port 26379)."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        return host, int(rest.lstrip(":") or 26379)
    if text.count(":") == 1:
        host, port = text.split(":")
        return host, int(port)
    return text, 26379


REDIS_SENTINELS = [_sentinel_address(h) for h in env.list("REDIS_SENTINELS", default=[])]

SITE_URL = env.str("SITE_URL", default="http://localhost:8000").rstrip("/")
_site = urlsplit(SITE_URL)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[SITE_URL])

# WebAuthn relying party: from settings only, never from the Host header.
WEBAUTHN_RP_ID = env.str("WEBAUTHN_RP_ID", default=_site.hostname or "localhost")
WEBAUTHN_RP_NAME = env.str("WEBAUTHN_RP_NAME", default="Latchkey")
WEBAUTHN_ORIGINS = env.list("WEBAUTHN_ORIGINS", default=[SITE_URL])


def _refuse_insecure() -> None:
    """In production (DEBUG=False) refuse to start on development secrets or without Redis."""
    problems = []
    if SECRET_KEY == DEV_SECRET_KEY or len(SECRET_KEY) < 32:
        problems.append("set SECRET_KEY to a random value of at least 32 characters")
    if API_KEY_PEPPER == DEV_API_KEY_PEPPER or len(API_KEY_PEPPER) < 32:
        problems.append("set API_KEY_PEPPER to a random value of at least 32 characters")
    if not REDIS_URL:
        problems.append("set REDIS_URL (rate limits, usage counters and Celery need Redis)")
    if problems:
        raise ImproperlyConfigured(
            "Latchkey refuses to start with DEBUG=False: " + "; ".join(problems) + "."
        )


if not DEBUG and not env.bool("LATCHKEY_SKIP_PRODUCTION_CHECKS", default=False):
    _refuse_insecure()

INSTALLED_APPS = [
    "config.apps.LatchkeyAdminConfig",  # django.contrib.admin, verified owners only
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "outbox",
    "accounts",
    "orgs",
    "apikeys",
    "platform_admin",
    "webhooks",
]
# Host apps guarded by Latchkey keys (docs/guide/your-own-endpoints.md): Django apps
# added without editing Latchkey, and a module whose `urlpatterns` are served under /api/v1/.
LATCHKEY_EXTRA_APPS: list[str] = env.list("LATCHKEY_EXTRA_APPS", default=[])
INSTALLED_APPS += [app for app in LATCHKEY_EXTRA_APPS if app not in INSTALLED_APPS]
LATCHKEY_EXTRA_URLCONF = env.str("LATCHKEY_EXTRA_URLCONF", default="")

MIDDLEWARE = [
    "config.middleware.ReleaseRequestMiddleware",
    "config.middleware.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "csp.middleware.CSPMiddleware",
    # Before anything that reads a body (CSRF, forms, DRF's parsers).
    "config.middleware.BoundedBodyMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "accounts.middleware.SessionActivityMiddleware",
    "accounts.middleware.SecondFactorMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "config.context_processors.shell",
            ],
        },
    },
]

# Database: SQLite file under var/ unless DATABASE_URL is set.
VAR_DIR.mkdir(exist_ok=True)
DATABASES = {
    "default": env.db_url("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'latchkey.sqlite3'}"),
}
DATABASES["default"]["ATOMIC_REQUESTS"] = False
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Write transactions take SQLite's write lock when they begin and wait for it (up to
    # `timeout` seconds) instead of failing with "database is locked" when two requests
    # that read first try to write at once.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"transaction_mode": "IMMEDIATE", "timeout": 20}
    )
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("DB_CONN_MAX_AGE", default=60))
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    # An unreachable server fails a request in seconds (503, docs/product.md#reliability),
    # not after the operating system's TCP timeout; DATABASE_URL's own connect_timeout wins.
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault(
        "connect_timeout", env.int("DB_CONNECT_TIMEOUT", default=3)
    )

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "accounts.User"

# Cache: Redis when REDIS_URL is set, otherwise process-local memory.
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": env.str("CACHE_KEY_PREFIX", default="lk"),
            "OPTIONS": {
                "CLIENT_CLASS": "django_redis.client.DefaultClient",
                "SOCKET_CONNECT_TIMEOUT": 1,
                "SOCKET_TIMEOUT": 1,
            },
        }
    }
    if REDIS_SENTINELS:
        CACHES["default"]["OPTIONS"].update(
            {
                "CLIENT_CLASS": "django_redis.client.SentinelClient",
                "CONNECTION_FACTORY": "django_redis.pool.SentinelConnectionFactory",
                "SENTINELS": REDIS_SENTINELS,
                "SENTINEL_KWARGS": {"socket_connect_timeout": 1, "socket_timeout": 1},
            }
        )
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": "latchkey",
        }
    }

# Django's database sessions, stored under a digest of the key (ADR 0082).
SESSION_ENGINE = "accounts.session_store"
SESSION_COOKIE_NAME = env.str("SESSION_COOKIE_NAME", default="latchkey_session")
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_SECURE = not DEBUG
SESSION_COOKIE_AGE = env.int("SESSION_COOKIE_AGE", default=60 * 60 * 24 * 14)
CSRF_COOKIE_SECURE = not DEBUG
CSRF_COOKIE_SAMESITE = "Lax"

# Security headers.
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SECURE_HSTS_SECONDS = 0 if DEBUG else env.int("SECURE_HSTS_SECONDS", default=31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = not DEBUG
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=False)
if env.bool("BEHIND_TLS_PROXY", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# Content-Security-Policy: no inline scripts, ever; only our own origin.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "frame-ancestors": ["'none'"],
        "form-action": ["'self'"],
    },
}

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = VAR_DIR / "staticfiles"
STATIC_ROOT.mkdir(exist_ok=True)
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}
# Private uploads (KYC documents): outside any public path, served only through views.
PRIVATE_MEDIA_ROOT = Path(env.str("PRIVATE_MEDIA_ROOT", default=str(VAR_DIR / "private")))

# KYC uploads: each document at most KYC_DOCUMENT_MAX_BYTES, at most KYC_MAX_DOCUMENTS per
# application; PDF, PNG and JPEG only, recognised by their first bytes (ADR 0050).
KYC_DOCUMENT_MAX_BYTES = env.int("KYC_DOCUMENT_MAX_BYTES", default=10 * 1024 * 1024)
KYC_MAX_DOCUMENTS = env.int("KYC_MAX_DOCUMENTS", default=5)
# Request bodies are refused (413) before anything reads them when larger than this
# (config.middleware.BoundedBodyMiddleware); views that take document uploads allow every
# document at its largest, base64-encoded, plus the form.
MAX_REQUEST_BYTES = env.int("MAX_REQUEST_BYTES", default=1024 * 1024)
MAX_UPLOAD_REQUEST_BYTES = env.int(
    "MAX_UPLOAD_REQUEST_BYTES",
    default=KYC_MAX_DOCUMENTS * KYC_DOCUMENT_MAX_BYTES * 4 // 3 + 1024 * 1024,
)

LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/"

# Accounts: magic links, throttles and two-factor (see docs/adr/0010-0014).
MAGIC_LINK_MAX_AGE = env.int("MAGIC_LINK_MAX_AGE", default=15 * 60)
MAGIC_LINK_RATE_PER_EMAIL = env.str("MAGIC_LINK_RATE_PER_EMAIL", default="5/15m")
MAGIC_LINK_RATE_PER_IP = env.str("MAGIC_LINK_RATE_PER_IP", default="100/h")
PASSKEY_RATE_PER_IP = env.str("PASSKEY_RATE_PER_IP", default="60/h")
OTP_TOTP_ISSUER = "Latchkey"
OTP_TOTP_THROTTLE_FACTOR = 1
OTP_RECOVERY_THROTTLE_FACTOR = 1
OTP_ADMIN_HIDE_SENSITIVE_DATA = True

# Email: EMAIL_URL in django-environ syntax; console in development.
EMAIL_CONFIG = env.email_url("EMAIL_URL", default="consolemail://")
EMAIL_BACKEND = EMAIL_CONFIG["EMAIL_BACKEND"]
EMAIL_HOST = EMAIL_CONFIG.get("EMAIL_HOST", "localhost")
EMAIL_PORT = EMAIL_CONFIG.get("EMAIL_PORT", 25)
EMAIL_HOST_USER = EMAIL_CONFIG.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = EMAIL_CONFIG.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = EMAIL_CONFIG.get("EMAIL_USE_TLS", False)
EMAIL_USE_SSL = EMAIL_CONFIG.get("EMAIL_USE_SSL", False)
EMAIL_TIMEOUT = 10
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="Latchkey <no-reply@latchkey.local>")

# Celery: Redis broker in production; tasks run eagerly when no broker is configured.
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=REDIS_URL or "memory://")
CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, object] = {}
if REDIS_SENTINELS and not env.str("CELERY_BROKER_URL", default=""):
    # kombu's Sentinel transport: every Sentinel, and the service REDIS_URL names.
    _service = urlsplit(REDIS_URL)
    CELERY_BROKER_URL = ";".join(f"sentinel://{h}:{p}{_service.path}" for h, p in REDIS_SENTINELS)
    CELERY_BROKER_TRANSPORT_OPTIONS = {"master_name": _service.hostname or ""}
CELERY_RESULT_BACKEND = None
# Webhooks (docs/webhooks.md, ADR 0083): URLs resolving to private, loopback or link-local
# addresses are refused unless this is set (a receiver on the same machine, in tests).
WEBHOOK_ALLOW_PRIVATE = env.bool("WEBHOOK_ALLOW_PRIVATE", default=False)
# The whole of one attempt (resolve, connect, TLS, send, read), whatever the receiver does.
WEBHOOK_TIMEOUT_SECONDS = env.float("WEBHOOK_TIMEOUT_SECONDS", default=10.0)
WEBHOOK_MAX_ENDPOINTS = env.int("WEBHOOK_MAX_ENDPOINTS", default=20)
# Leak reports (docs/secret-scanning.md). `POST /api/v1/leaked-keys` takes no key: this
# many reports per client IP (django-ratelimit rate syntax).
LEAK_REPORT_RATE = env.str("LEAK_REPORT_RATE", default="30/h")
# GitHub secret scanning alerts (`POST /api/v1/secret-scanning/github`) are verified with
# GitHub's published public keys, fetched from this URL and cached for an hour; empty
# turns fetching off. When GITHUB_SECRET_SCANNING_KEYS is set (JSON: a list of
# {"key_identifier": ..., "key": "<PEM>"}) those keys are used instead and nothing is
# fetched (tests, a deployment without egress).
GITHUB_SECRET_SCANNING_KEYS_URL = env.str(
    "GITHUB_SECRET_SCANNING_KEYS_URL",
    default="https://api.github.com/meta/public_keys/secret_scanning",
)
GITHUB_SECRET_SCANNING_KEYS = env.json("GITHUB_SECRET_SCANNING_KEYS", default=[])
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=not REDIS_URL)
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_IGNORE_RESULT = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULE: dict[str, dict[str, object]] = {
    # API usage counters folded from Redis into the database: at least once a minute.
    "apikeys-fold-usage": {"task": "apikeys.tasks.fold_usage", "schedule": 30.0},
    # Idempotency records past their 24 hours (and old usage-fold markers).
    "apikeys-purge-idempotency": {
        "task": "apikeys.tasks.purge_idempotency_records",
        "schedule": 3600.0,
    },
    # Verification-cache invalidations that could not reach Redis (ADR 0078).
    "apikeys-apply-pending-invalidations": {
        "task": "apikeys.tasks.apply_pending_invalidations",
        "schedule": 30.0,
    },
    # Outbox messages the broker never took (it was down), and retries that are due.
    "outbox-deliver-due": {"task": "outbox.tasks.deliver_due", "schedule": 30.0},
    # api_key.expiring (7 days, 1 day before) and api_key.expired, once each (docs/webhooks.md).
    "webhooks-scan-key-expiry": {"task": "webhooks.tasks.scan_key_expiry", "schedule": 3600.0},
    # quota.warning (80 %) and quota.exhausted, once per org and month, after the fold above.
    "webhooks-scan-quotas": {"task": "webhooks.tasks.scan_quotas", "schedule": 600.0},
}
# Without a Celery worker (embedded default) a thread in the serving process folds usage
# counters into the database this often, and once more at exit; 0 turns it off.
LATCHKEY_USAGE_FLUSH_SECONDS = env.float("LATCHKEY_USAGE_FLUSH_SECONDS", default=30.0)

# Admission leases (ADR 0065, 0090, 0091): a key busy on this host is admitted by every
# worker of the host from a block of already-counted tokens, without a Redis call per
# request, within one second, while the host's reading of the lease epoch is younger than
# this many ms; an invalidation (revoke, suspension, limit change) waits this long at most.
# 0 turns leases off.
LATCHKEY_KEY_LEASE_MS = env.int("LATCHKEY_KEY_LEASE_MS", default=200)
# The largest block one lease takes (ADR 0098; never more than a quarter of what the burst
# window has left, a sixteenth of the minute window, a 256th of the month).
LATCHKEY_KEY_LEASE_TOKENS = env.int("LATCHKEY_KEY_LEASE_TOKENS", default=256)
# The host's lease table: a file in /dev/shm by default (one per host, Redis database and
# key prefix); set a path to place it elsewhere.
LATCHKEY_LEASE_TABLE = env.str("LATCHKEY_LEASE_TABLE", default="")

# django-ratelimit: counters in the default cache (Redis in production).
RATELIMIT_USE_CACHE = "default"
RATELIMIT_VIEW = "accounts.views.ratelimited"
RATELIMIT_FAIL_OPEN = False
SILENCED_SYSTEM_CHECKS = ["django_ratelimit.E003", "django_ratelimit.W001"]

# The API's pipeline lives in apikeys/api_base.py (ADR 0040); these are only defaults.
REST_FRAMEWORK = {
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": [],
    "UNAUTHENTICATED_USER": None,
    "EXCEPTION_HANDLER": "apikeys.exceptions.api_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "apikeys.schema.ApiAutoSchema",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Latchkey API",
    "DESCRIPTION": (
        "Organisation-scoped API guarded by Latchkey API keys. Every error is "
        '`{"error": {"type", "code", "message", "request_id", ...}}`; see docs/api.md.'
    ),
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "apikeys.schema.describe_catalogue",
    ],
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SCHEMA_PATH_PREFIX": "/api/v1",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "KeyEnvironmentEnum": ["live", "test"],
        "AnyKeyEnvironmentEnum": ["live", "test", "sys"],
        # Values only: the serializers' ChoiceFields are built from `.values`.
        "OrgStatusEnum": ["active", "suspended"],
        "KycStatusEnum": ["not_submitted", "pending", "approved", "rejected"],
        "InvitationStatusEnum": ["pending", "accepted", "cancelled", "expired"],
        "KycApplicationStatusEnum": ["pending", "approved", "rejected"],
        "WebhookEventTypeEnum": "webhooks.events.EVENT_TYPES",
    },
    "PATH_CONVERTER_OVERRIDES": {
        "pid": {"type": "string", "pattern": "^[a-z]{2,8}_[0-9A-Za-z]{1,40}$"},
    },
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        # Sign-in and invitation tokens are scrubbed from every line (config/logging.py).
        "plain": {
            "()": "config.logging.ScrubbingFormatter",
            "format": "%(asctime)s %(levelname)s %(name)s %(message)s",
        },
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {
        "django.request": {"level": "ERROR"},
        # The development server's request lines: through the scrubbing formatter too
        # (Django's own handler for them would print the path as it came).
        "django.server": {"level": "INFO", "handlers": ["console"], "propagate": False},
    },
}
TRUSTED_PROXY_HOPS = env.int("TRUSTED_PROXY_HOPS", default=0)
