"""Environments: profiles from the environments file, and alarms routed by the account and
region they fired in (an unknown one is refused, nothing started)."""

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from activities.alarms import AlarmStarter
from intake import payloads
from intake.alarms import Alarm, Intake, Rejected
from intake.routes import DEFAULT_ROUTES
from sandbox.sns_signer import cloudwatch_alarm
from settings import PROJECT_DIR, Settings, UnknownEnvironment, load_profiles

EXAMPLE = PROJECT_DIR / "deploy" / "environments.toml"


@pytest.fixture
def intake() -> Intake:
    # plan() never calls the starter: everything is checked before anything is started.
    return Intake(AlarmStarter(None), DEFAULT_ROUTES, load_profiles(EXAMPLE))  # type: ignore[arg-type]


def db_alarm(account: str, region: str, **dims: str) -> Alarm:
    message = cloudwatch_alarm("db-cpu-high", dimensions=dims)
    message["AlarmArn"] = f"arn:aws:cloudwatch:{region}:{account}:alarm:db-cpu-high"
    alarm = payloads.cloudwatch_alarm(json.dumps(message))
    assert alarm is not None
    return alarm


def test_the_shipped_example_has_staging_and_production() -> None:
    profiles = load_profiles(EXAMPLE)
    assert list(profiles) == ["production", "staging"]
    staging = profiles["staging"]
    assert staging.task_queue == "runbooks-staging" and staging.aws_region == "eu-west-1"
    assert staging.input_defaults("kafka-lag")["log_group"] == "/ecs/staging/context-engine"
    assert "log_group" not in staging.input_defaults("db-failover")


def test_an_alarm_goes_to_the_environment_of_its_account_and_region(intake: Intake) -> None:
    planned = intake.plan(db_alarm("222222222222", "eu-west-1"))
    assert (planned.environment, planned.task_queue) == ("staging", "runbooks-staging")
    assert planned.workflow_id == "db-failover/staging/staging-revenue-context-db"
    assert planned.input["db_instance_id"] == "staging-revenue-context-db"
    assert planned.input["environment"] == "staging"

    named = intake.plan(db_alarm("111111111111", "us-east-1", DBInstanceIdentifier="prod-db-2"))
    assert named.workflow_id == "db-failover/production/prod-db-2"
    assert named.task_queue == "runbooks-production"


def test_an_alarm_from_an_unknown_account_or_region_is_refused(intake: Intake) -> None:
    for account, region in (("333333333333", "us-east-1"), ("222222222222", "us-east-1")):
        with pytest.raises(Rejected) as refused:
            intake.plan(db_alarm(account, region))
        assert refused.value.status == 422
        assert f"account {account}, region {region} is no known environment" in refused.value.reason
        assert "production (111111111111/us-east-1), staging (222222222222/eu-west-1)" in (
            refused.value.reason
        )


def test_an_alert_names_its_environment_or_is_refused_when_ambiguous(intake: Intake) -> None:
    labelled = Alarm(
        source="alertmanager",
        name="db-cpu-high",
        state="ALARM",
        since=datetime.now(UTC),
        environment="staging",
    )
    assert intake.plan(labelled).environment == "staging"
    unknown = labelled.model_copy(update={"environment": "qa"})
    with pytest.raises(Rejected, match="environment 'qa' is not known"):
        intake.plan(unknown)
    bare = labelled.model_copy(update={"environment": None})
    with pytest.raises(Rejected, match="matches several environments"):
        intake.plan(bare)


def test_a_bad_environments_file_names_the_section_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "environments.toml"
    bad.write_text('[production]\ntask_queue = "q"\naws_account_id = "12"\nregion = "x"\n')
    with pytest.raises(UnknownEnvironment) as err:
        load_profiles(bad)
    assert "[production]" in str(err.value)
    assert "aws_account_id: String should match pattern" in str(err.value)
    assert "region: Extra inputs are not permitted" in str(err.value)
    settings = Settings.model_validate({"RUNBOOK_ENVIRONMENTS": str(EXAMPLE)})
    with pytest.raises(UnknownEnvironment, match="'qa' is not known; known: production, staging"):
        settings.profile("qa")
    assert settings.profile().name == "production"
