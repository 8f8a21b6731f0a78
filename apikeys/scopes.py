"""The scope registry: the one place that says which resources a key can be granted.

A scope is `<resource>:read` or `<resource>:write`; `write` implies `read`. The dashboard's
checkbox grid, the services' validation, the API's permission checks and the OpenAPI text
all read this module. Host projects add resources through
`settings.LATCHKEY_EXTRA_RESOURCES`, a list of dicts with `name`, `label`, and optionally
`description`, `writable` (default true) and `system` (default false).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from django.conf import settings

READ = "read"
WRITE = "write"
ACTIONS = (READ, WRITE)

_NAME_RE = re.compile(r"[a-z][a-z0-9_]{0,47}")


class ScopeError(ValueError):
    """A scope that the registry does not know, or that the key kind cannot hold."""

    def __init__(self, message: str, scope: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.scope = scope


@dataclass(frozen=True)
class Resource:
    name: str
    label: str
    description: str
    writable: bool = True
    system: bool = False

    @property
    def read_scope(self) -> str:
        return f"{self.name}:{READ}"

    @property
    def write_scope(self) -> str | None:
        return f"{self.name}:{WRITE}" if self.writable else None

    @property
    def scopes(self) -> tuple[str, ...]:
        return (self.read_scope, f"{self.name}:{WRITE}") if self.writable else (self.read_scope,)


RESOURCES: tuple[Resource, ...] = (
    Resource("organization", "Organization", "The organisation's profile and settings."),
    Resource("members", "Members", "Members of the organisation and their invitations."),
    Resource("api_keys", "API keys", "The organisation's API keys."),
    Resource("audit_log", "Audit log", "The organisation's audit events.", writable=False),
    Resource("usage", "Usage", "Request counts per key and hour.", writable=False),
    Resource("kyc", "KYC", "The organisation's KYC application."),
)

SYSTEM_RESOURCES: tuple[Resource, ...] = (
    Resource(
        "platform_organizations",
        "Platform: organisations",
        "Every organisation on the platform: plans, limits, suspension.",
        system=True,
    ),
    Resource(
        "platform_kyc",
        "Platform: KYC",
        "KYC applications of every organisation: review, approve, reject.",
        system=True,
    ),
)


def _extra_resources() -> tuple[Resource, ...]:
    extras: list[Resource] = []
    builtin = {r.name for r in (*RESOURCES, *SYSTEM_RESOURCES)}
    for entry in getattr(settings, "LATCHKEY_EXTRA_RESOURCES", None) or []:
        name = str(entry.get("name", ""))
        if not _NAME_RE.fullmatch(name) or name in builtin:
            raise ValueError(
                f"LATCHKEY_EXTRA_RESOURCES: invalid or duplicate resource name {name!r}."
            )
        builtin.add(name)
        extras.append(
            Resource(
                name=name,
                label=str(entry.get("label") or name.replace("_", " ").capitalize()),
                description=str(entry.get("description", "")),
                writable=bool(entry.get("writable", True)),
                system=bool(entry.get("system", False)),
            )
        )
    return tuple(extras)


def all_resources(system: bool = False) -> list[Resource]:
    """Org resources (default) or system resources, built-in first, then host extras."""
    extras = [r for r in _extra_resources() if r.system == system]
    return [*(SYSTEM_RESOURCES if system else RESOURCES), *extras]


def get_resource(name: str, *, system: bool = False) -> Resource | None:
    for resource in all_resources(system):
        if resource.name == name:
            return resource
    return None


def all_scopes(system: bool = False) -> list[str]:
    return [scope for resource in all_resources(system) for scope in resource.scopes]


def scope_choices(system: bool = False) -> list[tuple[str, str]]:
    """(value, label) pairs for a form field, in registry order."""
    choices = []
    for resource in all_resources(system):
        choices.append((resource.read_scope, f"{resource.label}: read"))
        if resource.writable:
            choices.append((f"{resource.name}:{WRITE}", f"{resource.label}: write"))
    return choices


def normalize_scopes(scopes: Iterable[object], *, system: bool = False) -> list[str]:
    """Validated, deduplicated, sorted scopes with `read` added for every `write`.

    Raises ScopeError naming the first scope that is malformed, unknown, write on a
    read-only resource, or of the wrong kind (a system scope on an org key or the reverse).
    """
    if isinstance(scopes, str):
        raise ScopeError("Scopes must be a list of strings.")
    known = {r.name: r for r in all_resources(system)}
    other_kind = {r.name for r in all_resources(not system)}
    result: set[str] = set()
    for scope in scopes:
        if not isinstance(scope, str):
            raise ScopeError(f"Scope {scope!r} is not a string.", scope=repr(scope)[:80])
        shown = scope[:80]
        name, sep, action = scope.partition(":")
        if not sep or action not in ACTIONS:
            raise ScopeError(
                f"Scope {shown!r} is malformed: use <resource>:read or <resource>:write.",
                scope=shown,
            )
        resource = known.get(name)
        if resource is None:
            if name in other_kind:
                kind = "system keys" if not system else "organisation keys"
                raise ScopeError(f"Scope {shown!r} is only for {kind}.", scope=shown)
            raise ScopeError(f"Unknown scope {shown!r}.", scope=shown)
        if action == WRITE and not resource.writable:
            raise ScopeError(f"Scope {shown!r} does not exist: {name} is read-only.", scope=shown)
        result.add(f"{name}:{READ}")
        if action == WRITE:
            result.add(f"{name}:{WRITE}")
    return sorted(result)


def has_scope(granted: Iterable[str], required: str) -> bool:
    """Whether `granted` covers `required`; `<r>:write` covers `<r>:read`."""
    granted_set = set(granted)
    if required in granted_set:
        return True
    name, _, action = required.partition(":")
    return action == READ and f"{name}:{WRITE}" in granted_set


def missing_scopes(granted: Iterable[str], requested: Iterable[str]) -> list[str]:
    """The requested scopes that `granted` does not cover (for key-creates-key checks)."""
    granted_list = list(granted)
    return [scope for scope in requested if not has_scope(granted_list, scope)]


def summarize(scopes: Iterable[str]) -> list[str]:
    """Scopes as people read them: `<r>:write` stands for itself and its read."""
    scope_set = set(scopes)
    return sorted(
        s
        for s in scope_set
        if not (s.endswith(f":{READ}") and s[: -len(READ)] + WRITE in scope_set)
    )
