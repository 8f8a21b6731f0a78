"""Reads of API keys. Org-owned reads take `org=`; another org's key is a 404."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db.models import Count, F, Q, QuerySet, Sum
from django.db.models.functions import Coalesce, TruncDay
from django.http import Http404
from django.utils import timezone

from apikeys import usage
from apikeys.models import ApiKey, Environment, KeyUsageHour
from apikeys.scopes import ScopeError, get_resource, has_scope, normalize_scopes
from config.pager import Page, keyset_page
from orgs.models import AuditEvent, Organization

HISTORY_LIMIT = 50


def apikey_list(
    *,
    org: Organization,
    environment: str | None = None,
    status: str | None = None,
    now: datetime | None = None,
) -> QuerySet[ApiKey]:
    """The org's keys that are not deleted, newest first, with their creators; only those
    of `environment` and in `status` at `now` (`active`, `expiring`, `leaked`, `expired`,
    `revoked`, as `ApiKey.status_at` decides) when given."""
    keys = ApiKey.objects.filter(org=org, deleted_at__isnull=True)
    if environment is not None:
        keys = keys.filter(environment=environment)
    if status is not None:
        now = now or timezone.now()
        live = Q(revoked_at__isnull=True) & (Q(expires_at__isnull=True) | Q(expires_at__gt=now))
        keys = keys.filter(
            {
                "revoked": Q(revoked_at__isnull=False),
                "expired": Q(revoked_at__isnull=True, expires_at__lte=now),
                "leaked": live & Q(leaked_at__isnull=False),
                "expiring": live & Q(leaked_at__isnull=True, rotated_at__isnull=False),
                "active": live & Q(leaked_at__isnull=True, rotated_at__isnull=True),
            }[status]
        )
    return (
        keys.select_related("created_by")
        .prefetch_related("successors")
        .order_by("-created_at", "-id")
    )


def apikey_list_for_key(
    *,
    org: Organization,
    viewer_environment: str,
    environment: str | None = None,
    status: str | None = None,
) -> QuerySet[ApiKey]:
    """`apikey_list` as a key of `viewer_environment` may see it through the API (with
    the creating key and the predecessor its representation names): a test key sees test
    keys only (ADR 0043), so asking it for live keys gives none."""
    shown = Environment.TEST if viewer_environment == Environment.TEST else environment
    keys = apikey_list(org=org, environment=shown, status=status)
    if environment not in (None, shown):
        keys = keys.none()
    return keys.select_related("created_by_key", "predecessor")


def apikey_get_for_key(*, org: Organization, viewer_environment: str, public_id: str) -> ApiKey:
    """`apikey_get` for a key of `viewer_environment`: a live key is a 404 to a test key,
    as another org's key is."""
    key = apikey_get(org=org, public_id=public_id)
    if viewer_environment == Environment.TEST and key.environment != Environment.TEST:
        raise Http404("No such API key.")
    return key


KEY_PAGE_SIZE = 50


def apikey_page(
    *, org: Organization, before: str = "", after: str = "", limit: int = KEY_PAGE_SIZE
) -> Page[ApiKey]:
    """A keyset page (`config.pager`) of `apikey_list(org=org)`: one query however many
    keys the org holds (with the creators and successors its rows show: two more)."""
    return keyset_page(
        apikey_list(org=org),
        scope=ApiKey.objects.filter(org=org, deleted_at__isnull=True),
        following=before,
        preceding=after,
        limit=limit,
    )


def apikey_get(*, org: Organization, public_id: str) -> ApiKey:
    """One of the org's (not deleted) keys; absent and another org's alike raise Http404."""
    try:
        return ApiKey.objects.select_related("created_by", "predecessor").get(
            org=org, public_id=public_id, deleted_at__isnull=True
        )
    except ApiKey.DoesNotExist:
        raise Http404("No such API key.") from None


def apikey_get_by_digest(digest: str) -> ApiKey | None:
    """The key with this HMAC digest (deleted and revoked ones included), with its org.
    The digest is unique: no ordering to compile or sort (`first()` would add the model's)."""
    found = ApiKey.objects.select_related("org").filter(digest=digest).order_by()[:1]
    return next(iter(found), None)


def apikey_successor(*, org: Organization, key: ApiKey) -> ApiKey | None:
    """The key that replaced `key` in a rotation, if any and not deleted."""
    return (
        ApiKey.objects.filter(org=org, predecessor=key, deleted_at__isnull=True)
        .order_by("-created_at")
        .first()
    )


def apikey_history(*, org: Organization, key: ApiKey) -> list[AuditEvent]:
    """Audit events about `key`, newest first: those targeting it, and the rotation that
    created it (recorded on its predecessor)."""
    condition = Q(target_type="apikey", target_id=key.public_id)
    if key.predecessor_id is not None:
        condition |= Q(action="api_key.rotated", details__successor_id=key.public_id)
    return list(
        AuditEvent.objects.filter(Q(org=org) & condition)
        .select_related("actor_user")
        .order_by("-created_at", "-id")[:HISTORY_LIMIT]
    )


def apikey_counts(*, org: Organization) -> dict[str, int]:
    """The org's usable keys (not deleted, revoked or expired; a rotated key inside its
    grace period counts), in total and per environment: one query."""
    usable = ApiKey.objects.filter(org=org, deleted_at__isnull=True, revoked_at__isnull=True)
    usable = usable.filter(Q(expires_at__isnull=True) | Q(expires_at__gt=timezone.now()))
    counts = usable.aggregate(
        active=Count("id"),
        live=Count("id", filter=Q(environment=Environment.LIVE)),
        test=Count("id", filter=Q(environment=Environment.TEST)),
    )
    return {name: int(value or 0) for name, value in counts.items()}


# --- usage (docs/product.md#usage; ADR 0062, 0033) ----------------------------------------
#
# Every read of the folded usage rows (`KeyUsageHour`, one row per key and UTC hour) that
# the dashboard or the API makes. Each is one aggregate query, whatever the number of keys
# or rows; figures are at most one fold interval (a minute) behind the live counters.

HOURLY = usage.HOURLY
DAILY = usage.DAILY
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


@dataclass(frozen=True)
class UsageWindow:
    """A chart range: `periods` hours or UTC days ending with the current one."""

    name: str
    label: str
    granularity: str
    since: datetime
    until: datetime
    periods: int

    @property
    def step(self) -> timedelta:
        return DAY if self.granularity == DAILY else HOUR

    def starts(self) -> list[datetime]:
        return [self.since + i * self.step for i in range(self.periods)]


USAGE_RANGES: dict[str, tuple[str, str, int]] = {
    "24h": ("last 24 hours", HOURLY, 24),
    "30d": ("last 30 days", DAILY, 30),
}
DEFAULT_USAGE_RANGE = "24h"


def usage_window(name: str, *, now: datetime) -> UsageWindow:
    """The window `name` (`24h` or `30d`; anything else is the default) ending with the
    hour or UTC day that holds `now`."""
    if name not in USAGE_RANGES:
        name = DEFAULT_USAGE_RANGE
    label, granularity, periods = USAGE_RANGES[name]
    current = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    step = HOUR
    if granularity == DAILY:
        current, step = current.replace(hour=0), DAY
    return UsageWindow(
        name=name,
        label=label,
        granularity=granularity,
        since=current - (periods - 1) * step,
        until=current + step,
        periods=periods,
    )


def month_start(now: datetime) -> datetime:
    """00:00 UTC on the 1st of `now`'s month: where the monthly quota starts counting."""
    return now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


class _ByStatusClass:
    count_2xx: int
    count_4xx: int
    count_5xx: int

    @property
    def requests(self) -> int:
        return self.count_2xx + self.count_4xx + self.count_5xx

    @property
    def errors(self) -> int:
        return self.count_4xx + self.count_5xx


@dataclass(frozen=True)
class UsageTotals(_ByStatusClass):
    count_2xx: int = 0
    count_4xx: int = 0
    count_5xx: int = 0

    @classmethod
    def of(cls, items: Iterable[Any]) -> UsageTotals:
        """The sum of anything with `count_2xx`/`count_4xx`/`count_5xx` (points, buckets)."""
        c2 = c4 = c5 = 0
        for item in items:
            c2, c4, c5 = c2 + item.count_2xx, c4 + item.count_4xx, c5 + item.count_5xx
        return cls(count_2xx=c2, count_4xx=c4, count_5xx=c5)


@dataclass(frozen=True)
class UsagePoint(_ByStatusClass):
    """Requests of one hour or UTC day, by status class."""

    start: datetime
    count_2xx: int = 0
    count_4xx: int = 0
    count_5xx: int = 0


@dataclass(frozen=True)
class KeyUsageSummary:
    """One key's requests in the last 24 hours and 30 days, and its 30-day errors."""

    requests_24h: int = 0
    requests_30d: int = 0
    errors_30d: int = 0


@dataclass(frozen=True)
class ClientVersionSeen:
    version: str
    last_seen: datetime


_REQUESTS = F("count_2xx") + F("count_4xx") + F("count_5xx")
_ERRORS = F("count_4xx") + F("count_5xx")


def _usage_rows(
    *, org: Organization, since: datetime, until: datetime, key: ApiKey | None = None
) -> QuerySet[KeyUsageHour]:
    rows = KeyUsageHour.objects.filter(org=org, hour__gte=since, hour__lt=until)
    if key is not None:
        rows = rows.filter(api_key=key)
    return rows


def usage_series(
    *,
    org: Organization,
    since: datetime,
    until: datetime,
    granularity: str,
    key: ApiKey | None = None,
) -> list[UsagePoint]:
    """Requests per hour or UTC day in [since, until) (aligned to the granularity), summed
    over the org's keys or for one `key`, oldest first, with every period present (zero
    where nothing was counted). One grouped query."""
    period: Any = TruncDay("hour", tzinfo=UTC) if granularity == DAILY else F("hour")
    grouped = (
        _usage_rows(org=org, since=since, until=until, key=key)
        .annotate(period=period)
        .values("period")
        .annotate(c2=Sum("count_2xx"), c4=Sum("count_4xx"), c5=Sum("count_5xx"))
        .order_by("period")
    )
    found = {row["period"].astimezone(UTC): (row["c2"], row["c4"], row["c5"]) for row in grouped}
    step = DAY if granularity == DAILY else HOUR
    points = []
    start = since
    while start < until:
        c2, c4, c5 = found.get(start, (0, 0, 0))
        points.append(UsagePoint(start=start, count_2xx=c2, count_4xx=c4, count_5xx=c5))
        start += step
    return points


def usage_totals(
    *, org: Organization, since: datetime, until: datetime, key: ApiKey | None = None
) -> UsageTotals:
    """The org's (or one key's) requests in [since, until) by status class: one query."""
    sums = _usage_rows(org=org, since=since, until=until, key=key).aggregate(
        c2=Coalesce(Sum("count_2xx"), 0),
        c4=Coalesce(Sum("count_4xx"), 0),
        c5=Coalesce(Sum("count_5xx"), 0),
    )
    return UsageTotals(count_2xx=sums["c2"], count_4xx=sums["c4"], count_5xx=sums["c5"])


def usage_by_key(*, org: Organization, now: datetime) -> dict[int, KeyUsageSummary]:
    """Per key id (deleted keys included: their requests still count), requests in the
    `24h` and `30d` windows ending at `now` and 4xx/5xx in the latter. One grouped query;
    keys without requests are absent."""
    day, month = usage_window("24h", now=now), usage_window("30d", now=now)
    grouped = (
        _usage_rows(org=org, since=month.since, until=month.until)
        .values("api_key_id")
        .annotate(
            r24=Coalesce(Sum(_REQUESTS, filter=Q(hour__gte=day.since, hour__lt=day.until)), 0),
            r30=Sum(_REQUESTS),
            e30=Sum(_ERRORS),
        )
        .order_by("api_key_id")
    )
    return {
        row["api_key_id"]: KeyUsageSummary(
            requests_24h=row["r24"], requests_30d=row["r30"], errors_30d=row["e30"]
        )
        for row in grouped
    }


def apikey_usage_leaders(
    *, org: Organization, used: dict[int, KeyUsageSummary], limit: int = KEY_PAGE_SIZE
) -> tuple[list[ApiKey], int, set[int]]:
    """For the usage page: the org's listed keys most used in 30 days (at most `limit`,
    then the newest unused ones to fill the rows), how many keys are listed in all, and
    which keys of `used` are deleted. Four queries, whatever the number of keys."""
    listed = ApiKey.objects.filter(org=org, deleted_at__isnull=True).order_by("-created_at", "-id")
    deleted = set(
        ApiKey.objects.filter(org=org, deleted_at__isnull=False).values_list("pk", flat=True)
    )
    ranked = sorted(
        (pk for pk in used if pk not in deleted),
        key=lambda pk: (-used[pk].requests_30d, -used[pk].requests_24h, -pk),
    )
    top = ranked[:limit]
    found = {key.pk: key for key in listed.filter(pk__in=top)}
    keys = [found[pk] for pk in top if pk in found]
    # With fewer used keys than rows every used key is in `top`, so these are unused ones
    # (read whether needed or not: the page's query count does not depend on the data).
    unused = list(listed.exclude(pk__in=top)[:limit])
    keys += unused[: max(0, limit - len(keys))]
    return keys, listed.count(), deleted


def usage_client_versions(
    *, org: Organization, key: ApiKey, since: datetime, until: datetime
) -> list[ClientVersionSeen]:
    """The `X-Client-Version` values `key` sent in [since, until), most recently seen
    first (to the hour). One query over at most one row per hour of the range."""
    last_seen: dict[str, datetime] = {}
    rows = _usage_rows(org=org, since=since, until=until, key=key).values_list(
        "hour", "client_versions"
    )
    for hour, versions in rows:
        for version in versions or ():
            if version not in last_seen or hour > last_seen[version]:
                last_seen[version] = hour
    return sorted(
        (ClientVersionSeen(version=v, last_seen=at) for v, at in last_seen.items()),
        key=lambda seen: (-seen.last_seen.timestamp(), seen.version),
    )


def usage_scopes(
    *, org: Organization, key: ApiKey, since: datetime, until: datetime
) -> dict[str, int]:
    """Requests of `key` in [since, until) per scope they needed, whichever door they came
    through (API, host apps, gateway, verify). One query over at most one row per hour."""
    totals: dict[str, int] = {}
    rows = _usage_rows(org=org, since=since, until=until, key=key).values_list("scopes", flat=True)
    for scopes in rows:
        for scope, count in (scopes or {}).items():
            totals[scope] = totals.get(scope, 0) + int(count)
    return dict(sorted(totals.items()))


@dataclass(frozen=True)
class HeldScopeUse:
    """A scope the key holds and the requests that needed it (or a scope it covers)."""

    scope: str
    requests: int = 0
    # Needed scopes it covered without being them (`members:*` covering `members:read`).
    covered: tuple[str, ...] = ()
    # Unused but implied by a used scope, so narrowing keeps it (`members:read` beside a
    # used `members:write`): the used scope that implies it.
    kept_with: str = ""

    @property
    def label(self) -> str:
        return scope_label(self.scope)


@dataclass(frozen=True)
class NeededScopeUse:
    """A scope requests needed that the key does not hold (they were refused)."""

    scope: str
    requests: int

    @property
    def label(self) -> str:
        return scope_label(self.scope)


@dataclass(frozen=True)
class ScopeUse:
    """What a key holds against what its requests needed (docs/product.md#api-keys,
    least privilege), and what narrowing it to what it used would leave."""

    held: list[HeldScopeUse]
    not_held: list[NeededScopeUse]
    # The needed scopes the key holds, as the requests named them: what narrowing passes
    # to `apikey_update(scopes=...)`.
    used: list[str]
    # The key's scopes after narrowing (`used` with what it implies), and those it loses.
    keep: list[str]
    remove: list[str]

    @property
    def requests(self) -> int:
        return sum(h.requests for h in self.held) + sum(n.requests for n in self.not_held)

    @property
    def unused(self) -> list[HeldScopeUse]:
        return [h for h in self.held if not h.requests]

    @property
    def can_narrow(self) -> bool:
        """Some held scope was used and narrowing would remove at least one."""
        return bool(self.used) and bool(self.remove)


def scope_label(scope: str) -> str:
    """`members:read` as people read it ("Members: read"); the scope itself if unknown."""
    name, _, action = scope.partition(":")
    resource = get_resource(name)
    if resource is None:
        return scope
    return f"{resource.label}: {'every action' if action == '*' else action}"


def _with_implied(scopes: Iterable[str]) -> list[str]:
    """`scopes` with the scopes they imply, as `apikey_update` stores them; one the registry
    no longer knows stays as it is (the service then says what is wrong with it)."""
    result: set[str] = set()
    for scope in scopes:
        try:
            result.update(normalize_scopes([scope]))
        except ScopeError:
            result.add(scope)
    return sorted(result)


def apikey_scope_use(
    *, org: Organization, key: ApiKey, since: datetime, until: datetime
) -> ScopeUse:
    """The key's scopes beside the requests in [since, until) that needed each, from the
    folded usage (`usage_scopes`, one query).

    A needed scope is credited to the held scope of that name, else to the first held
    scope that covers it (`has_scope`: `resource:*`, an implying action); needed scopes
    the key does not hold come from refused requests and are listed apart. Narrowing keeps
    exactly the needed scopes the key holds (with what they imply) and removes the rest.
    """
    needed = usage_scopes(org=org, key=key, since=since, until=until)
    held_scopes = sorted(key.scopes)
    held_set = set(held_scopes)
    credited: dict[str, int] = dict.fromkeys(held_scopes, 0)
    covered: dict[str, list[str]] = {scope: [] for scope in held_scopes}
    used: list[str] = []
    not_held: list[NeededScopeUse] = []
    for scope, count in needed.items():
        if scope in held_set:
            holder: str | None = scope
        else:
            holder = next((h for h in held_scopes if has_scope({h}, scope)), None)
        if holder is None:
            not_held.append(NeededScopeUse(scope=scope, requests=count))
            continue
        used.append(scope)
        credited[holder] += count
        if holder != scope:
            covered[holder].append(scope)
    keep = _with_implied(used) if used else []
    keep_set = set(keep)
    held = []
    for scope in held_scopes:
        kept_with = ""
        if not credited[scope] and scope in keep_set:
            kept_with = next((u for u in used if scope in _with_implied([u])), "")
        held.append(
            HeldScopeUse(
                scope=scope,
                requests=credited[scope],
                covered=tuple(covered[scope]),
                kept_with=kept_with,
            )
        )
    return ScopeUse(
        held=held,
        not_held=not_held,
        used=used,
        keep=keep,
        remove=[scope for scope in held_scopes if scope not in keep_set],
    )


def usage_ip_reported(*, org: Organization, key: ApiKey, since: datetime, until: datetime) -> int:
    """Requests of `key` in [since, until) admitted from outside its report-only IP
    allowlist: the refusals an enforced list would have made. One aggregate query."""
    sums = _usage_rows(org=org, since=since, until=until, key=key).aggregate(
        reported=Coalesce(Sum("ip_reported"), 0)
    )
    return int(sums["reported"])


def usage_key_pk(*, org: Organization, public_id: str) -> int | None:
    """The database id of the org's key `public_id` (deleted keys too: their usage stays)."""
    return usage.usage_key_pk(org=org, public_id=public_id)


def apikey_public_ids(*, org: Organization, environment: str) -> QuerySet[ApiKey, str]:
    """Public ids of every key of the org in `environment`, deleted ones included (their
    usage and audit events outlive them)."""
    return ApiKey.objects.filter(org=org, environment=environment).values_list(
        "public_id", flat=True
    )


def usage_key_buckets(
    *,
    org: Organization,
    since: datetime,
    until: datetime,
    granularity: str,
    key_pk: int | None = None,
    environment: str | None = None,
) -> list[usage.UsageBucket]:
    """The org's usage per key and hour or day in [since, until), oldest first, with the
    client versions and last use of each bucket (the shape of `GET /api/v1/usage`).
    With `environment`, only keys of that environment are included."""
    buckets = usage.usage_series(
        org=org, since=since, until=until, granularity=granularity, key_pk=key_pk
    )
    if environment is not None:
        allowed = set(apikey_public_ids(org=org, environment=environment))
        buckets = [bucket for bucket in buckets if bucket.key_id in allowed]
    return buckets


def recent_requests(*, org: Organization, key: ApiKey, limit: int = 50) -> list[dict[str, Any]]:
    """The last `limit` requests of the org's `key`, newest first (live counters, not the
    database: see `apikeys.usage.recent_requests`)."""
    if key.org_id != org.pk:
        raise Http404("No such API key.")
    return usage.recent_requests(key_pk=key.pk, limit=limit)
