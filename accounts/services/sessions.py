"""Signed-in sessions a user can see and end (ADR 0082)."""

from __future__ import annotations

from datetime import timedelta

from django.contrib.sessions.models import Session
from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone

from accounts.models import User, UserSession
from accounts.services._common import AccountError, sign_out_other_sessions
from accounts.session_store import session_key_digest, sessions_delete
from accounts.useragents import describe_user_agent
from config.net import client_ip, user_agent
from orgs.actors import Actor
from orgs.services import audit_record

# How often a session's "last seen" is written: at most once a minute per session.
SEEN_INTERVAL = timedelta(minutes=1)


def _current_digest(request: HttpRequest | None) -> str | None:
    session = getattr(request, "session", None) if request is not None else None
    key = getattr(session, "session_key", None)
    return session_key_digest(key) if isinstance(key, str) else None


def user_session_touch(*, user: User, request: HttpRequest) -> UserSession | None:
    """Record that `request`'s session of `user` was seen now, from its IP and browser.

    The row is created if missing (a session signed in before sessions were listed); a
    session whose row is already gone from the store is never listed again.
    """
    digest = _current_digest(request)
    if digest is None:
        return None
    now = timezone.now()
    fields = {"last_seen_at": now, "ip": client_ip(request), "user_agent": user_agent(request)}
    if UserSession.objects.filter(key_digest=digest, user=user).update(**fields):
        return None
    if not Session.objects.filter(session_key=digest).exists():
        return None
    # A row of this digest for another user cannot be right (login() starts a new
    # session): it is replaced, never handed to this user.
    UserSession.objects.filter(key_digest=digest).exclude(user=user).delete()
    session, _ = UserSession.objects.get_or_create(
        key_digest=digest, defaults={"user": user, "created_at": now, **fields}
    )
    return session


@transaction.atomic
def user_session_end(*, user: User, public_id: str, request: HttpRequest) -> UserSession:
    """Sign out one of the user's other sessions: its session row is deleted, so the
    browser holding it is signed out on its next request.

    Invariants: only the user's own sessions; never the session making the request (that
    one signs out with the ordinary sign-out, which also clears the cookie).
    """
    session = UserSession.objects.select_for_update().filter(user=user, public_id=public_id).first()
    if session is None:
        raise AccountError("no_session", "That session has already ended.")
    if session.key_digest == _current_digest(request):
        raise AccountError(
            "current_session", "That is the session you are using: sign out to end it."
        )
    sessions_delete(digests=[session.key_digest])
    audit_record(
        action="user.session_signed_out",
        request=request,
        actor=Actor.for_user(user),
        target_type="session",
        target_id=session.public_id,
        target_label=describe_user_agent(session.user_agent),
        details={"session_ip": session.ip or "", "signed_in_at": session.created_at.isoformat()},
    )
    return session


@transaction.atomic
def user_sessions_end_others(*, user: User, request: HttpRequest) -> int:
    """Sign out every session of the user but this one; returns how many were listed.

    Listed sessions are deleted at once; the user's session stamp is also replaced
    (ADR 0077), which ends any session not yet listed on its next request.
    """
    ended = sign_out_other_sessions(user=user, request=request)
    audit_record(
        action="user.other_sessions_signed_out",
        request=request,
        actor=Actor.for_user(user),
        target=user,
        details={"count": ended},
    )
    return ended
