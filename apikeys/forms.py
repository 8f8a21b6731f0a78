"""Dashboard forms for API keys. Choices come from the scope registry at form build time."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any

from django import forms
from django.utils import timezone

from apikeys.models import IpMode
from apikeys.networks import (
    MAX_RANGE_LENGTH,
    MAX_RANGES,
    NetworkError,
    clean_allowed_ips,
    parse_lines,
)
from apikeys.scopes import (
    Resource,
    actions_in_use,
    all_resources,
    has_scope,
    preset_scopes,
    presets,
    scope_choices,
)
from apikeys.services import (
    DEFAULT_GRACE,
    META_MAX_BYTES,
    NAME_MAX_LENGTH,
    ApiKeyError,
    clean_meta,
)

ENVIRONMENT_CHOICES = [("test", "Test"), ("live", "Live")]

EXPIRY_NEVER = "never"
EXPIRY_CUSTOM = "custom"
EXPIRY_CHOICES = [
    (EXPIRY_NEVER, "No expiry"),
    ("7", "7 days"),
    ("30", "30 days"),
    ("90", "90 days"),
    ("365", "1 year"),
    (EXPIRY_CUSTOM, "On a date…"),
]

GRACE_CHOICES: list[tuple[str, str, timedelta]] = [
    ("0", "Immediately (no grace period)", timedelta(0)),
    ("3600", "In 1 hour", timedelta(hours=1)),
    ("86400", "In 24 hours", timedelta(hours=24)),
    ("259200", "In 3 days", timedelta(days=3)),
    ("604800", "In 7 days", timedelta(days=7)),
]
DEFAULT_GRACE_VALUE = str(int(DEFAULT_GRACE.total_seconds()))


# Later dates are almost certainly typos (and year 9999 overflows date arithmetic).
MAX_EXPIRY_DAYS = 3650


@dataclass(frozen=True)
class GridCell:
    scope: str
    action: str
    id: str
    label: str
    checked: bool
    implies: str  # ids of the boxes this one ticks, space-separated


@dataclass(frozen=True)
class GridRow:
    resource: Resource
    cells: list[GridCell | None]  # one per column; None where the resource lacks the action


@dataclass(frozen=True)
class GridPreset:
    name: str
    label: str
    description: str
    scopes: str  # space-separated concrete scopes


@dataclass(frozen=True)
class ScopeGrid:
    """The permission grid: a column per action some resource has, a row per resource,
    and the presets offered above it (the catalogue drives all three)."""

    columns: list[str]
    rows: list[GridRow]
    presets: list[GridPreset]


def scope_grid(selected: Iterable[str], *, system: bool = False) -> ScopeGrid:
    """The grid with the boxes `selected` covers ticked (implied and `*` scopes count)."""
    chosen = set(selected)
    columns = actions_in_use(system)
    rows = []
    for resource in all_resources(system):

        def box_id(action: str, name: str = resource.name) -> str:
            return f"scope-{name}-{action}"

        cells: list[GridCell | None] = []
        for action in columns:
            if not resource.has(action):
                cells.append(None)
                continue
            scope = f"{resource.name}:{action}"
            implied = sorted(resource.grants(action) - {action})
            cells.append(
                GridCell(
                    scope=scope,
                    action=action,
                    id=box_id(action),
                    label=f"{resource.label}: {action}",
                    checked=has_scope(chosen, scope),
                    implies=" ".join(box_id(a) for a in implied),
                )
            )
        rows.append(GridRow(resource=resource, cells=cells))
    offered = [
        GridPreset(p.name, p.label, p.description, " ".join(preset_scopes(p)))
        for p in presets(system)
    ]
    return ScopeGrid(columns=columns, rows=rows, presets=offered)


class AllowlistForm(forms.Form):
    """A key's IP allowlist (docs/product.md#ip-allowlists): a textarea of ranges, one a
    line, and what a request from elsewhere meets. The form checks the ranges with the
    rule the service applies (`apikeys.networks.clean_allowed_ips`), so every problem of
    the page shows at once; the service checks again."""

    allowed_ips = forms.CharField(
        label="Allowed IPs",
        required=False,
        strip=True,
        # Room for MAX_RANGES ranges of the longest form, a line each.
        max_length=MAX_RANGES * (MAX_RANGE_LENGTH + 2),
        widget=forms.Textarea(attrs={"rows": 4}),
    )
    allowed_ips_mode = forms.ChoiceField(
        label="Requests from other addresses",
        choices=IpMode.choices,
        initial=IpMode.ENFORCE,
        required=False,
    )

    def clean_allowed_ips(self) -> list[str]:
        ranges = parse_lines(self.cleaned_data.get("allowed_ips") or "")
        try:
            clean_allowed_ips(ranges)
        except NetworkError as exc:
            raise forms.ValidationError(exc.message) from None
        return ranges

    def clean_allowed_ips_mode(self) -> str:
        return str(self.cleaned_data.get("allowed_ips_mode") or IpMode.ENFORCE)


def _scope_field() -> forms.MultipleChoiceField:
    return forms.MultipleChoiceField(
        choices=(),
        required=True,
        label="Permissions",
        error_messages={"required": "Tick at least one permission."},
    )


class ApiKeyCreateForm(AllowlistForm):
    field_order = [
        "name",
        "environment",
        "expiry",
        "expires_on",
        "scope",
        "meta",
        "allowed_ips",
        "allowed_ips_mode",
    ]

    name = forms.CharField(max_length=NAME_MAX_LENGTH, strip=True)
    environment = forms.ChoiceField(choices=ENVIRONMENT_CHOICES, initial="test")
    expiry = forms.ChoiceField(choices=EXPIRY_CHOICES, initial=EXPIRY_NEVER, required=False)
    expires_on = forms.DateField(required=False, label="Expires on")
    scope = _scope_field()
    meta = forms.CharField(
        label="Metadata",
        required=False,
        strip=True,
        max_length=META_MAX_BYTES * 4,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text=f'A JSON object of at most {META_MAX_BYTES} bytes, e.g. {{"tenant": "t_42"}}.',
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["scope"].choices = scope_choices()  # type: ignore[attr-defined]

    def clean_meta(self) -> dict[str, Any]:
        text = self.cleaned_data.get("meta") or ""
        if not text:
            return {}
        try:
            value = json.loads(text)
        except ValueError:
            raise forms.ValidationError(
                'This is not valid JSON. Write an object, e.g. {"tenant": "t_42"}.'
            ) from None
        try:
            return clean_meta(value)
        except ApiKeyError as exc:
            raise forms.ValidationError(exc.message) from None

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        expiry = cleaned.get("expiry") or EXPIRY_NEVER
        today = timezone.now()
        expires_at: datetime | None = None
        if expiry == EXPIRY_CUSTOM:
            day = cleaned.get("expires_on")
            if day is None:
                self.add_error("expires_on", "Pick the date the key expires.")
            elif day > today.date() + timedelta(days=MAX_EXPIRY_DAYS):
                self.add_error("expires_on", "Pick a date within the next ten years.")
            else:
                # The key works through the whole chosen day (UTC).
                expires_at = datetime.combine(day + timedelta(days=1), time(0), tzinfo=UTC)
                if expires_at <= today:
                    self.add_error("expires_on", "Pick a date from today on.")
        elif expiry != EXPIRY_NEVER:
            expires_at = today + timedelta(days=int(expiry))
        cleaned["expires_at"] = expires_at
        return cleaned


class ApiKeyEditForm(AllowlistForm):
    """What an owner or admin may change on an existing key: its scopes and its IP
    allowlist (saved through `apikey_update`)."""

    field_order = ["scope", "allowed_ips", "allowed_ips_mode"]

    scope = _scope_field()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["scope"].choices = scope_choices()  # type: ignore[attr-defined]


class ApiKeyRotateForm(forms.Form):
    grace = forms.ChoiceField(
        choices=[(value, label) for value, label, _ in GRACE_CHOICES],
        initial=DEFAULT_GRACE_VALUE,
    )

    @property
    def grace_delta(self) -> timedelta:
        value = self.cleaned_data["grace"]
        return next(delta for v, _, delta in GRACE_CHOICES if v == value)
