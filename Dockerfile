# The worker and intake image for docker-compose.yml: production code only (no local stack,
# no sandbox, no demos). Dependencies come from pyproject.toml's [project] dependencies.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > requirements.txt \
    && pip install --no-cache-dir -r requirements.txt
COPY settings.py worker.py ./
COPY activities ./activities
COPY workflows ./workflows
COPY client ./client
COPY intake ./intake
COPY cli ./cli
USER nobody
CMD ["python", "worker.py"]
