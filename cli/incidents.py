"""`runbook incidents`, `runbook postmortem`, `runbook db migrate`: the incident log."""

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from statistics import median
from typing import Any

from activities import incidents
from client.errors import BadInput, Unreachable
from settings import get_settings


def database_url() -> str:
    url = get_settings().runbook_database_url
    if not url:
        raise Unreachable("RUNBOOK_DATABASE_URL is not set (runbook stack up sets it)")
    return url


def parse_since(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise BadInput(f"--since {text!r}: expected a date like 2026-11-26") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def minutes(start: datetime | None, end: datetime | None) -> float | None:
    return round((end - start).total_seconds() / 60, 1) if start and end else None


def kind_of(row: dict[str, Any]) -> str:
    """The run's kind (activities/incidents.py KINDS); a record made before kinds were kept
    is `approved` when someone approved it, else `unrecorded`."""
    return row.get("kind") or ("approved" if row["first_approval_at"] else "unrecorded")


def mitigated(row: dict[str, Any]) -> bool:
    """An acting run that verified its fix: approved, and completed."""
    return kind_of(row) == "approved" and row["outcome"] == "completed"


def per_procedure(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """MTTA (start to first approval, every approved run) and MTTR (start to mitigation, the
    mitigated runs only), medians in minutes; the other runs counted apart."""
    stats: dict[str, dict[str, Any]] = {}
    for name in sorted({r["procedure"] for r in rows}):
        mine = [r for r in rows if r["procedure"] == name]
        fixed = [r for r in mine if mitigated(r)]
        mtta = [m for r in mine if (m := minutes(r["started_at"], r["first_approval_at"]))]
        mttr = [m for r in fixed if (m := minutes(r["started_at"], r["mitigated_at"]))]
        kinds = [kind_of(r) for r in mine]
        stats[name] = {
            "incidents": len(mine),
            "mitigated": len(fixed),
            "approved_not_mitigated": kinds.count("approved") - len(fixed),
            "recommend_only": kinds.count("recommend_only"),
            "read_only": kinds.count("read_only"),
            "unrecorded": kinds.count("unrecorded"),
            "mtta_minutes": round(median(mtta), 1) if mtta else None,
            "mttr_minutes": round(median(mttr), 1) if mttr else None,
        }
    return stats


def sla_by_severity(rows: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Gates answered within their first level's time (met) or not (missed), by severity."""
    sla: dict[str, dict[str, int]] = {}
    for row in rows:
        for gate in row.get("gates") or []:
            counts = sla.setdefault(gate["severity"], {"met": 0, "missed": 0})
            counts["met" if gate["met"] else "missed"] += 1
    return dict(sorted(sla.items()))


def describe(name: str, s: dict[str, Any]) -> str:
    line = (
        f"{name}: {s['incidents']} runs; {s['mitigated']} mitigated "
        f"(MTTR {s['mttr_minutes']} min, MTTA {s['mtta_minutes']} min, medians)"
    )
    others = [
        (s["approved_not_mitigated"], "approved, not mitigated"),
        (s["recommend_only"], "recommend-only"),
        (s["read_only"], "read-only"),
        (s["unrecorded"], "recorded before kinds"),
    ]
    return line + "".join(f"; {count} {what}" for count, what in others if count)


def cmd_incidents(args: argparse.Namespace) -> int:
    rows = incidents.search(database_url(), parse_since(args.since), args.procedure)
    stats, sla = per_procedure(rows), sla_by_severity(rows)
    if args.json:
        listed = [{k: v for k, v in row.items() if k not in ("findings", "plan")} for row in rows]
        data = {"incidents": listed, "by_procedure": stats, "sla_by_severity": sla}
        print(json.dumps(data, default=str))
        return 0
    for row in rows:
        print(
            f"{row['started_at']:%Y-%m-%d %H:%M}  {row['incident_id'][:13]}  {row['severity']}  "
            f"{row['procedure']:<13} {row['outcome']:<12} {row['resource']}  "
            f"approved by {', '.join(row['approvers']) or '-'}"
            + (f"  ticket {row['ticket']}" if row.get("ticket") else "")
        )
    for name, s in stats.items():
        print(describe(name, s))
    for severity, counts in sla.items():
        print(f"SLA {severity}: {counts['met']} gates answered in time, {counts['missed']} missed")
    if not rows:
        print("no incident recorded")
    return 0


def cmd_postmortem(args: argparse.Namespace) -> int:
    """The draft on stdout, or exported to `--out FILE`; a file a person may have edited is
    never overwritten without `--force`."""
    out: Path | None = args.out
    if out is not None and out.exists() and not args.force:
        raise BadInput(f"--out {str(out)!r}: the file exists; --force overwrites it")
    try:
        text = incidents.render_postmortem(database_url(), args.incident_id)
    except incidents.IncidentNotFound as err:
        raise BadInput(str(err)) from None
    if out is None:
        print(text, end="")
        return 0
    try:
        with out.open("w" if args.force else "x") as file:
            file.write(text)
    except FileExistsError:  # created meanwhile
        raise BadInput(f"--out {str(out)!r}: the file exists; --force overwrites it") from None
    except OSError as err:
        raise BadInput(f"--out {str(out)!r}: {err.strerror}") from None
    print(f"post-mortem draft of {args.incident_id} written to {out}", file=sys.stderr)
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    result = incidents.migrate(database_url())
    print(f"incident log schema at version {result.version}; applied {result.applied or 'nothing'}")
    return 0


def configure(name: str, parser: argparse.ArgumentParser) -> None:
    if name == "incidents":
        parser.add_argument("--json", action="store_true")
        parser.add_argument("--since", metavar="DATE")
        parser.add_argument("--procedure")
        parser.set_defaults(func=cmd_incidents)
    elif name == "postmortem":
        parser.add_argument("incident_id", help="an incident id or a unique prefix of one")
        parser.add_argument("--out", type=Path, metavar="FILE", help="export the draft to FILE")
        parser.add_argument("--force", action="store_true", help="overwrite FILE if it exists")
        parser.set_defaults(func=cmd_postmortem)
    elif name == "db":
        parser.add_argument("action", choices=("migrate",))
        parser.set_defaults(func=cmd_migrate)
