"""What every key-guarded GET answers whatever the client asks about format: always the
same compact JSON whatever its `Accept` header says (the API speaks JSON only:
`apikeys.api_base.JsonOnlyNegotiation`), never a 406, no `Vary: Accept`, and HEAD answers
GET's headers without a body. These pin the wire behaviour of the GET path as it is, whatever serves
it."""

from __future__ import annotations

from typing import Any

import pytest

from orgs.models import Organization, Role
from tests.apikeys.api.conftest import ApiClient, KeyMaker
from tests.apikeys.api.test_matrix import ENDPOINTS
from tests.factories import MembershipFactory

pytestmark = pytest.mark.django_db

GETS = sorted({endpoint.path for endpoint in ENDPOINTS if endpoint.method == "GET"})

# Asked for in ways a client might: none of them changes the answer.
ASKED = [
    {"headers": {"Accept": "text/html"}},
    {"headers": {"Accept": "application/xml"}},
    {"headers": {"Accept": "application/json; indent=4"}},
    {"headers": {"Accept": "*/*"}},
]

# Headers that differ from one request to the next by design.
PER_REQUEST = {"x-request-id", "x-ratelimit-remaining", "ratelimit", "date"}


def _url(path: str, org: Organization, make_api_key: KeyMaker) -> str:
    member = MembershipFactory.create(org=org, role=Role.MEMBER)
    key, _ = make_api_key(org, ["api_keys:read"], name="Target")
    return path.format(member=member.public_id, key=key.public_id)


def _plain_get(path: str, org: Organization, make_api_key: KeyMaker) -> tuple[ApiClient, str, Any]:
    """A full-access client, the endpoint's URL, and its answer to a plain GET."""
    url = _url(path, org, make_api_key)
    _, secret = make_api_key(org, name="Full access")
    client = ApiClient(secret)
    plain = client.get(url)
    assert plain.status_code == 200, plain.content[:300]
    return client, url, plain


def _headers(response: Any) -> dict[str, str]:
    return {
        name.lower(): value for name, value in response.items() if name.lower() not in PER_REQUEST
    }


@pytest.mark.parametrize("path", GETS)
def test_a_get_answers_the_same_json_whatever_format_is_asked_for(
    path: str, org: Organization, make_api_key: KeyMaker
) -> None:
    client, url, plain = _plain_get(path, org, make_api_key)
    assert plain["Content-Type"] == "application/json"
    assert "Vary" not in plain
    assert b"\n" not in plain.content  # compact
    for asked in ASKED:
        response = client.get(url, **asked)
        assert response.status_code == 200, (asked, response.content[:300])
        assert response.content == plain.content, asked
        assert _headers(response) == _headers(plain), asked


@pytest.mark.parametrize("path", GETS)
def test_head_answers_gets_headers_without_a_body(
    path: str, org: Organization, make_api_key: KeyMaker
) -> None:
    client, url, got = _plain_get(path, org, make_api_key)
    head = client.request("HEAD", url)
    assert head.status_code == 200
    assert head.content == b""
    assert _headers(head) == _headers(got)
    assert head["Allow"] == got["Allow"] and "HEAD" in head["Allow"]


@pytest.mark.parametrize("path", GETS)
def test_a_refused_get_is_the_error_shape_whatever_format_is_asked_for(
    path: str, org: Organization, make_api_key: KeyMaker
) -> None:
    url = _url(path, org, make_api_key)
    for asked in ASKED:
        response = ApiClient().get(url, **asked)
        assert response.status_code == 401
        assert response["Content-Type"] == "application/json"
        assert "Vary" not in response
        assert response.json()["error"]["code"] == "missing_api_key"
