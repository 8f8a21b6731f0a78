"""Every row of the idempotency rules of docs/api.md, through the API."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from cryptography.exceptions import InvalidTag
from django.utils import timezone

from apikeys import idempotency
from apikeys.models import ApiKey, IdempotencyRecord
from apikeys.tasks import purge_idempotency_records
from orgs.models import Organization
from tests.apikeys.api.conftest import ApiClient
from tests.apikeys.guards.conftest import new_key

BODY = {"name": "Created by the API", "environment": "test", "scopes": ["usage:read"]}


def created_keys(org: Organization) -> int:
    return ApiKey.objects.filter(org=org, name=BODY["name"]).count()


def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.content[:300]
    error = response.json()["error"]
    assert error["code"] == code
    return error


def test_a_mutation_without_a_key_is_refused_and_nothing_is_stored(
    backend: str, org: Organization
) -> None:
    _, api = new_key(org)
    assert_error(api.post("api-keys", BODY), 400, "idempotency_key_missing")
    assert created_keys(org) == 0
    assert not IdempotencyRecord.objects.exists()


@pytest.mark.parametrize(
    "value", ["", '""', "x" * 256, "caf\u00e9", "tab\tbed", '"unterminated', '"bad \\n"']
)
def test_empty_overlong_or_unprintable_keys_are_invalid(
    backend: str, org: Organization, value: str
) -> None:
    _, api = new_key(org)
    assert_error(api.post("api-keys", BODY, idempotency_key=value), 400, "idempotency_key_invalid")
    assert created_keys(org) == 0
    assert not IdempotencyRecord.objects.exists()


def test_a_new_key_runs_and_a_repeat_replays_without_new_writes(
    backend: str, org: Organization, frozen_clock: Any
) -> None:
    _, api = new_key(org)
    first = api.post("api-keys", BODY, idempotency_key="order-1")
    assert first.status_code == 201
    assert "Idempotent-Replayed" not in first
    record = IdempotencyRecord.objects.get()
    assert record.state == IdempotencyRecord.State.COMPLETED and record.status_code == 201
    again = api.post("api-keys", BODY, idempotency_key="order-1")
    assert again.status_code == 201
    assert again["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()  # the secret too, to the holder of the API key
    assert created_keys(org) == 1
    # Fresh rate-limit headers on the replay: it was counted like any request.
    assert int(again["X-RateLimit-Remaining"]) == int(first["X-RateLimit-Remaining"]) - 1


def test_plain_and_quoted_forms_name_the_same_key(backend: str, org: Organization) -> None:
    _, api = new_key(org)
    assert api.post("api-keys", BODY, idempotency_key="abc").status_code == 201
    replay = api.post("api-keys", BODY, idempotency_key='"abc"')
    assert replay.status_code == 201 and replay["Idempotent-Replayed"] == "true"
    assert created_keys(org) == 1


def test_the_same_document_formatted_differently_is_the_same_request(
    backend: str, org: Organization
) -> None:
    _, api = new_key(org)
    assert api.post("api-keys", BODY, idempotency_key="k").status_code == 201
    reordered = dict(reversed(list(BODY.items())))
    assert api.post("api-keys", reordered, idempotency_key="k")["Idempotent-Replayed"] == "true"


@pytest.mark.parametrize("change", ["body", "path", "method"])
def test_the_same_key_for_a_different_request_is_refused(
    backend: str, org: Organization, change: str
) -> None:
    key, api = new_key(org)
    assert api.post("api-keys", BODY, idempotency_key="k").status_code == 201
    if change == "body":
        response = api.post("api-keys", {**BODY, "name": "Other"}, idempotency_key="k")
    elif change == "path":
        response = api.post(f"api-keys/{key.public_id}/revoke", {}, idempotency_key="k")
    else:
        response = api.call("PATCH", "organization", {"name": "New"}, idempotency_key="k")
    assert_error(response, 422, "idempotency_key_reused")
    assert created_keys(org) == 1
    key.refresh_from_db()
    assert key.revoked_at is None


def test_while_the_first_runs_the_same_key_is_refused_with_retry_after(
    backend: str, org: Organization
) -> None:
    key, api = new_key(org)
    fp = idempotency.fingerprint("POST", "/api/v1/api-keys", b"")
    claim = idempotency.acquire(api_key_pk=key.pk, khash=idempotency.key_hash("k"), fp=fp)
    assert isinstance(claim, idempotency.Claim)
    same = api.call("POST", "api-keys", None, idempotency_key="k")
    assert_error(same, 409, "idempotency_key_in_use")
    assert same["Retry-After"] == "1"
    assert created_keys(org) == 0


def test_a_worker_that_died_holds_the_key_until_its_claim_lapses(
    backend: str, org: Organization
) -> None:
    key, api = new_key(org)
    fp = idempotency.fingerprint("POST", "/api/v1/api-keys", json.dumps(BODY).encode())
    idempotency.acquire(api_key_pk=key.pk, khash=idempotency.key_hash("k"), fp=fp)
    assert_error(api.post("api-keys", BODY, idempotency_key="k"), 409, "idempotency_key_in_use")
    IdempotencyRecord.objects.update(claim_expires_at=timezone.now() - timedelta(seconds=1))
    retry = api.post("api-keys", BODY, idempotency_key="k")
    assert retry.status_code == 201 and "Idempotent-Replayed" not in retry
    assert created_keys(org) == 1
    assert IdempotencyRecord.objects.get().state == IdempotencyRecord.State.COMPLETED


def test_a_request_that_failed_validation_stores_nothing_and_a_corrected_retry_runs(
    backend: str, org: Organization
) -> None:
    _, api = new_key(org)
    bad = api.post("api-keys", {**BODY, "scopes": ["nonsense:read"]}, idempotency_key="k")
    assert bad.status_code == 400
    assert not IdempotencyRecord.objects.exists()
    assert api.post("api-keys", BODY, idempotency_key="k").status_code == 201


def test_a_request_refused_for_scope_stores_nothing(backend: str, org: Organization) -> None:
    _, reader = new_key(org, scopes=["api_keys:read"])
    assert_error(reader.post("api-keys", BODY, idempotency_key="k"), 403, "insufficient_scope")
    assert not IdempotencyRecord.objects.exists()


def test_a_request_refused_by_authentication_stores_nothing(
    backend: str, org: Organization
) -> None:
    stranger = ApiClient("lk_test_" + "0" * 38)
    assert stranger.post("api-keys", BODY, idempotency_key="k").status_code == 401
    assert not IdempotencyRecord.objects.exists()


def test_a_request_refused_by_the_rate_limit_stores_nothing_and_a_retry_runs(
    backend: str, org: Organization, frozen_clock: Any
) -> None:
    _, api = new_key(org)
    for _ in range(10):
        api.get("me")
    assert_error(api.post("api-keys", BODY, idempotency_key="k"), 429, "rate_limited")
    assert not IdempotencyRecord.objects.exists()
    frozen_clock.now += 1
    assert api.post("api-keys", BODY, idempotency_key="k").status_code == 201


def test_a_request_that_raised_is_rolled_back_and_a_retry_runs(
    backend: str, org: Organization, monkeypatch: pytest.MonkeyPatch
) -> None:
    from apikeys import api as api_module

    real = api_module.apikey_create
    calls = {"n": 0}

    def create_then_fail(**kwargs: Any) -> Any:
        result = real(**kwargs)
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("the database went away after the write")
        return result

    monkeypatch.setattr(api_module, "apikey_create", create_then_fail)
    _, api = new_key(org)
    failed = api.post("api-keys", BODY, idempotency_key="k")
    assert_error(failed, 500, "internal_error")
    assert created_keys(org) == 0  # rolled back
    assert not IdempotencyRecord.objects.exists()
    assert api.post("api-keys", BODY, idempotency_key="k").status_code == 201
    assert created_keys(org) == 1


def test_the_outcome_is_stored_in_the_same_transaction_as_the_writes(
    backend: str, org: Organization, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("storing the outcome failed")

    monkeypatch.setattr(idempotency, "complete", fail)
    _, api = new_key(org)
    assert api.post("api-keys", BODY, idempotency_key="k").status_code == 500
    assert created_keys(org) == 0  # the key's creation went with the outcome


def test_keys_of_another_api_key_or_org_are_independent(
    backend: str, org: Organization, other_org: Organization
) -> None:
    _, first = new_key(org, name="one")
    _, second = new_key(org, name="two")
    _, foreign = new_key(other_org, name="three")
    for api in (first, second, foreign):
        response = api.post("api-keys", BODY, idempotency_key="shared")
        assert response.status_code == 201 and "Idempotent-Replayed" not in response
    assert created_keys(org) == 2 and created_keys(other_org) == 1


def test_after_24_hours_the_key_names_a_new_request(backend: str, org: Organization) -> None:
    _, api = new_key(org)
    assert api.post("api-keys", BODY, idempotency_key="k").status_code == 201
    IdempotencyRecord.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    again = api.post("api-keys", BODY, idempotency_key="k")
    assert again.status_code == 201 and "Idempotent-Replayed" not in again
    assert created_keys(org) == 2


def test_get_ignores_the_key(backend: str, org: Organization) -> None:
    _, api = new_key(org)
    assert api.get("me", idempotency_key="").status_code == 200
    assert api.get("api-keys", idempotency_key="x" * 300).status_code == 200
    assert not IdempotencyRecord.objects.exists()


def test_stored_bodies_are_encrypted_with_the_presenting_key(
    backend: str, org: Organization
) -> None:
    _, api = new_key(org)
    response = api.post("api-keys", BODY, idempotency_key="k")
    secret = response.json()["secret"]
    record = IdempotencyRecord.objects.get()
    assert record.response_body is not None
    stored = bytes(record.response_body)
    assert secret.encode() not in stored and b"Created by the API" not in stored
    assert record.key_hash != "k" and "k" not in record.fingerprint
    with pytest.raises(InvalidTag):
        idempotency.unseal(
            stored,
            api_key_secret=secret,  # another key's secret
            idempotency_key="k",
            associated=record.fingerprint.encode(),
        )


def test_expired_records_are_purged(backend: str, org: Organization) -> None:
    _, api = new_key(org)
    api.post("api-keys", BODY, idempotency_key="old")
    api.post("api-keys", {**BODY, "name": "B"}, idempotency_key="new")
    IdempotencyRecord.objects.filter(pk=IdempotencyRecord.objects.order_by("pk")[0].pk).update(
        expires_at=timezone.now() - timedelta(minutes=1)
    )
    assert purge_idempotency_records() == 1
    assert IdempotencyRecord.objects.count() == 1


def test_delete_and_revoke_are_idempotent_too(backend: str, org: Organization) -> None:
    _, api = new_key(org)
    target, _ = new_key(org, name="target")
    first = api.post(f"api-keys/{target.public_id}/revoke", {}, idempotency_key="r")
    again = api.post(f"api-keys/{target.public_id}/revoke", {}, idempotency_key="r")
    assert first.status_code == again.status_code == 200
    assert again["Idempotent-Replayed"] == "true"
    deleted = api.call("DELETE", f"api-keys/{target.public_id}", idempotency_key="d")
    replay = api.call("DELETE", f"api-keys/{target.public_id}", idempotency_key="d")
    assert deleted.status_code == replay.status_code == 204
    assert replay["Idempotent-Replayed"] == "true"
