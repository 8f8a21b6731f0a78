"""The session engine: Django's database sessions, stored under a digest of the key.

The cookie carries the session key; the `django_session` row is stored under
`session_key_digest(key)` (SHA-256, 40 hex characters). A database dump therefore holds no
usable session cookie, and the security page can end another session knowing only its
digest, which is all `UserSession` keeps (ADR 0082). The same idea as Rack's hashed
session ids (CVE-2019-16782).

`UserSession` rows follow their session: `cycle_key()` moves the row to the new digest and
`delete()` (sign-out, `flush()`, a stale auth hash) deletes it.

Rows written by Django's own engine (the key in clear) are moved under their digest by
migration accounts 0005, so switching engines signs nobody out and leaves no usable
cookie in the table. A cookie is only ever looked up by its digest: a digest read from a
dump cannot be replayed as a cookie.
"""

from __future__ import annotations

import hashlib
from typing import Any

from asgiref.sync import sync_to_async
from django.contrib.sessions.backends import db
from django.contrib.sessions.base_session import AbstractBaseSession
from django.contrib.sessions.models import Session
from django.utils import timezone

from accounts.models import UserSession

DIGEST_LENGTH = 40


def session_key_digest(session_key: str) -> str:
    """The stored form of a session key. Keys are random (32 characters of [a-z0-9], about
    165 bits), so a plain hash is enough: there is nothing to guess offline."""
    return hashlib.sha256(session_key.encode()).hexdigest()[:DIGEST_LENGTH]


def sessions_delete(*, digests: list[str]) -> int:
    """End the sessions stored under `digests`: their session rows and `UserSession` rows."""
    if not digests:
        return 0
    deleted, _ = Session.objects.filter(session_key__in=digests).delete()
    UserSession.objects.filter(key_digest__in=digests).delete()
    return deleted


class SessionStore(db.SessionStore):
    """`django.contrib.sessions.backends.db.SessionStore`, keyed by digest."""

    @classmethod
    def get_model_class(cls) -> type[AbstractBaseSession]:
        return Session

    def _get_session_from_db(self) -> AbstractBaseSession | None:
        key = self.session_key
        if key is None:
            return None
        row = self.model.objects.filter(
            session_key=session_key_digest(key), expire_date__gt=timezone.now()
        ).first()
        if row is None:
            self._session_key = None
        return row

    async def _aget_session_from_db(self) -> AbstractBaseSession | None:
        return await sync_to_async(self._get_session_from_db)()

    def exists(self, session_key: str) -> bool:
        return self.model.objects.filter(session_key=session_key_digest(session_key)).exists()

    async def aexists(self, session_key: str) -> bool:
        return await self.model.objects.filter(
            session_key=session_key_digest(session_key)
        ).aexists()

    def create_model_instance(self, data: dict[str, Any]) -> AbstractBaseSession:
        row = super().create_model_instance(data)
        row.session_key = session_key_digest(row.session_key)
        return row

    async def acreate_model_instance(self, data: dict[str, Any]) -> AbstractBaseSession:
        row = await super().acreate_model_instance(data)
        row.session_key = session_key_digest(row.session_key)
        return row

    def delete(self, session_key: str | None = None) -> None:
        if session_key is None:
            if self.session_key is None:
                return
            session_key = self.session_key
        sessions_delete(digests=[session_key_digest(session_key)])

    async def adelete(self, session_key: str | None = None) -> None:
        await sync_to_async(self.delete)(session_key)

    def cycle_key(self) -> None:
        """A new key for the same data (sign-in, step-up): the listed session follows."""
        data = self._session  # type: ignore[attr-defined]  # SessionBase's, not in the stubs
        key = self.session_key
        self.create()
        self._session_cache = data
        if key:
            new_key = self.session_key
            assert new_key is not None
            UserSession.objects.filter(key_digest=session_key_digest(key)).update(
                key_digest=session_key_digest(new_key)
            )
            self.delete(key)

    async def acycle_key(self) -> None:
        await sync_to_async(self.cycle_key)()

    @classmethod
    def clear_expired(cls) -> None:
        """`clearsessions`: expired sessions, and listed sessions whose row is gone."""
        super().clear_expired()
        UserSession.objects.exclude(key_digest__in=Session.objects.values("session_key")).delete()

    @classmethod
    async def aclear_expired(cls) -> None:
        await sync_to_async(cls.clear_expired)()
