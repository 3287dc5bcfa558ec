"""Kafka: a consumer group's lag (committed offsets against high watermarks) and a peek at
the dead-letter queue that neither commits nor joins the service's group."""

import logging
import time
from collections import Counter
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    TopicPartition,
)
from pydantic import BaseModel, Field
from temporalio import activity
from temporalio.exceptions import ApplicationError

if TYPE_CHECKING:
    from confluent_kafka.admin import AdminClient, OffsetSpec

CONSUMER_GROUP = "context_engine_group"
DLQ_TOPIC = "signals.raw.dlq"
NO_OFFSET = -1001  # librdkafka's OFFSET_INVALID: the group never committed on this partition
REASON_HEADERS = ("reason", "error", "exception")  # in order of preference
log = logging.getLogger("runbook.kafka")


class LagRequest(BaseModel):
    group: str = Field(CONSUMER_GROUP, min_length=1)
    # Empty: every topic the group has committed offsets on.
    topics: list[str] = []
    # Two measurements this far apart give the produce, consume and drain rates; 0: one.
    sample_seconds: float = Field(5.0, ge=0, le=120)
    timeout_seconds: float = Field(10.0, gt=0, le=60)


class PartitionLag(BaseModel):
    topic: str
    partition: int
    committed: int | None
    high_watermark: int
    lag: int


class LagSample(BaseModel):
    at: datetime
    partitions: list[PartitionLag]

    @property
    def total(self) -> int:
        return sum(p.lag for p in self.partitions)


class LagResult(BaseModel):
    group: str
    partitions: list[PartitionLag]
    total_lag: int
    by_topic: dict[str, int]
    sampled_seconds: float = 0.0
    # Messages a second, between the two samples (None with one sample).
    produce_rate: float | None = None
    consume_rate: float | None = None
    # Negative: the lag is shrinking.
    lag_rate: float | None = None


class DlqPeekRequest(BaseModel):
    topic: str = Field(DLQ_TOPIC, min_length=1)
    max_messages: int = Field(10, ge=1, le=100)
    payload_chars: int = Field(200, ge=0, le=2000)
    timeout_seconds: float = Field(10.0, gt=0, le=60)


class DlqMessage(BaseModel):
    partition: int
    offset: int
    timestamp: datetime | None
    key: str | None
    headers: dict[str, str]
    error_reason: str | None
    payload: str  # truncated to payload_chars
    payload_bytes: int


class DlqPeekResult(BaseModel):
    topic: str
    exists: bool
    # Messages in the topic (high minus low watermarks over all partitions).
    total_messages: int
    messages: list[DlqMessage]
    reasons: dict[str, int]


def _text(raw: bytes | str | None, limit: int | None = None) -> str | None:
    if raw is None:
        return None
    text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
    return text if limit is None or len(text) <= limit else text[:limit] + "…"


def error_reason(headers: dict[str, str]) -> str | None:
    for word in REASON_HEADERS:
        for name, value in headers.items():
            if word in name.lower():
                return value
    return None


class KafkaActivities:
    def __init__(self, bootstrap_servers: str) -> None:
        self._bootstrap = bootstrap_servers
        self._admin: AdminClient | None = None

    def _config(self) -> dict[str, Any]:
        return {"bootstrap.servers": self._bootstrap, "logger": log}

    def admin(self) -> "AdminClient":
        from confluent_kafka.admin import AdminClient

        if self._admin is None:
            self._admin = AdminClient(self._config())
        return self._admin

    # ---- lag ------------------------------------------------------------------------------

    def _committed(self, req: LagRequest) -> dict[TopicPartition, int | None]:
        admin = self.admin()
        partitions = None
        if req.topics:
            partitions = [
                TopicPartition(topic, p)
                for topic in req.topics
                for p in self._partitions(topic, req)
            ]
        query = ConsumerGroupTopicPartitions(req.group, partitions)
        futures = admin.list_consumer_group_offsets([query], request_timeout=req.timeout_seconds)
        result = futures[req.group].result(timeout=req.timeout_seconds)
        return {
            TopicPartition(tp.topic, tp.partition): (None if tp.offset < 0 else tp.offset)
            for tp in result.topic_partitions or []
        }

    def _partitions(self, topic: str, req: LagRequest) -> list[int]:
        meta = self.admin().list_topics(topic, timeout=req.timeout_seconds).topics.get(topic)
        if meta is None or meta.error is not None:
            raise ApplicationError(
                f"topics: no Kafka topic named {topic!r}", type="UnknownTopic", non_retryable=True
            )
        return sorted(meta.partitions)

    def _offsets(
        self, tps: list[TopicPartition], spec: "OffsetSpec", timeout: float
    ) -> dict[TopicPartition, int]:
        if not tps:
            return {}
        futures = self.admin().list_offsets({tp: spec for tp in tps}, request_timeout=timeout)
        return {
            TopicPartition(tp.topic, tp.partition): f.result(timeout=timeout).offset
            for tp, f in futures.items()
        }

    def sample_lag(self, req: LagRequest) -> LagSample:
        from confluent_kafka.admin import OffsetSpec

        committed = self._committed(req)
        tps = sorted(committed, key=lambda tp: (tp.topic, tp.partition))
        high = self._offsets(tps, OffsetSpec.latest(), req.timeout_seconds)
        low = self._offsets(tps, OffsetSpec.earliest(), req.timeout_seconds)
        partitions = []
        for tp in tps:
            done = committed[tp]
            # Never committed: a consumer starting from the earliest offset has all of it left.
            lag = high[tp] - (low[tp] if done is None else done)
            partitions.append(
                PartitionLag(
                    topic=tp.topic,
                    partition=tp.partition,
                    committed=done,
                    high_watermark=high[tp],
                    lag=max(lag, 0),
                )
            )
        return LagSample(at=datetime.now(UTC), partitions=partitions)

    @activity.defn(name="kafka.consumer_lag")
    def consumer_lag(self, req: LagRequest) -> LagResult:
        """The group's lag per partition and in total; with `sample_seconds`, measured twice
        to give the rates at which messages arrive and are consumed."""
        try:
            first = self.sample_lag(req)
            if req.sample_seconds <= 0:
                return _lag_result(req.group, first, None)
            activity.heartbeat({"total_lag": first.total})
            activity.wait_for_cancelled_sync(req.sample_seconds)
            return _lag_result(req.group, self.sample_lag(req), first)
        except KafkaException as err:
            raise ApplicationError(f"Kafka: {err.args[0]}", type="KafkaError") from None
        except TimeoutError:
            raise ApplicationError(
                f"Kafka: no answer from {self._bootstrap} within {req.timeout_seconds:g}s",
                type="KafkaError",
            ) from None

    # ---- dead-letter queue ----------------------------------------------------------------

    @activity.defn(name="kafka.peek_dlq")
    def peek_dlq(self, req: DlqPeekRequest) -> DlqPeekResult:
        """The first messages of the topic from the beginning: assigned partitions (no group
        join), auto-commit off and nothing committed, so nobody's position moves."""
        consumer = Consumer(
            {
                **self._config(),
                "group.id": "runbook-dlq-peek",  # required by the client; never joined
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
            }
        )
        try:
            return self._peek(consumer, req)
        except KafkaException as err:
            raise ApplicationError(f"Kafka: {err.args[0]}", type="KafkaError") from None
        finally:
            consumer.close()

    def _peek(self, consumer: Consumer, req: DlqPeekRequest) -> DlqPeekResult:
        meta = consumer.list_topics(req.topic, timeout=req.timeout_seconds).topics.get(req.topic)
        if meta is None or meta.error is not None:
            return DlqPeekResult(
                topic=req.topic, exists=False, total_messages=0, messages=[], reasons={}
            )
        ends: dict[int, int] = {}
        total = 0
        for p in sorted(meta.partitions):
            low, high = consumer.get_watermark_offsets(
                TopicPartition(req.topic, p), timeout=req.timeout_seconds
            )
            total += high - low
            if high > low:
                ends[p] = high
        consumer.assign([TopicPartition(req.topic, p, OFFSET_BEGINNING) for p in ends])
        messages = self._read(consumer, req, ends)
        reasons = Counter(m.error_reason or "unknown" for m in messages)
        return DlqPeekResult(
            topic=req.topic,
            exists=True,
            total_messages=total,
            messages=messages,
            reasons=dict(reasons.most_common()),
        )

    def _read(
        self, consumer: Consumer, req: DlqPeekRequest, ends: dict[int, int]
    ) -> list[DlqMessage]:
        messages: list[DlqMessage] = []
        deadline = time.monotonic() + req.timeout_seconds
        wanted = min(req.max_messages, sum(ends.values()))
        while len(messages) < wanted and ends and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            error, partition, offset = msg.error(), msg.partition() or 0, msg.offset() or 0
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    ends.pop(partition, None)
                    continue
                raise KafkaException(error)
            messages.append(_dlq_message(msg, req.payload_chars))
            if offset + 1 >= ends.get(partition, 0):
                ends.pop(partition, None)
        return messages


def _dlq_message(msg: object, payload_chars: int) -> DlqMessage:
    headers = {name: _text(value) or "" for name, value in (msg.headers() or [])}  # type: ignore[attr-defined]
    kind, stamp = msg.timestamp()  # type: ignore[attr-defined]
    value = msg.value() or b""  # type: ignore[attr-defined]
    return DlqMessage(
        partition=msg.partition(),  # type: ignore[attr-defined]
        offset=msg.offset(),  # type: ignore[attr-defined]
        timestamp=datetime.fromtimestamp(stamp / 1000, UTC) if kind and stamp > 0 else None,
        key=_text(msg.key(), 200),  # type: ignore[attr-defined]
        headers={k: _text(v, 200) or "" for k, v in headers.items()},
        error_reason=error_reason(headers),
        payload=_text(value, payload_chars) or "",
        payload_bytes=len(value),
    )


def _lag_result(group: str, last: LagSample, first: LagSample | None) -> LagResult:
    by_topic: dict[str, int] = {}
    for p in last.partitions:
        by_topic[p.topic] = by_topic.get(p.topic, 0) + p.lag
    result = LagResult(
        group=group, partitions=last.partitions, total_lag=last.total, by_topic=by_topic
    )
    if first is None:
        return result
    seconds = max((last.at - first.at).total_seconds(), 1e-3)
    before = {(p.topic, p.partition): p for p in first.partitions}
    produced = consumed = 0
    for p in last.partitions:
        old = before.get((p.topic, p.partition))
        if old is None:
            continue
        produced += p.high_watermark - old.high_watermark
        consumed += (p.committed or 0) - (old.committed or 0)
    result.sampled_seconds = round(seconds, 2)
    result.produce_rate = round(produced / seconds, 2)
    result.consume_rate = round(consumed / seconds, 2)
    result.lag_rate = round((last.total - first.total) / seconds, 2)
    return result
