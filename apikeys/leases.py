"""Admission leases: a busy key's requests admitted without a Redis call each (ADR 0065, 0090).

A guarded request normally makes one Redis round trip (ADR 0064): the key's verification
and the check-and-count of its rate limits, atomically. For a key that is busy on this
host, the verification-and-count script may count a *block* of tokens at once and grant
an admission lease on them to the host: every worker process of the host admits the
key's next requests from the lease, with no Redis call, until its tokens, its second or
its trust run out.

- **Never more than the limit.** The tokens are counted in the shared windows (burst,
  minute, monthly quota) when the lease is granted, so with any number of processes and
  hosts no more than the limit is admitted in a window.
- **Sized to the host's demand, bounded.** A lease asks for what the key's rate on this
  host (its requests in the last second, or so far in this one) predicts for the rest of
  the second, half as much again, at most `LATCHKEY_KEY_LEASE_TOKENS`; the script gives
  at most a quarter of what is left in the burst window, a sixteenth of the minute
  window and a 256th of the monthly quota (`backend.LEASE_DIVISORS`). Tokens
  only idle in one host's lease can hold back another host's requests, never this
  host's own (they are taken first; a worker's batch of a big lease, ADR 0092, holds at
  most 7 back from the host's other workers), so that bound is what several hosts may see
  refused early, for the rest of one second. A lease lives in one burst window (one
  second) and at most `LATCHKEY_KEY_LEASE_MS`; tokens it did not use go back to the
  minute and monthly windows (the monthly quota counts admitted requests only).
- **One table per host.** The leases live in a small file in shared memory (`/dev/shm`,
  one per host, Redis database and key prefix; `LATCHKEY_LEASE_TABLE` names another
  place), a pair of slots per key (ADR 0103), each slot guarded by a robust,
  process-shared mutex in the table (ADR 0102; off tmpfs, by a POSIX record lock);
  either kind is released if its holder dies. Only keys this process has verified touch
  it. A process
  uses a lease only with the key's state it got from its own round trips, and only when
  that state is the one the lease was granted with (the cache entry's fingerprint): a
  change made since (a limit, a scope, the org's state) is never applied late by a
  worker that saw the old one.
- **A worker's batch** (ADR 0092). From a lease with more than `BATCH_LEAVES` tokens
  left, a worker takes up to `BATCH_MAX` at once and admits the key's next requests from
  them without the slot's record lock, under the same checks (its second, the key's
  state, the lease still in the slot and trusted, the epoch); what it leaves unused goes
  back to the lease, or to the windows, once.
- **Asked for ahead** (ADR 0093, 0100). Just before each second begins, the process that
  granted a key's last lease asks for the next second's lease of every such key that was
  busy on the host in the second, in one call, and writes them into the table as that
  second begins: the key's requests find a lease instead of making the second's round
  trip. The same checks as a round trip's lease (the key's
  entry, its state as this process knows it, the epoch); a key that went quiet is
  dropped. A lease is trusted to the end of its second (its markers live `MARKER_MS`).
- **Revocation stays immediate.** While a lease may be held, a marker for the key and its
  org lives in Redis (`MARKER_MS`, a little over 1 s). An invalidation (revoke, rotation,
  delete, suspension, limit change: `keycache.invalidate_*`) that finds a marker running
  moves the lease epoch on and returns only `LATCHKEY_KEY_LEASE_MS` later (ADR 0091). A
  host uses a lease only while its newest reading of the epoch (from any round trip, or
  from the pusher, which renews it while leases are in use) is younger than 90 % of that
  and not newer than the lease's, so once the invalidation has returned no process
  accepts the key under a lease granted before the change.
- **Usage is still counted.** Requests admitted under a lease are counted in the process
  that admitted them (per key and hour: count, status classes, client versions, last
  time and IP; and the key's recent requests) and pushed to Redis every second (the
  unused tokens of ended leases every half second), before a usage fold in this process,
  and at exit (gunicorn's `worker_exit`, `atexit`): a graceful shutdown loses none.

With leases off (`LATCHKEY_KEY_LEASE_MS=0`) or without Redis nothing here runs. The
pipeline reaches this module only through `apikeys.guard.counting.Leasing`, a wrapper of
the one-trip path; the layers below reach it only through `apikeys.held`.
"""

from __future__ import annotations

import atexit
import ctypes
import errno
import fcntl
import hashlib
import hmac
import logging
import math
import mmap
import os
import platform
import secrets
import stat
import struct
import sys
import tempfile
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from redis.exceptions import DataError

from apikeys import backend, held, keycache, ratelimit, redisconn, usage
from orgs.plans import Limits

logger = logging.getLogger("apikeys.guards")

# A lease is trusted for this fraction of the length Redis keeps its marker ...
HOLDER_FRACTION = 0.9
# ... which is long enough for the lease to be trusted to the end of its second, whenever
# in it the lease was asked for (it ends with its second all the same: ADR 0093).
MARKER_MS = math.ceil(keycache.LEASE_LIFE_MS / HOLDER_FRACTION)
PUSH_INTERVAL = 0.5
# ... and the usage of leased requests with it every this long (ADR 0100): the unused
# tokens of ended leases go back every `PUSH_INTERVAL`, and usage, which the fold moves
# into the database every 30 s anyway, waits for every other push.
USAGE_PUSH_INTERVAL = 1.0
# A lease asks for this many times what the host's recent rate predicts.
DEMAND_MARGIN = 1.5
# A rate is not read from less of a second than this.
MIN_ELAPSED = 0.1
# While this process admits under leases, its pusher reads the lease epoch again once the
# host's reading is older than this fraction of the trust in it, so that leases are not
# left unused (and their keys sent on round trips) only because no trip read it lately.
REFRESH_FRACTION = 0.5
# ... and for this long after its last leased request.
REFRESH_WHILE_USED = 1.0

# --- the host's table ----------------------------------------------------------------
#
# Two candidate slots per key, a pair (by its digest, ADR 0103): the one that holds the
# key, else one without a live lease (a key whose two slots both hold other keys' live
# leases gets no lease). Each slot: tag, fingerprint of the cache entry the lease was
# granted with, key id, org id (-1: none), the lease's second, trusted until
# (time.monotonic(), one clock for every process of a host), serial, the minute counter
# after the grant (tokens included), tokens left, which windows are limited (bits: burst,
# minute, month), the key's demand on this host (the second it counts, requests in it,
# requests in the one before), until when a worker is asking Redis for the host's next
# lease (others then do not), the lease epoch it was granted in, and how long (s) the
# granting worker trusts a reading of the epoch (ADR 0091: a worker with a longer setting
# uses the shorter).
_SLOT = struct.Struct("<QQqqqdqqqqqiidqd")
SLOT_SIZE = 128
SLOTS = 16384
assert SLOTS % 2 == 0  # slots come in pairs (ADR 0103)
# After the slots, the host's newest reading of the lease epoch: a sequence number (odd
# while it is being written), the epoch, and when (time.monotonic()) the round trip that
# read it was sent.
_HEADER_AT = SLOT_SIZE * SLOTS
_HEADER, _SEQUENCE = struct.Struct("<qqd"), struct.Struct("<q")
# After the header, the slots' locks where they are mutexes (ADR 0102): which kind of
# lock guards the table (`_RECORDS` or `_MUTEXES`, 0 until its first opener decides), then
# one robust, process-shared pthread mutex per slot and one for the header, each in
# `_MUTEX_STRIDE` bytes (`pthread_mutex_t` is 40 bytes on x86-64 glibc and musl, 48 on
# aarch64 glibc).
_GUARD_AT = SLOT_SIZE * (SLOTS + 1)
_GUARD = struct.Struct("<Q")
_RECORDS, _MUTEXES = 0x7265636F726473, 0x6D7574657865
_MUTEX_STRIDE = 64
_MUTEXES_AT = _GUARD_AT + _MUTEX_STRIDE
TABLE_SIZE = _MUTEXES_AT + _MUTEX_STRIDE * (SLOTS + 1)
_LAYOUT = "leases-v4"
_BURST, _MINUTE, _MONTH = 1, 2, 4
# A request's token is taken by rewriting these fields alone, never the lease's second or
# trust; a new lease is written with no tokens first and gets them last, so a process
# killed mid-write leaves a slot without tokens rather than old tokens in a new second.
_TOKENS_AT, _TOKENS_FIELD = 64, struct.Struct("<q")
_DEMAND_AT, _DEMAND_FIELDS = 80, struct.Struct("<qiid")
# How long other workers leave a lease request to the one asking.
ASKING_SECONDS = 0.05

(
    _TAG,
    _VERSION,
    _KEY,
    _ORG,
    _SECOND,
    _TRUST,
    _SERIAL,
    _MINUTE_USED,
    _TOKENS_UNUSED,
    _FLAGS,
    _DEMAND_SECOND,
    _CUR,
    _PREV,
    _ASKING,
    _EPOCH,
    _DECLARED,
) = range(16)
assert _SLOT.size <= SLOT_SIZE
assert struct.calcsize("<QQqqqdqq") == _TOKENS_AT
assert struct.calcsize("<QQqqqdqqqq") == _DEMAND_AT
# Read without the slot's lock by a process admitting from its batch (`_from_batch`):
# the lease's trust and serial (adjacent), and its declared trust.
_TRUST_SERIAL_AT, _TRUST_SERIAL = 40, struct.Struct("<dq")
_DECLARED_AT = 112
# ... and by the sweep of ended leases, for a hint (`_current_unlocked`): second and trust.
_SECOND_AT, _SECOND_TRUST = 32, struct.Struct("<qd")
# ... and by a key choosing between its two slots (`_slot_for`): the tag.
_TAG_FIELD = struct.Struct("<Q")
_FLOAT = struct.Struct("<d")
assert struct.calcsize("<QQqqq") == _TRUST_SERIAL_AT
assert struct.calcsize("<QQqqqdqqqqqiidq") == _DECLARED_AT
assert struct.calcsize("<QQqq") == _SECOND_AT


def _libc() -> Any:
    """libc through `ctypes.PyDLL`, whose calls keep the GIL (ADR 0099); None where the
    structures `_FLOCK` and `_on_tmpfs` read may have another layout (only 64-bit Linux
    on x86-64 and ARM is known here) or libc cannot be loaded."""
    if (
        sys.platform != "linux"
        or platform.machine() not in ("x86_64", "aarch64")
        or struct.calcsize("P") != 8
    ):
        return None
    try:
        libc = ctypes.PyDLL(None)
        libc.fcntl, libc.fstatfs  # noqa: B018 - both must exist
    except (OSError, AttributeError):
        return None
    return libc


# `struct flock` of 64-bit Linux: l_type, l_whence, l_start, l_len, l_pid, padding.
_FLOCK = struct.Struct("hhqqi4x")
_TMPFS_MAGIC = 0x01021994
_c_libc = _libc()

_PTHREAD_PROCESS_SHARED, _PTHREAD_MUTEX_ROBUST, _PTHREAD_MUTEX_ERRORCHECK = 1, 1, 2


class _Pthread:
    """libc's robust, process-shared mutexes (ADR 0102): `try_lock`, `unlock`, `consistent`
    and `init` keep the GIL (`PyDLL`: none of them waits); `wait` (`pthread_mutex_lock`)
    releases it while it waits (`CDLL`). Every argument is an address in the table's
    mapping."""

    def __init__(self, keeping: Any) -> None:
        waiting = ctypes.CDLL(None)
        self.try_lock = keeping.pthread_mutex_trylock
        self.unlock = keeping.pthread_mutex_unlock
        self.consistent = keeping.pthread_mutex_consistent
        self.init = keeping.pthread_mutex_init
        self.wait = waiting.pthread_mutex_lock
        for call in (self.try_lock, self.unlock, self.consistent, self.wait):
            call.argtypes = [ctypes.c_void_p]
        self.init.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        self.attr_init = keeping.pthread_mutexattr_init
        self.attr_shared = keeping.pthread_mutexattr_setpshared
        self.attr_robust = keeping.pthread_mutexattr_setrobust
        self.attr_type = keeping.pthread_mutexattr_settype
        self.attr_destroy = keeping.pthread_mutexattr_destroy

    def attributes(self) -> Any:
        """A mutex attribute object for robust, process-shared, error-checking mutexes
        (a thread locking a mutex it holds is told so, `EDEADLK`, instead of waiting for
        itself for ever)."""
        attr = ctypes.create_string_buffer(_MUTEX_STRIDE)
        _check(self.attr_init(attr))
        _check(self.attr_shared(attr, _PTHREAD_PROCESS_SHARED))
        _check(self.attr_robust(attr, _PTHREAD_MUTEX_ROBUST))
        _check(self.attr_type(attr, _PTHREAD_MUTEX_ERRORCHECK))
        return attr


def _check(done: int) -> None:
    if done != 0:
        raise OSError(done, os.strerror(done))


def _pthread() -> _Pthread | None:
    if _c_libc is None:
        return None
    try:
        return _Pthread(_c_libc)
    except (OSError, AttributeError):
        return None


_pthreads = _pthread()
# The two calls of every request's slot lock, looked up once.
_try_lock: Any = _pthreads.try_lock if _pthreads is not None else None
_unlock_mutex: Any = _pthreads.unlock if _pthreads is not None else None


def _on_tmpfs(fd: int) -> bool:
    """The file is in memory (tmpfs: `/dev/shm`), where a lock call never waits on a
    device or a network: only there is the GIL kept through it. `struct statfs` of
    64-bit Linux starts with the filesystem's type (a long)."""
    if _c_libc is None:
        return False
    about = ctypes.create_string_buffer(256)
    if _c_libc.fstatfs(fd, about) != 0:
        return False
    return bool(struct.unpack_from("q", about.raw)[0] == _TMPFS_MAGIC)


class _Table:
    """The host's lease table: a file in shared memory, mapped by every process; or, when
    that cannot be used, a private one (anonymous memory, this process alone)."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.fd = -1
        self.keeps_gil = False
        # The address of the first slot's mutex when mutexes guard the slots, else 0.
        self.mutexes = 0
        if path is None:
            self.map = mmap.mmap(-1, TABLE_SIZE)
            return
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            about = os.fstat(fd)
            if (
                not stat.S_ISREG(about.st_mode)
                or about.st_nlink != 1
                or about.st_uid != os.getuid()
                or about.st_mode & 0o077
            ):
                raise PermissionError(f"{path} is not a file of this user's alone")
            # Reserved now: a full /dev/shm must fail here, not as SIGBUS on a first write.
            os.posix_fallocate(fd, 0, TABLE_SIZE)
            fcntl.lockf(fd, fcntl.LOCK_EX, SLOT_SIZE, 0)  # a filesystem without locks fails here
            fcntl.lockf(fd, fcntl.LOCK_UN, SLOT_SIZE, 0)
            self.map = mmap.mmap(fd, TABLE_SIZE)
            # A free slot's lock is taken keeping the GIL where that cannot wait (ADR 0099).
            self.keeps_gil = _on_tmpfs(fd)
            self._guard(fd)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd

    def _guard(self, fd: int) -> None:
        """Which locks guard the slots, decided once for the file by its first opener
        under a record lock on the word that says it (ADR 0102): robust, process-shared
        mutexes where the table is in memory (tmpfs) and libc has them, else record locks.
        Every opener then uses that kind; one that cannot use the mutexes a table was
        made with does not use the table."""
        fcntl.lockf(fd, fcntl.LOCK_EX, _MUTEX_STRIDE, _GUARD_AT)
        try:
            guard = _GUARD.unpack_from(self.map, _GUARD_AT)[0]
            if guard == 0:
                guard = _RECORDS
                if self.keeps_gil and _pthreads is not None:
                    self._init_mutexes(_pthreads)
                    guard = _MUTEXES
                _GUARD.pack_into(self.map, _GUARD_AT, guard)
            if guard == _MUTEXES:
                if _pthreads is None or not self.keeps_gil:
                    raise OSError(f"{self.path}'s slots are guarded by mutexes this process lacks")
                self.mutexes = self._mutexes_address()
            elif guard != _RECORDS:
                raise OSError(f"{self.path} is not a lease table of this layout")
        finally:
            fcntl.lockf(fd, fcntl.LOCK_UN, _MUTEX_STRIDE, _GUARD_AT)

    def _mutexes_address(self) -> int:
        """The address of the first slot's mutex in the mapping, which stays mapped
        (`_kept`; the exported buffer keeps it from being closed)."""
        self._exported = ctypes.c_char.from_buffer(self.map)
        return ctypes.addressof(self._exported) + _MUTEXES_AT

    def _init_mutexes(self, pthreads: _Pthread) -> None:
        """(once for the file, under the guard word's record lock) Every slot's mutex and
        the header's: robust, process-shared and error-checking."""
        attr = pthreads.attributes()
        try:
            first = self._mutexes_address()
            for index in range(SLOTS + 1):
                _check(pthreads.init(first + index * _MUTEX_STRIDE, attr))
        finally:
            pthreads.attr_destroy(attr)

    def lock(self, index: int) -> None:
        """The lock on slot `index` (`SLOTS`: the header): its mutex (ADR 0102), else
        its record lock. Either is first tried without waiting and without releasing
        the GIL (a record lock only on tmpfs, ADR 0099): a call that releases it lets a
        thread waiting for the GIL (the worker's main thread, the pusher) take it, so a
        free lock would cost the request a switch each way. A slot another process
        holds is waited for with the GIL released."""
        if self.mutexes:
            address = self.mutexes + index * _MUTEX_STRIDE
            done = _try_lock(address)
            if done != 0:
                self._wait_mutex(address, index, done)
            return
        if self.fd < 0:
            return
        at = index * SLOT_SIZE
        if self.keeps_gil and self._set_now(fcntl.F_WRLCK, at):
            return
        fcntl.lockf(self.fd, fcntl.LOCK_EX, SLOT_SIZE, at)

    def _wait_mutex(self, address: int, index: int, done: int) -> None:
        """Slot `index`'s mutex at `address`, which a try answered with `done` (ADR
        0102): waited for releasing the GIL if busy.

        - A mutex whose holder died holding it is now this thread's: it is made
          consistent at once (given up without that, it could never be taken again:
          `ENOTRECOVERABLE`), and the slot is used as it was left, as with a record lock
          the kernel released (its writes leave a slot usable at every step).
        - One this thread already holds (a lock left held by an exception between its
          taking and its `try`) is held: as a process's record lock was, given up by
          the next unlock."""
        pthreads: Any = _pthreads
        if done == errno.EBUSY:
            done = pthreads.wait(address)
        if done == errno.EDEADLK:
            return
        if done == errno.EOWNERDEAD:
            _check(pthreads.consistent(address))
            logger.warning(
                "A process died holding lease slot %d; the slot is used as it was left.", index
            )
            return
        _check(done)

    def _set_now(self, kind: int, at: int) -> bool:
        """`F_SETLK` of `kind` on the slot at `at`, through libc keeping the GIL (it never
        waits); False if it was not done (held elsewhere, or any other failure)."""
        flock = _FLOCK.pack(kind, 0, at, SLOT_SIZE, 0)
        return bool(_c_libc.fcntl(self.fd, fcntl.F_SETLK, flock) == 0)

    def unlock(self, index: int) -> None:
        """Give up slot `index`'s lock, from the thread that took it (a mutex's owner)."""
        if self.mutexes:
            done = _unlock_mutex(self.mutexes + index * _MUTEX_STRIDE)
            if done:
                raise OSError(done, os.strerror(done))
            return
        if self.fd < 0:
            return
        at = index * SLOT_SIZE
        if self.keeps_gil and self._set_now(fcntl.F_UNLCK, at):
            return
        fcntl.lockf(self.fd, fcntl.LOCK_UN, SLOT_SIZE, at)  # raises what failed

    def read(self, index: int) -> list[Any]:
        return list(_SLOT.unpack_from(self.map, index * SLOT_SIZE))

    def write(self, index: int, slot: list[Any]) -> None:
        """Write a whole slot: its tokens, then its trust go in last, so that a reader
        without the lock (`_from_batch`) that sees a trust sees the serial it goes with.
        (The sweep's hint, `_current_unlocked`, reads without the lock too; it decides
        nothing, so it needs no order.)"""
        at = index * SLOT_SIZE
        _TOKENS_FIELD.pack_into(self.map, at + _TOKENS_AT, 0)
        _FLOAT.pack_into(self.map, at + _TRUST_SERIAL_AT, 0.0)
        fields = list(slot)
        fields[_TOKENS_UNUSED], fields[_TRUST] = 0, 0.0
        _SLOT.pack_into(self.map, at, *fields)
        _TOKENS_FIELD.pack_into(self.map, at + _TOKENS_AT, slot[_TOKENS_UNUSED])
        _FLOAT.pack_into(self.map, at + _TRUST_SERIAL_AT, slot[_TRUST])

    def write_tokens(self, index: int, slot: list[Any]) -> None:
        _TOKENS_FIELD.pack_into(self.map, index * SLOT_SIZE + _TOKENS_AT, slot[_TOKENS_UNUSED])

    def write_demand(self, index: int, slot: list[Any]) -> None:
        _DEMAND_FIELDS.pack_into(
            self.map,
            index * SLOT_SIZE + _DEMAND_AT,
            slot[_DEMAND_SECOND],
            slot[_CUR],
            slot[_PREV],
            slot[_ASKING],
        )

    def epoch_reading(self) -> tuple[int, float]:
        """The host's newest reading of the lease epoch and when it was asked for; a
        reading being written at that moment is read again (a sequence lock), and one
        that keeps changing counts as none."""
        for _ in range(100):
            sequence, epoch, asked_at = _HEADER.unpack_from(self.map, _HEADER_AT)
            if sequence % 2 == 0 and _SEQUENCE.unpack_from(self.map, _HEADER_AT)[0] == sequence:
                return epoch, asked_at
        return 0, 0.0

    def observe(self, epoch: int, asked_at: float) -> None:
        """(under `_lock`) Keep the newer of this reading and the host's. The sequence is
        made odd while the fields change and even after, whatever it was left at (a
        writer killed midway leaves it odd: the next write mends it)."""
        self.lock(SLOTS)
        try:
            sequence, held_epoch, held_at = _HEADER.unpack_from(self.map, _HEADER_AT)
            if epoch <= held_epoch and asked_at <= held_at:
                return
            writing = sequence | 1
            _SEQUENCE.pack_into(self.map, _HEADER_AT, writing)
            try:
                _HEADER.pack_into(
                    self.map, _HEADER_AT, writing, max(epoch, held_epoch), max(asked_at, held_at)
                )
            finally:
                _SEQUENCE.pack_into(self.map, _HEADER_AT, writing + 1)
        finally:
            self.unlock(SLOTS)

    def clear(self) -> None:
        """Empty every slot and the header; the locks and the word saying which they are
        stay as they are."""
        self.map[:_GUARD_AT] = bytes(_GUARD_AT)


def table_path() -> str:
    """Where this host's lease table lives: `LATCHKEY_LEASE_TABLE` with the layout's name
    appended (`.leases-v4`), else a file in `/dev/shm` whose name is keyed by
    `SECRET_KEY` and made of the user, the Redis database and the key prefix (processes
    that share those share leases; the name says nothing about `REDIS_URL` to whoever
    lists the folder)."""
    configured = str(getattr(settings, "LATCHKEY_LEASE_TABLE", "") or "")
    if configured:
        # A release of another layout (another size, another kind of lock) never opens
        # the same file, even during a rolling deploy or a rollback (ADR 0102).
        return f"{configured}.{_LAYOUT}"
    about = f"{_LAYOUT}|{os.getuid()}|{getattr(settings, 'REDIS_URL', '')}|{redisconn.prefix()}"
    name = hmac.new(settings.SECRET_KEY.encode(), about.encode(), hashlib.sha256).hexdigest()
    # The file is opened without following links and used only if it is this user's
    # alone (`_Table`): a table another user could write would let them forge leases.
    shm = "/dev/shm"  # noqa: S108
    folder = shm if os.access(shm, os.W_OK) else tempfile.gettempdir()
    return os.path.join(folder, "latchkey-" + name[:32])


class _Opened:
    table: _Table | None = None
    generation = -1


_opened = _Opened()
_open_lock = threading.Lock()
# Every table this process mapped stays mapped: closing one of its descriptors would drop
# every record lock this process holds on the file (POSIX), including another thread's.
_kept: list[_Table] = []


def _settings_changed(*, setting: str, **kwargs: Any) -> None:
    if setting == "LATCHKEY_LEASE_TABLE":
        _opened.generation = -1


setting_changed.connect(_settings_changed, dispatch_uid="apikeys.leases")


def _table() -> _Table:
    table = _opened.table
    if table is not None and _opened.generation == redisconn.settings_generation():
        return table
    with _open_lock:
        path = table_path()
        table = _opened.table
        if table is None or table.path != path:
            try:
                table = _Table(path)
            except OSError as exc:
                logger.error(
                    "The host's lease table %s cannot be used (%s); this process keeps its "
                    "leases to itself.",
                    path,
                    exc,
                )
                table = _Table(None)
                table.path = path
            _kept.append(table)
            _opened.table = table
        _opened.generation = redisconn.settings_generation()
        return table


def _slot_of(digest: str) -> tuple[int, int]:
    """The key's tag and its first slot; its second is the other of the pair
    (`index ^ 1`)."""
    tag = int(digest[:16], 16) or 1
    return tag, tag % SLOTS


def _slot_for(table: _Table, digest: str, second: int, clock: float) -> tuple[int, int]:
    """The key's tag and the slot it uses (ADR 0103): of its two slots, the one that
    holds it (the first if both do), else the first unless only the second is free of a
    live lease. Read without the locks: a hint, which the caller checks again under the
    slot's lock (a slot of another key is taken over only when its lease is not live
    there, as with one slot a key)."""
    tag, first = _slot_of(digest)
    held = _TAG_FIELD.unpack_from(table.map, first * SLOT_SIZE)[0]
    if held == tag:
        return tag, first
    second_slot = first ^ 1
    if _TAG_FIELD.unpack_from(table.map, second_slot * SLOT_SIZE)[0] == tag or (
        held
        and _live_unlocked(table, first, second, clock)
        and not _live_unlocked(table, second_slot, second, clock)
    ):
        return tag, second_slot
    return tag, first


def _current(slot: list[Any], second: int, clock: float) -> bool:
    """The slot's lease is in its second and trusted."""
    return slot[_SECOND] == second and clock < slot[_TRUST]


def _current_unlocked(table: _Table, index: int, second: int, clock: float) -> bool:
    """`_current` of slot `index`, read without its lock (a hint, never a decision to
    admit): the lease's second and trust, which are adjacent."""
    held, trust = _SECOND_TRUST.unpack_from(table.map, index * SLOT_SIZE + _SECOND_AT)
    return bool(held == second and clock < trust)


def _live_unlocked(table: _Table, index: int, second: int, clock: float) -> bool:
    """`_live` of slot `index`, read without its lock (a hint, as `_current_unlocked`)."""
    at = index * SLOT_SIZE
    return _TOKENS_FIELD.unpack_from(table.map, at + _TOKENS_AT)[0] > 0 and _current_unlocked(
        table, index, second, clock
    )


def _live(slot: list[Any], second: int, clock: float) -> bool:
    """The slot's lease is current and has tokens left."""
    return slot[_TOKENS_UNUSED] > 0 and _current(slot, second, clock)


def _wanted(previous: int, current: int, elapsed: float) -> int:
    """Tokens a lease should ask for (this request included; below 2: none): what the
    key's demand on this host predicts for the rest of the second, `DEMAND_MARGIN` times.
    The prediction is last second's count (less what already came), or, when this second
    already runs faster, this second's rate so far (from two requests on)."""
    more = float(previous - current)
    if current >= 2:
        more = max(more, current / max(elapsed, MIN_ELAPSED) * (1.0 - elapsed))
    if more < 1:
        return 0
    return 1 + math.ceil(DEMAND_MARGIN * more)


# --- this process ----------------------------------------------------------------------


@dataclass(slots=True)
class Lease:
    """The host's lease a request was admitted under, as this process knows it."""

    digest: str
    resolved: keycache.Resolved
    limits: Limits
    key_pk: int
    org_pk: int | None
    second: int
    index: int
    serial: int
    flags: int


@dataclass
class _Pending:
    """What requests admitted under leases added, not yet pushed to Redis."""

    usage: dict[tuple[int, int | None, int], usage.UsageDelta] = field(default_factory=dict)
    # Per key, its newest requests (status, time, meta), encoded only when pushed: the
    # list in Redis keeps the newest `usage.RECENT_MAX` anyway.
    recent: dict[int, deque[tuple[int, float, ratelimit.UsageMeta]]] = field(default_factory=dict)
    # (key, org, second, burst?, minute?, month?) -> tokens to give back.
    returns: dict[tuple[int, int | None, int, bool, bool, bool], int] = field(default_factory=dict)

    def empty(self) -> bool:
        return not (self.usage or self.recent or self.returns)


_lock = threading.Lock()
_pending = _Pending()
# digest -> (cache entry, resolved, fingerprint): the key's state from this process's
# own newest round trip; a lease is used only when granted with the same state.
_known: dict[str, tuple[bytes, keycache.Resolved, int]] = {}
_KNOWN_MAX = 65536
# Slots whose leases this process granted: it gives back what they leave unused.
_granted: set[int] = set()

# A process takes a big lease's tokens from the host's slot a few at a time (a batch)
# and admits the key's next requests from its batch under `_lock` alone: no record lock,
# no write to the table (ADR 0092). At most `BATCH_MAX` at a time, including the
# request's own token, ...
BATCH_MAX = 8
# ... and only from a lease that keeps at least this many after it (a lease this small is
# a burst-limited key's or a quiet one's: tokens idle in one worker's batch would send
# the host's other workers to Redis, where a full window refuses them).
BATCH_LEAVES = 2 * BATCH_MAX
_BATCHES_MAX = 4096


@dataclass(slots=True)
class _Batch:
    """Tokens of the host's lease on a key that this process took in one go."""

    lease: Lease
    tokens: int
    # The slot's lease when they were taken: its epoch and the key's state it was granted
    # with (fingerprint). Its trust and declared trust are read from the slot each time.
    epoch: int
    version: int
    # The minute window's count less the host's unused tokens when taken (its own
    # included): a request reports it less the batch's tokens left.
    minute_used: int


# digest -> this process's batch of the host's lease on that key.
_batches: dict[str, _Batch] = {}

# A key that keeps busy on the host has its next second's lease asked for as that second
# begins, by the process that granted the last one, for all such keys in one call (ADR
# 0093): its requests then find a lease instead of making the second's round trip.
# Only a key with at least this many requests on the host in the second before, ...
AHEAD_MIN_DEMAND = 2
# ... at most this many keys a process, ...
AHEAD_MAX = 4096
# ... in calls of at most this many keys. The pusher asks this long before the second
# begins and writes the leases into the host's table as it begins (ADR 0100): the
# second's first requests find them there, instead of making round trips that wait in
# Redis behind the calls asking for them.
AHEAD_CHUNK = 256
AHEAD_LEAD = 0.03
# A pusher that wakes later than this into a second leaves that second to round trips.
AHEAD_WINDOW = 0.1
# A lease is trusted for `LEASE_LIFE_MS` from its ask: to the end of its second even when
# asked for ahead.
assert (1 + AHEAD_LEAD) * 1000 <= keycache.LEASE_LIFE_MS


@dataclass(frozen=True, slots=True)
class _AheadLease:
    """The lease settings of this process's newest grant (the settings in force), which
    its leases asked for ahead use too; replaced whole, never changed."""

    most: int = 0  # tokens a lease may ask for
    length_ms: int = 0
    trust_ms: int = 0  # the trust in a reading of the epoch told to Redis
    epoch_trust: float = 0.0  # ... and held in the slot (s)


_ahead_lease = _AheadLease()
# slot -> the digest of the key whose next lease this process asks for ahead.
_ahead: dict[int, str] = {}


def _fingerprint(entry: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(entry, digest_size=8).digest(), "little") or 1


def knows(digest: str) -> bool:
    """Whether this process has resolved the key with `digest` in a round trip (`know`)."""
    return digest in _known


def know(digest: str, resolved: keycache.Resolved) -> None:
    """Remember the key's state from a round trip this process made."""
    entry = resolved.entry
    if not entry:
        return
    found = _known.get(digest)
    if found is not None and found[0] == entry:
        if found[1] is not resolved:
            _known[digest] = (entry, resolved, found[2])
        return
    if len(_known) >= _KNOWN_MAX:
        _known.clear()
    _known[digest] = (entry, resolved, _fingerprint(entry))


def _fresh(tag: int, second: int) -> list[Any]:
    """A slot taken over for the key with `tag`: no lease, its demand starting now."""
    return [tag, 0, 0, -1, 0, 0.0, 0, 0, 0, 0, second, 1, 0, 0.0, 0, 0.0]


def take(
    digest: str, now: float, tokens: int, trust: float
) -> tuple[tuple[Lease, int] | None, int]:
    """A token of the host's lease on `digest`, with the minute window's count to
    report; else None and how many tokens a lease should ask for (`tokens` at most; 0 or
    1: none). Counts the request in the key's demand on this host either way. A key this
    process has not verified yet (unknown, or any string a client sends) touches nothing.
    A lease is used only while the host's newest reading of the lease epoch is at most
    `trust` seconds old and not newer than the lease's (ADR 0091)."""
    known = _known.get(digest)
    if known is None:
        return None, 0
    second = int(now)
    table = _table()
    with _lock:
        batch = _batches.get(digest)
        if batch is not None:
            taken = _from_batch(table, batch, known[2], second, trust)
            if taken is not None:
                return taken, 0
            del _batches[digest]
        tag, index = _slot_for(table, digest, second, time.monotonic())
        if batch is not None and batch.lease.index != index:
            _settle_where_taken(table, tag, batch)  # the key has moved to its other slot
            batch = None
        table.lock(index)
        try:
            slot = table.read(index)
            clock = time.monotonic()
            if batch is not None:
                _settle(table, index, slot, tag, batch, clock)
            if slot[_TAG] != tag:
                if _live(slot, second, clock):
                    return None, 0  # another key's lease holds the slot
                _retire(slot)
                table.write(index, _fresh(tag, second))
                return None, 0
            if slot[_DEMAND_SECOND] != second:
                slot[_PREV] = slot[_CUR] if slot[_DEMAND_SECOND] == second - 1 else 0
                slot[_CUR] = 0
                slot[_DEMAND_SECOND] = second
            slot[_CUR] += 1
            live = _live(slot, second, clock)
            if live:
                _watch.used, _watch.trust = clock, trust
            state = _epoch_state(table, slot, clock, trust) if live else 0
            if state < 0:  # granted before an invalidation somewhere: it has ended
                _retire(slot)
                slot[_TRUST] = 0.0
                table.write(index, slot)
                live = False
            if live and state > 0 and slot[_VERSION] == known[2]:
                # This request's token and, from a lease with some left, a batch of the
                # next ones for this process.
                take_now = 1
                if slot[_TOKENS_UNUSED] > BATCH_LEAVES and len(_batches) < _BATCHES_MAX:
                    take_now = min(BATCH_MAX, slot[_TOKENS_UNUSED] - BATCH_LEAVES)
                slot[_TOKENS_UNUSED] -= take_now
                # The batch's requests count in the key's demand on the host from now on;
                # what it leaves unused is taken back off when it is settled.
                slot[_CUR] += take_now - 1
                table.write_tokens(index, slot)
                table.write_demand(index, slot)
                resolved = known[1]
                org = resolved.org
                lease = Lease(
                    digest=digest,
                    resolved=resolved,
                    limits=org.limits if org is not None else ratelimit.UNLIMITED,
                    key_pk=slot[_KEY],
                    org_pk=None if slot[_ORG] < 0 else slot[_ORG],
                    second=second,
                    index=index,
                    serial=slot[_SERIAL],
                    flags=slot[_FLAGS],
                )
                minute_used = slot[_MINUTE_USED] - slot[_TOKENS_UNUSED]
                if take_now > 1:
                    _batches[digest] = _Batch(
                        lease=lease,
                        tokens=take_now - 1,
                        epoch=slot[_EPOCH],
                        version=slot[_VERSION],
                        minute_used=minute_used,
                    )
                return (lease, minute_used - (take_now - 1)), 0
            wanted = 0
            if not live:  # (a live lease this process cannot use now: no second one)
                wanted = min(tokens, _wanted(slot[_PREV], slot[_CUR], now - second))
                if wanted > 1:
                    if clock < slot[_ASKING]:
                        wanted = 0  # another worker is asking for the host's lease
                    else:
                        slot[_ASKING] = clock + ASKING_SECONDS
            table.write_demand(index, slot)
            return None, wanted
        finally:
            table.unlock(index)


def _from_batch(
    table: _Table, batch: _Batch, version: int, second: int, trust: float
) -> tuple[Lease, int] | None:
    """(under `_lock`) A token of this process's batch, with the minute window's count to
    report; None when the batch cannot admit (spent, another second, no longer trusted,
    granted with another state of the key than this process knows, ended on this host,
    or the host's reading of the lease epoch too old or newer than the lease's: the
    checks `take` makes on the slot)."""
    lease = batch.lease
    if batch.tokens <= 0 or lease.second != second or batch.version != version:
        return None
    clock = time.monotonic()
    at = lease.index * SLOT_SIZE
    # The slot still holds this lease (its serial), trusted (its trust only grows while it
    # does, and `forget` ends it for the whole host), with the trust its granting workers
    # declared (only ever lowered while it does).
    slot_trust, serial = _TRUST_SERIAL.unpack_from(table.map, at + _TRUST_SERIAL_AT)
    if serial != lease.serial or not clock < slot_trust:
        return None
    declared = _FLOAT.unpack_from(table.map, at + _DECLARED_AT)[0]
    if _lease_epoch_state(table, batch.epoch, declared, clock, trust) <= 0:
        return None
    batch.tokens -= 1
    _watch.used, _watch.trust = clock, trust  # as `take` records it
    return lease, batch.minute_used - batch.tokens


def _settle(
    table: _Table,
    index: int,
    slot: list[Any],
    tag: int,
    batch: _Batch,
    clock: float,
    *,
    leaving: bool = False,
) -> None:
    """(under `_lock` and the slot's lock) A batch this process no longer admits from:
    its unused tokens leave the key's demand on the host (counted when it was taken) and
    go back to the lease while that is current (this process then tracks the slot, as
    `give_back` does), else to their windows. A process leaving (`leaving`) gives them to
    their windows at once: the lease's granter may be leaving too."""
    lease = batch.lease
    unused, batch.tokens = batch.tokens, 0
    if unused <= 0:
        return
    mine = slot[_TAG] == tag
    if mine:
        if slot[_DEMAND_SECOND] == lease.second:
            slot[_CUR] = max(0, slot[_CUR] - unused)
        elif slot[_DEMAND_SECOND] == lease.second + 1:
            slot[_PREV] = max(0, slot[_PREV] - unused)
        table.write_demand(index, slot)
    if (
        not leaving
        and mine
        and slot[_SERIAL] == lease.serial
        and _current(slot, lease.second, clock)
    ):
        slot[_TOKENS_UNUSED] += unused
        table.write_tokens(index, slot)
        _granted.add(index)  # this process sees them given back when the lease ends
    else:
        _add_return(lease.key_pk, lease.org_pk, lease.second, lease.flags, unused)


def _drop_batches(matches: Any, *, leaving: bool = False) -> None:
    """(under `_lock`) Give up the batches `matches(batch)` picks (`_settle`)."""
    table = _table()
    for digest, batch in list(_batches.items()):
        if matches(batch):
            del _batches[digest]
            _settle_where_taken(table, _slot_of(digest)[0], batch, leaving=leaving)


def _settle_where_taken(table: _Table, tag: int, batch: _Batch, *, leaving: bool = False) -> None:
    """(under `_lock`) `_settle` the batch in the slot its tokens came from."""
    index = batch.lease.index
    table.lock(index)
    try:
        _settle(table, index, table.read(index), tag, batch, time.monotonic(), leaving=leaving)
    finally:
        table.unlock(index)


# A reading no more than this much newer than the host's is not written (the host's
# stays trusted for a little less long: never less safe).
OBSERVE_STEP = 0.01


def _epoch_state(table: _Table, slot: list[Any], clock: float, trust: float) -> int:
    """1: the host read the lease epoch less than `trust` seconds ago (at most the trust
    the lease's granting workers declared; counted from when it asked) and the slot's
    lease is of that epoch or a later one; 0: the reading is too old (a round trip reads
    it again); -1: the lease is of an older epoch (it has ended: the epoch never goes
    back)."""
    return _lease_epoch_state(table, slot[_EPOCH], slot[_DECLARED], clock, trust)


def _lease_epoch_state(
    table: _Table, lease_epoch: int, declared: float, clock: float, trust: float
) -> int:
    """`_epoch_state` of a lease of `lease_epoch` whose slot declares `declared`."""
    epoch, asked_at = table.epoch_reading()
    if declared > 0:
        trust = min(trust, declared)
    if not clock < asked_at + trust:
        return 0
    return 1 if lease_epoch >= epoch else -1


class _Watch:
    """When this process last found a current lease to admit under (`time.monotonic()`),
    the trust it placed in the host's reading of the epoch then (s), and until when a
    failed reading is not tried again."""

    used = 0.0
    trust = 0.0
    failed_until = 0.0


_watch = _Watch()
# A reading trusted for less than this is not renewed by the pusher (its ticks would be
# too close together); round trips keep reading it.
REFRESH_MIN_TRUST = 0.02
# After a failed reading (Redis unreachable, refused) the pusher waits this long.
REFRESH_BACKOFF = 1.0

# The epoch read as the count script reads it (`backend.EPOCH_LUA_FUNCTION`), and always
# written back, so it is refused by a node that takes no writes (a replica, a primary
# demoted by a failover, a primary short of replicas): the reading comes from the node the
# count scripts and invalidations write to, never from a stale one. KEYS[1]: the epoch.
# ARGV[1]: the newest epoch the host has read.
_READ_EPOCH = redisconn.FastScript(
    backend.EPOCH_LUA_FUNCTION + "return lk_epoch(KEYS[1], ARGV[1], true)\n"
)


def refresh_epoch() -> bool:
    """Read the lease epoch again when this process admits under leases and the host's
    reading is older than `REFRESH_FRACTION` of the trust in it (the pusher's thread;
    any worker of the host may, the first one does). A reading like a round trip's: by
    a script on this thread's own connection that writes (so only the primary answers
    it), counted from when it was asked, kept only if not older than the host's. True
    when the host's reading was renewed."""
    clock = time.monotonic()
    trust = _watch.trust
    if trust < REFRESH_MIN_TRUST or clock - _watch.used > REFRESH_WHILE_USED:
        return False
    if clock < _watch.failed_until:
        return False
    table = _table()
    held_epoch, held_at = table.epoch_reading()
    if clock < held_at + trust * REFRESH_FRACTION:
        return False
    conn = redisconn.client()
    if conn is None:
        return False
    asked_at = time.monotonic()
    try:
        epoch = int(
            redisconn.run_script(conn, _READ_EPOCH, [keycache.lease_epoch_names()[0]], [held_epoch])
        )
    except Exception as exc:  # the next round trip reads it; this thread waits a while
        _watch.failed_until = time.monotonic() + REFRESH_BACKOFF
        redisconn.error_log.error("lease-epoch", "Redis unreachable: lease epoch not read", exc)
        return False
    if epoch <= 0 or epoch < held_epoch:
        return False
    observe(epoch, asked_at)
    return True


def tick(clock: float) -> float:
    """How long the pusher sleeps between looks: a quarter of the trust while this
    process admits under leases (the reading is renewed once half as old as trusted),
    else `PUSH_INTERVAL`."""
    trust = _watch.trust
    if trust >= REFRESH_MIN_TRUST and clock - _watch.used < REFRESH_WHILE_USED:
        return min(PUSH_INTERVAL, trust * REFRESH_FRACTION / 2)
    return PUSH_INTERVAL


def epoch_seen() -> int:
    """The newest lease epoch this host has read (0: none)."""
    return _table().epoch_reading()[0]


def observe(epoch: int, asked_at: float) -> None:
    """A round trip sent at `asked_at` (`time.monotonic()`) read the lease `epoch`: the
    host's reading is the newer of it and the one held."""
    table = _table()
    held_epoch, held_at = table.epoch_reading()
    if epoch <= held_epoch and asked_at <= held_at + OBSERVE_STEP:
        return
    with _lock:
        table.observe(epoch, asked_at)


def grant(
    *,
    digest: str,
    resolved: keycache.Resolved,
    limits: Limits,
    now: float,
    asked_at: float,
    length_ms: int,
    tokens: int,
    minute_used: int,
    epoch: int | None,
    epoch_trust: float,
    ahead: tuple[int, int] | None = None,
) -> bool:
    """Hold for the host the `tokens` the script counted beyond the request that asked
    (`asked_at`: `time.monotonic()` before the call). A lease of the same key, state and
    second already held (another worker asked at the same time) gets them added.
    `ahead` (the most tokens a lease may ask for, and the trust in ms the script was
    told): this process asks for the key's next lease ahead of its requests
    (`lease_ahead`) while the key stays busy on the host."""
    global _ahead_lease
    org = resolved.org
    org_pk = org.pk if org is not None else None
    key_pk = resolved.key.pk
    flags = _flags(limits, org)
    second = int(now)
    table = _table()
    tag, index = _slot_for(table, digest, second, time.monotonic())
    known = _known.get(digest)
    fingerprint = known[2] if known is not None and known[0] == resolved.entry else 0
    trust = asked_at + length_ms / 1000 * HOLDER_FRACTION
    with _lock:
        table.lock(index)
        try:
            slot = table.read(index)
            clock = time.monotonic()
            if (
                not fingerprint
                or epoch is None
                or epoch < table.epoch_reading()[0]
                or (slot[_TAG] != tag and _live(slot, second, clock))
                or (slot[_TAG] == tag and _current(slot, second, clock) and slot[_EPOCH] > epoch)
                or (slot[_TAG] == tag and slot[_SECOND] > second)
            ):
                # Not the state this process knows, an epoch already ended (a reply that
                # came late), or the slot is another key's or holds a newer lease (of a
                # newer epoch or a later second): hold nothing.
                _add_return(key_pk, org_pk, second, flags, tokens)
                return False
            if (
                slot[_TAG] == tag
                and slot[_VERSION] == fingerprint
                and slot[_KEY] == key_pk
                and slot[_FLAGS] == flags
                and slot[_EPOCH] == epoch
                and _current(slot, second, clock)
            ):
                slot[_TOKENS_UNUSED] += tokens
                slot[_MINUTE_USED] = max(slot[_MINUTE_USED], minute_used)
                slot[_TRUST] = max(slot[_TRUST], trust)
                slot[_DECLARED] = min(slot[_DECLARED], epoch_trust)
            else:
                _retire(slot)
                if slot[_TAG] != tag:
                    slot = _fresh(tag, second)
                slot[_VERSION] = fingerprint
                slot[_KEY] = key_pk
                slot[_ORG] = -1 if org_pk is None else org_pk
                slot[_SECOND] = second
                slot[_TRUST] = trust
                slot[_SERIAL] = secrets.randbits(62)
                slot[_MINUTE_USED] = minute_used
                slot[_TOKENS_UNUSED] = tokens
                slot[_FLAGS] = flags
                slot[_EPOCH] = epoch
                slot[_DECLARED] = epoch_trust
            slot[_ASKING] = 0.0
            table.write(index, slot)
            _granted.add(index)
            if ahead is not None and len(_ahead) < AHEAD_MAX:
                if _ahead.get(index ^ 1) == digest:
                    del _ahead[index ^ 1]  # the key has moved within its pair: asked for once
                _ahead[index] = digest
                chosen = _AheadLease(ahead[0], length_ms, ahead[1], epoch_trust)
                if chosen != _ahead_lease:
                    _ahead_lease = chosen
        finally:
            table.unlock(index)
    _pusher.ensure_started()
    return True


def lease_ahead() -> int:
    """Ask for the host's leases of the second about to begin (`AHEAD_LEAD` from now),
    or of the one that began, on the keys whose last lease this process granted and that
    were busy on the host in the second before it (at least `AHEAD_MIN_DEMAND` requests),
    in one call per `AHEAD_CHUNK` keys (ADR 0093, 0100). Each is sized by that demand,
    counted in that second's windows, and checked as a round trip's lease is: granted only
    with the key's state this process knows, in an epoch not older than the host's
    reading. The leases are written into the table once their second has begun (this
    waits for it). A key that already has the second's lease, or whose lease another
    worker is asking for, is kept for the next second; a quiet one is forgotten. The
    pusher's thread calls it as each second is about to begin. Answers the leases
    granted."""
    if not _ahead:
        return 0
    wall = ratelimit.clock()
    second = ahead_target(wall)
    # When the leases begin: their second's start, or now if it has begun.
    now = max(wall, float(second))
    table = _table()
    asks: list[tuple[str, tuple[bytes, keycache.Resolved, int], int]] = []
    with _lock:
        most = _ahead_lease.most
        for index, digest in list(_ahead.items()):
            known = _known.get(digest)
            tag = _slot_of(digest)[0]
            table.lock(index)
            try:
                slot = table.read(index)
                clock = time.monotonic()
                if known is None or slot[_TAG] != tag or slot[_VERSION] != known[2]:
                    del _ahead[index]  # another key's slot, or a state this process lost
                    continue
                if _current(slot, second, clock) or clock < slot[_ASKING]:
                    continue  # the second's lease is there, or being asked for
                if slot[_DEMAND_SECOND] == second - 1:
                    previous, current = slot[_CUR], 0
                elif slot[_DEMAND_SECOND] == second:
                    previous, current = slot[_PREV], slot[_CUR]
                else:
                    previous, current = 0, 0
                wanted = min(most, _wanted(previous, current, now - second))
                if previous < AHEAD_MIN_DEMAND or wanted < 2:
                    del _ahead[index]  # quiet: a round trip's lease brings it back
                    continue
                del _ahead[index]  # back with the lease granted
                # Others leave it to this ask until a little after its second begins.
                slot[_ASKING] = clock + (now - wall) + ASKING_SECONDS
                table.write_demand(index, slot)
            finally:
                table.unlock(index)
            asks.append((digest, known, wanted))
    answered: list[_Answered] = []
    try:
        for start in range(0, len(asks), AHEAD_CHUNK):
            answered.append(_ask_ahead(asks[start : start + AHEAD_CHUNK], now))
    finally:
        # Whatever was answered is held (or given back) even if a later call failed.
        if answered:
            _wait_for(now)
        granted = _hold_all(answered, now)
    return granted


def _hold_all(answered: list[_Answered], now: float) -> int:
    """`_hold_ahead` each answer in turn, every one of them even if one raises (the
    first error is raised after the rest): the leases granted."""
    granted, failed = 0, None
    for answer in answered:
        try:
            granted += _hold_ahead(answer, now)
        except Exception as exc:
            failed = failed or exc
    if failed is not None:
        raise failed
    return granted


def ahead_target(wall: float) -> int:
    """The second the pusher, awake at `wall` (epoch seconds), asks ahead for: the next
    one from `AHEAD_LEAD` before it begins, else the current one."""
    return int(wall + AHEAD_LEAD)


def ahead_wait(wall: float) -> float:
    """How long (s) from `wall` until the pusher asks ahead: `AHEAD_LEAD` before the
    next second it has not asked for begins."""
    return math.floor(wall + AHEAD_LEAD) + 1 - AHEAD_LEAD - wall


def ahead_due(wall: float, last: int) -> bool:
    """Whether the pusher, awake at `wall`, asks ahead (`lease_ahead`) now: there are keys
    to ask for, it has not asked for the second `ahead_target` names (`last`: the one it
    asked for last), and that second begins within `AHEAD_LEAD` or is less than
    `AHEAD_WINDOW` old (later, the second is left to round trips)."""
    return (
        bool(_ahead)
        and ahead_target(wall) != last
        and (wall + AHEAD_LEAD) % 1 < AHEAD_LEAD + AHEAD_WINDOW
    )


def _wait_for(start: float) -> None:
    """Sleep until `start` (epoch seconds, as `ratelimit.clock()` reads them), for at
    most `AHEAD_LEAD` and a little: leases asked for ahead are written into the table as
    their second begins, not before (the current second's leases serve until then)."""
    deadline = time.monotonic() + AHEAD_LEAD + 0.01
    while True:
        left = min(start - ratelimit.clock(), deadline - time.monotonic())
        if left <= 0:
            return
        time.sleep(left)


@dataclass(slots=True)
class _Answered:
    """One call of `lease_ahead`, answered: the keys asked for, the epoch read, each
    key's reply, and when the call was sent (`time.monotonic()`)."""

    asks: list[tuple[str, tuple[bytes, keycache.Resolved, int], int]]
    epoch: int
    replies: list[Any]
    asked_at: float
    chosen: _AheadLease


def _ask_ahead(
    asks: list[tuple[str, tuple[bytes, keycache.Resolved, int], int]], now: float
) -> _Answered:
    """One call of `lease_ahead`, for leases that begin at `now`."""
    chosen = _ahead_lease
    asked: list[backend.AheadAsk] = []
    prefix = ""
    for digest, known, wanted in asks:
        resolved = known[1]
        org_pk = resolved.org.pk if resolved.org is not None else None
        entry, prefix, key_marker = keycache.lease_names(digest)
        asked.append(
            backend.AheadAsk(
                entry=entry,
                key_pk=resolved.key.pk,
                counters=ratelimit.counter_keys(resolved.key.pk, org_pk, now),
                key_marker=key_marker,
                org_marker=keycache.org_lease_name(org_pk if org_pk is not None else "-"),
                tokens=wanted,
            )
        )
    asked_at = time.monotonic()
    epoch, replies = backend.backend().lease_ahead(
        asked,
        generation_prefix=prefix,
        now=now,
        month_expiry=ratelimit.month_expiry(now),
        lease=(
            chosen.length_ms,
            chosen.trust_ms,
            epoch_seen(),
            *keycache.lease_epoch_names(),
        ),
    )
    observe(epoch, asked_at)
    return _Answered(asks, epoch, list(replies), asked_at, chosen)


def _hold_ahead(answer: _Answered, now: float) -> int:
    """Hold the leases one call of `lease_ahead` was given (or give their tokens back):
    the leases granted."""
    chosen, epoch, asked_at = answer.chosen, answer.epoch, answer.asked_at
    pending = [
        (ask, reply) for ask, reply in zip(answer.asks, answer.replies, strict=True) if reply[1] > 0
    ]
    changed: list[tuple[tuple[bytes, keycache.Resolved, int], int, int]] = []
    granted = 0
    try:
        while pending:
            (digest, known, _), (found, tokens, minute_used, counted_in) = pending.pop()
            if found != known[0]:
                changed.append((known, tokens, counted_in))
                continue
            org = known[1].org
            # Held, or given back by `grant` itself.
            granted += grant(
                digest=digest,
                resolved=known[1],
                limits=org.limits if org is not None else ratelimit.UNLIMITED,
                now=now,
                asked_at=asked_at,
                length_ms=chosen.length_ms,
                tokens=tokens,
                minute_used=minute_used,
                epoch=epoch,
                epoch_trust=chosen.epoch_trust,
                ahead=(chosen.most, chosen.trust_ms),
            )
    finally:
        # The key's state changed since this process saw it (its next round trip learns
        # the new one), or this loop was cut short: the tokens go back to the windows the
        # script counted them in.
        changed += [(known, reply[1], reply[3]) for (_, known, _), reply in pending]
        with _lock:
            for known, tokens, counted_in in changed:
                org = known[1].org
                _add_return(
                    known[1].key.pk,
                    org.pk if org is not None else None,
                    int(now),
                    counted_in,
                    tokens,
                )
    return granted


def _flags(limits: Limits, org: Any) -> int:
    """Which of a key's windows are limited (`_BURST`, `_MINUTE`, `_MONTH`)."""
    return (
        (_BURST if limits.burst > 0 else 0)
        | (_MINUTE if limits.per_minute > 0 else 0)
        | (_MONTH if limits.monthly > 0 and org is not None else 0)
    )


def give_back(lease: Lease) -> None:
    """A request admitted under `lease` was refused before the limiter: its token is
    unused."""
    table = _table()
    with _lock:
        batch = _batches.get(lease.digest)
        if batch is not None and batch.lease is lease:
            batch.tokens += 1  # checked like the others before it admits again
            return
        table.lock(lease.index)
        try:
            slot = table.read(lease.index)
            if slot[_SERIAL] == lease.serial and _current(slot, lease.second, time.monotonic()):
                slot[_TOKENS_UNUSED] += 1
                table.write_tokens(lease.index, slot)
                _granted.add(lease.index)  # this process sees it given back when it ends
                return
        finally:
            table.unlock(lease.index)
        _add_return(lease.key_pk, lease.org_pk, lease.second, lease.flags, 1)


def record(
    lease: Lease, *, now: float, meta: ratelimit.UsageMeta, status: int, status_class: str
) -> None:
    """Count a request admitted under `lease` for usage and the key's recent requests."""
    hour = usage.hour_start(now)
    version = usage.clean_version(meta.client_version) if meta.client_version else ""
    if _pusher._pid != _pid:
        _pusher.ensure_started()
    with _lock:
        name = (lease.key_pk, lease.org_pk, hour)
        delta = _pending.usage.get(name)
        if delta is None:
            delta = _pending.usage[name] = usage.UsageDelta(lease.key_pk, lease.org_pk, hour)
        delta.requests += 1
        delta.last_at, delta.last_ip = now, meta.ip or delta.last_ip
        if version and len(delta.versions) < usage.MAX_VERSIONS:
            delta.versions.add(version)
        for scope in meta.scopes.split():
            delta.scopes[scope] = delta.scopes.get(scope, 0) + 1
        if status_class == usage.CLASS_4XX:
            delta.count_4xx += 1
        elif status_class == usage.CLASS_5XX:
            delta.count_5xx += 1
        if meta.method:
            recent = _pending.recent.get(lease.key_pk)
            if recent is None:
                recent = _pending.recent[lease.key_pk] = deque(maxlen=usage.RECENT_MAX)
            recent.append((status, now, meta))


def _retire(slot: list[Any]) -> None:
    """(under `_lock` and the slot's lock) The slot's unused tokens go back to their
    windows; the caller writes the slot."""
    if slot[_TOKENS_UNUSED] > 0:
        org_pk = None if slot[_ORG] < 0 else slot[_ORG]
        _add_return(slot[_KEY], org_pk, slot[_SECOND], slot[_FLAGS], slot[_TOKENS_UNUSED])
        slot[_TOKENS_UNUSED] = 0


def _add_return(key_pk: int, org_pk: int | None, second: int, flags: int, tokens: int) -> None:
    name = (
        key_pk,
        org_pk,
        second,
        bool(flags & _BURST),
        bool(flags & _MINUTE),
        bool(flags & _MONTH),
    )
    _pending.returns[name] = _pending.returns.get(name, 0) + tokens
    _pusher.ensure_started()


def _sweep(indexes: list[int], *, ended_only: bool) -> None:
    """(under `_lock`) Give back what the leases in these slots leave unused: those that
    have ended, or (`ended_only=False`) all of them.

    With `ended_only`, a slot whose lease is seen current without its lock is left alone:
    it has nothing to give back yet, and stays tracked for the next sweep. A read torn by a
    writer at that moment only defers the slot to that sweep, which reads it again; a
    slot seen ended is read again under its lock."""
    table = _table()
    second = int(ratelimit.clock())
    if ended_only:
        clock = time.monotonic()
        indexes = [index for index in indexes if not _current_unlocked(table, index, second, clock)]
    for index in indexes:
        table.lock(index)
        try:
            slot = table.read(index)
            ended = not _current(slot, second, time.monotonic())
            if ended or not ended_only:
                if slot[_TOKENS_UNUSED] > 0:
                    _retire(slot)
                    table.write_tokens(index, slot)
                # A lease still current may get a refused request's token back: the
                # process that gives it back tracks the slot again (`give_back`).
                _granted.discard(index)
        finally:
            table.unlock(index)


# --- pushing to Redis -------------------------------------------------------------------

# One batch in one script, applied at most once: a batch whose reply was lost (a timeout
# after Redis ran it) is sent again under the same id and skipped, so unused tokens are
# never given back twice (that would admit more than the limit) and usage never counted
# twice. KEYS[1]: the batch's marker. ARGV: the batch, flat (no JSON to decode: decoding
# cost Redis a quarter of the script), read in order:
# - the pending set, the hash TTL, the version cap, the recent-list cap and TTL;
# - how many token returns, then per return: burst, minute, month counter, tokens, 1/0
#   per window. A window that has ended (its counter expired) has nothing to take back:
#   a decrement that finds no counter (answers minus the tokens) deletes what it made;
# - how many usage entries (per key and hour), then per entry: hash, requests, 4xx, 5xx,
#   last time, last IP, how many versions, the versions, how many scopes, per scope its
#   name and requests;
# - how many recent lists, then per list: its name, how many elements, the elements
#   oldest first.
_PUSH_LUA = (
    backend.RECENT_LUA_FUNCTION
    + """
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', 86400) then return 0 end
local pending, hash_ttl = ARGV[1], ARGV[2]
local version_cap, cap, recent_ttl = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local i = 7
for _ = 1, tonumber(ARGV[6]) do
  local tokens = tonumber(ARGV[i + 3])
  for w = 0, 2 do
    if ARGV[i + 4 + w] == '1' and redis.call('DECRBY', ARGV[i + w], tokens) == -tokens then
      redis.call('DEL', ARGV[i + w])
    end
  end
  i = i + 7
end
local entries = tonumber(ARGV[i])
i = i + 1
for _ = 1, entries do
  local h, n = ARGV[i], tonumber(ARGV[i + 1])
  local c4, c5, at, ip = tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3]), ARGV[i + 4], ARGV[i + 5]
  i = i + 6
  -- A new hash (first requests of the hour, or first since the fold claimed the last
  -- one) gets its expiry and joins the pending set; later ones are already there.
  if redis.call('HINCRBY', h, 'n', n) == n then
    redis.call('EXPIRE', h, hash_ttl)
    redis.call('SADD', pending, h)
  end
  if c4 > 0 then redis.call('HINCRBY', h, 'c4', c4) end
  if c5 > 0 then redis.call('HINCRBY', h, 'c5', c5) end
  if tonumber(at) >= tonumber(redis.call('HGET', h, 'at') or '0') then
    redis.call('HSET', h, 'at', at, 'ip', ip)
  end
  local versions = tonumber(ARGV[i])
  for v = 1, versions do
    local f = 'v:' .. ARGV[i + v]
    if redis.call('HEXISTS', h, f) == 0 then
      if tonumber(redis.call('HGET', h, 'nv') or '0') < version_cap then
        redis.call('HSET', h, f, '1')
        redis.call('HINCRBY', h, 'nv', 1)
      end
    end
  end
  i = i + 1 + versions
  local scopes = tonumber(ARGV[i])
  for s = 0, scopes - 1 do
    redis.call('HINCRBY', h, 's:' .. ARGV[i + 1 + 2 * s], ARGV[i + 2 + 2 * s])
  end
  i = i + 1 + 2 * scopes
end
local lists = tonumber(ARGV[i])
i = i + 1
for _ = 1, lists do
  local l, n = ARGV[i], tonumber(ARGV[i + 1])
  lk_keep_recent(l, redis.call('LPUSH', l, unpack(ARGV, i + 2, i + 1 + n)), cap, recent_ttl)
  i = i + 2 + n
end
return 1
"""
)

_PUSH = redisconn.FastScript(_PUSH_LUA)
_push_lock = threading.Lock()
# Batches not known to have reached Redis, oldest first: (id, the script's arguments).
_unsent: list[tuple[str, list[str | int]]] = []


def push(*, usage_too: bool = True) -> None:
    """Send what leased requests added (usage, recent requests, unused tokens) to Redis;
    without `usage_too`, the unused tokens alone (the rest waits for the next push).

    Also retires leases that have ended. A batch that may not have arrived (Redis down, a
    timeout) is kept and sent again under its id, which Redis applies at most once.
    Called by a thread every `PUSH_INTERVAL` (with usage every `USAGE_PUSH_INTERVAL`),
    before a usage fold and at exit.
    """
    conn = redisconn.client()
    if conn is None:
        return
    with _push_lock:
        global _pending
        with _lock:
            if _batches:
                second = int(ratelimit.clock())
                _drop_batches(lambda batch: batch.lease.second != second)
            if _granted:
                _sweep(list(_granted), ended_only=True)
            if usage_too:
                batch, _pending = _pending, _Pending()
            else:
                batch, _pending.returns = _Pending(returns=_pending.returns), {}
        if not batch.empty():
            _unsent.append((uuid.uuid4().hex, _payload(batch)))
        while _unsent:
            batch_id, payload = _unsent[0]
            try:
                _send(conn, batch_id, payload)
            except (DataError, UnicodeError):
                # Arguments that cannot be encoded never will be: a batch kept for them
                # would hold back every later one. Never expected (every argument is an
                # int or a str of ASCII made here); said loudly.
                logger.exception("A leased-usage batch could not be encoded; dropped.")
                _unsent.pop(0)
                continue
            except Exception as exc:  # kept for the next push, whatever went wrong
                redisconn.error_log.error(
                    "leases", "Redis unreachable: leased requests' usage kept for later", exc
                )
                return
            _unsent.pop(0)


def _send(conn: Any, batch_id: str, payload: list[str | int]) -> None:
    # On the pusher thread's own connection, packed in one go (`redisconn.run_script`):
    # redis-py's command path cost about as much as building the payload.
    redisconn.run_script(conn, _PUSH, [redisconn.rkey("push", batch_id)], list(payload))


def _payload(batch: _Pending) -> list[str | int]:
    """The script's ARGV for `batch` (the layout above `_PUSH_LUA`)."""
    # A burst window whose second has passed has nothing to take back.
    now = int(ratelimit.clock())
    args: list[str | int] = [
        usage.redis_pending_key(),
        usage.REDIS_HASH_TTL,
        usage.MAX_VERSIONS,
        usage.RECENT_MAX,
        usage.RECENT_TTL,
        len(batch.returns),
    ]
    for (key_pk, org_pk, second, burst, minute, month), tokens in batch.returns.items():
        args += ratelimit.counter_keys(key_pk, org_pk, float(second))
        args += (tokens, int(burst and second == now), int(minute), int(month))
    args.append(len(batch.usage))
    for delta in batch.usage.values():
        args += (
            ratelimit.usage_hash_name(delta.key_pk, delta.org_pk, delta.hour),
            delta.requests,
            delta.count_4xx,
            delta.count_5xx,
            repr(delta.last_at),
            delta.last_ip,
            len(delta.versions),
            *sorted(delta.versions),
            len(delta.scopes),
        )
        for scope, count in delta.scopes.items():
            args += (scope, count)
    recent = [(key_pk, requests) for key_pk, requests in batch.recent.items() if requests]
    args.append(len(recent))
    for key_pk, requests in recent:
        args += (usage.recent_redis_key(key_pk), len(requests))
        args += [f"{status} {meta.recent_body(at)}" for status, at, meta in requests]
    return args


def forget(*, digest: str | None = None, org_pk: int | None = None) -> None:
    """End the host's leases on the key with `digest` or the keys of `org_pk` at once (an
    invalidation made here; other hosts' end by time, which it waits for)."""
    table = _table()
    if digest is not None:
        tag, first = _slot_of(digest)
        with _lock:
            _drop_batches(lambda batch: batch.lease.digest == digest)
            for index in (first, first ^ 1):  # either of its slots (ADR 0103)
                _end(table, index, lambda slot: slot[_TAG] == tag)
    if org_pk is not None:
        # The scan reads without locks (a torn read only adds a candidate); each slot that
        # may be the org's is checked again under its lock.
        candidates = [
            index
            for index in range(SLOTS)
            if _SLOT.unpack_from(table.map, index * SLOT_SIZE)[_ORG] == org_pk
        ]
        with _lock:
            _drop_batches(lambda batch: batch.lease.org_pk == org_pk)
            for index in candidates:
                _end(table, index, lambda slot: slot[_ORG] == org_pk)


def _end(table: _Table, index: int, matches: Any) -> None:
    """(under `_lock`) End the lease in slot `index` if `matches(slot)`."""
    table.lock(index)
    try:
        slot = table.read(index)
        if matches(slot):
            _retire(slot)
            slot[_TRUST] = 0.0
            table.write(index, slot)
    finally:
        table.unlock(index)


def release_all() -> None:
    """Give back what the leases this process granted leave unused, and push (a worker
    leaving, tests). The host's other processes ask for new ones."""
    with _lock:
        _drop_batches(lambda batch: True, leaving=True)
        if _granted:
            _sweep(list(_granted), ended_only=False)
    push()


def discard() -> None:
    """Forget leases and unpushed work, the host's table included (tests start from a
    clean slate)."""
    global _pending
    with _lock:
        _known.clear()
        _granted.clear()
        _batches.clear()
        _ahead.clear()
        _pending = _Pending()
        _watch.used = _watch.trust = _watch.failed_until = 0.0
        if redisconn.enabled():
            _table().clear()
    with _push_lock:
        _unsent.clear()


def _forked() -> None:
    """A forked child (a gunicorn worker) keeps the host's table (mapped, shared) and
    starts the rest afresh: its own locks, no state of keys, nothing to push."""
    global _pending, _lock, _push_lock, _open_lock, _pid
    _lock, _push_lock, _open_lock = threading.Lock(), threading.Lock(), threading.Lock()
    _pusher._lock = threading.Lock()
    _pid = os.getpid()
    _known.clear()
    _granted.clear()
    _batches.clear()
    _ahead.clear()
    _unsent.clear()
    _pending = _Pending()
    _watch.used = _watch.trust = _watch.failed_until = 0.0


os.register_at_fork(after_in_child=_forked)
_pid = os.getpid()


class _Pusher:
    """The thread that pushes every `PUSH_INTERVAL`, started by the first thing this
    process has to push (a lease it granted, a leased request, tokens to give back)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid = 0

    def ensure_started(self) -> None:
        if self._pid == _pid:
            return
        with self._lock:
            if self._pid == _pid:
                return
            self._pid = _pid
            threading.Thread(target=self._run, name="lease-pusher", daemon=True).start()
            atexit.register(release_all)

    def _run(self) -> None:
        next_push = time.monotonic() + PUSH_INTERVAL
        next_usage = time.monotonic() + USAGE_PUSH_INTERVAL
        ahead_second = 0
        while True:
            wait = min(tick(time.monotonic()), next_push - time.monotonic())
            if _ahead:  # wake as the next second begins
                wait = min(wait, ahead_wait(ratelimit.clock()))
            time.sleep(max(0.0, wait))
            wall = ratelimit.clock()
            if ahead_due(wall, ahead_second):
                ahead_second = ahead_target(wall)
                try:
                    lease_ahead()
                except Exception as exc:  # the keys' round trips ask instead
                    redisconn.error_log.error("leases", "Leases not asked for ahead", exc)
            try:
                refresh_epoch()
            except Exception as exc:  # never the end of this thread: it pushes usage too
                redisconn.error_log.error("lease-epoch", "Reading the lease epoch failed", exc)
            if time.monotonic() < next_push:
                continue
            clock = time.monotonic()
            next_push = clock + PUSH_INTERVAL
            # Usage goes with this push when it is due before the middle of the next
            # interval (with every other push, at the default intervals).
            usage_too = clock + PUSH_INTERVAL / 2 >= next_usage
            if usage_too:
                next_usage = clock + USAGE_PUSH_INTERVAL
            try:
                push(usage_too=usage_too)
            except Exception:
                logger.exception("Pushing leased requests' usage to Redis failed; will retry.")


_pusher = _Pusher()


class _Holder:
    """This module as a holder of `apikeys.held`."""

    def forget(self, *, digest: str | None = None, org_pk: int | None = None) -> None:
        forget(digest=digest, org_pk=org_pk)

    def push(self) -> None:
        push()

    def release_all(self) -> None:
        release_all()


held.register(_Holder())
