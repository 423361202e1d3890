"""Run the test suite with the whole process tree's clock moved to other dates (libfaketime).

A test whose outcome depends on today's date passes today and fails on some later day in CI.
This routine runs the suite as if it were each of a spread of dates (month ends, a leap day,
years ahead) and prints one line per date, so such a test shows up before the calendar finds it.
It needs Debian's `faketime` (`apt-get install faketime`); it is not part of `make test`
because each date costs a full run.

    python scripts/date_sweep.py                       # fast tests, the default dates
    python scripts/date_sweep.py --dates 2027-02-28 -- -m "not browser"
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

DEFAULT_DATES = [
    "2026-12-31 23:40:00",
    "2027-01-01 00:10:00",
    "2027-02-28 12:00:00",
    "2027-03-28 01:30:00",
    "2027-06-15 08:00:00",
    "2027-09-09 16:59:00",
    "2027-12-31 12:00:00",
    "2028-02-29 06:00:00",
    "2028-07-04 20:00:00",
    "2029-11-11 11:11:00",
]
ROOT = Path(__file__).resolve().parent.parent


def _offset(when: str) -> str:
    """libfaketime's offset mode: every clock (and child process) moves by the same seconds.

    Its "start at" mode also restarts the monotonic clock, which stalls asyncio timeouts and
    makes sleeps fail with EINVAL; a constant offset keeps every clock ticking as usual.
    """
    target = datetime.fromisoformat(when).replace(tzinfo=UTC)
    return f"{int((target - datetime.now(UTC)).total_seconds()):+d}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dates", nargs="+", default=DEFAULT_DATES)
    parser.add_argument("pytest_args", nargs="*", default=["-m", "not slow and not e2e"])
    args = parser.parse_args()
    if shutil.which("faketime") is None:
        sys.exit("faketime is not installed: apt-get install faketime")
    failed = 0
    for when in args.dates:
        started = time.monotonic()
        pytest = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
        proc = subprocess.run(
            ["faketime", "-f", _offset(when), *pytest, *args.pytest_args],
            cwd=ROOT,
            env={**os.environ, "FAKETIME_DONT_RESET": "1"},
            capture_output=True,
            text=True,
        )
        summary = [ln for ln in proc.stdout.splitlines() if re.search(r"\d+ (passed|failed)", ln)]
        failures = [ln for ln in proc.stdout.splitlines() if ln.startswith("FAILED")]
        failed += proc.returncode != 0
        print(
            f"{when}: exit {proc.returncode} in {time.monotonic() - started:.0f} s:"
            f" {summary[-1] if summary else proc.stderr.strip()[-300:]}",
            flush=True,
        )
        for line in failures:
            print(f"    {line}", flush=True)
    print(f"{len(args.dates) - failed} of {len(args.dates)} dates passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
