"""The embedded local stack: every server the project needs, from pip packages, no Docker.

`Stack(state_dir).up()` starts what is not running and waits until each part answers;
`down()` stops what we started; `status()` reports every part. Each process runs in its own
session with its log in `<state>/logs/<server>.log` and its pid in `<state>/pids/<server>.pid`
(stack/processes.py). The servers themselves are the entries of stack/servers.py.

A part whose address is configured in the environment (TEMPORAL_ADDRESS, DATABASE_URL, ...)
is not started: the configured one is used and reported as external.
"""

from __future__ import annotations

import os
import shlex
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from settings import get_settings
from stack import processes
from stack.probes import reachable, tcp_open
from stack.processes import HOST, StackError, log_tail
from stack.roster import ensure_local_roster, local_roster_files, moto_recording_file
from stack.servers import IAM_VAR, PART, SERVER, SERVER_OF, SERVERS, passed

__all__ = [
    "DEFAULT_PORTS",
    "EXTERNAL_VARS",
    "PARTS",
    "PartStatus",
    "Stack",
    "StackError",
    "local_stack",
]

# Status keys, in start order.
PARTS = tuple(PART)
DEFAULT_PORTS = {name: part.port for name, part in PART.items() if part.port is not None}
# The variable that, when set, makes a part external.
EXTERNAL_VARS = {name: part.var for name, part in PART.items() if part.var and not part.follows}


@dataclass(frozen=True)
class PartStatus:
    name: str
    address: str
    up: bool
    pid: int | None
    managed: Literal["embedded", "external"]


class _DependencyFailed(StackError):
    pass


class Stack:
    def __init__(
        self,
        state_dir: Path,
        ports: Mapping[str, int] | None = None,
        environ: Mapping[str, str] | None = None,
        iam: bool = False,
    ) -> None:
        """`environ` is read for configuration and passed to children (default os.environ).
        `iam`: moto enforces the shipped IAM policies (kept until `down`)."""
        self.state_dir = Path(state_dir).resolve()
        self._ports = dict(ports or {})
        self.environ = dict(os.environ if environ is None else environ)
        if iam or (self.state_dir / "iam").exists():
            self.environ[IAM_VAR] = "1"
        unknown = set(self._ports) - set(DEFAULT_PORTS)
        if unknown:
            raise ValueError(f"no port to set for {sorted(unknown)}; parts: {list(DEFAULT_PORTS)}")

    # ----- public API -------------------------------------------------------------------

    def up(self, parts: Iterable[str] | None = None, timeout: float = 90) -> None:
        """Start what is not running (and what it needs), wait until everything answers."""
        servers = self._servers_for(parts)
        for sub in ("logs", "pids"):
            (self.state_dir / sub).mkdir(parents=True, exist_ok=True)
        if self.environ.get(IAM_VAR):
            (self.state_dir / "iam").touch()
        if not self.environ.get("RUNBOOK_ROSTER"):
            ensure_local_roster(self.state_dir)
        deadline = time.monotonic() + timeout
        futures: dict[str, Future[None]] = {}
        with ThreadPoolExecutor(max_workers=max(len(servers), 1)) as pool:
            for name in servers:  # in start order, so dependencies are submitted first
                deps = {d: futures[d] for d in SERVER[name].depends if d in futures}
                futures[name] = pool.submit(self._ensure, name, deps, deadline)
        errors = [
            err if isinstance(err, StackError) else StackError(f"{name}: {err!r}")
            for name, future in futures.items()
            if (err := future.exception()) is not None
        ]
        # A dependency's own failure says more than "not started because of it".
        errors.sort(key=lambda e: isinstance(e, _DependencyFailed))
        if errors:
            raise errors[0]

    def down(self) -> None:
        """Stop every process we started; clients first, then the servers they use."""
        clients = tuple(s for s in SERVERS if s.depends)
        for wave in (clients, tuple(s for s in SERVERS if not s.depends)):
            running = {s.name: pid for s in wave if (pid := self.running_pid(s.name)) is not None}
            for name, pid in running.items():
                SERVER[name].stop(pid)
            for pid in running.values():
                processes.wait_gone(pid)
            for server in wave:
                self._pid_file(server.name).unlink(missing_ok=True)
        (self.state_dir / "iam").unlink(missing_ok=True)

    def status(self) -> dict[str, PartStatus]:
        with ThreadPoolExecutor(max_workers=len(PARTS)) as pool:
            results = pool.map(self._part_status, PARTS)
        return {s.name: s for s in results}

    def client_env(self) -> dict[str, str]:
        """What clients need to reach every part; configured values of external parts pass."""
        # RUNBOOK_LOCAL_STACK: the intake may take SNS alarms from any topic (the sandbox's).
        env = {"RUNBOOK_STATE_DIR": str(self.state_dir), "RUNBOOK_LOCAL_STACK": "1"}
        for part in PART.values():
            if part.var and (address := self.address(part.name)):
                env[part.var] = address
            if part.env:
                env.update(part.env(self))
        env.update(self._roster_env())
        return env

    def write_env_file(self) -> Path:
        """`<state>/env`, so a human can `source .runbook/env`."""
        path = self.state_dir / "env"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)  # it holds the local webhook token
        path.chmod(0o600)
        lines = [f"export {k}={shlex.quote(v)}" for k, v in sorted(self.client_env().items())]
        path.write_text("\n".join(lines) + "\n")
        return path

    # ----- what the entries of stack/servers.py ask ---------------------------------------

    def port(self, part: str) -> int:
        """The port of a running server wins; then the argument, the environment, the default."""
        recorded = processes.recorded_ports(self._pid_file(SERVER_OF[part].name))
        if part in recorded:
            return recorded[part]
        if part in self._ports:
            return self._ports[part]
        env = self.environ.get(_port_var(part))
        return int(env) if env else DEFAULT_PORTS[part]

    def external(self, part: str) -> bool:
        entry = PART[part]
        if entry.follows:
            return self.external(entry.follows)
        value = self.environ.get(entry.var, "") if entry.var else ""
        # Our own address (e.g. after `source .runbook/env`) does not make a part external.
        return bool(value) and value != PART[part].address(self, part)

    def address(self, part: str) -> str:
        entry = PART[part]
        if not self.external(part):
            return entry.address(self, part)
        return self.environ.get(entry.var, "") if entry.var else ""

    def task_queue(self) -> str:
        return self.environ.get("RUNBOOK_TASK_QUEUE") or "runbooks"

    def child_env(self) -> dict[str, str]:
        # moto writes its request recording into its working directory (the project) unless told.
        recording = {"MOTO_RECORDER_FILEPATH": str(moto_recording_file(self.state_dir))}
        return {**recording, **self.environ, **self.client_env(), "PYTHONUNBUFFERED": "1"}

    def log_file(self, server: str) -> Path:
        return self.state_dir / "logs" / f"{server}.log"

    def running_pid(self, server: str) -> int | None:
        """The pid of the server's process if it is running and ours."""
        return processes.running_pid(self._pid_file(server))

    # ----- starting ---------------------------------------------------------------------

    def _roster_env(self) -> dict[str, str]:
        """Who may approve: the configured roster, else the stack's own (stack/roster.py)."""
        if self.environ.get("RUNBOOK_ROSTER"):
            return passed(self.environ, "RUNBOOK_ROSTER", "RUNBOOK_APPROVER_KEYS")
        roster, keys = local_roster_files(self.state_dir)
        return {"RUNBOOK_ROSTER": str(roster), "RUNBOOK_APPROVER_KEYS": str(keys)}

    def _servers_for(self, parts: Iterable[str] | None) -> list[str]:
        """The servers to run for `parts` (default: all), with what they depend on."""
        wanted = set(PARTS if parts is None else parts)
        if unknown := wanted - set(PARTS):
            raise ValueError(f"unknown parts {sorted(unknown)}; parts: {list(PARTS)}")
        names = {SERVER_OF[p].name for p in wanted if not self.external(p)}
        for name in list(names):
            names.update(SERVER[name].depends)
        return [s.name for s in SERVERS if s.name in names and self._embedded_parts(s.name)]

    def _embedded_parts(self, server: str) -> list[str]:
        return [p.name for p in SERVER[server].parts if not self.external(p.name)]

    def _ensure(self, name: str, deps: Mapping[str, Future[None]], deadline: float) -> None:
        for dep, future in deps.items():
            try:
                failed = future.exception(timeout=max(deadline - time.monotonic(), 0))
            except TimeoutError:
                failed = TimeoutError()
            if failed:
                raise _DependencyFailed(f"{name}: not started because {dep} failed")
        pid = self.running_pid(name)
        if pid is None:
            self._pid_file(name).unlink(missing_ok=True)  # stale: gone or not ours
            pid = self._start(name)
        try:
            self._wait_ready(name, pid, deadline)
        except StackError:
            SERVER[name].stop(pid)
            processes.wait_gone(pid)
            self._pid_file(name).unlink(missing_ok=True)
            raise

    def _start(self, name: str) -> int:
        launch = SERVER[name].launch(self)
        for part, port in launch.ports.items():
            if tcp_open(HOST, port):
                raise StackError(
                    f"{name}: port {port} for {part} is already in use by another program; "
                    f"stop it or choose another port ({_port_var(part)})"
                )
        return processes.start(launch, self.log_file(name), self._pid_file(name), self.child_env())

    def _wait_ready(self, name: str, pid: int, deadline: float) -> None:
        while not self._ready(name):
            if self.running_pid(name) != pid:
                raise StackError(f"{name}: exited while starting\n{self._log_tail(name)}")
            if time.monotonic() > deadline:
                raise StackError(f"{name}: not ready in time\n{self._log_tail(name)}")
            time.sleep(0.05)
        ready = SERVER[name].ready
        if ready is not None:
            ready(self)

    def _ready(self, server: str) -> bool:
        return all(self._probe(part) for part in self._embedded_parts(server))

    def _probe(self, part: str) -> bool:
        """Does the embedded part answer its own protocol?"""
        return PART[part].probe(self, self.address(part))

    # ----- status -----------------------------------------------------------------------

    def _part_status(self, part: str) -> PartStatus:
        address = self.address(part)
        if self.external(part):
            return PartStatus(part, address, reachable(address), None, "external")
        pid = self.running_pid(SERVER_OF[part].name)
        up = pid is not None and self._probe(part)
        return PartStatus(part, address, up, pid, "embedded")

    def _pid_file(self, server: str) -> Path:
        return self.state_dir / "pids" / f"{server}.pid"

    def _log_tail(self, server: str) -> str:
        return log_tail(self.log_file(server))


def _port_var(part: str) -> str:
    return f"RUNBOOK_PORT_{part.upper().replace('-', '_')}"


def local_stack(iam: bool = False) -> Stack:
    """The stack of this checkout's state dir (RUNBOOK_STATE_DIR, default `.runbook/`)."""
    return Stack(get_settings().state_dir, iam=iam)
