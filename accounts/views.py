"""Sign-in pages (magic link, second factor, passkeys) and the account security page."""

from __future__ import annotations

import json
from base64 import b32encode
from collections.abc import Callable
from functools import wraps
from typing import Any
from urllib.parse import urlencode

import segno
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import logout
from django.contrib.auth.decorators import login_required
from django.core.exceptions import BadRequest
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.cache import add_never_cache_headers
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_http_methods, require_POST
from django_otp import DEVICE_ID_SESSION_KEY
from django_otp import login as otp_login
from django_otp.models import Device
from django_otp.plugins.otp_totp.models import TOTPDevice
from django_ratelimit.exceptions import Ratelimited

from accounts import selectors, services, signin, throttles
from accounts.forms import LoginForm, OTPTokenForm
from accounts.models import ChallengePurpose, PasskeyDevice, RecoveryCodeDevice, User
from accounts.navigation import safe_next_url
from accounts.useragents import describe_user_agent
from config.confirm import Confirmation, is_ask, render_confirm
from config.net import client_ip
from orgs.ids import is_public_id

View = Callable[..., HttpResponse]

SECOND_FACTOR_URL = "/login/2fa/"
SESSIONS_URL = "/account/security/#sessions"


# --- helpers -------------------------------------------------------------------------------


def _ip_key(group: str, request: HttpRequest) -> str:
    return client_ip(request) or "unknown"


def json_login_required(view: View) -> View:
    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.is_authenticated:
            return _json_error(401, "not_signed_in", "Sign in first.")
        return view(request, *args, **kwargs)

    return wrapped


def _no_store(response: HttpResponse) -> HttpResponse:
    add_never_cache_headers(response)
    return response


def _json_error(status: int, code: str, message: str, **extra: Any) -> JsonResponse:
    return JsonResponse({"error": {"code": code, "message": message, **extra}}, status=status)


class _BadJson(Exception):
    pass


def _json_body(request: HttpRequest) -> dict[str, Any]:
    if request.content_type != "application/json":
        raise _BadJson("Send a JSON body (Content-Type: application/json).")
    try:
        body = json.loads(request.body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise _BadJson("The request body is not valid JSON.") from exc
    if not isinstance(body, dict):
        raise _BadJson("The request body must be a JSON object.")
    return body


def _device_method(device: Device) -> str:
    if isinstance(device, PasskeyDevice):
        return "passkey"
    if isinstance(device, RecoveryCodeDevice):
        return "recovery_code"
    return "totp"


def _current_user(request: HttpRequest) -> User:
    user = request.user
    assert isinstance(user, User)
    return user


def _is_verified(request: HttpRequest) -> bool:
    check = getattr(request.user, "is_verified", None)
    return bool(check()) if callable(check) else False


def recent_sign_in_required(*, as_json: bool = False) -> Callable[[View], View]:
    """Factor changes need a session that passed the user's second factor (if they have
    one) and a sign-in within the last 10 minutes; else verify or sign in again first.

    An unverified session of a user with a factor is sent to `/login/2fa/` (a step-up also
    refreshes the sign-in time), so a magic link alone can never add, remove or replace a
    factor (ADR 0015).
    """

    def decorator(view: View) -> View:
        @wraps(view)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if not _is_verified(request) and selectors.user_has_second_factor(
                user=_current_user(request)
            ):
                url = SECOND_FACTOR_URL + "?" + urlencode({"next": "/account/security/"})
                if as_json:
                    return _json_error(
                        403,
                        "second_factor_required",
                        "Confirm your second factor before changing your sign-in methods.",
                        redirect=url,
                    )
                messages.info(
                    request,
                    "For your security, confirm your second factor before changing your "
                    "sign-in methods.",
                )
                return redirect(url)
            if signin.recently_signed_in(request):
                return view(request, *args, **kwargs)
            url = signin.reauth_url(request, "/account/security/")
            if as_json:
                return _json_error(
                    403,
                    "reauthentication_required",
                    "For your security, sign in again before changing your sign-in methods.",
                    redirect=url,
                )
            messages.info(
                request,
                "For your security, confirm it's you: sign in again to change your sign-in "
                "methods.",
            )
            return redirect(url)

        return wrapped

    return decorator


def _verifying_device_id(request: HttpRequest) -> str | None:
    """The persistent id of the device that verified this session, if it is verified."""
    if not _is_verified(request):
        return None
    persistent_id = request.session.get(DEVICE_ID_SESSION_KEY)
    return persistent_id if isinstance(persistent_id, str) else None


def _keep_session_verified(request: HttpRequest, *, verified_by: str | None) -> None:
    """After a factor is removed: a session verified by the removed device stays verified
    by another factor of the same user (it proved a factor, and the removal needed a recent
    sign-in); a session verified by another device keeps it; an unverified one stays so."""
    if verified_by is None:
        return
    if Device.from_persistent_id(verified_by) is not None:
        return
    request.session.pop(DEVICE_ID_SESSION_KEY, None)
    user = _current_user(request)
    user.otp_device = None  # type: ignore[attr-defined]
    device = selectors.confirmed_device_first(user=user)
    if device is not None:
        otp_login(request, device)


def _mark_verified_by_new_factor(request: HttpRequest, device: Device, *, had_factor: bool) -> None:
    """A user's first factor verifies the session that enrolled it; a further factor
    never does (the session must already have passed one of the existing factors)."""
    if not had_factor and not _is_verified(request):
        otp_login(request, device)


# --- magic link ----------------------------------------------------------------------------


@require_http_methods(["GET", "POST"])
def login_view(request: HttpRequest) -> HttpResponse:
    next_url = safe_next_url(request.POST.get("next") or request.GET.get("next"))
    reauth = request.GET.get("reauth") == "1" or request.POST.get("reauth") == "1"
    if request.method == "POST":
        form = LoginForm(request.POST)
        limited = throttles.limited(
            request,
            group="accounts.login.ip",
            key=_ip_key,
            rate=settings.MAGIC_LINK_RATE_PER_IP,
        )
        if form.is_valid():
            email = form.cleaned_data["email"]
            limited = (
                throttles.limited(
                    request,
                    group="accounts.login.email",
                    key=lambda group, req: email,
                    rate=settings.MAGIC_LINK_RATE_PER_EMAIL,
                )
                or limited
            )
            if limited:
                return ratelimited(request, Ratelimited())
            services.magic_link_request(email=email, next_url=next_url, request=request)
            return _no_store(
                render(request, "accounts/login_sent.html", {"email": email, "next": next_url})
            )
        if limited:
            return ratelimited(request, Ratelimited())
        status = 400
    else:
        initial_email = (request.GET.get("email") or "")[:254]
        form = LoginForm(initial={"email": initial_email} if initial_email else None)
        status = 200
    context = {"form": form, "next": next_url, "reauth": reauth}
    return render(request, "accounts/login.html", context, status=status)


def _no_referrer(response: HttpResponse) -> HttpResponse:
    response["Referrer-Policy"] = "no-referrer"
    return _no_store(response)


def _wants_json(request: HttpRequest) -> bool:
    return "application/json" in request.headers.get("Accept", "")


def _magic_link_unusable(request: HttpRequest) -> HttpResponse:
    if _wants_json(request):
        return _no_referrer(
            _json_error(400, "link_unusable", "This sign-in link can't be used any more.")
        )
    return _no_referrer(
        render(request, "accounts/magic_link_confirm.html", {"usable": False}, status=400)
    )


def _magic_link_continue(request: HttpRequest, url: str) -> HttpResponse:
    if _wants_json(request):
        return _no_referrer(JsonResponse({"ok": True, "redirect": url}))
    return _no_referrer(redirect(url))


@require_http_methods(["GET", "POST"])
def magic_link_view(request: HttpRequest, token: str) -> HttpResponse:
    """GET shows a confirmation (mail scanners fetch links); only the POST signs in.

    The page is served with `Referrer-Policy: no-referrer`, so a browser sends
    `Origin: null` with a plain form POST from it; the page's script posts with fetch()
    instead, which keeps the real Origin for the CSRF check (ADR 0010).
    """
    if request.method == "GET":
        usable = selectors.magic_link_is_usable(token=token)
        return _no_referrer(
            render(
                request,
                "accounts/magic_link_confirm.html",
                {"usable": usable},
                status=200 if usable else 400,
            )
        )
    if throttles.limited(
        request,
        group="accounts.magic.ip",
        key=_ip_key,
        rate=settings.MAGIC_LINK_RATE_PER_IP,
    ):
        return _no_referrer(ratelimited(request, Ratelimited()))
    result = services.magic_link_consume(token=token, request=request)
    if result is None:
        return _magic_link_unusable(request)
    if request.user.is_authenticated:
        # Following a link starts a fresh sign-in, whoever was signed in here before.
        logout(request)
    user = result.user
    if selectors.user_has_second_factor(user=user):
        signin.pending_start(request, user=user, next_url=result.next_url, method="magic_link")
        return _magic_link_continue(request, "/login/2fa/")
    signin.complete_sign_in(request, user=user, method="magic_link")
    if result.created:
        messages.success(request, "Welcome to Latchkey. Your account is ready.")
    return _magic_link_continue(request, result.next_url or settings.LOGIN_REDIRECT_URL)


@require_POST
def logout_view(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        services.user_signed_out_record(user=_current_user(request), request=request)
    logout(request)
    return redirect("home")


def ratelimited(request: HttpRequest, exception: Exception) -> HttpResponse:
    """The friendly page django-ratelimit shows when a sign-in throttle trips."""
    response = render(request, "429.html", status=429)
    response["Retry-After"] = "60"
    return response


# --- second factor -------------------------------------------------------------------------


class _Subject:
    """Who the second-factor page is for: a pending sign-in, or a signed-in session that
    must prove a factor before a protected area (step-up)."""

    def __init__(self, user: User, *, pending: signin.PendingSignIn | None, next_url: str):
        self.user = user
        self.pending = pending
        self.next_url = next_url


def _second_factor_subject(request: HttpRequest) -> _Subject | None:
    pending = signin.pending_get(request)
    if pending is not None:
        return _Subject(pending.user, pending=pending, next_url=pending.next_url)
    if request.user.is_authenticated and not _is_verified(request):
        user = _current_user(request)
        if selectors.user_has_second_factor(user=user):
            next_url = safe_next_url(request.POST.get("next") or request.GET.get("next"))
            return _Subject(user, pending=None, next_url=next_url)
    return None


def _finish_second_factor(request: HttpRequest, subject: _Subject, device: Device) -> str:
    if subject.pending is not None:
        method = f"{subject.pending.method}+{_device_method(device)}"
        signin.complete_sign_in(request, user=subject.user, method=method, device=device)
    else:
        signin.mark_verified(request, device)
    return subject.next_url or settings.LOGIN_REDIRECT_URL


@require_http_methods(["GET", "POST"])
def second_factor_view(request: HttpRequest) -> HttpResponse:
    subject = _second_factor_subject(request)
    if subject is None:
        if request.user.is_authenticated:
            return redirect(safe_next_url(request.GET.get("next")) or settings.LOGIN_REDIRECT_URL)
        messages.info(request, "Your sign-in expired. Request a new link to continue.")
        return redirect("login")
    status = 200
    form = OTPTokenForm(request.POST or None)
    if request.method == "POST":
        status = 400
        if form.is_valid():
            outcome = services.second_factor_verify(
                user=subject.user, token=form.cleaned_data["otp_token"], request=request
            )
            if outcome.device is not None:
                if isinstance(outcome.device, RecoveryCodeDevice):
                    messages.warning(
                        request,
                        "You signed in with a recovery code. Each code works once; generate a "
                        "new set from your security page if you are running low.",
                    )
                return redirect(_finish_second_factor(request, subject, outcome.device))
            if (
                outcome.locked_until is not None
                and (outcome.locked_until - timezone.now()).total_seconds() > 2
            ):
                seconds = int((outcome.locked_until - timezone.now()).total_seconds()) + 1
                form.add_error(
                    "otp_token", f"Too many attempts. Wait {seconds} seconds and try again."
                )
            else:
                form.add_error("otp_token", "That code is not valid. Try again.")
    overview = selectors.security_overview(user=subject.user)
    context = {
        "form": form,
        "subject_email": subject.user.email,
        "step_up": subject.pending is None,
        "next": subject.next_url,
        "has_totp": overview.totp is not None,
        "has_passkey": bool(overview.passkeys),
        "has_recovery_codes": overview.recovery_codes_remaining > 0,
    }
    return _no_store(render(request, "accounts/second_factor.html", context, status=status))


@require_POST
def second_factor_passkey_options(request: HttpRequest) -> JsonResponse:
    subject = _second_factor_subject(request)
    if subject is None:
        return _json_error(403, "no_sign_in", "There is no sign-in waiting for a second factor.")
    try:
        options, challenge = services.passkey_authentication_options(
            purpose=ChallengePurpose.SECOND_FACTOR, user=subject.user
        )
    except services.PasskeyError as exc:
        return _json_error(400, exc.code, exc.message)
    request.session[signin.challenge_key(ChallengePurpose.SECOND_FACTOR)] = challenge.public_id
    return JsonResponse(options)


@require_POST
def second_factor_passkey_verify(request: HttpRequest) -> JsonResponse:
    subject = _second_factor_subject(request)
    if subject is None:
        return _json_error(403, "no_sign_in", "There is no sign-in waiting for a second factor.")
    try:
        body = _json_body(request)
    except _BadJson as exc:
        return _json_error(400, "malformed_json", str(exc))
    challenge_id = request.session.pop(signin.challenge_key(ChallengePurpose.SECOND_FACTOR), "")
    try:
        device = services.passkey_authenticate(
            challenge_id=str(challenge_id),
            credential=body.get("credential"),
            purpose=ChallengePurpose.SECOND_FACTOR,
            user=subject.user,
            request=request,
        )
    except services.PasskeyError as exc:
        return _json_error(400, exc.code, exc.message)
    return JsonResponse({"ok": True, "redirect": _finish_second_factor(request, subject, device)})


# --- passwordless passkey sign-in ----------------------------------------------------------


@require_POST
def passkey_sign_in_options(request: HttpRequest) -> JsonResponse:
    if throttles.limited(
        request, group="accounts.passkey.ip", key=_ip_key, rate=settings.PASSKEY_RATE_PER_IP
    ):
        return _json_error(429, "rate_limited", "Too many attempts. Wait a minute.")
    options, challenge = services.passkey_authentication_options(purpose=ChallengePurpose.SIGN_IN)
    request.session[signin.challenge_key(ChallengePurpose.SIGN_IN)] = challenge.public_id
    return JsonResponse(options)


@require_POST
def passkey_sign_in_verify(request: HttpRequest) -> JsonResponse:
    try:
        body = _json_body(request)
    except _BadJson as exc:
        return _json_error(400, "malformed_json", str(exc))
    challenge_id = request.session.pop(signin.challenge_key(ChallengePurpose.SIGN_IN), "")
    try:
        device = services.passkey_authenticate(
            challenge_id=str(challenge_id),
            credential=body.get("credential"),
            purpose=ChallengePurpose.SIGN_IN,
            request=request,
        )
    except services.PasskeyError as exc:
        return _json_error(400, exc.code, exc.message)
    # A discoverable passkey with user verification is both factors at once.
    signin.complete_sign_in(request, user=device.user, method="passkey", device=device)
    next_url = safe_next_url(body.get("next") if isinstance(body.get("next"), str) else "")
    return JsonResponse({"ok": True, "redirect": next_url or settings.LOGIN_REDIRECT_URL})


# --- account security ----------------------------------------------------------------------


@login_required
@require_http_methods(["GET"])
def security_view(request: HttpRequest) -> HttpResponse:
    user = _current_user(request)
    before = request.GET.get("before", "")
    if before and not is_public_id(before, prefix="evt"):
        # The cursor is the page's own "older" link (`evt_…`); anything else was made by hand.
        raise BadRequest("Malformed page cursor.")
    context = {
        "overview": selectors.security_overview(user=user),
        "recent": signin.recently_signed_in(request),
        "verified": _is_verified(request),
        "sessions": selectors.user_session_list(user=user, current_key=request.session.session_key),
        "log": selectors.security_event_list(user=user, before=before),
    }
    return _no_store(render(request, "accounts/security.html", context))


@login_required
@require_POST
def session_sign_out_view(request: HttpRequest, public_id: str) -> HttpResponse:
    """Sign out one of the user's other sessions (ADR 0082)."""
    try:
        ended = services.user_session_end(
            user=_current_user(request), public_id=public_id, request=request
        )
    except services.AccountError as exc:
        messages.error(request, exc.message)
        return redirect(SESSIONS_URL)
    browser = describe_user_agent(ended.user_agent)
    messages.success(request, f"The session on {browser} was signed out.")
    return redirect(SESSIONS_URL)


@login_required
@require_POST
def sessions_sign_out_others_view(request: HttpRequest) -> HttpResponse:
    """Sign out every session of the user but this one (ADR 0082)."""
    ended = services.user_sessions_end_others(user=_current_user(request), request=request)
    if ended:
        messages.success(request, f"Signed out {ended} other session{'s' if ended != 1 else ''}.")
    else:
        messages.success(request, "Every other session is signed out.")
    return redirect(SESSIONS_URL)


@login_required
@require_POST
@recent_sign_in_required()
def totp_start_view(request: HttpRequest) -> HttpResponse:
    try:
        services.totp_enrolment_start(user=_current_user(request))
    except services.AccountError as exc:
        messages.error(request, exc.message)
        return redirect("account-security")
    return redirect("totp-setup")


def _totp_qr_svg(device: TOTPDevice) -> str:
    qr = segno.make(device.config_url, error="m")
    svg: str = qr.svg_inline(scale=4, border=2, omitsize=True, dark="#101828", light="#ffffff")
    return svg


@login_required
@require_http_methods(["GET", "POST"])
@recent_sign_in_required()
def totp_setup_view(request: HttpRequest) -> HttpResponse:
    user = _current_user(request)
    device = selectors.totp_pending_device(user=user)
    if device is None:
        return redirect("account-security")
    form = OTPTokenForm(request.POST or None)
    status = 200
    if request.method == "POST":
        status = 400
        if form.is_valid():
            had_factor = selectors.user_has_second_factor(user=user)
            outcome = services.totp_enrolment_confirm(
                user=user, token=form.cleaned_data["otp_token"], request=request
            )
            if outcome.device is not None:
                _mark_verified_by_new_factor(request, outcome.device, had_factor=had_factor)
                if outcome.recovery_codes:
                    return _recovery_codes_page(request, outcome.recovery_codes, first=True)
                messages.success(request, "Your authenticator app is set up.")
                return redirect("account-security")
            form.add_error("otp_token", "That code is not valid. Check the app and try again.")
    secret = b32encode(device.bin_key).decode()
    context = {
        "form": form,
        "qr_svg": mark_safe(_totp_qr_svg(device)),  # noqa: S308 - segno output, no user input
        "secret": secret,
        # Shown in groups of four, as people read and type it; copied whole.
        "secret_groups": [secret[i : i + 4] for i in range(0, len(secret), 4)],
    }
    return _no_store(render(request, "accounts/totp_setup.html", context, status=status))


def _factor_removal_details(
    overview: selectors.SecurityOverview, *, removing: str, user: User
) -> list[str]:
    """What else happens when one factor goes: whether two-factor stays on, and the email."""
    others = len(overview.passkeys) + (1 if overview.totp is not None else 0) - 1
    lines: list[str] = []
    if others <= 0:
        lines.append(
            f"This is your only second factor: two-factor sign-in turns off, and your "
            f"{overview.recovery_codes_remaining} unused recovery codes stop working."
        )
    else:
        kept = []
        if overview.totp is not None and removing != "totp":
            kept.append("your authenticator app")
        passkeys_kept = len(overview.passkeys) - (1 if removing == "passkey" else 0)
        if passkeys_kept:
            kept.append(f"{passkeys_kept} passkey{'s' if passkeys_kept != 1 else ''}")
        lines.append(f"Two-factor stays on with {' and '.join(kept)}, and your recovery codes.")
    lines.append(f"We'll email a security notice to {user.email}.")
    return lines


@login_required
@require_http_methods(["GET", "POST"])
@recent_sign_in_required()
def totp_disable_view(request: HttpRequest) -> HttpResponse:
    """GET: the confirm step (config.confirm, ADR 0081); POST: remove the app."""
    user = _current_user(request)
    if request.method == "GET" or is_ask(request):
        overview = selectors.security_overview(user=user)
        if overview.totp is None:
            messages.info(request, "No authenticator app is set up.")
            return redirect("account-security")
        confirmation = Confirmation(
            title="Remove the authenticator app?",
            what=(
                "Codes from your authenticator app will stop working for signing in to "
                "this account, at once. You can set up an app again later."
            ),
            subject=user.email,
            subject_label="Account",
            details=_factor_removal_details(overview, removing="totp", user=user),
            confirm_label="Remove authenticator app",
            button_id="confirm-disable-totp",
            cancel_url="/account/security/#totp",
        )
        return _no_store(render_confirm(request, confirmation))
    verified_by = _verifying_device_id(request)
    try:
        services.totp_disable(user=user, request=request)
    except services.AccountError as exc:
        messages.error(request, exc.message)
        return redirect("account-security")
    _keep_session_verified(request, verified_by=verified_by)
    messages.success(request, "The authenticator app was removed.")
    return redirect("account-security")


def _recovery_codes_page(request: HttpRequest, codes: list[str], *, first: bool) -> HttpResponse:
    return _no_store(
        render(request, "accounts/recovery_codes.html", {"codes": codes, "first": first})
    )


@login_required
@require_http_methods(["GET", "POST"])
@recent_sign_in_required()
def recovery_codes_regenerate_view(request: HttpRequest) -> HttpResponse:
    """GET: the confirm step (config.confirm, ADR 0081); POST: a new set, shown once."""
    user = _current_user(request)
    if request.method == "GET" or is_ask(request):
        overview = selectors.security_overview(user=user)
        if not overview.has_factor:
            messages.info(request, "Set up an authenticator app or a passkey first.")
            return redirect("account-security")
        left = overview.recovery_codes_remaining
        confirmation = Confirmation(
            title="Generate new recovery codes?",
            what=(
                f"Your current recovery codes ({left} unused) stop working at once. "
                "The 10 new codes are shown only once, on the next page: have somewhere "
                "ready to save them."
            ),
            subject=user.email,
            subject_label="Account",
            details=[f"We'll email a security notice to {user.email}."],
            confirm_label="Generate new codes",
            button_id="confirm-regenerate-recovery-codes",
            cancel_url="/account/security/#recovery",
        )
        return _no_store(render_confirm(request, confirmation))
    try:
        codes = services.recovery_codes_regenerate(user=user, request=request)
    except services.AccountError as exc:
        messages.error(request, exc.message)
        return redirect("account-security")
    return _recovery_codes_page(request, codes, first=False)


@require_POST
@json_login_required
@recent_sign_in_required(as_json=True)
def passkey_register_options(request: HttpRequest) -> HttpResponse:
    options, challenge = services.passkey_registration_options(user=_current_user(request))
    request.session[signin.challenge_key(ChallengePurpose.REGISTER)] = challenge.public_id
    return JsonResponse(options)


@require_POST
@json_login_required
@recent_sign_in_required(as_json=True)
def passkey_register(request: HttpRequest) -> HttpResponse:
    try:
        body = _json_body(request)
    except _BadJson as exc:
        return _json_error(400, "malformed_json", str(exc))
    name = body.get("name")
    if name is not None and not isinstance(name, str):
        return _json_error(400, "validation_error", "The name must be text.", param="name")
    challenge_id = request.session.pop(signin.challenge_key(ChallengePurpose.REGISTER), "")
    user = _current_user(request)
    had_factor = selectors.user_has_second_factor(user=user)
    try:
        result = services.passkey_register(
            user=user,
            challenge_id=str(challenge_id),
            name=name or "",
            credential=body.get("credential"),
            request=request,
        )
    except services.PasskeyError as exc:
        return _json_error(400, exc.code, exc.message)
    _mark_verified_by_new_factor(request, result.device, had_factor=had_factor)
    if not result.recovery_codes:
        messages.success(request, f"Passkey “{result.device.name}” added.")
    return _no_store(
        JsonResponse(
            {
                "ok": True,
                "passkey": {"id": result.device.public_id, "name": result.device.name},
                "recovery_codes": result.recovery_codes,
                "redirect": "/account/security/",
            }
        )
    )


@login_required
@require_http_methods(["GET", "POST"])
@recent_sign_in_required()
def passkey_delete_view(request: HttpRequest, public_id: str) -> HttpResponse:
    """GET: the confirm step (config.confirm, ADR 0081); POST: remove the passkey."""
    user = _current_user(request)
    if request.method == "GET" or is_ask(request):
        passkey = selectors.passkey_list(user=user).filter(public_id=public_id).first()
        if passkey is None:
            raise Http404("No such passkey.")
        overview = selectors.security_overview(user=user)
        confirmation = Confirmation(
            title=f"Remove the passkey “{passkey.name}”?",
            what=(
                "This passkey will stop working for this account at once, both to sign in "
                "and as a second factor. The credential stays on your device until you "
                "delete it there."
            ),
            subject=passkey.name,
            subject_label="Passkey",
            details=_factor_removal_details(overview, removing="passkey", user=user),
            confirm_label="Remove passkey",
            button_id="confirm-remove-passkey",
            cancel_url="/account/security/#passkeys",
        )
        return _no_store(render_confirm(request, confirmation))
    verified_by = _verifying_device_id(request)
    try:
        services.passkey_delete(user=user, public_id=public_id, request=request)
    except services.AccountError as exc:
        messages.error(request, exc.message)
        return redirect("account-security")
    _keep_session_verified(request, verified_by=verified_by)
    messages.success(request, "The passkey was removed.")
    return redirect("account-security")
