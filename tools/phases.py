"""Where in each second the stack's CPU goes, per group of threads, under `make bench`'s
load: for telling work that comes in bursts at fixed points of the second (the lease
pusher asks for the keys' leases just before each second begins, ADR 0093 and 0100, gives
back unused tokens every half second and pushes usage every second) apart from work spread
over every request.

    .venv/bin/python tools/phases.py                  # me, then the 200-key shape
    .venv/bin/python tools/phases.py --shapes ping,me,tenants,gateway --seconds 12 --rounds 2

It starts the stack as `make bench` does (or reuses a running one), warms each shape up,
then runs wrk on each (16 connections, as the bench) and samples, every few milliseconds,
the run time the kernel has charged to every thread of the stack and of wrk
(`/proc/<pid>/task/<tid>/schedstat`, in nanoseconds). Each interval's time goes to the
tenth of the wall-clock second it fell in. It prints, per tenth, how many cores each group
kept busy:
- `request`: each gunicorn worker's busiest thread other than its main one (the thread
  that runs the requests, with one thread per worker as the stack has);
- `main`: the workers' main threads (accepting and reading connections);
- `other`: the workers' other threads (the lease pusher);
- redis-server, postgres, celery, wrk; `ALL` is their sum (at most the machine's cores).
A tenth where `request` falls while `ALL` falls too is time the request threads waited
with a core free. The sampling itself takes some of a core (printed with each run). The
figures are the run's averages per tenth, so a burst shows only if it comes at the same
point of every second.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench  # the stack's helpers, next to this file

TENTHS = 10
SAMPLE_SECONDS = 0.01


def _threads(pids: dict[int, str]) -> list[tuple[int, int, str]]:
    found = []
    for pid, name in pids.items():
        try:
            found += [(pid, int(tid), name) for tid in os.listdir(f"/proc/{pid}/task")]
        except OSError:
            continue
    return found


def _run_ns(pid: int, tid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _wrk_pids() -> dict[int, str]:
    found = subprocess.run(
        ["pgrep", "-x", "wrk"],  # noqa: S607 - procps, as the bench's own tools
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    return {int(pid): "wrk" for pid in found}


def _worker(name: str) -> bool:
    """A gunicorn process: the bench's Python group without Celery's."""
    return bench._group(name) == "python" and not name.startswith("celery")


def _group_of(
    threads: list[tuple[int, int, str]], busy: dict[tuple[int, int, str], list[float]]
) -> dict[tuple[int, int, str], str]:
    """Each thread's group: a gunicorn worker's busiest non-main thread is `request`."""
    busiest: dict[int, tuple[float, int]] = {}
    for pid, tid, name in threads:
        if _worker(name) and pid != tid:
            total = sum(busy.get((pid, tid, name), [0.0]))
            if total > busiest.get(pid, (-1.0, 0))[0]:
                busiest[pid] = (total, tid)
    groups = {}
    for pid, tid, name in threads:
        if _worker(name):
            if pid == tid:
                group = "main"
            elif busiest.get(pid, (0.0, 0))[1] == tid:
                group = "request"
            else:
                group = "other"
        else:
            group = name.split()[0][:14]
        groups[(pid, tid, name)] = group
    return groups


def measure(
    shape: tuple[str, str | None, tuple[str, ...], str], seconds: int
) -> tuple[float, float, dict[str, list[float]]]:
    """Run wrk on `shape` (path, key, headers, script: `bench.set_up_doors`) for `seconds`
    and answer its requests a second, the share of a core the sampling took, and per group
    the cores it kept busy in each tenth of the second."""
    path, auth, headers, script = shape
    result: dict[str, float] = {}
    load = threading.Thread(
        target=lambda: result.update(
            bench.wrk(bench.ensure_wrk(), path, seconds, auth, headers, script)
        )
    )
    load.start()
    time.sleep(1.0)  # wrk started and its connections open
    threads = _threads({**bench._stack_processes(), **_wrk_pids()})
    busy: dict[tuple[int, int, str], list[float]] = defaultdict(lambda: [0.0] * TENTHS)
    span = [0.0] * TENTHS
    previous = {thread: _run_ns(thread[0], thread[1]) for thread in threads}
    before = started = time.time()
    own = time.process_time()
    end = before + seconds - 2.0
    while time.time() < end:
        time.sleep(SAMPLE_SECONDS)
        now = time.time()
        tenth = int(((now + before) / 2 % 1) * TENTHS)
        span[tenth] += now - before
        for thread in threads:
            current = _run_ns(thread[0], thread[1])
            last = previous.get(thread)
            if current is not None and last is not None:
                busy[thread][tenth] += (current - last) / 1e9
            previous[thread] = current
        before = now
    # The sampler's own share of a core (it shares the machine with what it measures).
    sampler = (time.process_time() - own) / max(1e-9, time.time() - started)
    load.join()
    groups = _group_of(threads, busy)
    cores: dict[str, list[float]] = defaultdict(lambda: [0.0] * TENTHS)
    for thread, seconds_busy in busy.items():
        for tenth in range(TENTHS):
            if span[tenth]:
                cores[groups[thread]][tenth] += seconds_busy[tenth] / span[tenth]
    return result.get("rps", 0.0), sampler, cores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="me,tenants")
    parser.add_argument("--seconds", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=1)
    options = parser.parse_args()
    stack = bench.start_stack()
    try:
        shapes = {
            name: (path, auth, headers, script)
            for name, path, auth, headers, script in bench.set_up_doors()
        }
        chosen = [name for name in options.shapes.split(",") if name in shapes]
        for name in chosen:
            path, auth, headers, script = shapes[name]
            bench.wrk(bench.ensure_wrk(), path, 5, auth, headers, script, bench.WARM_CONNECTIONS)
        for round_no in range(1, options.rounds + 1):
            for name in chosen:
                rps, sampler, cores = measure(shapes[name], options.seconds)
                print(
                    f"round {round_no} {name}: {rps:.0f} req/s; cores busy in each tenth "
                    f"(the sampling itself took {sampler:.2f} of a core)"
                )
                print(f"  {'tenth':12s}" + "".join(f"{tenth:>6d}" for tenth in range(TENTHS)))
                for group, row in sorted(cores.items(), key=lambda item: -sum(item[1])):
                    if sum(row) / TENTHS >= 0.01:
                        print(f"  {group:12s}" + "".join(f"{value:6.2f}" for value in row))
                total = [sum(row[tenth] for row in cores.values()) for tenth in range(TENTHS)]
                print(f"  {'ALL':12s}" + "".join(f"{value:6.2f}" for value in total))
                sys.stdout.flush()
    finally:
        bench.stop_stack(stack)


if __name__ == "__main__":
    main()
