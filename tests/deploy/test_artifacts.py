"""The deploy artifacts, checked offline without Docker: the compose file and the Kubernetes
manifests against their schemas, every image pinned, the setup job's search attributes and
the example env file against the code, the image's contents (production code only, locked
dependencies with hashes, non-root, a health check) and that they import on their own."""

import ast
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import yaml
from packaging.requirements import Requirement

from intake.app import WebhookConfig
from settings import PROJECT_DIR
from workflows import search_attributes

DEPLOY = PROJECT_DIR / "deploy"
BIN = Path(sys.executable).parent
COMPOSE = PROJECT_DIR / "docker-compose.yml"
DOCKERFILE = (PROJECT_DIR / "Dockerfile").read_text()
PINNED = re.compile(r"^[\w./-]+:\d+\.\d+(\.\d+)?[\w.-]*(@sha256:[0-9a-f]{64})?$")
NOT_IN_THE_IMAGE = {"sandbox", "stack", "demos", "tests", "bench", "scripts"}


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120)


# ---- docker-compose.yml ----------------------------------------------------------------------


def test_compose_file_matches_the_compose_spec() -> None:
    checked = run(
        str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_compose_uses_temporal_supported_images_all_pinned() -> None:
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    # Ours are built from the Dockerfile (its base image is checked below).
    images = {name: s["image"] for name, s in services.items() if "build" not in s}
    assert all(PINNED.match(image) for image in images.values()), images
    assert images["temporal"].startswith("temporalio/server:")
    assert not any("auto-setup" in image for image in images.values())
    for job in ("temporal-schema", "temporal-setup", "schedules"):
        assert services[job]["restart"] == "on-failure", job
    for service in ("worker", "intake", "schedules"):
        needs = services[service]["depends_on"]["temporal-setup"]["condition"]
        assert needs == "service_completed_successfully", service


def test_the_setup_job_creates_every_search_attribute_the_runbooks_set() -> None:
    script = (DEPLOY / "temporal" / "setup.sh").read_text()
    [names] = re.findall(r'^ATTRIBUTES="([^"]+)"', script, re.MULTILINE)
    assert set(names.split()) == {key.name for key in search_attributes.ALL}


# ---- Kubernetes ----------------------------------------------------------------------------


def test_kubernetes_manifests_match_the_kubernetes_schemas() -> None:
    manifests = sorted(str(p) for p in (DEPLOY / "kubernetes").glob("*.yaml"))
    checked = run(str(BIN / "kubernetes-validate"), "--strict", "--quiet", *manifests)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_every_pod_runs_as_non_root_read_only_with_limits() -> None:
    pods = []
    for path in (DEPLOY / "kubernetes").glob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc["kind"] in ("Deployment", "Job"):
                pods.append((doc["metadata"]["name"], doc["spec"]["template"]["spec"]))
    assert {name for name, _ in pods} == {"runbook-worker", "runbook-intake", "runbook-schedules"}
    for name, pod in pods:
        assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] > 0
        for container in pod["containers"]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] and not security["allowPrivilegeEscalation"]
            assert container["resources"]["limits"]["memory"], name
            secret_refs = [e for e in container.get("env", []) if "valueFrom" in e]
            assert all("secretKeyRef" in e["valueFrom"] for e in secret_refs), name


def deployment_pod(name: str) -> dict[str, Any]:
    for doc in yaml.safe_load_all(
        (DEPLOY / "kubernetes" / f"{name.split('-')[1]}.yaml").read_text()
    ):
        if doc["kind"] == "Deployment" and doc["metadata"]["name"] == name:
            return dict(doc["spec"]["template"])
    raise AssertionError(f"no Deployment {name}")


def test_prometheus_scrapes_the_worker_and_the_intake_where_they_serve() -> None:
    metrics_port = re.findall(r"RUNBOOK_METRICS_PORT=(\d+)", DOCKERFILE)[0]
    scrape = yaml.safe_load((DEPLOY / "observability" / "prometheus.yml").read_text())
    assert [(DEPLOY / "observability" / f).exists() for f in scrape["rule_files"]] == [True]
    jobs = {job["job_name"]: job for job in scrape["scrape_configs"]}
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    intake_port = services["intake"]["command"][-1]
    assert set(jobs["runbook-compose"]["static_configs"][0]["targets"]) == {
        f"worker:{metrics_port}",
        f"intake:{intake_port}",
    }
    assert metrics_port in services["worker"]["expose"]
    for name, port in (("runbook-worker", metrics_port), ("runbook-intake", intake_port)):
        pod = deployment_pod(name)
        notes = pod["metadata"]["annotations"]
        assert notes["prometheus.io/scrape"] == "true" and notes["prometheus.io/port"] == port
        assert notes["prometheus.io/path"] == "/metrics"
        served = {p["containerPort"] for c in pod["spec"]["containers"] for p in c["ports"]}
        assert int(port) in served, name


def test_the_intake_key_reaches_the_worker_and_the_intake_from_the_secret() -> None:
    secret = yaml.safe_load((DEPLOY / "kubernetes" / "secret.example.yaml").read_text())
    assert "RUNBOOK_INTAKE_KEY" in secret["stringData"]
    for name in ("runbook-worker", "runbook-intake"):
        env = {e["name"]: e for c in deployment_pod(name)["spec"]["containers"] for e in c["env"]}
        ref = env["RUNBOOK_INTAKE_KEY"]["valueFrom"]["secretKeyRef"]
        assert (ref["name"], ref["key"]) == ("runbook-secrets", "RUNBOOK_INTAKE_KEY"), name
    # compose: both read deploy/runbook.env, which the example lists it in.
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    assert all(services[s]["env_file"] == ["deploy/runbook.env"] for s in ("worker", "intake"))
    assert re.search(r"^RUNBOOK_INTAKE_KEY=", (DEPLOY / "runbook.env.example").read_text(), re.M)


# ---- deploy/runbook.env.example ----------------------------------------------------------


def env_reads(path: Path) -> set[str]:
    """Variables a module reads with os.environ.get("X") / os.environ["X"]."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "get":
            target = node.func.value  # type: ignore[attr-defined]
        elif isinstance(node, ast.Subscript):
            target = node.value
        else:
            continue
        if isinstance(target, ast.Attribute) and target.attr == "environ":
            args = node.args if isinstance(node, ast.Call) else [node.slice]
            if args and isinstance(args[0], ast.Constant) and isinstance(args[0].value, str):
                found.add(args[0].value)
    return found


def test_the_worker_drains_within_the_pods_grace_period() -> None:
    """SIGTERM: the worker lets running activities finish for RUNBOOK_SHUTDOWN_SECONDS; the
    pod must live longer than that, with room to report and close (10 s)."""
    [deployment] = [
        d
        for d in yaml.safe_load_all((DEPLOY / "kubernetes" / "worker.yaml").read_text())
        if d["kind"] == "Deployment"
    ]
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    drain = float(env["RUNBOOK_SHUTDOWN_SECONDS"])
    assert drain >= 30  # a mutation's call to AWS has a 20 s read timeout (worker.AWS_CONFIG)
    assert pod["terminationGracePeriodSeconds"] >= drain + 10


def test_the_example_env_file_lists_every_setting_and_nothing_else() -> None:
    text = (DEPLOY / "runbook.env.example").read_text()
    listed = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", text, re.MULTILINE))
    settings = {field.alias for field in WebhookConfig.model_fields.values() if field.alias}
    modules = [
        PROJECT_DIR / "worker.py",
        PROJECT_DIR / "settings.py",
        PROJECT_DIR / "telemetry.py",
        *(PROJECT_DIR / "intake").glob("*.py"),
    ]
    reads = set().union(*(env_reads(m) for m in modules))
    reads |= set(re.findall(r"os\.environ\['([A-Z_]+)'\]", DOCKERFILE))  # the health check
    assert settings | reads <= listed, sorted((settings | reads) - listed)
    # Beside ours: the Temporal SDK's, boto3's and OpenTelemetry's own configuration.
    own = ("TEMPORAL_", "AWS_", "OTEL_")
    unknown = {n for n in listed - settings - reads if not n.startswith(own)}
    assert not unknown, sorted(unknown)


# ---- the image -------------------------------------------------------------------------------


def image_sources() -> list[str]:
    return [
        src
        for line in re.findall(r"^COPY (.+)$", DOCKERFILE, re.MULTILINE)
        for src in line.split()[:-1]
    ]


def test_the_image_is_pinned_non_root_with_a_health_check() -> None:
    [base] = re.findall(r"^FROM (\S+)", DOCKERFILE, re.MULTILINE)
    assert PINNED.match(base), base
    [user] = re.findall(r"^USER (\S+)", DOCKERFILE, re.MULTILINE)
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) > 0
    assert re.search(r"^HEALTHCHECK .*CMD", DOCKERFILE, re.MULTILINE | re.DOTALL)
    assert "pip install --require-hashes --no-deps -r requirements.lock" in DOCKERFILE


def test_the_lock_pins_every_dependency_with_hashes() -> None:
    lock = (DEPLOY / "requirements.lock").read_text()
    pinned = dict(re.findall(r"^([a-z0-9][a-z0-9._-]*)==(\S+) \\$", lock, re.MULTILINE))
    assert pinned and lock.count("--hash=sha256:") >= len(pinned)
    project = tomllib.loads((PROJECT_DIR / "pyproject.toml").read_text())["project"]
    for line in project["dependencies"]:
        req = Requirement(line)
        name = re.sub(r"[-_.]+", "-", req.name.lower())
        assert name in pinned, f"{name} is not in deploy/requirements.lock: uv pip compile again"
        assert req.specifier.contains(pinned[name]), f"{name}=={pinned[name]} !~ {req.specifier}"


def test_the_image_holds_production_code_only_and_it_imports_on_its_own(tmp_path: Path) -> None:
    sources = image_sources()
    assert not {Path(s).parts[0] for s in sources} & NOT_IN_THE_IMAGE, sources
    lines = (PROJECT_DIR / ".dockerignore").read_text().splitlines()
    rules = [line.rstrip("/") for line in lines if line and not line.startswith("#")]
    assert rules[0] == "*" and all(f"!{s.rstrip('/')}" in rules for s in sources), rules
    app = tmp_path / "app"
    app.mkdir()
    for source in sources:
        if source == "deploy/requirements.lock":
            continue
        subprocess.run(["cp", "-r", str(PROJECT_DIR / source), str(app)], check=True)
    # No site processing: the editable install would find the project's other packages.
    site = next(p for p in sys.path if p.endswith("site-packages"))
    probe = (
        f"import sys; sys.path[:0] = [{str(app)!r}, {site!r}]\n"
        "import worker, intake.app, intake.server\n"
        "import cli.main, cli.runs, cli.incidents, cli.schedules\n"
        "import importlib.util as u\n"
        "print(sorted(n for n in ('sandbox', 'stack', 'demos') if u.find_spec(n)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-S", "-c", probe], cwd=app, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
