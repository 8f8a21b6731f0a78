"""What a process holds outside the shared store, and the calls that make it give it up.

Admission leases (`apikeys.leases`, ADR 0065) are tokens and usage this process holds
between pushes. The layers below them must reach them without importing them (the
modules of `apikeys` import in one direction only): an invalidation
(`apikeys.keycache`) ends the leases on what it changed, and a usage fold
(`apikeys.usage`) first pushes what leased requests added. A holder registers itself
when its module is imported; a process that never imported one holds nothing of it.
"""

from __future__ import annotations

from typing import Protocol


class Holder(Protocol):
    def forget(self, *, digest: str | None = None, org_pk: int | None = None) -> None:
        """End what is held on the key with `digest` or the keys of `org_pk`."""

    def push(self) -> None:
        """Send what is held to the shared store (before a fold)."""

    def release_all(self) -> None:
        """End everything held and push it (the process is leaving)."""


_holders: list[Holder] = []


def register(holder: Holder) -> None:
    if holder not in _holders:
        _holders.append(holder)


def forget(*, digest: str | None = None, org_pk: int | None = None) -> None:
    for holder in _holders:
        holder.forget(digest=digest, org_pk=org_pk)


def push() -> None:
    for holder in _holders:
        holder.push()


def release_all() -> None:
    for holder in _holders:
        holder.release_all()
