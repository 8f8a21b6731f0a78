"""Dashboard forms for organisations and members. They parse input; the rules live in
services (which raise OrgError / MembershipError with a message for the user)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from django import forms

from config import dates
from orgs.ids import is_public_id
from orgs.models import LeakResponse, Role
from orgs.services import NAME_MAX_LENGTH


class OrgCreateForm(forms.Form):
    name = forms.CharField(
        max_length=NAME_MAX_LENGTH,
        widget=forms.TextInput(attrs={"autofocus": True, "autocomplete": "organization"}),
    )
    slug = forms.CharField(
        max_length=50,
        required=False,
        help_text="Used in your dashboard's address (/o/your-slug/). Leave blank to derive it "
        "from the name; you can change it later.",
    )


def _role_choices(roles: list[str]) -> list[tuple[str, str]]:
    return [(role, Role(role).label) for role in roles]


class InviteForm(forms.Form):
    email = forms.EmailField(max_length=254, widget=forms.EmailInput(attrs={"autocomplete": "off"}))
    role = forms.ChoiceField(choices=())

    def __init__(self, *args: Any, roles: list[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        role_field = self.fields["role"]
        assert isinstance(role_field, forms.ChoiceField)
        role_field.choices = _role_choices(roles)
        if Role.MEMBER in roles:
            role_field.initial = Role.MEMBER


class RoleForm(forms.Form):
    role = forms.ChoiceField(choices=_role_choices(list(Role.values)))


class SettingsForm(forms.Form):
    name = forms.CharField(max_length=NAME_MAX_LENGTH)
    slug = forms.CharField(
        max_length=50,
        help_text="Changing it changes every dashboard address of this organisation; old "
        "links stop working.",
    )
    require_two_factor = forms.BooleanField(
        required=False,
        label="Require two-factor for all members",
        help_text="Members without a second factor are sent to enrol one before they can use "
        "this organisation. Only owners can change this.",
    )

    # Not required: a form without it (an older page, a script) leaves the setting alone.
    leak_response = forms.ChoiceField(
        label="When a key is reported leaked",
        choices=LeakResponse.choices,
        required=False,
        help_text="Reports come from secret scanners (such as GitHub's) and from anyone who "
        "finds a key in public. Only owners can change this.",
    )

    # What each choice means, shown beside its radio button.
    LEAK_RESPONSE_HELP = {
        LeakResponse.REVOKE: "Requests with it fail at once. Owners and admins are emailed.",
        LeakResponse.FLAG: "Its status reads Leaked and owners and admins are emailed; you "
        "rotate or revoke it yourself. Until then anyone holding the secret can use it.",
    }

    def __init__(
        self,
        *args: Any,
        can_change_two_factor: bool,
        can_change_leak_response: bool,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        if not can_change_two_factor:
            self.fields["require_two_factor"].disabled = True
        if not can_change_leak_response:
            self.fields["leak_response"].disabled = True

    def leak_choices(self) -> list[tuple[str, str, str]]:
        """(value, label, help) for the leak response's radio buttons."""
        return [
            (value, label, self.LEAK_RESPONSE_HELP[LeakResponse(value)])
            for value, label in LeakResponse.choices
        ]

    def clean_leak_response(self) -> str | None:
        """The chosen response, or None (leave it as it is) when none was sent."""
        return self.cleaned_data.get("leak_response") or None


class DeleteOrgForm(forms.Form):
    confirm_slug = forms.CharField(max_length=50, label="Type the organisation's slug to confirm")


class TransferOwnershipForm(forms.Form):
    membership = forms.ChoiceField(choices=(), label="New owner")

    def __init__(self, *args: Any, candidates: list[tuple[str, str]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["membership"]
        assert isinstance(field, forms.ChoiceField)
        field.choices = candidates


class TransferToForm(forms.Form):
    """The confirm step of an ownership transfer: the chosen member's id. Whether it names
    a member of this org is the view's lookup (404 otherwise, like every org URL)."""

    membership = forms.CharField(
        max_length=64,
        label="New owner",
        error_messages={"required": "Choose the member who becomes the owner."},
    )

    def clean_membership(self) -> str:
        value: str = self.cleaned_data["membership"]
        if not is_public_id(value, prefix="mem"):
            raise forms.ValidationError("Choose the member who becomes the owner.")
        return value


class FilterDateField(forms.DateField):
    """A date a query filters on: a form error, never an overflow, for text longer than a
    date or a day outside `config.dates`' range (year 1, year 9999)."""

    def to_python(self, value: Any) -> date | None:
        if isinstance(value, str) and len(value) > dates.MAX_LENGTH:
            raise forms.ValidationError(self.error_messages["invalid"], code="invalid")
        day: date | None = super().to_python(value)
        if day is not None and not dates.date_in_range(day):
            raise forms.ValidationError(dates.RANGE_MESSAGE, code="out_of_range")
        return day

    def widget_attrs(self, widget: forms.Widget) -> dict[str, Any]:
        # The browser's date picker offers only the days the form accepts.
        return {
            **super().widget_attrs(widget),
            "min": dates.EARLIEST_DATE.isoformat(),
            "max": dates.LATEST_DATE.isoformat(),
        }


class AuditFilterForm(forms.Form):
    """The audit page's and the CSV export's filters (a GET form). Dates are whole UTC
    days: `since` from the start of its day, `until` to the end of its day."""

    action = forms.CharField(max_length=64, required=False)
    actor = forms.CharField(
        max_length=254,
        required=False,
        help_text="An email, a key id (key_…) or an X-Actor-Id.",
    )
    target = forms.CharField(max_length=64, required=False, label="Target id")
    since = FilterDateField(
        required=False, label="From", widget=forms.DateInput(attrs={"type": "date"})
    )
    until = FilterDateField(
        required=False, label="To", widget=forms.DateInput(attrs={"type": "date"})
    )

    def clean(self) -> dict[str, Any]:
        cleaned: dict[str, Any] = super().clean() or {}
        since, until = cleaned.get("since"), cleaned.get("until")
        if since is not None and until is not None and since > until:
            self.add_error("until", "The end date is before the start date.")
        return cleaned

    def filters(self) -> dict[str, Any]:
        """Keyword arguments for `orgs.selectors.audit_event_list` (call after is_valid)."""
        data = self.cleaned_data
        since: date | None = data.get("since")
        until: date | None = data.get("until")
        return {
            "action": data.get("action") or None,
            "actor": data.get("actor") or None,
            "target_id": data.get("target") or None,
            "since": _utc_midnight(since) if since else None,
            "until": _utc_midnight(until + timedelta(days=1)) if until else None,
        }

    def query(self) -> dict[str, str]:
        """The non-empty filters as submitted, for links that keep them (pages, export)."""
        return {
            name: str(self.data.get(name, "")).strip()
            for name in self.fields
            if str(self.data.get(name, "")).strip()
        }


def _utc_midnight(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)
