"""The simulated systems the incidents act on, held together so each incident reaches them.

Built by the simulator; what needs moto (aws, logs, feed) or Kafka (kafka) is None until the
simulator starts with it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sandbox.aws import AwsSandbox
from sandbox.deployments import DeploymentWatch
from sandbox.kafka_workers import KafkaWorkers
from sandbox.logs import LogFeed
from sandbox.metric_feed import MinuteFeed
from sandbox.metrics import ServiceMetrics
from sandbox.state import SandboxState

RUNNING_WITHOUT_ECS = 2  # tasks a service runs when ECS is not simulated


@dataclass
class Systems:
    state: SandboxState
    deployments: DeploymentWatch
    metrics: ServiceMetrics = field(init=False)  # replaced by every reset
    aws: AwsSandbox | None = None
    logs: LogFeed | None = None
    kafka: KafkaWorkers | None = None
    feed: MinuteFeed | None = None  # CloudWatch: LLM calls, memory per service

    def running(self, service: str) -> int:
        """Running tasks of an ECS service."""
        return self.aws.ecs.running(service) if self.aws is not None else RUNNING_WITHOUT_ECS

    def backfill_logs(self, incident: str) -> None:
        if self.logs is not None:
            self.logs.backfill(incident)

    def rewrite(self, metric: str, minutes: int = 60) -> None:
        """The feed's last minutes of `metric` at today's level, so a query sees it at once."""
        if self.feed is not None:
            self.feed.rewrite(minutes, metric=metric)
