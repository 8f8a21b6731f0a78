"""The programs some tests need beyond Python: found, or a skip that says how to get them.

A fresh machine with only Python and make runs `make test` green: a test that needs
`redis-server`, Chromium or nginx is skipped with one line naming the package to install.
With `LATCHKEY_REQUIRE_ALL=1` (set by `.ci/run`) the same absence fails the test instead,
so CI can never pass by skipping. See the README's "What the full run needs".
"""

from __future__ import annotations

import glob
import os
import shutil
from dataclasses import dataclass, field

import pytest

REQUIRE_ALL_VARIABLE = "LATCHKEY_REQUIRE_ALL"


def require_all() -> bool:
    return os.environ.get(REQUIRE_ALL_VARIABLE, "").strip().lower() in {"1", "true", "yes"}


@dataclass(frozen=True)
class Program:
    """An executable a test needs, where to look for it, and how a user gets it."""

    name: str
    debian: str  # the Debian/Ubuntu package
    macos: str  # the Homebrew formula or cask
    candidates: tuple[str, ...] = field(default_factory=tuple)
    env_override: str = ""  # an environment variable naming the executable, if set

    def path(self) -> str | None:
        names = list(self.candidates) or [self.name]
        if self.env_override and os.environ.get(self.env_override):
            names = [os.environ[self.env_override]]
        for name in names:
            found = shutil.which(name)
            if found:
                return found
            if os.path.isabs(name) and os.access(name, os.X_OK):
                return name
        return None

    @property
    def reason(self) -> str:
        where = f" (or set {self.env_override})" if self.env_override else ""
        return (
            f"{self.name} not found: apt-get install {self.debian}"
            f" (macOS: brew install {self.macos}){where}"
        )


REDIS = Program(name="redis-server", debian="redis-server", macos="redis")
CHROMIUM = Program(
    name="chromium",
    debian="chromium",
    macos="--cask chromium",
    candidates=("chromium", "chromium-browser", "/usr/bin/chromium"),
    env_override="CHROMIUM_PATH",
)
NGINX = Program(
    name="nginx",
    debian="nginx-light",
    macos="nginx",
    candidates=("nginx", "/usr/sbin/nginx"),
)
ENVSUBST = Program(name="envsubst", debian="gettext-base", macos="gettext")

# PostgreSQL's server tools (initdb, pg_ctl): Debian keeps them out of PATH.
POSTGRES = Program(
    name="initdb",
    debian="postgresql",
    macos="postgresql",
    candidates=(*sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True), "initdb"),
)
# `ip` for the network namespaces of the two-host test.
IPROUTE = Program(
    name="ip", debian="iproute2", macos="iproute2mac", candidates=("ip", "/usr/sbin/ip")
)
PROGRAMS = (REDIS, CHROMIUM, NGINX, ENVSUBST, POSTGRES, IPROUTE)


def require(program: Program) -> str:
    """The program's path; else skip the test, or fail it under LATCHKEY_REQUIRE_ALL=1."""
    path = program.path()
    if path is not None:
        return path
    if require_all():
        pytest.fail(f"{program.reason} [{REQUIRE_ALL_VARIABLE}=1: nothing may be skipped]")
    pytest.skip(program.reason)
