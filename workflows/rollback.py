"""runbook.md, procedure 5: Rollback.

Diagnose, for every service in parallel, the task definition it runs and the recent revisions
of its family; plan, per service, from which revision and image tag to which (the previous
stable revision: the newest older revision with another image; or the newest revision with a
named image tag); a service already on its target is skipped. After approval, point each
service at its target and follow the rollout until COMPLETED with running == desired, one
service after the other, stopping at the first FAILED rollout (the services after it are not
touched); then verify `/health` (the version it reports) and `/health/detailed`, and notify.
The plan warns when a runbook service left out of the selection runs the tag being rolled
back: `/health` stays degraded while any service runs it.
"""

import asyncio
import re
from datetime import timedelta
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator
from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.ecs import RUNBOOK_SERVICES, EcsActivities, ServicesRequest, ServicesResult
    from activities.ecs_rollout import (
        RevisionsRequest,
        RevisionsResult,
        RolloutResult,
        TaskDefinitionInfo,
        TaskDefinitionRequest,
        UseTaskDefinitionRequest,
        UseTaskDefinitionResult,
        WaitRolloutRequest,
        image_tag,
    )
    from activities.health import HealthActivities, HealthRequest, HealthResult

from workflows.base import MUTATE_RETRY, MUTATION_HEARTBEAT, READ_RETRY, failure_message
from workflows.gate import GatedRunbook
from workflows.lock import StalePlan, ecs_service, exclusive, lease_for, stale
from workflows.models import MAX_RESOURCE, Finding, Resource, RunbookInput, RunbookResult

PREVIOUS = "previous"
# runbook.md 5, "When to Rollback": a short name or the runbook's words; else free text.
REASONS = {
    "error-rate-spike": "Deployment causes error rate spike",
    "performance-degradation": "Performance degradation",
    "critical-bug": "Critical bug discovered",
    "failed-smoke-tests": "Failed smoke tests",
}
# A Docker image tag: letters, digits, `_`, `.`, `-`; at most 128; not starting with . or -.
TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
# Reading the services outside the selection added activities: runs recorded before took
# the old path (their selection was every service, so none was left out).
OUTSIDE_PATCH = "rollback-reads-unselected-services"


class RollbackInput(RunbookInput):
    # The environment's ECS cluster (its profile's `cluster`; runbook.md's production one).
    cluster: str = Field("prod-revenue-context", min_length=1, max_length=255)
    services: list[Resource] = Field(
        default_factory=lambda: list(RUNBOOK_SERVICES), min_length=1, max_length=10
    )
    # "previous": each service's previous stable revision; else an image tag, e.g. v1.4.2.
    target: str = Field(PREVIOUS, max_length=MAX_RESOURCE)
    # Why (runbook.md "When to Rollback"): error-rate-spike, performance-degradation,
    # critical-bug, failed-smoke-tests, the runbook's words, or free text.
    reason: str | None = Field(None, max_length=500)
    # How many of a family's newest revisions are searched for the target.
    revisions: int = Field(20, ge=2, le=50)
    rollout_timeout_seconds: int = Field(900, ge=30, le=3 * 3600)
    poll_seconds: float = Field(2.0, ge=0.2, le=60)
    verify_checks: int = Field(12, ge=1, le=120)
    verify_interval_seconds: int = Field(10, ge=1, le=600)

    @field_validator("services", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        """`--set services=api,context-engine` from the CLI."""
        return (
            [s.strip() for s in value.split(",") if s.strip()] if isinstance(value, str) else value
        )

    @field_validator("services")
    @classmethod
    def _services(cls, value: list[str]) -> list[str]:
        unknown = [s for s in value if s not in RUNBOOK_SERVICES]
        if unknown:
            raise ValueError(
                f"{', '.join(map(repr, unknown))} unknown; allowed: {', '.join(RUNBOOK_SERVICES)}"
            )
        if len(set(value)) != len(value):
            raise ValueError("a service is named twice")
        return value

    @field_validator("target")
    @classmethod
    def _target(cls, value: str) -> str:
        value = value.strip()
        if value != PREVIOUS and not TAG.fullmatch(value):
            raise ValueError(
                f"{value!r} is not an image tag (letters, digits, _ . -, at most 128) "
                f"nor {PREVIOUS!r}"
            )
        return value

    @field_validator("reason")
    @classmethod
    def _reason(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.strip():
            raise ValueError(f"must not be blank; e.g. one of: {', '.join(REASONS)}")
        known = dict(REASONS) | {v.lower(): v for v in REASONS.values()}
        return known.get(value.strip().lower(), value.strip())


class ServiceState(BaseModel):
    """What the diagnosis found for one service."""

    service: str
    findings: list[Finding]
    current: TaskDefinitionInfo | None = None
    revisions: list[TaskDefinitionInfo] = []


class Move(BaseModel):
    service: str
    action: Literal["rollback", "skip", "refuse"]
    detail: str
    source: TaskDefinitionInfo | None = None
    target: TaskDefinitionInfo | None = None


class RollbackPlan(BaseModel):
    action: Literal["rollback", "nothing", "refuse"]
    summary: str
    steps: list[str]
    moves: list[Move] = []
    # What `/health` must report afterwards (the tag `api` runs), when api is concerned.
    version: str | None = None


# ---- judging and planning (pure) --------------------------------------------------------


def tag_of(td: TaskDefinitionInfo, service: str) -> str:
    """The image tag of the service's container (named after it), else of the first one."""
    image = td.images.get(service) or next(iter(td.images.values()), "")
    return image_tag(image) if image else "?"


def short(td: TaskDefinitionInfo, service: str) -> str:
    return f"{td.ref} ({tag_of(td, service)})"


def family_of(arn: str) -> str:
    return arn.rsplit("/", 1)[-1].rpartition(":")[0] or arn


def judge_service(result: ServicesResult) -> Finding:
    if not result.services:
        missing = ", ".join(result.missing) or "the service"
        return Finding(check="ecs service", verdict="failing", summary=f"{missing}: not found")
    svc = result.services[0]
    primary = next((d for d in svc.deployments if d.status == "PRIMARY"), None)
    state = primary.rollout_state if primary else None
    ok = svc.running_count >= svc.desired_count and state != "FAILED"
    return Finding(
        check=f"{svc.name} service",
        verdict="ok" if ok else "degraded",
        summary=f"{svc.name} on {(svc.task_definition or '?').rsplit('/', 1)[-1]}, "
        f"{svc.running_count}/{svc.desired_count} running, rollout {state or 'unknown'}",
    )


def judge_revisions(service: str) -> Any:
    def judge(result: RevisionsResult) -> Finding:
        shown = ", ".join(short(td, service) for td in result.revisions[:6])
        return Finding(
            check=f"{service} revisions",
            verdict="ok" if result.revisions else "failing",
            summary=f"{result.family}: {shown or 'no ACTIVE revision'}",
        )

    return judge


def choose(inp: RollbackInput, state: ServiceState) -> Move:
    """The service's target revision, or why it is skipped or refused."""
    name, current = state.service, state.current
    if current is None or not state.revisions:
        seen = "; ".join(f.summary for f in state.findings if f.verdict != "ok") or "unreadable"
        return Move(service=name, action="refuse", detail=f"{name}: not read ({seen})")
    now = tag_of(current, name)
    if inp.target == PREVIOUS:
        older = [
            td
            for td in state.revisions
            if td.revision < current.revision and tag_of(td, name) != now
        ]
        if not older:
            return Move(
                service=name,
                action="refuse",
                detail=f"target: {current.family} has no revision older than {current.ref} "
                f"with another image than {now} (searched its newest {len(state.revisions)})",
                source=current,
            )
        to = older[0]
    else:
        if now == inp.target:
            return Move(
                service=name,
                action="skip",
                detail=f"{name}: already on {inp.target} ({current.ref}): skipped",
                source=current,
                target=current,
            )
        tagged = [td for td in state.revisions if tag_of(td, name) == inp.target]
        if not tagged:
            tags = sorted({tag_of(td, name) for td in state.revisions}, reverse=True)
            return Move(
                service=name,
                action="refuse",
                detail=f"target: no revision of {current.family} has image tag "
                f"{inp.target!r}; tags: {', '.join(tags)}",
                source=current,
            )
        to = tagged[0]
    return Move(
        service=name,
        action="rollback",
        detail=f"{name}: {short(current, name)} -> {short(to, name)}",
        source=current,
        target=to,
    )


def outside_warning(inp: RollbackInput, todo: list[Move], outside: dict[str, str]) -> str:
    """Services left out of the selection that run a tag being rolled back: /health stays
    degraded while they do, so verify would fail."""
    bad = {tag_of(m.source, m.service) for m in todo if m.source}
    left = sorted(name for name, tag in outside.items() if tag in bad)
    if not left:
        return ""
    tags = ", ".join(sorted({outside[name] for name in left}))
    return (
        f"Warning: {', '.join(left)} also run {tags} and are not in the selection: /health "
        "stays degraded and verify fails while they do; to include them: --set "
        f"services={','.join([*inp.services, *left])}"
    )


def make_plan(
    inp: RollbackInput, states: list[ServiceState], outside: dict[str, str] | None = None
) -> RollbackPlan:
    """`outside`: the image tag each runbook service left out of the selection runs."""
    moves = [choose(inp, s) for s in states]
    why = f"reason: {inp.reason or 'not given'}"
    refused = [m for m in moves if m.action == "refuse"]
    if refused:
        summary = "; ".join(m.detail for m in refused) + "; nothing is changed"
        return RollbackPlan(
            action="refuse",
            summary=summary,
            steps=["Choose a target every service has (runbook start rollback --set target=TAG)"],
            moves=moves,
        )
    api = next((m for m in moves if m.service == "api"), None)
    version = tag_of(api.target, "api") if api and api.target else None
    todo = [m for m in moves if m.action == "rollback"]
    if not todo:
        return RollbackPlan(
            action="nothing",
            summary=f"{inp.environment}: every service already runs its target; nothing to do",
            steps=[m.detail for m in moves],
            moves=moves,
            version=version,
        )
    tags = sorted({tag_of(m.target, m.service) for m in todo if m.target})
    warning = outside_warning(inp, todo, outside or {})
    summary = f"Roll {inp.environment} back to {', '.join(tags)} ({why}): " + "; ".join(
        m.detail for m in moves
    )
    if warning:
        summary += f". {warning}"
    steps = [
        *([warning] if warning else []),
        *(
            f"Update {m.service} to {m.target.ref} and follow its rollout until COMPLETED "
            "with running == desired"
            for m in todo
            if m.target
        ),
        *(m.detail for m in moves if m.action == "skip"),
        "One service after the other; a FAILED rollout stops the run, later services untouched",
        "Verify /health"
        + (f" reports {version}" if version else "")
        + " and /health/detailed answers 200",
    ]
    return RollbackPlan(
        action="rollback", summary=summary, steps=steps, moves=moves, version=version
    )


# ---- the workflow --------------------------------------------------------------------------


@workflow.defn(name="Rollback")
class Rollback(GatedRunbook):
    procedure = "rollback"

    @workflow.run
    async def run(self, inp: RollbackInput) -> RunbookResult:
        self.begin(inp, inp.environment)
        self.tag(inp.severity)
        states = list(await asyncio.gather(*(self._diagnose(inp, s) for s in inp.services)))
        findings = [f for s in states for f in s.findings]
        left_out = [s for s in RUNBOOK_SERVICES if s not in inp.services]
        outside: dict[str, str] = {}
        if left_out and workflow.patched(OUTSIDE_PATCH):
            finding, outside = await self._running_tags(inp, left_out)
            findings.append(finding)
        plan = make_plan(inp, states, outside)
        self.set_phase("plan")
        self.record("plan", "info", plan.summary)
        if plan.action == "refuse":
            await self.notify("failed", f"rollback refused for {inp.environment}", plan.summary, {})
            return self.finish("refused", plan.summary, findings, plan.steps)
        if plan.action == "nothing":
            return self.finish("completed", plan.summary, findings, plan.steps)
        if inp.dry_run:
            return self.finish("dry_run", f"Dry run: {plan.summary}", findings, plan.steps)
        decision = await self.gate("rollback", plan.summary, plan.steps)
        if not decision.approved:
            return await self.not_approved(findings, plan.steps)
        todo = [m for m in plan.moves if m.action == "rollback"]
        lease = lease_for(
            len(todo) * (30 + inp.rollout_timeout_seconds),
            inp.verify_checks * inp.verify_interval_seconds,
        )
        try:
            async with exclusive(
                self,
                [ecs_service(inp.cluster, m.service) for m in todo],
                lease,
                lambda: self._stale(inp, todo),
            ):
                summary = await self._remediate(inp, plan)
        except StalePlan as err:
            return await stale(self, err, findings, plan.steps)
        title = f"{inp.environment.capitalize()} rollback completed to version " + ", ".join(
            sorted({tag_of(m.target, m.service) for m in plan.moves if m.target})
        )
        await self.notify("resolved", title, summary, {"Reason": inp.reason or "not given"})
        return self.finish("completed", summary, findings, plan.steps)

    # ---- diagnose ---------------------------------------------------------------------------

    def _read(self, method: Any, arg: Any) -> Any:
        return workflow.execute_activity_method(
            method, arg, start_to_close_timeout=timedelta(seconds=60), retry_policy=READ_RETRY
        )

    async def _diagnose(self, inp: RollbackInput, name: str) -> ServiceState:
        finding, found = await self.check(
            f"{name} service",
            self._read(
                EcsActivities.describe_services,
                ServicesRequest(cluster=inp.cluster, services=[name]),
            ),
            judge_service,
        )
        svc = found.services[0] if found and found.services else None
        if svc is None or not svc.task_definition:
            return ServiceState(service=name, findings=[finding])
        arn = svc.task_definition
        (td_finding, current), (rev_finding, revisions) = await asyncio.gather(
            self.check(
                f"{name} task definition",
                self._read(
                    EcsActivities.describe_task_definition,
                    TaskDefinitionRequest(task_definition=arn),
                ),
                lambda td: Finding(
                    check=f"{name} task definition",
                    verdict="ok",
                    summary=f"{td.ref} runs {td.images.get(name) or td.images}",
                ),
            ),
            self.check(
                f"{name} revisions",
                self._read(
                    EcsActivities.list_revisions,
                    RevisionsRequest(family=family_of(arn), max_items=inp.revisions),
                ),
                judge_revisions(name),
            ),
        )
        return ServiceState(
            service=name,
            findings=[finding, td_finding, rev_finding],
            current=current,
            revisions=revisions.revisions if revisions else [],
        )

    async def _running_tags(
        self, inp: RollbackInput, names: list[str]
    ) -> tuple[Finding, dict[str, str]]:
        """The image tag each of `names` runs (what could be read of it)."""
        finding, found = await self.check(
            "services outside the selection",
            self._read(
                EcsActivities.describe_services,
                ServicesRequest(cluster=inp.cluster, services=names),
            ),
            lambda r: Finding(
                check="services outside the selection",
                verdict="ok",
                summary=", ".join(
                    f"{s.name} on {(s.task_definition or '?').rsplit('/', 1)[-1]}"
                    for s in r.services
                )
                or "none found",
            ),
        )
        arns = {s.name: s.task_definition for s in (found.services if found else [])}
        read = await asyncio.gather(*(self._tag_of(name, arn) for name, arn in arns.items() if arn))
        return finding, {name: tag for name, tag in read if tag}

    async def _tag_of(self, service: str, arn: str) -> tuple[str, str | None]:
        try:
            td: TaskDefinitionInfo = await self._read(
                EcsActivities.describe_task_definition, TaskDefinitionRequest(task_definition=arn)
            )
        except ActivityError:
            return service, None
        return service, tag_of(td, service)

    # ---- act and verify ---------------------------------------------------------------------

    async def _stale(self, inp: RollbackInput, todo: list[Move]) -> str | None:
        """Once the locks are held: does every service still run what the plan rolls back
        from? (A service another run rolled back, or changed, meanwhile: stale.)"""
        found: ServicesResult = await self.step(
            "re-read services",
            self._read(
                EcsActivities.describe_services,
                ServicesRequest(cluster=inp.cluster, services=[m.service for m in todo]),
            ),
            lambda r: ", ".join(
                f"{s.name} on {(s.task_definition or '?').rsplit('/', 1)[-1]}" for s in r.services
            ),
        )
        now = {s.name: s.task_definition for s in found.services}
        changed = []
        for move in todo:
            assert move.source is not None and move.target is not None
            runs = now.get(move.service)
            if runs == move.target.arn:
                changed.append(f"{move.service} already runs {short(move.target, move.service)}")
            elif runs != move.source.arn:
                ref = (runs or "nothing").rsplit("/", 1)[-1]
                changed.append(
                    f"{move.service} now runs {ref}, not {short(move.source, move.service)} "
                    "the approved plan rolls back from"
                )
        return "; ".join(changed) or None

    async def _remediate(self, inp: RollbackInput, plan: RollbackPlan) -> str:
        self.set_phase("act")
        done: list[str] = []
        todo = [m for m in plan.moves if m.action == "rollback" and m.target]
        for index, move in enumerate(todo):
            try:
                await self._roll(inp, move)
            except ActivityError as err:
                untouched = [m.service for m in todo[index + 1 :]]
                await self._fail(plan, move, failure_message(err), untouched)
            done.append(move.detail)
        self.set_phase("verify")
        try:
            health = await self._verify(inp, plan.version)
        except ApplicationError as err:
            await self._fail(plan, None, f"rolled back, but {err.message}", [])
        return f"{inp.environment} rolled back: " + "; ".join(done) + f"; {health}"

    async def _roll(self, inp: RollbackInput, move: Move) -> RolloutResult:
        assert move.target is not None
        target = move.target
        await self.step(
            f"update {move.service}",
            workflow.execute_activity_method(
                EcsActivities.use_task_definition,
                UseTaskDefinitionRequest(
                    cluster=inp.cluster,
                    service=move.service,
                    task_definition=target.arn,
                    authority=self.authority(),
                ),
                start_to_close_timeout=timedelta(seconds=30),
                heartbeat_timeout=MUTATION_HEARTBEAT,
                retry_policy=MUTATE_RETRY,
            ),
            self._updated,
        )
        result: RolloutResult = await self.step(
            f"rollout {move.service}",
            workflow.execute_activity_method(
                EcsActivities.wait_rollout,
                WaitRolloutRequest(
                    cluster=inp.cluster,
                    service=move.service,
                    task_definition=target.arn,
                    poll_seconds=inp.poll_seconds,
                ),
                start_to_close_timeout=timedelta(seconds=inp.rollout_timeout_seconds),
                heartbeat_timeout=timedelta(seconds=max(30, 3 * inp.poll_seconds)),
                retry_policy=MUTATE_RETRY,
            ),
            lambda r: (
                f"{target.ref} {r.rollout_state}, {r.running_count}/{r.desired_count} "
                f"running after {r.waited_seconds:.0f}s"
            ),
        )
        return result

    @staticmethod
    def _updated(result: UseTaskDefinitionResult) -> str:
        return result.reason if result.changed else f"{result.reason}: no update sent"

    async def _verify(self, inp: RollbackInput, version: str | None) -> str:
        """Poll /health and /health/detailed on durable timers until both answer 200 and
        /health reports the version `api` was rolled back to (when it reports one)."""
        step = self.record("verify health", "running", "")
        seen = ""
        for check in range(1, inp.verify_checks + 1):
            try:
                health, detailed = await asyncio.gather(
                    self._read(HealthActivities.check, HealthRequest(path="/health")),
                    self._read(HealthActivities.check, HealthRequest(path="/health/detailed")),
                )
            except ActivityError as err:
                seen = f"health unavailable: {failure_message(err)}"
            else:
                ok, seen = self._healthy(health, detailed, version)
                if ok:
                    step.ended_at, step.outcome, step.detail = workflow.now(), "ok", seen
                    return seen
            step.detail = f"check {check}: {seen}"
            if check < inp.verify_checks:
                await workflow.sleep(inp.verify_interval_seconds)
        step.ended_at, step.outcome = workflow.now(), "failed"
        raise ApplicationError(
            f"not healthy after {inp.verify_checks} checks: {seen}",
            type="HealthNotRestored",
            non_retryable=True,
        )

    @staticmethod
    def _healthy(
        health: HealthResult, detailed: HealthResult, version: str | None
    ) -> tuple[bool, str]:
        reported = (health.body or {}).get("version")
        parts = [
            f"/health {health.status_code or health.error}"
            + (f" version {reported}" if reported else " (no version reported)"),
            f"/health/detailed {detailed.status_code or detailed.error}",
        ]
        right_version = version is None or reported is None or reported == version
        if version and reported and not right_version:
            parts.append(f"expected {version}")
        return health.ok and detailed.ok and right_version, ", ".join(parts)

    # ---- endings ----------------------------------------------------------------------------

    async def _fail(
        self, plan: RollbackPlan, move: Move | None, reason: str, untouched: list[str]
    ) -> None:
        self._outcome = "failed"
        self.set_phase("failed")
        text = reason
        if move is not None:
            text = f"{move.service}: {reason}"
            if untouched:
                text += f"; stopped: {', '.join(untouched)} not changed"
            self.record("stopped", "failed", text)
        await self.notify(
            "failed", f"{self._resource.capitalize()} rollback FAILED", text, {"Plan": plan.summary}
        )
        raise ApplicationError(f"rollback failed: {text}", type="RunbookFailed", non_retryable=True)
