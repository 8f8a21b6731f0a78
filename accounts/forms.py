from __future__ import annotations

from django import forms

from accounts.models import normalize_email


class LoginForm(forms.Form):
    email = forms.EmailField(
        max_length=254,
        widget=forms.EmailInput(
            attrs={"autocomplete": "email webauthn", "autofocus": True, "required": True}
        ),
    )

    def clean_email(self) -> str:
        return normalize_email(self.cleaned_data["email"])


class OTPTokenForm(forms.Form):
    otp_token = forms.CharField(
        max_length=64,
        strip=True,
        widget=forms.TextInput(
            attrs={
                "autocomplete": "one-time-code",
                "inputmode": "text",
                "autocapitalize": "off",
                "spellcheck": "false",
                "autofocus": True,
                "required": True,
            }
        ),
    )
