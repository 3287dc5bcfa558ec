"""runbook.md, procedure 4: LLM Budget Exhaustion.

Diagnose today's spend, the budget gauges and the call rate; the approver gives the new
daily budget (bounded by the worker's configuration); change only `LLM_DAILY_BUDGET` in the
config secret (never the other keys), redeploy `api` so it reads it, verify the service
enforces it, then watch the spend every minute for a window on durable timers, alerting at
80% of the new budget. A long window continues as new with the run's state carried over.
"""

from datetime import datetime, timedelta
from functools import partial
from typing import Any, ClassVar

from pydantic import BaseModel, Field
from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.cloudwatch import CloudWatchActivities, MetricRequest, MetricSummary
    from activities.ecs import EcsActivities, EcsService, ServicesRequest, ServicesResult
    from activities.ecs_rollout import ForceDeploymentRequest, WaitRolloutRequest
    from activities.llm import (
        BUDGET_IN_FORCE,
        BudgetPolicy,
        BudgetPolicyRequest,
        LlmActivities,
        LlmMetrics,
        LlmMetricsRequest,
        Spend,
        SpendRequest,
        WaitBudgetRequest,
    )
    from activities.secrets import (
        SecretNumber,
        SecretNumberChange,
        SecretNumberRequest,
        SecretsActivities,
        SetSecretNumberRequest,
    )

from workflows.base import MUTATE_RETRY, MUTATION_HEARTBEAT, READ_RETRY, failure_message
from workflows.gate import GatedRunbook
from workflows.idempotency import token
from workflows.lock import StalePlan, ecs_service, exclusive, lease_for, stale
from workflows.lock import secret as secret_resource
from workflows.models import (
    MAX_RESOURCE,
    Finding,
    GateResult,
    ParamSpec,
    Resource,
    RunbookInput,
    RunbookResult,
    Step,
)

CALLS_NAMESPACE, CALLS_METRIC = "RevenueContext/LLM", "LlmApiCalls"
WATCH_STEP = "watch spend"


class SpendWatch(BaseModel):
    """The watch's state, carried over when the run continues as new."""

    budget: float
    until: datetime
    checks: int = 0
    alerted: bool = False
    peak: float = 0.0
    last: float | None = None
    summary: str = ""
    findings: list[Finding] = []
    plan: list[str] = []
    decision: GateResult | None = None
    timeline: list[Step] = []
    approvers: list[str] = []
    first_approval_at: datetime | None = None


class LlmBudgetInput(RunbookInput):
    secret_id: str = Field("prod/revenue-context/config", min_length=1, max_length=512)
    budget_key: str = Field("LLM_DAILY_BUDGET", min_length=1, max_length=128)
    cluster: str = Field("prod-revenue-context", min_length=1, max_length=MAX_RESOURCE)
    # Redeployed to pick up the new budget (runbook: `api`).
    services: list[Resource] = Field(["api"], min_length=1, max_length=10)
    watch_minutes: float = Field(60, ge=0, le=7 * 24 * 60)
    watch_interval_seconds: int = Field(60, ge=1, le=3600)
    alert_ratio: float = Field(0.8, gt=0, le=1)
    rollout_timeout_seconds: int = Field(900, ge=30, le=3 * 3600)
    # Checks a run makes before it continues as new (its history stays small).
    checks_per_run: int = Field(500, ge=2, le=5000)
    # Set by the run itself when it continues as new; a start that sets it is refused.
    watch: SpendWatch | None = None

    # Fields only this workflow's own continue-as-new may set (workflows/input_guard.py): a
    # start that brings a watch would skip the gate and report an approval nobody gave.
    CARRIED_OVER: ClassVar[tuple[str, ...]] = ("watch",)


class BudgetPlan(BaseModel):
    action: str  # "raise" | "refuse"
    summary: str
    steps: list[str]
    current: float | None = None
    default: float | None = None


class Diagnosis(BaseModel):
    findings: list[Finding]
    secret: SecretNumber | None = None
    services: ServicesResult | None = None
    policy: BudgetPolicy | None = None
    spend: Spend | None = None


# ---- judging (pure) ------------------------------------------------------------------------


def judge_spend(spend: Spend) -> Finding:
    where = spend.key if spend.found else f"{spend.key} (not set: nothing spent)"
    return Finding(
        check="llm spend",
        verdict="ok",
        summary=f"${spend.spend:,.2f} spent today ({where})",
        data=spend.model_dump(),
    )


def judge_metrics(m: LlmMetrics) -> Finding:
    budget = m.budget.get(BUDGET_IN_FORCE)
    spent = m.budget.get("llm_budget_spent_usd")
    exhausted = m.budget.get("llm_budget_exhausted") == 1 or (
        budget is not None and spent is not None and spent >= budget
    )
    refused = m.calls_by_status.get("budget_exceeded", 0)
    gauges = ", ".join(f"{k} {v:g}" for k, v in sorted(m.budget.items())) or "no llm_budget*"
    return Finding(
        check="/metrics llm_budget",
        verdict="failing" if exhausted else "ok",
        summary=f"{gauges}; llm_api_calls_total {m.calls_total:,.0f} ({refused:,.0f} refused)",
        data=m.model_dump(),
    )


def judge_rate(metric: MetricSummary) -> Finding:
    calls = sum(p.values.get("Sum", 0.0) for p in metric.datapoints)
    if not metric.datapoints:
        return Finding(check="call rate", verdict="unavailable", summary="no datapoints")
    return Finding(
        check="call rate",
        verdict="ok",
        summary=f"{calls:,.0f} LLM calls in the last hour ({calls / 60:,.1f}/min)",
        data={"calls_last_hour": calls},
    )


def judge_secret(secret: SecretNumber) -> Finding:
    return Finding(
        check=f"secret {secret.key}",
        verdict="ok",
        summary=f"{secret.key} = {secret.value:g} in {secret.secret_id} "
        f"(version {secret.version_id[:8]}, {secret.key_count} keys)",
        data={"value": secret.value, "version_id": secret.version_id},
    )


def judge_services(result: ServicesResult) -> Finding:
    short = [f"{s.name} {s.running_count}/{s.desired_count}" for s in result.services]
    bad = result.missing or [s.name for s in result.services if s.running_count < s.desired_count]
    summary = ", ".join(short) + (
        f"; missing {', '.join(result.missing)}" if result.missing else ""
    )
    return Finding(check="ecs services", verdict="degraded" if bad else "ok", summary=summary)


def make_plan(inp: LlmBudgetInput, diag: Diagnosis) -> BudgetPlan:
    """Pure: what would be done, and why."""
    if diag.secret is None or diag.policy is None:
        return BudgetPlan(
            action="refuse",
            summary=f"{inp.budget_key} in {inp.secret_id} could not be read: nothing is done blind",
            steps=["Check the secret and the worker's access to it"],
        )
    if diag.services is None or diag.services.missing:
        missing = ", ".join(diag.services.missing) if diag.services else "the services"
        return BudgetPlan(
            action="refuse",
            summary=f"cannot redeploy {missing} in {inp.cluster}: a new budget would not be used",
            steps=[f"Check the ECS services {', '.join(inp.services)}"],
        )
    current, policy = diag.secret.value, diag.policy
    default = min(max(current * 2, policy.minimum), policy.maximum)
    spent = (
        f"${diag.spend.spend:,.2f} spent today of ${current:g}" if diag.spend else "spend unknown"
    )
    minutes = inp.watch_minutes
    steps = [
        f"Set {inp.budget_key} in {inp.secret_id} to the approved budget (default {default:g}, "
        f"allowed {policy.minimum:g}-{policy.maximum:g}); the other "
        f"{diag.secret.key_count - 1} keys are kept and the current version stays for undo",
        f"Force a new deployment of {', '.join(inp.services)} and wait until it completes",
        f"Verify /metrics shows the new budget in force ({BUDGET_IN_FORCE})",
        f"Watch spend every {inp.watch_interval_seconds}s for {minutes:g} min; "
        f"alert at {inp.alert_ratio:.0%} of the new budget",
    ]
    return BudgetPlan(
        action="raise",
        summary=f"LLM budget: {spent}; raise {inp.budget_key} from {current:g}",
        steps=steps,
        current=current,
        default=default,
    )


def spend_line(spend: float, budget: float) -> str:
    return f"${spend:,.2f} of ${budget:g} ({spend / budget:.0%})"


# ---- the workflow --------------------------------------------------------------------------


@workflow.defn(name="LlmBudgetExhaustion")
class LlmBudgetExhaustion(GatedRunbook):
    procedure = "llm-budget"

    @workflow.run
    async def run(self, inp: LlmBudgetInput) -> RunbookResult:
        if inp.watch is not None:  # a continued run (only those may carry it: input_guard)
            return await self._resume(inp, inp.watch)
        self.begin(inp, inp.secret_id)
        self.tag(inp.severity)
        diag = await self._diagnose(inp)
        plan = make_plan(inp, diag)
        self.set_phase("plan")
        self.record("plan", "info", plan.summary)
        if plan.action == "refuse":
            await self.notify("failed", f"llm-budget refused for {inp.secret_id}", plan.summary, {})
            return self.finish("refused", plan.summary, diag.findings, plan.steps)
        if inp.dry_run:
            return self.finish("dry_run", f"Dry run: {plan.summary}", diag.findings, plan.steps)
        assert diag.policy is not None and plan.default is not None
        param = ParamSpec(
            name="daily_budget",
            minimum=diag.policy.minimum,
            maximum=diag.policy.maximum,
            default=plan.default,
            help=f"new {inp.budget_key} in USD",
        )
        decision = await self.gate("raise-budget", plan.summary, plan.steps, params=[param])
        if not decision.approved:
            return await self.not_approved(diag.findings, plan.steps)
        budget = decision.number("daily_budget")
        # The spend watch that follows changes nothing: the locks end with the verification.
        resources = [
            secret_resource(inp.secret_id),
            *(ecs_service(inp.cluster, s) for s in inp.services),
        ]
        lease = lease_for(30 + 120, len(inp.services) * (30 + inp.rollout_timeout_seconds))
        try:
            async with exclusive(self, resources, lease, partial(self._stale, inp, diag)):
                summary = await self._remediate(inp, diag, budget)
        except StalePlan as err:
            return await stale(self, err, diag.findings, plan.steps)
        except ActivityError as err:
            await self.fail(plan.summary, failure_message(err))
        watch = SpendWatch(
            budget=budget,
            until=workflow.now() + timedelta(minutes=inp.watch_minutes),
            summary=summary,
            findings=diag.findings,
            plan=plan.steps,
        )
        return await self._watch(inp, watch)

    # ---- diagnose -------------------------------------------------------------------------

    async def _diagnose(self, inp: LlmBudgetInput) -> Diagnosis:
        rate = MetricRequest(
            namespace=CALLS_NAMESPACE,
            metric_name=CALLS_METRIC,
            dimensions={"Service": "api"},
            minutes=60,
            statistics=["Sum"],
        )
        secret = SecretNumberRequest(secret_id=inp.secret_id, key=inp.budget_key)
        results = await self.check_all(
            self.check("llm spend", self._read(LlmActivities.spend, SpendRequest()), judge_spend),
            self.check(
                "/metrics llm_budget",
                self._read(LlmActivities.metrics, LlmMetricsRequest()),
                judge_metrics,
            ),
            self.check(
                "call rate", self._read(CloudWatchActivities.metric_statistics, rate), judge_rate
            ),
            self.check(
                f"secret {inp.budget_key}",
                self._read(SecretsActivities.read_number, secret),
                judge_secret,
            ),
            self.check(
                "ecs services",
                self._read(
                    EcsActivities.describe_services,
                    ServicesRequest(cluster=inp.cluster, services=inp.services),
                ),
                judge_services,
            ),
        )
        policy = await self.step(
            "budget bounds",
            self._read(LlmActivities.budget_policy, BudgetPolicyRequest()),
            lambda p: f"{p.minimum:g} to {p.maximum:g} USD a day",
        )
        return Diagnosis(
            findings=[finding for finding, _ in results],
            spend=results[0][1],
            secret=results[3][1],
            services=results[4][1],
            policy=policy,
        )

    def _read(self, method: Any, arg: Any) -> Any:
        return workflow.execute_activity_method(
            method, arg, start_to_close_timeout=timedelta(seconds=20), retry_policy=READ_RETRY
        )

    # ---- act and verify ---------------------------------------------------------------------

    async def _stale(self, inp: LlmBudgetInput, diag: Diagnosis) -> str | None:
        """Once the locks are held: is the budget still the one the approver raised?"""
        assert diag.secret is not None
        now: SecretNumber = await self.step(
            f"re-read {inp.budget_key}",
            self._read(
                SecretsActivities.read_number,
                SecretNumberRequest(secret_id=inp.secret_id, key=inp.budget_key),
            ),
            lambda n: f"{n.value:g} (version {n.version_id[:8]})",
        )
        if now.value == diag.secret.value:
            return None
        return (
            f"{inp.budget_key} is now {now.value:g}, not {diag.secret.value:g} that the approved "
            "plan raises: another change came first"
        )

    async def _remediate(self, inp: LlmBudgetInput, diag: Diagnosis, budget: float) -> str:
        self.set_phase("act")
        change: SecretNumberChange = await self.step(
            f"set {inp.budget_key}",
            workflow.execute_activity_method(
                SecretsActivities.set_number,
                SetSecretNumberRequest(
                    secret_id=inp.secret_id,
                    key=inp.budget_key,
                    value=budget,
                    client_request_token=token("set-budget"),
                    authority=self.authority(),
                ),
                start_to_close_timeout=timedelta(seconds=30),
                heartbeat_timeout=MUTATION_HEARTBEAT,
                retry_policy=MUTATE_RETRY,
            ),
            lambda c: (
                c.detail
                + (
                    f"; undo: make version {c.previous_version_id} AWSCURRENT again"
                    if c.changed and c.previous_version_id
                    else ""
                )
            ),
        )
        assert diag.services is not None
        for svc in diag.services.services:
            await self._redeploy(inp, svc)
        self.set_phase("verify")
        await self.step(
            "verify budget in force",
            workflow.execute_activity_method(
                LlmActivities.wait_budget_in_force,
                WaitBudgetRequest(expected=budget),
                start_to_close_timeout=timedelta(seconds=120),
                heartbeat_timeout=timedelta(seconds=30),
                retry_policy=READ_RETRY,
            ),
            lambda m: f"{BUDGET_IN_FORCE} {m.budget.get(BUDGET_IN_FORCE, 0):g}",
        )
        summary = (
            f"{inp.budget_key} {change.old_value:g} -> {budget:g} in {inp.secret_id} "
            f"(version {change.version_id[:8]}; previous {str(change.previous_version_id)[:8]}), "
            f"{', '.join(inp.services)} redeployed, new budget in force"
        )
        await self.notify(
            "resolved",
            f"llm-budget: daily budget now ${budget:g}",
            summary + f". Watching spend for {inp.watch_minutes:g} min.",
            {
                "Previous budget": f"{change.old_value:g}",
                "Undo": f"version {change.previous_version_id} back to AWSCURRENT, then redeploy",
            },
        )
        return summary

    async def _redeploy(self, inp: LlmBudgetInput, svc: EcsService) -> None:
        primary = next((d for d in svc.deployments if d.status == "PRIMARY"), None)
        started = await self.step(
            f"redeploy {svc.name}",
            workflow.execute_activity_method(
                EcsActivities.force_new_deployment,
                ForceDeploymentRequest(
                    cluster=inp.cluster,
                    service=svc.name,
                    seen_deployment_id=primary.id if primary else "",
                    authority=self.authority(),
                ),
                start_to_close_timeout=timedelta(seconds=30),
                heartbeat_timeout=MUTATION_HEARTBEAT,
                retry_policy=MUTATE_RETRY,
            ),
            lambda r: r.reason,
        )
        await self.step(
            f"rollout {svc.name}",
            workflow.execute_activity_method(
                EcsActivities.wait_rollout,
                WaitRolloutRequest(
                    cluster=inp.cluster, service=svc.name, deployment_id=started.deployment_id
                ),
                start_to_close_timeout=timedelta(seconds=inp.rollout_timeout_seconds),
                heartbeat_timeout=timedelta(seconds=30),
                retry_policy=MUTATE_RETRY,
            ),
            lambda r: (
                f"{r.rollout_state}, {r.running_count}/{r.desired_count} running "
                f"after {r.waited_seconds:.0f}s"
            ),
        )

    # ---- watch --------------------------------------------------------------------------------

    async def _resume(self, inp: LlmBudgetInput, watch: SpendWatch) -> RunbookResult:
        """A continued run: the same timeline and decision, the watch goes on."""
        self._input, self._resource = inp, inp.secret_id
        self._timeline, self._decision = list(watch.timeline), watch.decision
        self._approvers, self._first_approval_at = watch.approvers, watch.first_approval_at
        self.tag(inp.severity)
        return await self._watch(inp, watch)

    async def _watch(self, inp: LlmBudgetInput, w: SpendWatch) -> RunbookResult:
        self.set_phase("watch")
        step = next((s for s in self._timeline if s.name == WATCH_STEP), None)
        if step is None:
            step = Step(name=WATCH_STEP, started_at=workflow.now(), outcome="running")
            self._timeline.append(step)
        checks_here = 0
        while workflow.now() < w.until:
            if checks_here >= inp.checks_per_run or workflow.info().is_continue_as_new_suggested():
                w.decision, w.timeline = self._decision, self._timeline
                w.approvers, w.first_approval_at = self._approvers, self._first_approval_at
                workflow.continue_as_new(inp.model_copy(update={"watch": w}))
            await self._check_spend(inp, w, step)
            checks_here += 1
            left = (w.until - workflow.now()).total_seconds()
            await workflow.sleep(max(min(inp.watch_interval_seconds, left), 0.001))
        step.ended_at, step.outcome = workflow.now(), "ok"
        summary = w.summary
        if w.checks:
            summary += f"; spend watched {w.checks} times, peak {spend_line(w.peak, w.budget)}"
            summary += f", {inp.alert_ratio:.0%} alert sent" if w.alerted else ""
        self._decision = w.decision or self._decision
        return self.finish("completed", summary, w.findings, w.plan)

    async def _check_spend(self, inp: LlmBudgetInput, w: SpendWatch, step: Step) -> None:
        try:
            spend: Spend = await self._read(LlmActivities.spend, SpendRequest())
        except ActivityError as err:
            step.detail = f"check {w.checks + 1}: spend unavailable ({failure_message(err)})"
            return
        w.checks += 1
        w.last, w.peak = spend.spend, max(w.peak, spend.spend)
        step.detail = (
            f"{w.checks} checks; {spend_line(spend.spend, w.budget)} at "
            f"{workflow.now():%H:%M} UTC; peak {spend_line(w.peak, w.budget)}"
        )
        if not w.alerted and spend.spend >= inp.alert_ratio * w.budget:
            w.alerted = True
            self.record("spend alert", "info", spend_line(spend.spend, w.budget))
            await self.notify(
                "escalation",
                f"llm-budget: spend at {spend.spend / w.budget:.0%} of the new budget",
                f"{spend_line(spend.spend, w.budget)} today ({spend.key}); "
                f"alert threshold {inp.alert_ratio:.0%}",
                {"Budget": f"${w.budget:g}", "Spend": f"${spend.spend:,.2f}"},
            )

    # ---- endings ------------------------------------------------------------------------------
