"""Redis `INFO stats`: hit rate, rejected connections, operations a second.

(Named redis_info, not redis, so it never shadows the library.)"""

from typing import Any

from pydantic import BaseModel, Field
from temporalio import activity
from temporalio.exceptions import ApplicationError


class RedisStatsRequest(BaseModel):
    timeout_seconds: float = Field(3.0, gt=0, le=30)


class RedisStats(BaseModel):
    keyspace_hits: int
    keyspace_misses: int
    # hits / (hits + misses); None before the first lookup.
    hit_rate: float | None
    rejected_connections: int
    ops_per_sec: int
    connected_clients: int | None = None
    evicted_keys: int = 0
    expired_keys: int = 0
    total_commands_processed: int = 0


def stats_from_info(stats: dict[str, Any], clients: dict[str, Any]) -> RedisStats:
    hits = int(stats.get("keyspace_hits", 0))
    misses = int(stats.get("keyspace_misses", 0))
    return RedisStats(
        keyspace_hits=hits,
        keyspace_misses=misses,
        hit_rate=round(hits / (hits + misses), 4) if hits + misses else None,
        rejected_connections=int(stats.get("rejected_connections", 0)),
        ops_per_sec=int(stats.get("instantaneous_ops_per_sec", 0)),
        connected_clients=clients.get("connected_clients"),
        evicted_keys=int(stats.get("evicted_keys", 0)),
        expired_keys=int(stats.get("expired_keys", 0)),
        total_commands_processed=int(stats.get("total_commands_processed", 0)),
    )


class RedisActivities:
    def __init__(self, redis_url: str) -> None:
        # Never log or return this URL: it may carry a password.
        self._url = redis_url

    @activity.defn(name="redis.info_stats")
    def info_stats(self, req: RedisStatsRequest) -> RedisStats:
        import redis

        client = redis.Redis.from_url(
            self._url,
            socket_timeout=req.timeout_seconds,
            socket_connect_timeout=req.timeout_seconds,
        )
        try:
            return stats_from_info(client.info("stats"), client.info("clients"))
        except redis.RedisError as err:
            # The error names host and port at most, never the URL's password.
            raise ApplicationError(
                f"Redis: {type(err).__name__}: {err}", type="RedisError"
            ) from None
        finally:
            client.close()
