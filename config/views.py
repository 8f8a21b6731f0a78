"""Project-level pages: the home page and the orchestrator health check."""

from __future__ import annotations

import logging
import re

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

logger = logging.getLogger(__name__)


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    """Anonymous visitors see the landing page. A signed-in user goes to the org of the
    selected-org cookie if still a member, else to their first org, else to onboarding."""
    if not request.user.is_authenticated:
        return render(request, "home.html")
    from accounts.models import User
    from orgs.selectors import membership_find_for_slug, membership_first_for_user
    from orgs.tenancy import SELECTED_ORG_COOKIE

    user = request.user
    assert isinstance(user, User)
    from config.converters import OrgSlugConverter

    selected = request.COOKIES.get(SELECTED_ORG_COOKIE, "")
    # A cookie is the caller's: only a value that can be a slug reaches the database.
    if not re.fullmatch(OrgSlugConverter.regex, selected):
        selected = ""
    membership = membership_find_for_slug(user=user, org_slug=selected) if selected else None
    if membership is None:
        membership = membership_first_for_user(user=user)
    if membership is None:
        return redirect("onboarding")
    return redirect(f"/o/{membership.org.slug}/")


def _check_database() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return "ok"


def _check_cache() -> str:
    cache.set("healthz:probe", "1", timeout=5)
    if cache.get("healthz:probe") != "1":
        raise RuntimeError("cache read-back failed")
    return "ok"


def _check_broker() -> str:
    if settings.CELERY_TASK_ALWAYS_EAGER:
        return "eager"
    from config.celery import app

    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=2)
    return "ok"


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """200 when every dependency answers, 503 naming the ones that do not."""
    checks = {"database": _check_database, "cache": _check_cache, "broker": _check_broker}
    results: dict[str, str] = {}
    healthy = True
    for name, check in checks.items():
        try:
            results[name] = check()
        except Exception:
            logger.exception("healthz: %s check failed", name)
            results[name] = "unavailable"
            healthy = False
    return JsonResponse(
        {"status": "ok" if healthy else "degraded", "checks": results},
        status=200 if healthy else 503,
    )
