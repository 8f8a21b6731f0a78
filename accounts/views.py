from __future__ import annotations

from django.contrib.auth import logout
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST


@require_POST
def logout_view(request: HttpRequest) -> HttpResponse:
    logout(request)
    return redirect("home")


def ratelimited(request: HttpRequest, exception: Exception) -> HttpResponse:
    """The friendly page django-ratelimit shows when a sign-in throttle trips."""
    response = render(request, "429.html", status=429)
    response["Retry-After"] = "60"
    return response
