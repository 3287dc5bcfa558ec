"""RDS: describe the instance, force a Multi-AZ failover once, wait until it is back."""

import time
from typing import Any

from pydantic import BaseModel
from temporalio import activity
from temporalio.exceptions import ApplicationError, CancelledError

from activities.approvals import Authority
from activities.aws_access import AwsAccess
from activities.keepalive import heartbeating

# Statuses in which a reboot or failover is already under way: rebooting again would be a
# second failover.
IN_PROGRESS = frozenset({"rebooting", "failing-over", "modifying", "rebooting-with-failover"})


class DbInstanceRequest(BaseModel):
    db_instance_id: str


class DbInstance(BaseModel):
    db_instance_id: str
    status: str
    engine: str
    instance_class: str
    multi_az: bool
    availability_zone: str | None = None
    secondary_availability_zone: str | None = None


class FailoverRequest(BaseModel):
    db_instance_id: str
    # The primary AZ seen at diagnosis: if the primary is elsewhere now, the failover this
    # workflow asked for already happened (a retry after a crash must not fail over again).
    expected_primary_az: str | None
    # The approvals this change acts on; the worker checks them against the run that
    # scheduled it (activities/decision_guard.py) before the activity runs.
    authority: Authority | None = None


class FailoverResult(BaseModel):
    rebooted: bool
    reason: str
    status: str


class WaitAvailableRequest(BaseModel):
    db_instance_id: str
    previous_primary_az: str | None = None
    poll_seconds: float = 5.0


class WaitAvailableResult(BaseModel):
    status: str
    availability_zone: str | None
    waited_seconds: float
    polls: int


def _to_model(raw: dict[str, Any]) -> DbInstance:
    return DbInstance(
        db_instance_id=raw["DBInstanceIdentifier"],
        status=raw["DBInstanceStatus"],
        engine=raw.get("Engine", ""),
        instance_class=raw.get("DBInstanceClass", ""),
        multi_az=bool(raw.get("MultiAZ")),
        availability_zone=raw.get("AvailabilityZone"),
        secondary_availability_zone=raw.get("SecondaryAvailabilityZone"),
    )


class RdsActivities:
    def __init__(self, aws: AwsAccess) -> None:
        self._aws = aws
        self._rds = aws.client("rds")

    def _describe(self, db_instance_id: str) -> DbInstance:
        try:
            found = self._rds.describe_db_instances(DBInstanceIdentifier=db_instance_id)
        except self._rds.exceptions.ClientError as err:
            if err.response["Error"]["Code"] == "DBInstanceNotFound":
                raise ApplicationError(
                    f"db_instance_id: no RDS instance named {db_instance_id!r}",
                    type="DBInstanceNotFound",
                    non_retryable=True,
                ) from err
            raise
        return _to_model(found["DBInstances"][0])

    @activity.defn(name="rds.describe_instance")
    def describe_instance(self, req: DbInstanceRequest) -> DbInstance:
        return self._describe(req.db_instance_id)

    @activity.defn(name="rds.force_failover", no_thread_cancel_exception=True)
    @heartbeating
    def force_failover(self, req: FailoverRequest) -> FailoverResult:
        db = self._describe(req.db_instance_id)
        if not db.multi_az:
            raise ApplicationError(
                f"{db.db_instance_id} is not Multi-AZ: a forced failover is impossible; "
                "a plain reboot or a restore is a different procedure",
                type="NotMultiAZ",
                non_retryable=True,
            )
        if db.status in IN_PROGRESS:
            return FailoverResult(
                rebooted=False, reason=f"already {db.status}: not rebooting again", status=db.status
            )
        if req.expected_primary_az and db.availability_zone != req.expected_primary_az:
            return FailoverResult(
                rebooted=False,
                reason=f"primary already moved from {req.expected_primary_az} to "
                f"{db.availability_zone}: the failover happened",
                status=db.status,
            )
        if db.status != "available":
            raise ApplicationError(
                f"{db.db_instance_id} is {db.status!r}; a failover needs 'available'",
                type="InvalidDBInstanceState",
                non_retryable=True,
            )
        return self._reboot_with_failover(db)

    def _reboot_with_failover(self, db: DbInstance) -> FailoverResult:
        try:
            out = self._aws.mutating("rds").reboot_db_instance(
                DBInstanceIdentifier=db.db_instance_id, ForceFailover=True
            )
        except self._rds.exceptions.ClientError as err:
            code = err.response["Error"]["Code"]
            if code in ("InvalidParameterCombination", "DBInstanceNotFound"):
                raise ApplicationError(
                    f"RDS refused the failover: {code}: {err.response['Error'].get('Message')}",
                    type=code,
                    non_retryable=True,
                ) from err
            raise
        status = out["DBInstance"]["DBInstanceStatus"]
        return FailoverResult(
            rebooted=True, reason=f"failover from {db.availability_zone} started", status=status
        )

    @activity.defn(name="rds.wait_available")
    def wait_available(self, req: WaitAvailableRequest) -> WaitAvailableResult:
        """Poll until the instance is `available` on a new primary; the activity's
        start-to-close timeout bounds the wait, heartbeats show progress and catch a dead
        worker quickly."""
        started = time.monotonic()
        polls = 0
        while True:
            db = self._describe(req.db_instance_id)
            polls += 1
            activity.heartbeat({"status": db.status, "az": db.availability_zone})
            moved = req.previous_primary_az is None or (
                db.availability_zone != req.previous_primary_az
            )
            if db.status == "available" and moved:
                return WaitAvailableResult(
                    status=db.status,
                    availability_zone=db.availability_zone,
                    waited_seconds=round(time.monotonic() - started, 1),
                    polls=polls,
                )
            # Sleeps, but wakes at once when the workflow cancels the wait.
            activity.wait_for_cancelled_sync(req.poll_seconds)
            if activity.is_cancelled():
                raise CancelledError(f"wait cancelled while {db.status}")
