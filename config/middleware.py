"""Project-wide middleware: a request id on every request and response, bounded request
bodies, and each request's objects freed when its response is closed."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from django.http import HttpRequest, HttpResponse

_SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{8,128}$")


def new_request_id() -> str:
    return "req_" + uuid.uuid4().hex


def on_close(response: Any, release: Callable[[], None]) -> None:
    """Call `release` when the server closes `response` (after its body is sent), with
    the response's other resources (Django's own list of closers, which swallows a
    closer's error and is emptied after the close). Without that list (another Django),
    nothing is called, and the garbage collector frees what `release` would have."""
    closers = getattr(response, "_resource_closers", None)
    if closers is not None:
        closers.append(release)


def _released(request: HttpRequest) -> Callable[[], None]:
    def release() -> None:
        request.close()  # its uploaded files, as Django's own closer would
        request.__dict__.clear()

    return release


class ReleaseRequestMiddleware:
    """Free each request's objects by reference counting when its response is closed,
    instead of leaving them to the cyclic garbage collector (ADR 0104).

    A request is tied into reference cycles by the middleware that hang objects on it
    (the messages' storage keeps the request, the lazy user and the CSP nonce close over
    it), so about 100 objects a request stayed until a collection found them, and the
    collections cost 5-7 % of an API request. Emptying the request once the server has
    closed its response breaks those cycles. Nothing reads a request after that: Django
    closes its files first (done here too, as the closers run in order)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        on_close(response, _released(request))
        return response


class RequestIdMiddleware:
    """Take `X-Request-Id` from the caller when it is a sane value, else make one.

    The id is available as `request.request_id`, echoed in the `X-Request-Id` response
    header, written into error bodies and audit events.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        incoming = request.META.get("HTTP_X_REQUEST_ID", "")
        request_id = incoming if _SANE_REQUEST_ID.match(incoming) else new_request_id()
        request.request_id = request_id  # type: ignore[attr-defined]
        response = self.get_response(request)
        response["X-Request-Id"] = request_id
        return response


class BoundedBodyMiddleware:
    """Refuse a request whose body is larger than it may be, before anything reads it.

    A body is read (and a large multipart body spooled to disk) by the first code that
    touches `request.POST`, `FILES` or `body`: CSRF, forms, DRF's parsers. This runs
    before all of them and judges by `Content-Length` alone. Every endpoint takes at most
    `MAX_REQUEST_BYTES`; the views that accept document uploads (`accepts_uploads = True`
    on the view class, or a function view decorated with `@accepts_uploads`) take up to
    `MAX_UPLOAD_REQUEST_BYTES`. A larger body is 413 (`request_too_large` in the API's
    error shape under `/api/` and `/gateway/`), and nothing of it is parsed or stored:
    the server discards it (gunicorn reads it off the socket before the connection's next
    request; the nginx example refuses it at `client_max_body_size`). Django reads no body
    without a `Content-Length`, so a chunked body is never read at all.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        declared = request.META.get("CONTENT_LENGTH") or ""
        if declared and declared != "0":
            refused = self._check(request, declared)
            if refused is not None:
                return refused
        return self.get_response(request)

    def _check(self, request: HttpRequest, declared: str) -> HttpResponse | None:
        from django.conf import settings

        try:
            length = int(declared)
        except ValueError:
            length = -1
        if length < 0:
            return _too_large(request, 400, "The Content-Length header is not a number.")
        if length <= settings.MAX_REQUEST_BYTES:
            return None
        limit = settings.MAX_REQUEST_BYTES
        if _accepts_uploads(request):
            limit = settings.MAX_UPLOAD_REQUEST_BYTES
            if length <= limit:
                return None
        return _too_large(request, 413, f"The body is larger than {limit} bytes.")


View = TypeVar("View", bound=Callable[..., Any])


def accepts_uploads(view: View) -> View:
    """Let the function view `view` take bodies up to `MAX_UPLOAD_REQUEST_BYTES`."""
    view.accepts_uploads = True  # type: ignore[attr-defined]
    return view


def _accepts_uploads(request: HttpRequest) -> bool:
    from django.urls import Resolver404, resolve

    try:
        match = resolve(request.path_info)
    except Resolver404:
        return False
    if getattr(match.func, "accepts_uploads", False):
        return True
    view_class = getattr(match.func, "view_class", None) or getattr(match.func, "cls", None)
    return bool(getattr(view_class, "accepts_uploads", False))


def _too_large(request: HttpRequest, status: int, message: str) -> HttpResponse:
    if request.path.startswith(("/api/", "/gateway/")):
        from apikeys.exceptions import json_error

        code = "request_too_large" if status == 413 else "validation_error"
        response: HttpResponse = json_error(request, code, message)
    else:
        title = "Request too large" if status == 413 else "Bad request"
        response = HttpResponse(
            f"<!doctype html><title>{title}</title><h1>{title}</h1><p>{message}</p>",
            status=status,
            content_type="text/html; charset=utf-8",
        )
    return response
