"""Route 53: the hosted zone of a domain, and one record UPSERTed into it and waited for
until Route 53 reports the change INSYNC.

An UPSERT is idempotent by nature; the record is read first anyway, so a retry (or a second
run for the same certificate) sends no change at all when the record already holds the value.
"""

import time
from typing import Literal

from pydantic import BaseModel, Field
from temporalio import activity
from temporalio.exceptions import ApplicationError, CancelledError

from activities.aws_access import AwsAccess
from activities.keepalive import heartbeating


def fqdn(name: str) -> str:
    return name.lower().rstrip(".") + "."


class ZoneRequest(BaseModel):
    domain: str = Field(min_length=1)


class HostedZone(BaseModel):
    id: str
    name: str
    private: bool = False


class RecordRequest(BaseModel):
    name: str = Field(min_length=1)
    type: Literal["CNAME", "TXT", "A", "AAAA"] = "CNAME"
    value: str = Field(min_length=1)
    ttl: int = Field(300, ge=0, le=172800)
    poll_seconds: float = Field(2.0, gt=0, le=60)


class RecordChange(BaseModel):
    zone: HostedZone
    name: str
    type: str
    value: str
    changed: bool
    change_id: str | None = None
    status: str
    detail: str


class Route53Activities:
    def __init__(self, aws: AwsAccess) -> None:
        self._aws = aws
        self._r53 = aws.client("route53")

    def _zone(self, domain: str) -> HostedZone:
        """The public zone with the longest name the domain falls in."""
        wanted = fqdn(domain.removeprefix("*."))
        zones = [
            zone
            for page in self._r53.get_paginator("list_hosted_zones").paginate()
            for zone in page["HostedZones"]
        ]
        public = [z for z in zones if not (z.get("Config") or {}).get("PrivateZone")]
        matching = [z for z in public if wanted == z["Name"] or wanted.endswith("." + z["Name"])]
        if not matching:
            names = ", ".join(sorted(z["Name"] for z in public)) or "none"
            raise ApplicationError(
                f"domain: no public Route 53 hosted zone holds {wanted}; zones: {names}",
                type="HostedZoneNotFound",
                non_retryable=True,
            )
        best = max(matching, key=lambda z: len(z["Name"]))
        return HostedZone(id=best["Id"].rsplit("/", 1)[-1], name=best["Name"])

    @activity.defn(name="route53.find_zone")
    def find_zone(self, req: ZoneRequest) -> HostedZone:
        return self._zone(req.domain)

    def _current(self, zone: HostedZone, name: str, kind: str) -> list[str] | None:
        found = self._r53.list_resource_record_sets(
            HostedZoneId=zone.id, StartRecordName=name, StartRecordType=kind, MaxItems="1"
        )["ResourceRecordSets"]
        if found and fqdn(found[0]["Name"]) == name and found[0]["Type"] == kind:
            return [r["Value"] for r in found[0].get("ResourceRecords", [])]
        return None

    @activity.defn(name="route53.upsert_record", no_thread_cancel_exception=True)
    @heartbeating
    def upsert_record(self, req: RecordRequest) -> RecordChange:
        name = fqdn(req.name)
        zone = self._zone(name)
        result = RecordChange(
            zone=zone,
            name=name,
            type=req.type,
            value=req.value,
            changed=False,
            status="INSYNC",
            detail="",
        )
        if self._current(zone, name, req.type) == [req.value]:
            result.detail = f"{req.type} {name} already points at {req.value} in {zone.name}"
            return result
        change = self._aws.mutating("route53").change_resource_record_sets(
            HostedZoneId=zone.id,
            ChangeBatch={
                "Comment": "certificate validation (runbook cert-renewal)",
                "Changes": [
                    {
                        "Action": "UPSERT",
                        "ResourceRecordSet": {
                            "Name": name,
                            "Type": req.type,
                            "TTL": req.ttl,
                            "ResourceRecords": [{"Value": req.value}],
                        },
                    }
                ],
            },
        )["ChangeInfo"]
        result.changed, result.change_id = True, change["Id"].rsplit("/", 1)[-1]
        result.status = self._wait_insync(result.change_id, change["Status"], req.poll_seconds)
        result.detail = f"UPSERT {req.type} {name} in {zone.name}: {result.status}"
        return result

    def _wait_insync(self, change_id: str, status: str, poll_seconds: float) -> str:
        """Route 53 propagates a change to its name servers in about a minute."""
        started, polls = time.monotonic(), 0
        while status != "INSYNC":
            polls += 1
            activity.heartbeat({"change": change_id, "status": status, "polls": polls})
            activity.wait_for_cancelled_sync(poll_seconds)
            if activity.is_cancelled():
                raise CancelledError(f"cancelled while change {change_id} is {status}")
            status = self._r53.get_change(Id=change_id)["ChangeInfo"]["Status"]
        activity.logger.info("change %s INSYNC after %.0fs", change_id, time.monotonic() - started)
        return status
