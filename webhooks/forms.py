from __future__ import annotations

from django import forms

from webhooks.events import EVENT_TYPES
from webhooks.services import DESCRIPTION_MAX_LENGTH, URL_MAX_LENGTH


class EndpointForm(forms.Form):
    url = forms.CharField(label="URL", max_length=URL_MAX_LENGTH)
    description = forms.CharField(max_length=DESCRIPTION_MAX_LENGTH, required=False)
    events = forms.MultipleChoiceField(
        choices=[(e, e) for e in EVENT_TYPES],
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="None ticked: every event.",
    )
