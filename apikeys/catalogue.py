"""The operator's product in one TOML file: wire words, resources, presets, routes.

`settings.LATCHKEY_CATALOGUE` names the file (read with `tomllib`); every part is optional
and the built-in resources are always present. The format, and what each part drives, is
in docs/catalogue.md. `current()` is the one catalogue of the process: the scope registry
(`apikeys.scopes`), the key format (`apikeys.keys`), the credential and client headers of
the API and the dashboard's grid all read it.

A malformed file raises `CatalogueError`, whose text names the file, the line and the
problem. The app refuses to start with it (`manage.py check`, `runserver`, the WSGI entry
point and the Celery app), so a typo never serves requests with a half-read product.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

READ = "read"
WRITE = "write"
ANY = "*"
DEFAULT_ACTIONS = (READ, WRITE)

NAME_RE = re.compile(r"[a-z][a-z0-9_]{0,47}")
ACTION_RE = re.compile(r"[a-z][a-z0-9_]{0,31}")
# What a key's first part may be: letters and digits, words joined by single underscores.
PREFIX_RE = re.compile(r"[A-Za-z][A-Za-z0-9]{0,15}(?:_[A-Za-z0-9]{1,16}){0,2}")
WORD_RE = re.compile(r"[a-z0-9]{1,16}")
# RFC 9110 token characters: what a header name may hold.
# No `_`: servers and proxies drop such headers, and `X_Key` and `X-Key` share a META name.
HEADER_RE = re.compile(r"[!#$%&'*+.^`|~0-9A-Za-z-]{1,64}")
# Headers that cannot carry a key or a caller's value (their META names are not HTTP_*).
RESERVED_HEADERS = frozenset({"content-type", "content-length"})
PATH_SEGMENT_RE = re.compile(r"[A-Za-z0-9._~!$&'()+,;=:@%-]+")
PARAM_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

KEY_ENVIRONMENTS = ("live", "test", "sys")
DEFAULT_KEY_HEADERS = ("Authorization", "X-API-Key")
AUTHORIZATION = "authorization"
DEFAULT_PREFIX = "lk"


class CatalogueError(Exception):
    """A catalogue that cannot be served: `<file>, line <n>: <problem>`."""

    def __init__(self, path: str, line: int | None, problem: str) -> None:
        self.path = path
        self.line = line
        self.problem = problem
        where = f"{path}, line {line}" if line else path
        super().__init__(f"{where}: {problem}")


# --- the parts -------------------------------------------------------------------------


@dataclass(frozen=True)
class Resource:
    """A thing keys are granted actions on. `implies` maps an action to the actions it
    also grants (closed transitively); by default `write` implies `read`."""

    name: str
    label: str
    description: str
    actions: tuple[str, ...] = DEFAULT_ACTIONS
    implies: tuple[tuple[str, tuple[str, ...]], ...] = ((WRITE, (READ,)),)
    system: bool = False
    builtin: bool = True

    @property
    def scopes(self) -> tuple[str, ...]:
        return tuple(f"{self.name}:{action}" for action in self.actions)

    def has(self, action: str) -> bool:
        return action in self.actions

    @cached_property
    def _closure(self) -> dict[str, frozenset[str]]:
        direct = dict(self.implies)
        closure: dict[str, frozenset[str]] = {}
        for action in self.actions:
            seen = {action}
            todo = list(direct.get(action, ()))
            while todo:
                implied = todo.pop()
                if implied not in seen:
                    seen.add(implied)
                    todo.extend(direct.get(implied, ()))
            closure[action] = frozenset(seen)
        return closure

    def grants(self, action: str) -> frozenset[str]:
        """`action` and every action it implies on this resource."""
        return self._closure.get(action, frozenset())

    def implied_by(self, action: str) -> list[str]:
        """The actions whose grant includes `action` (for the grid's ticking)."""
        return [a for a in self.actions if a != action and action in self.grants(a)]

    # Convenience for read/write resources (the built-ins and most catalogues).
    @property
    def writable(self) -> bool:
        return WRITE in self.actions

    @property
    def read_scope(self) -> str:
        return f"{self.name}:{READ}"

    @property
    def write_scope(self) -> str | None:
        return f"{self.name}:{WRITE}" if self.writable else None


def _rw(name: str, label: str, description: str, *, read_only: bool = False) -> Resource:
    if read_only:
        return Resource(name, label, description, actions=(READ,), implies=())
    return Resource(name, label, description)


BUILTIN_RESOURCES: tuple[Resource, ...] = (
    _rw("organization", "Organization", "The organisation's profile and settings."),
    _rw("members", "Members", "Members of the organisation and their invitations."),
    _rw("api_keys", "API keys", "The organisation's API keys."),
    _rw("audit_log", "Audit log", "The organisation's audit events.", read_only=True),
    _rw("usage", "Usage", "Request counts per key and hour.", read_only=True),
    _rw("kyc", "KYC", "The organisation's KYC application."),
    _rw("webhooks", "Webhooks", "Webhook endpoints and their deliveries."),
    Resource(
        "sign_in_links",
        "Sign-in links",
        "Single-use sign-in links for the organisation's members.",
        actions=("create",),
        implies=(),
    ),
)

BUILTIN_SYSTEM_RESOURCES: tuple[Resource, ...] = (
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
    Resource(
        "keys",
        "Keys",
        "Verify any organisation's API key for a service (the verify API).",
        actions=("verify",),
        implies=(),
        system=True,
    ),
)


@dataclass(frozen=True)
class Preset:
    """A named bundle of scope patterns offered above the grid (`*` = every resource
    that has the action, or every action of the resource)."""

    name: str
    label: str
    description: str
    patterns: tuple[str, ...]
    system: bool = False
    builtin: bool = False


BUILTIN_PRESETS: tuple[Preset, ...] = (
    Preset(
        "read_only", "Read only", "Read every resource; change nothing.", ("*:read",), False, True
    ),
    Preset("full_access", "Full access", "Every action on every resource.", ("*:*",), False, True),
)


@dataclass(frozen=True)
class Route:
    """What the gateway door requires for a method and path: first match wins."""

    methods: frozenset[str]  # empty: any method
    path: str
    scope: str
    regex: re.Pattern[str]

    def matches(self, method: str, path: str) -> bool:
        method = method.upper()
        if method == "HEAD" and "GET" in self.methods:
            method = "GET"  # a HEAD is a GET without the body: it needs what GET needs
        return (not self.methods or method in self.methods) and bool(self.regex.fullmatch(path))


@dataclass(frozen=True)
class Wire:
    """The words on the wire: key prefix, headers, and the environment words of keys."""

    prefix: str | None  # None: the default (API_KEY_PREFIX, if set, wins over both)
    key_headers: tuple[str, ...] = DEFAULT_KEY_HEADERS
    org_header: str = "X-Org-Id"
    client_version_header: str = "X-Client-Version"
    actor_header: str = "X-Actor-Id"
    environments: tuple[tuple[str, str], ...] = tuple((e, e) for e in KEY_ENVIRONMENTS)

    def word(self, environment: str) -> str:
        return dict(self.environments)[environment]

    @cached_property
    def environment_of_word(self) -> dict[str, str]:
        return {word: env for env, word in self.environments}


def meta_name(header: str) -> str:
    """The WSGI `META` name of an HTTP header (`X-Org-Id` → `HTTP_X_ORG_ID`)."""
    return "HTTP_" + header.upper().replace("-", "_")


@dataclass(frozen=True)
class Catalogue:
    path: str
    wire: Wire
    resources: tuple[Resource, ...]  # org resources, built-in first
    system_resources: tuple[Resource, ...]
    presets: tuple[Preset, ...]
    routes: tuple[Route, ...]

    def resources_of(self, *, system: bool) -> tuple[Resource, ...]:
        return self.system_resources if system else self.resources

    @cached_property
    def _by_name(self) -> dict[tuple[bool, str], Resource]:
        return {
            (resource.system, resource.name): resource
            for resource in (*self.resources, *self.system_resources)
        }

    def resource(self, name: str, *, system: bool = False) -> Resource | None:
        return self._by_name.get((system, name))

    def route_for(self, method: str, path: str) -> Route | None:
        for route in self.routes:
            if route.matches(method, path):
                return route
        return None

    @property
    def prefix(self) -> str:
        configured = str(getattr(settings, "API_KEY_PREFIX", "") or "")
        return configured or self.wire.prefix or DEFAULT_PREFIX

    @cached_property
    def key_header_names(self) -> tuple[tuple[str, str], ...]:
        """(header as declared, its META name) in the declared order."""
        return tuple((h, meta_name(h)) for h in self.wire.key_headers)

    @cached_property
    def org_header_meta(self) -> str:
        return meta_name(self.wire.org_header)

    @cached_property
    def client_version_meta(self) -> str:
        return meta_name(self.wire.client_version_header)

    @cached_property
    def client_headers(self) -> tuple[tuple[str, str], ...]:
        """(header, its META name) of the client version and the actor, in that order."""
        return (
            (self.wire.client_version_header, self.client_version_meta),
            (self.wire.actor_header, meta_name(self.wire.actor_header)),
        )

    def key_headers_text(self) -> str:
        """How a person is told to send a key: `'Authorization: Bearer <key>' or ...`."""
        shown = [
            f"'{h}: Bearer <key>'" if h.lower() == AUTHORIZATION else f"'{h}: <key>'"
            for h in self.wire.key_headers
        ]
        return " or ".join(shown)


def expand_pattern(
    pattern: str, resources: Iterable[Resource]
) -> list[str]:  # `*:read`, `payments:*`, `*:*`
    """The concrete scopes a preset pattern names, in registry order."""
    name, _, action = pattern.partition(":")
    found = []
    for resource in resources:
        if name not in (ANY, resource.name):
            continue
        for candidate in resource.actions:
            if action in (ANY, candidate):
                found.append(f"{resource.name}:{candidate}")
    return found


# --- reading the file ------------------------------------------------------------------


class _Lines:
    """Finds the line of a table or key in the source, for error messages (tomllib gives
    positions for syntax errors only)."""

    _HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.\"' -]+?)\s*\]\]?\s*(?:#.*)?$")

    def __init__(self, text: str) -> None:
        self.tables: list[tuple[tuple[Any, ...], int, int]] = []  # (path, first, last line)
        counts: dict[str, int] = {}
        current: tuple[Any, ...] = ()
        start = 1
        lines = text.splitlines()
        for number, line in enumerate(lines, start=1):
            match = self._HEADER.match(line)
            if match is None:
                continue
            self.tables.append((current, start, number - 1))
            parts = [p.strip().strip("\"'") for p in match.group(2).split(".")]
            if match.group(1) == "[[":
                index = counts.get(parts[0], -1) + 1
                counts[parts[0]] = index
                current = (parts[0], index, *parts[1:])
            elif parts[0] in counts:  # a sub-table of the last array element
                current = (parts[0], counts[parts[0]], *parts[1:])
            else:
                current = tuple(parts)
            start = number
        self.tables.append((current, start, len(lines)))
        self.lines = lines

    def find(self, path: tuple[Any, ...]) -> int | None:
        """The line of `path` (table path, then optionally a key in it)."""
        for cut in range(len(path), -1, -1):
            table, rest = path[:cut], path[cut:]
            for table_path, first, last in self.tables:
                if table_path != table:
                    continue
                if not rest:
                    return first if table else 1
                key = re.compile(rf"^\s*{re.escape(str(rest[0]))}\s*[=.]")
                for number in range(first, last + 1):
                    if key.match(self.lines[number - 1]):
                        return number
                return first if table else None
        return None


class _Reader:
    def __init__(self, path: str, text: str) -> None:
        self.path = path
        self.lines = _Lines(text)

    def error(self, where: tuple[Any, ...], problem: str) -> CatalogueError:
        return CatalogueError(self.path, self.lines.find(where), problem)

    def table(self, value: Any, where: tuple[Any, ...], known: Iterable[str]) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.error(where, f"{_dotted(where)} must be a table.")
        allowed = set(known)
        for key in value:
            if key not in allowed:
                expected = ", ".join(sorted(allowed))
                raise self.error(
                    (*where, key), f"unknown key '{key}' in {_dotted(where)}; expected {expected}."
                )
        return value

    def string(
        self, value: Any, where: tuple[Any, ...], pattern: re.Pattern[str] | None = None
    ) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.error(where, f"{_dotted(where)} must be a non-empty string.")
        if pattern is not None and not pattern.fullmatch(value):
            raise self.error(where, f"{_dotted(where)} {value!r} is not valid: {_RULES[pattern]}")
        return value

    def strings(
        self, value: Any, where: tuple[Any, ...], pattern: re.Pattern[str] | None = None
    ) -> tuple[str, ...]:
        if not isinstance(value, list) or not value:
            raise self.error(where, f"{_dotted(where)} must be a non-empty list of strings.")
        items = tuple(self.string(v, where, pattern) for v in value)
        seen: set[str] = set()
        for item in items:
            if item.lower() in seen:
                raise self.error(where, f"{_dotted(where)} lists {item!r} twice.")
            seen.add(item.lower())
        return items

    def array_of_tables(self, value: Any, name: str) -> list[dict[str, Any]]:
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise self.error((name,), f"'{name}' must be an array of tables: [[{name}]].")
        return value


_RULES: dict[re.Pattern[str], str] = {
    NAME_RE: "use lowercase letters, digits and _ (starting with a letter), at most 48.",
    ACTION_RE: "use lowercase letters, digits and _ (starting with a letter), at most 32.",
    PREFIX_RE: "use letters and digits, optionally in words joined by _, e.g. 'sk' or 'acme'.",
    WORD_RE: "use 1 to 16 lowercase letters or digits.",
    HEADER_RE: "a header name is letters, digits and '-' (no '_'), at most 64.",
}


def _dotted(where: tuple[Any, ...]) -> str:
    out = ""
    for part in where:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return f"'{out}'"


TOP_LEVEL = ("wire", "resources", "presets", "routes")
WIRE_KEYS = (
    "prefix",
    "key_headers",
    "org_header",
    "client_version_header",
    "actor_header",
    "environments",
)
RESOURCE_KEYS = ("name", "label", "description", "actions", "implies", "system")
PRESET_KEYS = ("name", "label", "description", "scopes", "system")
ROUTE_KEYS = ("methods", "path", "scope")


def parse(text: str, path: str = "<catalogue>") -> Catalogue:
    """The catalogue in `text`; raises CatalogueError naming `path`, line and problem."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        match = re.search(r"\(at line (\d+), column \d+\)", message)
        line = int(match.group(1)) if match else None
        problem = re.sub(r"\s*\(at line \d+, column \d+\)", "", message)
        raise CatalogueError(path, line, f"not valid TOML: {problem}.") from None
    reader = _Reader(path, text)
    reader.table(data, (), TOP_LEVEL)
    wire = _read_wire(reader, data.get("wire", {}))
    resources, system_resources = _read_resources(reader, data.get("resources", []))
    presets = _read_presets(reader, data.get("presets", []), resources, system_resources)
    routes = _read_routes(reader, data.get("routes", []), resources)
    return Catalogue(
        path=path,
        wire=wire,
        resources=resources,
        system_resources=system_resources,
        presets=presets,
        routes=routes,
    )


def _read_wire(reader: _Reader, value: Any) -> Wire:
    table = reader.table(value, ("wire",), WIRE_KEYS)
    prefix = None
    if "prefix" in table:
        prefix = reader.string(table["prefix"], ("wire", "prefix"), PREFIX_RE)
    headers: tuple[str, ...] = DEFAULT_KEY_HEADERS
    if "key_headers" in table:
        headers = reader.strings(table["key_headers"], ("wire", "key_headers"), HEADER_RE)
    single = {
        name: reader.string(table[name], ("wire", name), HEADER_RE)
        for name in ("org_header", "client_version_header", "actor_header")
        if name in table
    }
    environments = dict((e, e) for e in KEY_ENVIRONMENTS)
    if "environments" in table:
        given = reader.table(table["environments"], ("wire", "environments"), KEY_ENVIRONMENTS)
        for env, word in given.items():
            environments[env] = reader.string(word, ("wire", "environments", env), WORD_RE)
    words = list(environments.values())
    for env, word in environments.items():
        if words.count(word) > 1:
            raise reader.error(
                ("wire", "environments", env),
                f"the environment word {word!r} is used for two environments; each needs its own.",
            )
    wire = Wire(
        prefix=prefix,
        key_headers=headers,
        environments=tuple(environments.items()),
        **single,
    )
    every_header = [
        *wire.key_headers,
        wire.org_header,
        wire.client_version_header,
        wire.actor_header,
    ]
    for header in every_header:
        if header.lower() in RESERVED_HEADERS:
            raise reader.error(("wire",), f"the header {header!r} cannot be used in [wire].")
    names = [meta_name(h) for h in every_header]
    for header, name in zip(every_header, names, strict=True):
        if names.count(name) > 1:
            raise reader.error(
                ("wire",),
                f"the header {header!r} is given two roles in [wire] (the defaults count: "
                "X-Org-Id, X-Client-Version, X-Actor-Id); give it one.",
            )
    return wire


def _read_resources(
    reader: _Reader, value: Any
) -> tuple[tuple[Resource, ...], tuple[Resource, ...]]:
    declared: list[Resource] = []
    taken = {r.name for r in (*BUILTIN_RESOURCES, *BUILTIN_SYSTEM_RESOURCES)}
    for index, entry in enumerate(reader.array_of_tables(value, "resources")):
        where: tuple[Any, ...] = ("resources", index)
        table = reader.table(entry, where, RESOURCE_KEYS)
        if "name" not in table:
            raise reader.error(where, f"{_dotted(where)} has no 'name'.")
        name = reader.string(table["name"], (*where, "name"), NAME_RE)
        if name in taken:
            builtin = any(r.name == name for r in (*BUILTIN_RESOURCES, *BUILTIN_SYSTEM_RESOURCES))
            problem = (
                f"the resource '{name}' is built in; choose another name."
                if builtin
                else f"the resource '{name}' is declared twice."
            )
            raise reader.error((*where, "name"), problem)
        taken.add(name)
        label = name.replace("_", " ").capitalize()
        if "label" in table:
            label = reader.string(table["label"], (*where, "label"))
        description = ""
        if "description" in table:
            if not isinstance(table["description"], str):
                raise reader.error((*where, "description"), "'description' must be a string.")
            description = table["description"]
        actions: tuple[str, ...] = DEFAULT_ACTIONS
        if "actions" in table:
            actions = reader.strings(table["actions"], (*where, "actions"), ACTION_RE)
        implies: dict[str, tuple[str, ...]] = {}
        if "implies" in table:
            implied = reader.table(table["implies"], (*where, "implies"), actions)
            for action, targets in implied.items():
                listed = reader.strings(targets, (*where, "implies", action), ACTION_RE)
                for target in listed:
                    if target not in actions:
                        raise reader.error(
                            (*where, "implies", action),
                            f"'{name}:{action}' implies '{target}', which is not an action of "
                            f"'{name}' ({', '.join(actions)}).",
                        )
                implies[action] = listed
        elif READ in actions and WRITE in actions:
            implies = {WRITE: (READ,)}
        system = False
        if "system" in table:
            if not isinstance(table["system"], bool):
                raise reader.error((*where, "system"), "'system' must be true or false.")
            system = table["system"]
        declared.append(
            Resource(
                name=name,
                label=label,
                description=description,
                actions=actions,
                implies=tuple(implies.items()),
                system=system,
                builtin=False,
            )
        )
    return (
        (*BUILTIN_RESOURCES, *(r for r in declared if not r.system)),
        (*BUILTIN_SYSTEM_RESOURCES, *(r for r in declared if r.system)),
    )


SCOPE_PATTERN_RE = re.compile(r"(\*|[a-z][a-z0-9_]{0,47}):(\*|[a-z][a-z0-9_]{0,31})")


def _read_presets(
    reader: _Reader,
    value: Any,
    resources: tuple[Resource, ...],
    system_resources: tuple[Resource, ...],
) -> tuple[Preset, ...]:
    presets = list(BUILTIN_PRESETS)
    for index, entry in enumerate(reader.array_of_tables(value, "presets")):
        where: tuple[Any, ...] = ("presets", index)
        table = reader.table(entry, where, PRESET_KEYS)
        if "name" not in table:
            raise reader.error(where, f"{_dotted(where)} has no 'name'.")
        name = reader.string(table["name"], (*where, "name"), NAME_RE)
        if any(p.name == name for p in presets):
            raise reader.error((*where, "name"), f"the preset '{name}' is declared twice.")
        if "scopes" not in table:
            raise reader.error(where, f"the preset '{name}' has no 'scopes'.")
        system = bool(table.get("system", False))
        if "system" in table and not isinstance(table["system"], bool):
            raise reader.error((*where, "system"), "'system' must be true or false.")
        patterns = reader.strings(table["scopes"], (*where, "scopes"))
        pool = system_resources if system else resources
        for pattern in patterns:
            if not SCOPE_PATTERN_RE.fullmatch(pattern):
                raise reader.error(
                    (*where, "scopes"),
                    f"the preset '{name}' has the scope {pattern!r}: write <resource>:<action>, "
                    "where either part may be *.",
                )
            if not expand_pattern(pattern, pool):
                raise reader.error(
                    (*where, "scopes"),
                    f"the preset '{name}' has the scope {pattern!r}, which names no action of "
                    "any resource.",
                )
        label = name.replace("_", " ").capitalize()
        if "label" in table:
            label = reader.string(table["label"], (*where, "label"))
        description = table.get("description", "")
        if not isinstance(description, str):
            raise reader.error((*where, "description"), "'description' must be a string.")
        presets.append(Preset(name, label, description, patterns, system))
    return tuple(presets)


def _read_routes(reader: _Reader, value: Any, resources: tuple[Resource, ...]) -> tuple[Route, ...]:
    routes = []
    by_name = {r.name: r for r in resources}
    for index, entry in enumerate(reader.array_of_tables(value, "routes")):
        where: tuple[Any, ...] = ("routes", index)
        table = reader.table(entry, where, ROUTE_KEYS)
        for required in ("path", "scope"):
            if required not in table:
                raise reader.error(where, f"{_dotted(where)} has no '{required}'.")
        methods: frozenset[str] = frozenset()
        if "methods" in table:
            listed = reader.strings(table["methods"], (*where, "methods"))
            upper = {m.upper() for m in listed}
            unknown = sorted(upper - HTTP_METHODS)
            if unknown:
                raise reader.error(
                    (*where, "methods"),
                    f"unknown HTTP method {unknown[0]!r}; use {', '.join(sorted(HTTP_METHODS))}.",
                )
            methods = frozenset(upper)
        path = reader.string(table["path"], (*where, "path"))
        regex = _route_regex(reader, path, (*where, "path"))
        scope = reader.string(table["scope"], (*where, "scope"))
        name, _, action = scope.partition(":")
        resource = by_name.get(name)
        if resource is None or not resource.has(action):
            raise reader.error(
                (*where, "scope"),
                f"the route {path!r} requires {scope!r}, which is not an organisation scope "
                "of the catalogue.",
            )
        routes.append(Route(methods=methods, path=path, scope=scope, regex=regex))
    return tuple(routes)


def _route_regex(reader: _Reader, path: str, where: tuple[Any, ...]) -> re.Pattern[str]:
    """`/v1/payments/{id}/refund` → one segment per `{name}`; a trailing `/*` = any rest."""
    if not path.startswith("/"):
        raise reader.error(where, f"the route path {path!r} must start with '/'.")
    rest_wildcard = path.endswith("/*")
    body = path[:-2] if rest_wildcard else path
    pattern = ""
    segments = body.split("/")[1:]
    for position, segment in enumerate(segments):
        if segment == "" and position == len(segments) - 1:
            pattern += "/"  # a trailing slash is part of the path
        elif PARAM_RE.fullmatch(segment):
            pattern += "/[^/]+"
        elif segment and PATH_SEGMENT_RE.fullmatch(segment) and "{" not in segment:
            pattern += "/" + re.escape(segment)
        else:
            raise reader.error(
                where,
                f"the route path {path!r} has the segment {segment!r}: use literal text, "
                "{name} for one segment, or end with /* for any rest.",
            )
    if rest_wildcard:
        pattern += "(?:/.*)?"
    return re.compile(pattern or "/")


# --- the process's catalogue -----------------------------------------------------------


def load(path: str | Path | None) -> Catalogue:
    """The catalogue of the file at `path`, or the built-ins alone for None/''."""
    if not path:
        return parse("", "<built-in>")
    location = str(path)
    try:
        text = Path(location).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CatalogueError(location, None, "the file does not exist.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CatalogueError(location, None, f"the file cannot be read: {exc}.") from None
    return parse(text, location)


# (catalogue, error) of the last read, swapped in as one value so that a request in another
# thread never sees half of a reload; None until the first read.
_state: tuple[Catalogue | None, CatalogueError | None] | None = None


def current() -> Catalogue:
    """The process's catalogue (read once); raises CatalogueError for a malformed file."""
    state = _state
    if state is not None and state[1] is None:  # the common case, first (every request)
        return state[0]  # type: ignore[return-value]
    if state is None:
        reload()
        state = _state
    assert state is not None
    catalogue, error = state
    if error is not None:
        raise error
    assert catalogue is not None
    return catalogue


def reload() -> CatalogueError | None:
    """Read `settings.LATCHKEY_CATALOGUE` again; returns the error, if any."""
    global _state
    loaded: Catalogue | None = None
    error: CatalogueError | None = None
    try:
        loaded = load(getattr(settings, "LATCHKEY_CATALOGUE", "") or None)
        configured = str(getattr(settings, "API_KEY_PREFIX", "") or "")
        if configured and not PREFIX_RE.fullmatch(configured):
            raise CatalogueError(
                "API_KEY_PREFIX",
                None,
                f"{configured!r} is not a valid key prefix: {_RULES[PREFIX_RE]}",
            )
    except CatalogueError as exc:
        loaded, error = None, exc
    _state = (loaded, error)
    return error


def ensure_valid() -> None:
    """Stop a process from starting with a malformed catalogue (WSGI, Celery)."""
    error = reload() if _state is None else _state[1]
    if error is not None:
        raise SystemExit(f"Latchkey cannot start: the catalogue is malformed.\n{error}")


@receiver(setting_changed)
def _setting_changed(*, setting: str, **_: Mapping[str, Any]) -> None:
    if setting in ("LATCHKEY_CATALOGUE", "API_KEY_PREFIX"):
        reload()
