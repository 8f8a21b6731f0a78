"""Dashboard pages of an org's webhooks (/o/<slug>/webhooks/): members read, owners and
admins manage. The signing secret is rendered once, in the create response."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.cache import never_cache

from config.confirm import Confirmation, ConfirmMixin
from orgs.actors import Actor
from orgs.tenancy import OrgMixin, OrgView
from webhooks.forms import EndpointForm
from webhooks.models import WebhookEndpoint
from webhooks.selectors import delivery_get, delivery_list, endpoint_get, endpoint_list
from webhooks.services import (
    WebhookError,
    delivery_resend,
    endpoint_create,
    endpoint_delete,
    endpoint_disable,
    endpoint_enable,
    endpoint_send_test,
)

DELIVERIES_SHOWN = 50


def _detail_url(org_slug: str, endpoint: WebhookEndpoint) -> str:
    return reverse(
        "webhook-detail", kwargs={"org_slug": org_slug, "endpoint_id": endpoint.public_id}
    )


class WebhookListView(OrgView):
    required_role = "member"
    template_name = "webhooks/endpoint_list.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context["endpoints"] = endpoint_list(org=self.org)
        return context


@method_decorator(never_cache, name="dispatch")
class WebhookCreateView(OrgMixin, View):
    """GET: the form. POST: add the endpoint and render its secret once."""

    required_role = "admin"

    def _form(self, form: EndpointForm, status: int = 200) -> HttpResponse:
        context = {"org": self.org, "membership": self.membership, "form": form}
        return render(self.request, "webhooks/endpoint_form.html", context, status=status)

    def get(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        return self._form(EndpointForm())

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        form = EndpointForm(request.POST)
        if not form.is_valid():
            return self._form(form, status=400)
        try:
            endpoint, secret = endpoint_create(
                org=self.org,
                url=form.cleaned_data["url"],
                description=form.cleaned_data["description"],
                events=list(form.cleaned_data["events"]),
                actor=Actor.signed_in(request),
                request=request,
            )
        except WebhookError as exc:
            form.add_error("url" if "url" in exc.code else None, exc.message)
            return self._form(form, status=400)
        context = {"org": self.org, "endpoint": endpoint, "secret": secret}
        return render(request, "webhooks/endpoint_secret.html", context)


class WebhookDetailView(OrgView):
    required_role = "member"
    template_name = "webhooks/endpoint_detail.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        endpoint = endpoint_get(org=self.org, public_id=self.kwargs["endpoint_id"])
        context["endpoint"] = endpoint
        context["deliveries"] = delivery_list(endpoint=endpoint)[:DELIVERIES_SHOWN]
        return context


class _EndpointAction(OrgMixin, View):
    """A harmless action on one endpoint (POST only): send a test, enable, resend."""

    required_role = "admin"

    def endpoint(self) -> WebhookEndpoint:
        return endpoint_get(org=self.org, public_id=self.kwargs["endpoint_id"])

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        endpoint = self.endpoint()
        try:
            messages.success(request, self.act(endpoint))
        except WebhookError as exc:
            messages.error(request, exc.message)
        return HttpResponseRedirect(_detail_url(self.org.slug, endpoint))

    def act(self, endpoint: WebhookEndpoint) -> str:
        raise NotImplementedError


class WebhookTestView(_EndpointAction):
    def act(self, endpoint: WebhookEndpoint) -> str:
        endpoint_send_test(
            endpoint=endpoint, actor=Actor.signed_in(self.request), request=self.request
        )
        return "A webhook.test event is on its way."


class WebhookEnableView(_EndpointAction):
    def act(self, endpoint: WebhookEndpoint) -> str:
        endpoint_enable(
            endpoint=endpoint, actor=Actor.signed_in(self.request), request=self.request
        )
        return "The endpoint is enabled."


class WebhookResendView(_EndpointAction):
    def act(self, endpoint: WebhookEndpoint) -> str:
        delivery = delivery_get(endpoint=endpoint, public_id=self.kwargs["delivery_id"])
        delivery_resend(
            delivery=delivery, actor=Actor.signed_in(self.request), request=self.request
        )
        return f"Delivery {delivery.public_id} is being sent again."


class _EndpointConfirmView(ConfirmMixin, OrgMixin, View):
    """An action behind the confirm step (config.confirm, ADR 0081)."""

    required_role = "admin"

    def endpoint(self) -> WebhookEndpoint:
        if not hasattr(self, "_endpoint"):
            self._endpoint = endpoint_get(org=self.org, public_id=self.kwargs["endpoint_id"])
        return self._endpoint


class WebhookDisableView(_EndpointConfirmView):
    def get_confirmation(self, form: forms.Form | None) -> Confirmation:
        endpoint = self.endpoint()
        return Confirmation(
            title="Disable this webhook endpoint?",
            subject=endpoint.url,
            subject_label="Endpoint",
            what="No more events are sent to it; its pending deliveries are given up.",
            details=["You can enable it again and resend deliveries later."],
            confirm_label="Disable endpoint",
            button_id="confirm-disable",
            cancel_url=_detail_url(self.org.slug, endpoint),
        )

    def perform(self, form: forms.Form | None) -> HttpResponse:
        endpoint = self.endpoint()
        endpoint_disable(
            endpoint=endpoint, actor=Actor.signed_in(self.request), request=self.request
        )
        messages.success(self.request, "The endpoint is disabled.")
        return HttpResponseRedirect(_detail_url(self.org.slug, endpoint))


class WebhookDeleteView(_EndpointConfirmView):
    def get_confirmation(self, form: forms.Form | None) -> Confirmation:
        endpoint = self.endpoint()
        return Confirmation(
            title="Delete this webhook endpoint?",
            subject=endpoint.url,
            subject_label="Endpoint",
            what="No more events are sent to it, and its delivery log is deleted.",
            confirm_label="Delete endpoint",
            button_id="confirm-delete",
            cancel_url=_detail_url(self.org.slug, endpoint),
        )

    def perform(self, form: forms.Form | None) -> HttpResponse:
        endpoint_delete(
            endpoint=self.endpoint(), actor=Actor.signed_in(self.request), request=self.request
        )
        messages.success(self.request, "The endpoint is deleted.")
        return HttpResponseRedirect(reverse("webhook-list", kwargs={"org_slug": self.org.slug}))
