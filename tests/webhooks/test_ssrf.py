"""Webhook URLs that resolve to private, loopback or link-local addresses are refused at
creation, at update and again when a delivery is sent, unless WEBHOOK_ALLOW_PRIVATE."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from orgs.actors import Actor
from orgs.models import Organization
from tests.webhooks.conftest import Receiver
from webhooks.models import DeliveryStatus, WebhookDelivery, WebhookEndpoint
from webhooks.services import WebhookError, endpoint_create, endpoint_send_test, endpoint_update

pytestmark = pytest.mark.django_db

Capture = Callable[..., Any]


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hooks",
        "http://localhost/hooks",
        "http://10.0.0.8/hooks",
        "http://192.168.1.1/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/",
        "http://0.0.0.0/",
        "http://224.0.0.1/",
        "http://[::ffff:127.0.0.1]/",
        "http://[2002:7f00:1::]/",  # 6to4 around 127.0.0.1
        "http://[fec0::1]/",
        "http://192.0.0.8/",
        "http://192.88.99.1/",
    ],
)
def test_private_addresses_are_refused_at_creation(
    org: Organization, settings: Any, url: str
) -> None:
    settings.WEBHOOK_ALLOW_PRIVATE = False
    with pytest.raises(WebhookError) as refused:
        endpoint_create(org=org, url=url, actor=Actor.system())
    assert refused.value.code == "unsafe_url"
    assert not WebhookEndpoint.objects.exists()


def test_a_name_resolving_to_a_private_address_is_refused(
    org: Organization, settings: Any, resolve_as: Callable[[str, str], None]
) -> None:
    settings.WEBHOOK_ALLOW_PRIVATE = False
    resolve_as("hooks.internal.example", "10.1.2.3")
    with pytest.raises(WebhookError, match="private"):
        endpoint_create(org=org, url="https://hooks.internal.example/in", actor=Actor.system())
    resolve_as("hooks.public.example", "93.184.216.34")
    endpoint, _ = endpoint_create(
        org=org, url="https://hooks.public.example/in", actor=Actor.system()
    )
    with pytest.raises(WebhookError, match="private"):
        endpoint_update(
            endpoint=endpoint, url="https://hooks.internal.example/in", actor=Actor.system()
        )


@pytest.mark.parametrize(
    "url", ["ftp://hooks.example/", "file:///etc/passwd", "hooks.example", "http://u:p@x.example/"]
)
def test_only_http_and_https_urls_without_credentials(
    org: Organization, settings: Any, url: str
) -> None:
    settings.WEBHOOK_ALLOW_PRIVATE = True
    with pytest.raises(WebhookError):
        endpoint_create(org=org, url=url, actor=Actor.system())


def test_a_private_address_is_refused_again_at_delivery(
    org: Organization,
    receiver: Receiver,
    settings: Any,
    django_capture_on_commit_callbacks: Capture,
) -> None:
    endpoint, _ = endpoint_create(org=org, url=receiver.url, actor=Actor.system())  # allowed then
    settings.WEBHOOK_ALLOW_PRIVATE = False
    with django_capture_on_commit_callbacks(execute=True):
        endpoint_send_test(endpoint=endpoint, actor=Actor.system())
    assert receiver.received == []
    delivery = WebhookDelivery.objects.get()
    attempt = delivery.log.get()
    assert attempt.status_code is None and attempt.error.startswith("refused:")
    assert delivery.status == DeliveryStatus.PENDING  # retried: the setting may change back


def test_a_name_rebound_to_a_private_address_after_creation_is_not_reached(
    org: Organization,
    receiver: Receiver,
    settings: Any,
    resolve_as: Callable[[str, str], None],
    django_capture_on_commit_callbacks: Capture,
) -> None:
    settings.WEBHOOK_ALLOW_PRIVATE = False
    resolve_as("rebind.example", "93.184.216.34")
    port = receiver.url.split(":")[2].split("/")[0]
    endpoint, _ = endpoint_create(
        org=org, url=f"http://rebind.example:{port}/hooks", actor=Actor.system()
    )
    resolve_as("rebind.example", "127.0.0.1")
    with django_capture_on_commit_callbacks(execute=True):
        endpoint_send_test(endpoint=endpoint, actor=Actor.system())
    assert receiver.received == []
    assert WebhookDelivery.objects.get().log.get().error.startswith("refused:")


def test_the_checked_address_is_the_one_connected_to(
    org: Organization,
    receiver: Receiver,
    resolve_as: Callable[[str, str], None],
    django_capture_on_commit_callbacks: Capture,
) -> None:
    """The name is resolved once and the connection goes to that address, with the
    URL's host in the Host header."""
    resolve_as("receiver.example", "127.0.0.1")
    port = receiver.url.split(":")[2].split("/")[0]
    endpoint, _ = endpoint_create(
        org=org, url=f"http://receiver.example:{port}/hooks?x=1", actor=Actor.system()
    )
    with django_capture_on_commit_callbacks(execute=True):
        endpoint_send_test(endpoint=endpoint, actor=Actor.system())
    assert len(receiver.received) == 1
    assert receiver.received[0].headers["Host"] == f"receiver.example:{port}"
    assert receiver.received[0].path == "/hooks?x=1"


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.public.example:25/in",  # a well-known service port
        "https://hooks.public.example/caf\u00e9",  # not ASCII
        "https://hooks.public.example/a\x00b",  # a control character
        "https://hooks.public.example/a b",
    ],
)
def test_odd_ports_and_unprintable_urls_are_refused(
    org: Organization, settings: Any, resolve_as: Callable[[str, str], None], url: str
) -> None:
    settings.WEBHOOK_ALLOW_PRIVATE = False
    resolve_as("hooks.public.example", "93.184.216.34")
    with pytest.raises(WebhookError) as refused:
        endpoint_create(org=org, url=url, actor=Actor.system())
    assert refused.value.code == "unsafe_url"


def test_an_org_has_a_bounded_number_of_endpoints(
    org: Organization, settings: Any, receiver: Receiver
) -> None:
    settings.WEBHOOK_MAX_ENDPOINTS = 2
    endpoint_create(org=org, url=receiver.url, actor=Actor.system())
    endpoint_create(org=org, url=receiver.url, actor=Actor.system())
    with pytest.raises(WebhookError) as refused:
        endpoint_create(org=org, url=receiver.url, actor=Actor.system())
    assert refused.value.code == "too_many_endpoints"
    assert WebhookEndpoint.objects.filter(org=org).count() == 2
