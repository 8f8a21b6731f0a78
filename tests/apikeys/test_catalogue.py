"""The catalogue file: what it declares, and every way it can be malformed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import override_settings

from apikeys import catalogue
from apikeys.catalogue import CatalogueError, parse
from apikeys.keys import checksum, generate_secret, parse_key
from apikeys.scopes import (
    ScopeError,
    actions_in_use,
    all_resources,
    get_resource,
    has_scope,
    missing_scopes,
    normalize_scopes,
    preset_scopes,
    presets,
    summarize,
)

PRODUCT = Path(__file__).parent / "catalogues" / "product.toml"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def product() -> object:
    with override_settings(LATCHKEY_CATALOGUE=str(PRODUCT)):
        yield catalogue.current()


def test_without_a_file_only_the_built_ins_are_there() -> None:
    built = parse("")
    assert [r.name for r in built.resources][:3] == ["organization", "members", "api_keys"]
    assert built.wire.key_headers == ("Authorization", "X-API-Key")
    assert [p.name for p in built.presets] == ["read_only", "full_access"]
    assert built.routes == ()


def test_the_file_adds_resources_after_the_built_ins(product: object) -> None:
    names = [r.name for r in all_resources()]
    assert names[:8] == [
        "organization",
        "members",
        "api_keys",
        "audit_log",
        "usage",
        "kyc",
        "webhooks",
        "sign_in_links",
    ]
    assert names[8:] == ["payments", "invoices", "checkout", "finance"]
    assert [r.name for r in all_resources(system=True)][-1] == "tenants"
    assert actions_in_use() == ["read", "write", "create", "update", "delete", "execute"]


def test_write_implies_read_by_default_and_crud_implies_only_what_is_declared(
    product: object,
) -> None:
    assert normalize_scopes(["payments:write"]) == ["payments:read", "payments:write"]
    assert normalize_scopes(["invoices:create"]) == ["invoices:create"]
    # execute implies update, which implies read: closed transitively.
    assert normalize_scopes(["invoices:execute"]) == [
        "invoices:execute",
        "invoices:read",
        "invoices:update",
    ]
    assert has_scope({"invoices:execute"}, "invoices:read")
    assert not has_scope({"invoices:read"}, "invoices:update")
    assert not has_scope({"invoices:create"}, "invoices:read")
    assert summarize(["invoices:execute", "invoices:read", "invoices:update"]) == [
        "invoices:execute"
    ]


def test_a_write_only_resource_has_no_read(product: object) -> None:
    assert normalize_scopes(["checkout:write"]) == ["checkout:write"]
    with pytest.raises(ScopeError, match="checkout has the actions write"):
        normalize_scopes(["checkout:read"])


def test_a_star_grants_every_action_of_the_resource(product: object) -> None:
    assert normalize_scopes(["invoices:*"]) == ["invoices:*"]
    for action in ("create", "read", "update", "delete", "execute"):
        assert has_scope({"invoices:*"}, f"invoices:{action}")
    assert not has_scope({"invoices:*"}, "payments:read")
    assert missing_scopes(["invoices:read", "invoices:update"], ["invoices:*"]) == ["invoices:*"]
    # Holding every action today is not `*`: it would also grant actions added later.
    every = [f"invoices:{a}" for a in ("create", "read", "update", "delete", "execute")]
    assert missing_scopes(every, ["invoices:*"]) == ["invoices:*"]
    assert missing_scopes(["invoices:*"], ["invoices:*", *every]) == []
    assert summarize(["invoices:*", "invoices:read"]) == ["invoices:*"]


def test_presets_expand_to_concrete_scopes(product: object) -> None:
    offered = {p.name: preset_scopes(p) for p in presets()}
    assert list(offered) == ["read_only", "full_access", "billing"]
    assert "payments:read" in offered["read_only"]
    assert "finance:read" in offered["read_only"]
    assert not any(s.endswith(":write") for s in offered["read_only"])
    assert "checkout:write" in offered["full_access"]
    assert "sign_in_links:create" in offered["full_access"]
    assert offered["billing"] == [
        "payments:read",
        "invoices:create",
        "invoices:read",
        "invoices:update",
        "invoices:delete",
        "invoices:execute",
    ]


def test_routes_match_first_wins(product: object) -> None:
    current = catalogue.current()

    def scope(method: str, path: str) -> str | None:
        route = current.route_for(method, path)
        return None if route is None else route.scope

    assert scope("POST", "/v1/payments/pay_1/refund") == "payments:write"
    assert scope("GET", "/v1/payments/pay_1/refund") == "payments:read"
    assert scope("GET", "/v1/payments") == "payments:read"
    assert scope("POST", "/v1/payments/a/b/refund") == "payments:read"
    assert scope("GET", "/v1/customers") is None
    assert scope("GET", "/v1/paymentsX") is None


def test_test_keys_carry_the_environment_word_and_the_checksum_covers_it(
    product: object,
) -> None:
    raw = generate_secret("test")
    assert raw.startswith("pfk_sandbox_")
    body = raw[len("pfk_sandbox_") : -6]
    assert raw[-6:] == checksum("pfk", "sandbox", body)
    assert raw[-6:] != checksum("pfk", "test", body)
    parsed = parse_key(raw)
    assert parsed is not None and parsed.word == "sandbox" and parsed.environment == "test"
    assert generate_secret("live").startswith("pfk_live_")


def test_api_key_prefix_setting_wins_over_the_catalogue(product: object) -> None:
    with override_settings(API_KEY_PREFIX="acme"):
        assert generate_secret("test").startswith("acme_sandbox_")


# --- malformed files: each problem names the file, the line and what to do ----------------

MALFORMED = [
    ("[wire\nprefix = 'x'\n", 1, "not valid TOML"),
    ("[wire]\nprefix = 'x'\nprefix = 'y'\n", 3, "not valid TOML"),
    ("[limits]\nx = 1\n", 1, "unknown key 'limits'"),
    ("[wire]\nprefx = 'pfk'\n", 2, "unknown key 'prefx' in 'wire'"),
    ("[wire]\nprefix = 'p-k'\n", 2, "'wire.prefix' 'p-k' is not valid"),
    ("[wire]\nprefix = ''\n", 2, "'wire.prefix' must be a non-empty string"),
    ("[wire]\nkey_headers = []\n", 2, "'wire.key_headers' must be a non-empty list"),
    ("[wire]\nkey_headers = ['X Key']\n", 2, "a header name is letters, digits and '-'"),
    ("[wire]\nkey_headers = ['X-Key', 'x-key']\n", 2, "lists 'x-key' twice"),
    ("[wire]\norg_header = 'X-Key'\nkey_headers = ['X-Key']\n", 1, "given two roles"),
    ("[wire]\nkey_headers = ['X-Actor-Id']\n", 1, "'X-Actor-Id' is given two roles"),
    ("[wire]\nkey_headers = ['X_Key']\n", 2, "(no '_')"),
    ("[wire]\nkey_headers = ['Content-Type']\n", 1, "cannot be used in [wire]"),
    ("[[presets]]\nname = 'x'\nscopes = ['*:read']\ndescription = 3\n", 4, "must be a string"),
    ("[wire]\nenvironments = { prod = 'live' }\n", 2, "unknown key 'prod'"),
    ("[wire]\nenvironments = { test = 'Sandbox' }\n", 2, "1 to 16 lowercase letters"),
    ("[wire]\nenvironments = { test = 'live' }\n", 2, "used for two environments"),
    ("resources = 3\n", 1, "must be an array of tables"),
    ("[[resources]]\nlabel = 'Payments'\n", 1, "'resources[0]' has no 'name'"),
    ("[[resources]]\nname = 'Payments'\n", 2, "'resources[0].name' 'Payments' is not valid"),
    ("[[resources]]\nname = 'members'\n", 2, "the resource 'members' is built in"),
    ("[[resources]]\nname = 'a'\n\n[[resources]]\nname = 'a'\n", 5, "declared twice"),
    ("[[resources]]\nname = 'a'\ncolour = 'red'\n", 3, "unknown key 'colour'"),
    ("[[resources]]\nname = 'a'\nactions = []\n", 3, "must be a non-empty list"),
    ("[[resources]]\nname = 'a'\nactions = ['read', 'read']\n", 3, "lists 'read' twice"),
    ("[[resources]]\nname = 'a'\nactions = ['Read']\n", 3, "'Read' is not valid"),
    ("[[resources]]\nname = 'a'\nactions = ['*']\n", 3, "'*' is not valid"),
    (
        "[[resources]]\nname = 'a'\nactions = ['read']\nimplies = { write = ['read'] }\n",
        4,
        "unknown key 'write' in 'resources[0].implies'",
    ),
    (
        "[[resources]]\nname = 'a'\nactions = ['read', 'update']\n"
        "implies = { update = ['delete'] }\n",
        4,
        "implies 'delete', which is not an action of 'a'",
    ),
    ("[[resources]]\nname = 'a'\nsystem = 'yes'\n", 3, "'system' must be true or false"),
    ("[[resources]]\nname = 'a'\ndescription = 3\n", 3, "'description' must be a string"),
    ("[[presets]]\nlabel = 'x'\n", 1, "'presets[0]' has no 'name'"),
    ("[[presets]]\nname = 'read_only'\nscopes = ['*:read']\n", 2, "declared twice"),
    ("[[presets]]\nname = 'x'\n", 1, "the preset 'x' has no 'scopes'"),
    ("[[presets]]\nname = 'x'\nscopes = ['payments']\n", 3, "write <resource>:<action>"),
    ("[[presets]]\nname = 'x'\nscopes = ['nothing:read']\n", 3, "names no action"),
    ("[[routes]]\npath = '/v1/x'\n", 1, "'routes[0]' has no 'scope'"),
    ("[[routes]]\nscope = 'members:read'\n", 1, "'routes[0]' has no 'path'"),
    ("[[routes]]\npath = 'v1/x'\nscope = 'members:read'\n", 2, "must start with '/'"),
    ("[[routes]]\npath = '/v1/{x'\nscope = 'members:read'\n", 2, "has the segment '{x'"),
    ("[[routes]]\npath = '/v1//x'\nscope = 'members:read'\n", 2, "has the segment ''"),
    ("[[routes]]\npath = '/v1/x'\nscope = 'payments:read'\n", 3, "not an organisation scope"),
    ("[[routes]]\npath = '/v1/x'\nscope = 'members:*'\n", 3, "not an organisation scope"),
    (
        "[[routes]]\nmethods = ['FETCH']\npath = '/v1/x'\nscope = 'members:read'\n",
        2,
        "unknown HTTP method 'FETCH'",
    ),
]


@pytest.mark.parametrize(("text", "line", "problem"), MALFORMED)
def test_every_malformed_catalogue_names_file_line_and_problem(
    text: str, line: int, problem: str
) -> None:
    with pytest.raises(CatalogueError) as raised:
        parse(text, "/etc/latchkey/catalogue.toml")
    message = str(raised.value)
    assert message.startswith(f"/etc/latchkey/catalogue.toml, line {line}: "), message
    assert problem in message, message


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(CatalogueError, match=r"nowhere\.toml: the file does not exist"):
        catalogue.load(tmp_path / "nowhere.toml")


def test_a_malformed_catalogue_reaches_no_request(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[[resources]]\nname = 'members'\n")
    with override_settings(LATCHKEY_CATALOGUE=str(bad)), pytest.raises(CatalogueError):
        get_resource("members")
    assert get_resource("members") is not None


def _run(args: list[str], catalogue_path: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(extra)
    env.update(
        LATCHKEY_CATALOGUE=str(catalogue_path),
        DJANGO_SETTINGS_MODULE="config.settings",
        DATABASE_URL=f"sqlite:///{catalogue_path.parent / 'db.sqlite3'}",
    )
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_manage_py_check_reports_the_file_line_and_problem(tmp_path: Path) -> None:
    bad = tmp_path / "catalogue.toml"
    bad.write_text("[wire]\nprefix = 'pfk'\n\n[[resources]]\nname = 'payments'\nactions = 3\n")
    result = _run(["manage.py", "check"], bad)
    assert result.returncode != 0
    assert f"{bad}, line 6: 'resources[0].actions' must be a non-empty list" in result.stderr
    assert "latchkey.E001" in result.stderr
    good = tmp_path / "good.toml"
    good.write_text("[[resources]]\nname = 'payments'\n")
    assert _run(["manage.py", "check"], good).returncode == 0


def test_the_wsgi_application_refuses_to_start(tmp_path: Path) -> None:
    bad = tmp_path / "catalogue.toml"
    bad.write_text("[[routes]]\npath = '/v1/x'\nscope = 'nope:read'\n")
    result = _run(["-c", "import config.wsgi"], bad)
    assert result.returncode != 0
    assert "Latchkey cannot start: the catalogue is malformed." in result.stderr
    assert f"{bad}, line 3: the route '/v1/x' requires 'nope:read'" in result.stderr


def test_a_host_view_guarded_by_an_action_the_catalogue_lacks_stops_the_start() -> None:
    result = _run(
        ["manage.py", "check"],
        PRODUCT,
        LATCHKEY_EXTRA_URLCONF="tests.hostapp.bad_urls",
    )
    assert result.returncode != 0
    assert "latchkey.E002" in result.stderr
    assert "'payments' has no action 'refund' (read, write)" in result.stderr


def test_head_needs_what_get_needs() -> None:
    routes = parse(
        "[[routes]]\nmethods = ['GET']\npath = '/v1/pay/*'\nscope = 'members:read'\n"
        "[[routes]]\npath = '/v1/*'\nscope = 'members:write'\n"
    )
    route = routes.route_for("HEAD", "/v1/pay/1")
    assert route is not None and route.scope == "members:read"


def test_an_invalid_api_key_prefix_setting_stops_the_start() -> None:
    with (
        override_settings(API_KEY_PREFIX="lk-prod"),
        pytest.raises(CatalogueError, match="API_KEY_PREFIX: 'lk-prod' is not a valid"),
    ):
        catalogue.current()
    assert catalogue.current() is not None
