"""How the pipeline counts a request before its limits step, and settles it afterwards.

`Direct` is the one-round-trip path (ADR 0064): the key's verification and the
check-and-count of its limits in one call to the store. `Leasing` wraps it with admission
leases (ADR 0065, 0090): a token of the host's lease admits the request with no call at
all, and a call for a key busy on the host asks for a lease sized by its demand. The
pipeline talks to `counting()` and never asks whether a lease was involved: the `Early`
count it gets back carries whatever the wrapper needs to give the request back or
record it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

from django.conf import settings
from django.core.signals import setting_changed

from apikeys import keycache, leases, ratelimit, redisconn, usage
from apikeys.backend import backend


@dataclass(slots=True)
class Early:
    """A request counted with its key's verification, before the pipeline's checks."""

    result: ratelimit.LimitResult
    at: float
    key_pk: int
    org_pk: int | None
    # Tokens counted beyond this request for an admission lease asked for.
    extra: int = 0
    # The lease epoch the count was made in (ADR 0091); None when not counted in Redis.
    epoch: int | None = None
    # What the wrapper that counted it needs (the lease it was admitted under).
    hold: Any = None


class Counting(Protocol):
    def verify(
        self, digest: str, now: float, meta: Callable[[], ratelimit.UsageMeta]
    ) -> tuple[keycache.Resolved | None, Early | None]:
        """The key with `digest` resolved and, when it could be done in the same step,
        the request counted (`Early`); None when the limits step must count it. `meta`
        is asked for only when needed."""

    def knows(self, digest: str) -> bool:
        """Whether this process has resolved the key with `digest` in a round trip of its
        own (then the key is a stored key, well formed)."""

    def give_back(
        self, early: Early, *, status: int, meta: ratelimit.UsageMeta
    ) -> ratelimit.LimitResult:
        """The request counted early was refused (with `status`) before the limits step:
        give its count back; returns the figures its headers report."""

    def record(self, early: Early, *, status: int, meta: Callable[[], ratelimit.UsageMeta]) -> None:
        """The admitted request's response had `status`: record it in usage (`meta` is
        asked for only when needed)."""


class Direct:
    """One round trip: verification and check-and-count together (ADR 0064)."""

    def knows(self, digest: str) -> bool:
        return False

    def verify(
        self,
        digest: str,
        now: float,
        meta: Callable[[], ratelimit.UsageMeta],
        lease: tuple[int, int, int, int] = (0, 0, 0, 0),
    ) -> tuple[keycache.Resolved | None, Early | None]:
        about = meta()
        body = about.recent_body(now)
        pushed = usage.provisional_status(about.method)
        resolved, counted, error = keycache.resolve_and_count(
            digest, now=now, record=ratelimit.request_record(now, about, body, pushed), lease=lease
        )
        if resolved is None:
            return None, None
        org = resolved.org
        limits = org.limits if org is not None else ratelimit.UNLIMITED
        epoch = None
        if counted is not None:
            result = ratelimit.counted_result(
                resolved.key.pk, limits, now, counted.verdict, counted.minute_used, body, pushed
            )
            extra, epoch = counted.extra, counted.epoch
        elif error is not None:
            # Redis is down: verification went to the database; the limits fail open
            # without a second attempt on this request.
            ratelimit.log_fail_open(error)
            result, extra = ratelimit.degraded_result(limits, now), 0
        else:
            return resolved, None
        return resolved, Early(
            result, now, resolved.key.pk, org.pk if org else None, extra, epoch=epoch
        )

    def give_back(
        self, early: Early, *, status: int, meta: ratelimit.UsageMeta
    ) -> ratelimit.LimitResult:
        return ratelimit.refund(
            key_pk=early.key_pk,
            org_pk=early.org_pk,
            result=early.result,
            now=early.at,
            status=status,
        )

    def record(self, early: Early, *, status: int, meta: Callable[[], ratelimit.UsageMeta]) -> None:
        if early.result.allowed:
            usage.record_status(
                key_pk=early.key_pk,
                org_pk=early.org_pk,
                hour=usage.hour_start(early.at),
                status_class=usage.status_class(status),
                status=status,
                recent=early.result.recent,
            )


class Leasing:
    """`Direct` with admission leases (ADR 0065, 0090, 0091)."""

    def __init__(self, inner: Direct, tokens: int, trust_ms: int) -> None:
        self.inner = inner
        self.tokens = tokens
        # A lease lives at most `LEASE_LIFE_MS` (within its second; its marker
        # `leases.MARKER_MS`), while the host's reading of the lease epoch is younger
        # than `trust_ms` (less a margin for clock rates).
        self.life_ms = leases.MARKER_MS
        self.trust_ms = min(trust_ms, keycache.LEASE_LIFE_MS)
        self.trust = self.trust_ms / 1000 * leases.HOLDER_FRACTION

    def knows(self, digest: str) -> bool:
        return leases.knows(digest)

    def verify(
        self, digest: str, now: float, meta: Callable[[], ratelimit.UsageMeta]
    ) -> tuple[keycache.Resolved | None, Early | None]:
        taken, wanted = leases.take(digest, now, self.tokens, self.trust)
        if taken is not None:
            lease, minute_used = taken
            result = ratelimit.leased_result(lease.limits, now, minute_used)
            return lease.resolved, Early(result, now, lease.key_pk, lease.org_pk, hold=lease)
        asked_at = time.monotonic()
        resolved, early = self.inner.verify(
            digest, now, meta, (wanted, self.life_ms, self.trust_ms, leases.epoch_seen())
        )
        if resolved is None or early is None:
            return resolved, early
        if early.epoch is not None:
            leases.observe(early.epoch, asked_at)
        if resolved.from_cache:
            leases.know(digest, resolved)
        if not early.extra:
            return resolved, early
        extra = early.extra
        org = resolved.org
        leases.grant(
            digest=digest,
            resolved=resolved,
            limits=org.limits if org is not None else ratelimit.UNLIMITED,
            now=now,
            asked_at=asked_at,
            length_ms=self.life_ms,
            tokens=extra,
            minute_used=early.result.minute_used,
            epoch=early.epoch,
            epoch_trust=self.trust,
            ahead=(self.tokens, self.trust_ms),
        )
        # The headers report the window without the lease's unused tokens.
        result = replace(early.result, minute_used=early.result.minute_used - extra)
        return resolved, replace(early, result=result, extra=0)

    def give_back(
        self, early: Early, *, status: int, meta: ratelimit.UsageMeta
    ) -> ratelimit.LimitResult:
        lease = early.hold
        if not isinstance(lease, leases.Lease):
            return self.inner.give_back(early, status=status, meta=meta)
        leases.give_back(lease)
        if status != 401:  # a key refused at verification is not counted (as off lease)
            leases.record(
                lease,
                now=early.at,
                meta=meta,
                status=status,
                status_class=usage.status_class(status),
            )
        return replace(early.result, minute_used=max(0, early.result.minute_used - 1))

    def record(self, early: Early, *, status: int, meta: Callable[[], ratelimit.UsageMeta]) -> None:
        lease = early.hold
        if not isinstance(lease, leases.Lease):
            self.inner.record(early, status=status, meta=meta)
            return
        leases.record(
            lease, now=early.at, meta=meta(), status=status, status_class=usage.status_class(status)
        )


class _Chosen:
    generation = -1
    counting: Counting = Direct()


_chosen = _Chosen()


def _settings_changed(*, setting: str, **kwargs: Any) -> None:
    if setting in ("LATCHKEY_KEY_LEASE_MS", "LATCHKEY_KEY_LEASE_TOKENS"):
        _chosen.generation = -1


setting_changed.connect(_settings_changed, dispatch_uid="apikeys.guard.counting")


def counting() -> Counting:
    """`Leasing(Direct())` when leases are on (`LATCHKEY_KEY_LEASE_MS` > 0, on a shared
    store), else `Direct()`; chosen once per settings."""
    if _chosen.generation != redisconn.settings_generation():
        length = int(getattr(settings, "LATCHKEY_KEY_LEASE_MS", 0) or 0)
        tokens = int(getattr(settings, "LATCHKEY_KEY_LEASE_TOKENS", 256))
        direct = Direct()
        _chosen.counting = (
            Leasing(direct, tokens, length) if length > 0 and backend().shared else direct
        )
        _chosen.generation = redisconn.settings_generation()
    return _chosen.counting
