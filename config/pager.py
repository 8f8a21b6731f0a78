"""Keyset pages of newest-first lists (the audit log, the key list): one query a page,
however deep the page and however long the list.

A list is ordered by `(created_at, id)` descending; a page is named by a cursor, the
public id of a row of the same list: `before` gives the rows just older than it, `after`
the rows just newer. The cursor is resolved inside the page's own query (a subquery on
the list's own queryset), so an unknown id, or one of another organisation, gives an
empty page, never a position in someone else's list.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from urllib.parse import urlencode

from django.db.models import Model, Q, QuerySet, Subquery

T = TypeVar("T", bound=Model)


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page, newest first, with the cursors (public ids) of its neighbours: `older`
    for the page after it, `newer` for the one before, None at either end."""

    items: list[T]
    older: str | None
    newer: str | None

    @classmethod
    def empty(cls) -> Page[Any]:
        return cls(items=[], older=None, newer=None)


def keyset_page(
    rows: QuerySet[T], *, scope: QuerySet[T], before: str = "", after: str = "", limit: int
) -> Page[T]:
    """The page of `rows` (ordered newest first) next to the cursor `before` or `after`,
    or the first page; `scope` is where a cursor may be found (the unfiltered list, so a
    filter change keeps the position)."""
    cursor_id = before or after
    if cursor_id:
        cursor = scope.filter(public_id=cursor_id)
        at = Subquery(cursor.values("created_at")[:1])
        row = Subquery(cursor.values("id")[:1])
        if before:
            rows = rows.filter(Q(created_at__lt=at) | Q(created_at=at, id__lt=row))
        else:
            rows = rows.filter(Q(created_at__gt=at) | Q(created_at=at, id__gt=row))
            rows = rows.order_by("created_at", "id")
    found = list(rows[: limit + 1])
    more = len(found) > limit
    found = found[:limit]
    if after:
        found.reverse()
    if not found:
        return Page(items=[], older=None, newer=None)
    # Going back (after=...), there is an older page: the cursor itself is older.
    has_older = more if not after else True
    # Going forward or from the start, "newer" exists only if we came from a cursor.
    has_newer = more if after else bool(before)
    return Page(
        items=found,
        older=str(getattr(found[-1], "public_id")) if has_older else None,  # noqa: B009
        newer=str(getattr(found[0], "public_id")) if has_newer else None,  # noqa: B009
    )


def cursors(params: Any, *, prefix: str) -> tuple[str, str]:
    """(`before`, `after`) of a page's query string; a cursor that is not an id of the
    list's kind (`evt_…`, `key_…`) was made by hand: 400."""
    from django.core.exceptions import BadRequest

    from orgs.ids import is_public_id

    before = str(params.get("before", ""))
    after = "" if before else str(params.get("after", ""))
    if not all(is_public_id(cursor, prefix=prefix) for cursor in (before, after) if cursor):
        raise BadRequest("Malformed page cursor.")
    return before, after


def links(path: str, query: dict[str, str], page: Page[Any], *, paged: bool) -> dict[str, str]:
    """The pager's links (`partials/pager.html`): older, newer and, once away from the
    first page (`paged`), back to the newest; `query` keeps the page's filters."""

    return {
        "older_url": page_url(path, query, before=page.older) if page.older else "",
        "newer_url": page_url(path, query, after=page.newer) if page.newer else "",
        "newest_url": page_url(path, query) if paged else "",
    }


def page_url(path: str, query: dict[str, str], **cursor: str | None) -> str:
    """`path` with the page's filters `query` and a cursor, if any."""
    params = {**query, **{k: v for k, v in cursor.items() if v}}
    return f"{path}?{urlencode(params)}" if params else path
