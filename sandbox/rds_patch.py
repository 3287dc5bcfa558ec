"""Make moto's RebootDBInstance behave like a real RDS reboot / Multi-AZ failover.

moto answers a reboot with the instance still `available` in the same AZ, so a runbook's
verify step would have nothing to observe. This replaces moto's response handler, in this
process only: the instance goes `rebooting`, and after the heal delay it comes back
`available`, with primary and standby AZ swapped when the reboot forced a failover.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from moto.core.responses import ActionResult
from moto.rds.exceptions import InvalidParameterCombination
from moto.rds.models import DBInstance
from moto.rds.responses import RDSResponse

from sandbox.state import DbInstanceSim, SandboxState

NON_MULTI_AZ_FAILOVER = "Cannot do a forced failover on a non-Multi-AZ instance."

OnRebooted = Callable[[str, bool], None]


class RebootPatch:
    """Owns the patched handler and the timers that finish each reboot."""

    def __init__(self, state: SandboxState, on_rebooted: OnRebooted) -> None:
        self._state = state
        self._on_rebooted = on_rebooted
        self._original: Callable[..., Any] | None = None
        self._timers: list[threading.Timer] = []
        self._dbs: dict[str, DBInstance] = {}  # moto objects seen, to mirror resets

    def install(self) -> None:
        self._original = RDSResponse.reboot_db_instance
        # moto dispatches only to plain functions on the class, so assign a function.
        RDSResponse.reboot_db_instance = _handler(self)  # type: ignore[method-assign,assignment]

    def uninstall(self) -> None:
        self.cancel_timers()
        if self._original is not None:
            RDSResponse.reboot_db_instance = self._original  # type: ignore[method-assign]
            self._original = None

    def cancel_timers(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()

    def adopt(self, db: DBInstance) -> None:
        """Track a seeded instance and show its standby AZ in describe_db_instances."""
        with self._state.lock:
            self._dbs[db.db_instance_identifier] = db
            _mirror(db, self._state.instances[db.db_instance_identifier])

    def mirror_all(self) -> None:
        """Copy the sandbox's view back into moto (after a reset)."""
        with self._state.lock:
            for identifier, db in self._dbs.items():
                sim = self._state.instances.get(identifier)
                if sim is not None:
                    _mirror(db, sim)

    def reboot(self, db: DBInstance, force_failover: bool) -> None:
        """Called from moto's request thread for every RebootDBInstance."""
        identifier = db.db_instance_identifier
        with self._state.lock:
            self._dbs[identifier] = db
            sim = self._state.instances.setdefault(identifier, _sim_from_moto(db))
            self._state.reboot_count += 1
            sim.reboots += 1
            if force_failover and not sim.multi_az:
                raise InvalidParameterCombination(NON_MULTI_AZ_FAILOVER)
            if sim.status == "rebooting":
                return  # already in progress: nothing more to do
            sim.status = "rebooting"
            if force_failover:
                self._state.failover_count += 1
                sim.failovers += 1
            _mirror(db, sim)
            delay, generation = self._state.heal_delay, self._state.generation
        self._start_timer(delay, db, force_failover, generation)

    def _start_timer(self, delay: float, db: DBInstance, failover: bool, gen: int) -> None:
        timer = threading.Timer(delay, self._finish, args=(db, failover, gen))
        timer.daemon = True
        self._timers = [t for t in self._timers if t.is_alive()]
        self._timers.append(timer)
        timer.start()

    def _finish(self, db: DBInstance, failover: bool, generation: int) -> None:
        identifier = db.db_instance_identifier
        with self._state.lock:
            if generation != self._state.generation:
                return  # a reset happened meanwhile
            sim = self._state.instances[identifier]
            if failover and sim.standby_az:
                sim.primary_az, sim.standby_az = sim.standby_az, sim.primary_az
            sim.status = "available"
            _mirror(db, sim)
        self._on_rebooted(identifier, failover)


def _handler(patch: RebootPatch) -> Callable[[RDSResponse], ActionResult]:
    def reboot_db_instance(self: RDSResponse) -> ActionResult:
        identifier = self.params.get("DBInstanceIdentifier")
        force = bool(self.params.get("ForceFailover"))
        db = self.backend.describe_db_instances(identifier)[0]  # raises DBInstanceNotFound
        patch.reboot(db, force)
        return ActionResult({"DBInstance": db})

    return reboot_db_instance


def _sim_from_moto(db: DBInstance) -> DbInstanceSim:
    """For instances created after seeding: guess the standby as the neighbour AZ."""
    primary = db.availability_zone
    standby = None
    if db.multi_az:
        standby = primary[:-1] + ("b" if primary.endswith("a") else "a")
    return DbInstanceSim(multi_az=bool(db.multi_az), primary_az=primary, standby_az=standby)


def _mirror(db: DBInstance, sim: DbInstanceSim) -> None:
    db.status = sim.status
    db.availability_zone = sim.primary_az
    # Serialized by moto as SecondaryAvailabilityZone (it looks attributes up by name).
    db.secondary_availability_zone = sim.standby_az  # type: ignore[attr-defined]
