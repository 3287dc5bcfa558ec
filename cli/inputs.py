"""A procedure's input from `runbook start` flags and `--set KEY=VALUE` pairs, and the help
that lists every procedure's keys with their bounds (read from the pydantic models)."""

import json
import types
import typing
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from client.errors import BadInput
from workflows.models import RunbookInput
from workflows.registry import PROCEDURES

# Fields `runbook start` sets from its own flags (trigger is always "cli").
FLAGS = {
    "severity": "--severity",
    "dry_run": "--dry-run",
    "requested_by": "--requested-by",
    "environment": "--env",
}
BY_CLI = {*FLAGS, "trigger"}


def _members(annotation: Any) -> tuple[Any, ...]:
    """The types of `X | None` or `Union[...]`; the annotation itself otherwise."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return tuple(a for a in typing.get_args(annotation) if a is not type(None))
    return (annotation,)


def is_list(field: FieldInfo) -> bool:
    return any(typing.get_origin(a) is list for a in _members(field.annotation))


def settable(model: type[RunbookInput]) -> dict[str, FieldInfo]:
    """The fields `--set` may give: not the flags', nor a nested model (state the workflow
    carries over itself, e.g. llm-budget's spend watch)."""
    return {
        name: field
        for name, field in model.model_fields.items()
        if name not in BY_CLI
        and not any(
            isinstance(a, type) and issubclass(a, BaseModel) for a in _members(field.annotation)
        )
    }


def _value(field: FieldInfo, text: str) -> Any:
    """A list field takes a comma list (`api,context-engine`) or a JSON list."""
    if not is_list(field):
        return text
    if text.lstrip().startswith("["):
        try:
            given = json.loads(text)
        except ValueError:
            given = None
        if isinstance(given, list):
            return given
    return [item.strip() for item in text.split(",") if item.strip()]


def input_values(model: type[RunbookInput], pairs: dict[str, str]) -> dict[str, Any]:
    """`--set` pairs as the model's values; an unknown or flag-owned key is refused."""
    fields = settable(model)
    for key in pairs:
        if key in FLAGS:
            raise BadInput(f"--set {key}: give it as {FLAGS[key]}")
    unknown = sorted(set(pairs) - set(fields))
    if unknown:
        raise BadInput(
            f"--set {', '.join(unknown)}: unknown here; allowed: {', '.join(sorted(fields))} "
            "(runbook start --help lists each with its bounds)"
        )
    return {key: _value(fields[key], text) for key, text in pairs.items()}


# ---- help -------------------------------------------------------------------------------------

# annotated_types' constraint classes (what pydantic's Field(ge=..., max_length=...) makes).
CONSTRAINTS = {
    "Ge": "ge",
    "Gt": "gt",
    "Le": "le",
    "Lt": "lt",
    "MinLen": "min_length",
    "MaxLen": "max_length",
}
KINDS = {bool: "true or false", int: "integer", float: "number", str: "text"}


def _kind(field: FieldInfo) -> str:
    names = []
    for member in _members(field.annotation):
        if typing.get_origin(member) is list:
            names.append("comma list")
        elif typing.get_origin(member) is typing.Literal:
            names.append("one of " + ", ".join(map(str, typing.get_args(member))))
        else:
            names.append(KINDS.get(member, getattr(member, "__name__", str(member))))
    return " or ".join(names)


def _bounds(field: FieldInfo) -> str:
    """The model's constraints in words: `1 to 600`, `> 0, <= 60`, `1 to 63 characters`."""
    rules = {
        kind: getattr(rule, attribute)
        for rule in field.metadata
        if (kind := type(rule).__name__) in CONSTRAINTS and (attribute := CONSTRAINTS[kind])
    }
    numbers = []
    if "Ge" in rules and "Le" in rules:
        numbers.append(f"{rules['Ge']} to {rules['Le']}")
    else:
        marks = {"Gt": ">", "Ge": ">=", "Lt": "<", "Le": "<="}
        numbers += [f"{mark} {rules[name]}" for name, mark in marks.items() if name in rules]
    unit = "items" if is_list(field) else "characters"
    low, high = rules.get("MinLen"), rules.get("MaxLen")
    if low and high:
        numbers.append(f"{low} to {high} {unit}")
    elif high:
        numbers.append(f"at most {high} {unit}")
    elif low:
        numbers.append("not empty" if low == 1 else f"at least {low} {unit}")
    return ", ".join(numbers)


def _default(field: FieldInfo) -> str:
    value = field.get_default(call_default_factory=True)
    if value is None or value == []:
        return "none"
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def describe(name: str, field: FieldInfo) -> str:
    bounds = _bounds(field)
    return f"{name:<26} {_kind(field)}{f' ({bounds})' if bounds else ''}; default {_default(field)}"


def set_keys_help() -> str:
    """Every procedure's `--set` keys, for `runbook start --help`."""
    lines = [
        "--set KEY=VALUE keys, by procedure (a list takes a comma list, e.g.",
        "--set services=api,context-engine; severity, dry run and requester are flags):",
    ]
    for name in sorted(PROCEDURES):
        lines.append(f"  {name}")
        fields = settable(PROCEDURES[name].input_model)
        lines += [f"    {describe(key, field)}" for key, field in sorted(fields.items())]
    return "\n".join(lines)
