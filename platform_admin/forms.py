from __future__ import annotations

from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django_countries import countries

from apikeys.scopes import scope_choices
from orgs.plans import Plan
from platform_admin.documents import ACCEPT_ATTRIBUTE, check_documents
from platform_admin.models import KycDocument
from platform_admin.services import FIELD_LIMITS, LIMIT_MAX, REASON_MAX_LENGTH


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleFileField(forms.FileField):
    """A file input that takes several files (`<input type=file multiple>`)."""

    widget = MultipleFileInput

    def clean(self, data: Any, initial: Any = None) -> list[Any]:
        single = super().clean
        if isinstance(data, list | tuple):
            return [single(item, initial) for item in data if item]
        return [single(data, initial)] if data else []


class KycForm(forms.Form):
    legal_name = forms.CharField(
        label="Legal name", max_length=FIELD_LIMITS["legal_name"], strip=True
    )
    registration_number = forms.CharField(
        label="Registration number", max_length=FIELD_LIMITS["registration_number"]
    )
    country = forms.ChoiceField(
        label="Country of registration", choices=[("", "Choose a country…"), *countries]
    )
    address = forms.CharField(
        label="Registered address",
        max_length=FIELD_LIMITS["address"],
        widget=forms.Textarea(attrs={"rows": 3}),
    )
    director_name = forms.CharField(
        label="Director's full name", max_length=FIELD_LIMITS["director_name"]
    )
    documents = MultipleFileField(
        label="Documents",
        required=False,
        widget=MultipleFileInput(attrs={"accept": ACCEPT_ATTRIBUTE}),
    )
    keep_documents = forms.MultipleChoiceField(
        label="Keep documents from the last application",
        required=False,
        widget=forms.CheckboxSelectMultiple,
    )

    def __init__(
        self, *args: Any, previous_documents: list[KycDocument] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        previous = previous_documents or []
        keep = self.fields["keep_documents"]
        assert isinstance(keep, forms.MultipleChoiceField)
        keep.choices = [(d.public_id, d.filename) for d in previous]
        if not previous:
            del self.fields["keep_documents"]
        else:
            self.fields["keep_documents"].initial = [d.public_id for d in previous]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        documents = cleaned.get("documents") or []
        kept = cleaned.get("keep_documents") or []
        # The service checks again; here the user gets the messages next to the field.
        try:
            check_documents(documents, already=len(kept))
        except ValidationError as exc:
            self.add_error("documents", exc.messages)
        return cleaned


class RejectForm(forms.Form):
    reason = forms.CharField(
        label="Reason (sent to the organisation)",
        max_length=REASON_MAX_LENGTH,
        widget=forms.Textarea(attrs={"rows": 4}),
    )


class OrgSearchForm(forms.Form):
    q = forms.CharField(required=False, max_length=100)


class PlanForm(forms.Form):
    plan = forms.ChoiceField(choices=Plan.choices)


def _limit_field(label: str) -> forms.IntegerField:
    return forms.IntegerField(
        label=label,
        required=False,
        min_value=0,
        max_value=LIMIT_MAX,
        help_text="Blank: the plan's. 0: unlimited.",
    )


class LimitsForm(forms.Form):
    per_minute = _limit_field("Requests per minute (per key)")
    burst = _limit_field("Burst (requests per second, per key)")
    monthly = _limit_field("Requests per month (org)")


class SuspendForm(forms.Form):
    reason = forms.CharField(
        label="Reason (internal, on the audit log)",
        required=True,
        error_messages={"required": "Give the reason for the suspension."},
        widget=forms.Textarea(attrs={"rows": 3}),
        max_length=REASON_MAX_LENGTH,
    )


class GrantAdminForm(forms.Form):
    email = forms.EmailField(label="Email of an existing account", max_length=254)


class RevokeRoleForm(forms.Form):
    email = forms.EmailField(max_length=254)


class SystemKeyForm(forms.Form):
    name = forms.CharField(max_length=100)
    scope = forms.MultipleChoiceField(
        choices=[], widget=forms.CheckboxSelectMultiple, required=True
    )
    expires_at = forms.DateTimeField(
        label="Expires (UTC, optional)",
        required=False,
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}),
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        scope = self.fields["scope"]
        assert isinstance(scope, forms.MultipleChoiceField)
        scope.choices = scope_choices(system=True)
