"""Cursor pagination for every list: `{"next", "previous", "results"}`.

The pages are those of the one keyset pager (`config.pager`): newest first by
`created_at` unless a list says otherwise, with the row id as a tie-breaker, one query a
page however deep. A cursor is opaque to clients: base64 of `n=<id>` (the page after
that row) or `p=<id>` (the page before it), the id being the public id of a row of the
same list; an unknown id gives an empty page. The page size is chosen with `limit` (1 to
100, default 25); a bad `limit` or a cursor that does not decode is 400
`validation_error` naming the parameter.
"""

from __future__ import annotations

import re
from base64 import b64decode, b64encode
from binascii import Error as Base64Error
from typing import Any
from urllib import parse

from django.db.models import QuerySet
from rest_framework.pagination import BasePagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.utils.urls import remove_query_param, replace_query_param

from apikeys.errors import ApiError
from config.pager import NEWEST_FIRST, keyset_page
from orgs.ids import PUBLIC_ID_PATTERN

DEFAULT_LIMIT = 25
MAX_LIMIT = 100
_CURSOR_MAX = 200
_ID_RE = re.compile(PUBLIC_ID_PATTERN)


def encode_cursor(*, following: str = "", preceding: str = "") -> str:
    """The `cursor` value of the page after the row `following` or before `preceding`."""
    tokens = {"n": following} if following else {"p": preceding}
    return b64encode(parse.urlencode(tokens).encode("ascii")).decode("ascii")


def decode_cursor(encoded: str) -> tuple[str, str]:
    """(following, preceding) named by a `cursor` value; ValueError when it was not
    written by `encode_cursor`."""
    try:
        if len(encoded) > _CURSOR_MAX:
            raise ValueError("cursor too long")
        text = b64decode(encoded.encode("ascii"), validate=True).decode("ascii")
        tokens = parse.parse_qs(text, keep_blank_values=True, strict_parsing=True)
    except (TypeError, ValueError, Base64Error, UnicodeError):
        raise ValueError("cursor does not decode") from None
    if len(tokens) != 1 or not set(tokens) <= {"n", "p"}:
        raise ValueError("unknown cursor fields")
    ((name, values),) = tokens.items()
    if len(values) != 1 or _ID_RE.fullmatch(values[0]) is None:
        raise ValueError("not a row id")
    return (values[0], "") if name == "n" else ("", values[0])


class ApiCursorPagination(BasePagination):
    ordering: tuple[str, str] = NEWEST_FIRST
    cursor_query_param = "cursor"
    page_size_query_param = "limit"

    def __init__(self) -> None:
        self.next_url: str | None = None
        self.previous_url: str | None = None

    def get_page_size(self, request: Request) -> int:
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None:
            return DEFAULT_LIMIT
        if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
            raise ApiError(
                "validation_error",
                f"'limit' must be an integer from 1 to {MAX_LIMIT}.",
                param="limit",
            )
        return int(raw)

    def cursor_of(self, request: Request) -> tuple[str, str]:
        encoded = request.query_params.get(self.cursor_query_param)
        if encoded is None:
            return "", ""
        try:
            return decode_cursor(encoded)
        except ValueError:
            raise ApiError(
                "validation_error",
                "The cursor is not valid; use a link from a page.",
                param="cursor",
            ) from None

    def paginate_queryset(
        self, queryset: QuerySet[Any], request: Request, view: Any = None
    ) -> list[Any]:
        limit = self.get_page_size(request)
        following, preceding = self.cursor_of(request)
        page = keyset_page(
            queryset,
            scope=queryset,
            following=following,
            preceding=preceding,
            limit=limit,
            order=self.ordering,
        )
        url = remove_query_param(request.build_absolute_uri(), self.cursor_query_param)
        param = self.cursor_query_param
        self.next_url = (
            replace_query_param(url, param, encode_cursor(following=page.next))
            if page.next
            else None
        )
        self.previous_url = (
            replace_query_param(url, param, encode_cursor(preceding=page.previous))
            if page.previous
            else None
        )
        return page.items

    def get_paginated_response(self, data: Any) -> Response:
        return Response({"next": self.next_url, "previous": self.previous_url, "results": data})

    def get_paginated_response_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": "object",
            "required": ["next", "previous", "results"],
            "properties": {
                "next": {"type": "string", "nullable": True, "format": "uri"},
                "previous": {"type": "string", "nullable": True, "format": "uri"},
                "results": schema,
            },
        }

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        return [
            {
                "name": self.cursor_query_param,
                "required": False,
                "in": "query",
                "description": "The `next` or `previous` cursor of an earlier page.",
                "schema": {"type": "string", "maxLength": _CURSOR_MAX},
            },
            {
                "name": self.page_size_query_param,
                "required": False,
                "in": "query",
                "description": f"Results per page, 1 to {MAX_LIMIT} (default {DEFAULT_LIMIT}).",
                "schema": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": MAX_LIMIT,
                    "default": DEFAULT_LIMIT,
                },
            },
        ]
