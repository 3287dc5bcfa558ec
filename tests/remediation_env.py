"""A time-skipping test server for one test module (issue-5 workflow tests).

The session's shared server skips time only while no workflow task is outstanding; runs that
other tests left waiting (their workers gone) can hold it, so a test that skips hours or
days would hang. A module of its own starts in about 0.2 s."""

from collections.abc import AsyncIterator

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from tests.temporal_env import venv_binary
from workflows import search_attributes


async def private_ts_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter,
        test_server_existing_path=venv_binary("temporal-test-server"),
    )
    await env.client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=env.client.namespace,
            search_attributes={
                key.name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD
                for key in search_attributes.ALL
            },
        )
    )
    yield env
    await env.shutdown()
