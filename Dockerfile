# Image for scheduler/kubernetes-cronjob.yaml: the package and scheduler/run.sh, nothing else.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir '.[postgres]'
COPY scheduler ./scheduler
COPY config ./config
USER 65534
ENTRYPOINT ["/app/scheduler/run.sh"]
