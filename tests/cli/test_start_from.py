"""`runbook start --from TRIAGE`: what a triage's commands say (workflows/triage.py) is read
back exactly, and nothing else is taken for a command."""

import pytest

from cli.runs import parse_start


def test_a_triage_command_reads_back_as_procedure_sets_and_severity() -> None:
    command = "runbook start cert-renewal --set domain=api.example.com --severity P0"
    assert parse_start(command) == ("cert-renewal", ["domain=api.example.com"], "P0")
    assert parse_start("runbook start kafka-lag --severity P2") == ("kafka-lag", [], "P2")


@pytest.mark.parametrize(
    "command",
    ["runbook start rm-rf --severity P1", "rm -rf /", "runbook approve x --as bob", "runbook"],
)
def test_anything_else_is_no_command(command: str) -> None:
    assert parse_start(command) is None
