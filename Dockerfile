# The worker and intake image: production code only (no local stack, sandbox, demos, tests).
#   docker build -t runbook .            worker: the default command; intake: python -m intake
# Dependencies: deploy/requirements.lock (uv pip compile --generate-hashes, from pyproject.toml),
# installed with their hashes checked. The base image is pinned to an exact release; pin it by
# digest in your registry mirror (FROM python:3.11.7-slim-bookworm@sha256:...).
FROM python:3.11.7-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    RUNBOOK_METRICS_PORT=9464

WORKDIR /app
COPY deploy/requirements.lock ./
RUN pip install --require-hashes --no-deps -r requirements.lock

# Production packages only: what the worker, the intake and the CLI need.
COPY settings.py worker.py telemetry.py ./
COPY activities ./activities
COPY workflows ./workflows
COPY client ./client
COPY intake ./intake
COPY cli ./cli

# A numeric, non-root user: runs as 10001 under any policy that checks runAsNonRoot. The
# code is root's and read-only; nothing is written to disk (post-mortems are in the database).
USER 10001:10001

EXPOSE 8790 9464
# The worker: its SDK metrics answer; the intake (compose / Kubernetes set it): /health.
ENV RUNBOOK_HEALTH_URL=http://127.0.0.1:9464/metrics
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['RUNBOOK_HEALTH_URL'], timeout=4)"]

CMD ["python", "worker.py"]
