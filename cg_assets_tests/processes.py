"""Finding the processes a test started, however they were spawned.

A process's command line often says nothing about which test started it (`dagster dev`'s
daemon, code servers and run workers, `python -m ws_sidecar`), and the launcher puts each child
in its own session, so neither `pgrep -f` nor the test's process group finds them. Their
environment does: every descendant inherits the variables it was started with, also after its
parent exited and it was re-parented.
"""

from __future__ import annotations

import os
from pathlib import Path

PROC = Path("/proc")


def processes_with_env(name: str, value: str) -> list[str]:
    """ "pid command line" of each of this user's processes (but this one) whose environment
    holds `name=value`; processes that vanish or cannot be read meanwhile are skipped."""
    wanted = f"{name}={value}".encode()
    found = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:  # gone, or another user's
            continue
        if wanted in environ.split(b"\0"):
            command = cmdline.replace(b"\0", b" ").decode(errors="replace").strip()
            found.append(f"{entry.name} {command}")
    return found
