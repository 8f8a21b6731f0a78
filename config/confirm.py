"""Ask before harm: one confirm step for every action that cannot be taken back (ADR 0081).

The contract, for any dashboard action that revokes, removes, suspends, decides or hands
over something:

- ``GET <action-url>`` renders the **confirm step**: a question, what will happen, to whom
  or what, the fields the action needs (a reason...), a Confirm button and a Cancel link.
  It changes nothing, so a plain link ("Revoke…") can lead to it.
- ``POST <action-url>`` **performs** the action (the confirm step's form posts here).
- ``POST <action-url>`` carrying ``confirm_ask=1`` (see ``ASK_FIELD``) renders the confirm
  step again with the posted values, and performs nothing. A page that collects input the
  action needs (a reason typed on a detail page, a role picked in a table) posts here with
  that hidden field, so free text never travels in a URL and nothing happens before the
  confirm step. Django admin's ``delete_selected`` action works the same way.

Everything is plain HTML forms: it works without JavaScript and under the strict CSP.

Use it as a mixin in front of the view's base class::

    class ApiKeyRevokeView(ConfirmMixin, OrgMixin, View):
        required_role = "admin"

        def get_confirmation(self, form):
            key = self.key()
            return Confirmation(
                title=f"Revoke “{key.name}”?",
                what="Requests with this key fail from the moment you confirm.",
                subject=key.display, subject_label="Key",
                confirm_label="Revoke key", button_id="confirm-revoke",
                cancel_url=key_detail_url,
            )

        def perform(self, form):
            apikey_revoke(...)
            messages.success(self.request, "...")
            return redirect(...)

Optional hooks:

- ``needs_confirmation(form)``: False lets an ask POST perform a harmless variant at
  once (a rotation that keeps the old key working for a grace period);
- ``form_class`` or ``get_confirm_form(data)``: fields the action needs, shown on the
  step and validated on the confirm POST (invalid: the step again, with an error summary
  and status 400);
- ``get_confirm_context()``: what the page shell needs (the platform console's section);
- ``confirm_template``: a page around the card that extends another layout
  (``platform_admin/confirm.html``).

A view that cannot use the mixin calls ``render_confirm`` and ``is_ask`` directly.

Templates: ``templates/partials/confirm.html`` is the card (include it with ``confirm``
and ``confirm_form`` in the context); ``templates/confirm.html`` is a page around it
that extends ``base.html``. Give each confirm button a stable ``button_id`` for tests.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from django import forms
from django.http import HttpRequest, HttpResponse, QueryDict
from django.shortcuts import render

ASK_FIELD = "confirm_ask"
DEFAULT_TEMPLATE = "confirm.html"


@dataclass(frozen=True)
class Confirmation:
    """What the confirm step says. Write ``title`` as the question and ``what`` as the
    consequence in plain words; ``subject`` names who or what it happens to."""

    title: str
    what: str
    confirm_label: str
    cancel_url: str
    subject: str = ""
    subject_label: str = ""
    details: Sequence[str] = ()
    button_id: str = "confirm-action"
    danger: bool = True
    # Values the confirm POST carries unchanged (a role, a member id, a grace period).
    hidden: Mapping[str, str] = field(default_factory=dict)
    # Where the confirm step posts; empty: the URL that rendered it.
    action_url: str = ""
    # Non-empty when the action is not allowed at all: the step explains and offers only
    # the way back (the server refuses the POST too; this is only the message).
    blocked: str = ""


def is_ask(request: HttpRequest) -> bool:
    """True for a POST that asks for the confirm step rather than performing."""
    return request.method == "POST" and request.POST.get(ASK_FIELD) == "1"


def render_confirm(
    request: HttpRequest,
    confirmation: Confirmation,
    *,
    form: forms.Form | None = None,
    template: str = DEFAULT_TEMPLATE,
    context: Mapping[str, Any] | None = None,
    status: int = 200,
) -> HttpResponse:
    """Render the confirm step (``templates/partials/confirm.html`` inside ``template``)."""
    return render(
        request,
        template,
        {**(context or {}), "confirm": confirmation, "confirm_form": form},
        status=status,
    )


class ConfirmMixin:
    """GET (or an ask POST) shows the confirm step; POST performs. See the module text."""

    confirm_template: ClassVar[str] = DEFAULT_TEMPLATE
    form_class: ClassVar[type[forms.Form] | None] = None
    request: HttpRequest

    def get_confirm_form(self, data: QueryDict | None) -> forms.Form | None:
        """The fields the action needs, bound to ``data`` (None: unbound)."""
        return self.form_class(data) if self.form_class is not None else None

    def get_confirmation(self, form: forms.Form | None) -> Confirmation:
        raise NotImplementedError

    def get_confirm_context(self) -> dict[str, Any]:
        return {}

    def needs_confirmation(self, form: forms.Form | None) -> bool:
        """Whether an ask POST with these (valid) values needs the step at all. Say False
        for a harmless variant (a rotation that keeps the old key working) to perform it
        straight away."""
        return True

    def perform(self, form: forms.Form | None) -> HttpResponse:
        """Do the action (``form`` is valid when there is one) and answer, usually with a
        redirect and a message."""
        raise NotImplementedError

    def render_confirm_step(self, form: forms.Form | None, status: int = 200) -> HttpResponse:
        return render_confirm(
            self.request,
            self.get_confirmation(form),
            form=form,
            template=self.confirm_template,
            context=self.get_confirm_context(),
            status=status,
        )

    def get(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        # Choices and ids in the query (e.g. ?role=owner from a "Make owner" link) fill
        # the step in; free text (a reason, a textarea) never does, so a link cannot put
        # words in the confirmer's mouth. A bare GET shows the fields empty, without
        # complaining about them yet.
        data = self._choices_from_query(request.GET)
        form = self.get_confirm_form(data)
        if form is not None and form.is_bound:
            form.is_valid()
        return self.render_confirm_step(form)

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        form = self.get_confirm_form(request.POST)
        if is_ask(request):
            valid = form is None or form.is_valid()
            if valid and not self.needs_confirmation(form):
                return self.perform(form)
            return self.render_confirm_step(form)
        if form is not None and not form.is_valid():
            return self.render_confirm_step(form, status=400)
        return self.perform(form)

    def _choices_from_query(self, query: QueryDict) -> QueryDict | None:
        unbound = self.get_confirm_form(None)
        if unbound is None:
            return None
        allowed = {
            name
            for name, field in unbound.fields.items()
            if not isinstance(field.widget, forms.Textarea)
        }
        picked = QueryDict(mutable=True)
        for name in query:
            if name in allowed:
                picked.setlist(name, query.getlist(name))
        return picked if picked else None
