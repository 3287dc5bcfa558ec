"""What the workflow-logic tests share: the test roster (people, roles and keys)."""

from pathlib import Path

import pytest

from tests.fakes.approvers import write_roster


@pytest.fixture
def roster(tmp_path: Path) -> tuple[Path, Path]:
    return write_roster(tmp_path)
