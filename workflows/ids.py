"""A run's workflow id names its environment and resource: `<procedure>/<environment>/<resource>`
(rollback's resource is the environment: `rollback/<environment>`), so a second start for the
same resource joins the running run instead of acting twice. The id is made here (the registry,
hence the CLI, the intake and the schedules) and checked here (every run, as it begins): a run
started by hand under another id for the same resource refuses to run."""


def workflow_id(procedure: str, environment: str, resource: str | None) -> str:
    """`resource` None: the environment is the resource."""
    if resource is None:
        return f"{procedure}/{environment}"
    return f"{procedure}/{environment}/{resource}"


def id_refusal(procedure: str, environment: str, resource: str | None, actual: str) -> str | None:
    """Why `actual` is not this run's id, or None."""
    expected = workflow_id(procedure, environment, resource)
    if actual == expected:
        return None
    return (
        f"workflow id: {actual[:200]!r} does not name the resource; a {procedure} run for "
        f"{resource or environment!r} in {environment!r} must have the id {expected!r} "
        "(one run per resource at a time)"
    )
