"""The scope registry: which resources and actions a key can be granted.

A scope is `<resource>:<action>`; `<resource>:*` grants every action of the resource,
including actions the catalogue adds later. An action grants the actions it implies
(`write` implies `read` unless the catalogue says otherwise). The resources are the
built-ins plus the operator's catalogue (`apikeys.catalogue`, docs/catalogue.md); the
dashboard's grid and presets, the services' validation, the API's permission checks,
`GET /api/v1/scopes` and the OpenAPI text all read this module.

Stored scopes are what was granted plus what it implied at the time (so a key's list reads
complete); checks also apply the catalogue's current implications.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from apikeys.catalogue import ANY, READ, WRITE, Preset, Resource, current, expand_pattern

__all__ = [
    "ANY",
    "READ",
    "WRITE",
    "Resource",
    "ScopeError",
    "actions_in_use",
    "all_resources",
    "all_scopes",
    "get_resource",
    "has_scope",
    "missing_scopes",
    "normalize_scopes",
    "preset_scopes",
    "presets",
    "scope_choices",
    "summarize",
]


class ScopeError(ValueError):
    """A scope that the registry does not know, or that the key kind cannot hold."""

    def __init__(self, message: str, scope: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.scope = scope


def all_resources(system: bool = False) -> list[Resource]:
    """Org resources (default) or system resources: built-in first, then the catalogue's."""
    return list(current().resources_of(system=system))


def get_resource(name: str, *, system: bool = False) -> Resource | None:
    return current().resource(name, system=system)


def all_scopes(system: bool = False) -> list[str]:
    return [scope for resource in all_resources(system) for scope in resource.scopes]


def actions_in_use(system: bool = False) -> list[str]:
    """Every action some resource has, in registry order: the grid's columns."""
    seen: dict[str, None] = {}
    for resource in all_resources(system):
        for action in resource.actions:
            seen.setdefault(action, None)
    return list(seen)


def scope_choices(system: bool = False) -> list[tuple[str, str]]:
    """(value, label) pairs for a form field, in registry order."""
    return [
        (f"{resource.name}:{action}", f"{resource.label}: {action}")
        for resource in all_resources(system)
        for action in resource.actions
    ]


def presets(system: bool = False) -> list[Preset]:
    return [p for p in current().presets if p.system == system]


def preset_scopes(preset: Preset) -> list[str]:
    """The concrete scopes a preset ticks, in registry order."""
    pool = all_resources(preset.system)
    found = {scope for pattern in preset.patterns for scope in expand_pattern(pattern, pool)}
    return [scope for scope in all_scopes(preset.system) if scope in found]


def normalize_scopes(scopes: Iterable[object], *, system: bool = False) -> list[str]:
    """Validated, deduplicated, sorted scopes, with every implied scope added.

    Raises ScopeError naming the first scope that is malformed, unknown, an action the
    resource lacks, or of the wrong kind (a system scope on an org key or the reverse).
    """
    if isinstance(scopes, str):
        raise ScopeError("Scopes must be a list of strings.")
    result: set[str] = set()
    for scope in scopes:
        if not isinstance(scope, str):
            raise ScopeError(f"Scope {scope!r} is not a string.", scope=repr(scope)[:80])
        shown = scope[:80]
        name, sep, action = scope.partition(":")
        if not sep or not name or not action:
            raise ScopeError(
                f"Scope {shown!r} is malformed: use <resource>:<action>, e.g. "
                f"'{all_resources(system)[0].name}:read', or <resource>:* for every action.",
                scope=shown,
            )
        resource = get_resource(name, system=system)
        if resource is None:
            if get_resource(name, system=not system) is not None:
                kind = "system keys" if not system else "organisation keys"
                raise ScopeError(f"Scope {shown!r} is only for {kind}.", scope=shown)
            raise ScopeError(
                f"Unknown scope {shown!r}: GET /api/v1/scopes lists the resources.", scope=shown
            )
        if action == ANY:
            result.add(f"{name}:{ANY}")
            continue
        if not resource.has(action):
            raise ScopeError(
                f"Scope {shown!r} does not exist: {name} has the actions "
                f"{', '.join(resource.actions)}.",
                scope=shown,
            )
        result.update(f"{name}:{granted}" for granted in resource.grants(action))
    return sorted(result)


def has_scope(granted: Iterable[str], required: str) -> bool:
    """Whether `granted` covers `required`: the scope itself, `<resource>:*`, or an action
    that implies it."""
    granted_set = granted if isinstance(granted, (set, frozenset)) else set(granted)
    if required in granted_set:
        return True
    name, _, action = required.partition(":")
    if f"{name}:{ANY}" in granted_set:
        return True
    resource = get_resource(name) or get_resource(name, system=True)
    if resource is None:
        return False
    if action == ANY:
        # `*` also covers actions added later: only `*` itself covers it.
        return False
    return any(f"{name}:{other}" in granted_set for other in resource.implied_by(action))


def missing_scopes(granted: Iterable[str], requested: Iterable[str]) -> list[str]:
    """The requested scopes that `granted` does not cover (for key-creates-key checks)."""
    granted_set = set(granted)
    return [scope for scope in requested if not has_scope(granted_set, scope)]


@dataclass(frozen=True)
class _Held:
    resource: Resource | None
    actions: set[str]


def summarize(scopes: Iterable[str]) -> list[str]:
    """Scopes as people read them: an implied scope is left out beside what implies it,
    and `<resource>:*` stands alone for its resource."""
    by_resource: dict[str, _Held] = {}
    for scope in scopes:
        name, _, action = scope.partition(":")
        held = by_resource.setdefault(
            name, _Held(get_resource(name) or get_resource(name, system=True), set())
        )
        held.actions.add(action)
    shown = []
    for name, held in by_resource.items():
        if ANY in held.actions:
            shown.append(f"{name}:{ANY}")
            continue
        for action in held.actions:
            implied_elsewhere = held.resource is not None and any(
                other in held.actions for other in held.resource.implied_by(action)
            )
            if not implied_elsewhere:
                shown.append(f"{name}:{action}")
    return sorted(shown)
