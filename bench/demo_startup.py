"""Time from `scripts/demo --offline` to a visible status page, and from Ctrl-C to nothing left.

    .venv/bin/python -m bench.demo_startup [--runs 3]

Warm: the cluster binaries are cached (a first run builds them; demo/build.py holds the cold
build times measured by tools/build-*.sh). Each run starts the command as a newcomer would, waits
until GET / answers with the example sites (serve's startup sync done), then sends SIGINT and
waits for the command to exit. Prints one line per run and the median.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from demo.build import COLD_TOTAL, minutes

REPO = Path(__file__).resolve().parents[1]


def _page(demo_dir: Path) -> bool:
    state_file = demo_dir / "demo.json"
    if not state_file.exists():
        return False
    url = json.loads(state_file.read_text())["url"]
    try:
        with urllib.request.urlopen(url + "/", timeout=5) as r:
            page = r.read().decode()
    except OSError:
        return False
    return all(f'data-site="{s}"' in page for s in ("blog", "shop", "checkout"))


def one_run() -> tuple[float, float]:
    """(seconds to a page with the sites, seconds from SIGINT to exit)."""
    with tempfile.TemporaryDirectory(prefix="demo-bench-") as tmp:
        demo_dir = Path(tmp) / "demo"
        env = {**os.environ, "RECONCILER_DEMO_DIR": str(demo_dir)}
        t0 = time.monotonic()
        with (Path(tmp) / "demo.log").open("wb") as log:
            proc = subprocess.Popen(
                [str(REPO / "scripts" / "demo"), "--offline", "--port", "0"],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        try:
            while not _page(demo_dir):
                if proc.poll() is not None:
                    raise SystemExit(f"the demo exited {proc.returncode}; see {tmp}/demo.log")
                time.sleep(0.05)
            up = time.monotonic() - t0
            t1 = time.monotonic()
            proc.send_signal(signal.SIGINT)
            proc.wait(120)
            return up, time.monotonic() - t1
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    ups = []
    for i in range(args.runs):
        up, down = one_run()
        ups.append(up)
        print(
            f"run {i + 1}: page with the example sites after {up:.1f} s; stopped {down:.1f} s "
            "after SIGINT"
        )
    print(f"warm (binaries cached): median {statistics.median(ups):.1f} s to a visible page")
    print(
        f"cold: add the one-time build, measured ~{minutes(COLD_TOTAL)} on 2 cores "
        "(demo/build.py MEASURED_SECONDS)"
    )


if __name__ == "__main__":
    main()
