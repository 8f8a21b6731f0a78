"""Path converters for the ids, slugs and tokens in Latchkey's URLs (ADR 0074).

A URL parameter that cannot be one of ours never reaches a view or the database: the
resolver answers 404. That keeps NUL bytes (which PostgreSQL refuses in text), other
control characters and overlong values out of every query a path parameter feeds.

Importing this module registers the converters; every URL module that uses them imports
it (`pid`, `orgslug`, `token`).
"""

from __future__ import annotations

from django.urls import register_converter

from orgs.ids import PUBLIC_ID_PATTERN


class _StrConverter:
    regex: str

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value


class PublicIdConverter(_StrConverter):
    """`<type>_<base62>` (`org_…`, `mem_…`, `inv_…`, `key_…`, `kyc_…`, `doc_…`, `pk_…`): a
    lower-case type prefix of 2 to 8 letters, an underscore, 1 to 40 base62 characters.
    The API's ids have always had this shape; `orgs.ids` mints 24 characters."""

    regex = PUBLIC_ID_PATTERN


class OrgSlugConverter(_StrConverter):
    """An organisation's slug: the alphabet of Django's `SlugField` (letters, digits,
    hyphens, underscores), 1 to 50 characters, as long as the column. Wider than the
    slugs `orgs.services.clean_slug` makes, so a slug set in the admin stays reachable."""

    regex = r"[-a-zA-Z0-9_]{1,50}"


class TokenConverter(_StrConverter):
    """A link token (magic links, invitations): URL-safe base64, 1 to 128 characters.
    Ours are 43 (`secrets.token_urlsafe(32)`); the views still judge the rest, so an
    unknown but well-formed token keeps its own page."""

    regex = r"[A-Za-z0-9_-]{1,128}"


register_converter(PublicIdConverter, "pid")
register_converter(OrgSlugConverter, "orgslug")
register_converter(TokenConverter, "token")
