"""moto in this process, seeded with the runbook's resources."""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from typing import Any

import boto3
from botocore.config import Config
from moto.core.models import DEFAULT_ACCOUNT_ID
from moto.rds.models import rds_backends
from moto.server import ThreadedMotoServer

from sandbox.cloudwatch import RdsMetricsFeed
from sandbox.ecs import EcsSim
from sandbox.iam import ADMIN_KEYS, enforce
from sandbox.rds_patch import OnRebooted, RebootPatch
from sandbox.state import APP_DB_INSTANCE, DbInstanceSim, SandboxState

REGION = "us-east-1"
STAGING_DB_INSTANCE = "staging-revenue-context-db"
ECS_CLUSTER = "prod-revenue-context"
# The escalation emails' sender, verified in SES (the local stack's RUNBOOK_EMAIL_FROM).
EMAIL_SENDER = "runbook@company.com"
# identifier -> (Multi-AZ, primary AZ, standby AZ)
SEED_DB_INSTANCES: dict[str, tuple[bool, str, str | None]] = {
    APP_DB_INSTANCE: (True, "us-east-1a", "us-east-1b"),
    STAGING_DB_INSTANCE: (False, "us-east-1a", None),
}


class AwsSandbox:
    """The moto server, the reboot patch and the metrics feed, started and stopped together."""

    def __init__(
        self,
        host: str,
        port: int,
        state: SandboxState,
        on_rebooted: OnRebooted,
        in_incident: Callable[[str], bool],
        task_start_seconds: float = 2.0,
        iam_worker_keys: tuple[str, str] | None = None,
    ) -> None:
        """`iam_worker_keys`: moto enforces the shipped IAM policies (sandbox/iam.py); the
        worker calls with these keys, the sandbox as its own admin."""
        self._iam_worker_keys = iam_worker_keys
        self._keys = ADMIN_KEYS if iam_worker_keys else ("testing", "testing")
        self.endpoint = f"http://{host}:{port}"
        self._host, self._port = host, port
        self._server = ThreadedMotoServer(ip_address=host, port=port, verbose=False)
        self._state = state
        self.patch = RebootPatch(state, on_rebooted)
        self.metrics = RdsMetricsFeed(
            self.client("cloudwatch"), REGION, SEED_DB_INSTANCES, in_incident
        )
        self.ecs = EcsSim(self.client, REGION, task_start_seconds)

    def client(self, service: str) -> Any:
        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=self._keys[0],
            aws_secret_access_key=self._keys[1],
            # moto checks a signature over the body it sees: a gzipped PutMetricData fails.
            config=Config(disable_request_compression=True),
        )

    def start(self) -> None:
        _ensure_free(self._host, self._port)
        if self._iam_worker_keys:
            enforce(DEFAULT_ACCOUNT_ID, REGION, self._iam_worker_keys)
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
        self._server.start()
        self.patch.install()
        self._seed_rds()
        self.client("ecs").create_cluster(clusterName=ECS_CLUSTER)
        self.client("ses").verify_email_identity(EmailAddress=EMAIL_SENDER)
        self.ecs.start()
        self.metrics.start()

    def stop(self) -> None:
        self.metrics.stop()
        self.ecs.stop()
        self.patch.uninstall()
        self._server.stop()

    def reset(self) -> None:
        """Called after the state was cleared: undo AZ swaps and pending reboots in moto."""
        self.patch.cancel_timers()
        self.patch.mirror_all()
        self.ecs.reset()

    def _seed_rds(self) -> None:
        rds = self.client("rds")
        for identifier, (multi_az, primary, standby) in SEED_DB_INSTANCES.items():
            rds.create_db_instance(
                DBInstanceIdentifier=identifier,
                Engine="postgres",
                EngineVersion="16.3",
                DBInstanceClass="db.r6g.large",
                AllocatedStorage=100,
                MasterUsername="revenue",
                MasterUserPassword="sandbox-password",
                MultiAZ=multi_az,
                AvailabilityZone=primary,
            )
            sim = DbInstanceSim(multi_az=multi_az, primary_az=primary, standby_az=standby)
            self._state.seed_instance(identifier, sim)
            backend = rds_backends[DEFAULT_ACCOUNT_ID][REGION]
            self.patch.adopt(backend.describe_db_instances(identifier)[0])


def _ensure_free(host: str, port: int) -> None:
    """ThreadedMotoServer.start() waits forever if its thread cannot bind: check first."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
