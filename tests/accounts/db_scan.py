"""Scan every column of every table (and the decoded sessions) for secrets in clear."""

from __future__ import annotations

import json
from collections.abc import Iterable

from django.contrib.sessions.backends.db import SessionStore
from django.db import connection


def _as_text(value: object) -> str:
    if isinstance(value, memoryview):
        value = value.tobytes()
    if isinstance(value, bytes):
        return value.decode("latin-1")
    return "" if value is None else str(value)


def database_texts() -> Iterable[tuple[str, str]]:
    """(table.column, text) for every value stored, sessions decoded as well."""
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names(cursor):
            columns = [
                c.name for c in connection.introspection.get_table_description(cursor, table)
            ]
            quoted = ", ".join(connection.ops.quote_name(c) for c in columns)
            cursor.execute(f"SELECT {quoted} FROM {connection.ops.quote_name(table)}")
            for row in cursor.fetchall():
                for column, value in zip(columns, row, strict=True):
                    text = _as_text(value)
                    yield f"{table}.{column}", text
                    if table == "django_session" and column == "session_data":
                        decoded = SessionStore().decode(text)
                        yield f"{table}.{column}(decoded)", json.dumps(decoded)


def find_in_database(needles: Iterable[str]) -> list[str]:
    wanted = [n for n in needles if n]
    hits = []
    for where, text in database_texts():
        lowered = text.lower()
        for needle in wanted:
            if needle.lower() in lowered:
                hits.append(f"{where} holds {needle[:6]}…")
    return hits
