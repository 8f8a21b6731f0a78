"""Machine instructions a request of each shape runs in the request thread, counted by
valgrind's callgrind: a figure that hardly moves with the machine's speed or load (the
same code gives the same count within about 1 %; what varies is how many requests fall in
one second, and so how often a lease is renewed), for telling a change to the guard's cost
apart from the machine's drift.

    .venv/bin/python tools/count_instructions.py              # ping, me, gateway; 300 each
    .venv/bin/python tools/count_instructions.py --count 500 --shapes ping,me,tenants

It re-runs itself under `valgrind --tool=callgrind` with instrumentation off, sets up as
`tools/profile_me.py` does (its own redis-server, a throwaway SQLite file, leases on),
warms every shape up natively, then for each shape turns counting on (`callgrind_control`),
calls the WSGI application `--count` times and dumps. Only the calling thread is read
(`--separate-threads`): the lease pusher wakes by the clock, and under valgrind's ~50x
slowdown it would be charged far more often per request than on a real server. For the
same reason a second under valgrind holds fewer requests, so leases are renewed (a round
trip) more often than at full speed.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
UNDER_VALGRIND = "LATCHKEY_UNDER_CALLGRIND"


def _control(*args: str) -> None:
    control = shutil.which("callgrind_control") or "/usr/bin/callgrind_control"
    subprocess.run(  # noqa: S603 - valgrind's own control script, on this process
        [control, *args, str(os.getpid())],
        check=True,
        stdout=subprocess.DEVNULL,
    )


def measure(out: str, count: int, shapes: list[str]) -> None:
    """(under valgrind) Count each shape's requests into its own dump."""
    sys.path.insert(0, str(HERE))
    sys.path.insert(0, str(HERE.parent))
    import profile_me as pm

    workdir = Path(tempfile.mkdtemp(prefix="latchkey-instructions-"))
    redis_process, redis_url = pm.start_redis(workdir)
    try:
        pm.setup_django(workdir, redis_url, leases=True)
        key = pm.make_key()
        from django.core.wsgi import get_wsgi_application

        app = get_wsgi_application()
        templates = pm.shapes(key, tenants=200 if "tenants" in shapes else 0)
        for name in shapes:
            for number in range(600):
                pm.call(app, templates[name][number % len(templates[name])])
        _control("-i", "on")
        for name in shapes:
            shape = templates[name]
            for number in range(50):
                pm.call(app, shape[number % len(shape)])
            _control("-z")
            time.sleep(0.5)  # callgrind reads its commands between blocks
            for number in range(count):
                pm.call(app, shape[number % len(shape)])
            before = len(glob.glob(f"{out}.*"))
            _control("-d", name)
            while len(glob.glob(f"{out}.*")) == before:
                time.sleep(0.05)
        _control("-i", "off")
    finally:
        redis_process.terminate()
        shutil.rmtree(workdir, ignore_errors=True)
        pm.remove_lease_table(workdir)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--shapes", default="ping,me,gateway")
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    shapes = args.shapes.split(",")
    if os.environ.get(UNDER_VALGRIND):
        measure(args.out, args.count, shapes)
        return
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise SystemExit("valgrind is not installed (Debian: apt-get install valgrind).")
    outdir = Path(tempfile.mkdtemp(prefix="latchkey-callgrind-"))
    out = str(outdir / "callgrind.out")
    command = [
        valgrind,
        "--tool=callgrind",
        "--instr-atstart=no",
        "--separate-threads=yes",
        f"--callgrind-out-file={out}",
        sys.executable,
        __file__,
        "--count",
        str(args.count),
        "--shapes",
        args.shapes,
        "--out",
        out,
    ]
    env = {**os.environ, UNDER_VALGRIND: "1"}
    subprocess.run(command, check=True, env=env, stderr=subprocess.DEVNULL)  # noqa: S603
    counts: dict[str, int] = {}
    for dump in glob.glob(f"{out}.*-01"):  # the calling thread's dumps
        text = Path(dump).read_text(errors="replace")
        name = re.search(r"^desc: Trigger: dump (\S+)", text, re.M)
        total = re.search(r"^totals: (\d+)", text, re.M)
        if name and total:
            counts[name.group(1)] = int(total.group(1)) // args.count
    shutil.rmtree(outdir, ignore_errors=True)
    ping = counts.get("ping")
    for name in shapes:
        line = f"{name:8s} {counts.get(name, 0):>11,} instructions a request"
        if ping and name != "ping" and counts.get(name):
            line += f"   ping/{name} {ping / counts[name]:.3f}"
        print(line)


if __name__ == "__main__":
    main()
