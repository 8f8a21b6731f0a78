"""Cursor pagination for every list: `{"next", "previous", "results"}`.

Newest first by `created_at`, with the row id as a tie-breaker. The page size is chosen
with `limit` (1 to 100, default 25); a bad `limit` or a cursor that does not decode is 400
`validation_error` naming the parameter.
"""

from __future__ import annotations

from base64 import b64decode
from binascii import Error as Base64Error
from typing import Any, cast
from urllib import parse

from django.utils.dateparse import parse_datetime
from rest_framework.pagination import Cursor, CursorPagination
from rest_framework.request import Request

from apikeys.errors import ApiError

DEFAULT_LIMIT = 25
MAX_LIMIT = 100


class ApiCursorPagination(CursorPagination):
    ordering: tuple[str, ...] = ("-created_at", "-id")
    page_size = DEFAULT_LIMIT
    max_page_size = MAX_LIMIT
    page_size_query_param = "limit"
    page_size_query_description = f"Results per page, 1 to {MAX_LIMIT} (default {DEFAULT_LIMIT})."
    cursor_query_description = "The `next` or `previous` cursor of an earlier page."
    offset_cutoff = 1000

    def get_page_size(self, request: Request) -> int:
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None:
            return self.page_size
        if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
            raise ApiError(
                "validation_error",
                f"'limit' must be an integer from 1 to {MAX_LIMIT}.",
                param="limit",
            )
        return int(raw)

    def decode_cursor(self, request: Request) -> Cursor | None:
        encoded = request.query_params.get(self.cursor_query_param)
        if encoded is None:
            return None
        invalid = ApiError(
            "validation_error", "The cursor is not valid; use a link from a page.", param="cursor"
        )
        try:
            if len(encoded) > 1000:
                raise ValueError("cursor too long")
            querystring = b64decode(encoded.encode("ascii"), validate=True).decode("ascii")
            tokens = parse.parse_qs(querystring, keep_blank_values=True, strict_parsing=True)
            if not set(tokens) <= {"o", "r", "p"}:
                raise ValueError("unknown cursor field")
            offset = int(tokens.get("o", ["0"])[0])
            reverse = bool(int(tokens.get("r", ["0"])[0]))
            position = tokens.get("p", [None])[0]
            # The position is a `created_at` value: anything else would reach the database.
            if position is not None and (len(position) > 64 or parse_datetime(position) is None):
                raise ValueError(position)
        except (TypeError, ValueError, Base64Error, UnicodeError):
            raise invalid from None
        if not 0 <= offset <= self.offset_cutoff:
            raise invalid
        # DRF's stubs say int, but positions are the ordering field's text (a timestamp).
        return Cursor(offset=offset, reverse=reverse, position=cast(Any, position))

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        parameters: list[dict[str, Any]] = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_size_query_param:
                parameter["schema"].update(minimum=1, maximum=MAX_LIMIT, default=DEFAULT_LIMIT)
            if parameter["name"] == self.cursor_query_param:
                parameter["schema"]["maxLength"] = 1000
        return parameters

    def get_paginated_response_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        response = super().get_paginated_response_schema(schema)
        response["required"] = ["next", "previous", "results"]
        return response
