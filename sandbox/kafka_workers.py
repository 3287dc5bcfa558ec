"""The context-engine's Kafka side, for real: a producer adds signals to `signals.raw`, and
as many consumers as ECS runs `context-engine` tasks drain it in `context_engine_group`, each
at a bounded rate. A scale-up really drains the lag; `/health/workers` goes 503 when the
workers fall behind."""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaException,
    Producer,
)
from confluent_kafka import TopicPartition as TP
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec

TOPIC = "signals.raw"
DLQ_TOPIC = "signals.raw.dlq"
GROUP = "context_engine_group"
PARTITIONS = 6
TICK = 0.1
log = logging.getLogger("sandbox.kafka")
DLQ_REASONS = (
    ("SchemaValidationError", "field 'account_id' is required"),
    ("EnrichmentTimeout", "statement timeout after 5000 ms enriching signal"),
    ("SchemaValidationError", "field 'occurred_at' is not an ISO-8601 timestamp"),
)


@dataclass
class Rates:
    produce_per_second: float = 20.0
    per_worker_per_second: float = 15.0
    # Lag above this, or no commit for `stale_seconds` with lag, makes /health/workers 503.
    lag_threshold: int = 500
    stale_seconds: float = 10.0


def signal_payload(index: int) -> bytes:
    return json.dumps(
        {
            "signal_id": str(uuid.uuid4()),
            "account_id": f"acct-{index % 97:04d}",
            "type": "email_opened" if index % 3 else "meeting_booked",
            "occurred_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "properties": {"campaign": f"q4-{index % 7}", "score": index % 100},
        }
    ).encode()


class Worker(threading.Thread):
    """One context-engine task's consumer: reads its partitions from the group's committed
    offsets, consumes at most `rate()` a second, commits after every batch."""

    def __init__(
        self,
        servers: str,
        partitions: list[int],
        rate: Callable[[], float],
        on_commit: Callable[[], None],
        behind_since: Callable[[float], bool] = lambda _: True,
    ) -> None:
        super().__init__(name="kafka-worker", daemon=True)
        self._servers = servers
        self.partitions = partitions
        self._rate_of = rate
        self._on_commit = on_commit
        # Is the group behind, by a lag measured after this time.monotonic()?
        self._behind_since = behind_since
        self.stopping = threading.Event()

    def run(self) -> None:
        consumer = Consumer(
            {
                "bootstrap.servers": self._servers,
                "group.id": GROUP,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "logger": log,
            }
        )
        try:
            committed = consumer.committed([TP(TOPIC, p) for p in self.partitions], timeout=10)
            consumer.assign(
                [
                    TP(TOPIC, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_BEGINNING)
                    for tp in committed
                ]
            )
            self._consume(consumer)
        except KafkaException as err:
            log.warning("worker stopped: %s", err)
        finally:
            consumer.close()

    def _consume(self, consumer: Consumer) -> None:
        """The broker answers a fetch at once when there is nothing new (noida-db does not
        wait `fetch.wait.max.ms`), so a consumer that has read everything would fetch in a
        loop: librdkafka and the broker burned about a core between them on an idle stack.
        A worker that has caught up pauses its partitions until the group's lag, measured
        after the pause, says there is something to read again."""
        credit = 0.0
        assignment = consumer.assignment()
        paused_at: float | None = None
        while not self.stopping.is_set():
            started = time.monotonic()
            credit = min(credit + self._rate_of() * TICK, 1000.0)
            if paused_at is not None and self._behind_since(paused_at):
                consumer.resume(assignment)
                paused_at = None
            if credit >= 1 and paused_at is None:
                batch = consumer.consume(num_messages=int(credit), timeout=TICK / 2)
                batch = [m for m in batch if not m.error()]
                credit -= len(batch)
                if batch:
                    consumer.commit(asynchronous=False)
                    self._on_commit()
                elif caught_up(consumer, assignment):
                    consumer.pause(assignment)
                    paused_at = time.monotonic()
            time.sleep(max(TICK - (time.monotonic() - started), 0))


def caught_up(consumer: Consumer, assignment: list[TP]) -> bool:
    """Has the consumer read up to the high watermark on every partition (asked of the
    broker: the last fetch's may be older than a resume)? Unknown positions count as not."""
    for tp in consumer.position(assignment):
        try:
            _, high = consumer.get_watermark_offsets(tp, timeout=1, cached=False)
        except KafkaException:
            return False
        if tp.offset < 0 or tp.offset < high:
            return False
    return True


class KafkaWorkers:
    def __init__(self, bootstrap: str, desired_workers: Callable[[], int]) -> None:
        self._bootstrap = bootstrap
        self._desired = desired_workers
        self.rates = Rates()
        self.default_rates = Rates()
        self._lock = threading.Lock()
        # Held while the workers change: a reset and the supervisor never overlap.
        self._membership = threading.Lock()
        self._workers: list[Worker] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._produce_loop, name="kafka-producer", daemon=True),
            threading.Thread(target=self._supervise_loop, name="kafka-supervisor", daemon=True),
        ]
        self._producer: Producer | None = None
        self._admin: AdminClient | None = None
        self._produced = 0
        self.last_commit = time.monotonic()
        self.lag = 0
        self.lag_measured_at = 0.0

    # ---- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        conf: dict[str, Any] = {"bootstrap.servers": self._bootstrap, "logger": log}
        self._admin = AdminClient(conf)
        self._producer = Producer({**conf, "linger.ms": 5})
        self._create_topics()
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            workers, self._workers = self._workers, []
        for worker in workers:
            worker.stopping.set()
        for thread in [*self._threads, *workers]:
            if thread.is_alive():
                thread.join(timeout=10)
        if self._producer is not None:
            self._producer.flush(5)

    def reset(self) -> None:
        """Normal rates, and the group caught up (its offsets moved to the end)."""
        self.rates = Rates(**vars(self.default_rates))
        self.skip_to_end()

    def _create_topics(self) -> None:
        assert self._admin is not None
        topics = [NewTopic(TOPIC, PARTITIONS, 1), NewTopic(DLQ_TOPIC, 1, 1)]
        for topic, future in self._admin.create_topics(topics, request_timeout=10).items():
            try:
                future.result(timeout=15)
            except KafkaException as err:
                if "already exists" not in str(err).lower() and "TOPIC_ALREADY" not in str(err):
                    raise
                log.debug("topic %s exists", topic)

    # ---- what incidents use -----------------------------------------------------------

    def produce(self, count: int) -> None:
        """A burst: `count` signals at once."""
        assert self._producer is not None
        for index in range(count):
            self._producer.produce(TOPIC, key=f"acct-{index % 97:04d}", value=signal_payload(index))
            if index % 1000 == 999:
                self._producer.poll(0)
        self._producer.flush(10)
        self._produced += count

    def produce_dlq(self, count: int) -> None:
        assert self._producer is not None
        for index in range(count):
            kind, reason = DLQ_REASONS[index % len(DLQ_REASONS)]
            payload = signal_payload(index) + b" " * 400  # payloads are large: peeks truncate
            self._producer.produce(
                DLQ_TOPIC,
                key=f"acct-{index % 97:04d}",
                value=payload,
                headers=[
                    ("x-error-class", kind.encode()),
                    ("x-error-reason", f"{kind}: {reason}".encode()),
                    ("x-original-topic", TOPIC.encode()),
                    ("x-retry-count", b"3"),
                ],
            )
        self._producer.flush(10)

    def skip_to_end(self) -> None:
        """Commit the group's offsets at the high watermarks, with the workers stopped for
        the moment (the supervisor starts them again)."""
        with self._membership:
            self._commit_ends()
        self.last_commit = time.monotonic()
        self.lag = 0

    def _commit_ends(self) -> None:
        with self._lock:
            workers, self._workers = self._workers, []
        self._stop_workers(workers)
        consumer = Consumer(
            {"bootstrap.servers": self._bootstrap, "group.id": GROUP, "logger": log}
        )
        try:
            meta = consumer.list_topics(TOPIC, timeout=10).topics[TOPIC]
            ends = [
                TP(TOPIC, p, consumer.get_watermark_offsets(TP(TOPIC, p), timeout=10)[1])
                for p in meta.partitions
            ]
            consumer.commit(offsets=ends, asynchronous=False)  # the group has no member now
        finally:
            consumer.close()

    def snapshot(self) -> dict[str, object]:
        with self._lock:
            workers = len(self._workers)
        stale = self.stale()
        return {
            "status": "stale" if stale else "healthy",
            "workers": workers,
            "consumer_group": GROUP,
            "lag": self.lag,
            "lag_threshold": self.rates.lag_threshold,
            "last_commit_age_seconds": round(time.monotonic() - self.last_commit, 1),
            "produce_per_second": self.rates.produce_per_second,
            "per_worker_per_second": self.rates.per_worker_per_second,
        }

    def stale(self) -> bool:
        if self.lag > self.rates.lag_threshold:
            return True
        quiet = time.monotonic() - self.last_commit > self.rates.stale_seconds
        return self.lag > 0 and quiet

    # ---- threads ----------------------------------------------------------------------

    def _produce_loop(self) -> None:
        assert self._producer is not None
        credit = 0.0
        index = 0
        while not self._stop.wait(TICK):
            credit += self.rates.produce_per_second * TICK
            while credit >= 1:
                self._producer.produce(
                    TOPIC, key=f"acct-{index % 97:04d}", value=signal_payload(index)
                )
                index += 1
                credit -= 1
            self._producer.poll(0)

    def _supervise_loop(self) -> None:
        next_lag = 0.0
        while not self._stop.wait(0.25):
            self._follow_ecs()
            if time.monotonic() >= next_lag:
                next_lag = time.monotonic() + 1.0
                self._measure_lag()

    def _follow_ecs(self) -> None:
        """As many workers as running tasks; a change reassigns the partitions round-robin
        (a rebalance: everyone stops, then resumes from the committed offsets)."""
        want = max(self._desired(), 0)
        with self._membership:
            self._rebalance(want)

    def _rebalance(self, want: int) -> None:
        with self._lock:
            alive = all(w.is_alive() for w in self._workers)
            if len(self._workers) == want and alive:
                return
            old, self._workers = self._workers, []
        self._stop_workers(old)
        workers = [
            Worker(
                self._bootstrap,
                list(range(i, PARTITIONS, want)),
                self._worker_rate,
                self._committed,
                self._behind_since,
            )
            for i in range(want)
        ]
        for worker in workers:
            worker.start()
        with self._lock:
            self._workers = workers

    @staticmethod
    def _stop_workers(workers: list[Worker]) -> None:
        for worker in workers:
            worker.stopping.set()
        for worker in workers:
            worker.join(timeout=10)

    def _worker_rate(self) -> float:
        return self.rates.per_worker_per_second

    def _committed(self) -> None:
        self.last_commit = time.monotonic()

    def _behind_since(self, since: float) -> bool:
        return self.lag > 0 and self.lag_measured_at > since

    def _measure_lag(self) -> None:
        assert self._admin is not None
        try:
            futures = self._admin.list_consumer_group_offsets(
                [ConsumerGroupTopicPartitions(GROUP)], request_timeout=5
            )
            committed = futures[GROUP].result(timeout=5).topic_partitions or []
            done = {tp.partition: tp.offset for tp in committed if tp.topic == TOPIC}
            tps = [TP(TOPIC, p) for p in range(PARTITIONS)]
            ends = self._admin.list_offsets(
                {tp: OffsetSpec.latest() for tp in tps}, request_timeout=5
            )
            lag = 0
            for tp, future in ends.items():
                high = future.result(timeout=5).offset
                lag += max(high - max(done.get(tp.partition, 0), 0), 0)
        except KafkaException as err:
            log.warning("lag not measured: %s", err)
            return
        self.lag, self.lag_measured_at = lag, time.monotonic()
