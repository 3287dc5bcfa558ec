"""The resource names: one place (settings.py), the procedures' input defaults."""

import argparse
from collections.abc import Iterator

import pytest

from cli.runs import build_input
from settings import Settings, get_settings
from workflows.registry import PROCEDURES


@pytest.fixture
def fresh_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """Settings read again from this test's environment, without an environments file."""
    monkeypatch.delenv("RUNBOOK_ENVIRONMENTS", raising=False)
    monkeypatch.delenv("RUNBOOK_ENV", raising=False)
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()


def start_args(*sets: str) -> argparse.Namespace:
    return argparse.Namespace(
        set=list(sets), severity=None, dry_run=False, requested_by="alice", env=None
    )


def test_the_settings_defaults_are_the_input_models_own(
    fresh_settings: pytest.MonkeyPatch,
) -> None:
    """A start from the Temporal UI with `{}` takes the models' defaults: the same names."""
    profile = Settings.model_construct().profile()
    for procedure in PROCEDURES.values():
        fields = procedure.input_model.model_fields
        defaults = {k: v for k, v in profile.input_defaults(procedure.name).items() if k in fields}
        model = procedure.input_model()
        assert defaults == {k: getattr(model, k) for k in defaults}, procedure.name
        if procedure.resource_field != "environment":  # every resource is named in settings
            assert procedure.resource_field in defaults, procedure.name


def test_resource_names_from_the_environment_are_each_start_s_defaults(
    fresh_settings: pytest.MonkeyPatch,
) -> None:
    fresh_settings.setenv("RDS_INSTANCE_ID", "orders-db")
    fresh_settings.setenv("ECS_CLUSTER", "orders")
    fresh_settings.setenv("ECS_API_SERVICE", "orders-api")
    fresh_settings.setenv("KAFKA_CONSUMER_GROUP", "orders_group")
    db = build_input(PROCEDURES["db-failover"], start_args())
    memory = build_input(PROCEDURES["high-memory"], start_args())
    lag = build_input(PROCEDURES["kafka-lag"], start_args())
    assert PROCEDURES["db-failover"].workflow_id(db) == "db-failover/production/orders-db"
    assert (memory.cluster, memory.service) == ("orders", "orders-api")  # type: ignore[attr-defined]
    assert (lag.cluster, lag.service, lag.consumer_group) == (  # type: ignore[attr-defined]
        "orders",
        "context-engine",
        "orders_group",
    )
    given = build_input(PROCEDURES["db-failover"], start_args("db_instance_id=other-db"))
    assert given.db_instance_id == "other-db"  # type: ignore[attr-defined]  # --set wins
