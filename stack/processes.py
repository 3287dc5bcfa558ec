"""The stack's processes: start one in its own session (as another user if asked), record it
in a pid file, tell whether a recorded pid is still ours, stop it.

A pid file holds the pid on line 1 and, on line 2, JSON with the command name, the process
start time and the ports, so a pid reused by another program is never taken for ours.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shlex
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from settings import PROJECT_DIR

HOST = "127.0.0.1"  # every server listens on the loopback only
STOP_GRACE = 5.0  # seconds between the polite signal and SIGKILL

# Popen objects of the children this process started, so we can reap them.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


class StackError(RuntimeError):
    """A part failed to start or to become ready; the message names it and shows its log."""


@dataclass(frozen=True)
class Launch:
    argv: list[str]
    name: str  # must appear in /proc/<pid>/cmdline while the process is ours
    ports: dict[str, int]
    cwd: Path = PROJECT_DIR
    user: str | None = None  # run as this user (PostgreSQL when we are root)
    env: dict[str, str] | None = None  # this process's own, beside what every child gets


def start(launch: Launch, log_path: Path, pid_path: Path, env: Mapping[str, str]) -> int:
    """Start `launch` in its own session, its output appended to `log_path`; returns the pid."""
    uid, gid, groups = user_ids(launch.user)
    with log_path.open("ab") as log:
        log.write(f"\n--- {time.strftime('%F %T')} {shlex.join(launch.argv)}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            launch.argv,
            cwd=launch.cwd,
            env={**env, **(launch.env or {})},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            user=uid,
            group=gid,
            extra_groups=groups,
        )
    _CHILDREN[proc.pid] = proc
    meta = {"name": launch.name, "start": _start_time(proc.pid), "ports": launch.ports}
    pid_path.write_text(f"{proc.pid}\n{json.dumps(meta)}\n")
    return proc.pid


def log_tail(log_path: Path, lines: int = 30) -> str:
    try:
        text = log_path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def user_ids(user: str | None) -> tuple[int | None, int | None, list[int] | None]:
    """uid, gid and supplementary groups for Popen; all None: stay who we are."""
    if user is None:
        return None, None, None
    entry = pwd.getpwnam(user)
    return entry.pw_uid, entry.pw_gid, []


# ----- pid files ------------------------------------------------------------------------


def _pid_meta(pid_path: Path) -> tuple[int, dict[str, object]] | None:
    try:
        first, _, rest = pid_path.read_text().partition("\n")
        return int(first), json.loads(rest or "{}")
    except (OSError, ValueError):
        return None


def running_pid(pid_path: Path) -> int | None:
    """The pid in the pid file if that process is still the one we started."""
    found = _pid_meta(pid_path)
    if found is None:
        return None
    child = _CHILDREN.get(found[0])
    if child is not None and child.poll() is not None:  # our child exited: reap it
        _CHILDREN.pop(found[0], None)
    return found[0] if _is_ours(*found) else None


def recorded_ports(pid_path: Path) -> dict[str, int]:
    """The ports a running process of ours was started with."""
    found = _pid_meta(pid_path)
    if found is None or not _is_ours(*found):
        return {}
    ports = found[1].get("ports")
    return dict(ports) if isinstance(ports, dict) else {}


def _proc_text(pid: int, name: str) -> str:
    try:
        return (
            Path(f"/proc/{pid}/{name}").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return ""


def _start_time(pid: int) -> int | None:
    """Clock ticks after boot when the process started (differs for a reused pid); None if
    the process is gone or a zombie."""
    fields = _proc_text(pid, "stat").rpartition(")")[2].split()
    if len(fields) < 20 or fields[0] == "Z":
        return None
    return int(fields[19])


def _is_ours(pid: int, meta: Mapping[str, object]) -> bool:
    """Is `pid` still the process we recorded (same command name, same start time)?"""
    name, start = meta.get("name"), meta.get("start")
    if not isinstance(name, str) or start is None:
        return False  # a pid file we did not write
    if _start_time(pid) != start:
        return False
    # comm too: valkey rewrites its cmdline (process title), briefly blank while it does.
    return name in _proc_text(pid, "cmdline") or name == _proc_text(pid, "comm").strip()


# ----- stopping -------------------------------------------------------------------------


def terminate_group(pid: int) -> None:
    """SIGTERM to the process group: the server and whatever it started."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)


def wait_gone(pid: int) -> None:
    """Wait for the process group to empty, SIGKILL it after the grace period."""
    deadline = time.monotonic() + STOP_GRACE
    while _group_alive(pid):
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            deadline = time.monotonic() + STOP_GRACE
        time.sleep(0.05)
    _CHILDREN.pop(pid, None)


def _group_alive(pgid: int) -> bool:
    child = _CHILDREN.get(pgid)
    if child is not None:
        child.poll()  # reap our own child so a zombie does not count as alive
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
