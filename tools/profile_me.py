"""In-process cost of `GET /api/v1/ping`, a fully guarded `GET /api/v1/me` and the
gateway door (`GET /gateway/auth` asked about `GET /bench/items/1`, scope `usage:read`).

No HTTP server and no load generator: the WSGI application is called in a loop with a
prepared environ, so the figures are the Python cost of one request (middleware, DRF, the
guards) plus the Redis round trips of `me`. It starts its own redis-server on a free
loopback port and uses a throwaway SQLite file, so it touches nothing else.

    .venv/bin/python tools/profile_me.py                 # timings (median of rounds)
    .venv/bin/python tools/profile_me.py --profile me    # cProfile of `me` (or gateway)
    .venv/bin/python tools/profile_me.py --count-redis   # Redis commands per `me`
    .venv/bin/python tools/profile_me.py --no-leases     # one Redis trip per request
    .venv/bin/python tools/profile_me.py --profile tenants   # cProfile of the 200-key shape
    .venv/bin/python tools/profile_me.py --calls         # Python calls per request
    .venv/bin/python tools/profile_me.py --stages        # each step of the guard, timed
    .venv/bin/python tools/profile_me.py --paced 450     # CPU a request at a worker's rate
    .venv/bin/python tools/profile_me.py --paced 450 --workers 2   # two workers, one host

The benchmark org has custom limits of 10^9 per minute, burst and month: every window is
checked and counted as for a limited org (0 would mean "unlimited", which skips them).
`tenants` is `me` with each call from the next of `--tenants` keys (default 200) of half as
many Growth-plan orgs, as `make bench`'s many-tenant shape.

`--paced RATE` calls each shape at RATE requests a second (one worker's share of the
stack's load; the calls sleep in between, as a worker waits for its next request) and
reports the CPU a request of the calling threads, of the processes' other threads (the
lease pushers) and of Redis. Back to back, a request finds its caches warm and costs about
half what it costs in the stack; paced, it costs about what it costs there, and the
shapes' ratios come out in the range of `make bench`'s runs, in a minute and on one core.
The lease table is kept in `/dev/shm` (when writable), as the stack keeps it. The calls
run in `--workers` processes forked from this one (default 1; 2 is the stack's two
workers sharing one lease table and one Redis, each at RATE), every key reaching each.
"""

from __future__ import annotations

import argparse
import io
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
HIGH = 10**9


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_redis(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    process = subprocess.Popen(  # noqa: S603 - Debian's redis-server on loopback
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return process, f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.05)
    process.terminate()
    raise RuntimeError("redis-server did not start")


def lease_table(workdir: Path) -> Path:
    """Where the run keeps its lease table: in `/dev/shm` as the stack does (its slot
    locks then keep the GIL, ADR 0099), else in the throwaway folder."""
    shm = Path("/dev/shm")  # noqa: S108 - a name of this run's own, removed at the end
    if shm.is_dir() and os.access(shm, os.W_OK):
        return shm / f"latchkey-profile-{workdir.name}"
    return workdir / "leases"


def remove_lease_table(workdir: Path) -> None:
    """Remove the run's lease table: the file the setting names, with the layout's name
    appended (ADR 0102)."""
    named = lease_table(workdir)
    for path in named.parent.glob(f"{named.name}.*"):
        path.unlink(missing_ok=True)


def setup_django(workdir: Path, redis_url: str, *, leases: bool) -> None:
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "DEBUG": "False",
            "SECRET_KEY": secrets.token_urlsafe(40),
            "API_KEY_PEPPER": secrets.token_urlsafe(40),
            "REDIS_URL": redis_url,
            "DATABASE_URL": f"sqlite:///{workdir / 'profile.sqlite3'}",
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "LATCHKEY_USAGE_FLUSH_SECONDS": "0",
            # Admission leases (ADR 0065) on, as deployed; --no-leases measures the
            # one-trip-per-request path of the standard plans.
            "LATCHKEY_KEY_LEASE_MS": os.environ.get("LATCHKEY_KEY_LEASE_MS", "1000")
            if leases
            else "0",
            "LATCHKEY_CATALOGUE": str(ROOT / "tools" / "bench_catalogue.toml"),
            # The host's lease table, this run's own, removed at the end.
            "LATCHKEY_LEASE_TABLE": str(lease_table(workdir)),
        }
    )
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)


def make_key() -> str:
    from accounts.models import User
    from apikeys.services import apikey_create
    from orgs.actors import Actor
    from orgs.services import org_create
    from platform_admin.services import org_set_limits

    owner = User.objects.create_user("profile-owner@example.test")
    org = org_create(name="Profile", slug="profile", owner=owner)
    org_set_limits(org=org, per_minute=HIGH, burst=HIGH, monthly=HIGH, actor=Actor.system())
    _, secret = apikey_create(
        org=org,
        name="profile",
        environment="test",
        scopes=["usage:read"],
        actor=Actor.system(),
    )
    return str(secret)


def make_tenant_keys(count: int) -> list[str]:
    """`count` keys of `count / 2` Growth-plan orgs (two keys each)."""
    from accounts.models import User
    from apikeys.services import apikey_create
    from orgs.actors import Actor
    from orgs.services import org_create

    secrets_made: list[str] = []
    for number in range((count + 1) // 2):
        owner = User.objects.create_user(f"tenant-{number}@example.test")
        org = org_create(name=f"Tenant {number}", slug=f"tenant-{number}", owner=owner)
        org.plan = "growth"
        org.save(update_fields=["plan"])
        for _ in range(2):
            if len(secrets_made) < count:
                _, secret = apikey_create(
                    org=org, name="tenant", environment="test", scopes=[], actor=Actor.system()
                )
                secrets_made.append(str(secret))
    return secrets_made


def environ_for(path: str, key: str | None, **headers: str) -> dict[str, Any]:
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8100",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "127.0.0.1:8100",
        "HTTP_USER_AGENT": "profile",
        "wsgi.url_scheme": "http",
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    if key:
        environ["HTTP_AUTHORIZATION"] = f"Bearer {key}"
    environ.update(headers)
    return environ


def shapes(key: str, *, tenants: int) -> dict[str, list[dict[str, Any]]]:
    """The requests of each shape: `ping`, `me` and the gateway door with `key`, and
    (`tenants` > 0) `me` from each of that many new Growth-plan keys in turn."""
    found = {
        "ping": [environ_for("/api/v1/ping", None)],
        "me": [environ_for("/api/v1/me", key)],
        "gateway": [
            environ_for(
                "/gateway/auth",
                key,
                HTTP_X_ORIGINAL_METHOD="GET",
                HTTP_X_ORIGINAL_URI="/bench/items/1",
            )
        ],
    }
    if tenants > 0:
        found["tenants"] = [
            environ_for("/api/v1/me", secret) for secret in make_tenant_keys(tenants)
        ]
    return found


def call(app: Any, template: dict[str, Any]) -> tuple[str, bytes]:
    environ = dict(template)
    environ["wsgi.input"] = io.BytesIO(b"")
    environ["wsgi.errors"] = sys.stderr
    status: list[str] = []

    def start_response(s: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        status.append(s)

    result = app(environ, start_response)
    try:
        body = b"".join(result)
    finally:
        result.close()  # as a WSGI server does once the body is sent
    return status[0], body


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by process `pid`."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def per_request_us(
    app: Any, templates: list[dict[str, Any]], count: int, redis_pid: int = 0
) -> tuple[float, float, float]:
    """Wall time, this process's CPU time and Redis' CPU time per request, in us (each
    request with the next of `templates`)."""
    redis_before = process_cpu(redis_pid) if redis_pid else 0.0
    cpu_before = time.process_time()
    started = time.perf_counter()
    for number in range(count):
        call(app, templates[number % len(templates)])
    wall = (time.perf_counter() - started) / count * 1e6
    cpu = (time.process_time() - cpu_before) / count * 1e6
    redis_cpu = (process_cpu(redis_pid) - redis_before) / count * 1e6 if redis_pid else 0.0
    return wall, cpu, redis_cpu


def calls_per_request(app: Any, templates: list[dict[str, Any]], count: int) -> float:
    """Python function calls (builtins included) per request, counted by cProfile in the
    calling thread (not the pusher's): the Python a request runs, as a count that does not
    move with the machine's speed. With leases on it depends on how many requests made a
    round trip, which the rate of each key decides."""
    import cProfile

    profiler = cProfile.Profile()
    profiler.enable()
    for number in range(count):
        call(app, templates[number % len(templates)])
    profiler.disable()
    return sum(entry.callcount for entry in profiler.getstats()) / count


# (owner, attribute, label): the guard's steps `--stages` times, outermost first.
def _stage_targets() -> list[tuple[Any, str, str]]:
    from apikeys import api_base, leases
    from apikeys.guard import counting, pipeline

    return [
        (api_base.ApiView, "admit_request", "admit_request (steps 1-5)"),
        (pipeline, "key_digest", "  key_digest"),
        (pipeline, "well_formed", "  well_formed"),
        (counting.Leasing, "verify", "  Leasing.verify"),
        (leases, "take", "    leases.take"),
        (counting.Direct, "verify", "    round trip (Direct.verify)"),
        (api_base.ApiView, "after_response", "after_response (usage, headers)"),
        (leases, "record", "  leases.record"),
    ]


def stages(app: Any, targets: dict[str, list[dict[str, Any]]], count: int) -> None:
    """Wall time per request spent in each step of the guard (wrapped in place, so what a
    step costs in a whole request, cold caches and all, not in a loop of its own), and how
    many requests made a round trip. The wrappers add about 0.3 us a step; the workers'
    `gc.freeze()` is applied, as in the stack. The `tenants` figures are not the stack's:
    one process calling 200 keys in turn gives each a few requests a second, too few for
    most leases, so about a third of its requests make round trips."""
    import gc

    spent: dict[str, float] = {}
    calls: dict[str, int] = {}
    wrapped: list[tuple[Any, str, Any]] = []

    def timed(original: Any, label: str) -> Any:
        def step(*args: Any, **kwargs: Any) -> Any:
            calls[label] = calls.get(label, 0) + 1
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                spent[label] = spent.get(label, 0.0) + time.perf_counter() - started

        return step

    gc.collect()
    gc.freeze()
    targets_ = _stage_targets()
    for owner, name, label in targets_:
        original = owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)
        wrapped.append((owner, name, original))
        setattr(owner, name, timed(original, label))
    try:
        for name, templates in targets.items():
            spent.clear()
            calls.clear()
            wall, _, _ = per_request_us(app, templates, count)
            print(f"{name:7} {wall:6.0f} us a request (wall)")
            for _, _, label in targets_:
                if label in spent:
                    share = calls[label] / count
                    print(
                        f"  {label:34} {spent[label] / count * 1e6:6.1f} us a request"
                        + (f"  ({share:.3f} a request)" if share < 0.999 else "")
                    )
    finally:
        for owner, name, original in wrapped:
            setattr(owner, name, original)


def finish() -> None:
    """Push what the leases left while this run's Redis is still there, then forget them:
    the lease pusher (a daemon thread) then has nothing to send to a Redis that is gone."""
    from apikeys import leases

    leases.release_all()
    leases.discard()


def paced(
    app: Any,
    targets: dict[str, list[dict[str, Any]]],
    rate: float,
    seconds: float,
    rounds: int,
    workers: int,
    redis_pid: int,
) -> None:
    """CPU a request at `rate` requests a second in each of `workers` processes forked
    from this one (the stack's workers: one lease table, one Redis; see the module's
    docstring): the median over `rounds` of `seconds` each per shape, after 2 s of the
    same load unmeasured. Every worker calls all of a shape's requests in turn, each from
    its own place in the turn: each of the 200 keys reaches every worker, as the stack's
    connections bring it."""
    import gc
    import json
    import statistics

    from django.db import connections

    lead = 2.0
    connections.close_all()  # each worker opens its own
    start = time.time() + 1.0
    windows = list(enumerate(name for _ in range(rounds) for name in targets))

    def until(moment: float) -> None:
        while (left := moment - time.time()) > 0:
            time.sleep(min(left, 0.01))

    def work(worker: int, out: int) -> None:
        gc.collect()
        gc.freeze()
        rows = []
        for number, name in windows:
            templates = targets[name]
            at = start + number * (lead + seconds)
            for begin, length, kept in ((at, lead, False), (at + lead, seconds, True)):
                until(begin)
                thread, process = time.thread_time(), time.process_time()
                started, count = time.perf_counter(), 0
                while time.time() < begin + length:
                    call(
                        app,
                        templates[(count + worker * len(templates) // workers) % len(templates)],
                    )
                    count += 1
                    wait = started + count / rate - time.perf_counter()
                    if wait > 0:
                        time.sleep(wait)
                if kept:
                    thread = time.thread_time() - thread
                    rows.append((name, count, thread, time.process_time() - process - thread))
        os.write(out, json.dumps(rows).encode())

    children = []
    for worker in range(workers):
        reading, writing = os.pipe()
        pid = os.fork()
        if pid == 0:  # a worker: measures, reports, leaves without the parent's cleanup
            os.close(reading)
            status = 0
            try:
                work(worker, writing)
            except BaseException:
                import traceback

                traceback.print_exc()
                status = 1
            finally:
                os._exit(status)
        os.close(writing)
        children.append((pid, reading))
    redis_cpu = []
    for number, _ in windows:
        until(start + number * (lead + seconds) + lead)
        before = process_cpu(redis_pid)
        until(start + (number + 1) * (lead + seconds))
        redis_cpu.append(process_cpu(redis_pid) - before)
    reports = []
    for pid, reading in children:
        with os.fdopen(reading, "rb") as stream:
            reports.append(json.loads(stream.read() or b"[]"))
        os.waitpid(pid, 0)
    figures: dict[str, list[tuple[float, float, float]]] = {name: [] for name in targets}
    for index, (_, name) in enumerate(windows):
        rows = [report[index] for report in reports if len(report) > index]
        count = sum(row[1] for row in rows)
        if count:
            figures[name].append(
                (
                    sum(row[2] for row in rows) / count * 1e6,
                    sum(row[3] for row in rows) / count * 1e6,
                    redis_cpu[index] / count * 1e6,
                )
            )
    total: dict[str, float] = {}
    print(
        f"CPU a request at {rate:.0f} requests a second in each of {workers} worker(s) "
        f"(median of {rounds} rounds)"
    )
    for name, measured in figures.items():
        if not measured:
            raise SystemExit(f"{name}: no request measured (a worker failed)")
        thread, others, redis = (statistics.median(row[i] for row in measured) for i in range(3))
        total[name] = statistics.median(sum(row) for row in measured)
        print(
            f"{name:7} {total[name]:6.0f} us: request threads {thread:6.0f}, other threads "
            f"{others:5.0f}, Redis {redis:4.0f}"
        )
    for name in targets:
        if name != "ping":
            print(f"ratio {name}/ping {total['ping'] / total[name]:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile", choices=["ping", "me", "gateway", "tenants"])
    parser.add_argument("--tenants", type=int, default=200)
    parser.add_argument("--count-redis", action="store_true")
    parser.add_argument("--no-leases", action="store_true")
    parser.add_argument("--calls", action="store_true")
    parser.add_argument("--stages", action="store_true")
    parser.add_argument("--paced", type=float, metavar="RATE")
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="latchkey-profile-"))
    redis_process, redis_url = start_redis(workdir)
    try:
        setup_django(workdir, redis_url, leases=not args.no_leases)
        key = make_key()
        from django.core.wsgi import get_wsgi_application

        app = get_wsgi_application()
        targets = shapes(key, tenants=args.tenants)
        me = targets["me"]
        for template in (*targets["ping"], *me, *me, *me, *targets["gateway"], *targets["tenants"]):
            status, body = call(app, template)
            if not status.startswith("200"):
                raise SystemExit(f"{template['PATH_INFO']}: {status} {body[:300]!r}")
        for template in targets["tenants"]:
            call(app, template)
        for _ in range(200):
            for name, templates in targets.items():
                if name != "tenants":
                    call(app, templates[0])

        if args.count_redis:
            from redis.connection import AbstractConnection

            seen: list[str] = []
            original = AbstractConnection.send_packed_command

            def counting(self: Any, command: Any, check_health: bool = True) -> Any:
                parts = command if isinstance(command, list) else [command]
                seen.append(b"".join(parts)[:60].decode("latin-1", "replace"))
                return original(self, command, check_health)

            AbstractConnection.send_packed_command = counting  # type: ignore[method-assign]
            call(app, me[0])
            AbstractConnection.send_packed_command = original  # type: ignore[method-assign]
            print(f"Redis round trips for one warm `me`: {len(seen)}")
            for line in seen:
                print("  ", line.replace("\r\n", " "))
            return

        if args.paced:
            paced(
                app,
                targets,
                args.paced,
                args.seconds,
                args.rounds,
                args.workers,
                redis_process.pid,
            )
            finish()
            return

        if args.stages:
            stages(app, targets, args.count)
            finish()
            return

        if args.calls:
            counted = {
                name: calls_per_request(app, templates, args.count)
                for name, templates in targets.items()
            }
            for name, calls in counted.items():
                print(f"{name:7} {calls:7.1f} Python calls per request")
            print(f"guard (me - ping): {counted['me'] - counted['ping']:.1f} calls per request")
            finish()
            return

        if args.profile:
            import cProfile
            import pstats

            chosen = targets[args.profile]
            profiler = cProfile.Profile()
            profiler.enable()
            for number in range(args.count):
                call(app, chosen[number % len(chosen)])
            profiler.disable()
            stats = pstats.Stats(profiler)
            stats.sort_stats("cumulative").print_stats(45)
            stats.sort_stats("tottime").print_stats(30)
            stats.sort_stats("cumulative").print_stats("apikeys|rest_framework|config", 60)
            finish()
            return

        results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in targets}
        for _ in range(args.rounds):
            for name, templates in targets.items():
                results[name].append(per_request_us(app, templates, args.count, redis_process.pid))
        # The best round is the least disturbed by whatever else the machine runs.
        best = {name: min(rounds) for name, rounds in results.items()}
        cpu = {name: min(r[1] for r in rounds) for name, rounds in results.items()}
        redis_cpu = {name: min(r[2] for r in rounds) for name, rounds in results.items()}
        for name in targets:
            print(
                f"{name:7} wall {best[name][0]:6.0f} us  cpu {cpu[name]:6.0f} us  "
                f"redis cpu {redis_cpu[name]:5.0f} us   per request (best of {args.rounds})"
            )
        guard = cpu["me"] + redis_cpu["me"] - cpu["ping"]
        print(f"guard CPU (me + its Redis - ping): {guard:.0f} us per request")
        print(f"in-process ratio (wall) {best['ping'][0] / best['me'][0]:.3f}")
        print(f"gateway / me (CPU)      {cpu['gateway'] / cpu['me']:.3f}")
        tenants_cost = cpu["tenants"] + redis_cpu["tenants"]
        print(f"tenants / ping (CPU with Redis) {cpu['ping'] / tenants_cost:.3f}")
        finish()
    finally:
        redis_process.terminate()
        redis_process.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)
        remove_lease_table(workdir)


if __name__ == "__main__":
    main()
