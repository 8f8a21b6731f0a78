"""`make bench`: throughput of a fully guarded endpoint against the baseline, on the stack.

1. Reuses a running `make stack`, or starts one (tools/stack.sh, logs in var/stack/log/)
   and stops it at the end.
2. `manage.py bench_setup`: the org `bench` with unlimited custom limits and a fresh key.
3. Load from a second process, wrk (Debian's package), on loopback only: warm-up, then
   alternating runs of `GET /api/v1/ping` (no key, the baseline) and `GET /api/v1/me`
   (key check, scope, rate limit and usage counting), BENCH_ROUNDS x BENCH_SECONDS each.
   Prints requests/second, p50/p99 latency per run and the ratio me/ping (target >= 0.8).
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
SECONDS = int(os.environ.get("BENCH_SECONDS", "10"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "16"))
THREADS = int(os.environ.get("BENCH_THREADS", "1"))
TARGET = 0.8


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
        env={**os.environ, "STACK_QUIET": "1"},
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


def manage(*args: str) -> str:
    result = subprocess.run(  # noqa: S603 - our own manage.py
        [PY, "manage.py", *args],
        cwd=ROOT,
        env=stack_env(),
        check=True,
        capture_output=True,
        text=True,
    )
    return result.stdout


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if match is None:
        raise ValueError(text)
    return float(match.group(1)) * _UNITS[match.group(2)]


def wrk(binary: str, path: str, seconds: int, key: str | None) -> dict[str, float]:
    command = [
        binary,
        f"-t{THREADS}",
        f"-c{CONNECTIONS}",
        f"-d{seconds}s",
        "--latency",
        "--timeout",
        "5s",
    ]
    if key:
        command += ["-H", f"Authorization: Bearer {key}"]
    command.append(f"http://127.0.0.1:{port()}{path}")
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout  # noqa: S603
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", output).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", output).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    errors = re.search(r"Socket errors:.*", output)
    return {
        "rps": rps,
        "p50_ms": p50,
        "p99_ms": p99,
        "non_2xx": float(bad.group(1)) if bad else 0.0,
        "socket_errors": 1.0 if errors else 0.0,
    }


def main() -> None:
    binary = ensure_wrk()
    stack = start_stack()
    try:
        key = manage("bench_setup").strip().splitlines()[-1]
        log(f"warm-up ({CONNECTIONS} connections)")
        wrk(binary, "/api/v1/ping", 3, None)
        wrk(binary, "/api/v1/me", 3, key)
        runs: dict[str, list[dict[str, float]]] = {"ping": [], "me": []}
        for round_no in range(1, ROUNDS + 1):
            for name, path, auth in (("ping", "/api/v1/ping", None), ("me", "/api/v1/me", key)):
                result = wrk(binary, path, SECONDS, auth)
                runs[name].append(result)
                log(
                    f"round {round_no} {name:>4}: {result['rps']:8.0f} req/s  "
                    f"p50 {result['p50_ms']:6.2f} ms  p99 {result['p99_ms']:7.2f} ms"
                    + (f"  NON-2XX {int(result['non_2xx'])}" if result["non_2xx"] else "")
                )
        summary = {
            name: {
                "rps": round(statistics.fmean(r["rps"] for r in results), 1),
                "p50_ms": round(statistics.median(r["p50_ms"] for r in results), 2),
                "p99_ms": round(statistics.median(r["p99_ms"] for r in results), 2),
                "non_2xx": int(sum(r["non_2xx"] for r in results)),
            }
            for name, results in runs.items()
        }
        ratio = round(summary["me"]["rps"] / summary["ping"]["rps"], 3)
        report: dict[str, object] = {
            "connections": CONNECTIONS,
            "seconds_per_run": SECONDS,
            "rounds": ROUNDS,
            "cores": os.cpu_count(),
            "ping": summary["ping"],
            "me": summary["me"],
            "ratio_me_over_ping": ratio,
            "target": TARGET,
        }
        print(
            f"GET /api/v1/ping  {summary['ping']['rps']:8.0f} req/s  "
            f"p50 {summary['ping']['p50_ms']:.2f} ms  p99 {summary['ping']['p99_ms']:.2f} ms"
        )
        print(
            f"GET /api/v1/me    {summary['me']['rps']:8.0f} req/s  "
            f"p50 {summary['me']['p50_ms']:.2f} ms  p99 {summary['me']['p99_ms']:.2f} ms"
        )
        verdict = "meets" if ratio >= TARGET else "is BELOW"
        print(f"ratio me/ping     {ratio:.3f}  ({verdict} the target {TARGET})")
        if summary["me"]["non_2xx"] or summary["ping"]["non_2xx"]:
            print("WARNING: some responses were not 2xx; the figures are not valid.")
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
        (STACK / "bench.json").write_text(json.dumps(report, indent=2) + "\n")
        log("figures written to var/stack/bench.json")
    finally:
        stop_stack(stack)


if __name__ == "__main__":
    main()
