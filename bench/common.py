"""What the benchmarks share: their own stack on free ports, the machine they ran on, the
load while they measured, percentiles, history timestamps, and the figures they report.

Every benchmark prints its figures; with `--json PATH` it also writes them, and
`bench/run_all.py` (`make bench`) gathers them into bench/RESULTS.md.
"""

from __future__ import annotations

import json
import math
import os
import platform
import random
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import WorkflowHandle

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from stack.local import DEFAULT_PORTS, EXTERNAL_VARS, Stack  # noqa: E402

# ---- the stack ----------------------------------------------------------------------------


def free_ports(names: Iterable[str] = tuple(DEFAULT_PORTS)) -> dict[str, int]:
    """Distinct free ports below the kernel's ephemeral range (as tests/conftest.py does: a
    port from bind(0) can be taken by an outgoing connection before the server binds it)."""
    try:
        ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError):
        ephemeral = 32768
    wanted, chosen = list(names), dict[str, int]()
    while len(chosen) < len(wanted):
        port = random.randrange(10000, ephemeral)
        if port in chosen.values():
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        chosen[wanted[len(chosen)]] = port
    return chosen


def embedded_environ(extra: dict[str, str] | None = None) -> dict[str, str]:
    """os.environ without what would make a part external or move a port."""
    drop = {*EXTERNAL_VARS.values(), "TEMPORAL_UI_URL", "SANDBOX_URL", "RUNBOOK_DATABASE_URL"}
    drop |= {"RUNBOOK_STATE_DIR", "RUNBOOK_ROSTER", "RUNBOOK_APPROVER_KEYS", "RUNBOOK_TASK_QUEUE"}
    env = {k: v for k, v in os.environ.items() if k not in drop and "RUNBOOK_PORT_" not in k}
    return env | (extra or {})


def cli_environ() -> dict[str, str]:
    """The environment of a `runbook` process as it runs installed: its bytecode compiled
    once and cached (pip compiles at install; Python caches on first import). This machine
    sets PYTHONDONTWRITEBYTECODE, with which every process compiles the project's sources
    again (0.05-0.09 s a start, measured); the cache goes to a temporary dir, not the tree.
    A first, uncounted run fills it."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    return env | {"PYTHONPYCACHEPREFIX": str(Path(tempfile.gettempdir()) / "runbook-pycache")}


def runbook_argv() -> list[str]:
    """The `runbook` console script of the checkout's venv (else the module)."""
    script = ROOT / ".venv" / "bin" / "runbook"
    return [str(script)] if script.exists() else [sys.executable, "-m", "cli.main"]


def new_state_dir(name: str) -> Path:
    state = Path(tempfile.mkdtemp(prefix=f"runbook-bench-{name}-"))
    state.chmod(0o755)  # PostgreSQL's unprivileged user must reach it
    return state


@contextmanager
def own_stack(
    name: str, parts: Iterable[str], extra_env: dict[str, str] | None = None, timeout: float = 120
) -> Iterator[tuple[Stack, dict[str, str]]]:
    """The embedded stack in a temporary state dir on free ports; stopped and removed after.
    Yields the stack and the environment a client needs (also put in os.environ, since
    boto3 and the CLI's helpers read it)."""
    state = new_state_dir(name)
    stack = Stack(state, ports=free_ports(), environ=embedded_environ(extra_env))
    started = time.monotonic()
    try:
        stack.up(parts, timeout=timeout)
        env = stack.client_env()
        print(f"stack up in {time.monotonic() - started:.1f}s (state {state})", flush=True)
        os.environ.update(env)
        yield stack, env
    finally:
        stack.down()
        shutil.rmtree(state, ignore_errors=True)


def unit_pid(stack: Stack, unit: str) -> int:
    pid = stack.running_pid(unit)
    if pid is None:
        raise RuntimeError(f"{unit} is not running")
    return pid


# ---- the machine and its load -------------------------------------------------------------


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def machine() -> dict[str, str]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = "?"
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f"{kib / 1024 / 1024:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "memory": memory,
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def rss_mb(pid: int) -> float:
    """Resident memory of a process (VmRSS), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its reaped children, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    ticks = sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def group_cpu_seconds(pgid: int) -> float:
    """CPU time of every live process in a process group (the stack's units each have one)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
            if int(fields[2]) == pgid:
                total += sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            continue
    return total


# ---- figures --------------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass
class Figure:
    bench: str
    name: str
    value: float
    unit: str
    target: str = ""  # e.g. "< 1 s"; empty: reported, no target
    ok: bool | None = None
    load: str = field(default_factory=loadavg)
    note: str = ""

    def line(self) -> str:
        shown = f"{self.value:.3g}" if abs(self.value) < 1000 else f"{self.value:.0f}"
        verdict = "" if self.ok is None else (" OK" if self.ok else " MISSED")
        target = f" (target {self.target}{verdict})" if self.target else ""
        note = f"  [{self.note}]" if self.note else ""
        return f"  {self.name}: {shown} {self.unit}{target}  load {self.load}{note}"


class Report:
    """Figures of one benchmark: printed as they come, written as JSON at the end."""

    def __init__(self, bench: str) -> None:
        self.bench = bench
        self.figures: list[Figure] = []
        self.notes: list[str] = []

    def add(
        self,
        name: str,
        value: float,
        unit: str,
        *,
        below: float | None = None,
        target: str = "",
        note: str = "",
        load: str | None = None,
    ) -> Figure:
        ok = None if below is None else value < below
        if below is not None and not target:
            target = f"< {below:g} {unit}"
        fig = Figure(self.bench, name, value, unit, target, ok, load or loadavg(), note)
        self.figures.append(fig)
        print(fig.line(), flush=True)
        return fig

    def note(self, text: str) -> None:
        self.notes.append(text)
        print(f"  note: {text}", flush=True)

    def write(self, path: str | None) -> None:
        if not path:
            return
        data = {
            "bench": self.bench,
            "figures": [asdict(f) for f in self.figures],
            "notes": self.notes,
            "machine": machine(),
        }
        Path(path).write_text(json.dumps(data, indent=1))


# ---- workflow histories ---------------------------------------------------------------------


async def events(handle: WorkflowHandle, wait: bool = True) -> AsyncIterator[HistoryEvent]:
    """The run's history as it grows (long poll: no busy polling)."""
    async for event in handle.fetch_history_events(wait_new_event=wait):
        yield event


def event_seconds(event: HistoryEvent) -> float:
    """The server's timestamp of an event, in seconds since the epoch."""
    return event.event_time.seconds + event.event_time.nanos / 1e9


def upserted(event: HistoryEvent, key: str) -> str | None:
    """The value a search-attribute upsert sets for `key` (JSON-decoded), else None."""
    if event.event_type != EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES:
        return None
    fields = event.upsert_workflow_search_attributes_event_attributes.search_attributes
    payload = fields.indexed_fields.get(key)
    if payload is None:
        return None
    value = json.loads(payload.data)
    return value[0] if isinstance(value, list) and value else value


def activity_type(event: HistoryEvent) -> str | None:
    if event.event_type != EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
        return None
    return str(event.activity_task_scheduled_event_attributes.activity_type.name)


def ms(seconds: float) -> float:
    return seconds * 1000


def summary(values: list[float]) -> str:
    if not values:
        return "no samples"
    return (
        f"n={len(values)} p50 {percentile(values, 50):.3f}s p99 {percentile(values, 99):.3f}s "
        f"min {min(values):.3f}s max {max(values):.3f}s"
    )


def env_for_child(extra: dict[str, Any]) -> dict[str, str]:
    return {**os.environ, **{k: str(v) for k, v in extra.items()}}
