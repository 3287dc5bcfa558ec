"""CloudWatch metric statistics (RDS connections and CPU, ContainerInsights memory)."""

from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, Field
from temporalio import activity


class MetricRequest(BaseModel):
    namespace: str = "AWS/RDS"
    metric_name: str
    dimensions: dict[str, str]
    minutes: int = Field(10, ge=1, le=1440)
    period_seconds: int = Field(300, ge=60)
    statistics: list[str] = ["Average"]


class Datapoint(BaseModel):
    timestamp: datetime
    values: dict[str, float]


class MetricSummary(BaseModel):
    metric_name: str
    datapoints: list[Datapoint]
    # The newest datapoint's value for each statistic, None when there is no data.
    latest: dict[str, float]
    peak: dict[str, float]


class CloudWatchActivities:
    def __init__(self, cloudwatch_client: Any) -> None:
        self._cw = cloudwatch_client

    @activity.defn(name="cloudwatch.metric_statistics")
    def metric_statistics(self, req: MetricRequest) -> MetricSummary:
        end = datetime.now(UTC)
        raw = self._cw.get_metric_statistics(
            Namespace=req.namespace,
            MetricName=req.metric_name,
            Dimensions=[{"Name": k, "Value": v} for k, v in req.dimensions.items()],
            StartTime=end - timedelta(minutes=req.minutes),
            EndTime=end,
            Period=req.period_seconds,
            Statistics=req.statistics,
        )
        points = sorted(
            (
                Datapoint(
                    timestamp=p["Timestamp"],
                    values={s: float(p[s]) for s in req.statistics if s in p},
                )
                for p in raw.get("Datapoints", [])
            ),
            key=lambda d: d.timestamp,
        )
        latest = points[-1].values if points else {}
        peak = {s: max(p.values.get(s, 0.0) for p in points) for s in req.statistics if points}
        return MetricSummary(
            metric_name=req.metric_name, datapoints=points, latest=latest, peak=peak
        )
