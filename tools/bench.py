"""`make bench`: throughput of a fully guarded endpoint against the baseline, on the stack.

1. Reuses a running `make stack`, or starts one (tools/stack.sh, logs in var/stack/log/;
   one gunicorn worker per core unless WEB_CONCURRENCY says otherwise) and stops it at
   the end.
2. `manage.py bench_setup`: the org `bench` with custom limits of 10^9 (every window is
   checked and counted; 0 would mean "unlimited", which the limiter skips) and a fresh key.
3. Load from a second process, wrk (Debian's package), on loopback only: warm-up, then
   alternating runs of `GET /api/v1/ping` (no key, the baseline), `GET /api/v1/me` with
   the one key (key check, scope, rate limit and usage counting), `GET /api/v1/me` with
   each request from the next of BENCH_TENANT_KEYS keys of Growth-plan orgs (two keys an
   org, none refused: the many-tenant shape) and the gateway door, BENCH_ROUNDS x
   BENCH_SECONDS each, in the reverse order every other round, each after
   BENCH_LEAD_SECONDS of the same load unmeasured. Prints requests/second, p50/p99
   latency and the server's CPU time per request (from /proc, per process group) per
   run, the machine's idle and steal shares (steal: time the hypervisor gave the
   cores to something else), the Python threads' waits and preemptions (context
   switches) and the Redis commands (a count of work that does not move with the
   machine's speed), each per request, and each ratio to ping (target >= 0.9), as the
   ratio of the means and as the median of the per-round ratios.
4. `manage.py bench_verify`: key verification time with 1,000 and 1,000,000 keys in
   PostgreSQL (BENCH_SKIP_VERIFY=1 skips it).
The figures are also written to var/stack/bench.json.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STACK = ROOT / "var" / "stack"
PY = str(ROOT / ".venv" / "bin" / "python")
SECONDS = int(os.environ.get("BENCH_SECONDS", "8"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "6"))
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "16"))
# The warm-up's connections: more than the stack's workers keep (7 each: 35 for five), so
# that every worker serves each shape before it is measured. With 16 on five workers,
# gunicorn's gthread workers took 7 + 7 + 1 + 1 of them, and the rounds then met workers
# that had not yet verified the 200-key shape's keys: a cold start measured as if it were
# the steady state.
WARM_CONNECTIONS = int(os.environ.get("BENCH_WARM_CONNECTIONS", "48"))
WARM_SECONDS = int(os.environ.get("BENCH_WARM_SECONDS", "5"))
# Seconds of each shape's own load, unmeasured, before each measured run: what the shape
# before it left to do (usage pushed every second, unused tokens given back) is done
# by then, and the shape is in its steady state (its keys busy, their leases asked for
# ahead), not starting from keys that were idle while the other shapes ran.
LEAD_SECONDS = int(os.environ.get("BENCH_LEAD_SECONDS", "2"))
THREADS = int(os.environ.get("BENCH_THREADS", "1"))
TENANT_KEYS = int(os.environ.get("BENCH_TENANT_KEYS", "200"))
TARGET = 0.9
# A per-request count that could not be read (Redis did not answer).
UNKNOWN = -1.0


def log(message: str) -> None:
    sys.stderr.write(f"[bench] {message}\n")
    sys.stderr.flush()


def stack_env() -> dict[str, str]:
    env = dict(os.environ)
    for line in (STACK / "runtime.env").read_text().splitlines():
        name, _, value = line.partition("=")
        if name:
            env[name] = value
    env["DJANGO_SETTINGS_MODULE"] = "config.settings"
    return env


def port() -> str:
    return os.environ.get("STACK_PORT", "8100")


def alive() -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port()}/api/v1/ping", timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    apt = shutil.which("apt-get")
    if os.geteuid() == 0 and apt:
        log("installing wrk from Debian's packages")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run([apt, "update", "-qq"], check=True, env=env)  # noqa: S603
        subprocess.run([apt, "install", "-y", "-qq", "wrk"], check=True, env=env)  # noqa: S603
        found = shutil.which("wrk")
    if not found:
        sys.exit("[bench] wrk is needed: apt-get install wrk")
    return found


def start_stack() -> subprocess.Popen[bytes] | None:
    if (STACK / "ready").exists() and alive():
        log(f"reusing the running stack on 127.0.0.1:{port()}")
        return None
    log("starting the stack (logs in var/stack/log/)")
    process = subprocess.Popen(  # noqa: S603 - our own script
        [shutil.which("bash") or "/bin/bash", str(ROOT / "tools" / "stack.sh")],
        cwd=ROOT,
        env={
            **os.environ,
            "STACK_QUIET": "1",
            # One worker per core: every run's 16 connections then land 8 + 8, where with
            # more workers each run draws its own spread of them, and so its own speed
            # (docs/performance.md, 2026-12-02, third session).
            "WEB_CONCURRENCY": os.environ.get("WEB_CONCURRENCY", str(os.cpu_count() or 2)),
            # A route for the gateway door (`/gateway/auth`, asked about GET /bench/...).
            "LATCHKEY_CATALOGUE": os.environ.get(
                "LATCHKEY_CATALOGUE", str(ROOT / "tools" / "bench_catalogue.toml")
            ),
        },
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit("[bench] the stack failed to start; see var/stack/log/")
        if (STACK / "ready").exists() and alive():
            return process
        time.sleep(0.5)
    stop_stack(process)
    sys.exit("[bench] the stack did not become ready in 5 minutes")


def stop_stack(process: subprocess.Popen[bytes] | None) -> None:
    if process is None or process.poll() is not None:
        return
    log("stopping the stack")
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=120)
    except subprocess.TimeoutExpired:
        process.kill()


def save(report: dict[str, object]) -> None:
    (STACK / "bench.json").write_text(json.dumps(report, indent=2) + "\n")


def manage(*args: str) -> str:
    """`manage.py ARGS` on the stack: its output; what it wrote to stderr is shown when it
    fails (the bench then stops with its exit status)."""
    result = subprocess.run(  # noqa: S603 - our own manage.py
        [PY, "manage.py", *args],
        cwd=ROOT,
        env=stack_env(),
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        sys.stderr.write(result.stderr)
        log(f"manage.py {' '.join(args)} failed (exit status {result.returncode})")
        raise SystemExit(result.returncode if result.returncode > 0 else 1)
    return result.stdout


# --- CPU accounting: what each request costs the server, whatever else the machine runs ---

TICK = os.sysconf("SC_CLK_TCK")


def _stat_fields(stat: str) -> list[str]:
    """The fields of a `/proc/.../stat` line after the command name (field 3 on)."""
    return stat[stat.rindex(")") + 2 :].split()


def _stack_processes() -> dict[int, str]:
    """pid -> command name of every process of the stack: all descendants of the stack
    script (its pid is in var/stack/stack.pid) and of the stack's PostgreSQL server (which
    pg_ctl detaches; found by its data directory under var/stack)."""
    try:
        roots = {int((STACK / "stack.pid").read_text().strip())}
    except (OSError, ValueError):
        return {}
    parents: dict[int, int] = {}
    names: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = _stat_fields(stat)
        pid = int(entry.name)
        parents[pid] = int(fields[1])
        names[pid] = name
        if name.startswith("postgres"):
            try:
                command = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if str(STACK).encode() in command:
                roots.add(pid)
    found: dict[int, str] = {}
    for pid in names:
        cursor, seen = pid, 0
        while cursor > 1 and seen < 64:
            if cursor in roots:
                found[pid] = names[pid]
                break
            cursor, seen = parents.get(cursor, 0), seen + 1
    return found


def _group(name: str) -> str:
    if name.startswith("redis"):
        return "redis"
    if name.startswith("postgres"):
        return "postgres"
    if (
        "gunicorn" in name
        or name in ("python", "latchkey")
        or name.startswith(("python", "celery"))
    ):
        return "python"
    return "other"


def cpu_snapshot() -> dict[int, tuple[str, float]]:
    """CPU seconds (user + system) used so far by each stack process."""
    result: dict[int, tuple[str, float]] = {}
    for pid, name in _stack_processes().items():
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = _stat_fields(stat)
        result[pid] = (name, (int(fields[11]) + int(fields[12])) / TICK)
    return result


def cpu_used(before: dict[int, tuple[str, float]]) -> dict[str, float]:
    """CPU seconds per group (python = gunicorn and Celery, redis, postgres) since."""
    used: dict[str, float] = {}
    for pid, (name, seconds) in cpu_snapshot().items():
        start = before.get(pid, (name, 0.0))[1]
        group = _group(name)
        used[group] = used.get(group, 0.0) + max(0.0, seconds - start)
    return used


def switch_snapshot() -> dict[tuple[int, int, str], tuple[int, int]]:
    """(voluntary, involuntary) context switches so far of every thread of the stack's
    Python processes (gunicorn and Celery), by process, thread and the thread's start
    time (a thread id the kernel reuses is another thread). Per request they show how
    often the threads waited (for the GIL, a socket, a lock) and how often the scheduler
    took a core from them: on two shared cores that, more than the Python a request runs,
    is what makes the same code run at different speeds from one run to the next."""
    found: dict[tuple[int, int, str], tuple[int, int]] = {}
    for pid, name in _stack_processes().items():
        if _group(name) != "python":
            continue
        try:
            threads = list(Path(f"/proc/{pid}/task").iterdir())
        except OSError:
            continue
        for thread in threads:
            try:
                stat = (thread / "stat").read_text()
                status = (thread / "status").read_text()
            except OSError:
                continue
            started = _stat_fields(stat)[19]
            counts = {
                line.split(":")[0]: int(line.split()[1])
                for line in status.splitlines()
                if "ctxt_switches:" in line
            }
            found[(pid, int(thread.name), started)] = (
                counts.get("voluntary_ctxt_switches", 0),
                counts.get("nonvoluntary_ctxt_switches", 0),
            )
    return found


def switches_since(before: dict[tuple[int, int, str], tuple[int, int]]) -> tuple[int, int]:
    """(voluntary, involuntary) switches since `before`, of the threads alive now: a
    thread that ended takes its count with it, one that started counts from zero."""
    voluntary = involuntary = 0
    for thread, (now_voluntary, now_involuntary) in switch_snapshot().items():
        then_voluntary, then_involuntary = before.get(thread, (0, 0))
        voluntary += max(0, now_voluntary - then_voluntary)
        involuntary += max(0, now_involuntary - then_involuntary)
    return voluntary, involuntary


def redis_commands() -> int | None:
    """Commands Redis has run so far (`INFO commandstats`; those inside scripts included):
    per request, a count of the work each shape asks of Redis that does not move with the
    machine's speed (time-driven work, the usage pushes and Celery's, is spread over the
    run's requests). None when Redis cannot be asked."""
    import redis

    url = stack_env().get("REDIS_URL", "")
    if not url:
        return None
    try:
        client = redis.Redis.from_url(url, socket_timeout=2)
        try:
            stats = client.info("commandstats")
        finally:
            client.close()
    except (redis.RedisError, OSError, ValueError):
        return None
    return sum(int(figures["calls"]) for figures in stats.values())


def machine_times() -> tuple[int, int, int]:
    """(idle, steal, total) jiffies of all CPUs of the machine (/proc/stat): whether the
    two cores were saturated during a run, or something kept them waiting; and how long
    the hypervisor gave them to something else (a virtual machine's runs move with it)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return fields[3] + fields[4], fields[7], sum(fields[:8])


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if match is None:
        raise ValueError(text)
    return float(match.group(1)) * _UNITS[match.group(2)]


GATEWAY_HEADERS = ("X-Original-Method: GET", "X-Original-URI: /bench/items/1")


def wrk(
    binary: str,
    path: str,
    seconds: int,
    key: str | None,
    headers: tuple[str, ...] = (),
    script: str = "",
    connections: int = CONNECTIONS,
) -> dict[str, float]:
    command = [
        binary,
        f"-t{THREADS}",
        f"-c{connections}",
        f"-d{seconds}s",
        "--latency",
        "--timeout",
        "5s",
    ]
    if key:
        command += ["-H", f"Authorization: Bearer {key}"]
    for header in headers:
        command += ["-H", header]
    if script:
        command += ["-s", script]
    command.append(f"http://127.0.0.1:{port()}{path}")
    before = cpu_snapshot()
    switches_before, commands_before = switch_snapshot(), redis_commands()
    idle_before, steal_before, total_before = machine_times()
    wrk_before = os.times()
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout  # noqa: S603
    wrk_after = os.times()
    idle_after, steal_after, total_after = machine_times()
    used = cpu_used(before)
    voluntary, involuntary = switches_since(switches_before)
    commands_after = redis_commands()
    commands = (
        None
        if commands_before is None or commands_after is None
        else commands_after - commands_before
    )
    total = re.search(r"(\d+) requests in", output)
    requests = float(total.group(1)) if total else 0.0
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", output).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", output).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    errors = re.search(r"Socket errors:.*", output)
    wrk_cpu = (wrk_after.children_user - wrk_before.children_user) + (
        wrk_after.children_system - wrk_before.children_system
    )
    per_request = {
        f"cpu_{group}_us": round(seconds / requests * 1e6, 1) if requests else 0.0
        for group, seconds in used.items()
    }
    return {
        **per_request,
        "cpu_wrk_us": round(wrk_cpu / requests * 1e6, 1) if requests else 0.0,
        "waits_per_request": round(voluntary / requests, 2) if requests else 0.0,
        "preemptions_per_request": round(involuntary / requests, 2) if requests else 0.0,
        "redis_commands_per_request": (
            round(commands / requests, 2) if commands is not None and requests else UNKNOWN
        ),
        "rps": rps,
        "idle_pct": round(100 * (idle_after - idle_before) / max(1, total_after - total_before), 1),
        "steal_pct": round(
            100 * (steal_after - steal_before) / max(1, total_after - total_before), 1
        ),
        "p50_ms": p50,
        "p99_ms": p99,
        "non_2xx": float(bad.group(1)) if bad else 0.0,
        "socket_errors": 1.0 if errors else 0.0,
    }


def _count(value: float) -> str:
    """A per-request count as printed."""
    return f"{value:5.2f}" if value != UNKNOWN else "unknown"


def _median_known(values: list[float]) -> float:
    """The median of the runs' counts that were read; `UNKNOWN` when none was."""
    known = [value for value in values if value != UNKNOWN]
    return round(statistics.median(known), 2) if known else UNKNOWN


def set_up_doors() -> tuple[tuple[str, str, str | None, tuple[str, ...], str], ...]:
    """The benchmark's data on the running stack (`bench_setup`: one key with custom limits,
    `TENANT_KEYS` keys of Growth orgs) and its shapes: name, path, key (None: none, or the
    next tenant key by wrk's script), extra headers, wrk script."""
    keys_file = STACK / "tenant-keys.txt"
    key = (
        manage("bench_setup", "--tenants", str(TENANT_KEYS), "--keys-file", str(keys_file))
        .strip()
        .splitlines()[-1]
    )
    os.environ["BENCH_KEYS_FILE"] = str(keys_file)
    rotate = str(ROOT / "tools" / "bench_rotate.lua")
    return (
        ("ping", "/api/v1/ping", None, (), ""),
        ("me", "/api/v1/me", key, (), ""),
        ("tenants", "/api/v1/me", None, (), rotate),
        ("gateway", "/gateway/auth", key, GATEWAY_HEADERS, ""),
    )


def main() -> None:
    binary = ensure_wrk()
    stack = start_stack()
    try:
        doors = set_up_doors()
        log(f"warm-up ({WARM_CONNECTIONS} connections, {WARM_SECONDS} s a shape)")
        for _, path, auth, headers, script in doors:
            wrk(binary, path, WARM_SECONDS, auth, headers, script, WARM_CONNECTIONS)
        runs: dict[str, list[dict[str, float]]] = {name: [] for name, *_ in doors}
        for round_no in range(1, ROUNDS + 1):
            # Every other round runs the shapes in the reverse order, so that a drift of
            # the machine through a round weighs on no shape more than another.
            for name, path, auth, headers, script in doors if round_no % 2 else doors[::-1]:
                if LEAD_SECONDS > 0:
                    wrk(binary, path, LEAD_SECONDS, auth, headers, script)
                result = wrk(binary, path, SECONDS, auth, headers, script)
                runs[name].append(result)
                log(
                    f"round {round_no} {name:>7}: {result['rps']:8.0f} req/s  "
                    f"p50 {result['p50_ms']:6.2f} ms  p99 {result['p99_ms']:7.2f} ms  "
                    f"cpu/request: python {result.get('cpu_python_us', 0):6.0f} us, "
                    f"redis {result.get('cpu_redis_us', 0):4.0f} us, "
                    f"wrk {result['cpu_wrk_us']:4.0f} us, idle {result['idle_pct']:4.1f}%, "
                    f"steal {result['steal_pct']:4.1f}%, "
                    f"waits {result['waits_per_request']:4.2f}, "
                    f"preempted {result['preemptions_per_request']:4.2f}, "
                    f"redis commands {_count(result['redis_commands_per_request'])}"
                    + (f"  NON-2XX {int(result['non_2xx'])}" if result["non_2xx"] else "")
                )
        summary = {
            name: {
                "rps": round(statistics.fmean(r["rps"] for r in results), 1),
                "p50_ms": round(statistics.median(r["p50_ms"] for r in results), 2),
                "p99_ms": round(statistics.median(r["p99_ms"] for r in results), 2),
                "non_2xx": int(sum(r["non_2xx"] for r in results)),
                **{
                    field: round(statistics.median(r.get(field, 0.0) for r in results), 1)
                    for field in ("cpu_python_us", "cpu_redis_us", "cpu_postgres_us", "cpu_wrk_us")
                },
                **{
                    field: _median_known([r[field] for r in results])
                    for field in (
                        "waits_per_request",
                        "preemptions_per_request",
                        "redis_commands_per_request",
                    )
                },
            }
            for name, results in runs.items()
        }
        ratio = round(summary["me"]["rps"] / summary["ping"]["rps"], 3)
        tenants_ratio = round(summary["tenants"]["rps"] / summary["ping"]["rps"], 3)

        def paired(name: str) -> float:
            # Each run against the `ping` run of its round: drifts in what else the
            # machine runs affect both alike.
            return round(
                statistics.median(
                    m["rps"] / p["rps"] for p, m in zip(runs["ping"], runs[name], strict=True)
                ),
                3,
            )

        report: dict[str, object] = {
            "connections": CONNECTIONS,
            "seconds_per_run": SECONDS,
            "rounds": ROUNDS,
            "lead_seconds": LEAD_SECONDS,
            "cores": os.cpu_count(),
            "server": {
                name: os.environ.get(name, "")
                for name in ("WEB_CONCURRENCY", "GUNICORN_THREADS", "GUNICORN_WORKER_CLASS")
            },
            "ping": summary["ping"],
            "me": summary["me"],
            "gateway": summary["gateway"],
            "tenants": summary["tenants"],
            "tenant_keys": TENANT_KEYS,
            "ratio_me_over_ping": ratio,
            "ratio_tenants_over_ping": tenants_ratio,
            "ratio_gateway_over_me": round(summary["gateway"]["rps"] / summary["me"]["rps"], 3),
            "ratio_median_of_rounds": paired("me"),
            "ratio_tenants_median_of_rounds": paired("tenants"),
            "target": TARGET,
        }
        for name, path in (
            ("ping", "GET /api/v1/ping   "),
            ("me", "GET /api/v1/me     "),
            ("tenants", f"me, {TENANT_KEYS} keys  "),
            ("gateway", "GET /gateway/auth  "),
        ):
            figures = summary[name]
            print(
                f"{path}  {figures['rps']:8.0f} req/s  p50 {figures['p50_ms']:.2f} ms  "
                f"p99 {figures['p99_ms']:.2f} ms  server CPU/request: python "
                f"{figures['cpu_python_us']:.0f} us, redis {figures['cpu_redis_us']:.0f} us; "
                f"per request: {figures['waits_per_request']:.2f} waits and "
                f"{figures['preemptions_per_request']:.2f} preemptions of the Python threads, "
                f"{_count(figures['redis_commands_per_request'])} Redis commands"
            )
        for label, value, median in (
            ("me/ping", ratio, paired("me")),
            (f"me, {TENANT_KEYS} keys/ping", tenants_ratio, paired("tenants")),
        ):
            verdict = "meets" if value >= TARGET else "is BELOW"
            print(
                f"ratio {label:<20} {value:.3f} (means), {median:.3f} (median of rounds)"
                f"  ({verdict} the target {TARGET})"
            )
        gateway_ratio = report["ratio_gateway_over_me"]
        print(f"ratio gateway/me (means)           {gateway_ratio:.3f}  (target: no less than 1)")
        if any(summary[name]["non_2xx"] for name in summary):
            print("WARNING: some responses were not 2xx; the figures are not valid.")
        # Written now, and again with the verification's figures: a failure there
        # keeps the throughput figures.
        save(report)
        if os.environ.get("BENCH_SKIP_VERIFY") != "1":
            log("key verification with 1,000 and 1,000,000 keys (inserting takes a minute)")
            verify = json.loads(manage("bench_verify").strip().splitlines()[-1])
            report["verification"] = verify
            for size in ("1000", "1000000"):
                figures = verify[size]
                print(
                    f"verify {int(size):>9,} keys: db lookup {figures['db']['median_us']:7.1f} us"
                    f"  cold {figures['cold']['median_us']:7.1f} us"
                    f"  second {figures['second']['median_us']:7.1f} us"
                    f"  warm {figures['warm']['median_us']:7.1f} us (medians)"
                )
            print(
                f"db lookup 1M/1k   {verify['db_ratio_large_over_small']:.3f}  (flat: within 1.10)"
            )
        save(report)
        log("figures written to var/stack/bench.json")
    finally:
        # Benchmark keys of test orgs, but secrets all the same: not left on disk.
        (STACK / "tenant-keys.txt").unlink(missing_ok=True)
        stop_stack(stack)


if __name__ == "__main__":
    main()
