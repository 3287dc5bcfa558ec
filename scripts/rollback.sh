#!/usr/bin/env bash
# runbook.md 5, step 2: ./scripts/rollback.sh production <previous_image_tag>
#
# Starts the `rollback` runbook in that environment (`runbook start --env`: the environment's
# cluster, account and task queue; workflow id rollback/<environment>) with the image tag as
# its target, and follows it to the end: it waits for a person to approve
# (`runbook approve rollback/<environment> --as NAME`), then for the rollouts and the health
# checks. Extra arguments go to `runbook start` (e.g. --severity P0, --dry-run,
# --set reason=failed-smoke-tests, --set services=api).
#
# Exit status: 0 when the run completed (or a dry run planned), 2 on bad input (nothing
# started), 1 otherwise (rejected, not approved in time, refused, failed).
set -euo pipefail

usage() {
    echo "usage: $0 ENVIRONMENT PREVIOUS_IMAGE_TAG [runbook start options...]" >&2
    echo "  e.g. $0 production v1.4.2" >&2
    exit 2
}
[[ $# -ge 2 && -n $1 && -n $2 ]] || usage
environment=$1
tag=$2
shift 2

project=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [[ -x $project/.venv/bin/runbook ]]; then
    runbook=$project/.venv/bin/runbook
elif command -v runbook >/dev/null 2>&1; then
    runbook=$(command -v runbook)
else
    echo "$0: runbook not found: run 'make install' (creates .venv) or put runbook on PATH" >&2
    exit 1
fi

workflow_id="rollback/$environment"
"$runbook" start rollback --env "$environment" --set "target=$tag" "$@"
echo "Following $workflow_id until it ends; approve with:"
echo "  $runbook approve $workflow_id --as NAME"

status=0
report=$("$runbook" status "$workflow_id" --wait) || status=$?
echo "$report"
if [[ $status -ne 0 ]]; then
    exit "$status"
fi
if grep -Eq '^phase: .*outcome: (completed|dry_run)$' <<<"$report"; then
    exit 0
fi
exit 1
