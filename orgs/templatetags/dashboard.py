"""Template filters of the dashboard: `{% load dashboard %}`.

- `event_sentence`: an audit action as a phrase (`api_key.created` → "Created an API
  key"); keep the code next to it in a `title` attribute or a column.
- `end_sentence`: a name that ends a sentence, with one full stop ("Demo Inc.").
- `number`: an integer with thousands separators (100000 → "100,000").
- `{% aria_current href %}`: ` aria-current="page"` on the link to the current page.
"""

from __future__ import annotations

from typing import Any

from django import template
from django.contrib.humanize.templatetags.humanize import intcomma
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from config import text

register = template.Library()


@register.filter
def event_sentence(action: str) -> str:
    return text.event_sentence(str(action))


@register.filter
def end_sentence(value: Any) -> str:
    return text.end_sentence(value)


@register.filter
def number(value: Any) -> str:
    """100000 → "100,000" (integers; anything else is shown as it is)."""
    if value is None or value == "":
        return ""
    try:
        return str(intcomma(int(value), use_l10n=False))
    except (TypeError, ValueError):
        return str(value)


@register.simple_tag(takes_context=True)
def aria_current(context: template.Context, href: str, exact: bool = False) -> str:
    """` aria-current="page"` when the page is `href` (or below it, unless `exact`): the
    shell marks where the reader is (ADR 0081)."""
    request = context.get("request")
    path = getattr(request, "path", "")
    here = path == href if exact else path.startswith(href)
    return mark_safe(' aria-current="page"') if here else ""


@register.filter
def break_at(value: Any, separator: str) -> str:
    """`value` escaped, with a line-break opportunity after each `separator`: an IPv6
    address wraps at its colons, never one character per line."""
    joint = format_html("{}<wbr>", separator)
    return format_html_join(joint, "{}", ((part,) for part in str(value).split(separator)))
