"""What every `runbook` command shares: `--set` pairs, output, the client connection."""

import argparse
import asyncio
import json
from collections.abc import Callable, Coroutine
from typing import Any

from pydantic import ValidationError
from temporalio.client import Client

from client.errors import BadInput
from client.runs import connect


def parse_sets(pairs: list[str]) -> dict[str, str]:
    values: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise BadInput(f"--set {pair!r}: expected key=value")
        values[key.strip()] = value
    return values


def validation_message(err: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'input'}: {e['msg']}" for e in err.errors()
    )


def emit(args: argparse.Namespace, data: dict[str, Any], text: str) -> None:
    print(json.dumps(data, default=str) if getattr(args, "json", False) else text)


def with_client(
    fn: Callable[[Client, argparse.Namespace], Coroutine[Any, Any, int]],
    validate: Callable[[argparse.Namespace], object] | None = None,
) -> Callable[[argparse.Namespace], int]:
    """Bad input is refused before anything is contacted."""

    def run(args: argparse.Namespace) -> int:
        if validate:
            validate(args)

        async def go() -> int:
            return await fn(await connect(), args)

        return asyncio.run(go())

    return run
