# The worker image for docker-compose.yml.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md settings.py worker.py ./
COPY activities ./activities
COPY workflows ./workflows
COPY starter ./starter
COPY sandbox ./sandbox
RUN pip install --no-cache-dir .
USER nobody
CMD ["python", "worker.py"]
